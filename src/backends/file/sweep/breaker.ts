/**
 * The circuit breaker of one kind of synchronous call (looks, record reads, unlinks): a call that
 * stalls the event loop, or slow calls that come too often, turn the kind off for a while, during
 * which the fs port makes those calls through libuv's pool instead. The kinds wait on different
 * things (inodes, data blocks, the filesystem's journal), so one cold record, say, leaves the
 * looks synchronous. CONTRIBUTING.md ("Why the sweep is written as it is") has the figures.
 */

/**
 * A synchronous call longer than this was slow: it went to the disk (or a network filesystem),
 * or the process waited for a CPU, and held the event loop meanwhile.
 */
const SLOW_SYNC_MS = 5
/** One call this long turns the kind off at once: with a slice (5 ms), a 20 ms turn of the loop. */
const STALL_SYNC_MS = 15
/**
 * Shorter slow calls turn the kind off when `SLOW_SYNC_CALLS` of them come within
 * `SLOW_SYNC_WINDOW_MS`: a cold disk makes call after call slow, where a busy machine makes one
 * now and then, which the pool would not cure.
 */
const SLOW_SYNC_CALLS = 3
const SLOW_SYNC_WINDOW_MS = 1000
/**
 * How long the kind stays off the first time; each later time, twice as long: a busy spell
 * passes, and calls through the pool cost more CPU and memory, while a cold disk is tried again
 * only a few times per sweep.
 */
const SYNC_PAUSE_MS = 1000

export class SyncBreaker {
  /** Whether the kind's calls are synchronous now. */
  on = true
  #windowStart = 0
  #slowCalls = 0
  #pauseMs = SYNC_PAUSE_MS

  /** `clock`: the monotonic clock (ms) that times the calls. */
  constructor(readonly clock: () => number) {}

  /** Tells the breaker that a call of its kind began at `started` (`clock()`) has just ended. */
  ended(started: number): void {
    const ms = this.clock() - started
    if (ms <= SLOW_SYNC_MS) return
    if (this.#slowCalls === 0 || started - this.#windowStart > SLOW_SYNC_WINDOW_MS) {
      this.#windowStart = started
      this.#slowCalls = 0
    }
    this.#slowCalls++
    if (ms > STALL_SYNC_MS || this.#slowCalls >= SLOW_SYNC_CALLS) this.#turnOff()
  }

  #turnOff(): void {
    this.#slowCalls = 0
    // A call made while the kind was off (a removal's synchronous section keeps its calls) may
    // be slow too: the pause under way stands.
    if (!this.on) return
    this.on = false
    // Unreferenced: a sweep that ends meanwhile keeps no process alive.
    setTimeout(() => {
      this.on = true
    }, this.#pauseMs).unref()
    this.#pauseMs *= 2
  }
}
