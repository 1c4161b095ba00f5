/**
 * The Fastify wiring, top to bottom: options; the endpoint's name and store checked against the
 * other registrations (endpoints.ts); the locker, the backend (backends/: which store it is is
 * decided there, once), the sweep schedule; the tus server and its routes in a child context;
 * decorators; hooks. Each part is built from the ones above it, never the other way round.
 */
import { MemoryLocker, type Server } from '@tus/server'
import { type DataStore, ERRORS, EVENTS } from '@tus/utils'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { PendingFinish } from './backends/backend.js'
import { openBackend, type UploadBackend } from './backends/index.js'
import {
  checkDecorators,
  claimStore,
  decorate,
  describeEndpoint,
  endpointPath,
  type FastifyTusDecorated,
} from './endpoints.js'
import { InvalidUploadIdError } from './errors.js'
import { wholeName } from './expiry/policy.js'
import { HandOver, type HandOverLogger } from './finish/hand-over.js'
import { MemoryFinishRecords } from './finish/records.js'
import { tusRoutes } from './http/routes.js'
import { createTusServer } from './http/tus-server.js'
import { ActivityLocker } from './locking/activity-locker.js'
import { TusMetrics } from './metrics.js'
import { type FastifyTusOptions, type ResolvedOptions, resolveOptions } from './options/index.js'
import { RedisSweepLease } from './redis/lease.js'
import { RedisLocker } from './redis/locker.js'
import type { SweepReport } from './sweep/report.js'
import { type RunOptions, type ScheduleLogger, SweepSchedule } from './sweep/schedule.js'
import { assertTusInternals } from './tus-internals.js'

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * The @tus/server `Server` behind the routes; with namespaces (declared in
     * `FastifyTusNamespaces`), `fastify.tus[namespace]`.
     */
    tus: FastifyTusDecorated<Server>
    /**
     * Run a sweep now, read the last report; with namespaces (declared in
     * `FastifyTusNamespaces`), `fastify.tusCleanup[namespace]`.
     */
    tusCleanup: FastifyTusDecorated<TusCleanupDecorator>
  }
}

/** `fastify.tusCleanup` */
export interface TusCleanupDecorator {
  /** Sweeps now; a call while a sweep of the same kind runs joins it instead of starting another. */
  run(options?: RunOptions): Promise<SweepReport>
  /** The report of the last sweep that ended, or `undefined`. */
  readonly last: SweepReport | undefined
  /**
   * The finished uploads whose `onUploadFinish` has not succeeded yet (it is run again until it
   * does), oldest first; empty without an `onUploadFinish`.
   */
  pending(): Promise<PendingFinish[]>
  /**
   * The app moved or removed the data of upload `id` itself (after its `onUploadFinish`, which
   * releases on its own): its record goes and its bytes leave the store quota now. Resolves to
   * the bytes released (0 when its data is still in the store, or nothing is left to release).
   * Rejects with `FST_TUS_INVALID_UPLOAD_ID` for an id that is not one (`idPattern`).
   */
  release(id: string): Promise<number>
}

async function fastifyTusPlugin(fastify: FastifyInstance, rawOptions: FastifyTusOptions) {
  const options = resolveOptions(rawOptions)
  assertTusInternals()
  const { namespace } = options
  const endpoint = endpointPath(fastify.prefix, options)
  checkDecorators(fastify, namespace, endpoint)
  const holder = describeEndpoint(endpoint, namespace)
  const held = new Held(await claimStore(options, holder))
  try {
    await serve(fastify, options, endpoint, held)
  } catch (error) {
    await held.release(undefined)
    throw error
  }
}

/**
 * What a registration holds, given back in onClose, or at once when the registration fails:
 * its place in this process' table of stores, its backend, its Redis locker.
 */
class Held {
  backend: UploadBackend | undefined
  redisLocker: RedisLocker | undefined
  handOver: HandOver | undefined

  constructor(readonly releaseStore: () => void) {}

  /** `closedAt`: when the app's close began; `undefined` when the registration failed. */
  async release(closedAt: number | undefined): Promise<void> {
    try {
      await this.handOver?.close()
      await this.redisLocker?.close()
      await this.backend?.close(closedAt)
    } finally {
      // Another registration (a new app in tests, another process) may serve the store now.
      this.releaseStore()
    }
  }
}

