/**
 * The package's main entry (`fastify-tus`): the plugin, its option and decorator types, its
 * errors, and what a user's tus hooks need. The sweep engine, the store, the lockers and the
 * lease are building blocks for advanced use, under `fastify-tus/sweep`.
 */
import { fastifyTus } from './plugin.js'

export { EVENTS, type Upload } from '@tus/utils'
export type { PendingFinish } from './backends/backend.js'
export type {
  FastifyTusDecorated,
  FastifyTusNamespace,
  FastifyTusNamespaced,
  FastifyTusNamespaces,
} from './endpoints.js'
export {
  AlreadyRegisteredError,
  ClosedError,
  DirectoryError,
  DirectoryInUseError,
  IncompatibleTusError,
  InvalidOptionError,
  InvalidUploadIdError,
  LockQueueFullError,
  LockTimeoutError,
  LockUnavailableError,
  MetricsUnavailableError,
  S3CacheError,
} from './errors.js'
export { DEFAULT_ID_PATTERN } from './expiry/policy.js'
export { fastifyRequestOf } from './http/fastify-request.js'
export type {
  FastifyTusMetricsOptions,
  FastifyTusOptions,
  FastifyTusRedisOptions,
  MetricsRegistry,
  TusServerOptions,
} from './options/index.js'
export type { TusCleanupDecorator } from './plugin.js'
export type { RedisClient } from './redis/locker.js'
export type { SweepReport } from './sweep/report.js'
export type { RunOptions } from './sweep/schedule.js'
export { fastifyTus }
export default fastifyTus
