/**
 * What a request's read of an upload saw, kept for the answer that follows it (a HEAD's
 * `Upload-Expires` after its `getUpload`), so that the answer does not read the upload again.
 *
 * An entry is taken once, and only within `maxAgeMs` of being kept: an answer never states what
 * an older read saw. At most `maxEntries` wait at once: when full, the stale ones go, and if it
 * is still full every entry goes. A burst of reads is dropped rather than kept, since a missing
 * entry only costs the answer a read of its own.
 */
export class LastRead<T> {
  readonly #entries = new Map<string, { value: T; at: number }>()

  constructor(
    readonly maxAgeMs = 1000,
    readonly maxEntries = 10_000,
  ) {}

  /** How many entries wait. */
  get size(): number {
    return this.#entries.size
  }

  /** Keeps what a read of upload `id` saw, in place of what an earlier read kept. */
  keep(id: string, value: T): void {
    const now = performance.now()
    if (this.#entries.size >= this.maxEntries && !this.#entries.has(id)) {
      for (const [key, entry] of this.#entries) {
        if (now - entry.at >= this.maxAgeMs) this.#entries.delete(key)
      }
      if (this.#entries.size >= this.maxEntries) this.#entries.clear()
    }
    this.#entries.set(id, { value, at: now })
  }

  /** What the last read of `id` saw, if it was kept less than `maxAgeMs` ago; taken once. */
  take(id: string): T | undefined {
    const entry = this.#entries.get(id)
    if (!entry) return undefined
    this.#entries.delete(id)
    return performance.now() - entry.at < this.maxAgeMs ? entry.value : undefined
  }
}
