/**
 * The built-in store's records (`<id>.json`, @tus/utils' `Upload` as JSON): @tus/file-store's
 * `configstore`, written atomically and read safely (record-file.ts) instead of @tus/utils'
 * `FileKvStore`, whose truncate-then-write left 0-byte records after a crash.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import { ERRORS, isPathInsideDirectory, type KvStore, type Upload } from '@tus/utils'
import { recordNameOf } from './names.js'
import {
  readRecordFile,
  type StagedRecord,
  stageRecordFile,
  writeRecordFile,
} from './record-file.js'

export class RecordStore implements KvStore<Upload> {
  constructor(readonly directory: string) {}

  /** The record of `id`, or `undefined` when it is missing, unreadable, unsafe or not JSON. */
  async get(id: string): Promise<Upload | undefined> {
    try {
      const text = await readRecordFile(this.fileOf(id))
      return text === undefined ? undefined : (JSON.parse(text) as Upload)
    } catch {
      return undefined
    }
  }

  /** Replaces the record of `id` whole; `durable`: flushed to the disk before it replaces the old one. */
  async set(id: string, record: Upload, { durable = false }: { durable?: boolean } = {}) {
    await writeRecordFile(this.fileOf(id), JSON.stringify(record), { durable })
  }

  /** The record of `id` in its temporary file, to be put in place or discarded (`stageRecordFile`). */
  async stage(id: string, record: Upload): Promise<StagedRecord> {
    return stageRecordFile(this.fileOf(id), JSON.stringify(record))
  }

  async delete(id: string): Promise<void> {
    await fs.unlink(this.fileOf(id))
  }

  fileOf(id: string): string {
    const file = path.resolve(this.directory, recordNameOf(id))
    if (!isPathInsideDirectory(this.directory, file)) throw ERRORS.FILE_NOT_FOUND
    return file
  }
}
