/**
 * The plugin's options as users write them (`FastifyTusOptions`) and as the plugin reads them
 * once resolved (`ResolvedOptions`): defaults applied, every value checked.
 */
import type { ServerOptions } from '@tus/server'
import type { DataStore, Locker } from '@tus/utils'
import type { RedisClient } from '../redis/locker.js'

/** @tus/server options passed through; `path` and `datastore` come from the plugin's own options. */
export type TusServerOptions = Partial<Omit<ServerOptions, 'path' | 'locker'>> & {
  /** A locker object (or a promise of one). The sweep locks outside any request, so not a function. */
  locker?: Locker | Promise<Locker>
}

export interface FastifyTusOptions {
  /**
   * Several endpoints in one app: this registration's decorators become `fastify.tus[namespace]`
   * and `fastify.tusCleanup[namespace]`. A letter, then letters, digits, `_` or `-` (64 at most).
   */
  namespace?: string
  /** Route path, under the register `prefix` if one is given. Default `'/files'`. */
  path?: string
  /** Directory of the built-in file store; created if missing. Default `'./uploads'`. */
  directory?: string
  /** Any @tus/server `DataStore` (S3Store, ...); replaces `directory`. */
  datastore?: DataStore
  /** An unfinished upload with no activity for this long expires; 0 turns expiry and the sweep off. Default 600000. */
  expireAfterMs?: number
  /**
   * A finished partial upload of a parallel upload (concatenation) waits this long after its last
   * byte for the final upload that uses it, while its siblings may still be uploading; it counts
   * against `maxStoreBytes` meanwhile. At least `expireAfterMs`. Default: a day, or
   * `expireAfterMs` when that is longer.
   */
  partialHoldMs?: number
  /** Time between sweeps. Default 600000. */
  cleanupIntervalMs?: number
  /** Sweep once as soon as the server is ready. Default `true`. */
  cleanupOnStart?: boolean
  /**
   * A finished upload whose `onUploadFinish` threw is handed to it again: first after this long
   * (or at the next pass, every `cleanupIntervalMs`, and at startup), then twice as long each
   * time it fails again. Default 60000.
   */
  finishRetryMs?: number
  /** The longest wait between two runs of a failing `onUploadFinish`. Default 3600000 (1 hour). */
  finishRetryMaxMs?: number
  /** Which names are upload ids, for removing orphans; match it to a custom `namingFunction`. Default: 32 hex digits. */
  idPattern?: RegExp
  /** Other @tus/server options (maxSize, hooks, locker, allowedOrigins, namingFunction, ...). */
  tus?: TusServerOptions
  /** Several instances on one store: upload locks and the sweep's lease in Redis. */
  redis?: FastifyTusRedisOptions
  /**
   * Free space the filesystem must keep (built-in store): a creation or a PATCH body that would
   * cross it answers 507, and an emergency sweep starts. `0` turns it off. Default: the smaller
   * of 1 GiB and 5% of the filesystem.
   */
  minFreeBytes?: number
  /**
   * Bytes the store may hold (built-in store), finished uploads included; an unfinished upload
   * counts its declared length (a deferred one, its bytes). A creation, a length declaration or
   * a PATCH body that would go over it answers 507, and an emergency sweep starts. Default: no
   * quota.
   */
  maxStoreBytes?: number
  /** GET of a finished upload serves it (ranges, validators); `false` answers GET with 405. Default `true`. */
  download?: boolean
  /** Prometheus metrics with prom-client (an optional peer dependency): `true` for its default registry, or `{ registry, prefix? }`. Default `false`. */
  metrics?: boolean | FastifyTusMetricsOptions
}

/** What a metrics registry must offer: prom-client's `Registry` (fastify-metrics' included). */
export interface MetricsRegistry {
  getSingleMetric(name: string): unknown
  registerMetric(metric: never): void
  metrics(): Promise<string>
}

export interface FastifyTusMetricsOptions {
  /** The prom-client registry to register into. Default: prom-client's default registry. */
  registry?: MetricsRegistry
  /** Put before every metric name, e.g. `'myapp_'`. Default `''`. */
  prefix?: string
}

export interface ResolvedMetricsOptions {
  /** `undefined`: prom-client's default registry. */
  registry: MetricsRegistry | undefined
  prefix: string
}

export interface FastifyTusRedisOptions {
  /** Your ioredis client (`new Redis(...)`); the plugin opens one more connection from it (`duplicate()`) for pub/sub. */
  client: RedisClient
  /**
   * Prefix of every key and channel; instances on one store share it, other stores use another.
   * Default `'fastify-tus:'`, or `'fastify-tus:<namespace>:'` with `namespace`.
   */
  prefix?: string
  /** A lock (or the sweep's lease) of an instance that died is free after this long. Default 10000. */
  lockTtlMs?: number
  /** A request waiting for an upload's lock gives up after this long with 423. Default 30000. */
  acquireLockTimeoutMs?: number
}

export type ResolvedRedisOptions = Required<FastifyTusRedisOptions>

export interface ResolvedOptions {
  namespace: string | undefined
  path: string
  prefix: string
  directory: string
  datastore: DataStore | undefined
  expireAfterMs: number
  partialHoldMs: number
  cleanupIntervalMs: number
  cleanupOnStart: boolean
  finishRetryMs: number
  finishRetryMaxMs: number
  idPattern: RegExp
  tus: TusServerOptions
  redis: ResolvedRedisOptions | undefined
  metrics: ResolvedMetricsOptions | undefined
  /** `undefined`: the default floor, computed from the filesystem when the store opens. */
  minFreeBytes: number | undefined
  /** `undefined`: no quota. */
  maxStoreBytes: number | undefined
  download: boolean
}
