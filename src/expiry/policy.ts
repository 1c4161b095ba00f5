/**
 * When an upload of the built-in file store expires. Shared by the store (which answers 410)
 * and the sweep engine (which removes), so the two can never disagree.
 *
 * The activity clock is the data file's mtime: creating an upload writes the empty data file
 * and every byte written moves it. It lives on disk, so it survives a restart, and reading it
 * costs one `stat` (no metadata read) for the common case of a fresh upload.
 */

/** Ids made by @tus/utils' default `Uid.rand`: 16 random bytes in hex. */
export const DEFAULT_ID_PATTERN = /^[0-9a-f]{32}$/

/** The file store keeps an upload's metadata in `<id>.json` beside the data file `<id>`. */
export const METADATA_SUFFIX = '.json'

/** The metadata record the file store writes (`@tus/utils` `Upload`, serialised). */
export interface UploadRecord {
  id?: unknown
  size?: unknown
  offset?: unknown
  creation_date?: unknown
  metadata?: unknown
  /** Set while a checksummed body is written: the offset before it, see `verifiedBytes`. */
  [UNVERIFIED_FROM]?: unknown
  /** `partial` or `final` for the uploads of the concatenation extension (store/concatenation.ts). */
  [CONCAT]?: unknown
  /** A partial upload a final took over: the final's id. */
  [TAKEN_BY]?: unknown
  /** A final upload whose creation was not answered yet. */
  [ANSWER_PENDING]?: unknown
}

/** The record field that marks an upload of the concatenation extension: `partial` or `final`. */
export const CONCAT = 'concat'

/**
 * The record field that marks a checksummed body being written: the offset before it. Bytes past
 * it are not the upload's until the body's digest matched; a crash mid-body leaves the field,
 * and the next access rolls the data file back to it.
 */
export const UNVERIFIED_FROM = 'unverified_from'

/**
 * The bytes of an upload that count: all of its data file's, except past the offset of a
 * checksummed body that never completed (`UNVERIFIED_FROM`).
 */
export function verifiedBytes(record: object, bytesOnDisk: number): number {
  const from = (record as UploadRecord)[UNVERIFIED_FROM]
  return typeof from === 'number' && Number.isSafeInteger(from) && from >= 0
    ? Math.min(from, bytesOnDisk)
    : bytesOnDisk
}

/**
 * `pattern` matching whole names only (`^(?:...)$`), without the flags that make `test()`
 * stateful: an id pattern without anchors would otherwise match any name that contains an id.
 */
export function wholeName(pattern: RegExp): RegExp {
  return new RegExp(`^(?:${pattern.source})$`, pattern.flags.replace(/[gy]/g, ''))
}

/**
 * A finished upload has a known length and all of its bytes. Deferred-length uploads (no
 * `size` yet) are unfinished, however many bytes they hold.
 */
export function isFinished(size: number | undefined, bytesOnDisk: number): boolean {
  return size !== undefined && bytesOnDisk >= size
}

/**
 * The record field of a partial upload that a final upload took over: the final's id. The
 * partial's data file is gone (its bytes are the final's), its record stays for a while, so that
 * a client that never got the final's answer can ask again and learn its URL (store/finals.ts).
 */
export const TAKEN_BY = 'taken_by'

/**
 * The record field of a final upload whose creation has not been answered yet: until its answer
 * reaches the client (or the app's finish hook took it), nobody knows of it, and it expires like
 * an unfinished upload unless a retried creation claims it.
 */
export const ANSWER_PENDING = 'answer_pending'

/** The idle periods of the built-in store. */
export interface IdlePeriods {
  /** An unfinished upload idle this long expires; 0 turns expiry off. */
  expireAfterMs: number
  /**
   * A finished partial upload waits this long after its last byte for the final upload that uses
   * it (its siblings of a parallel upload may still be uploading); at least `expireAfterMs`.
   */
  partialHoldMs: number
}

/**
 * How long an upload may stay idle before it expires, or `undefined` for one that never does:
 * - an unfinished upload, a partial a final took over, a final nobody was told of: `expireAfterMs`;
 * - a finished partial upload of the concatenation extension: `partialHoldMs` (it only waits for
 *   the final that uses it; a client that never sends that final has abandoned it);
 * - any other finished upload, finals included: never.
 */
