/**
 * The built-in store: @tus/file-store's `FileStore` with an expiry that cannot lose a finished
 * or an active upload (see expiry-policy.ts for the rule, sweep/engine.ts for the removal).
 *
 * What changes against the stock store:
 * - expiry slides with activity (the data file's mtime), instead of counting from creation;
 * - `getUpload` answers 410 for an expired unfinished upload and never for a finished one;
 *   the handlers' own creation-based check is off (`getExpiration()` is 0 for them);
 * - `deleteExpired` runs the sweep engine: locks, orphans, bounded work, per-entry errors;
 * - the directory is created and probed by `init()`, which rejects with a clear error, where
 *   the stock constructor throws from a callback and ends the process;
 * - `remove` removes only an upload (a file whose `<id>.json` is its record), never another file
 *   of the directory, and tolerates a missing data file;
 * - PATCH bodies reach the data file directly (http/write-path.ts), not through web streams.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import { FileStore } from '@tus/file-store'
import { ERRORS, isPathInsideDirectory, Upload } from '@tus/utils'
import { DirectoryError } from '../errors.js'
import type { DirectWriteStore } from '../http/write-path.js'
import type { SweepLocker } from '../sweep/activity-locker.js'
import { type SweepOptions, type SweepReport, sweepDirectory } from '../sweep/engine.js'
import { skipStockDirectoryCheck } from '../tus-internals.js'
import {
  type Downtime,
  expiresAt,
  isExpired,
  isFinished,
  lastActivityMs,
  METADATA_SUFFIX,
} from './expiry-policy.js'
import { rawMetadataOf } from './raw-metadata.js'

export interface ExpiringFileStoreOptions {
  directory: string
  /** 0 turns expiry off; the store then does not advertise the `expiration` extension. */
  expireAfterMs: number
  /** The tus server's locker, so that the sweep never removes an upload a request is using. */
  locker?: SweepLocker
  /** Names of orphans the sweep may remove. */
  idPattern?: RegExp
  /** The server's last downtime, which does not count against idle uploads (see expiry-policy). */
  downtime?: Downtime | undefined
}

export interface UploadFacts {
  expiresAt: Date | undefined
  rawMetadata: string | undefined
}

export type StoreSweepOptions = Pick<SweepOptions, 'dryRun' | 'signal' | 'log' | 'concurrency'>

export class ExpiringFileStore extends FileStore implements DirectWriteStore {
  readonly expireAfterMs: number
  readonly downtime: Downtime | undefined
  readonly #locker: SweepLocker | undefined
  readonly #idPattern: RegExp | undefined

  constructor(options: ExpiringFileStoreOptions) {
    super({ directory: options.directory, expirationPeriodInMilliseconds: 0 })
    this.expireAfterMs = options.expireAfterMs
    this.downtime = options.downtime
    this.#locker = options.locker
    this.#idPattern = options.idPattern
    // Checksums are verified by the direct write path (http/write-path.ts), which this store gets.
    this.extensions = [...this.extensions, 'checksum']
    if (this.expireAfterMs === 0) {
      this.extensions = this.extensions.filter((extension) => extension !== 'expiration')
    }
  }

  /** Creates the store and its directory; rejects with `FST_TUS_DIRECTORY` when unusable. */
  static async open(options: ExpiringFileStoreOptions): Promise<ExpiringFileStore> {
    const store = new ExpiringFileStore(options)
    await store.init()
    return store
  }

  /** Creates the directory if needed and proves it writable; rejects with `FST_TUS_DIRECTORY`. */
  async init(): Promise<void> {
    const directory = path.resolve(this.directory)
    try {
      await makeDirectory(directory)
      // A probe, because `access(W_OK)` says yes to root even on a read-only mount.
      await fs.rmdir(await fs.mkdtemp(path.join(directory, '.fastify-tus-probe-')))
    } catch (error) {
      throw new DirectoryError(directory, (error as Error).message, { cause: error })
    }
  }

  /** 0 for the handlers, whose check counts from creation; `getUpload` checks activity instead. */
  override getExpiration(): number {
    return 0
  }