/** Everything the registration builds once its store is its own; `held` goes in onClose. */
async function serve(
  fastify: FastifyInstance,
  options: ResolvedOptions,
  endpoint: string,
  held: Held,
) {
  const { namespace } = options
  const log = fastify.log.child({
    plugin: 'fastify-tus',
    ...(namespace !== undefined && { namespace }),
    endpoint,
  }) as ScheduleLogger
  warnOfShortExpiry(options.expireAfterMs, log)
  // Metrics label each registration by its namespace, or else its path.
  const metrics = options.metrics
    ? await TusMetrics.create(options.metrics, namespace ?? endpoint, options.redis !== undefined)
    : undefined

  // The store and its sweep.
  const { locker, redisLocker } = await buildLocker(options, log, metrics)
  held.redisLocker = redisLocker
  const holder = describeEndpoint(endpoint, namespace)
  const backend = await openBackend({ options, locker, log, holder })
  held.backend = backend
  const schedule = buildSchedule(options, backend, log, metrics)
  const started = await backend.start?.(() => schedule.run())
  const handOver = buildHandOver(options, backend, locker, endpoint, log, metrics)
  held.handOver = handOver
  if (backend.space || backend.quota) emergencySweeps(backend, schedule, log, metrics)
  if (backend.space) metrics?.watchSpace(backend.space)
  if (backend.quota) metrics?.watchQuota(backend.quota)

  // The tus server and its routes.
  /** When close() began: from then on, clients cannot start new work here. */
  let closingAt: number | undefined
  const server = await registerRoutes(fastify, options, backend, locker, {
    isClosing: () => closingAt !== undefined,
    metrics,
    handOver,
    log,
  })
  routeCleanUpThroughSchedule(server, backend.datastore, schedule)
  if (metrics) {
    server.on(EVENTS.POST_FINISH, () => metrics.uploadFinished())
    server.on(EVENTS.POST_TERMINATE, () => metrics.uploadTerminated())
  }

  const tusCleanup: TusCleanupDecorator = {
    run: (runOptions) => schedule.run(runOptions),
    get last() {
      return schedule.last
    },
    pending: async () => (handOver ? handOver.pending() : []),
    release: async (id) => backend.released?.(uploadId(id, options.idPattern)) ?? 0,
  }
  decorate(fastify, namespace, endpoint, { tus: server, tusCleanup })

  fastify.addHook('onReady', async () => {
    backend.ready?.()
    schedule.start({ runOnStart: options.cleanupOnStart && !started?.swept })
    handOver?.start()
  })
  fastify.addHook('onListen', async () => backend.serving?.())
  fastify.addHook('preClose', async () => {
    closingAt = Date.now()
  })
  fastify.addHook('onClose', async () => {
    try {
      await handOver?.close()
      await schedule.stop()
      // Work the backend began after an answer (partials a final took over) ends first.
      await backend.settled?.()
    } finally {
      await held.release(closingAt ?? Date.now())
    }
  })
}

/**
 * The tus server and its routes, in a child context (their body parser must not leak into the
 * app); its prefix is the full one, parents' included, which tus needs to build `Location`.
 */
async function registerRoutes(
  fastify: FastifyInstance,
  options: ResolvedOptions,
  backend: UploadBackend,
  locker: ActivityLocker,
  how: {
    isClosing: () => boolean
    metrics: TusMetrics | undefined
    handOver: HandOver | undefined
    log: ScheduleLogger
  },
): Promise<Server> {
  let tus: Server | undefined
  await fastify.register(
    async (child) => {
      const created = createTusServer({
        tus: options.tus,
        path: `${child.prefix}${options.path}`,
        backend,
        locker,
        handOver: how.handOver,
        log: how.log,
      })
      tus = created.tus
      await tusRoutes(child, {
        path: options.path,
        tus,
        backend,
        fileIdOf: created.fileIdOf,
        isClosing: how.isClosing,
        serving: () => backend.serving?.(),
        metrics: how.metrics,
        log: how.log,
        download: options.download,
      })
    },
    { prefix: options.prefix },
  )
  return tus as Server
}

/**
 * The durable hand-over of finished uploads to the user's `onUploadFinish` (finish/hand-over.ts),
 * its pending records in the store when the backend keeps them, else in memory.
 */
function buildHandOver(
  options: ResolvedOptions,
  backend: UploadBackend,
  locker: ActivityLocker,
  endpoint: string,
  log: HandOverLogger,
  metrics: TusMetrics | undefined,
): HandOver | undefined {
  const hook = options.tus.onUploadFinish
  if (!hook) return undefined
  const handOver = new HandOver({
    hook,
    datastore: backend.datastore,
    records: backend.finishes ?? new MemoryFinishRecords(),
    locker,
    log,
    retry: { firstMs: options.finishRetryMs, maxMs: options.finishRetryMaxMs },
    passEveryMs: options.cleanupIntervalMs,
    urlOf: (id) => `http://localhost${endpoint}/${id}`,
    onFailure: metrics && (() => metrics.finishFailed()),
    onPending: metrics && ((count) => metrics.finishPending(count)),
    released: backend.released && ((id) => backend.released?.(id) ?? Promise.resolve(0)),
  })
  return handOver
}

/**
 * `id` when it names an upload of the store: a whole match of `idPattern`, and a relative path
 * without `.` or `..` segments (a pattern that allows `/` must not reach outside the store).
 */
function uploadId(id: string, idPattern: RegExp): string {
  const isPath =
    typeof id === 'string' &&
    !id.includes('\\') &&
    !id.includes('\0') &&
    id.split('/').every((part) => part !== '' && part !== '.' && part !== '..')
  if (isPath && wholeName(idPattern).test(id)) return id
  throw new InvalidUploadIdError(JSON.stringify(id) ?? String(id), String(idPattern))
}

