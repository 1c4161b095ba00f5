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
import fs, { createReadStream } from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { FileStore } from '@tus/file-store'
import { ERRORS, isPathInsideDirectory, Upload } from '@tus/utils'
import { DirectoryError } from '../errors.js'
import type { SweepLocker } from '../sweep/activity-locker.js'
import { type SweepOptions, type SweepReport, sweepDirectory } from '../sweep/engine.js'
import { skipStockDirectoryCheck } from '../tus-internals.js'
import type { DirectWriteStore } from './direct-write.js'
import {
  countedBytes,
  type Downtime,
  expiresAt,
  isExpired,
  isFinished,
  lastActivityMs,
  METADATA_SUFFIX,
  UNVERIFIED_FROM,
  verifiedBytes,
} from './expiry-policy.js'
import { FreeSpace, insufficientStorage, tooLargeForStore } from './free-space.js'
import {
  LocalQuotaCounter,
  QUOTA_UNAVAILABLE,
  type QuotaCounter,
  quotaExceeded,
  StoreQuota,
  tooLargeForQuota,
} from './quota.js'

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK } = fs.constants

import { rawMetadataOf } from './raw-metadata.js'
import { openStoreFile } from './record-file.js'
import { RecordStore } from './record-store.js'

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
  /**
   * Whether a request of this process holds the lock of an upload (the plugin's ActivityLocker):
   * only then is a checksummed body that a crash cut short rolled back. Default: never.
   */
  holdsLock?: (id: string) => boolean
  /**
   * Free space the filesystem must keep: creations and PATCH bodies that would cross it answer
   * 507. `0` turns it off; `undefined`: the smaller of 1 GiB and 5% of the filesystem.
   */
  minFreeBytes?: number | undefined
  /**
   * Bytes the store may hold, finished uploads and unfinished uploads' declared lengths
   * included (store/quota.ts); `undefined`: no quota. The total is not counted by `open()`: the
   * plugin counts it (`quota.ensureCounted()`, or a sweep) before serving.
   */
  maxStoreBytes?: number | undefined
  /** Where the quota's running total lives. Default: in memory. */
  quotaCounter?: QuotaCounter | undefined
}

export interface UploadFacts {
  expiresAt: Date | undefined
  rawMetadata: string | undefined
}

export type StoreSweepOptions = Pick<SweepOptions, 'dryRun' | 'signal' | 'log' | 'concurrency'>

/** How long the facts of a `getUpload` wait for the answer that follows it. */
const LAST_READ_MS = 1000
/** At most this many uploads' facts wait at once (a burst of reads is cleared, not kept). */
const LAST_READ_MAX = 10_000

export class ExpiringFileStore extends FileStore implements DirectWriteStore {
  readonly expireAfterMs: number
  readonly downtime: Downtime | undefined
  /** The free-space floor (`minFreeBytes`), or `undefined` when off; set by `open()`. */
  space: FreeSpace | undefined
  /** The store quota (`maxStoreBytes`), or `undefined` when there is none; set by `open()`. */
  quota: StoreQuota | undefined
  readonly #locker: SweepLocker | undefined
  readonly #idPattern: RegExp | undefined
  readonly #holdsLock: (id: string) => boolean
  /** Uploads a checksummed body is being written to, here. */
  readonly #writing = new Set<string>()
  /**
   * What the last `getUpload` of each upload saw, for the HEAD answer that follows it (see
   * `describe`): taken once, dropped after a second. Bounded by the uploads read within a second.
   */
  readonly #lastRead = new Map<
    string,
    { record: Upload; offset: number; mtimeMs: number; at: number }
  >()
  declare configstore: RecordStore

  constructor(options: ExpiringFileStoreOptions) {
    super({
      directory: options.directory,
      configstore: new RecordStore(options.directory),
      expirationPeriodInMilliseconds: 0,
    })
    this.space = undefined
    this.quota = undefined
    this.expireAfterMs = options.expireAfterMs
    this.downtime = options.downtime
    this.#locker = options.locker
    this.#idPattern = options.idPattern
    this.#holdsLock = options.holdsLock ?? (() => false)
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
    if (options.minFreeBytes !== 0) {
      store.space = await FreeSpace.open(path.resolve(store.directory), options.minFreeBytes)
    }
    if (options.maxStoreBytes !== undefined) {
      const counter = options.quotaCounter ?? new LocalQuotaCounter()
      store.quota = new StoreQuota(options.maxStoreBytes, counter, () => store.count())
    }
    return store
  }

