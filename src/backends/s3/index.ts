/**
 * The S3 backend: a user's @tus/s3-store `S3Store` behind `UploadBackend`, with the plugin's
 * expiry by activity instead of the store's own (store.ts) and the plugin's sweep of its bucket
 * (sweep.ts). backends/index.ts picks it when `asS3Store` recognises the user's datastore.
 */
import type { SweepLocker } from '../../locking/activity-locker.js'
import type { StoreIdentity, UploadBackend } from '../backend.js'
import { s3Downloads } from './download.js'
import { S3FinishRecords } from './finish-records.js'
import { assertSharedCache, S3ActivityExpiry, type S3StoreLike, s3Sweep } from './store.js'

export { asS3Store, type S3StoreLike } from './store.js'

export interface S3BackendOptions {
  /** The user's store, as `asS3Store` answered it. */
  store: S3StoreLike
  /** An unfinished upload with no activity for this long expires (resolved; 0: never). */
  expireAfterMs: number
  /** Which object names are upload ids: the sweep removes no other. */
  idPattern: RegExp
  /** The tus server's locker: the sweep removes an upload only under its lock. */
  locker: SweepLocker
  /** Several instances share the bucket (`redis`): S3Store's cache must be shared too. */
  redis: boolean
}

/**
 * The backend of a user's S3Store. Throws `S3CacheError` when `redis` is set and the store keeps
 * its records in this process's memory. `start` takes over the store's `getUpload`,
 * `getExpiration` and `deleteExpired` (the latter then runs `sweepNow`); `close` gives them back.
 */
export function s3Backend(options: S3BackendOptions): UploadBackend {
  const { store, expireAfterMs } = options
  if (options.redis) assertSharedCache(store)
  const expiry = new S3ActivityExpiry(store, expireAfterMs)
  return {
    description: s3Identity(store).name,
    datastore: store.store,
    sweep: { run: s3Sweep(store, options) },
    answers: { describe: (id, describeOptions) => expiry.describe(id, describeOptions) },
    finishes: new S3FinishRecords(store.client, store.bucket),
    downloads: s3Downloads(store),
    async start(sweepNow) {
      expiry.adopt(async () => (await sweepNow()).removed)
      return undefined
    },
    async close() {
      expiry.restore()
    },
  }
}

/** S3Store objects on one bucket are one store (each instance of a fleet has its own object). */
export function s3Identity(store: S3StoreLike): StoreIdentity {
  return { key: `s3://${store.bucket}`, name: `the S3 bucket ${store.bucket}`, noun: 'datastore' }
}
