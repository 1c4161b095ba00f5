import { fastifyTus } from './plugin.js'

export type { RunOptions, TusCleanupDecorator } from './cleanup.js'
export { ClosedError, DirectoryError, InvalidOptionError, LockTimeoutError } from './errors.js'
export { DEFAULT_ID_PATTERN } from './expiry-policy.js'
export { ExpiringFileStore, type ExpiringFileStoreOptions } from './file-store.js'
export { ActivityLocker, type SweepLocker } from './locks.js'
export type { FastifyTusOptions, FastifyTusRedisOptions, TusServerOptions } from './options.js'
export {
  type RedisClient,
  RedisLocker,
  type RedisLockerOptions,
  type RedisSubscriber,
} from './redis-locker.js'
export {
  type Removal,
  type SweepFs,
  type SweepLogger,
  type SweepOptions,
  type SweepReport,
  sweepDirectory,
} from './sweep.js'
export { type HeldLease, RedisSweepLease, type SweepLease } from './sweep-lease.js'
export { fastifyTus }
export default fastifyTus
