/**
 * What every sweep returns, whatever the backend (the file store's engine, S3, another
 * datastore's `deleteExpired()`): the schedule, the metrics and the CLI read this shape only, so
 * that none of them imports a backend.
 */

/** Anything with pino's `warn(obj, msg)` (Fastify's logger, pino, a test spy). */
export interface SweepLogger {
  warn(obj: object, msg: string): void
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
