/**
 * The built-in store: @tus/file-store's `FileStore` with an expiry that cannot lose a finished
 * or an active upload (see expiry/policy.ts for the rule, sweep-engine.ts for the removal).
 *
 * This class holds the store's state and hands each part what it needs. What changes against
 * the stock store, and where:
 * - reads: expiry slides with activity, 410 before any sweep, never for a finished upload; the
 *   handlers' creation-based check is off (`getExpiration()` is 0) (upload-reader.ts);
 * - the answers' `Upload-Expires`, metadata as sent and `Upload-Concat` (upload-facts.ts);
 * - removal: only an upload, never another file; the sweep engine's sweep (removal.ts);
 * - the directory, created and probed by `init()`, which rejects (store-directory.ts);
 * - writes: PATCH bodies reach the data file directly (http/write-path.ts); creations and
 *   bodies keep the free-space floor and the quota (the members below);
 * - partial and final uploads of the concatenation extension (final-creation.ts, finals.ts).
 */
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { FileStore } from '@tus/file-store'
import { ERRORS, isPathInsideDirectory, type Upload } from '@tus/utils'
import {
  CONCAT,
  type Downtime,
  defaultPartialHoldMs,
  UNVERIFIED_FROM,
} from '../../expiry/policy.js'
import type { SweepLocker } from '../../locking/activity-locker.js'
import { skipStockDirectoryCheck } from '../../tus-internals.js'
import { concatOf } from './concatenation.js'
import type { DirectWriteStore } from './direct-write.js'
import type { DirectoryClaim } from './directory-holders.js'
import type { ExpiringFileStoreOptions } from './file-store-options.js'
import { type FinalConcat, FinalCreation } from './final-creation.js'
import { Finals } from './finals.js'
import {
  diskFull,
  type FreeSpace,
  insufficientStorage,
  isDiskFull,
  type SpaceClaim,
  tooLargeForStore,
} from './free-space.js'
import {
  type GrowingUpload,
  QUOTA_UNAVAILABLE,
  quotaExceeded,
  type StoreQuota,
  tooLargeForQuota,
} from './quota.js'
import { closeFd, createEmptyFile, openStoreFile } from './record-file.js'
import { RecordStore } from './record-store.js'
import {
  countStore,
  removeUpload,
  Settling,
  type StoreSweepOptions,
  sweepStore,
} from './removal.js'
import { openServices, prepareDirectory } from './store-directory.js'
import type { SweepReport } from './sweep-engine.js'
import { FileFacts, type KnownUpload, type UploadFacts } from './upload-facts.js'
import { readDataFile, UploadReader } from './upload-reader.js'

export type { ExpiringFileStoreOptions } from './file-store-options.js'
export type { StoreSweepOptions } from './removal.js'
export type { UploadFacts } from './upload-facts.js'

export class ExpiringFileStore extends FileStore implements DirectWriteStore {
  readonly expireAfterMs: number
  readonly partialHoldMs: number
  readonly downtime: Downtime | undefined
  /** The free-space floor (`minFreeBytes`), or `undefined` when off; set by `open()`. */
  space: FreeSpace | undefined
  /** The store quota (`maxStoreBytes`), or `undefined` when there is none; set by `open()`. */
  quota: StoreQuota | undefined
  readonly #locker: SweepLocker | undefined
  readonly #idPattern: RegExp | undefined
  readonly #holdsLock: (id: string) => boolean
  /** This process' claim on the directory, when it serves it as a holder. */
  #claim: DirectoryClaim | undefined
  /** Uploads a checksummed body is being written to, here. */
  readonly #writing = new Set<string>()
  /** Work left running after an answer (see `settled`). */
  readonly #settling = new Settling()
  /**
   * What this store knows of each `Upload` it handed out (`getUpload`) or created, for the answer
   * after a body was written to it (`factsAfterWrite`). Held as long as the object.
   */
  readonly #kindOf = new WeakMap<Upload, KnownUpload>()
  readonly #facts: FileFacts
  readonly #reader: UploadReader
  readonly #finalCreation: FinalCreation
  declare configstore: RecordStore
  /** Final uploads a retried creation is answered with (finals.ts). */
  readonly finals: Finals

