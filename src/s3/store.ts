/**
 * A user's @tus/s3-store `S3Store` passed as `datastore`: recognised by its shape (no import of
 * @tus/s3-store, an optional peer dependency), and given the plugin's expiry instead of its own.
 *
 * What changes on that store object:
 * - `deleteExpired()` (creation-based, no lock: it aborts uploads mid-PATCH) runs the plugin's
 *   sweep instead (s3/sweep.ts), through the plugin's schedule, so calls never overlap;
 * - `getExpiration()` answers 0 to tus' handlers, whose check counts from creation (they would
 *   answer 410 to an upload still receiving data); the store's own `expirationPeriodInMilliseconds`
 *   is left as it is, since it is what makes S3Store tag `.info` objects `Tus-Completed`.
 */
import type { DataStore } from '@tus/utils'
import type { SweepLocker } from '../sweep/activity-locker.js'
import type { SweepFunction } from '../sweep/schedule.js'
import { type S3SweepClient, sweepS3Bucket } from './sweep.js'

/** What the plugin uses of an S3Store: its public API plus the fields every 2.x version has. */
export interface S3StoreLike extends DataStore {
  client: S3SweepClient
  bucket: string
  clearCache(id: string): Promise<void>
  infoKey(id: string): string
  partKey(id: string, isIncomplete?: boolean): string
}

const CLIENT_METHODS = [
  'listMultipartUploads',
  'listParts',
  'listObjectsV2',
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
  if (typeof s.clearCache !== 'function') return undefined
  if (typeof s.infoKey !== 'function' || typeof s.partKey !== 'function') return undefined
  // A subclass that names its objects otherwise is not the layout the sweep knows.
  if (s.infoKey.call(store, 'x') !== 'x.info' || s.partKey.call(store, 'x', true) !== 'x.part') {
    return undefined
  }
  return store as S3StoreLike
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

/**
 * Takes over the store's expiry: tus' creation-based checks off, `deleteExpired()` through the
 * plugin's schedule. Returns a function that gives the store its own methods back (onClose).
 */
export function adoptS3Store(store: S3StoreLike, runSweep: () => Promise<number>): () => void {
  const own = Object.getOwnPropertyDescriptors(store)
  store.getExpiration = () => 0
  store.deleteExpired = runSweep
  return () => {
    for (const key of ['getExpiration', 'deleteExpired'] as const) {
      const descriptor = own[key]
      if (descriptor) Object.defineProperty(store, key, descriptor)
      else delete (store as Partial<S3StoreLike>)[key]
    }
  }
}
