/**
 * The plugin's option tables (the top level, `redis`, `metrics`) and `resolveOptions`, which
 * runs them. A row's check may use the rows above it: the order of the rows is the order in
 * which problems are found, so that the first one reported is always the same.
 */
import type { DataStore } from '@tus/utils'
import { MAX_TIMER_MS } from '../duration.js'
import { InvalidOptionError } from '../errors.js'
import { DEFAULT_ID_PATTERN, defaultPartialHoldMs } from '../expiry/policy.js'
import { REDIS_LOCKER_DEFAULTS, type RedisClient } from '../redis/locker.js'
import {
  bytes,
  describe,
  type Group,
  milliseconds,
  must,
  Problem,
  type RowContext,
  resolveGroup,
} from './table.js'
import type {
  MetricsRegistry,
  ResolvedMetricsOptions,
  ResolvedOptions,
  ResolvedRedisOptions,
  TusServerOptions,
} from './types.js'

export const DEFAULTS = {
  path: '/files',
  directory: './uploads',
  expireAfterMs: 600_000,
  cleanupIntervalMs: 600_000,
  cleanupOnStart: true,
  finishRetryMs: 60_000,
  finishRetryMaxMs: 3_600_000,
  download: true,
} as const

type Context = RowContext<ResolvedOptions>

const OPTIONS: Group<ResolvedOptions> = {
  name: undefined,
  shape: 'an object',
  // Keys that Fastify's `register` adds to a plugin's options: accepted, not ours to list.
  unlisted: ['prefix', 'logLevel', 'logSerializers'],
  rows: {
    namespace: {
      check: must(
        isNamespace,
        "a name such as 'videos' (a letter, then letters, digits, '_' or '-', 64 at most)",
      ),
    },
    path: {
      default: () => DEFAULTS.path,
      check: must(
        isRoutePath,
        "a route path such as '/files' (a leading '/', no trailing '/', no ':' or '*')",
      ),
    },
    prefix: { default: () => '', check: must(isRoutePrefix, "a path starting with '/'") },
    directory: { default: () => DEFAULTS.directory, check: checkDirectory },
    datastore: {
      check: must(isDataStore, 'a @tus/server DataStore (with create, write, getUpload, remove)'),
    },
    expireAfterMs: {
      default: () => DEFAULTS.expireAfterMs,
      check: milliseconds({ min: 0 }, '0 turns expiry off'),
    },
    partialHoldMs: {
      default: ({ expireAfterMs }) => defaultPartialHoldMs(expireAfterMs as number),
      check: checkPartialHold,
    },
    cleanupIntervalMs: {
      default: () => DEFAULTS.cleanupIntervalMs,
      check: milliseconds({ min: 1, max: MAX_TIMER_MS }),
    },
    cleanupOnStart: {
      default: () => DEFAULTS.cleanupOnStart,
      check: must((value) => typeof value === 'boolean', 'true or false'),
    },
    finishRetryMs: {
      default: () => DEFAULTS.finishRetryMs,
      check: milliseconds({ min: 1, max: MAX_TIMER_MS }),
    },
    finishRetryMaxMs: {
      default: ({ finishRetryMs }) => Math.max(DEFAULTS.finishRetryMaxMs, finishRetryMs as number),
      check: milliseconds<ResolvedOptions>(
        ({ finishRetryMs }) => ({ min: finishRetryMs as number, max: MAX_TIMER_MS }),
        'finishRetryMs: the backoff starts there',
      ),
    },
    idPattern: {
      default: () => DEFAULT_ID_PATTERN,
      check: must((value) => value instanceof RegExp, 'a RegExp'),
    },
    tus: { default: () => ({}), check: checkTus },
    redis: { check: (value, { resolved }) => resolveGroup(redisGroup(resolved), value) },
    metrics: {
      check: (value) =>
        value === false ? undefined : resolveGroup(METRICS, value === true ? {} : value),
    },
    minFreeBytes: { check: fileStoreOnly(bytes(0, '0 turns the floor off')) },
    maxStoreBytes: { check: fileStoreOnly(bytes(1, 'leave it out for no quota')) },
    download: {
      default: () => DEFAULTS.download,
      check: must((value) => typeof value === 'boolean', 'true or false'),
    },
  },
}

/** The `redis` group: its prefix defaults to one per `namespace`, and it brings the locker. */
function redisGroup(options: Context['resolved']): Group<ResolvedRedisOptions> {
  const { prefix } = REDIS_LOCKER_DEFAULTS
  return {
    name: 'redis',
    shape: 'an object such as { client: new Redis() }',
    rows: {
      client: {
        required: true,
        check: (client) => {
          if (!isRedisClient(client)) {
            return new Problem(
              `must be an ioredis client (new Redis(...) from ioredis 5 or 6), got ${describe(client)}`,
            )
          }
          if (options.tus?.locker === undefined) return client
          return new Problem(
            'cannot be set together with `redis`: the Redis option brings its own locker',
            'tus.locker',
          )
        },
      },
      // Each namespace its own keys by default: endpoints on other stores must not share a lease.
      prefix: {
        default: () =>
          options.namespace === undefined ? prefix : `${prefix}${options.namespace}:`,
        check: must(
          (value): value is string => typeof value === 'string' && value !== '',
          'a non-empty string',
        ),
      },
      // Refreshed every third of it: shorter would be a refresh every few milliseconds.
      lockTtlMs: {
        default: () => REDIS_LOCKER_DEFAULTS.lockTtlMs,
        check: milliseconds({ min: 100, max: MAX_TIMER_MS }),
      },
      acquireLockTimeoutMs: {
        default: () => REDIS_LOCKER_DEFAULTS.acquireLockTimeoutMs,
        check: milliseconds({ min: 1, max: MAX_TIMER_MS }),
      },
    },
  }
}

