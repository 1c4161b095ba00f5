/**
 * The creation of a final upload of the concatenation extension in the built-in store: its
 * partials checked (`checkPartial`, also asked by the request before it gets here), locked,
 * checked again, copied into the final's data file (concatenation.ts), then the final's record,
 * then the partials marked taken by it and their data files removed after the answer (finals.ts:
 * a retried creation is answered with the final).
 *
 * The quota and the free-space floor are the write path's: this module gets them as functions
 * (`FinalCreationParts`), and so does the store's removal of an upload.
 */
import fsp from 'node:fs/promises'
import type { Upload } from '@tus/utils'
import {
  ANSWER_PENDING,
  CONCAT,
  concatKind,
  isFinished,
  TAKEN_BY,
  type UploadRecord,
} from '../../expiry/policy.js'
import type { SweepLocker } from '../../locking/activity-locker.js'
import { type Refusal, refusal } from '../../refusal.js'
import {
  type Concat,
  type CopySource,
  concatenateFiles,
  type FinalRecordFields,
  lockPartials,
  unlockAll,
} from './concatenation.js'
import type { Finals } from './finals.js'
import type { SpaceClaim } from './free-space.js'
import type { Settling } from './removal.js'
import type { StoreWrites } from './store-writes.js'
import type { UploadFiles } from './upload-files.js'
import type { LoadedUpload } from './upload-reader.js'

export type FinalConcat = Extract<Concat, { kind: 'final' }>

/** What a final's creation needs of the store's public members. */
export interface FinalStore extends UploadFiles {
  readonly finals: Finals
  remove(id: string, options: { handedOn: boolean }): Promise<void>
  /** Its write guards: `withQuota` runs a write once its bytes of the quota are taken (507, 413). */
  readonly writes: Pick<StoreWrites, 'withQuota'>
}

/** ...and what it needs that the store keeps to itself. */
export interface FinalCreationParts {
  locker: SweepLocker | undefined
  /** Where the partials' removal after the answer is kept, for the sweep and the close. */
  settling: Settling
  /** The store's `getUpload`, with the record it read. */
  load(id: string): Promise<LoadedUpload>
  /** Takes `bytes` of the free-space floor (413, 507); `undefined` without a floor. */
  claimSpace(bytes: number): Promise<SpaceClaim | undefined>
  /** Runs a write of the store's files, the filesystem's want of space answered 507. */
  onDisk<T>(write: () => Promise<T>): Promise<T>
}

export class FinalCreation {
  readonly #store: FinalStore
  readonly #parts: FinalCreationParts

  constructor(store: FinalStore, parts: FinalCreationParts) {
    this.#store = store
    this.#parts = parts
  }

  /**
   * Checks that `id` can go into a final upload now: a partial upload of this store (404, or 410
   * once expired), finished, with its length known (400). Resolves to its length.
   */
  async checkPartial(id: string): Promise<number> {
    let upload: Upload
    let record: Upload
    try {
      ;({ upload, record } = await this.#parts.load(id))
    } catch (error) {
      const status = (error as Partial<Refusal>).status_code
      if (status === 404) throw refusal(404, `partial upload ${id} was not found`)
      if (status === 410) throw refusal(410, `partial upload ${id} has expired`)
      throw error
    }
    if ((record as UploadRecord)[TAKEN_BY] !== undefined) {
      throw refusal(410, `partial upload ${id} was already assembled into another final upload`)
    }
    if (concatKind(record) !== 'partial') {
      throw refusal(
        400,
        `upload ${id} is not a partial upload (created with Upload-Concat: partial)`,
      )
    }
    if (upload.size === undefined || !isFinished(upload.size, upload.offset)) {
      const of = upload.size === undefined ? 'a length not declared yet' : `${upload.size} bytes`
      throw refusal(400, `partial upload ${id} is not finished (${upload.offset} of ${of})`)
    }
    return upload.size
  }

  /**
   * A final upload, assembled from its partials under their locks: its data file appears whole,
   * then its record is written, then the partials' records are marked taken by it and their
   * data files removed.
   */
  async create(upload: Upload, concat: FinalConcat, file: string): Promise<void> {
    const { locker, settling } = this.#parts
    const finals = this.#store.finals
    const locks = await lockPartials(locker, concat.partials)
    let handedOff = false
    try {
      const { unique } = await finals.build(concat.partials, async () => ({
        id: upload.id,
        unique: await this.#assemble(upload, concat, file),
      }))
      // The final holds their bytes now: the partials' data files go, after the answer
      // (unlinking their bytes takes about as long as copying them) and under their locks until
      // gone. Their records stay, marked taken, for a retried creation.
      const taken = await finals.markTaken([...unique.keys()], upload.id)
      // Claimed before the partials' removal keeps the disk busy: the answer waits for this.
      if (concat.clientWaiting?.() !== false) await finals.claimAssembled(upload.id)
      else finals.markedHere(upload.id)
      const removal = (async () => {
        try {
          await this.#removePartials([...unique.keys()], taken)
        } finally {
          await unlockAll(locks)
        }
      })()
      handedOff = true
      settling.add(removal)
    } finally {
      if (!handedOff) await unlockAll(locks)
    }
  }

  /** The partials' data files; a partial whose record could not be marked taken goes whole. */
  async #removePartials(ids: readonly string[], taken: ReadonlySet<string>): Promise<void> {
    const store = this.#store
    await Promise.allSettled(
      ids.map((id) =>
        taken.has(id) ? fsp.unlink(store.dataPathOf(id)) : store.remove(id, { handedOn: true }),
      ),
    )
  }

