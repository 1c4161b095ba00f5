/**
 * The sweep engine: removes expired unfinished uploads and orphans from a file-store directory.
 * No Fastify in here, so that the plugin, a CLI and the benchmarks run the very same code.
 *
 * For every entry of the directory tree (read as a stream, a bounded number at a time):
 * - data file `<id>` with an mtime newer than the period: kept after one `lstat`;
 * - data file with `<id>.json`: removed only when the record is unfinished (or a partial upload
 *   of the concatenation extension that no final used) and its last activity (the data file's
 *   mtime) is older than the period, under the upload's lock, after a second look taken under
 *   that lock;
 * - data file without metadata, or metadata without data: an orphan, removed when its name
 *   matches `idPattern` and it is older than the period;
 * - anything else (foreign files, symlinks, dot-files, records of another id): left alone.
 *
 * Every step is written once, against the fs port (sweep/fs-port.ts), whose calls complete
 * synchronously while they can: most entries are settled by a synchronous first look, and a
 * removal whose calls all answer at once runs as one synchronous section (`removeNow`). Why the
 * sweep is written so: CONTRIBUTING.md, "Why the sweep is written as it is".
 */
import type fs from 'node:fs'
import path from 'node:path'
import { setImmediate as nextTurn } from 'node:timers/promises'
import {
  concatKind,
  countedBytes,
  DEFAULT_ID_PATTERN,
  defaultPartialHoldMs,
  type IdlePeriods,
  idlePeriodOf,
  isExpired,
  lastActivityMs,
  recordSize,
  TAKEN_BY,
  verifiedBytes,
  wholeName,
} from '../../expiry/policy.js'
import { newReport, type SweepReport } from '../../sweep/report.js'
import { dataNameOfRecord, isRecordName, recordNameOf, tempFileOf, tempFileToken } from './names.js'
import { callbackFs, SweepPort, SYNC_UNLINK_MAX_BYTES } from './sweep/fs-port.js'
import type { Found, ParsedRecord, Removal, SweepOptions } from './sweep/options.js'
import {
  BoundedPool,
  Claims,
  call,
  drive,
  isPromise,
  type MaybePromise,
  type Steps,
} from './sweep/steps.js'
import { TreeWalk, type WalkEntry } from './walk.js'

// Re-exported for the modules that import them from here (src/sweep/report.ts is their home).
export type { SweepFs } from './sweep/fs-port.js'
export type { Removal, SweepOptions } from './sweep/options.js'

const DEFAULT_CONCURRENCY = 8
const DEFAULT_MAX_REPORTED_IDS = 1000
/**
 * The longest the sweep runs synchronous first looks before it lets the event loop turn; reading
 * the directory cannot stall it for long when the inodes are not cached.
 */
const SLICE_MS = 5

/** Sessions (absolute data paths) a sweep of this process is removing right now. */
const removing = new Claims()

/** Sweeps `directory` once. Rejects only when the directory itself cannot be read. */
export async function sweepDirectory(options: SweepOptions): Promise<SweepReport> {
  const sweep = new Sweep(options)
  return sweep.run()
}

class Sweep {
  readonly io: SweepPort
  readonly now: () => number
  readonly idPattern: RegExp
  readonly maxIds: number
  readonly started = performance.now()
  readonly report: SweepReport
  readonly root: string
  readonly periods: IdlePeriods

  constructor(readonly options: SweepOptions) {
    this.io = SweepPort.of(options.fs ?? callbackFs, options.clock ?? (() => performance.now()))
    this.now = options.now ?? Date.now
    this.idPattern = wholeName(options.idPattern ?? DEFAULT_ID_PATTERN)
    this.maxIds = options.maxReportedIds ?? DEFAULT_MAX_REPORTED_IDS
    this.report = newReport(options.dryRun === true)
    this.root = path.resolve(options.directory)
    const { expireAfterMs } = options
    const hold = options.partialHoldMs ?? defaultPartialHoldMs(expireAfterMs)
    this.periods = { expireAfterMs, partialHoldMs: Math.max(hold, expireAfterMs) }
  }