const METRICS: Group<ResolvedMetricsOptions> = {
  name: 'metrics',
  shape: 'true, false or { registry, prefix? }',
  rows: {
    registry: { check: must(isMetricsRegistry, 'a prom-client Registry') },
    prefix: {
      default: () => '',
      check: must(
        (value): value is string =>
          typeof value === 'string' && /^([a-zA-Z_:][a-zA-Z0-9_:]*)?$/.test(value),
        'the start of a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)',
      ),
    },
  },
}

export function resolveOptions(input: unknown): ResolvedOptions {
  const resolved = resolveGroup(OPTIONS, input ?? {})
  if (resolved instanceof Problem) {
    throw new InvalidOptionError(resolved.option ?? 'options', resolved.text)
  }
  return resolved
}

function checkDirectory(value: unknown, { given }: Context): string | Problem {
  if (given.directory !== undefined && given.datastore !== undefined) {
    return new Problem(
      'replaces `directory`: pass one of them, not both (a datastore keeps its files where it was configured to)',
      'datastore',
    )
  }
  return typeof value === 'string' && value.trim() !== '' && !value.includes('\0')
    ? value
    : new Problem(`must be a non-empty path, got ${describe(value)}`)
}

/** At least `expireAfterMs`, for the built-in store only. */
function checkPartialHold(value: unknown, context: Context): number | Problem {
  if (context.given.partialHoldMs !== undefined && context.resolved.datastore !== undefined) {
    return new Problem(
      'applies to the built-in file store (`directory`), whose parallel uploads it holds, not to a `datastore`',
    )
  }
  return milliseconds<ResolvedOptions>(
    ({ expireAfterMs }) => ({ min: expireAfterMs as number }),
    'expireAfterMs: a finished partial upload waits at least as long as an unfinished one',
  )(value, context)
}

/** The @tus/server options passed through, less those the plugin sets itself. */
function checkTus(value: unknown): TusServerOptions | Problem {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return new Problem(`must be an object of @tus/server options, got ${describe(value)}`)
  }
  for (const key of ['path', 'datastore']) {
    if (key in value) {
      return new Problem(`is set by fastify-tus: use the plugin's \`${key}\` option`, `tus.${key}`)
    }
  }
  if (typeof (value as TusServerOptions).locker === 'function') {
    return new Problem(
      'must be a Locker object (or a promise of one), not a function: the sweep takes locks outside any request',
      'tus.locker',
    )
  }
  return value as TusServerOptions
}

/** A check of the built-in store's own options: the value's, then refused beside a `datastore`. */
function fileStoreOnly(check: (value: unknown) => number | Problem) {
  return (value: unknown, { resolved }: Context): number | Problem => {
    const checked = check(value)
    if (checked instanceof Problem || resolved.datastore === undefined) return checked
    return new Problem('applies to the built-in file store (`directory`), not to a `datastore`')
  }
}

/** What `namespace` may be: it names a property (`fastify.tus.videos`) and goes into Redis keys. */
function isNamespace(value: unknown): value is string {
  return typeof value === 'string' && /^[A-Za-z][A-Za-z0-9_-]{0,63}$/.test(value)
}

function isRoutePath(value: unknown): value is string {
  return typeof value === 'string' && /^(\/[A-Za-z0-9._~!$&'()+,;=@%-]+)+$/.test(value)
}

function isRoutePrefix(value: unknown): value is string {
  return typeof value === 'string' && (value === '' || value.startsWith('/'))
}

function isRedisClient(value: unknown): value is RedisClient {
  // `defineCommand`: the plugin's Lua scripts become commands of the client (ioredis).
  return hasMethods(value, ['defineCommand', 'publish', 'duplicate'])
}

function isDataStore(value: unknown): value is DataStore {
  return hasMethods(value, ['create', 'write', 'getUpload', 'remove', 'hasExtension'])
}

function isMetricsRegistry(value: unknown): value is MetricsRegistry {
  if (value === null || value === undefined) return false
  const registry = value as Record<string, unknown>
  return ['getSingleMetric', 'registerMetric', 'metrics'].every(
    (method) => typeof registry[method] === 'function',
  )
}

function hasMethods(value: unknown, methods: string[]): boolean {
  if (typeof value !== 'object' || value === null) return false
  const object = value as Record<string, unknown>
  return methods.every((method) => typeof object[method] === 'function')
}