  /**
   * Under the partials' locks: checks them again, takes the final's bytes of the quota and of the
   * free-space floor, copies, and writes the final's record (`answer_pending` until someone knows
   * of it). A failure leaves nothing behind. Resolves to the partials and their lengths.
   */
  async #assemble(upload: Upload, concat: FinalConcat, file: string): Promise<Map<string, number>> {
    const sources = await this.#checkPartialsLocked(concat.partials)
    const size = sources.reduce((sum, source) => sum + source.bytes, 0)
    if (size !== upload.size) {
      throw refusal(400, `the partial uploads hold ${size} bytes, not ${upload.size}`)
    }
    // The quota counts the partials already: the final takes over their bytes, and only a
    // partial listed twice adds to the total. The disk needs all of them, until the partials go.
    const unique = new Map(concat.partials.map((id, i) => [id, sources[i]?.bytes ?? 0]))
    const counted = [...unique.values()].reduce((sum, bytes) => sum + bytes, 0)
    const copy = () => this.#copy(upload, concat, { sources, size, file })
    await this.#store.writes.withQuota(size - counted, copy, { wholeBytes: size })
    return unique
  }

  /** Copies the partials (`size` bytes) into the final's data file, then writes its record. */
  async #copy(
    upload: Upload,
    concat: FinalConcat,
    { sources, size, file }: { sources: CopySource[]; size: number; file: string },
  ): Promise<void> {
    const { claimSpace, onDisk } = this.#parts
    const space = await claimSpace(size)
    try {
      await onDisk(() => concatenateFiles(sources, file))
      space?.release(size)
      const fields: FinalRecordFields = {
        [CONCAT]: 'final',
        partials: concat.partials,
        concat_header: concat.header,
        [ANSWER_PENDING]: true,
      }
      const record = { ...upload, ...fields } as unknown as Upload
      await onDisk(() => this.#store.configstore.set(upload.id, record)).catch(async (error) => {
        await fsp.unlink(file).catch(() => {})
        throw error
      })
    } finally {
      space?.release(0)
    }
  }

  /**
   * The partials looked at again under their locks: one may have expired or gone since the
   * request's check. One that another request of the same final used meanwhile (it got the
   * locks first) answers 409, which tus clients retry: the retry is answered with that final.
   */
  async #checkPartialsLocked(partials: readonly string[]): Promise<CopySource[]> {
    const finals = this.#store.finals
    const sources: CopySource[] = []
    for (const id of partials) {
      try {
        sources.push({ file: this.#store.dataPathOf(id), bytes: await this.checkPartial(id) })
      } catch (error) {
        const gone = (error as Partial<Refusal>).status_code === 410
        if (gone && (await finals.recordedFinalOf(partials))) {
          throw refusal(
            409,
            'these partial uploads were just assembled; send the final upload again',
          )
        }
        throw error
      }
    }
    return sources
  }
}