export function idlePeriodOf(
  record: object,
  size: number | undefined,
  bytesOnDisk: number,
  periods: IdlePeriods,
): number | undefined {
  if (periods.expireAfterMs === 0 || !mayExpire(record, size, bytesOnDisk)) return undefined
  const fields = record as UploadRecord
  const waitsForItsFinal =
    fields[CONCAT] === 'partial' && fields[TAKEN_BY] === undefined && isFinished(size, bytesOnDisk)
  return waitsForItsFinal ? periods.partialHoldMs : periods.expireAfterMs
}

/** Whether an upload can expire at all, with expiry on (see `idlePeriodOf`). */
export function mayExpire(record: object, size: number | undefined, bytesOnDisk: number): boolean {
  const fields = record as UploadRecord
  if (!isFinished(size, bytesOnDisk) || fields[TAKEN_BY] !== undefined) return true
  return (
    fields[CONCAT] === 'partial' || (fields[CONCAT] === 'final' && fields[ANSWER_PENDING] === true)
  )
}

/** The default `partialHoldMs`: a day, or `expireAfterMs` when that is longer. */
export function defaultPartialHoldMs(expireAfterMs: number): number {
  return Math.max(expireAfterMs, 24 * 3_600_000)
}

/** `partial`, `final` or `undefined` (a plain upload), from a parsed record. */
export function concatKind(record: object): 'partial' | 'final' | undefined {
  const kind = (record as UploadRecord)[CONCAT]
  return kind === 'partial' || kind === 'final' ? kind : undefined
}

/** The time the server was down: from the start of a graceful close to its next start (epoch ms). */
export interface Downtime {
  fromMs: number
  toMs: number
}

/**
 * An upload's last activity as the server counts it: its data file's mtime, except that the
 * server's downtime (from the start of a graceful close to the next start) does not count
 * against it, since no client could write meanwhile. Activity before the downtime moves later by
 * its length; activity during it (a PATCH that ended while the server was closing) counts as at
 * its end. So an upload that had 4 of its 10 minutes left when the server closed still has 4
 * minutes once it is back, and one that had expired before the close is removed by the first
 * sweep, as without a restart.
 */
export function lastActivityMs(mtimeMs: number, downtime?: Downtime): number {
  if (!downtime || mtimeMs >= downtime.toMs) return mtimeMs
  if (mtimeMs >= downtime.fromMs) return downtime.toMs
  return mtimeMs + (downtime.toMs - downtime.fromMs)
}

/** The moment an unfinished upload whose last activity was `lastActivityMs` expires. */
export function expiresAt(lastActivityMs: number, expireAfterMs: number): number {
  return lastActivityMs + expireAfterMs
}

/** A period of 0 means expiry is off: nothing ever expires. */
export function isExpired(lastActivityMs: number, periodMs: number, now: number): boolean {
  return periodMs > 0 && now > expiresAt(lastActivityMs, periodMs)
}

/**
 * The `size` of a parsed metadata record, or `undefined` for a deferred length.
 * Throws on anything that is not a record the file store wrote, so a corrupt file is reported
 * instead of being mistaken for an unfinished upload.
 */
export function recordSize(record: unknown): number | undefined {
  if (typeof record !== 'object' || record === null || Array.isArray(record)) {
    throw new TypeError('metadata is not a JSON object')
  }
  const { size } = record as UploadRecord
  if (size === undefined || size === null) return undefined
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw new TypeError(`metadata has an invalid size: ${JSON.stringify(size)}`)
  }
  return size
}

/**
 * What an upload counts against the store quota (`maxStoreBytes`): its declared length when it
 * has one, however few of its bytes arrived (a promise the store must keep), else the bytes it
 * holds. Shared by the store's running total and the sweep's recount.
 */
export function countedBytes(size: number | undefined, bytesOnDisk: number): number {
  return size === undefined ? bytesOnDisk : Math.max(size, bytesOnDisk)
}
