/** What a sweep of a file store's directory is told, and tells of each removal. */
import type { Downtime } from '../../../expiry/policy.js'
import type { SweepLocker } from '../../../locking/activity-locker.js'
import type { SweepLogger } from '../../../sweep/report.js'
import type { SweepFs } from './fs-port.js'

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
   * The monotonic clock (ms) that times synchronous calls to tell slow ones (sweep/breaker.ts).
   * Default: `performance.now`. Tests make a call slow on it without holding a CPU, which a busy
   * machine would blur (sweep/breaker.ts).
   */
  clock?: () => number
  /** Called for every upload removed (or, in a dry run, that would be). */
  onRemove?: (removal: Removal) => void
  /**
   * The processes serving the directory (directory-holders.ts), as found at `at` (epoch
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

/** What a look under the lock found of a session to remove; the sizes say how to unlink its files. */
export type Found = Omit<Removal, 'id' | 'kind'> & { dataSize?: number; metaSize?: number }

/** A record as the sweep reads it: see `Sweep.readRecord`. */
export type ParsedRecord = Record<string, unknown> | 'missing' | 'torn'
