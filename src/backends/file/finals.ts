/**
 * Final uploads that can be asked for again. A client that goes away while its final upload is
 * assembled (a large one takes seconds) never learns the final's URL; the assembly goes on, and
 * the partials are gone once it ends. So a repeated creation of the same final (the same partial
 * URLs, in the same order) is answered with the final already built, or, in this process, with
 * the one being built:
 *
 * - while it is built, a retry in this process waits for it (`beingBuilt`);
 * - once built, each partial's record stays, marked `taken_by` the final (`markTaken`), for
 *   `expireAfterMs`: a retry finds the final through it, and tus-js-client, which first asks each
 *   partial's offset again, sees it finished (upload-reader.ts answers a taken partial as finished);
 * - a final is created marked `answer_pending`; the mark goes once it is assembled if its client
 *   is still there (`claimAssembled`), or when a retry's answer leaves, or the app's finish hook
 *   has taken it (`claim`), and comes back when that answer did not arrive whole (`unclaim`).
 *   A final marked so is known to nobody:
 *   it expires like an unfinished upload (expiry/policy.ts) instead of staying forever. The mark
 *   goes before the answer, not after it: a crash between the two then keeps a final nobody may
 *   know of (a retry still finds it), rather than removing one its client knows.
 */
import type { Upload } from '@tus/utils'
import { ANSWER_PENDING, concatKind, TAKEN_BY, type UploadRecord } from '../../expiry/policy.js'
import type { SweepLocker } from '../../locking/activity-locker.js'
import { lockPartials, unlockAll } from './concatenation.js'
import type { RecordStore } from './record-store.js'

/** A final upload held (locked) while a retried creation answers with it. */
export interface HeldFinal {
  /** The answer ended; `delivered`: it reached the client, who now knows the final. */
  release(delivered: boolean): Promise<void>
}

export class Finals {
  /** Finals being assembled here, by their list of partials: a retry waits for its own. */
  readonly #building = new Map<string, Promise<string | undefined>>()
  readonly #records: RecordStore
  readonly #locker: SweepLocker | undefined
  /** Finals this process left marked `answer_pending` (a claim of any other costs nothing). */
  readonly #pendingHere = new Set<string>()

  constructor(records: RecordStore, locker: SweepLocker | undefined) {
    this.#records = records
    this.#locker = locker
  }

  /**
   * Runs the assembly of the final upload of `partials`; a retry of it in this process meanwhile
   * waits for it (`beingBuilt`). Resolves to what `assemble` resolves to, with the final's `id`.
   */
  async build<T extends { id: string }>(
    partials: readonly string[],
    assemble: () => Promise<T>,
  ): Promise<T> {
    const key = partials.join(' ')
    const building = assemble()
    const known = building.then(
      ({ id }) => id,
      () => undefined,
    )
    this.#building.set(key, known)
    try {
      return await building
    } finally {
      if (this.#building.get(key) === known) this.#building.delete(key)
    }
  }

  /**
   * The final of exactly these partials being assembled here (a retried creation waits for it
   * and resolves to its id, or to `undefined` if it failed); `undefined` when there is none.
   */
  beingBuilt(partials: readonly string[]): Promise<string | undefined> | undefined {
    return this.#building.get(partials.join(' '))
  }

  /**
   * The final already made of exactly these partials (a retried creation): one that a partial's
   * record says took it (a crash may have marked only some of them), and whose own record lists
   * exactly these partials. Read only once a partial answered that it is gone (410).
   */
  async recordedFinalOf(partials: readonly string[]): Promise<string | undefined> {
    const takers = new Set<string>()
    for (const id of new Set(partials)) {
      const taker = ((await this.#records.get(id)) as UploadRecord | undefined)?.[TAKEN_BY]
      if (typeof taker === 'string') takers.add(taker)
    }
    for (const finalId of takers) {
      const record = (await this.#records.get(finalId)) as (Upload & UploadRecord) | undefined
      const listed = (record as { partials?: unknown } | undefined)?.partials
      if (!record || concatKind(record) !== 'final' || !Array.isArray(listed)) continue
      if (listed.join(' ') === partials.join(' ')) return finalId
    }
    return undefined
  }

  /**
   * Marks the records of `ids` as taken by `finalId`. Resolves to the ids marked (a record that
   * could not be rewritten is left as it was: that partial is then removed whole).
   */
  async markTaken(ids: readonly string[], finalId: string): Promise<Set<string>> {
    const marked = new Set<string>()
    await Promise.all(
      ids.map(async (id) => {
        const record = await this.#records.get(id)
        if (!record) return
        const taken = { ...record, [TAKEN_BY]: finalId } as unknown as Upload
        await this.#records.set(id, taken).then(
          () => marked.add(id),
          () => {},
        )
      }),
    )
    return marked
  }

  /**
   * Someone knows of the final now (the app's hook ran). Costs nothing for a final that this
   * process did not leave marked: the mark is read only when this process set it.
   */
  async claim(finalId: string): Promise<void> {
    if (!this.#pendingHere.has(finalId)) return
    await this.#underLock(finalId, () => this.#setPending(finalId, false))
  }

  /**
   * The final just assembled (its record marked) is about to be answered to a client that is
   * still there: the mark goes now, before its partials' removal keeps the disk busy. The caller
   * holds the final's lock (tus' creation does).
   */
  async claimAssembled(finalId: string): Promise<void> {
    await this.#setPending(finalId, false)
  }

  /** A final this process wrote marked (`answer_pending`). */
  markedHere(finalId: string): void {
    this.#pendingHere.add(finalId)
  }

  /** The answer that claimed the final did not reach the client after all: nobody knows of it. */
  async unclaim(finalId: string): Promise<void> {
    await this.#underLock(finalId, () => this.#setPending(finalId, true))
  }

  async #underLock(finalId: string, work: () => Promise<void>): Promise<void> {
    const locks = await lockPartials(this.#locker, [finalId], 'final upload').catch(() => undefined)
    if (!locks) return // busy: the final stays as it was (a retry's answer claims it again)
    try {
      await work()
    } finally {
      await unlockAll(locks)
    }
  }

  async #setPending(finalId: string, pending: boolean): Promise<void> {
    if (pending) this.#pendingHere.add(finalId)
    else this.#pendingHere.delete(finalId)
    const record = (await this.#records.get(finalId)) as (Upload & UploadRecord) | undefined
    if (!record || (record[ANSWER_PENDING] === true) === pending) return
    const { [ANSWER_PENDING]: _, ...rest } = record
    const next = (pending ? { ...rest, [ANSWER_PENDING]: true } : rest) as Upload
    await this.#records.set(finalId, next).catch(() => {})
  }

  /**
   * Locks the final `finalId` for a retried creation's answer, so that no sweep removes it while
   * the answer is on its way, and claims it; `undefined` when it is gone. Rejects with 423 when
   * it stays busy.
   */
  async hold(finalId: string): Promise<HeldFinal | undefined> {
    const locks = await lockPartials(this.#locker, [finalId], 'final upload')
    try {
      if (!(await this.#records.get(finalId))) {
        await unlockAll(locks)
        return undefined
      }
      await this.#setPending(finalId, false)
    } catch (error) {
      await unlockAll(locks)
      throw error
    }
    return {
      release: async (delivered) => {
        try {
          if (!delivered) await this.#setPending(finalId, true)
        } finally {
          await unlockAll(locks)
        }
      },
    }
  }
}
