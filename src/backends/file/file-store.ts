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
 * - PATCH bodies reach the data file directly (write-path.ts), not through web streams;
 * - partial and final uploads of the concatenation extension (concatenation.ts).
 */
import fs, { createReadStream } from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import { FileStore } from '@tus/file-store'
import { ERRORS, isPathInsideDirectory, Upload } from '@tus/utils'
import { DirectoryError } from '../../errors.js'
import {
  ANSWER_PENDING,
  CONCAT,
  concatKind,
  countedBytes,
  type Downtime,
  defaultPartialHoldMs,
  expiresAt,
  type IdlePeriods,
  idlePeriodOf,
  isExpired,
  isFinished,
  lastActivityMs,
  METADATA_SUFFIX,
  TAKEN_BY,
  UNVERIFIED_FROM,
  type UploadRecord,
  verifiedBytes,
} from '../../expiry/policy.js'
import type { SweepLocker } from '../../locking/activity-locker.js'
import { skipStockDirectoryCheck } from '../../tus-internals.js'
import {
  type Concat,
  type CopySource,
  concatenateFiles,
  concatOf,
  type FinalRecordFields,
  lockPartials,
  type TusError,
  tusError,
  unlockAll,
} from './concatenation.js'
import { FreeSpace } from './free-space.js'
import { LocalQuotaCounter, type QuotaCounter, StoreQuota } from './quota.js'
import { type SweepOptions, type SweepReport, sweepDirectory } from './sweep-engine.js'

/** The callback API, promisified: about half the cost of `fs/promises` on Node 20. */
const lstat = promisify(fs.lstat)

import { type DirectoryClaim, joinHolders } from './directory-holders.js'
import { Finals } from './finals.js'
import { rawMetadataOf } from './raw-metadata.js'
import { closeFd, createEmptyFile, openStoreFdSync } from './record-file.js'
import { RecordStore } from './record-store.js'
import { StoreWrites } from './store-writes.js'

export interface ExpiringFileStoreOptions {
  directory: string
  /** 0 turns expiry off; the store then does not advertise the `expiration` extension. */
  expireAfterMs: number
  /** How long a finished partial upload waits for its final (expiry-policy.ts `IdlePeriods`). */
  partialHoldMs?: number | undefined
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
  /**
   * Serve the directory as one of its holders (directory-holders.ts): `open()` refuses a
   * directory that another live process serves without sharing Redis (`redisPrefix`) with this
   * one, and the sweep removes at once the temporary files of processes that are gone. Without
   * it (a tool, a test), nothing is claimed.
   */
  holder?: { description: string; redisPrefix: string | undefined } | undefined
}

export interface UploadFacts {
  expiresAt: Date | undefined
  rawMetadata: string | undefined
  /** `Upload-Concat` as HEAD answers it, for partial and final uploads (built-in store). */
  concat?: string | undefined
}

export type StoreSweepOptions = Pick<SweepOptions, 'dryRun' | 'signal' | 'log' | 'concurrency'>

/** How long the facts of a `getUpload` wait for the answer that follows it. */
const LAST_READ_MS = 1000
/** At most this many uploads' facts wait at once (a burst of reads is cleared, not kept). */
const LAST_READ_MAX = 10_000

export class ExpiringFileStore extends FileStore {
  readonly expireAfterMs: number
  readonly partialHoldMs: number
  /** The two idle periods, made once: every HEAD and PATCH asks for them. */
  readonly #periods: IdlePeriods
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
  readonly #settling = new Set<Promise<void>>()
  /**
   * What the last `getUpload` of each upload saw, for the HEAD answer that follows it (see
   * `describe`): taken once, dropped after a second. Bounded by the uploads read within a second.
   */
  readonly #lastRead = new Map<
    string,
    { record: Upload; offset: number; mtimeMs: number; at: number }
  >()
  /**
   * The concatenation kind of each `Upload` this store handed out (`getUpload`) or created, for
   * the answer after a body was written to it (`factsAfterWrite`). Held as long as the object.
   */
  readonly #kindOf = new WeakMap<
    Upload,
    {
      concat: 'partial' | 'final' | undefined
      /** For an upload `create` made: its data file's mtime then (`undefined` if unread). */
      created?: number | undefined
    }
  >()
  declare configstore: RecordStore
  /** Final uploads a retried creation is answered with (finals.ts). */
  readonly finals: Finals

