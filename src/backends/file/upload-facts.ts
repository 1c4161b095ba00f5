/**
 * What the answers about an upload of the built-in store state beyond tus' own headers: when it
 * expires (`Upload-Expires`; none for a finished upload or with expiry off), its
 * `Upload-Metadata` exactly as the client sent it, and its `Upload-Concat`. Each answer reads as
 * little as it can: a HEAD uses what the `getUpload` just before it read (`LastRead`), and the
 * answer after a creation or a write what that creation or write saw (upload-notes.ts).
 */
import type fs from 'node:fs'
import fsp from 'node:fs/promises'
import type { Upload } from '@tus/utils'
import {
  CONCAT,
  concatKind,
  type Downtime,
  expiresAt,
  type IdlePeriods,
  idlePeriodOf,
  isExpired,
  lastActivityMs,
  verifiedBytes,
} from '../../expiry/policy.js'
import type { UploadFacts } from '../backend.js'
import { LastRead } from '../last-read.js'
import { concatOf, type FinalRecordFields } from './concatenation.js'
import { rawMetadataOf } from './raw-metadata.js'
import { lstat, type UploadFiles } from './upload-files.js'
import { notesOf } from './upload-notes.js'

export type { UploadFacts }

/** What a `getUpload` saw of an upload: its record, its verified bytes, its data file's clock. */
export interface ReadFacts {
  record: Upload
  offset: number
  mtimeMs: number
}

/** The expiry clock of the store's uploads, and the facts its answers state. */
export class FileFacts {
  readonly #files: UploadFiles
  /** The two idle periods, made once: every HEAD and PATCH asks for them. */
  readonly #periods: IdlePeriods
  readonly #downtime: Downtime | undefined
  /** What the last `getUpload` of each upload saw, for the HEAD answer that follows it. */
  readonly lastReads = new LastRead<ReadFacts>()

  constructor(files: UploadFiles, periods: IdlePeriods, downtime: Downtime | undefined) {
    this.#files = files
    this.#periods = periods
    this.#downtime = downtime
  }

  /** How long this upload may stay idle (expiry/policy.ts), or `undefined`: it never expires. */
  periodOf(record: object, size: number | undefined, offset: number): number | undefined {
    return idlePeriodOf(record, size, offset, this.#periods)
  }

  /** Whether an upload holding `offset` bytes, its clock at `mtimeMs`, has expired by now. */
  hasExpired(record: object, size: number | undefined, offset: number, mtimeMs: number): boolean {
    const period = this.periodOf(record, size, offset)
    if (period === undefined) return false
    return isExpired(lastActivityMs(mtimeMs, this.#downtime), period, Date.now())
  }

  /**
   * The facts of an upload; `undefined` for an unknown one. `afterRead`: the answer is about
   * what the `getUpload` just before it read (a HEAD), so the facts of that read are used instead
   * of reading the record and the data file again. A HEAD then costs one record read and one
   * stat. Answers after a write (PATCH, POST) read afresh.
   */
  async describe(id: string, { afterRead = false } = {}): Promise<UploadFacts | undefined> {
    const last = afterRead ? this.lastReads.take(id) : undefined
    if (last) return this.#factsOf(last.record, last.offset, last.mtimeMs)
    try {
      const record = await this.#files.configstore.get(id)
      if (!record) return undefined
      const data = await fsp.lstat(this.#files.dataPathOf(id))
      return this.#factsOf(record, verifiedBytes(record, data.size), data.mtimeMs)
    } catch {
      return undefined
    }
  }

  /**
   * The facts of an upload this process has just created without a body: its record is known,
   * so only its data file's clock is needed: the one `create` read, or else one `lstat` (where
   * `describe` also reads the record).
   * A final upload, and an empty one, are finished (an empty partial waits for its final).
   */
  async factsOfCreation(upload: Upload): Promise<Pick<UploadFacts, 'expiresAt'>> {
    const kind = concatOf(upload)?.kind
    const period = kind === 'final' ? undefined : this.periodOf({ [CONCAT]: kind }, upload.size, 0)
    if (period === undefined) return { expiresAt: undefined }
    try {
      const mtimeMs =
        notesOf(upload)?.known?.created ?? (await lstat(this.#files.dataPathOf(upload.id))).mtimeMs
      const activity = lastActivityMs(mtimeMs, this.#downtime)
      return { expiresAt: new Date(expiresAt(activity, period)) }
    } catch {
      return { expiresAt: undefined }
    }
  }

  /**
   * The facts of an upload a body was just written to, for the answer to that PATCH (or POST):
   * `upload` is the object the store gave the handler (`getUpload` under the request's lock, or
   * `create`), with the length the request may have declared, so only the data file's clock is
   * read (one `lstat`, where `describe` also reads the record again; none when the writer passes
   * the `lstat` it took once the bytes were in). `undefined` for an object the store did not
   * hand out: the caller then describes the upload afresh.
   */
  async factsAfterWrite(
    upload: Upload,
    written?: fs.Stats,
  ): Promise<Pick<UploadFacts, 'expiresAt'> | undefined> {
    const known = notesOf(upload)?.known
    if (!known) return undefined
    if (this.#periods.expireAfterMs === 0) return { expiresAt: undefined }
    let stats: fs.Stats
    try {
      stats = written ?? (await lstat(this.#files.dataPathOf(upload.id)))
    } catch {
      return { expiresAt: undefined }
    }
    // The body's bytes are verified once the write ended (a checksum's mark is cleared then);
    // a finished upload takes no more bytes, so a later body's mark cannot make it unfinished.
    const period = this.periodOf({ [CONCAT]: known.concat }, upload.size, stats.size)
    if (period === undefined) return { expiresAt: undefined }
    const activity = lastActivityMs(stats.mtimeMs, this.#downtime)
    return { expiresAt: new Date(expiresAt(activity, period)) }
  }

  /** `partial` or `final` for an `Upload` the store handed out or created; else `undefined`. */
  concatKindOf(upload: Upload): 'partial' | 'final' | undefined {
    return notesOf(upload)?.known?.concat
  }

  #factsOf(record: Upload, offset: number, mtimeMs: number): UploadFacts {
    const period = this.periodOf(record, record.size, offset)
    const expires =
      period === undefined
        ? undefined
        : new Date(expiresAt(lastActivityMs(mtimeMs, this.#downtime), period))
    return {
      expiresAt: expires,
      rawMetadata: rawMetadataOf(record),
      concat: concatHeaderOf(record),
    }
  }
}

/** `Upload-Concat` as HEAD answers it: `partial`, `final;<url> <url>`, or none. */
function concatHeaderOf(record: Upload): string | undefined {
  const kind = concatKind(record)
  if (kind === 'partial') return 'partial'
  if (kind !== 'final') return undefined
  const header = (record as unknown as Partial<FinalRecordFields>).concat_header
  return typeof header === 'string' ? header : 'final;'
}
