/**
 * The Fastify wiring, top to bottom: options; the endpoint's name and store checked against the
 * other registrations (endpoints.ts); the locker, the store, the sweep schedule; the tus server
 * and its routes in a child context; decorators; hooks. Each part is built from the ones above
 * it, never the other way round.
 */
import fsp from 'node:fs/promises'
import { MemoryLocker, type Server } from '@tus/server'
import { type DataStore, ERRORS, EVENTS } from '@tus/utils'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { datastoreSweepOffReason, sweepDatastore } from './backends/datastore/sweep.js'
import { fileCapabilities } from './backends/file/capabilities.js'
import { CloseMarker, readDowntime } from './backends/file/downtime.js'
import { ExpiringFileStore } from './backends/file/file-store.js'
import { RedisQuotaCounter } from './backends/file/quota.js'
import type { SweepReport } from './backends/file/sweep-engine.js'
import {
  adoptS3Store,
  asS3Store,
  assertSharedCache,
  type S3StoreLike,
  s3Sweep,
} from './backends/s3/store.js'
import {
  checkDecorators,
  claimStore,
  decorate,
  describeEndpoint,
  endpointPath,
  type FastifyTusNamespaced,
} from './endpoints.js'
import type { Downtime } from './expiry/policy.js'
import { tusRoutes } from './http/routes.js'
import { createTusServer } from './http/tus-server.js'
import { ActivityLocker } from './locking/activity-locker.js'
import { TusMetrics } from './metrics.js'
import { type FastifyTusOptions, type ResolvedOptions, resolveOptions } from './options.js'
import { RedisSweepLease } from './redis/lease.js'
import { RedisLocker } from './redis/locker.js'
import { type RunOptions, type ScheduleLogger, SweepSchedule } from './sweep/schedule.js'
import { assertTusInternals } from './tus-internals.js'

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * The @tus/server `Server` behind the routes; with the `namespace` option,
     * `fastify.tus[namespace]`.
     */
    tus: Server & FastifyTusNamespaced<Server>
    /** Run a sweep now, read the last report; with `namespace`, `fastify.tusCleanup[namespace]`. */
    tusCleanup: TusCleanupDecorator & FastifyTusNamespaced<TusCleanupDecorator>
  }
}

/** `fastify.tusCleanup` */
export interface TusCleanupDecorator {
  /** Sweeps now; a call while a sweep of the same kind runs joins it instead of starting another. */
  run(options?: RunOptions): Promise<SweepReport>
  /** The report of the last sweep that ended, or `undefined`. */
  readonly last: SweepReport | undefined
}

async function fastifyTusPlugin(fastify: FastifyInstance, rawOptions: FastifyTusOptions) {
  const options = resolveOptions(rawOptions)
  assertTusInternals()
  const { namespace } = options
  const endpoint = endpointPath(fastify.prefix, options)
  checkDecorators(fastify, namespace, endpoint)
  const claims = new Claims(await claimStore(options, describeEndpoint(endpoint, namespace)))
  try {
    await serve(fastify, options, endpoint, claims)
  } catch (error) {
    await claims.release()
    throw error
  }
}

/**
 * What a registration holds for its store, given back in onClose, or at once when the
 * registration fails: its place in this process' table, and the directory's holder file.
 */
class Claims {
  #store: ExpiringFileStore | undefined

  constructor(readonly releaseStore: () => void) {}

  /** The built-in store, whose directory claim goes with the rest. */
  opened(store: ExpiringFileStore | undefined): void {
    this.#store = store
  }

  async release(): Promise<void> {
    try {
      await this.#store?.close()
    } finally {
      this.releaseStore()
    }
  }
}