  /**
   * Whether a file last modified at `mtimeMs` belongs to a session idle for longer than `period`
   * (by default the shortest: `expireAfterMs`, which every session must pass to expire).
   */
  expired(mtimeMs: number, period = this.options.expireAfterMs): boolean {
    return isExpired(lastActivityMs(mtimeMs, this.options.downtime), period, this.now())
  }

  /** Whether a session of this record and data file has expired (expiry-policy.ts). */
  recordExpired(record: Record<string, unknown>, data: fs.Stats): boolean {
    const bytes = verifiedBytes(record, data.size)
    const period = idlePeriodOf(record, recordSize(record), bytes, this.periods)
    return period !== undefined && this.expired(data.mtimeMs, period)
  }

  async run(): Promise<SweepReport> {
    const { signal, concurrency = DEFAULT_CONCURRENCY, expireAfterMs } = this.options
    if (this.options.tally) this.report.storeBytes = 0
    if (expireAfterMs > 0 || this.options.tally) await this.visitAll(concurrency, signal)
    this.report.aborted = signal?.aborted === true
    this.report.durationMs = Math.round(performance.now() - this.started)
    return this.report
  }

  /**
   * Visits every entry of the walk. Most visits end with their synchronous first look; a visit
   * that goes on synchronously (a record read, a removal) is followed by a turn of the event
   * loop, so that requests get one after each; one that waits (the pool, a lock) runs
   * alongside, `concurrency` at most: the walk waits for a free slot, so memory stays flat
   * however large the tree. Stops between entries once `signal` aborts; waits for the visits
   * under way.
   */
  async visitAll(concurrency: number, signal: AbortSignal | undefined): Promise<void> {
    const pool = new BoundedPool(concurrency)
    const walk = new TreeWalk(this.root, this.io.dirs, {
      kinds: ['file', 'temp', 'unreadable-directory'],
    })
    // The caller's turn of the event loop ends first (a server's onReady: its ready() does not
    // wait for the first slice).
    await nextTurn()
    let sliceEnd = performance.now() + SLICE_MS
    try {
      for (;;) {
        const next = walk.next()
        // An unreadable store directory throws: the sweep as a whole fails.
        const entry = isPromise(next) ? await next : next
        if (entry === undefined || signal?.aborted) break
        if (entry.kind === 'unreadable-directory') {
          this.fail(entry.path, entry.error, 'cannot read a subdirectory')
          continue
        }
        while (pool.full) await pool.freed()
        const visit = this.visit(entry)
        if (isPromise(visit)) pool.add(visit)
        if (visit === true || performance.now() > sliceEnd) {
          await nextTurn()
          sliceEnd = performance.now() + SLICE_MS
        }
      }
    } finally {
      walk.close()
      await pool.idle()
    }
  }

  /**
   * Visits an entry, starting with a first look (one `lstat`, or for a record whether its data
   * file exists) that settles fresh data files and records beside their data file. `false`:
   * the first look settled it; `true`: the visit went on, and ended, synchronously; a promise:
   * the visit goes on. Never throws nor rejects: a failure is the entry's error.
   */
  visit(entry: WalkEntry<'file' | 'temp'>): boolean | Promise<unknown> {
    const file = entry.path
    try {
      if (entry.kind === 'temp') return this.goOn(file, this.visitTemp(file))
      if (isRecordName(file)) {
        // A record with its data file is visited through the data file.
        const hasData = this.io.exists(this.pathOf(dataNameOfRecord(file)))
        if (!isPromise(hasData)) return this.lookedAtRecord(file, hasData)
        return hasData.then<unknown, false>(
          (has) => this.lookedAtRecord(file, has),
          this.failed(file),
        )
      }
      const data = this.io.stat(this.pathOf(file))
      if (!isPromise(data)) return this.lookedAtData(file, data)
      return data.then<unknown, false>((stats) => this.lookedAtData(file, stats), this.failed(file))
    } catch (error) {
      return this.failed(file)(error)
    }
  }

  /** After the first look at a record: `visit`'s answer. */
  lookedAtRecord(file: string, hasData: boolean): boolean | Promise<unknown> {
    return !hasData && this.goOn(file, this.visitMetadata(file))
  }

