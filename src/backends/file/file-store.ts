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
 * - writes: PATCH bodies reach the data file directly (write-path.ts); creations and bodies
 *   keep the free-space floor and the quota (store-writes.ts, the store's `writes`);
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
import type { SweepReport } from '../../sweep/report.js'
import { skipStockDirectoryCheck } from '../../tus-internals.js'
import { concatOf } from './concatenation.js'
import type { DirectoryClaim } from './directory-holders.js'
import type { ExpiringFileStoreOptions } from './file-store-options.js'
import { type FinalConcat, FinalCreation } from './final-creation.js'
import { Finals } from './finals.js'
import type { FreeSpace } from './free-space.js'
import type { StoreQuota } from './quota.js'
import { closeFd, createEmptyFile } from './record-file.js'
import { RecordStore } from './record-store.js'
import {
  countStore,
  removeUpload,
  Settling,
  type StoreSweepOptions,
  sweepStore,
} from './removal.js'
import { openServices, prepareDirectory } from './store-directory.js'
import { StoreWrites } from './store-writes.js'
import { FileFacts, type UploadFacts } from './upload-facts.js'
import { note } from './upload-notes.js'
import { readDataFile, UploadReader } from './upload-reader.js'

export type { ExpiringFileStoreOptions } from './file-store-options.js'
export type { StoreSweepOptions } from './removal.js'
export type { UploadFacts } from './upload-facts.js'

export class ExpiringFileStore extends FileStore {
  readonly expireAfterMs: number
  readonly partialHoldMs: number
  readonly downtime: Downtime | undefined
  /** The free-space floor (`minFreeBytes`), or `undefined` when off; set by `open()`. */
  space: FreeSpace | undefined
  /** The store quota (`maxStoreBytes`), or `undefined` when there is none; set by `open()`. */
  quota: StoreQuota | undefined
  readonly #locker: SweepLocker | undefined
  readonly #idPattern: RegExp | undefined
  /** This process' claim on the directory, when it serves it as a holder. */
  #claim: DirectoryClaim | undefined
  /** The guards around the store's writes: space claims, checksummed bodies (store-writes.ts). */
  readonly writes: StoreWrites
  /** Work left running after an answer (see `settled`). */
  readonly #settling = new Settling()
  /**
   * What this store knows of each `Upload` it handed out (`getUpload`) or created, for the answer
   * after a body was written to it (`factsAfterWrite`). Held as long as the object.
   */
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
    this.writes = new StoreWrites(this, options.holdsLock ?? (() => false))
    this.finals = new Finals(this.configstore, this.#locker)
    const periods = { expireAfterMs: this.expireAfterMs, partialHoldMs: this.partialHoldMs }
    this.#facts = new FileFacts(this, periods, this.downtime)
    this.#reader = new UploadReader({
      files: this,
      facts: this.#facts,
      settleUnverified: this.#settleUnverified.bind(this),
    })
    this.#finalCreation = new FinalCreation(this, {
      locker: this.#locker,
      settling: this.#settling,
      load: (id) => this.#reader.load(id),
      claimSpace: (bytes) => this.writes.claimSpace(bytes),
      onDisk: (write) => this.writes.onDisk(write),
    })
    // Checksums are verified by the direct write path (write-path.ts), which this store gets.
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
    if (verified < size && this.writes.mayRollBack(id)) {
      await this.writes.rollBack(id, record, verified)
    } else if (verified === size && UNVERIFIED_FROM in record && this.writes.mayRollBack(id)) {
      await this.writes.clearUnverified(id, record)
    }
  }

  /**
   * The stock declaration, once the rest of the length fits above the free-space floor and in
   * the quota.
   */
  override async declareUploadLength(id: string, length: number): Promise<void> {
    const declare = () => this.writes.onDisk(() => super.declareUploadLength(id, length))
    if (!this.space && !this.quota) return declare()
    const written = await fsp.lstat(this.dataPathOf(id)).then(
      (stats) => stats.size,
      () => 0,
    )
    await this.writes.reserve(length - written, length)
    // A walk counted its bytes before the declaration, and counts its length after it.
    const grows = { id, from: written }
    return this.writes.withQuota(length - written, declare, { wholeBytes: length, grows })
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
    return this.writes.onDisk(() => this.#create(upload))
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
      await this.writes.withQuota(
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
    note(upload, { known: { concat: concat?.kind, created } })
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
   * Resolves once the work this store left running after an answer has ended: the removal of
   * the partials a final took over. The sweep waits for it, and so does the plugin's close.
   */
  settled(): Promise<void> {
    return this.#settling.settled()
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

  // The write guards as members of the store, as `fastify-tus/sweep` has always typed them.

  /** `writes.reserve`: refuses (507, or 413) `bytes` more that would cross the free-space floor. */
  reserve(bytes: number, wholeBytes = bytes): Promise<void> {
    return this.writes.reserve(bytes, wholeBytes)
  }

  /** `writes.withQuota`: runs `write` with `bytes` claimed from the quota. */
  withQuota<T>(
    bytes: number,
    write: () => Promise<T>,
    how?: Parameters<StoreWrites['withQuota']>[2],
  ): Promise<T> {
    return this.writes.withQuota(bytes, write, how)
  }

  /** `writes.beginChecksummedWrite`: marks the bytes past `offset` unverified. */
  beginChecksummedWrite(id: string, offset: number): Promise<void> {
    return this.writes.beginChecksummedWrite(id, offset)
  }

  /** `writes.endChecksummedWrite`: clears the mark once the body is verified. */
  endChecksummedWrite(id: string): Promise<void> {
    return this.writes.endChecksummedWrite(id)
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