/** Under this, `expireAfterMs` was more likely meant in seconds than in milliseconds. */
const SHORT_EXPIRY_MS = 5000

/** `expireAfterMs: 120` (two minutes, meant as seconds) would expire uploads between chunks. */
function warnOfShortExpiry(expireAfterMs: number, log: ScheduleLogger): void {
  if (expireAfterMs === 0 || expireAfterMs >= SHORT_EXPIRY_MS) return
  log.warn(
    { expireAfterMs },
    `fastify-tus: expireAfterMs is ${expireAfterMs} ms: an upload idle that long expires (it counts milliseconds: 10 minutes is 600000)`,
  )
}

/**
 * The tus server's locker, wrapped so that the sweep sees which uploads requests hold. With
 * Redis, uploads are locked fleet-wide.
 */
async function buildLocker(
  options: ResolvedOptions,
  log: ScheduleLogger,
  metrics: TusMetrics | undefined,
) {
  const redisLocker = options.redis
    ? new RedisLocker({
        ...options.redis,
        onError: (err) => log.warn({ err }, 'fastify-tus: Redis error'),
      })
    : undefined
  const inner = redisLocker ?? (await options.tus.locker) ?? new MemoryLocker()
  // With Redis, how long requests wait for a lock is worth watching (other instances hold them).
  const onLockWait = metrics && redisLocker ? (s: number) => metrics.lockWaited(s) : undefined
  return { locker: new ActivityLocker(inner, onLockWait), redisLocker }
}

/** The backend's sweep on the plugin's schedule; with Redis, one instance sweeps per interval. */
function buildSchedule(
  options: ResolvedOptions,
  backend: UploadBackend,
  log: ScheduleLogger,
  metrics: TusMetrics | undefined,
): SweepSchedule {
  const { redis } = options
  const { sweep } = backend
  return new SweepSchedule({
    sweep: 'run' in sweep ? sweep.run : async () => Promise.reject(new Error(sweep.off)),
    log,
    intervalMs: options.cleanupIntervalMs,
    runOnStart: options.cleanupOnStart,
    observer: metrics,
    lease: redis
      ? new RedisSweepLease({
          client: redis.client,
          prefix: redis.prefix,
          intervalMs: options.cleanupIntervalMs,
          ttlMs: redis.lockTtlMs,
        })
      : undefined,
    offBecause:
      options.expireAfterMs === 0 ? 'expireAfterMs is 0' : 'off' in sweep ? sweep.off : undefined,
  })
}

/**
 * Free space below the floor, or a store at its quota, starts a sweep at once (one at a time, at
 * most every `EMERGENCY_EVERY_MS`), by the same rules and locks as the scheduled ones, logged at
 * `warn` with the free space and the quota.
 */
function emergencySweeps(
  backend: UploadBackend,
  schedule: SweepSchedule,
  log: ScheduleLogger,
  metrics: TusMetrics | undefined,
): void {
  const { space, quota } = backend
  let lastAt = Number.NEGATIVE_INFINITY
  const start = (figures: Record<string, number | undefined>, reason: string) => {
    const now = performance.now()
    if (now - lastAt < EMERGENCY_EVERY_MS) return
    lastAt = now
    log.warn(
      {
        ...(space && { minFreeBytes: space.minFreeBytes }),
        ...(quota && { storeBytes: quota.lastSeen, maxStoreBytes: quota.maxStoreBytes }),
        ...figures,
      },
      `fastify-tus: ${reason}: emergency sweep`,
    )
    metrics?.emergencySweep()
    // A failure is logged by the schedule; after close() there is nothing to do.
    schedule.runEmergency().catch(() => {})
  }
  space?.onLow(({ freeBytes, neededBytes }) => {
    start({ freeBytes, neededBytes }, 'free space is below the floor')
  })
  quota?.onLow(({ storeBytes, neededBytes }) => {
    // The free space for the same record: as last read (cached), or read once without a floor.
    const read = backend.freeBytes?.() ?? Promise.reject(new Error('no filesystem'))
    read.then(
      (freeBytes) => start({ freeBytes, storeBytes, neededBytes }, 'the store is at its quota'),
      () => start({ storeBytes, neededBytes }, 'the store is at its quota'),
    )
  })
}

/** At most one emergency sweep this often. */
const EMERGENCY_EVERY_MS = 5000

/**
 * `server.cleanUpExpiredUploads()` (public @tus/server API) joins the plugin's sweep instead of
 * racing it; like the stock method, it throws for a store without the expiration extension.
 */
function routeCleanUpThroughSchedule(
  server: Server,
  datastore: DataStore,
  schedule: SweepSchedule,
): void {
  server.cleanUpExpiredUploads = () => {
    if (!datastore.hasExtension('expiration')) throw ERRORS.UNSUPPORTED_EXPIRATION_EXTENSION
    return schedule.run().then((report) => report.removed)
  }
}

export const fastifyTus = fp(fastifyTusPlugin, { fastify: '5.x', name: 'fastify-tus' })