  /** Creates the directory if needed and proves it writable; rejects with `FST_TUS_DIRECTORY`. */
  async init(): Promise<void> {
    const directory = path.resolve(this.directory)
    try {
      await makeDirectory(directory)
      // A probe, because `access(W_OK)` says yes to root even on a read-only mount.
      await fsp.rmdir(await fsp.mkdtemp(path.join(directory, '.fastify-tus-probe-')))
    } catch (error) {
      throw new DirectoryError(directory, (error as Error).message, { cause: error })
    }
  }

  /** 0 for the handlers, whose check counts from creation; `getUpload` checks activity instead. */
  override getExpiration(): number {
    return 0
  }

  /**
   * The stock `getUpload` with the activity check, on one `lstat` of the data file (the stock one
   * and then ours took two, for every HEAD, PATCH, GET and DELETE). A data file that is not a
   * regular file of the directory with one link (a symbolic or hard link to an outside file, a
   * FIFO, a device) is no upload: 404. A checksummed body that a crash cut short is rolled back
   * here, when the caller holds the upload's lock (see `#rollBack`).
   */
  override async getUpload(id: string): Promise<Upload> {
    const record = await this.configstore.get(id)
    if (!record) throw ERRORS.FILE_NOT_FOUND
    const file = this.dataPathOf(id)
    let stats: fs.Stats
    try {
      stats = await fsp.lstat(file)
    } catch (error) {
      // A record without its data file: what the stock store answers, 410.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw ERRORS.FILE_NO_LONGER_EXISTS
      throw error
    }
    if (!stats.isFile() || stats.nlink > 1) throw ERRORS.FILE_NOT_FOUND
    let offset = verifiedBytes(record, stats.size)
    if (offset < stats.size && this.#mayRollBack(id)) {
      await this.#rollBack(id, record, offset)
    } else if (offset === stats.size && UNVERIFIED_FROM in record && this.#mayRollBack(id)) {
      await this.#clearUnverified(id, record)
    }
    if (this.expireAfterMs > 0 && !isFinished(record.size, offset)) {
      const activity = lastActivityMs(stats.mtimeMs, this.downtime)
      if (isExpired(activity, this.expireAfterMs, Date.now())) throw ERRORS.FILE_NO_LONGER_EXISTS
    }
    offset = Math.min(offset, stats.size)
    this.#remember(id, record, offset, stats.mtimeMs)
    return new Upload({
      id,
      size: record.size,
      offset,
      metadata: record.metadata,
      creation_date: record.creation_date,
      storage: { type: 'file', path: file },
    })
  }

  /**
   * Refuses bytes that would cross the free-space floor: a creation's declared length, or the
   * rest of a deferred length when it is declared. 507 when removing files could make room, 413
   * when even an empty filesystem could not. Does nothing without a floor.
   */
  async reserve(bytes: number): Promise<void> {
    const space = this.space
    if (!space || bytes <= 0) return
    // Larger than the filesystem could ever hold: 413, not a 507 that invites a retry.
    const total = await space.totalBytes()
    if (bytes > total - space.minFreeBytes) {
      throw tooLargeForStore(bytes, total, space.minFreeBytes)
    }
    if (await space.fits(bytes)) return
    throw insufficientStorage({
      freeBytes: await space.freeBytes(),
      minFreeBytes: space.minFreeBytes,
      neededBytes: bytes,
    })
  }

  /**
   * Runs `write` (a creation, a length declaration) once `bytes` of the store quota are taken
   * for it: 507 when they do not fit now, 413 when they never could. The bytes go back if
   * `write` fails.
   */
  async withQuota<T>(bytes: number, write: () => Promise<T>): Promise<T> {
    const quota = this.quota
    if (!quota || bytes <= 0) return write()
    if (bytes > quota.maxStoreBytes) throw tooLargeForQuota(bytes, quota.maxStoreBytes)
    const claim = await quota.claim(bytes).catch(() => {
      throw QUOTA_UNAVAILABLE
    })
    if (claim.granted < bytes) {
      await claim.settle(0)
      throw quotaExceeded({
        storeBytes: quota.lastSeen ?? 0,
        maxStoreBytes: quota.maxStoreBytes,
        neededBytes: bytes,
      })
    }
    let kept = 0
    try {
      const result = await write()
      kept = bytes
      return result
    } finally {
      await claim.settle(kept)
    }
  }

