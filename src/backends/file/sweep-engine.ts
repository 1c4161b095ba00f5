/**
 * The sweep engine: removes expired unfinished uploads and orphans from a file-store directory.
 * No Fastify in here, so that the plugin, a CLI and the benchmarks run the very same code.
 *
 * For every entry of the directory tree (read as a stream, a bounded number at a time):
 * - data file `<id>` with an mtime newer than the period: kept after one `lstat`, a synchronous
 *   one (see `firstLook`);
 * - data file with `<id>.json`: removed only when the record is unfinished (or a partial upload
 *   of the concatenation extension that no final used) and its last activity (the data file's
 *   mtime) is older than the period, under the upload's lock, after a second look taken under
 *   that lock;
 * - data file without metadata, or metadata without data: an orphan, removed when its name
 *   matches `idPattern` and it is older than the period;
 * - anything else (foreign files, symlinks, dot-files, records of another id): left alone.
 */
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { promisify } from 'node:util'
import {
  concatKind,
  countedBytes,
  DEFAULT_ID_PATTERN,
  type Downtime,
  defaultPartialHoldMs,
  type IdlePeriods,
  idlePeriodOf,
  isExpired,
  lastActivityMs,
  METADATA_SUFFIX,
  recordSize,
  TAKEN_BY,
  verifiedBytes,
  wholeName,
} from '../../expiry/policy.js'
import type { SweepLocker } from '../../locking/activity-locker.js'
import { readRecordFile, readRecordFileSync, TEMP_PREFIX, tempFileToken } from './record-file.js'
import { walkTree, walkTreeSync } from './walk.js'

/** The filesystem calls the engine makes; tests inject faults here. */
export type SweepFs = Pick<typeof fsp, 'opendir' | 'lstat' | 'readFile' | 'unlink'> & {
  /**
   * `lstat`, synchronous: the file's stats, or `undefined` when it is missing. With it, the first
   * look at every entry is synchronous; without it (an `fs` of asynchronous calls only), every
   * look is asynchronous.
   */
  lstatSync?: (file: string) => fs.Stats | undefined
  /** A record's text, synchronous, or `undefined` when it is missing; else `readFile` reads it. */
  readFileSync?: (file: string) => string | undefined
  /**
   * With `lstatSync`: whether anything (a link included) is at `file`, without building its
   * stats; the first look at a record asks it of its data file. Default: `lstatSync`.
   */
  existsSync?: (file: string) => boolean
  /** With `lstatSync`: the walk reads directories synchronously too (`opendir` is then unused). */
  opendirSync?: typeof fs.opendirSync
  /** `unlink`, synchronous, for files of at most `SYNC_UNLINK_MAX_BYTES`; else `unlink` removes them. */
  unlinkSync?: (file: string) => void
}

/**
 * The callback API, promisified: on Node 20 it does the same calls in about half the time of
 * `fs/promises` (200,000 lstat calls, 8 at a time: 1.1 s against 2.6 to 3.7 s here).
 */
const callbackFs: SweepFs = {
  opendir: fsp.opendir,
  lstat: promisify(fs.lstat) as SweepFs['lstat'],
  // Records are read as the store reads them: never through a link, never blocking on a FIFO.
  readFile: (async (file: string) => {
    const text = await readRecordFile(file)
    if (text === undefined) throw Object.assign(new Error(`${file} is missing`), { code: 'ENOENT' })
    return text
  }) as SweepFs['readFile'],
  unlink: promisify(fs.unlink),
  // Looks (lstat, records of at most 64 KiB) are synchronous: a few µs each from the page cache,
  // where a call through libuv's pool costs the process about 13 µs of CPU on Node 20. Unlinks of
  // large data files stay on the pool: freeing their blocks can take long.
  lstatSync: (file) => fs.lstatSync(file, { throwIfNoEntry: false }),
  // existsSync (access(2)) builds no Stats (four Dates and a dozen numbers on Node 20); it
  // follows links, so when it finds nothing, lstat tells a dangling link from no file at all.
  existsSync: (file) =>
    fs.existsSync(file) || fs.lstatSync(file, { throwIfNoEntry: false }) !== undefined,
  readFileSync: readRecordFileSync,
  opendirSync: fs.opendirSync,
  unlinkSync: fs.unlinkSync,
}

