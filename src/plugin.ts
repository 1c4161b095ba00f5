/**
 * The Fastify wiring: options → store → tus server → routes in a child context → decorators →
 * the sweep's schedule in `onReady`/`onClose`.
 */
import { MemoryLocker, Server } from '@tus/server'
import type { DataStore } from '@tus/utils'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { uploadIdFromPath } from './http/protocol.js'
import { tusRoutes } from './http/routes.js'
import { installDirectWrite } from './http/write-path.js'
import { type FastifyTusOptions, resolveOptions } from './options.js'
import { RedisSweepLease } from './redis/lease.js'
import { RedisLocker } from './redis/locker.js'
import { recordClose, takeDowntime } from './store/downtime.js'
import { ExpiringFileStore } from './store/file-store.js'
import { ActivityLocker } from './sweep/activity-locker.js'
import { datastoreSweepOffReason, sweepDatastore } from './sweep/datastore-sweep.js'
import { type CleanupLogger, TusCleanup, type TusCleanupDecorator } from './sweep/schedule.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The @tus/server `Server` behind the routes. */
    tus: Server
    /** Run a sweep now, read the last report. */
    tusCleanup: TusCleanupDecorator
  }
}

async function fastifyTusPlugin(fastify: FastifyInstance, rawOptions: FastifyTusOptions) {
  const options = resolveOptions(rawOptions)
  const log = fastify.log.child({ plugin: 'fastify-tus' }) as CleanupLogger
  // With Redis, uploads are locked fleet-wide, and one instance sweeps per interval.
  const redis = options.redis
  const redisLocker = redis
    ? new RedisLocker({
        ...redis,
        onError: (err) => log.warn({ err }, 'fastify-tus: Redis subscription connection error'),
      })
    : undefined
  const locker = new ActivityLocker(redisLocker ?? (await options.tus.locker) ?? new MemoryLocker())

  // One server on its directory gives idle uploads back the time it was down (a restart). With
  // Redis the other instances serve meanwhile, so there is nothing to give back.
  const tracksDowntime = !options.datastore && !redis && options.expireAfterMs > 0
  const downtime = tracksDowntime ? await takeDowntime(options.directory) : undefined
  if (downtime) {
    log.info(
      { downtimeMs: downtime.toMs - downtime.fromMs },
      'fastify-tus: idle uploads get back the time the server was down',
    )
  }

  // Without a user datastore: the built-in file store, whose sweep is the plugin's own.
  const store = options.datastore
    ? undefined
    : await ExpiringFileStore.open({
        directory: options.directory,
        expireAfterMs: options.expireAfterMs,
        locker,
        idPattern: options.idPattern,
        downtime,
        // server.cleanUpExpiredUploads() joins the plugin's sweep instead of racing it.
        sweepRunner: () => cleanup.run(),
      })
  const datastore: DataStore = options.datastore ?? (store as ExpiringFileStore)

  const cleanup = new TusCleanup({
    sweep: store
      ? ({ dryRun, signal, log }) => store.sweep({ dryRun, signal, log })
      : ({ dryRun }) => sweepDatastore(datastore, dryRun),
    log,
    intervalMs: options.cleanupIntervalMs,
    runOnStart: options.cleanupOnStart,
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
        : store
          ? undefined
          : datastoreSweepOffReason(datastore),
  })

  // Routes live in a child context (their body parser must not leak into the app); its prefix
  // is the full one, parents' included, which tus needs to build `Location`.
  let tus: Server | undefined
  /** When close() began: from then on, clients cannot start new work here. */
  let closingAt: number | undefined
  await fastify.register(
    async (child) => {
      const path = `${child.prefix}${options.path}`
      const userIdOf = options.tus.getFileIdFromRequest
      const userOnCreate = options.tus.onUploadCreate
      tus = new Server({
        ...options.tus,
        path,
        datastore,
        locker,
        // The id of an upload URL ignores its query string (`/files/<id>?token=...`).
        getFileIdFromRequest: (req) => {
          const id = uploadIdFromPath(new URL(req.url).pathname, path)
          return userIdOf ? userIdOf(req, id) : id
        },
        // HEAD answers Upload-Metadata as sent, unless the user's hook replaced the metadata.
        onUploadCreate: store
          ? async (req, upload) => {
              const patch = userOnCreate ? await userOnCreate(req, upload) : {}
              if (!patch?.metadata) {
                ExpiringFileStore.rememberRawMetadata(upload, req.headers.get('upload-metadata'))
              }
              return patch ?? {}
            }
          : userOnCreate,
        // Browsers may send and read the headers of the checksum and expiration extensions.
        allowedHeaders: [...(options.tus.allowedHeaders ?? []), 'Upload-Checksum'],
        exposedHeaders: [
          ...(options.tus.exposedHeaders ?? []),
          'Upload-Expires',
          'Tus-Checksum-Algorithm',
        ],
      })
      if (store) {
        // The direct write path: request bytes go straight into the data file.
        installDirectWrite(tus.handlers.PATCH)
        installDirectWrite(tus.handlers.POST)
      }
      await tusRoutes(child, {
        path: options.path,
        tus,
        store,
        isClosing: () => closingAt !== undefined,
      })
    },
    { prefix: options.prefix },
  )

  fastify.decorate('tus', tus as Server)
  fastify.decorate('tusCleanup', {
    run: (runOptions) => cleanup.run(runOptions),
    get last() {
      return cleanup.last
    },
  } satisfies TusCleanupDecorator)

  fastify.addHook('onReady', async () => {
    // The downtime ends when the server is ready to serve again, not when it was registered.
    if (downtime) downtime.toMs = Math.max(downtime.toMs, Date.now())
    cleanup.start()
  })
  fastify.addHook('preClose', async () => {
    closingAt = Date.now()
  })
  fastify.addHook('onClose', async () => {
    await cleanup.stop()
    await redisLocker?.close()
    if (tracksDowntime) {
      await recordClose(options.directory, closingAt ?? Date.now()).catch((error: unknown) => {
        log.warn(
          { err: error },
          'fastify-tus could not record its close; a restart will not give idle uploads their downtime back',
        )
      })
    }
  })
}

export const fastifyTus = fp(fastifyTusPlugin, { fastify: '5.x', name: 'fastify-tus' })
