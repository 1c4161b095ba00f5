/**
 * A user's @tus/s3-store `S3Store` passed as `datastore`: recognised by its shape (no import of
 * @tus/s3-store, an optional peer dependency), and given the plugin's expiry instead of its own.
 *
 * What changes on that store object:
 * - `deleteExpired()` (creation-based, no lock: it aborts uploads mid-PATCH) runs the plugin's
 *   sweep instead (s3/sweep.ts), through the plugin's schedule, so calls never overlap;
 * - `getExpiration()` answers 0 to tus' handlers, whose check counts from creation (they would
 *   answer 410 to an upload still receiving data); the store's own `expirationPeriodInMilliseconds`
 *   is left as it is, since it is what makes S3Store tag `.info` objects `Tus-Completed`;
 * - `getUpload()` answers 410 for an unfinished upload idle longer than `expireAfterMs` (by the
 *   sweep's clock: the latest of creation, parts, `.part` and `.info` as S3 dates them), never
 *   for a finished one; answers carry `Upload-Expires` from the same clock (`describe`).
 */
import { type DataStore, ERRORS, MemoryKvStore, type Upload } from '@tus/utils'
import { S3CacheError } from '../../errors.js'
import { expiresAt, isExpired, isFinished } from '../../expiry/policy.js'
import type { SweepLocker } from '../../locking/activity-locker.js'
import type { SweepFunction } from '../../sweep/schedule.js'
import type { UploadFacts } from '../file/file-store.js'
import { isNotFound, partsOf, type S3SweepClient, sweepS3Bucket } from './sweep.js'

/** What the plugin uses of an S3Store: its public API plus the fields every 2.x version has. */
export interface S3StoreLike extends DataStore {
  client: S3SweepClient
  bucket: string
  clearCache(id: string): Promise<void>
  getMetadata(id: string): Promise<{ 'upload-id': string; file: Upload }>
  infoKey(id: string): string
  partKey(id: string, isIncomplete?: boolean): string
}

const CLIENT_METHODS = [
  'listMultipartUploads',
  'listParts',
  'listObjectsV2',
  'getObject',
  'headObject',
  'getObjectTagging',
  'abortMultipartUpload',
  'deleteObject',
] as const

/**
 * The store as an S3Store, if it is one with S3Store's layout (`<id>`, `<id>.info`,
 * `<id>.part`); `undefined` for any other datastore (which keeps its own `deleteExpired()`).
 */
export function asS3Store(store: DataStore): S3StoreLike | undefined {
  const s = store as Partial<S3StoreLike>
  if (typeof s.bucket !== 'string' || typeof s.client !== 'object' || s.client === null) {
    return undefined
  }
  const client = s.client as unknown as Record<string, unknown>
  if (!CLIENT_METHODS.every((method) => typeof client[method] === 'function')) return undefined
  if (typeof s.clearCache !== 'function' || typeof s.getMetadata !== 'function') return undefined
  if (typeof s.infoKey !== 'function' || typeof s.partKey !== 'function') return undefined
  // A subclass that names its objects otherwise is not the layout the sweep knows.
  if (s.infoKey.call(store, 'x') !== 'x.info' || s.partKey.call(store, 'x', true) !== 'x.part') {
    return undefined
  }
  return store as S3StoreLike
}

/**
 * With several instances (`redis`), an S3Store must not cache upload records in one process's
 * memory: S3Store's default, `MemoryKvStore` (of any copy of @tus/utils).
 */
export function assertSharedCache(store: S3StoreLike): void {
  const cache = (store as { cache?: unknown }).cache
  if (cache instanceof MemoryKvStore || cache?.constructor?.name === 'MemoryKvStore') {
    throw new S3CacheError()
  }
}

export interface S3ExpiryOptions {
  expireAfterMs: number
  idPattern: RegExp
  locker: SweepLocker
}

/** The sweep of the store's bucket, for the plugin's schedule. */
export function s3Sweep(store: S3StoreLike, options: S3ExpiryOptions): SweepFunction {
  return ({ dryRun, signal, log }) =>
    sweepS3Bucket({
      client: store.client,
      bucket: store.bucket,
      expireAfterMs: options.expireAfterMs,
      idPattern: options.idPattern,
      locker: options.locker,
      // After a removal, S3Store's cached record would make the upload look finished.
      forget: (id) => store.clearCache(id),
      dryRun,
      signal,
      log,
    })
}

