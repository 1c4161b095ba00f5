import { MemoryLocker } from '@tus/server'
import type { Lock, Locker, RequestRelease } from '@tus/utils'
import { ERRORS } from '@tus/utils'
import { LockQueueFullError } from '../errors.js'
import { type MemoryLockEntry, memoryLockTable } from '../tus-internals.js'

/** A lock the sweep holds; released with `unlock()`. */
export interface HeldLock {
  unlock(): Promise<void>
}

/** What the sweep needs from a locker: a lock it can take only when nobody uses the upload. */
export interface SweepLocker {
  tryLock(id: string): Promise<HeldLock | undefined>
  /**
   * For a locker whose locks exist in this process only: whether nothing here holds or waits for
   * the lock of `id`. Synchronous code that starts when it is true then runs as the lock's
   * holder, since nothing else of the process runs until it ends (the sweep removes a session so
   * without taking the lock). Absent for a locker shared between processes (Redis).
   */
  isFreeHere?: ((id: string) => boolean) | undefined
}

/** How long the sweep waits for a lock that no request of this process holds (another process may). */
const TRY_LOCK_TIMEOUT_MS = 1000

/**
 * At most this many requests of this process wait for one upload's lock; more are answered 423
 * at once (`LockQueueFullError`). tus clients have one request in flight per upload, and a
 * reconnecting one a second: a queue longer than this is a flood, not a client.
 */
export const MAX_LOCK_WAITERS = 8

/** A waiter for a MemoryLocker lock looks again this often, should a release not wake it. */
const WAIT_POLL_MS = 1000

/**
 * Wraps the tus server's locker so that the sweep can tell whether a request of this process
 * holds or waits for an upload's lock, without asking for the lock.
 *
 * Asking would be harmful: @tus/server's `MemoryLocker` answers a lock request by calling the
 * holder's `requestRelease`, which cancels an in-flight PATCH. The sweep must never end an
 * active upload, so it skips any upload that is busy here and only then takes the lock.
 */
export class ActivityLocker implements Locker, SweepLocker {
  readonly #inner: Locker
  /** Upload id → how many requests hold or wait for its lock. */
  readonly #busy = new Map<string, number>()
  /** Uploads whose lock a request of this process holds (locks are exclusive: one each). */
  readonly #held = new Set<string>()
  /** Requests waiting for a MemoryLocker lock, woken as soon as it is released here. */
  readonly #queue = new WaitQueue()

  /** With `MemoryLocker`, whose locks are this process's: see `SweepLocker.isFreeHere`. */
  readonly isFreeHere: ((id: string) => boolean) | undefined

  /** What every lock of this locker counts in, and MemoryLocker's parts: made once, not per lock. */
  readonly #tally: Tally
  readonly #memory: MemoryParts | undefined

  constructor(inner: Locker, onLockWait?: (seconds: number) => void) {
    this.#inner = inner
    // `onLockWait` is told how long each request waited for a lock, acquired or not (metrics).
    this.#tally = { busy: this.#busy, held: this.#held, onWait: onLockWait }
    if (inner instanceof MemoryLocker) {
      const locks = memoryLockTable(inner)
      this.#memory = { table: locks, queue: this.#queue, timeoutMs: inner.timeout }
      // The same check as `tryLock`'s: no request of this process holds or waits for the lock
      // (through this wrapper), and nobody holds it in the table (through the locker itself).
      this.isFreeHere = (id) => !this.isBusy(id) && !locks.has(id)
    }
  }