  /** After the first look at a data file: `visit`'s answer. */
  lookedAtData(id: string, data: fs.Stats | undefined): boolean | Promise<unknown> {
    // Gone since the listing (a client's DELETE, another sweeper): nothing to do, no error.
    if (!data) return false
    // Most uploads are fresh: one lstat decides, the record is never read.
    if (!this.options.tally && !this.expired(data.mtimeMs)) {
      this.report.scanned++
      return false
    }
    return this.goOn(id, this.visitData(id, data))
  }

  /** Runs the rest of a visit: `true` when it ended synchronously, else its promise. */
  goOn(file: string, steps: Steps<unknown>): true | Promise<unknown> {
    try {
      const done = drive(steps)
      return isPromise(done) ? done.then(noop, this.failed(file)) : true
    } catch (error) {
      this.failed(file)(error)
      return true
    }
  }

  /** Reports the failure of an entry's visit. */
  failed(file: string): (error: unknown) => false {
    return (error) => {
      this.fail(file, error, 'sweep entry failed')
      return false
    }
  }

  *visitData(id: string, data: fs.Stats): Steps<void> {
    this.report.scanned++
    let removed = false
    try {
      removed = yield* this.visitDataFile(id, data)
    } finally {
      if (!removed && this.options.tally) yield* this.tallyKept(id, data.size)
    }
  }

  /** Removes the data file's session if it has expired; true when it did. */
  *visitDataFile(id: string, data: fs.Stats): Steps<boolean> {
    if (!this.expired(data.mtimeMs)) return false
    const record = yield* this.readRecord(id)
    // A data file without a record, or whose record a crash left torn: half an upload.
    if (record === 'missing' || record === 'torn') {
      return this.idPattern.test(id) && (yield* this.remove(id, 'orphan-data'))
    }
    if (record.id !== id) return false // not a record of this file: someone else's pair of files
    if (!this.recordExpired(record, data)) return false
    return yield* this.remove(id, concatKind(record) ?? 'upload')
  }

  /**
   * Counts an upload left in the store: its declared length, else (or if unreadable) its bytes; a
   * record without its data file (no `bytes`) counts until released (quota.ts), if an upload's own.
   */
  *tallyKept(id: string, bytes?: number): Steps<void> {
    const as = this.options.tallyAs?.get(id)
    if (as !== undefined) {
      this.report.storeBytes = (this.report.storeBytes ?? 0) + as
      return
    }
    let size: number | undefined
    try {
      const record = yield* this.readRecord(id)
      const own = typeof record === 'object' && record.id === id
      if (own && bytes === undefined && record[TAKEN_BY] !== undefined) return
      if (own) size = recordSize(record)
    } catch {
      // An unreadable record: its data file's bytes still count (its visit reports the error).
    }
    this.report.storeBytes = (this.report.storeBytes ?? 0) + countedBytes(size, bytes ?? 0)
  }

  /** A temporary file made by a process that no longer serves the directory (`holders`). */
  ownerGone(file: string, temp: fs.Stats): boolean {
    const { holders } = this.options
    if (!holders || temp.mtimeMs >= holders.at) return false
    const token = tempFileToken(file)
    return token !== undefined && !holders.tokens.has(token)
  }

  /**
   * A record the store was writing when its process died (record-file.ts), or a final's data
   * file being assembled: removed once older than the period, or at once when the process that
   * made it is gone (`ownerGone`); counted as half an upload. A fresh one is being written.
   */
  *visitTemp(file: string): Steps<void> {
    const temp = yield* call(this.io.stat(this.pathOf(file)))
    if (!temp || (!this.expired(temp.mtimeMs) && !this.ownerGone(file, temp))) return
    this.report.scanned++
    const { id, half } = tempFileOf(file)
    const kind = half === 'record' ? 'orphan-metadata' : 'orphan-data'
    const found = { bytes: temp.size, lastActivity: temp.mtime }
    if (this.options.dryRun) this.count(id, kind, found)
    else if (!this.options.signal?.aborted && (yield* call(this.io.unlink(this.pathOf(file))))) {
      this.count(id, kind, found)
    }
  }