  /**
   * The stock declaration, once the rest of the length fits above the free-space floor and in
   * the quota.
   */
  override async declareUploadLength(id: string, length: number): Promise<void> {
    if (!this.space && !this.quota) return super.declareUploadLength(id, length)
    const written = await fsp.lstat(this.dataPathOf(id)).then(
      (stats) => stats.size,
      () => 0,
    )
    await this.reserve(length - written)
    return this.withQuota(length - written, () => super.declareUploadLength(id, length))
  }

  /** The stock `read`, without following a link out of the directory. */
  override read(id: string) {
    // Numeric flags go to fs.open as they are; the types only list the string forms.
    const flags = (O_RDONLY | O_NOFOLLOW | O_NONBLOCK) as unknown as string
    return createReadStream(this.dataPathOf(id), { flags })
  }

  /**
   * The stock `create`, without writing through a link or over an existing file; a declared
   * length takes its bytes of the quota first (507 or 413, and nothing is created).
   */
  override async create(upload: Upload): Promise<Upload> {
    const file = this.dataPathOf(upload.id)
    await this.withQuota(upload.size ?? 0, async () => {
      await fsp.mkdir(path.dirname(file), { recursive: true })
      await (await fsp.open(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o644)).close()
      await this.configstore.set(upload.id, upload)
    })
    upload.storage = { type: 'file', path: file }
    return upload
  }

  /**
   * Before a checksummed body is written at `offset`: the record says so, durably, so that a
   * crash mid-body leaves bytes the next access rolls back instead of keeping them.
   */
  async beginChecksummedWrite(id: string, offset: number): Promise<void> {
    const record = await this.configstore.get(id)
    if (!record) throw ERRORS.FILE_NOT_FOUND
    this.#writing.add(id)
    try {
      await this.configstore.set(
        id,
        { ...record, [UNVERIFIED_FROM]: offset } as unknown as Upload,
        {
          durable: true,
        },
      )
    } catch (error) {
      this.#writing.delete(id)
      throw error
    }
  }

  /** After the body was written and checked (or rolled back): its bytes are the upload's. */
  async endChecksummedWrite(id: string): Promise<void> {
    try {
      const record = await this.configstore.get(id)
      if (record) await this.#clearUnverified(id, record)
    } finally {
      this.#writing.delete(id)
    }
  }