/** Anything with pino's `warn(obj, msg)` (Fastify's logger, pino, a test spy). */
export interface SweepLogger {
  warn(obj: object, msg: string): void
}

export interface SweepOptions {
  /** The file store's directory. */
  directory: string
  /** An unfinished upload with no activity for this long expires. 0: nothing expires. */
  expireAfterMs: number
  /**
   * A finished partial upload (concatenation) waits this long for its final; at least
   * `expireAfterMs`. Default: `expireAfterMs` or a day, whichever is longer.
   */
  partialHoldMs?: number
  /** The server's last downtime, which does not count against idle uploads. Default: none. */
  downtime?: Downtime | undefined
  /** Report what would be removed; remove nothing. */
  dryRun?: boolean
  /** Stops the sweep between entries; entries being removed finish first. */
  signal?: AbortSignal
  /** Entries examined at once. */
  concurrency?: number
  /** Names of orphans that may be removed (relative path with `/` for nested ids). */
  idPattern?: RegExp
  /** The lock of the tus server; without one (offline use) removals take no lock. */
  locker?: SweepLocker
  /** How many removed ids the report lists. */
  maxReportedIds?: number
  log?: SweepLogger
  fs?: SweepFs
  now?: () => number
  /**
   * The monotonic clock (ms) that times synchronous calls to tell slow ones (`guardingSync`).
   * Default: `performance.now`. Tests make a call slow on it without holding a CPU, which a busy
   * machine would blur.
   */
  clock?: () => number
  /** Called for every upload removed (or, in a dry run, that would be). */
  onRemove?: (removal: Removal) => void
  /**
   * The processes serving the directory (store/directory-holders.ts), as found at `at` (epoch
   * ms): a temporary file that another process made before then is removed at once, without
   * waiting for the period (a crash's, or a copy's that died with its process). Without it, a
   * temporary file is removed once older than the period.
   */
  holders?: { tokens: ReadonlySet<string>; at: number } | undefined
  /**
   * Also count the bytes the store keeps (`storeBytes` in the report, for the store quota):
   * every data file left reads its record. With `expireAfterMs` 0 the walk only counts.
   */
  tally?: boolean
  /**
   * With `tally`: the bytes to count for an upload instead of what it holds (the uploads a quota
   * claim in flight is growing: `StoreQuota.uploadsInFlight`).
   */
  tallyAs?: Pick<ReadonlyMap<string, number>, 'get'> | undefined
}

export interface Removal {
  id: string
  /**
   * `upload`: an expired unfinished upload; `partial`: an expired partial upload (concatenation),
   * finished or not, that no final upload used; `final`: an expired final upload whose partials
   * never all arrived, or whose creation nobody was told of; `used-partial`: the record a partial
   * upload leaves once a final upload took its bytes (kept a while to answer a retried final
   * creation); `orphan-data`/`orphan-metadata`: half of an upload.
   */
  kind: 'upload' | 'partial' | 'final' | 'used-partial' | 'orphan-data' | 'orphan-metadata'
  bytes: number
  lastActivity: Date
}

export interface SweepReport {
  /** Upload sessions examined (data files, and metadata files without data). */
  scanned: number
  /** Sessions removed; in a dry run, sessions that would be removed. */
  removed: number
  /** Of `removed`, how many were orphans. */
  orphans: number
  /** Of `removed`, how many were partial uploads of the concatenation extension. */
  partials: number
  /** Bytes of data and metadata removed (or that would be). */
  bytesFreed: number
  /** Entries that failed (vanished, unreadable or corrupt metadata, failed unlink). */
  errors: number
  /** Expired uploads left because a request held or wanted their lock. */
  skippedBusy: number
  durationMs: number
  dryRun: boolean
  /** True when the signal stopped the sweep before it saw every entry. */
  aborted: boolean
  /** The first `maxReportedIds` removed ids. */
  ids: string[]
  idsTruncated: boolean
  startedAt: string
  /**
   * With `tally`: the bytes of the data files left, each counting its declared length when its
   * record has one (expiry-policy.ts `countedBytes`).
   */
  storeBytes?: number
}

