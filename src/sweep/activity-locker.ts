import { MemoryLocker } from '@tus/server'
import type { Lock, Locker, RequestRelease } from '@tus/utils'
import { ERRORS } from '@tus/utils'
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

  /** Told how long each request waited for a lock, acquired or not (metrics). */
  readonly #onLockWait: ((seconds: number) => void) | undefined

  /** With `MemoryLocker`, whose locks are this process's: see `SweepLocker.isFreeHere`. */
  readonly isFreeHere: ((id: string) => boolean) | undefined

  constructor(inner: Locker, onLockWait?: (seconds: number) => void) {
    this.#inner = inner
    this.#onLockWait = onLockWait
    if (inner instanceof MemoryLocker) {
      const locks = memoryLockTable(inner)
      // The same check as `tryLock`'s: no request of this process holds or waits for the lock
      // (through this wrapper), and nobody holds it in the table (through the locker itself).
      this.isFreeHere = (id) => !this.isBusy(id) && !locks.has(id)
    }
  }

  newLock(id: string): Lock {
    const table = this.#inner instanceof MemoryLocker ? memoryLockTable(this.#inner) : undefined
    return new TrackedLock(
      id,
      this.#inner.newLock(id),
      this.#busy,
      this.#held,
      this.#onLockWait,
      table,
    )
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
        if (locks.get(id) === entry) locks.delete(id)
      },
    }
  }
}

class TrackedLock implements Lock {
  #held = false
  /** Taken straight in MemoryLocker's table (see `lock`), not through the inner lock. */
  #inTable = false

  constructor(
    readonly id: string,
    readonly inner: Lock,
    readonly busy: Map<string, number>,
    readonly heldHere: Set<string>,
    readonly onWait: ((seconds: number) => void) | undefined,
    /** MemoryLocker's lock table, when the inner locker is one. */
    readonly table: Map<string, MemoryLockEntry> | undefined,
  ) {}

  async lock(signal: AbortSignal, requestRelease: RequestRelease): Promise<void> {
    // Counted before the inner call so that a waiting request already makes the upload busy.
    this.#count(+1)
    const started = this.onWait ? performance.now() : 0
    try {
      if (this.table && !this.table.has(this.id)) {
        // Free: what MemoryLocker's own lock() does then (one entry in its table, the holder's
        // requestRelease in it), without the 30 s timer, AbortController and race it arms for
        // a wait that does not happen. A taken lock is waited for by the inner lock, as before.
        this.table.set(this.id, { requestRelease })
        this.#inTable = true
      } else {
        await this.inner.lock(signal, requestRelease)
      }
      this.#held = true
      this.heldHere.add(this.id)
    } catch (error) {
      this.#count(-1)
      throw error
    } finally {
      this.onWait?.((performance.now() - started) / 1000)
    }
  }

  async unlock(): Promise<void> {
    if (this.#held) this.heldHere.delete(this.id)
    try {
      if (this.#inTable && this.table) {
        this.#inTable = false
        // As MemoryLocker's unlock(): the upload's entry goes, and releasing a lock that is
        // not there is an error.
        if (!this.table.delete(this.id)) throw new Error('Releasing an unlocked lock!')
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
    const n = (this.busy.get(this.id) ?? 0) + delta
    if (n > 0) this.busy.set(this.id, n)
    else this.busy.delete(this.id)
  }
}

function hasTryLock(locker: Locker): locker is Locker & SweepLocker {
  return typeof (locker as Partial<SweepLocker>).tryLock === 'function'
}

function isAbortError(error: unknown): boolean {
  return error instanceof Error && (error.name === 'AbortError' || error.name === 'TimeoutError')
}
