/**
 * Pending hand-overs kept in memory, for a datastore that cannot keep them (anything but the
 * built-in store): retried while the process lives, lost with it. And the backoff between runs.
 */
import type { FinishRecords, PendingFinish } from '../backends/backend.js'

export class MemoryFinishRecords implements FinishRecords {
  readonly #records = new Map<string, PendingFinish>()

  async remember(id: string): Promise<boolean> {
    if (this.#records.has(id)) return false
    this.#records.set(id, { id, since: Date.now(), attempts: 0 })
    return true
  }

  async update(record: PendingFinish): Promise<void> {
    this.#records.set(record.id, { ...record })
  }

  async read(id: string): Promise<PendingFinish | undefined> {
    const record = this.#records.get(id)
    return record && { ...record }
  }

  async forget(id: string): Promise<void> {
    this.#records.delete(id)
  }

  async list(): Promise<PendingFinish[]> {
    return [...this.#records.values()].map((record) => ({ ...record }))
  }
}

/** How long after the `attempts`-th failed run the next one is due: doubling, capped. */
export function retryDelayMs(attempts: number, firstMs: number, maxMs: number): number {
  const doublings = Math.min(Math.max(attempts - 1, 0), 52)
  return Math.min(maxMs, firstMs * 2 ** doublings)
}
