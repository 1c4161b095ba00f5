/**
 * `fastify-tus/sweep`: the building blocks behind the plugin, for advanced use (a sweep from
 * your own job, the built-in store in your own tus server, the Redis locker elsewhere). The
 * plugin itself is in the main entry, `fastify-tus`.
 */

export { ExpiringFileStore, type ExpiringFileStoreOptions } from '../backends/file/file-store.js'
export type { SweepFs } from '../backends/file/sweep/fs-port.js'
export {
  type Removal,
  type SweepOptions,
  sweepDirectory,
} from '../backends/file/sweep-engine.js'
export {
  type S3Removal,
  type S3SweepClient,
  type S3SweepOptions,
  sweepS3Bucket,
} from '../backends/s3/sweep.js'
export { ActivityLocker, type HeldLock, type SweepLocker } from '../locking/activity-locker.js'
export { type HeldLease, RedisSweepLease, type SweepLease } from '../redis/lease.js'
export {
  type RedisClient,
  RedisLocker,
  type RedisLockerOptions,
  type RedisSubscriber,
} from '../redis/locker.js'
export type { SweepLogger, SweepReport } from './report.js'
