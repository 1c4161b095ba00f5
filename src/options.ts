/**
 * The plugin's options: types, defaults, and validation that names the option at fault.
 */
import type { ServerOptions } from '@tus/server'
import type { DataStore, Locker } from '@tus/utils'
import { checkMilliseconds, MAX_TIMER_MS } from './duration.js'
import { InvalidOptionError } from './errors.js'
import { DEFAULT_ID_PATTERN, defaultPartialHoldMs } from './expiry/policy.js'
import { REDIS_LOCKER_DEFAULTS, type RedisClient } from './redis/locker.js'

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
  idPattern: RegExp
  tus: TusServerOptions
  redis: ResolvedRedisOptions | undefined
  metrics: ResolvedMetricsOptions | undefined
  /** `undefined`: the default floor, computed from the filesystem when the store opens. */
  minFreeBytes: number | undefined
  /** `undefined`: no quota. */
  maxStoreBytes: number | undefined
}

export const DEFAULTS = {
  path: '/files',
  directory: './uploads',
  expireAfterMs: 600_000,
  cleanupIntervalMs: 600_000,
  cleanupOnStart: true,
} as const

const OWN_KEYS = [
  'namespace',
  'path',
  'directory',
  'datastore',
  'expireAfterMs',
  'partialHoldMs',
  'cleanupIntervalMs',
  'cleanupOnStart',
  'idPattern',
  'tus',
  'redis',
  'metrics',
  'minFreeBytes',
  'maxStoreBytes',
]
/** Keys that Fastify's `register` adds to a plugin's options. */
const REGISTER_KEYS = ['prefix', 'logLevel', 'logSerializers']

