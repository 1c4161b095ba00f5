/**
 * How the sweep runs work that waits on calls which may complete synchronously: each step is
 * written once, as a generator that yields only the promises it must wait for (`call`), and
 * `drive` runs it synchronously for as long as every call answers synchronously. A removal whose
 * calls all answer at once is then one synchronous section (see the engine's `removeNow`).
 */

export type MaybePromise<T> = T | Promise<T>

/** Work that waits only on the promises it yields; `drive` runs it. */
export type Steps<T> = Generator<Promise<unknown>, T, unknown>

export function isPromise<T>(value: MaybePromise<T>): value is Promise<T> {
  return value instanceof Promise
}

/** The value of `result`, within steps: `const x = yield* call(port.stat(file))`. */
export function* call<T>(result: MaybePromise<T>): Steps<T> {
  return isPromise(result) ? ((yield result) as T) : result
}

/**
 * Runs `steps` to their end: synchronously up to the first promise they yield, then
 * asynchronously. Throws (or rejects) what the steps do not catch.
 */
export function drive<T>(steps: Steps<T>): MaybePromise<T> {
  const step = steps.next()
  return step.done ? step.value : resume(steps, step.value)
}

async function resume<T>(steps: Steps<T>, pending: Promise<unknown>): Promise<T> {
  for (let waiting = pending; ; ) {
    let value: unknown
    let failed = false
    try {
      value = await waiting
    } catch (error) {
      failed = true
      value = error
    }
    // A rejection is thrown into the steps, where they waited; what they throw ends them.
    const step = failed ? steps.throw(value) : steps.next(value)
    if (step.done) return step.value
    waiting = step.value
  }
}

/**
 * Tasks under way, at most `limit`: the producer starts a task only when `full` is false (else
 * it waits for `freed()`), so it never gets ahead by more than `limit`. Tasks must not reject.
 */
export class BoundedPool {
  #running = 0
  #freed: (() => void) | undefined

  constructor(readonly limit: number) {}

  get full(): boolean {
    return this.#running >= this.limit
  }

  /** Counts `task` until it settles. */
  add(task: Promise<unknown>): void {
    this.#running++
    task.then(this.#done, this.#done)
  }

  readonly #done = (): void => {
    this.#running--
    const freed = this.#freed
    this.#freed = undefined
    freed?.()
  }

  /** Resolves once a task under way has settled. */
  freed(): Promise<void> {
    return new Promise((resolve) => {
      this.#freed = resolve
    })
  }

  /** Resolves once no task runs. */
  async idle(): Promise<void> {
    while (this.#running > 0) await this.freed()
  }
}

/**
 * Keys held for a moment by one of a few holders at a time, in a list of slots that never
 * shrinks: a module-level `Set` would leave dead hash tables in the old generation on every add
 * and delete (CONTRIBUTING.md, "Why the sweep is written as it is").
 */
export class Claims {
  readonly #slots: Array<string | undefined> = []

  has(key: string): boolean {
    return this.#slots.includes(key)
  }

  add(key: string): void {
    const free = this.#slots.indexOf(undefined)
    if (free === -1) this.#slots.push(key)
    else this.#slots[free] = key
  }

  delete(key: string): void {
    const at = this.#slots.indexOf(key)
    if (at !== -1) this.#slots[at] = undefined
  }
}
