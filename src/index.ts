import { fastifyTus } from './plugin.js'

export { ClosedError, DirectoryError, InvalidOptionError, LockTimeoutError } from './errors.js'
export type { FastifyTusOptions, FastifyTusRedisOptions, TusServerOptions } from './options.js'
export { type HeldLease, RedisSweepLease, type SweepLease } from './redis/lease.js'
export {
  type RedisClient,
  RedisLocker,
  type RedisLockerOptions,
  type RedisSubscriber,
} from './redis/locker.js'
export { DEFAULT_ID_PATTERN } from './store/expiry-policy.js'
export { ExpiringFileStore, type ExpiringFileStoreOptions } from './store/file-store.js'
export { ActivityLocker, type SweepLocker } from './sweep/activity-locker.js'
export {
  type Removal,
  type SweepFs,
  type SweepLogger,
  type SweepOptions,
  type SweepReport,
  sweepDirectory,
} from './sweep/engine.js'
export type { RunOptions, TusCleanupDecorator } from './sweep/schedule.js'
export { fastifyTus }
export default fastifyTus