const DEFAULT_CONCURRENCY = 8
const DEFAULT_MAX_REPORTED_IDS = 1000
/**
 * Keys held for a moment by one of a few holders at a time, in a list of slots that never
 * shrinks. A `Set` would do, but for the garbage it leaves in the old generation: V8 replaces a
 * `Set`'s hash table when an add fills it or a delete empties it, and the table replaced keeps a
 * link to its successor. The `Set` of a module lives in the old generation, so every table since
 * its first is reachable from an old object, survives its scavenges and is promoted: about
 * 1.5 MB of dead tables per 100,000 sessions swept piled up in the old generation until a full
 * collection, which a long sweep reaches only after tens of MB (the allocation sites of what
 * outlived scavenges, sampled with V8's heap profiler: `Set.prototype.delete`, and the same for
 * MemoryLocker's table, see `removeNow`).
 */
class Claims {
  readonly #slots: Array<string | undefined> = []

  has(key: string): boolean {
    return this.#slots.includes(key)
  }

  add(key: string): void {
    const free = this.#slots.indexOf(undefined)
    if (free === -1) this.#slots.push(key)
    else this.#slots[free] = key
  }

  delete(key: string): void {
    const at = this.#slots.indexOf(key)
    if (at !== -1) this.#slots[at] = undefined
  }
}

/** Sessions (absolute data paths) a sweep of this process is removing right now. */
const removing = new Claims()
/**
 * The longest the sweep runs synchronous first looks before it lets the event loop turn. Reading
 * the directory lets it turn every 256 entries anyway (about 1 ms of lstat calls with the inodes
 * cached); this bounds the stall when they are not.
 */
const SLICE_MS = 5

/** An entry of the walk the engine visits: a file, or a temporary record (record-file.ts). */
interface SweepEntry {
  kind: 'file' | 'temp'
  path: string
}

/**
 * Files up to this size are unlinked synchronously (about 11 µs for a small file here, against
 * 26 µs of CPU through libuv's pool); a larger data file goes to the pool, since freeing its
 * blocks can take long. A removal then runs as one synchronous section (`removeNow`), so
 * little stays alive across young-generation collections, which keeps the heap from growing.
 */
const SYNC_UNLINK_MAX_BYTES = 1024 * 1024

/** What a look under the lock found of a session to remove; the sizes say how to unlink its files. */
type Found = Omit<Removal, 'id' | 'kind'> & { dataSize?: number; metaSize?: number }

/** What the first look learnt of a record's data file: there is none. */
const NO_DATA = 'no-data'

/**
 * A synchronous call longer than this was slow. Synchronous looks cost a few microseconds from
 * the page cache; a slow call went to the disk (or a network filesystem), or the process waited
 * for a CPU (a busy machine), and held the event loop meanwhile.
 */
const SLOW_SYNC_MS = 5
/**
 * One call this long gives up its kind of call at once: on top of a slice (`SLICE_MS`) it makes
 * a turn of the event loop of 20 ms.
 */
const STALL_SYNC_MS = 15
/**
 * Shorter slow calls give up their kind when `SLOW_SYNC_CALLS` of them come within
 * `SLOW_SYNC_WINDOW_MS`: a cold disk makes call after call slow, where a busy machine makes one
 * now and then, which the pool would not cure (each call there costs about four times the CPU,
 * and a long sweep that gave up its looks took three times as long).
 */
const SLOW_SYNC_CALLS = 3
const SLOW_SYNC_WINDOW_MS = 1000
/**
 * How long a kind of call given up stays on the pool the first time; each later time, twice as
 * long. A busy spell of the machine passes, and the calls through the pool cost more CPU and
 * more memory (visits in flight across young-generation collections, locks taken in the
 * locker's table); a cold disk is tried again a few times per sweep only.
 */
const SYNC_PAUSE_MS = 1000

/**
 * `fs` for one sweep, its synchronous calls timed: a kind of call that stalls (`STALL_SYNC_MS`),
 * or is slow too often (`SLOW_SYNC_CALLS`), is removed from the view for a while
 * (`SYNC_PAUSE_MS`), so that meanwhile every call of that kind is asynchronous (the walk goes on
 * reading directories synchronously, 32 entries at a time). The kinds wait on different things:
 * looks (`lstat`, `access`) on inodes, record reads on data blocks, unlinks on the filesystem's
 * journal; one cold record, say, leaves the looks synchronous.
 */