/** An S3Store's expiry as the plugin applies it to requests. */
export interface S3Expiry {
  /** What the answers about an upload state (`Upload-Expires`), as the file store's `describe`. */
  describe(id: string, options?: { afterRead?: boolean }): Promise<UploadFacts | undefined>
  /** Gives the store its own methods back (onClose). */
  restore(): void
}

/** How long a HEAD's `describe` may use what its `getUpload` just read. */
const LAST_READ_MS = 1000

/**
 * Takes over the store's expiry: tus' creation-based checks off, `getUpload` answering 410 by
 * activity, `deleteExpired()` through the plugin's schedule.
 */
export function adoptS3Store(
  store: S3StoreLike,
  expireAfterMs: number,
  runSweep: () => Promise<number>,
): S3Expiry {
  const own = Object.getOwnPropertyDescriptors(store)
  const ownGetUpload = store.getUpload
  /** The activity a `getUpload` just read, for the HEAD answer that follows it. */
  const lastRead = new Map<string, { at: number; activityMs: number | undefined }>()
  store.getExpiration = () => 0
  store.deleteExpired = runSweep
  store.getUpload = async function getUpload(id: string): Promise<Upload> {
    const upload = await ownGetUpload.call(store, id)
    if (expireAfterMs === 0 || isFinished(upload.size, upload.offset)) return upload
    // Fresh since its creation: no activity can make it expired, and no request is needed.
    const created = Date.parse(upload.creation_date ?? '')
    if (Number.isFinite(created) && !isExpired(created, expireAfterMs, Date.now())) {
      if (lastRead.size > 1000) lastRead.clear()
      lastRead.set(id, { at: performance.now(), activityMs: undefined })
      return upload
    }
    const activity = await lastActivityOf(store, id)
    if (activity !== undefined && isExpired(activity, expireAfterMs, Date.now())) {
      throw ERRORS.FILE_NO_LONGER_EXISTS
    }
    if (lastRead.size > 1000) lastRead.clear()
    lastRead.set(id, { at: performance.now(), activityMs: activity })
    return upload
  }

  const describe = async (id: string, { afterRead = false } = {}) => {
    if (expireAfterMs === 0) return undefined
    let activity: number | undefined
    const last = afterRead ? lastRead.get(id) : undefined
    lastRead.delete(id)
    if (last?.activityMs !== undefined && performance.now() - last.at < LAST_READ_MS) {
      activity = last.activityMs
    } else {
      const upload = await ownGetUpload.call(store, id).catch(() => undefined)
      if (!upload || isFinished(upload.size, upload.offset)) return undefined
      activity = await lastActivityOf(store, id).catch(() => undefined)
    }
    if (activity === undefined) return undefined
    return { expiresAt: new Date(expiresAt(activity, expireAfterMs)), rawMetadata: undefined }
  }

  const restore = () => {
    for (const key of ['getExpiration', 'deleteExpired', 'getUpload'] as const) {
      const descriptor = own[key]
      if (descriptor) Object.defineProperty(store, key, descriptor)
      else delete (store as Partial<S3StoreLike>)[key]
    }
  }
  return { describe, restore }
}

/**
 * An unfinished upload's last activity by the sweep's clock: the latest of its creation, its
 * parts, its `.part` and its `.info` as S3 dates them; `undefined` when its multipart upload is
 * gone (finished, or removed).
 */
async function lastActivityOf(store: S3StoreLike, id: string): Promise<number | undefined> {
  const { client, bucket } = store
  const { 'upload-id': uploadId, file } = await store.getMetadata(id)
  const parts = await partsOf(client, bucket, id, uploadId)
  if (!parts) return undefined
  let last = Math.max(Date.parse(file.creation_date ?? '') || 0, parts.lastModifiedMs)
  for (const key of [store.partKey(id, true), store.infoKey(id)]) {
    try {
      const { LastModified } = await client.headObject({ Bucket: bucket, Key: key })
      last = Math.max(last, LastModified?.getTime() ?? 0)
    } catch (error) {
      if (!isNotFound(error)) throw error
    }
  }
  return last
}