  constructor(options: ExpiringFileStoreOptions) {
    super({
      directory: options.directory,
      configstore: new RecordStore(options.directory),
      expirationPeriodInMilliseconds: 0,
    })
    this.space = undefined
    this.quota = undefined
    this.expireAfterMs = options.expireAfterMs
    this.partialHoldMs = Math.max(
      options.partialHoldMs ?? defaultPartialHoldMs(options.expireAfterMs),
      options.expireAfterMs,
    )
    this.#periods = { expireAfterMs: this.expireAfterMs, partialHoldMs: this.partialHoldMs }
    this.downtime = options.downtime
    this.#locker = options.locker
    this.#idPattern = options.idPattern
    this.writes = new StoreWrites(this, options.holdsLock ?? (() => false))
    this.finals = new Finals(this.configstore, this.#locker)
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
    if (options.minFreeBytes !== 0) {
      store.space = await FreeSpace.open(path.resolve(store.directory), options.minFreeBytes)
    }
    if (options.maxStoreBytes !== undefined) {
      const counter = options.quotaCounter ?? new LocalQuotaCounter()
      store.quota = new StoreQuota(options.maxStoreBytes, counter, () => store.count())
    }
    if (options.holder) {
      const { description, redisPrefix } = options.holder
      store.#claim = await joinHolders(path.resolve(store.directory), redisPrefix, description)
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
    return (await this.#load(id)).upload
  }

  /** `getUpload`, and the record it read. */
  async #load(id: string): Promise<{ upload: Upload; record: Upload }> {
    const file = this.dataPathOf(id)
    // The data file's stat alongside the record's read, not after it (one wait less per request).
    const stating = lstat(file)
    stating.catch(() => {})
    const record = await this.configstore.get(id)
    if (!record) throw ERRORS.FILE_NOT_FOUND
    let stats: fs.Stats
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
    if (offset < stats.size && this.writes.mayRollBack(id)) {
      await this.writes.rollBack(id, record, offset)
    } else if (offset === stats.size && UNVERIFIED_FROM in record && this.writes.mayRollBack(id)) {
      await this.writes.clearUnverified(id, record)
    }
    const period = this.#periodOf(record, record.size, offset)
    if (period !== undefined) {
      const activity = lastActivityMs(stats.mtimeMs, this.downtime)
      if (isExpired(activity, period, Date.now())) throw ERRORS.FILE_NO_LONGER_EXISTS
    }
    offset = Math.min(offset, stats.size)
    this.#remember(id, record, offset, stats.mtimeMs)
    return { upload: this.#uploadOf(id, record, offset, file), record }
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
    this.#kindOf.set(upload, { concat: concatKind(record) })
    return upload
  }

  /**
   * A partial upload whose bytes a final took over (finals.ts): answered as finished until its
   * record expires, `expireAfterMs` after it was marked (its record's clock).
   */
  async #loadTaken(id: string, record: Upload): Promise<{ upload: Upload; record: Upload }> {
    let mtimeMs: number
    try {
      mtimeMs = (await lstat(this.configstore.fileOf(id))).mtimeMs
    } catch {
      throw ERRORS.FILE_NO_LONGER_EXISTS
    }
    const offset = record.size ?? 0
    const period = this.#periodOf(record, record.size, offset)
    if (
      period !== undefined &&
      isExpired(lastActivityMs(mtimeMs, this.downtime), period, Date.now())
    ) {
      throw ERRORS.FILE_NO_LONGER_EXISTS
    }
    this.#remember(id, record, offset, mtimeMs)
    return { upload: this.#uploadOf(id, record, offset, this.dataPathOf(id)), record }
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

  /**
   * The stock `read`, on a data file opened as the store opens its files (no link out of the
   * directory, a regular file): a missing one (a partial a final took over, a file removed
   * behind the store's back) is a `404`, not a stream that fails once its answer has begun.
   */
  override read(id: string) {
    let fd: number
    try {
      fd = openStoreFdSync(this.dataPathOf(id))
    } catch {
      throw ERRORS.FILE_NOT_FOUND
    }
    return createReadStream('', { fd })
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
    this.#kindOf.set(upload, { concat: concat?.kind, created })
    return upload
  }

  /**
   * Checks that `id` can go into a final upload now: a partial upload of this store (404, or 410
   * once expired), finished, with its length known (400). Resolves to its length.
   */
  async checkPartial(id: string): Promise<number> {
    let upload: Upload
    let record: Upload
    try {
      ;({ upload, record } = await this.#load(id))
    } catch (error) {
      const status = (error as Partial<TusError>).status_code
      if (status === 404) throw tusError(404, `partial upload ${id} was not found`)
      if (status === 410) throw tusError(410, `partial upload ${id} has expired`)
      throw error
    }
    if ((record as UploadRecord)[TAKEN_BY] !== undefined) {
      throw tusError(410, `partial upload ${id} was already assembled into another final upload`)
    }
    if (concatKind(record) !== 'partial') {
      throw tusError(
        400,
        `upload ${id} is not a partial upload (created with Upload-Concat: partial)`,
      )
    }
    if (upload.size === undefined || !isFinished(upload.size, upload.offset)) {
      const of = upload.size === undefined ? 'a length not declared yet' : `${upload.size} bytes`
      throw tusError(400, `partial upload ${id} is not finished (${upload.offset} of ${of})`)
    }
    return upload.size
  }

  /**
   * A final upload, assembled from its partials under their locks (concatenation.ts): its data
   * file appears whole, then its record is written, then the partials' records are marked taken
   * by it and their data files removed (finals.ts: a retried creation is answered with it).
   */
  async #createFinal(
    upload: Upload,
    concat: Extract<Concat, { kind: 'final' }>,
    file: string,
  ): Promise<void> {
    const locks = await lockPartials(this.#locker, concat.partials)
    let handedOff = false
    try {
      const { unique } = await this.finals.build(concat.partials, async () => ({
        id: upload.id,
        unique: await this.#assembleFinal(upload, concat, file),
      }))
      // The final holds their bytes now: the partials' data files go, after the answer
      // (unlinking their bytes takes about as long as copying them) and under their locks until
      // gone. Their records stay, marked taken, for a retried creation.
      const taken = await this.finals.markTaken([...unique.keys()], upload.id)
      // Claimed before the partials' removal keeps the disk busy: the answer waits for this.
      if (concat.clientWaiting?.() !== false) await this.finals.claimAssembled(upload.id)
      else this.finals.markedHere(upload.id)
      const removal = (async () => {
        try {
          await Promise.allSettled(
            [...unique.keys()].map((id) =>
              taken.has(id) ? fsp.unlink(this.dataPathOf(id)) : this.remove(id, { handedOn: true }),
            ),
          )
        } finally {
          await unlockAll(locks)
        }
      })()
      handedOff = true
      this.#settling.add(removal)
      void removal.finally(() => this.#settling.delete(removal))
    } finally {
      if (!handedOff) await unlockAll(locks)
    }
  }

  /**
   * Under the partials' locks: checks them again, takes the final's bytes of the quota and of the
   * free-space floor, copies, and writes the final's record (`answer_pending` until someone knows
   * of it). A failure leaves nothing behind. Resolves to the partials and their lengths.
   */
  async #assembleFinal(
    upload: Upload,
    concat: Extract<Concat, { kind: 'final' }>,
    file: string,
  ): Promise<Map<string, number>> {
    const sources = await this.#checkPartialsLocked(concat.partials)
    const size = sources.reduce((sum, source) => sum + source.bytes, 0)
    if (size !== upload.size) {
      throw tusError(400, `the partial uploads hold ${size} bytes, not ${upload.size}`)
    }
    // The quota counts the partials already: the final takes over their bytes, and only a
    // partial listed twice adds to the total. The disk needs all of them, until the partials go.
    const unique = new Map(concat.partials.map((id, i) => [id, sources[i]?.bytes ?? 0]))
    const counted = [...unique.values()].reduce((sum, bytes) => sum + bytes, 0)
    await this.writes.withQuota(
      size - counted,
      async () => {
        const space = await this.writes.claimSpace(size)
        try {
          await this.writes.onDisk(() => concatenateFiles(sources, file))
          space?.release(size)
          const fields: FinalRecordFields = {
            [CONCAT]: 'final',
            partials: concat.partials,
            concat_header: concat.header,
            [ANSWER_PENDING]: true,
          }
          const record = { ...upload, ...fields } as unknown as Upload
          await this.writes
            .onDisk(() => this.configstore.set(upload.id, record))
            .catch(async (error) => {
              await fsp.unlink(file).catch(() => {})
              throw error
            })
        } finally {
          space?.release(0)
        }
      },
      { wholeBytes: size },
    )
    return unique
  }

  /**
   * The partials looked at again under their locks: one may have expired or gone since the
   * request's check. One that another request of the same final used meanwhile (it got the
   * locks first) answers 409, which tus clients retry: the retry is answered with that final.
   */
  async #checkPartialsLocked(partials: readonly string[]): Promise<CopySource[]> {
    const sources: CopySource[] = []
    for (const id of partials) {
      try {
        sources.push({ file: this.dataPathOf(id), bytes: await this.checkPartial(id) })
      } catch (error) {
        const gone = (error as Partial<TusError>).status_code === 410
        if (gone && (await this.finals.recordedFinalOf(partials))) {
          throw tusError(
            409,
            'these partial uploads were just assembled; send the final upload again',
          )
        }
        throw error
      }
    }
    return sources
  }

  /**
   * Resolves once the work this store left running after an answer has ended: the removal of
   * the partials a final took over. The sweep waits for it, and so does the plugin's close.
   */
  async settled(): Promise<void> {
    while (this.#settling.size > 0) await Promise.allSettled([...this.#settling])
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

  /**
   * The facts of an upload this process has just created without a body: its record is known,
   * so only its data file's clock is needed: the one `create` read, or else one `lstat` (where
   * `describe` also reads the record).
   * A final upload, and an empty one, are finished (an empty partial waits for its final).
   */
  async factsOfCreation(upload: Upload): Promise<Pick<UploadFacts, 'expiresAt'>> {
    const kind = concatOf(upload)?.kind
    const period = kind === 'final' ? undefined : this.#periodOf({ [CONCAT]: kind }, upload.size, 0)
    if (period === undefined) return { expiresAt: undefined }
    try {
      const mtimeMs =
        this.#kindOf.get(upload)?.created ?? (await lstat(this.dataPathOf(upload.id))).mtimeMs
      const activity = lastActivityMs(mtimeMs, this.downtime)
      return { expiresAt: new Date(expiresAt(activity, period)) }
    } catch {
      return { expiresAt: undefined }
    }
  }

  /** `partial` or `final` for an `Upload` this store handed out or created; else `undefined`. */
  concatKindOf(upload: Upload): 'partial' | 'final' | undefined {
    return this.#kindOf.get(upload)?.concat
  }

  /**
   * The facts of an upload a body was just written to, for the answer to that PATCH (or POST):
   * `upload` is the object this store gave the handler (`getUpload` under the request's lock, or
   * `create`), with the length the request may have declared, so only the data file's clock is
   * read (one `lstat`, where `describe` also reads the record again; none when the writer passes
   * the `lstat` it took once the bytes were in). `undefined` for an object this store did not
   * hand out: the caller then describes the upload afresh.
   */
  async factsAfterWrite(
    upload: Upload,
    written?: fs.Stats,
  ): Promise<Pick<UploadFacts, 'expiresAt'> | undefined> {
    const known = this.#kindOf.get(upload)
    if (!known) return undefined
    if (this.expireAfterMs === 0) return { expiresAt: undefined }
    let stats: fs.Stats
    try {
      stats = written ?? (await lstat(this.dataPathOf(upload.id)))
    } catch {
      return { expiresAt: undefined }
    }
    // The body's bytes are verified once the write ended (a checksum's mark is cleared then);
    // a finished upload takes no more bytes, so a later body's mark cannot make it unfinished.
    const period = this.#periodOf({ [CONCAT]: known.concat }, upload.size, stats.size)
    if (period === undefined) return { expiresAt: undefined }
    const activity = lastActivityMs(stats.mtimeMs, this.downtime)
    return { expiresAt: new Date(expiresAt(activity, period)) }
  }

  /** How long this upload may stay idle (expiry-policy.ts), or `undefined`: it never expires. */
  #periodOf(record: object, size: number | undefined, offset: number): number | undefined {
    return idlePeriodOf(record, size, offset, this.#periods)
  }

  #factsOf(record: Upload, offset: number, mtimeMs: number): UploadFacts {
    const period = this.#periodOf(record, record.size, offset)
    const expires =
      period === undefined
        ? undefined
        : new Date(expiresAt(lastActivityMs(mtimeMs, this.downtime), period))
    return {
      expiresAt: expires,
      rawMetadata: rawMetadataOf(record),
      concat: concatHeaderOf(record),
    }
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

  /**
   * Removes an upload. `handedOn`: its bytes now count as another upload's (a partial that a
   * final took over), so the quota keeps counting them.
   */
  override async remove(id: string, { handedOn = false }: { handedOn?: boolean } = {}) {
    // Only an upload is removed: without this, DELETE /files/<id>.json unlinked the metadata of
    // upload <id>, and DELETE /files/<name> any other file of the directory.
    const record = (await this.configstore.get(id)) as Partial<Upload> | undefined
    if (record?.id !== id) throw ERRORS.FILE_NOT_FOUND
    // What the upload counts against the quota, given back once its data file is gone.
    const counted =
      this.quota && !handedOn
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
    // Partials a final took over are gone first: they would count, and show as busy.
    await this.settled()
    const at = Date.now()
    const tokens = await this.#claim?.liveTokens().catch(() => undefined)
    // Marked right before the walk: what is written between the two may be counted twice.
    const recount = this.quota && !options.dryRun ? this.quota : undefined
    const mark = await recount?.mark()
    try {
      const report = await sweepDirectory({
        holders: tokens && { tokens, at },
        tallyAs: recount?.growingUploads(),
        ...options,
        directory: this.directory,
        expireAfterMs: this.expireAfterMs,
        partialHoldMs: this.partialHoldMs,
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
    } finally {
      recount?.walked()
    }
  }

  /** Gives up the directory (another process may serve it now); once the store is done. */
  async close(): Promise<void> {
    await this.#claim?.release()
    this.#claim = undefined
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
/** `Upload-Concat` as HEAD answers it: `partial`, `final;<url> <url>`, or none. */
function concatHeaderOf(record: Upload): string | undefined {
  const kind = concatKind(record)
  if (kind === 'partial') return 'partial'
  if (kind !== 'final') return undefined
  const header = (record as unknown as Partial<FinalRecordFields>).concat_header
  return typeof header === 'string' ? header : 'final;'
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