export function resolveOptions(input: unknown): ResolvedOptions {
  if (input === undefined || input === null) input = {}
  if (typeof input !== 'object' || Array.isArray(input)) {
    throw new InvalidOptionError('options', `must be an object, got ${describe(input)}`)
  }
  const options = input as FastifyTusOptions & { prefix?: unknown }
  for (const key of Object.keys(options)) {
    if (!OWN_KEYS.includes(key) && !REGISTER_KEYS.includes(key)) {
      throw new InvalidOptionError(
        key,
        `is not an option of fastify-tus (options: ${OWN_KEYS.join(', ')})`,
      )
    }
  }

  const namespace = options.namespace
  if (namespace !== undefined && (typeof namespace !== 'string' || !NAMESPACE.test(namespace))) {
    throw new InvalidOptionError(
      'namespace',
      `must be a name such as 'videos' (a letter, then letters, digits, '_' or '-', 64 at most), got ${describe(namespace)}`,
    )
  }

  const path = options.path ?? DEFAULTS.path
  if (typeof path !== 'string' || !/^(\/[A-Za-z0-9._~!$&'()+,;=@%-]+)+$/.test(path)) {
    throw new InvalidOptionError(
      'path',
      `must be a route path such as '/files' (a leading '/', no trailing '/', no ':' or '*'), got ${describe(path)}`,
    )
  }
  const prefix = options.prefix ?? ''
  if (typeof prefix !== 'string' || (prefix !== '' && !prefix.startsWith('/'))) {
    throw new InvalidOptionError(
      'prefix',
      `must be a path starting with '/', got ${describe(prefix)}`,
    )
  }

  if (options.directory !== undefined && options.datastore !== undefined) {
    throw new InvalidOptionError(
      'datastore',
      'replaces `directory`: pass one of them, not both (a datastore keeps its files where it was configured to)',
    )
  }
  const directory = options.directory ?? DEFAULTS.directory
  if (typeof directory !== 'string' || directory.trim() === '' || directory.includes('\0')) {
    throw new InvalidOptionError(
      'directory',
      `must be a non-empty path, got ${describe(directory)}`,
    )
  }
  const datastore = options.datastore
  if (datastore !== undefined && !isDataStore(datastore)) {
    throw new InvalidOptionError(
      'datastore',
      `must be a @tus/server DataStore (with create, write, getUpload, remove), got ${describe(datastore)}`,
    )
  }

  const expireAfterMs = options.expireAfterMs ?? DEFAULTS.expireAfterMs
  const expiryProblem = checkMilliseconds(expireAfterMs, { min: 0 })
  if (typeof expiryProblem === 'string') {
    throw new InvalidOptionError(
      'expireAfterMs',
      `${expiryProblem} (0 turns expiry off), got ${describe(expireAfterMs)}`,
    )
  }
  const partialHoldMs = resolvePartialHold(options.partialHoldMs, expireAfterMs, datastore)
  const cleanupIntervalMs = milliseconds(
    'cleanupIntervalMs',
    options.cleanupIntervalMs ?? DEFAULTS.cleanupIntervalMs,
    1,
  )
  const cleanupOnStart = options.cleanupOnStart ?? DEFAULTS.cleanupOnStart
  if (typeof cleanupOnStart !== 'boolean') {
    throw new InvalidOptionError(
      'cleanupOnStart',
      `must be true or false, got ${describe(cleanupOnStart)}`,
    )
  }
  const idPattern = options.idPattern ?? DEFAULT_ID_PATTERN
  if (!(idPattern instanceof RegExp)) {
    throw new InvalidOptionError('idPattern', `must be a RegExp, got ${describe(idPattern)}`)
  }

  const tus = options.tus ?? {}
  if (typeof tus !== 'object' || tus === null || Array.isArray(tus)) {
    throw new InvalidOptionError(
      'tus',
      `must be an object of @tus/server options, got ${describe(tus)}`,
    )
  }
  for (const key of ['path', 'datastore'] as const) {
    if (key in tus) {
      throw new InvalidOptionError(
        `tus.${key}`,
        `is set by fastify-tus: use the plugin's \`${key}\` option`,
      )
    }
  }
  if (typeof tus.locker === 'function') {
    throw new InvalidOptionError(
      'tus.locker',
      'must be a Locker object (or a promise of one), not a function: the sweep takes locks outside any request',
    )
  }

  const redis = resolveRedis(options.redis, tus, namespace)
  const metrics = resolveMetrics(options.metrics)
  const minFreeBytes = options.minFreeBytes
  if (minFreeBytes !== undefined) {
    if (!Number.isSafeInteger(minFreeBytes) || minFreeBytes < 0) {
      throw new InvalidOptionError(
        'minFreeBytes',
        `must be a whole number of bytes >= 0 (0 turns the floor off), got ${describe(minFreeBytes)}`,
      )
    }
    if (datastore !== undefined) {
      throw new InvalidOptionError(
        'minFreeBytes',
        'applies to the built-in file store (`directory`), not to a `datastore`',
      )
    }
  }

  const maxStoreBytes = options.maxStoreBytes
  if (maxStoreBytes !== undefined) {
    if (!Number.isSafeInteger(maxStoreBytes) || maxStoreBytes < 1) {
      throw new InvalidOptionError(
        'maxStoreBytes',
        `must be a whole number of bytes >= 1 (leave it out for no quota), got ${describe(maxStoreBytes)}`,
      )
    }
    if (datastore !== undefined) {
      throw new InvalidOptionError(
        'maxStoreBytes',
        'applies to the built-in file store (`directory`), not to a `datastore`',
      )
    }
  }

  return {
    namespace,
    path,
    prefix,
    directory,
    datastore,
    expireAfterMs,
    partialHoldMs,
    cleanupIntervalMs,
    cleanupOnStart,
    idPattern,
    tus,
    redis,
    metrics,
    minFreeBytes,
    maxStoreBytes,
  }
}

/** `partialHoldMs`: at least `expireAfterMs`, for the built-in store only. */
function resolvePartialHold(
  input: unknown,
  expireAfterMs: number,
  datastore: DataStore | undefined,
): number {
  if (input !== undefined && datastore !== undefined) {
    throw new InvalidOptionError(
      'partialHoldMs',
      'applies to the built-in file store (`directory`), whose parallel uploads it holds, not to a `datastore`',
    )
  }
  const hold = input ?? defaultPartialHoldMs(expireAfterMs)
  const problem = checkMilliseconds(hold, { min: expireAfterMs })
  if (typeof problem !== 'string') return problem
  throw new InvalidOptionError(
    'partialHoldMs',
    `${problem} (expireAfterMs: a finished partial upload waits at least as long as an unfinished one), got ${describe(hold)}`,
  )
}

const METRICS_KEYS = ['registry', 'prefix']

function resolveMetrics(input: unknown): ResolvedMetricsOptions | undefined {
  if (input === undefined || input === false) return undefined
  if (input === true) return { registry: undefined, prefix: '' }
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new InvalidOptionError(
      'metrics',
      `must be true, false or { registry, prefix? }, got ${describe(input)}`,
    )
  }
  const metrics = input as FastifyTusMetricsOptions
  for (const key of Object.keys(metrics)) {
    if (!METRICS_KEYS.includes(key)) {
      throw new InvalidOptionError(
        `metrics.${key}`,
        `is not an option of fastify-tus (metrics options: ${METRICS_KEYS.join(', ')})`,
      )
    }
  }
  const { registry } = metrics
  if (
    registry !== undefined &&
    !['getSingleMetric', 'registerMetric', 'metrics'].every(
      (method) => typeof (registry as unknown as Record<string, unknown>)?.[method] === 'function',
    )
  ) {
    throw new InvalidOptionError(
      'metrics.registry',
      `must be a prom-client Registry, got ${describe(registry)}`,
    )
  }
  const prefix = metrics.prefix ?? ''
  if (typeof prefix !== 'string' || !/^([a-zA-Z_:][a-zA-Z0-9_:]*)?$/.test(prefix)) {
    throw new InvalidOptionError(
      'metrics.prefix',
      `must be the start of a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), got ${describe(prefix)}`,
    )
  }
  return { registry, prefix }
}

const REDIS_KEYS = ['client', 'prefix', 'lockTtlMs', 'acquireLockTimeoutMs']

/** What `namespace` may be: it names a property (`fastify.tus.videos`) and goes into Redis keys. */
const NAMESPACE = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/

function resolveRedis(
  input: unknown,
  tus: TusServerOptions,
  namespace: string | undefined,
): ResolvedRedisOptions | undefined {
  if (input === undefined) return undefined
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new InvalidOptionError(
      'redis',
      `must be an object such as { client: new Redis() }, got ${describe(input)}`,
    )
  }
  const redis = input as Partial<FastifyTusRedisOptions>
  for (const key of Object.keys(redis)) {
    if (!REDIS_KEYS.includes(key)) {
      throw new InvalidOptionError(
        `redis.${key}`,
        `is not an option of fastify-tus (redis options: ${REDIS_KEYS.join(', ')})`,
      )
    }
  }
  if (!isRedisClient(redis.client)) {
    throw new InvalidOptionError(
      'redis.client',
      `must be an ioredis client (new Redis(...) from ioredis 5 or 6), got ${describe(redis.client)}`,
    )
  }
  if (tus.locker !== undefined) {
    throw new InvalidOptionError(
      'tus.locker',
      'cannot be set together with `redis`: the Redis option brings its own locker',
    )
  }
  // Each namespace its own keys by default: endpoints on other stores must not share a lease.
  const prefix =
    redis.prefix ??
    (namespace === undefined
      ? REDIS_LOCKER_DEFAULTS.prefix
      : `${REDIS_LOCKER_DEFAULTS.prefix}${namespace}:`)
  if (typeof prefix !== 'string' || prefix === '') {
    throw new InvalidOptionError(
      'redis.prefix',
      `must be a non-empty string, got ${describe(prefix)}`,
    )
  }
  // Refreshed every third of it: shorter would be a refresh every few milliseconds.
  const lockTtlMs = milliseconds(
    'redis.lockTtlMs',
    redis.lockTtlMs ?? REDIS_LOCKER_DEFAULTS.lockTtlMs,
    100,
  )
  const acquireLockTimeoutMs = milliseconds(
    'redis.acquireLockTimeoutMs',
    redis.acquireLockTimeoutMs ?? REDIS_LOCKER_DEFAULTS.acquireLockTimeoutMs,
    1,
  )
  return { client: redis.client, prefix, lockTtlMs, acquireLockTimeoutMs }
}

/** A whole number of milliseconds from `min` to what a timer can wait, or an error naming the option. */
function milliseconds(option: string, value: unknown, min: number): number {
  const checked = checkMilliseconds(value, { min, max: MAX_TIMER_MS })
  if (typeof checked === 'string') {
    throw new InvalidOptionError(option, `${checked}, got ${describe(value)}`)
  }
  return checked
}

function isRedisClient(value: unknown): value is RedisClient {
  if (typeof value !== 'object' || value === null) return false
  const client = value as Record<string, unknown>
  // `defineCommand`: the plugin's Lua scripts become commands of the client (ioredis).
  return ['defineCommand', 'publish', 'duplicate'].every(
    (method) => typeof client[method] === 'function',
  )
}

function isDataStore(value: unknown): value is DataStore {
  if (typeof value !== 'object' || value === null) return false
  const store = value as Record<string, unknown>
  return ['create', 'write', 'getUpload', 'remove', 'hasExtension'].every(
    (method) => typeof store[method] === 'function',
  )
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value)
  if (typeof value === 'function') return 'a function'
  if (Array.isArray(value)) return 'an array'
  return `an object (${Object.prototype.toString.call(value)})`
}