function guardingSync(base: SweepFs, clock: () => number): SweepFs {
  if (!base.lstatSync) return base
  const view: SweepFs = { ...base }
  type Kind = 'lstatSync' | 'existsSync' | 'readFileSync' | 'unlinkSync'
  /** Times the calls of the kinds `keys`, which give up (and come back) together. */
  const guard = (keys: Kind[]) => {
    const timedCalls = new Map<Kind, SweepFs[Kind]>()
    let windowStart = 0
    let slowCalls = 0
    let pauseMs = SYNC_PAUSE_MS
    let paused = false
    const giveUp = () => {
      slowCalls = 0
      // A call captured before the kind was given up (a removal's synchronous section) may be
      // slow too: the pause under way stands.
      if (paused) return
      paused = true
      for (const key of keys) view[key] = undefined
      // Unreferenced: a sweep that ends meanwhile keeps no process alive.
      setTimeout(() => {
        paused = false
        for (const [key, call] of timedCalls) view[key] = call as never
      }, pauseMs).unref()
      pauseMs *= 2
    }
    const timed =
      <A extends unknown[], R>(call: (...args: A) => R) =>
      (...args: A): R => {
        const started = clock()
        try {
          return call(...args)
        } finally {
          const ms = clock() - started
          if (ms > SLOW_SYNC_MS) {
            if (slowCalls === 0 || started - windowStart > SLOW_SYNC_WINDOW_MS) {
              windowStart = started
              slowCalls = 0
            }
            slowCalls++
            if (ms > STALL_SYNC_MS || slowCalls >= SLOW_SYNC_CALLS) giveUp()
          }
        }
      }
    for (const key of keys) {
      const call = base[key]
      if (call) {
        const wrapped = timed(call as (...args: unknown[]) => unknown) as SweepFs[Kind]
        timedCalls.set(key, wrapped)
        view[key] = wrapped as never
      }
    }
  }
  guard(['lstatSync', 'existsSync'])
  guard(['readFileSync'])
  guard(['unlinkSync'])
  return view
}

/** A report of a sweep that has not removed anything yet. */
export function newReport(dryRun: boolean): SweepReport {
  return {
    scanned: 0,
    removed: 0,
    orphans: 0,
    partials: 0,
    bytesFreed: 0,
    errors: 0,
    skippedBusy: 0,
    durationMs: 0,
    dryRun,
    aborted: false,
    ids: [],
    idsTruncated: false,
    startedAt: new Date().toISOString(),
  }
}

/** Sweeps `directory` once. Rejects only when the directory itself cannot be read. */
export async function sweepDirectory(options: SweepOptions): Promise<SweepReport> {
  const sweep = new Sweep(options)
  return sweep.run()
}

class Sweep {
  readonly fs: SweepFs
  readonly now: () => number
  readonly idPattern: RegExp
  readonly maxIds: number
  readonly started = performance.now()
  readonly report: SweepReport
  readonly root: string
  readonly periods: IdlePeriods