  constructor(options: ExpiringFileStoreOptions) {
    super({
      directory: options.directory,
      configstore: new RecordStore(options.directory),
      expirationPeriodInMilliseconds: 0,
    })
    this.expireAfterMs = options.expireAfterMs
    this.partialHoldMs = Math.max(
      options.partialHoldMs ?? defaultPartialHoldMs(options.expireAfterMs),
      options.expireAfterMs,
    )
    this.downtime = options.downtime
    this.#locker = options.locker
    this.#idPattern = options.idPattern
    this.#holdsLock = options.holdsLock ?? (() => false)
    this.finals = new Finals(this.configstore, this.#locker)
    const periods = { expireAfterMs: this.expireAfterMs, partialHoldMs: this.partialHoldMs }
    this.#facts = new FileFacts(this, periods, this.downtime, this.#kindOf)
    this.#reader = new UploadReader({
      files: this,
      facts: this.#facts,
      known: this.#kindOf,
      settleUnverified: this.#settleUnverified.bind(this),
    })
    this.#finalCreation = new FinalCreation(this, {
      locker: this.#locker,
      settling: this.#settling,
      load: (id) => this.#reader.load(id),
      claimSpace: (bytes) => this.#claimSpace(bytes),
      onDisk: (write) => this.#onDisk(write),
    })
    // Checksums are verified by the direct write path (http/write-path.ts), which this store gets.
    this.extensions = [...this.extensions, 'checksum', 'concatenation']
    if (this.expireAfterMs === 0) {
      this.extensions = this.extensions.filter((extension) => extension !== 'expiration')
    }
  }

  /** Creates the store and its directory; rejects with `FST_TUS_DIRECTORY` when unusable. */
  static async open(options: ExpiringFileStoreOptions): Promise<ExpiringFileStore> {
    const store = new ExpiringFileStore(options)
    await store.init()
    const services = await openServices(path.resolve(store.directory), options, () => store.count())
    store.space = services.space
    store.quota = services.quota
    store.#claim = services.claim
    return store
  }

  /** Creates the directory if needed and proves it writable; rejects with `FST_TUS_DIRECTORY`. */
  async init(): Promise<void> {
    await prepareDirectory(path.resolve(this.directory))
  }

  /** 0 for the handlers, whose check counts from creation; `getUpload` checks activity instead. */
  override getExpiration(): number {
    return 0
  }

  /**
   * The stock `getUpload` with the activity check, on one `lstat` of the data file
   * (upload-reader.ts). A checksummed body that a crash cut short is rolled back here, when the
   * caller holds the upload's lock (see `#settleUnverified`).
   */
  override async getUpload(id: string): Promise<Upload> {
    return (await this.#reader.load(id)).upload
  }

  /**
   * For a record that marks bytes past `verified` as unverified, when the caller may: a body a
   * crash cut short is rolled back, a mark left over once all bytes are verified is cleared.
   */
  async #settleUnverified(id: string, record: Upload, verified: number, size: number) {
    if (verified < size && this.#mayRollBack(id)) {
      await this.#rollBack(id, record, verified)
    } else if (verified === size && UNVERIFIED_FROM in record && this.#mayRollBack(id)) {
      await this.#clearUnverified(id, record)
    }
  }

  /**
   * Refuses bytes that would cross the free-space floor: a creation's declared length, or the
   * rest of a deferred length when it is declared. 507 when removing files could make room, 413
   * when even an empty filesystem could not hold the upload's `wholeBytes` (its whole length: the
   * bytes it already holds take room too). Does nothing without a floor.
   */
  async reserve(bytes: number, wholeBytes = bytes): Promise<void> {
    const space = this.space
    if (!space || bytes <= 0) return
    // Larger than the filesystem could ever hold: 413, not a 507 that invites a retry.
    const total = await space.totalBytes()
    if (wholeBytes > total - space.minFreeBytes) {
      throw tooLargeForStore(wholeBytes, total, space.minFreeBytes)
    }
    if (await space.fits(bytes)) return
    throw insufficientStorage({
      freeBytes: await space.freeBytes(),
      minFreeBytes: space.minFreeBytes,
      neededBytes: bytes,
    })
  }

  /**
   * Runs `write` (a creation, a length declaration, an assembly) once `bytes` of the store quota
   * are taken for it: 507 when they do not fit now, 413 when the upload's `wholeBytes` never
   * could. The bytes go back if `write` fails.
   */
  async withQuota<T>(
    bytes: number,
    write: () => Promise<T>,
    { wholeBytes = bytes, grows }: { wholeBytes?: number; grows?: GrowingUpload } = {},
  ): Promise<T> {
    const quota = this.quota
    if (!quota || bytes <= 0) return write()
    if (wholeBytes > quota.maxStoreBytes) throw tooLargeForQuota(wholeBytes, quota.maxStoreBytes)
    const claim = await quota.claim(bytes, { grows }).catch(() => {
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
    const declare = () => this.#onDisk(() => super.declareUploadLength(id, length))
    if (!this.space && !this.quota) return declare()
    const written = await fsp.lstat(this.dataPathOf(id)).then(
      (stats) => stats.size,
      () => 0,
    )
    await this.reserve(length - written, length)
    // A walk counted its bytes before the declaration, and counts its length after it.
    const grows = { id, from: written }
    return this.withQuota(length - written, declare, { wholeBytes: length, grows })
  }

  /**
   * Runs a write of the store's files; the filesystem's own refusal for want of space (ENOSPC,
   * EDQUOT) becomes a 507 that the client retries, and is reported low (an emergency sweep).
   */
  async #onDisk<T>(write: () => Promise<T>): Promise<T> {
    try {
      return await write()
    } catch (error) {
      if (!isDiskFull(error)) throw error
      this.space?.reportLow({
        freeBytes: await this.space.freeBytes().catch(() => 0),
        minFreeBytes: this.space.minFreeBytes,
        neededBytes: 0,
      })
      throw diskFull(error)
    }
  }

  /** The stock `read`, on a data file opened as the store opens its files (upload-reader.ts). */
  override read(id: string) {
    return readDataFile(this.dataPathOf(id))
  }

  /**
   * The stock `create`, without writing through a link or over an existing file; a declared
   * length takes its bytes of the quota first (507 or 413, and nothing is created); a final upload
   * of the concatenation extension is assembled here (`#createFinal`).
   */
  override async create(upload: Upload): Promise<Upload> {
    return this.#onDisk(() => this.#create(upload))
  }

  async #create(upload: Upload): Promise<Upload> {
    const file = this.dataPathOf(upload.id)
    // The directory (a nested id's, or the store's own, removed behind the server's back) is
    // made when missing, not asked for on every creation.
    if (upload.id.includes('/')) await fsp.mkdir(path.dirname(file), { recursive: true })
    const concat = concatOf(upload)
    let created: number | undefined
    if (concat?.kind === 'final') {
      await this.#createFinal(upload, concat, file)
    } else {
      // A walk finds nothing of the upload before its creation.
      const grows = { id: upload.id, from: 0 }
      await this.withQuota(
        upload.size ?? 0,
        async () => {
          // The record is staged while the data file is created, and renamed into place once the
          // data file (O_EXCL) says the id is this creation's; the data file's clock (for
          // `Upload-Expires`) is read on its descriptor, which is closed alongside the rename.
          const record = (concat ? { ...upload, [CONCAT]: 'partial' } : upload) as Upload
          let staging = this.configstore.stage(upload.id, record)
          staging.catch(() => {})
          let fd: number
          try {
            fd = await createEmptyFile(file)
          } catch (error) {
            await staging.then(
              (staged) => staged.discard(),
              () => {},
            )
            if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
            await fsp.mkdir(path.dirname(file), { recursive: true })
            fd = await createEmptyFile(file)
            staging = this.configstore.stage(upload.id, record)
          }
          // Synchronous: the inode of a descriptor just opened is in memory, so no disk is waited
          // for, and a round trip through libuv's pool costs more than the call.
          try {
            created = fs.fstatSync(fd).mtimeMs
          } catch {
            // `factsOfCreation` then reads the clock with an lstat.
          }
          const [committed] = await Promise.allSettled([
            staging.then((staged) => staged.commit()),
            closeFd(fd),
          ])
          if (committed.status === 'rejected') {
            // No record (the disk is full, say): the new data file is nobody's.
            await fsp.unlink(file).catch(() => {})
            throw committed.reason
          }
        },
        { grows },
      )
    }
    upload.storage = { type: 'file', path: file }
    this.#kindOf.set(upload, { concat: concat?.kind, created })
    return upload
  }

  /** Checks that `id` can go into a final upload now (final-creation.ts); resolves to its length. */
  checkPartial(id: string): Promise<number> {
    return this.#finalCreation.checkPartial(id)
  }

  /** A final upload, assembled from its partials under their locks (final-creation.ts). */
  async #createFinal(upload: Upload, concat: FinalConcat, file: string): Promise<void> {
    await this.#finalCreation.create(upload, concat, file)
  }

  /**
   * Takes `bytes` of the free-space floor for a write that needs them all (an assembly): 413 when
   * the filesystem could never hold them, 507 when it cannot now. `undefined` without a floor.
   */
  async #claimSpace(bytes: number): Promise<SpaceClaim | undefined> {
    const space = this.space
    if (!space || bytes <= 0) return undefined
    const total = await space.totalBytes()
    if (bytes > total - space.minFreeBytes) throw tooLargeForStore(bytes, total, space.minFreeBytes)
    const claim = await space.claim(bytes)
    if (claim.granted === bytes) return claim
    throw insufficientStorage({
      freeBytes: await space.freeBytes(),
      minFreeBytes: space.minFreeBytes,
      neededBytes: bytes,
    })
  }

  /**
   * Resolves once the work this store left running after an answer has ended: the removal of
   * the partials a final took over. The sweep waits for it, and so does the plugin's close.
   */
  settled(): Promise<void> {
    return this.#settling.settled()
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
      const marked = { ...record, [UNVERIFIED_FROM]: offset } as unknown as Upload
      await this.#onDisk(() => this.configstore.set(id, marked, { durable: true }))
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
   * What the answers state beyond tus' own headers (upload-facts.ts); `undefined` for an unknown
   * upload. `afterRead`: about what the `getUpload` just before it read (a HEAD).
   */
  describe(id: string, options: { afterRead?: boolean } = {}) {
    return this.#facts.describe(id, options)
  }

  /** The facts of an upload this process has just created without a body (upload-facts.ts). */
  factsOfCreation(upload: Upload): Promise<Pick<UploadFacts, 'expiresAt'>> {
    return this.#facts.factsOfCreation(upload)
  }

  /** `partial` or `final` for an `Upload` this store handed out or created; else `undefined`. */
  concatKindOf(upload: Upload): 'partial' | 'final' | undefined {
    return this.#facts.concatKindOf(upload)
  }

  /**
   * The facts after a body was written to `upload`, from the writer's `lstat` if it passes it
   * (upload-facts.ts); `undefined` for an object this store did not hand out.
   */
  factsAfterWrite(upload: Upload, written?: fs.Stats) {
    return this.#facts.factsAfterWrite(upload, written)
  }

  /**
   * Removes an upload (removal.ts). `handedOn`: its bytes now count as another upload's (a
   * partial that a final took over), so the quota keeps counting them.
   */
  override remove(id: string, { handedOn = false }: { handedOn?: boolean } = {}) {
    return removeUpload(this, id, handedOn)
  }

  /** Sweeps the directory with this store's lock and periods; recounts the quota (removal.ts). */
  sweep(options: StoreSweepOptions = {}): Promise<SweepReport> {
    const parts = { locker: this.#locker, idPattern: this.#idPattern, claim: () => this.#claim }
    return sweepStore(this, parts, options)
  }

  /** Gives up the directory (another process may serve it now); once the store is done. */
  async close(): Promise<void> {
    await this.#claim?.release()
    this.#claim = undefined
  }

  /** The bytes the store holds as the quota counts them: a walk that removes nothing. */
  count(): Promise<number> {
    return countStore(this.directory, this.#idPattern)
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
// The stock constructor creates the directory with a callback that throws, which ends the
// process on an unusable directory; `init()` does that job and rejects instead.
skipStockDirectoryCheck(ExpiringFileStore)