  /** A record whose data file the first look did not find. */
  *visitMetadata(file: string): Steps<void> {
    const id = dataNameOfRecord(file)
    // Its data file is gone because a visit of this process is removing the pair right now.
    if (removing.has(this.pathOf(id))) return
    // Gone meanwhile: its data file's visit removed the pair.
    const meta = yield* call(this.io.stat(this.pathOf(file)))
    if (!meta) return
    this.report.scanned++
    const expired = this.expired(meta.mtimeMs)
    let removed = false
    if (expired && (yield* this.isUsedPartial(id))) removed = yield* this.remove(id, 'used-partial')
    else if (expired && this.idPattern.test(id)) removed = yield* this.remove(id, 'orphan-metadata')
    if (!removed && this.options.tally) yield* this.tallyKept(id)
  }

  /**
   * Whether the record of `id` (without its data file) is a partial upload's that a final took
   * over: the store's own, whatever `idPattern` says (a name of a custom naming function).
   */
  *isUsedPartial(id: string): Steps<boolean> {
    try {
      const record = yield* this.readRecord(id)
      return typeof record === 'object' && record.id === id && record[TAKEN_BY] !== undefined
    } catch {
      return false
    }
  }

  /**
   * Removes one session under its lock after looking again: a request may have written to it,
   * or removed it, since the first look.
   */
  *remove(id: string, kind: Removal['kind']): Steps<boolean> {
    if (this.options.signal?.aborted) return false
    if (this.options.dryRun) {
      const found = yield* this.lookAgain(id, kind, this.io)
      if (found) this.count(id, kind, found)
      return false
    }
    // Another visit of this process is removing the session (without a locker nothing else
    // keeps two apart): its record, unlinked after its data file, would be taken for an orphan
    // meanwhile, and counted twice.
    const key = this.pathOf(id)
    if (removing.has(key)) return false
    removing.add(key)
    try {
      return this.removeNow(id, kind) ?? (yield* this.removeLocked(id, kind))
    } finally {
      removing.delete(key)
    }
  }

  /** The removal under the lock taken from the locker, on the port as it is. */
  *removeLocked(id: string, kind: Removal['kind']): Steps<boolean> {
    const { locker, signal } = this.options
    const lock = locker ? yield* call(locker.tryLock(id)) : undefined
    if (locker && !lock) {
      this.report.skippedBusy++
      return false
    }
    try {
      const found = yield* this.lookAgain(id, kind, this.io)
      // Checked under the lock: once close() has begun, nothing more is deleted.
      if (!found || signal?.aborted) return false
      return yield* this.unlinkSession(id, kind, found, this.io)
    } finally {
      if (lock) yield* call(lock.unlock())
    }
  }

  /**
   * The removal as one synchronous section, when it can be one: the locker's locks live in this
   * process only (`isFreeHere`), or there is no locker, and looks, reads and unlinks are all
   * synchronous (`SweepPort.pinned`). Nothing else in the process runs until the section ends,
   * so no request can take the lock between the check and the unlinks: the lock is held without
   * taking it, and the locker's table does not change (see `Claims`). `undefined` when it cannot
   * be one: the caller then takes the lock (`removeLocked`).
   */
  removeNow(id: string, kind: Removal['kind']): boolean | undefined {
    const { locker, signal } = this.options
    const pinned = this.io.pinned()
    if (!pinned || (locker && !locker.isFreeHere)) return undefined
    if (locker?.isFreeHere && !locker.isFreeHere(id)) {
      this.report.skippedBusy++
      return false
    }
    const found = settled(drive(this.lookAgain(id, kind, pinned)))
    // Checked under the lock: once close() has begun, nothing more is deleted.
    if (!found || signal?.aborted) return false
    // A large data file is unlinked on the pool, under the lock; so is the session whose look
    // was slow enough to turn a kind of synchronous call off.
    const small = (size: number | undefined) => size === undefined || size <= SYNC_UNLINK_MAX_BYTES
    if (!small(found.dataSize) || !small(found.metaSize) || !this.io.allOn()) return undefined
    return settled(drive(this.unlinkSession(id, kind, found, pinned)))
  }