  constructor(readonly options: SweepOptions) {
    this.fs = guardingSync(options.fs ?? callbackFs, options.clock ?? (() => performance.now()))
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
   * Visits every entry of the walk. The first look at each is synchronous when the fs has
   * `lstatSync`: most entries (fresh data files, records beside their data file) end there, in
   * about 3 µs where an lstat through libuv's pool costs the process about 13 µs of CPU. What is
   * left (records to read, removals under locks, temporary records) runs asynchronously,
   * `concurrency` entries at a time; the walk waits for a free slot, so memory stays flat however
   * large the tree. Stops between entries once `signal` aborts; waits for the visits under way.
   */
  async visitAll(concurrency: number, signal: AbortSignal | undefined): Promise<void> {
    const { lstatSync, opendirSync } = this.fs
    const existsSync = this.fs.existsSync ?? ((file: string) => lstatSync?.(file) !== undefined)
    const pool = new BoundedPool(concurrency)
    // The caller's turn of the event loop ends first (a server's onReady: its ready() does not
    // wait for the first slice).
    await nextTurn()
    let sliceEnd = performance.now() + SLICE_MS
    try {
      if (lstatSync && opendirSync) {
        // The walk is synchronous too: no promise per entry, the event loop turns between slices.
        const tree = walkTreeSync(this.root, {
          kinds: ['file', 'temp', 'unreadable-directory'],
          opendirSync,
        })
        for (const entry of tree) {
          if (signal?.aborted) break
          if (entry.kind === 'unreadable-directory') {
            this.fail(entry.path, entry.error, 'cannot read a subdirectory')
            continue
          }
          // Synchronous calls may have been given up (`guardingSync`): then the visit is asynchronous.
          const look = this.fs.lstatSync
          const rest = look
            ? this.firstLook(entry, look, this.fs.existsSync ?? existsSync)
            : () => this.visit(entry)
          if (rest) {
            await pool.run(rest)
            // A visit that goes on (a record read, a removal) runs mostly synchronously: requests
            // get a turn of the event loop after each, not only after a slice.
            await nextTurn()
            sliceEnd = performance.now() + SLICE_MS
          } else if (performance.now() > sliceEnd) {
            await nextTurn()
            sliceEnd = performance.now() + SLICE_MS
          }
        }
        return
      }
      for await (const entry of this.walk()) {
        if (signal?.aborted) break
        const rest = lstatSync
          ? this.firstLook(entry, lstatSync, existsSync)
          : () => this.visit(entry)
        if (rest) await pool.run(rest)
        if (performance.now() > sliceEnd) {
          await nextTurn()
          sliceEnd = performance.now() + SLICE_MS
        }
      }
    } finally {
      await pool.idle()
    }
  }

  /**
   * The first look at an entry, synchronous: one lstat. Settles a fresh data file and a record
   * beside its data file, and returns `undefined`; for anything else, returns the visit still to
   * make, with what this look learnt.
   */
  firstLook(
    entry: SweepEntry,
    lstatSync: NonNullable<SweepFs['lstatSync']>,
    existsSync: NonNullable<SweepFs['existsSync']>,
  ): (() => Promise<void>) | undefined {
    if (entry.kind === 'temp') return () => this.visit(entry)
    const file = entry.path
    try {
      if (file.endsWith(METADATA_SUFFIX)) {
        // A record with its data file is visited through the data file.
        if (existsSync(this.pathOf(file.slice(0, -METADATA_SUFFIX.length)))) return undefined
        return () => this.visit(entry, NO_DATA)
      }
      // Gone since the listing (a client's DELETE, another sweeper): nothing to do, no error.
      const data = lstatSync(this.pathOf(file))
      if (!data) return undefined
      if (this.options.tally || this.expired(data.mtimeMs)) return () => this.visit(entry, data)
      this.report.scanned++
      return undefined
    } catch (error) {
      if (!isNotFound(error)) this.fail(file, error, 'sweep entry failed')
      return undefined
    }
  }

  /** Files of the tree (and temporary records), `/`-separated paths relative to the directory; never follows links. */
  async *walk(): AsyncGenerator<{ kind: 'file' | 'temp'; path: string }> {
    const tree = walkTree(this.root, {
      kinds: ['file', 'temp', 'unreadable-directory'],
      opendir: (dir, options) => this.fs.opendir(dir, options),
    })
    // An unreadable store directory throws: the sweep as a whole fails.
    for await (const entry of tree) {
      if (entry.kind === 'unreadable-directory') {
        this.fail(entry.path, entry.error, 'cannot read a subdirectory')
      } else yield entry
    }
  }

  /** Visits an entry; `first` is what a first look learnt: the data file's stats, or that it has none. */
  async visit({ kind, path: file }: SweepEntry, first?: fs.Stats | typeof NO_DATA): Promise<void> {
    try {
      if (kind === 'temp') await this.visitTemp(file)
      else if (file.endsWith(METADATA_SUFFIX)) await this.visitMetadata(file, first === NO_DATA)
      else await this.visitData(file, first === NO_DATA ? undefined : first)
    } catch (error) {
      this.fail(file, error, 'sweep entry failed')
    }
  }

  async visitData(id: string, looked?: fs.Stats): Promise<void> {
    // Gone since the listing (a client's DELETE, another sweeper): nothing to do, no error.
    const data = looked ?? (await this.statIfPresent(this.pathOf(id)))
    if (!data) return
    this.report.scanned++
    let removed = false
    try {
      removed = await this.visitDataFile(id, data)
    } finally {
      if (!removed && this.options.tally) await this.tallyKept(id, data.size)
    }
  }

  /** Removes the data file's session if it has expired; true when it did. */
  async visitDataFile(id: string, data: fs.Stats): Promise<boolean> {
    // Most uploads are fresh: one lstat decides, the metadata is never read.
    if (!this.expired(data.mtimeMs)) return false

    const record = await this.readRecord(id)
    // A data file without a record, or whose record a crash left torn: half an upload.
    if (record === 'missing' || record === 'torn') {
      return this.idPattern.test(id) && (await this.remove(id, 'orphan-data'))
    }
    if (record.id !== id) return false // not a record of this file: someone else's pair of files
    if (!this.recordExpired(record, data)) return false
    return this.remove(id, concatKind(record) ?? 'upload')
  }

  /** Counts a data file left in the store: its declared length, else (or if unreadable) its bytes. */
  async tallyKept(id: string, bytes: number): Promise<void> {
    const as = this.options.tallyAs?.get(id)
    if (as !== undefined) {
      this.report.storeBytes = (this.report.storeBytes ?? 0) + as
      return
    }
    let size: number | undefined
    try {
      const record = await this.readRecord(id)
      if (typeof record === 'object' && record.id === id) size = recordSize(record)
    } catch {
      // An unreadable record: its data file's bytes still count (its visit reports the error).
    }
    this.report.storeBytes = (this.report.storeBytes ?? 0) + countedBytes(size, bytes)
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
  async visitTemp(file: string): Promise<void> {
    const temp = await this.statIfPresent(this.pathOf(file))
    if (!temp || (!this.expired(temp.mtimeMs) && !this.ownerGone(file, temp))) return
    this.report.scanned++
    const { id, kind } = tempFileOf(file)
    const found = { bytes: temp.size, lastActivity: temp.mtime }
    if (this.options.dryRun) this.count(id, kind, found)
    else if (!this.options.signal?.aborted && (await this.unlinkIfPresent(this.pathOf(file)))) {
      this.count(id, kind, found)
    }
  }

  async visitMetadata(file: string, noData = false): Promise<void> {
    const id = file.slice(0, -METADATA_SUFFIX.length)
    // A record with its data file is visited through the data file.
    if (!noData && (await this.exists(this.pathOf(id)))) return
    // Its data file is gone because a visit of this process is removing the pair right now.
    if (removing.has(this.pathOf(id))) return
    // Gone meanwhile: its data file's visit removed the pair.
    const meta = await this.statIfPresent(this.pathOf(file))
    if (!meta) return
    this.report.scanned++
    if (!this.expired(meta.mtimeMs)) return
    if (await this.isUsedPartial(id)) await this.remove(id, 'used-partial')
    else if (this.idPattern.test(id)) await this.remove(id, 'orphan-metadata')
  }

  /**
   * Whether the record of `id` (without its data file) is a partial upload's that a final took
   * over: the store's own, whatever `idPattern` says (a name of a custom naming function).
   */
  async isUsedPartial(id: string): Promise<boolean> {
    try {
      const record = await this.readRecord(id)
      return typeof record === 'object' && record.id === id && record[TAKEN_BY] !== undefined
    } catch {
      return false
    }
  }

  /**
   * Removes one session under its lock after looking again: a request may have written to it,
   * or removed it, since the first look.
   */
  async remove(id: string, kind: Removal['kind']): Promise<boolean> {
    if (this.options.signal?.aborted) return false
    if (this.options.dryRun) {
      const found = await this.lookAgain(id, kind)
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
      return await this.removeLocked(id, kind)
    } finally {
      removing.delete(key)
    }
  }

  async removeLocked(id: string, kind: Removal['kind']): Promise<boolean> {
    const done = this.removeNow(id, kind)
    if (done !== undefined) return done
    const lock = this.options.locker ? await this.options.locker.tryLock(id) : undefined
    if (this.options.locker && !lock) {
      this.report.skippedBusy++
      return false
    }
    try {
      const found = await this.lookAgain(id, kind)
      // Checked under the lock: once close() has begun, nothing more is deleted.
      if (!found || this.options.signal?.aborted) return false
      const dataPath = this.pathOf(id)
      const metaPath = this.pathOf(id + METADATA_SUFFIX)
      // Counted only when this sweep removed it: another sweeper, or a DELETE, may have been first.
      let removed: boolean
      if (recordOnly(kind)) removed = await this.unlinkIfPresent(metaPath, found.metaSize)
      else {
        removed = await this.unlinkIfPresent(dataPath, found.dataSize)
        // An orphan's record, if any, is a torn one.
        await this.unlinkIfPresent(metaPath, found.metaSize)
      }
      if (removed) this.count(id, kind, found)
      return removed
    } finally {
      await lock?.unlock()
    }
  }

  /**
   * The removal as one synchronous section, when it can be one: the locker's locks live in this
   * process only (`isFreeHere`), or there is no locker, and the looks, the record read and the
   * unlinks are all synchronous. Nothing else in the process runs until the section ends, so no
   * request can take the lock between the check and the unlinks: the lock is held without taking
   * it. Taking it would put an entry in the locker's table and delete it again, and V8 replaces
   * a `Map`'s hash table on such changes, leaving garbage in the old generation (see `Claims`).
   * `undefined` when it cannot be one (the caller then takes the lock).
   */
  removeNow(id: string, kind: Removal['kind']): boolean | undefined {
    const { locker, signal } = this.options
    const { lstatSync, readFileSync, unlinkSync } = this.fs
    if (!lstatSync || !readFileSync || !unlinkSync) return undefined
    if (locker && !locker.isFreeHere) return undefined
    if (locker?.isFreeHere && !locker.isFreeHere(id)) {
      this.report.skippedBusy++
      return false
    }
    const stat = (file: string) => this.statIfPresentSync(file, lstatSync)
    const found = this.lookAgainWith(id, kind, stat, () => this.readRecordSync(readFileSync, id))
    // Checked under the lock: once close() has begun, nothing more is deleted.
    if (!found || signal?.aborted) return false
    const small = (size: number | undefined) => size === undefined || size <= SYNC_UNLINK_MAX_BYTES
    // A large data file is unlinked on the pool, under the lock taken by the caller; so is the
    // session whose look was slow enough to give up a kind of synchronous call.
    if (!small(found.dataSize) || !small(found.metaSize)) return undefined
    const { fs: now } = this
    if (now.lstatSync !== lstatSync || now.readFileSync !== readFileSync) return undefined
    if (now.unlinkSync !== unlinkSync) return undefined
    const unlink = (file: string) => this.unlinkIfPresentSync(file, unlinkSync)
    let removed: boolean
    if (recordOnly(kind)) removed = unlink(this.pathOf(id + METADATA_SUFFIX))
    else {
      removed = unlink(this.pathOf(id))
      // An orphan's record, if any, is a torn one.
      unlink(this.pathOf(id + METADATA_SUFFIX))
    }
    if (removed) this.count(id, kind, found)
    return removed
  }

  /** The session's state now: `undefined` if it no longer qualifies for removal. */
  async lookAgain(id: string, kind: Removal['kind']): Promise<Found | undefined> {
    const dataPath = this.pathOf(id)
    const metaPath = this.pathOf(id + METADATA_SUFFIX)
    if (recordOnly(kind)) {
      if (await this.exists(dataPath)) return undefined
      return this.judgeOrphanRecord(await this.statIfPresent(metaPath))
    }
    const data = await this.statIfPresent(dataPath)
    if (!data || !this.expired(data.mtimeMs)) return undefined
    const meta = await this.statIfPresent(metaPath)
    const record = meta ? await this.readRecord(id) : 'missing'
    return this.judge(id, kind, data, meta, record)
  }

  /** `lookAgain`, synchronous, on the calls it is given. */
  lookAgainWith(
    id: string,
    kind: Removal['kind'],
    stat: (file: string) => fs.Stats | undefined,
    readRecord: () => ParsedRecord,
  ): Found | undefined {
    const dataPath = this.pathOf(id)
    const metaPath = this.pathOf(id + METADATA_SUFFIX)
    if (recordOnly(kind)) {
      return stat(dataPath) ? undefined : this.judgeOrphanRecord(stat(metaPath))
    }
    const data = stat(dataPath)
    if (!data || !this.expired(data.mtimeMs)) return undefined
    const meta = stat(metaPath)
    return this.judge(id, kind, data, meta, meta ? readRecord() : 'missing')
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
  async readRecord(id: string): Promise<ParsedRecord> {
    const { readFileSync } = this.fs
    if (readFileSync) return this.readRecordSync(readFileSync, id)
    const file = this.pathOf(id + METADATA_SUFFIX)
    let text: string | undefined
    try {
      text = await this.fs.readFile(file, 'utf8')
    } catch (error) {
      if (isNotFound(error)) return 'missing'
      throw error
    }
    return parseRecordText(text)
  }

  /** `readRecord`, synchronous. */
  readRecordSync(readFileSync: (file: string) => string | undefined, id: string): ParsedRecord {
    let text: string | undefined
    try {
      text = readFileSync(this.pathOf(id + METADATA_SUFFIX))
    } catch (error) {
      if (isNotFound(error)) return 'missing'
      throw error
    }
    return parseRecordText(text)
  }

  async exists(file: string): Promise<boolean> {
    return (await this.statIfPresent(file)) !== undefined
  }

  /** `statIfPresent`, synchronous. */
  statIfPresentSync(
    file: string,
    lstatSync: NonNullable<SweepFs['lstatSync']>,
  ): fs.Stats | undefined {
    try {
      return lstatSync(file)
    } catch (error) {
      if (isNotFound(error)) return undefined
      throw error
    }
  }

  /** `unlinkIfPresent`, synchronous. */
  unlinkIfPresentSync(file: string, unlinkSync: NonNullable<SweepFs['unlinkSync']>): boolean {
    try {
      unlinkSync(file)
      return true
    } catch (error) {
      if (!isNotFound(error)) throw error
      return false
    }
  }

  /** The file's stats, or `undefined` when it is missing; synchronous with `lstatSync`. */
  async statIfPresent(file: string): Promise<fs.Stats | undefined> {
    try {
      const { lstatSync } = this.fs
      return lstatSync ? lstatSync(file) : await this.fs.lstat(file)
    } catch (error) {
      if (isNotFound(error)) return undefined
      throw error
    }
  }

  /**
   * True when this call removed the file; false when it was already gone. `size`, when known
   * from a look under the lock, lets a small file go synchronously.
   */
  async unlinkIfPresent(file: string, size?: number): Promise<boolean> {
    try {
      const { unlinkSync } = this.fs
      if (unlinkSync && size !== undefined && size <= SYNC_UNLINK_MAX_BYTES) unlinkSync(file)
      else await this.fs.unlink(file)
      return true
    } catch (error) {
      if (!isNotFound(error)) throw error
      return false
    }
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

/**
 * Runs tasks, at most `limit` at a time, for one producer: `run` waits for a free slot before
 * it starts the task, so the producer never gets ahead by more than `limit` tasks. Tasks must
 * not reject.
 */
class BoundedPool {
  #running = 0
  #freed: (() => void) | undefined

  constructor(readonly limit: number) {}

  async run(task: () => Promise<void>): Promise<void> {
    while (this.#running >= this.limit) await this.#slot()
    this.#running++
    task().then(this.#done, this.#done)
  }

  readonly #done = (): void => {
    this.#running--
    const freed = this.#freed
    this.#freed = undefined
    freed?.()
  }

  /** Resolves once no task runs. */
  async idle(): Promise<void> {
    while (this.#running > 0) await this.#slot()
  }

  #slot(): Promise<void> {
    return new Promise((resolve) => {
      this.#freed = resolve
    })
  }
}

/**
 * `dir/.fastify-tus-tmp.<random>.<id>.json` → `dir/<id>`, half of an upload's record; and
 * `dir/.fastify-tus-tmp.<random>.<id>` → `dir/<id>`, a final upload's data file being assembled
 * (store/concatenation.ts).
 */
function tempFileOf(file: string): { id: string; kind: 'orphan-data' | 'orphan-metadata' } {
  const slash = file.lastIndexOf('/')
  const name = file.slice(slash + 1 + TEMP_PREFIX.length).replace(/^[0-9a-f]+\./, '')
  const dir = file.slice(0, slash + 1)
  return name.endsWith(METADATA_SUFFIX)
    ? { id: `${dir}${name.slice(0, -METADATA_SUFFIX.length)}`, kind: 'orphan-metadata' }
    : { id: `${dir}${name}`, kind: 'orphan-data' }
}

/** Removals of a record alone: its data file is gone (or never was). */
function recordOnly(kind: Removal['kind']): boolean {
  return kind === 'orphan-metadata' || kind === 'used-partial'
}

/** A record as the sweep reads it: see `Sweep.readRecord`. */
type ParsedRecord = Record<string, unknown> | 'missing' | 'torn'

/** A record's text (`undefined`: no file) read as `Sweep.readRecord` says. */
function parseRecordText(text: string | undefined): ParsedRecord {
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

function isNotFound(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code
  return code === 'ENOENT' || code === 'ENOTDIR'
}