  newLock(id: string): Lock {
    return new TrackedLock(id, this.#inner.newLock(id), this.#tally, this.#memory)
  }

  /** A request of this process holds or waits for the upload's lock. */
  isBusy(id: string): boolean {
    return this.#busy.has(id)
  }

  /** A request of this process holds the upload's lock. */
  holds(id: string): boolean {
    return this.#held.has(id)
  }

  /**
   * Takes the lock of an upload that nobody in this process holds or waits for; `undefined`
   * when it is busy. With `MemoryLocker` the check and the acquisition happen in one tick, so
   * no request can slip in between. A locker with its own `tryLock` (the Redis locker) is asked
   * directly; with any other locker, a lock held elsewhere shows up as a timeout, read as busy.
   */
  async tryLock(id: string): Promise<HeldLock | undefined> {
    if (this.isBusy(id)) return undefined
    if (this.#inner instanceof MemoryLocker) return this.#tryMemoryLock(this.#inner, id)
    // A shared locker (Redis) that can try without asking the holder, wherever it runs, to let go.
    if (hasTryLock(this.#inner)) return this.#inner.tryLock(id)
    const lock = this.newLock(id)
    // A timer cleared at once, not AbortSignal.timeout(): thousands of removals in a sweep
    // would otherwise keep thousands of pending signals alive for the whole timeout.
    const giveUp = new AbortController()
    const timer = setTimeout(() => giveUp.abort(), TRY_LOCK_TIMEOUT_MS)
    try {
      // The sweep holds a lock for a few file operations, so it has nothing to release early.
      await lock.lock(giveUp.signal, () => {})
      return lock
    } catch (error) {
      if (error === ERRORS.ERR_LOCK_TIMEOUT || isAbortError(error)) return undefined
      throw error
    } finally {
      clearTimeout(timer)
    }
  }

  /**
   * MemoryLocker has no try-lock: every `lock()` arms a 30 s timer and a race, which over the
   * thousands of removals of one sweep made tens of MB of garbage (peak RSS 96 against 73 MB
   * at 100,000 sessions). Its uncontended acquisition is one entry in its lock table (`locks`, see tus-internals.ts),
   * so the sweep takes it the same way; a request that comes meanwhile waits for it as usual.
   */
  #tryMemoryLock(locker: MemoryLocker, id: string): HeldLock | undefined {
    const locks = memoryLockTable(locker)
    if (locks.has(id)) return undefined
    const entry = { requestRelease: () => {} }
    locks.set(id, entry)
    return {
      unlock: async () => {
        if (locks.get(id) !== entry) return
        locks.delete(id)
        this.#queue.wake(id)
      },
    }
  }
}

/** What a lock counts in its `ActivityLocker`. */
interface Tally {
  /** Upload id → how many requests hold or wait for its lock. */
  busy: Map<string, number>
  /** Uploads whose lock a request of this process holds. */
  held: Set<string>
  onWait: ((seconds: number) => void) | undefined
}

/** MemoryLocker's parts, when the inner locker is one: its table, its timeout, the waiters. */
interface MemoryParts {
  table: Map<string, MemoryLockEntry>
  queue: WaitQueue
  timeoutMs: number
}

class TrackedLock implements Lock {
  #held = false
  /** Taken straight in MemoryLocker's table (see `lock`), not through the inner lock. */
  #inTable = false

  constructor(
    readonly id: string,
    readonly inner: Lock,
    readonly tally: Tally,
    readonly memory: MemoryParts | undefined,
  ) {}

  async lock(signal: AbortSignal, requestRelease: RequestRelease): Promise<void> {
    // Counted before the wait so that a waiting request already makes the upload busy.
    this.#count(+1)
    const started = this.tally.onWait ? performance.now() : 0
    try {
      const waiting = (this.tally.busy.get(this.id) ?? 0) - (this.tally.held.has(this.id) ? 1 : 0)
      if (waiting > MAX_LOCK_WAITERS) throw new LockQueueFullError(this.id, MAX_LOCK_WAITERS)
      if (this.memory) await this.#lockInTable(this.memory, signal, requestRelease)
      else await this.inner.lock(signal, requestRelease)
      this.#held = true
      this.tally.held.add(this.id)
    } catch (error) {
      this.#count(-1)
      throw error
    } finally {
      this.tally.onWait?.((performance.now() - started) / 1000)
    }
  }

  /**
   * MemoryLocker's rule, with a wait that costs nothing while it waits: a free lock is one entry
   * in the table (its holder's `requestRelease` in it); a held one asks its holder to let go and
   * waits to be woken by the release (or looks again every `WAIT_POLL_MS`), until the locker's
   * timeout (`ERR_LOCK_TIMEOUT`, as MemoryLocker) or the request's end. MemoryLocker itself
   * retries through a chain of promises that grows every turn of the event loop while it waits:
   * thousands of waiters on one upload took gigabytes.
   */
  async #lockInTable(
    { table, queue, timeoutMs }: MemoryParts,
    signal: AbortSignal,
    requestRelease: RequestRelease,
  ): Promise<void> {
    const deadline = performance.now() + timeoutMs
    for (;;) {
      const holder = table.get(this.id)
      if (!holder) {
        table.set(this.id, { requestRelease })
        this.#inTable = true
        return
      }
      if (signal.aborted) throw ERRORS.ABORTED
      await holder.requestRelease?.()
      const left = deadline - performance.now()
      if (left <= 0) throw ERRORS.ERR_LOCK_TIMEOUT
      await queue.wait(this.id, signal, Math.min(left, WAIT_POLL_MS))
    }
  }

  async unlock(): Promise<void> {
    if (this.#held) this.tally.held.delete(this.id)
    try {
      if (this.#inTable && this.memory) {
        this.#inTable = false
        // As MemoryLocker's unlock(): the upload's entry goes, and releasing a lock that is
        // not there is an error.
        if (!this.memory.table.delete(this.id)) throw new Error('Releasing an unlocked lock!')
        this.memory.queue.wake(this.id)
      } else {
        await this.inner.unlock()
      }
    } finally {
      // Counted down after the inner release: for a moment the upload looks busy while it is
      // already free, never the other way round.
      if (this.#held) {
        this.#held = false
        this.#count(-1)
      }
    }
  }

  #count(delta: number): void {
    const { busy } = this.tally
    const n = (busy.get(this.id) ?? 0) + delta
    if (n > 0) busy.set(this.id, n)
    else busy.delete(this.id)
  }
}

/** Requests waiting for a lock of this process, by upload id: `wake` ends their waits. */
class WaitQueue {
  readonly #waiting = new Map<string, Set<() => void>>()

  /** Resolves when `id` is woken, `signal` aborts or `ms` have passed, whichever comes first. */
  wait(id: string, signal: AbortSignal, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let waiters = this.#waiting.get(id)
      if (!waiters) {
        waiters = new Set()
        this.#waiting.set(id, waiters)
      }
      const set = waiters
      const done = () => {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        set.delete(done)
        if (set.size === 0 && this.#waiting.get(id) === set) this.#waiting.delete(id)
        resolve()
      }
      const timer = setTimeout(done, ms)
      signal.addEventListener('abort', done, { once: true })
      set.add(done)
    })
  }

  wake(id: string): void {
    const waiters = this.#waiting.get(id)
    if (waiters) for (const done of [...waiters]) done()
  }
}

function hasTryLock(locker: Locker): locker is Locker & SweepLocker {
  return typeof (locker as Partial<SweepLocker>).tryLock === 'function'
}

function isAbortError(error: unknown): boolean {
  return error instanceof Error && (error.name === 'AbortError' || error.name === 'TimeoutError')
}
