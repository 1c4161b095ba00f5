/**
 * Keeps keys alive while their owner holds them: the locks of the Redis locker and the sweep
 * lease's `running` key. One timer for all the keys of a refresher, ticking every third of the
 * shortest TTL among them, and one script call per tick that extends only the keys that still
 * hold their owner's token.
 */
import type { RedisClient } from './client.js'
import { type Scripts, scriptsOf } from './scripts.js'

interface Entry {
  token: string
  ttlMs: number
  /** Called once when the key no longer holds the token (it expired, and maybe someone took it). */
  onLost: () => void
}

export class KeyRefresher {
  readonly #client: RedisClient & Scripts
  /** Key → its owner's token, its TTL and what to do when it is lost. */
  readonly #entries = new Map<string, Entry>()
  #timer: NodeJS.Timeout | undefined
  #periodMs = Number.POSITIVE_INFINITY

  constructor(client: RedisClient) {
    this.#client = scriptsOf(client)
  }

  /**
   * Refreshes the key every third of `ttlMs` (or more often) until it is deleted or lost.
   * `onLost` is called once, when a tick finds the key no longer holds the token, or when the
   * key is added again with another token.
   */
  add(key: string, token: string, ttlMs: number, onLost: () => void): void {
    const previous = this.#entries.get(key)
    this.#entries.set(key, { token, ttlMs, onLost })
    if (ttlMs / 3 < this.#periodMs) this.#start(ttlMs / 3)
    // Taken again with another token before a tick noticed the previous one's loss.
    if (previous && previous.token !== token) previous.onLost()
  }

  /** Stops refreshing the key, if it is still this token's. */
  delete(key: string, token: string): void {
    if (this.#entries.get(key)?.token !== token) return
    this.#entries.delete(key)
    if (this.#entries.size === 0) this.#stop()
  }

  #start(periodMs: number): void {
    clearInterval(this.#timer)
    this.#periodMs = periodMs
    this.#timer = setInterval(() => this.#tick(), periodMs)
    this.#timer.unref()
  }

  #stop(): void {
    clearInterval(this.#timer)
    this.#timer = undefined
    this.#periodMs = Number.POSITIVE_INFINITY
  }

  #tick(): void {
    const entries = [...this.#entries]
    // A script's keys must live on one node of a Redis Cluster: there, one call per key.
    const batches = this.#client.isCluster ? entries.map((entry) => [entry]) : [entries]
    for (const batch of batches) {
      const keys = batch.map(([key]) => key)
      const args = batch.flatMap(([, { token, ttlMs }]) => [token, ttlMs])
      this.#client.fastifyTusRefresh(keys.length, ...keys, ...args).then(
        (kept) => {
          batch.forEach(([key, entry], i) => {
            // Deleted meanwhile, or added again with another token: not this entry's business.
            if (kept[i] === 1 || this.#entries.get(key) !== entry) return
            this.delete(key, entry.token)
            entry.onLost()
          })
        },
        // Redis unreachable: the next tick tries again; the key lasts a whole TTL.
        () => {},
      )
    }
  }
}
