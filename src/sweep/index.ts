/**
 * `fastify-tus/sweep`: the building blocks behind the plugin, for advanced use (a sweep from
 * your own job, the built-in store in your own tus server, the Redis locker elsewhere). The
 * plugin itself is in the main entry, `fastify-tus`.
 */
export { type HeldLease, RedisSweepLease, type SweepLease } from '../redis/lease.js'
export {
  type RedisClient,
  RedisLocker,
  type RedisLockerOptions,
  type RedisSubscriber,
} from '../redis/locker.js'
export {
  type S3Removal,
  type S3SweepClient,
  type S3SweepOptions,
  sweepS3Bucket,
} from '../s3/sweep.js'
export { ExpiringFileStore, type ExpiringFileStoreOptions } from '../store/file-store.js'
export { ActivityLocker, type HeldLock, type SweepLocker } from './activity-locker.js'
export {
  type Removal,
  type SweepFs,
  type SweepLogger,
  type SweepOptions,
  type SweepReport,
  sweepDirectory,
} from './engine.js'