/** Everything the registration builds once its store is its own; `claims` go in onClose. */
async function serve(
  fastify: FastifyInstance,
  options: ResolvedOptions,
  endpoint: string,
  claims: Claims,
) {
  const { namespace } = options
  // A user's S3Store gets the plugin's expiry instead of its own (s3/store.ts).
  const s3 = options.datastore ? asS3Store(options.datastore) : undefined
  if (s3 && options.redis) assertSharedCache(s3)
  const log = fastify.log.child({
    plugin: 'fastify-tus',
    ...(namespace !== undefined && { namespace }),
    endpoint,
  }) as ScheduleLogger
  // Metrics label each registration by its namespace, or else its path.
  const metrics = options.metrics
    ? await TusMetrics.create(options.metrics, namespace ?? endpoint, options.redis !== undefined)
    : undefined

  // The store and its sweep.
  const { locker, redisLocker } = await buildLocker(options, log, metrics)
  const downtime = await downtimeBefore(options, log)
  const closeMarker = new CloseMarker(tracksDowntime(options) ? options.directory : undefined, log)
  const store = options.datastore
    ? undefined
    : await ExpiringFileStore.open({
        directory: options.directory,
        expireAfterMs: options.expireAfterMs,
        partialHoldMs: options.partialHoldMs,
        locker,
        idPattern: options.idPattern,
        downtime,
        holdsLock: (id) => locker.holds(id),
        minFreeBytes: options.minFreeBytes,
        maxStoreBytes: options.maxStoreBytes,
        // Another process on the directory must share Redis with this one, or it is refused.
        holder: {
          description: describeEndpoint(endpoint, namespace),
          redisPrefix: options.redis?.prefix,
        },
        // With Redis the fleet shares one total (store/quota.ts).
        quotaCounter: options.redis
          ? new RedisQuotaCounter(options.redis.client, options.redis.prefix)
          : undefined,
      })
  claims.opened(store)
  const datastore: DataStore = options.datastore ?? (store as ExpiringFileStore)
  // With a quota and one instance, the startup sweep is the count the quota starts from.
  const countBySweep =
    store?.quota !== undefined &&
    !options.redis &&
    options.cleanupOnStart &&
    options.expireAfterMs > 0
  const schedule = buildSchedule(
    options,
    datastore,
    store,
    log,
    metrics,
    !countBySweep,
    s3 && { s3, locker },
  )
  const s3Expiry =
    s3 &&
    adoptS3Store(s3, options.expireAfterMs, () => schedule.run().then((report) => report.removed))
  if (store?.space || store?.quota) {
    emergencySweeps(store, schedule, log, metrics)
    if (store.space) metrics?.watchSpace(store.space)
  }
  if (store?.quota) {
    metrics?.watchQuota(store.quota)
    // Counted before the routes serve: at once when the fleet's total exists in Redis.
    if (countBySweep) await schedule.run()
    else if (!options.redis) await store.quota.ensureCounted()
    else {
      // As the locks do, the plugin starts while Redis is down: the first request that needs
      // the quota counts then (and answers 503 while Redis stays down).
      await store.quota.ensureCounted().catch((err: unknown) => {
        log.warn({ err }, 'fastify-tus: could not reach Redis for the store quota at startup')
      })
    }
  }

  // What the routes may ask of the store (the lead's UploadBackend replaces this).
  const backend = {
    ...(store ? fileCapabilities(store) : {}),
    datastore,
    answers: store ?? s3Expiry,
  }

  // The tus server and its routes.
  /** When close() began: from then on, clients cannot start new work here. */
  let closingAt: number | undefined
  let tus: Server | undefined
  // Routes live in a child context (their body parser must not leak into the app); its prefix
  // is the full one, parents' included, which tus needs to build `Location`.
  await fastify.register(
    async (child) => {
      const created = createTusServer({
        tus: options.tus,
        path: `${child.prefix}${options.path}`,
        backend,
        locker,
      })
      tus = created.tus
      await tusRoutes(child, {
        path: options.path,
        tus,
        backend,
        fileIdOf: created.fileIdOf,
        isClosing: () => closingAt !== undefined,
        serving: () => closeMarker.serving(),
        metrics,
      })
    },
    { prefix: options.prefix },
  )
  const server = tus as Server
  routeCleanUpThroughSchedule(server, datastore, schedule)
  if (metrics) {
    server.on(EVENTS.POST_FINISH, () => metrics.uploadFinished())
    server.on(EVENTS.POST_TERMINATE, () => metrics.uploadTerminated())
  }

  const tusCleanup: TusCleanupDecorator = {
    run: (runOptions) => schedule.run(runOptions),
    get last() {
      return schedule.last
    },
  }
  decorate(fastify, namespace, endpoint, { tus: server, tusCleanup })

  fastify.addHook('onReady', async () => {
    // The downtime ends when the server is ready to serve again, not when it was registered.
    if (downtime) downtime.toMs = Math.max(downtime.toMs, Date.now())
    schedule.start()
  })
  fastify.addHook('onListen', async () => closeMarker.serving())
  fastify.addHook('preClose', async () => {
    closingAt = Date.now()
  })
  fastify.addHook('onClose', async () => {
    try {
      await schedule.stop()
      // Partials a final took over are still being removed, under their (maybe Redis) locks.
      await store?.settled()
      s3Expiry?.restore()
      await redisLocker?.close()
      await closeMarker.closed(closingAt ?? Date.now())
    } finally {
      // Another registration (a new app in tests, another process) may serve the store now.
      await claims.release()
    }
  })
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

/**
 * One server on its directory gives idle uploads back the time it was down (a restart). With
 * Redis the other instances serve meanwhile, so there is nothing to give back.
 */
function tracksDowntime(options: ResolvedOptions): boolean {
  return !options.datastore && !options.redis && options.expireAfterMs > 0
}

async function downtimeBefore(
  options: ResolvedOptions,
  log: ScheduleLogger,
): Promise<Downtime | undefined> {
  if (!tracksDowntime(options)) return undefined
  const downtime = await readDowntime(options.directory)
  if (downtime) {
    log.info(
      { downtimeMs: downtime.toMs - downtime.fromMs },
      'fastify-tus: idle uploads get back the time the server was down',
    )
  }
  return downtime
}

/**
 * The sweep on its schedule: the built-in store's own sweep, the plugin's sweep of an S3Store's
 * bucket, or a user datastore's `deleteExpired()`; with Redis, one instance sweeps per interval.
 */
function buildSchedule(
  options: ResolvedOptions,
  datastore: DataStore,
  store: ExpiringFileStore | undefined,
  log: ScheduleLogger,
  metrics: TusMetrics | undefined,
  /** False when the startup sweep already ran (it counted the store for the quota). */
  sweepOnReady: boolean,
  s3: { s3: S3StoreLike; locker: ActivityLocker } | undefined,
): SweepSchedule {
  const { redis } = options
  return new SweepSchedule({
    sweep: store
      ? ({ dryRun, signal, log }) => store.sweep({ dryRun, signal, log })
      : s3
        ? s3Sweep(s3.s3, { ...options, locker: s3.locker })
        : ({ dryRun }) => sweepDatastore(datastore, dryRun),
    log,
    intervalMs: options.cleanupIntervalMs,
    runOnStart: options.cleanupOnStart && sweepOnReady,
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
      options.expireAfterMs === 0
        ? 'expireAfterMs is 0'
        : store || s3
          ? undefined
          : datastoreSweepOffReason(datastore),
  })
}

/**
 * Free space below the floor, or a store at its quota, starts a sweep at once (one at a time, at
 * most every `EMERGENCY_EVERY_MS`), by the same rules and locks as the scheduled ones, logged at
 * `warn` with the free space and the quota.
 */
function emergencySweeps(
  store: ExpiringFileStore,
  schedule: SweepSchedule,
  log: ScheduleLogger,
  metrics: TusMetrics | undefined,
): void {
  const { space, quota } = store
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
    const read = space
      ? space.freeBytes()
      : fsp.statfs(store.directory).then((stats) => stats.bavail * stats.bsize)
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
