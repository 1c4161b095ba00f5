import createError from '@fastify/error'

/** A plugin option has a wrong type or value; the message names the option and what it expects. */
export const InvalidOptionError = createError<'FST_TUS_INVALID_OPTION', [string, string]>(
  'FST_TUS_INVALID_OPTION',
  'fastify-tus: option `%s` %s',
)

/** The upload directory cannot be created or written at startup. */
export const DirectoryError = createError<
  'FST_TUS_DIRECTORY',
  [string, string, { cause: unknown }?]
>('FST_TUS_DIRECTORY', 'fastify-tus: option `directory`: %s is not a writable directory (%s)')

/**
 * The installed @tus/server (or @tus/file-store) lacks a non-public part the plugin relies on
 * (see tus-internals.ts): refused at `register` rather than answering wrongly at run time.
 */
export const IncompatibleTusError = createError<'FST_TUS_INCOMPATIBLE', [string, string]>(
  'FST_TUS_INCOMPATIBLE',
  'fastify-tus: the installed %s lacks what fastify-tus relies on: %s. Install the version fastify-tus declares in its dependencies',
)

/**
 * A registration that would take the place of another on the same Fastify instance: a second one
 * without `namespace`, or one reusing a namespace. The message names both endpoints.
 */
export const AlreadyRegisteredError = createError<'FST_TUS_ALREADY_REGISTERED', [string]>(
  'FST_TUS_ALREADY_REGISTERED',
  'fastify-tus: %s',
)

/**
 * Two registrations in one process on one store (directory, or datastore object) that do not
 * share Redis: their sweeps and upload locks would not see each other. The message names the
 * store and both endpoints.
 */
export const DirectoryInUseError = createError<'FST_TUS_DIRECTORY_IN_USE', [string]>(
  'FST_TUS_DIRECTORY_IN_USE',
  'fastify-tus: %s',
)

/** The `metrics` option asks for Prometheus metrics, and prom-client cannot be loaded. */
export const MetricsUnavailableError = createError<
  'FST_TUS_METRICS_UNAVAILABLE',
  [{ cause: unknown }?]
>(
  'FST_TUS_METRICS_UNAVAILABLE',
  'fastify-tus: option `metrics` needs prom-client, an optional peer dependency: npm install prom-client',
)

/**
 * An S3Store used with `redis` (several instances) keeps its upload records in one process's
 * memory (its default cache): another instance would answer from a stale record, e.g. a removed
 * upload as finished. The message says which cache to give it.
 */
export const S3CacheError = createError<'FST_TUS_S3_LOCAL_CACHE', []>(
  'FST_TUS_S3_LOCAL_CACHE',
  "fastify-tus: option `datastore`: this S3Store caches upload records in one process's memory (its default MemoryKvStore), but `redis` means several instances share the bucket. Give it a shared cache on the same Redis: `cache: new IoRedisKvStore(redisClient, 'tus-s3:')` from @tus/utils (see docs/s3.md)",
)

/** `tusCleanup.run()` was called after the server closed. */
export const ClosedError = createError<'FST_TUS_CLOSED', []>(
  'FST_TUS_CLOSED',
  'fastify-tus: the server is closed; no more sweeps run',
)

/**
 * `tusCleanup.release(id)` was given something that is not an upload id of the registration (its
 * `idPattern`, as a path inside the store): nothing is looked at or removed.
 */
export const InvalidUploadIdError = createError<'FST_TUS_INVALID_UPLOAD_ID', [string, string]>(
  'FST_TUS_INVALID_UPLOAD_ID',
  'fastify-tus: %s is not an upload id of this endpoint (idPattern %s)',
)

/**
 * A request waited longer than `acquireLockTimeoutMs` for an upload's lock. @tus/server answers
 * with its `status_code` and `body`: 423 Locked, which tus clients retry.
 */
export class LockTimeoutError extends createError<'FST_TUS_LOCK_TIMEOUT', [string, number]>(
  'FST_TUS_LOCK_TIMEOUT',
  'fastify-tus: upload %s is locked by another request; gave up waiting after %d ms',
  423,
) {
  readonly status_code = 423
  get body(): string {
    return `${this.message}\n`
  }
}

/**
 * Too many requests of this process wait for one upload's lock already: the newcomer is answered
 * at once (423 Locked, which tus clients retry) instead of queueing, so that a flood of requests
 * on one upload costs a bounded amount of memory.
 */
export class LockQueueFullError extends createError<'FST_TUS_LOCK_QUEUE_FULL', [string, number]>(
  'FST_TUS_LOCK_QUEUE_FULL',
  'fastify-tus: upload %s already has %d requests waiting for it; retry later',
  423,
) {
  readonly status_code = 423
  get body(): string {
    return `${this.message}\n`
  }
}

/**
 * A request could not take an upload's lock because Redis did not answer (down, unreachable, or
 * slower than the time left): @tus/server answers 503 with a neutral body, which tus clients
 * retry. The Redis error is the `cause`, for logs only: it never reaches the client.
 */
export class LockUnavailableError extends createError<
  'FST_TUS_LOCK_UNAVAILABLE',
  [{ cause: unknown }?]
>(
  'FST_TUS_LOCK_UNAVAILABLE',
  'fastify-tus: upload locks are unavailable: Redis did not answer',
  503,
) {
  readonly status_code = 503
  readonly body = 'Upload locks are unavailable right now; try again\n'
}

/**
 * @tus/server and its stores throw plain `{status_code, body}` objects; loggers and callers
 * want an `Error` with a message and a stack.
 */
export function toError(value: unknown): Error {
  if (value instanceof Error) return value
  if (typeof value === 'object' && value !== null && 'body' in value) {
    const { status_code: status, body } = value as { status_code?: unknown; body?: unknown }
    return new Error(`${String(body).trim()}${status ? ` (status ${String(status)})` : ''}`, {
      cause: value,
    })
  }
  return new Error(String(value), { cause: value })
}