  /**
   * The stock `getUpload` with the activity check, on one `stat` of the data file (the stock one
   * and then ours took two, for every HEAD, PATCH, GET and DELETE).
   */
  override async getUpload(id: string): Promise<Upload> {
    const record = (await this.configstore.get(id)) as Upload | undefined
    if (!record) throw ERRORS.FILE_NOT_FOUND
    const file = this.dataPathOf(id)
    let stats: Awaited<ReturnType<typeof fs.stat>>
    try {
      stats = await fs.stat(file)
    } catch (error) {
      // A record without its data file: what the stock store answers, 410.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw ERRORS.FILE_NO_LONGER_EXISTS
      throw error
    }
    if (stats.isDirectory()) throw ERRORS.FILE_NOT_FOUND
    if (this.expireAfterMs > 0 && !isFinished(record.size, stats.size)) {
      const activity = lastActivityMs(stats.mtimeMs, this.downtime)
      if (isExpired(activity, this.expireAfterMs, Date.now())) throw ERRORS.FILE_NO_LONGER_EXISTS
    }
    return new Upload({
      id,
      size: record.size,
      offset: stats.size,
      metadata: record.metadata,
      creation_date: record.creation_date,
      storage: { type: 'file', path: file },
    })
  }

  /**
   * What the answers about an upload state beyond tus' own headers: when it expires
   * (`Upload-Expires`; none for a finished upload or with expiry off) and its `Upload-Metadata`
   * exactly as the client sent it. `undefined` for an unknown upload.
   */
  async describe(id: string): Promise<UploadFacts | undefined> {
    try {
      const record = await this.configstore.get(id)
      if (!record) return undefined
      const data = await this.#statData(id)
      const expires =
        this.expireAfterMs === 0 || isFinished(record.size, data.size)
          ? undefined
          : new Date(expiresAt(lastActivityMs(data.mtimeMs, this.downtime), this.expireAfterMs))
      return { expiresAt: expires, rawMetadata: rawMetadataOf(record) }
    } catch {
      return undefined
    }
  }

  override async remove(id: string): Promise<void> {
    // Only an upload is removed: without this, DELETE /files/<id>.json unlinked the metadata of
    // upload <id>, and DELETE /files/<name> any other file of the directory.
    const record = (await this.configstore.get(id)) as Partial<Upload> | undefined
    if (record?.id !== id) throw ERRORS.FILE_NOT_FOUND
    const results = await Promise.allSettled([
      fs.unlink(this.dataPathOf(id)),
      fs.unlink(this.dataPathOf(id) + METADATA_SUFFIX),
    ])
    const failures = results.flatMap((r) => (r.status === 'rejected' ? [r.reason] : []))
    const missing = failures.filter((e) => (e as NodeJS.ErrnoException).code === 'ENOENT')
    if (missing.length === results.length) throw ERRORS.FILE_NOT_FOUND
    const other = failures.find((e) => !missing.includes(e))
    if (other) throw other
  }

  /** Runs the sweep engine over this store's directory with this store's lock and period. */
  sweep(options: StoreSweepOptions = {}): Promise<SweepReport> {
    return sweepDirectory({
      ...options,
      directory: this.directory,
      expireAfterMs: this.expireAfterMs,
      downtime: this.downtime,
      locker: this.#locker,
      idPattern: this.#idPattern,
    })
  }

  override async deleteExpired(): Promise<number> {
    // The plugin routes `server.cleanUpExpiredUploads()` through its schedule, not through here.
    const report = await this.sweep()
    return report.removed
  }

  #statData(id: string) {
    return fs.stat(this.dataPathOf(id))
  }

  /** The data file of `id`; like the stock store, refuses ids that leave the directory. */
  dataPathOf(id: string): string {
    const file = path.join(this.directory, id)
    if (!isPathInsideDirectory(this.directory, file)) throw ERRORS.FILE_NOT_FOUND
    return file
  }
}
/**
 * `mkdir -p`, which gives up where Node's recursive mkdir loops forever on a thread of the pool:
 * a parent that exists but answers ENOENT for any child (procfs: `/proc/self/uploads`).
 */
async function makeDirectory(directory: string): Promise<void> {
  try {
    await fs.mkdir(directory)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'EEXIST') return // a file there fails the probe, with ENOTDIR
    const parent = path.dirname(directory)
    if (code !== 'ENOENT' || parent === directory) throw error
    await makeDirectory(parent)
    // A second ENOENT, now that the parent exists, is final.
    await fs.mkdir(directory).catch((again: NodeJS.ErrnoException) => {
      if (again.code !== 'EEXIST') throw again
    })
  }
}
// The stock constructor creates the directory with a callback that throws, which ends the
// process on an unusable directory; `init()` does that job and rejects instead.
skipStockDirectoryCheck(ExpiringFileStore)