  /**
   * Only a caller that holds the upload's lock may roll back, and only when no body is being
   * written here: then the body that left the mark has ended for good (its process crashed, or
   * it failed to clear the mark). Without the lock, the answer just counts the verified bytes.
   */
  #mayRollBack(id: string): boolean {
    return !this.#writing.has(id) && this.#holdsLock(id)
  }

  async #rollBack(id: string, record: Upload, offset: number): Promise<void> {
    const { handle } = await openStoreFile(this.dataPathOf(id), 'write')
    try {
      await handle.truncate(offset)
    } finally {
      await handle.close()
    }
    await this.#clearUnverified(id, record)
  }

  async #clearUnverified(id: string, record: Upload): Promise<void> {
    const { [UNVERIFIED_FROM]: _, ...rest } = record as Upload & Record<string, unknown>
    await this.configstore.set(id, rest as unknown as Upload)
  }

  /**
   * What the answers about an upload state beyond tus' own headers: when it expires
   * (`Upload-Expires`; none for a finished upload or with expiry off) and its `Upload-Metadata`
   * exactly as the client sent it. `undefined` for an unknown upload.
   *
   * `afterRead`: the answer is about what the `getUpload` just before it read (a HEAD), so the
   * facts of that read are used instead of reading the record and the data file again. A HEAD
   * then costs one record read and one stat. Answers after a write (PATCH, POST) read afresh.
   */
  async describe(id: string, { afterRead = false } = {}): Promise<UploadFacts | undefined> {
    if (afterRead) {
      const last = this.#lastRead.get(id)
      this.#lastRead.delete(id)
      if (last && performance.now() - last.at < LAST_READ_MS) {
        return this.#factsOf(last.record, last.offset, last.mtimeMs)
      }
    }
    try {
      const record = await this.configstore.get(id)
      if (!record) return undefined
      const data = await fsp.lstat(this.dataPathOf(id))
      return this.#factsOf(record, verifiedBytes(record, data.size), data.mtimeMs)
    } catch {
      return undefined
    }
  }

  #factsOf(record: Upload, offset: number, mtimeMs: number): UploadFacts {
    const expires =
      this.expireAfterMs === 0 || isFinished(record.size, offset)
        ? undefined
        : new Date(expiresAt(lastActivityMs(mtimeMs, this.downtime), this.expireAfterMs))
    return { expiresAt: expires, rawMetadata: rawMetadataOf(record) }
  }

  #remember(id: string, record: Upload, offset: number, mtimeMs: number): void {
    const now = performance.now()
    if (this.#lastRead.size >= LAST_READ_MAX) {
      for (const [key, entry] of this.#lastRead) {
        if (now - entry.at >= LAST_READ_MS) this.#lastRead.delete(key)
      }
      if (this.#lastRead.size >= LAST_READ_MAX) this.#lastRead.clear()
    }
    this.#lastRead.set(id, { record, offset, mtimeMs, at: now })
  }

  override async remove(id: string): Promise<void> {
    // Only an upload is removed: without this, DELETE /files/<id>.json unlinked the metadata of
    // upload <id>, and DELETE /files/<name> any other file of the directory.
    const record = (await this.configstore.get(id)) as Partial<Upload> | undefined
    if (record?.id !== id) throw ERRORS.FILE_NOT_FOUND
    // What the upload counts against the quota, given back once its data file is gone.
    const counted = this.quota
      ? await fsp.lstat(this.dataPathOf(id)).then(
          (data) => countedBytes(record.size, data.size),
          () => 0,
        )
      : 0
    const results = await Promise.allSettled([
      fsp.unlink(this.dataPathOf(id)),
      fsp.unlink(this.dataPathOf(id) + METADATA_SUFFIX),
    ])
    const failures = results.flatMap((r) => (r.status === 'rejected' ? [r.reason] : []))
    const missing = failures.filter((e) => (e as NodeJS.ErrnoException).code === 'ENOENT')
    if (missing.length === results.length) throw ERRORS.FILE_NOT_FOUND
    // A failure leaves the bytes counted: the next sweep's recount corrects the total.
    if (results[0]?.status === 'fulfilled' && counted > 0) {
      await this.quota?.add(-counted).catch(() => {})
    }
    const other = failures.find((e) => !missing.includes(e))
    if (other) throw other
  }

  /**
   * Runs the sweep engine over this store's directory with this store's lock and period. With a
   * quota, the sweep also counts what it leaves, and a whole sweep (not a dry run, not stopped)
   * recounts the quota's total.
   */
  async sweep(options: StoreSweepOptions = {}): Promise<SweepReport> {
    const recount = this.quota && !options.dryRun ? this.quota : undefined
    const mark = await recount?.mark()
    const report = await sweepDirectory({
      ...options,
      directory: this.directory,
      expireAfterMs: this.expireAfterMs,
      downtime: this.downtime,
      locker: this.#locker,
      idPattern: this.#idPattern,
      tally: this.quota !== undefined,
    })
    if (recount && mark !== undefined && !report.aborted && report.storeBytes !== undefined) {
      await recount.recount(report.storeBytes, mark).catch((err: unknown) => {
        options.log?.warn({ err }, 'fastify-tus sweep: could not store the recounted quota total')
      })
    }
    return report
  }

  /** The bytes the store holds as the quota counts them: a walk that removes nothing. */
  async count(): Promise<number> {
    const report = await sweepDirectory({
      directory: this.directory,
      expireAfterMs: 0,
      idPattern: this.#idPattern,
      tally: true,
    })
    return report.storeBytes ?? 0
  }

  override async deleteExpired(): Promise<number> {
    // The plugin routes `server.cleanUpExpiredUploads()` through its schedule, not through here.
    const report = await this.sweep()
    return report.removed
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
    await fsp.mkdir(directory)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'EEXIST') return // a file there fails the probe, with ENOTDIR
    const parent = path.dirname(directory)
    if (code !== 'ENOENT' || parent === directory) throw error
    await makeDirectory(parent)
    // A second ENOENT, now that the parent exists, is final.
    await fsp.mkdir(directory).catch((again: NodeJS.ErrnoException) => {
      if (again.code !== 'EEXIST') throw again
    })
  }
}
// The stock constructor creates the directory with a callback that throws, which ends the
// process on an unusable directory; `init()` does that job and rejects instead.
skipStockDirectoryCheck(ExpiringFileStore)
