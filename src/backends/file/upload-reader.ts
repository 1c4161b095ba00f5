/**
 * Reading an upload of the built-in store: its record and its data file, as tus' handlers get it
 * (`getUpload`) and as GET streams it (`read`). Against the stock store:
 * - an unfinished upload idle longer than its period (expiry/policy.ts) answers 410 at once, not
 *   only once the sweep removed it; a finished one never does;
 * - a data file that is not a regular file of the directory with one link (a symbolic or hard
 *   link to an outside file, a FIFO, a device) is no upload: 404;
 * - a partial upload a final took over (finals.ts) answers as finished until its record expires.
 */
import { createReadStream, type ReadStream } from 'node:fs'
import { ERRORS, Upload } from '@tus/utils'
import {
  concatKind,
  TAKEN_BY,
  UNVERIFIED_FROM,
  type UploadRecord,
  verifiedBytes,
} from '../../expiry/policy.js'
import { openStoreFdSync } from './record-file.js'
import type { FileFacts } from './upload-facts.js'
import { lstat, type UploadFiles } from './upload-files.js'
import { note } from './upload-notes.js'

/** An upload as tus' handlers get it, and the record it was read from. */
export interface LoadedUpload {
  upload: Upload
  record: Upload
}

export interface ReaderParts {
  files: UploadFiles
  facts: FileFacts
  /**
   * The write path's turn, for a record that marks unverified bytes (`UNVERIFIED_FROM`): a
   * checksummed body that a crash cut short, past `verified` of the data file's `size` bytes,
   * is rolled back when the caller may (file-store.ts).
   */
  settleUnverified(id: string, record: Upload, verified: number, size: number): Promise<void>
}

export class UploadReader {
  readonly #parts: ReaderParts

  constructor(parts: ReaderParts) {
    this.#parts = parts
  }

  /**
   * `getUpload`, and the record it read: one record read and one `lstat` of the data file, whose
   * clock is the upload's last activity.
   */
  async load(id: string): Promise<LoadedUpload> {
    const { files, facts } = this.#parts
    const file = files.dataPathOf(id)
    // The data file's stat alongside the record's read, not after it (one wait less per request).
    const stating = lstat(file)
    stating.catch(() => {})
    const record = await files.configstore.get(id)
    if (!record) throw ERRORS.FILE_NOT_FOUND
    let stats: Awaited<typeof stating>
    try {
      stats = await stating
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
      // A partial a final took over: finished, as its client asks again before a retried final.
      if ((record as UploadRecord)[TAKEN_BY] !== undefined) return this.#loadTaken(id, record)
      // A record without its data file: what the stock store answers, 410.
      throw ERRORS.FILE_NO_LONGER_EXISTS
    }
    if (!stats.isFile() || stats.nlink > 1) throw ERRORS.FILE_NOT_FOUND
    let offset = verifiedBytes(record, stats.size)
    if (UNVERIFIED_FROM in record) {
      await this.#parts.settleUnverified(id, record, offset, stats.size)
    }
    if (facts.hasExpired(record, record.size, offset, stats.mtimeMs)) {
      throw ERRORS.FILE_NO_LONGER_EXISTS
    }
    offset = Math.min(offset, stats.size)
    facts.lastReads.keep(id, { record, offset, mtimeMs: stats.mtimeMs })
    return { upload: this.#uploadOf(id, record, offset, file), record }
  }

  /**
   * A partial upload whose bytes a final took over (finals.ts): answered as finished until its
   * record expires, `expireAfterMs` after it was marked (its record's clock).
   */
  async #loadTaken(id: string, record: Upload): Promise<LoadedUpload> {
    const { files, facts } = this.#parts
    let mtimeMs: number
    try {
      mtimeMs = (await lstat(files.configstore.fileOf(id))).mtimeMs
    } catch {
      throw ERRORS.FILE_NO_LONGER_EXISTS
    }
    const offset = record.size ?? 0
    if (facts.hasExpired(record, record.size, offset, mtimeMs)) {
      throw ERRORS.FILE_NO_LONGER_EXISTS
    }
    facts.lastReads.keep(id, { record, offset, mtimeMs })
    return { upload: this.#uploadOf(id, record, offset, files.dataPathOf(id)), record }
  }

  /** The `Upload` handed to tus for a record read at `offset` (its kind remembered). */
  #uploadOf(id: string, record: Upload, offset: number, file: string): Upload {
    const upload = new Upload({
      id,
      size: record.size,
      offset,
      metadata: record.metadata,
      creation_date: record.creation_date,
      storage: { type: 'file', path: file },
    })
    note(upload, { known: { concat: concatKind(record) } })
    return upload
  }
}

/**
 * The stock `read`, on a data file opened as the store opens its files (no link out of the
 * directory, a regular file): a missing one (a partial a final took over, a file removed behind
 * the store's back) is a 404, not a stream that fails once its answer has begun.
 */
export function readDataFile(file: string): ReadStream {
  let fd: number
  try {
    fd = openStoreFdSync(file)
  } catch {
    throw ERRORS.FILE_NOT_FOUND
  }
  return createReadStream('', { fd })
}