  /** The session's state now, on `io`: `undefined` if it no longer qualifies for removal. */
  *lookAgain(id: string, kind: Removal['kind'], io: SweepPort): Steps<Found | undefined> {
    const dataPath = this.pathOf(id)
    const metaPath = this.pathOf(recordNameOf(id))
    if (recordOnly(kind)) {
      if (yield* call(io.exists(dataPath))) return undefined
      return this.judgeOrphanRecord(yield* call(io.stat(metaPath)))
    }
    const data = yield* call(io.stat(dataPath))
    if (!data || !this.expired(data.mtimeMs)) return undefined
    const meta = yield* call(io.stat(metaPath))
    const record = meta ? yield* this.readRecord(id, io) : 'missing'
    return this.judge(id, kind, data, meta, record)
  }

  /** A record without its data file: what to remove, if it is still expired. */
  judgeOrphanRecord(meta: fs.Stats | undefined): Found | undefined {
    if (!meta || !this.expired(meta.mtimeMs)) return undefined
    return { bytes: meta.size, lastActivity: meta.mtime, metaSize: meta.size }
  }

  /** A data file (expired) and its record as looked at under the lock: what to remove, if anything. */
  judge(
    id: string,
    kind: Removal['kind'],
    data: fs.Stats,
    meta: fs.Stats | undefined,
    record: ParsedRecord,
  ): Found | undefined {
    const found: Found = {
      bytes: data.size + (meta?.size ?? 0),
      lastActivity: data.mtime,
      dataSize: data.size,
      metaSize: meta?.size,
    }
    if (kind === 'orphan-data') return record === 'missing' || record === 'torn' ? found : undefined
    if (record === 'missing' || record === 'torn' || record.id !== id) return undefined
    if (!this.recordExpired(record, data)) return undefined
    return found
  }

  /**
   * Unlinks what `found` says of the session, on `io`, and counts it when this sweep removed it:
   * another sweeper, or a DELETE, may have been first.
   */
  *unlinkSession(id: string, kind: Removal['kind'], found: Found, io: SweepPort): Steps<boolean> {
    const metaPath = this.pathOf(recordNameOf(id))
    let removed: boolean
    if (recordOnly(kind)) removed = yield* call(io.unlink(metaPath, found.metaSize))
    else {
      removed = yield* call(io.unlink(this.pathOf(id), found.dataSize))
      // An orphan's record, if any, is a torn one.
      yield* call(io.unlink(metaPath, found.metaSize))
    }
    if (removed) this.count(id, kind, found)
    return removed
  }

  count(id: string, kind: Removal['kind'], found: Found): void {
    const report = this.report
    report.removed++
    if (kind === 'orphan-data' || kind === 'orphan-metadata') report.orphans++
    else if (kind === 'partial' || kind === 'used-partial') report.partials++
    report.bytesFreed += found.bytes
    if (report.ids.length < this.maxIds) report.ids.push(id)
    else report.idsTruncated = true
    this.options.onRemove?.({ id, kind, bytes: found.bytes, lastActivity: found.lastActivity })
  }

  /**
   * The record of `id`: `missing`, `torn` (not JSON at all, as a crash mid-write of the stock
   * store left it: empty or cut short), or the parsed record. Throws on a file that is unsafe to
   * read or that is JSON but not a record of the store: an error, never removed on a guess.
   */
  *readRecord(id: string, io: SweepPort = this.io): Steps<ParsedRecord> {
    const text = yield* call(io.readRecord(this.pathOf(recordNameOf(id))))
    if (text === undefined) return 'missing'
    let record: unknown
    try {
      record = JSON.parse(text)
    } catch {
      return 'torn'
    }
    recordSize(record) // throws on a record that is not the store's
    return record as Record<string, unknown>
  }

  fail(id: string, error: unknown, msg: string): void {
    this.report.errors++
    this.options.log?.warn({ id, err: error }, `fastify-tus sweep: ${msg}`)
  }

  /** `rel` is already a clean relative path from the walk: a concatenation is enough. */
  pathOf(rel: string): string {
    return `${this.root}/${rel}`
  }
}

/** The value of steps run on a pinned port (`SweepPort.pinned`), which never waits. */
function settled<T>(result: MaybePromise<T>): T {
  if (isPromise(result)) throw new Error('fastify-tus sweep: a synchronous section waited')
  return result
}

/** Removals of a record alone: its data file is gone (or never was). */
function recordOnly(kind: Removal['kind']): boolean {
  return kind === 'orphan-metadata' || kind === 'used-partial'
}

function noop(): void {}
