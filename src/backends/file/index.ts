/**
 * The built-in store as a backend: a directory served by `ExpiringFileStore`, with what only a
 * directory has: the downtime a restart gives back to idle uploads (downtime.ts), the free-space
 * floor and the quota, counted before the routes serve.
 */
import fsp from 'node:fs/promises'
import path from 'node:path'
import type { Downtime } from '../../expiry/policy.js'
import type { ResolvedOptions } from '../../options/index.js'
import type { BackendLogger, BackendSetup, StoreIdentity, UploadBackend } from '../backend.js'
import { fileCapabilities } from './capabilities.js'
import { fileDownloads } from './download.js'
import { CloseMarker, readDowntime } from './downtime.js'
import { ExpiringFileStore } from './file-store.js'
import { FileFinishRecords } from './finish-records.js'
import { RedisQuotaCounter, type StoreQuota } from './quota.js'
import { releaseUpload } from './removal.js'

export async function openFileBackend(setup: BackendSetup): Promise<UploadBackend> {
  const { options, log } = setup
  const tracksDowntime = !options.redis && options.expireAfterMs > 0
  const downtime = tracksDowntime ? await downtimeBefore(options.directory, log) : undefined
  const store = await openStore(setup, downtime)
  const closeMarker = new CloseMarker(tracksDowntime ? options.directory : undefined, log)
  const { quota, space } = store
  // With a quota and one instance, the startup sweep is the count the quota starts from.
  const countBySweep =
    quota !== undefined && !options.redis && options.cleanupOnStart && options.expireAfterMs > 0
  return {
    ...fileCapabilities(store),
    description: `directory ${options.directory}`,
    datastore: store,
    sweep: { run: ({ dryRun, signal, log }) => store.sweep({ dryRun, signal, log }) },
    answers: store,
    downloads: fileDownloads(store),
    space,
    quota,
    finishes: new FileFinishRecords(store.directory),
    async start(sweepNow) {
      if (!quota) return undefined
      if (countBySweep) {
        await sweepNow()
        return { swept: true }
      }
      if (!options.redis) await countSharedTotal(quota, log)
      else {
        // As the locks do, the plugin starts while Redis is down: the first request that needs
        // the quota counts then (and answers 503 while Redis stays down).
        await countSharedTotal(quota, log).catch((err: unknown) => {
          log.warn({ err }, 'fastify-tus: could not reach Redis for the store quota at startup')
        })
      }
      return undefined
    },
    released: (id) => releaseUpload(store, id),
    ready() {
      // The downtime ends when the server is ready to serve again, not when it was registered.
      if (downtime) downtime.toMs = Math.max(downtime.toMs, Date.now())
    },
    serving: () => closeMarker.serving(),
    freeBytes: () =>
      space
        ? space.freeBytes()
        : fsp.statfs(store.directory).then((stats) => stats.bavail * stats.bsize),
    settled: () => store.settled(),
    async close(closedAt) {
      try {
        if (closedAt !== undefined) await closeMarker.closed(closedAt)
      } finally {
        await store.close()
      }
    },
  }
}

/**
 * The total counted at this instance's start; with Redis, the fleet's, lowered to what the
 * directory holds when it says more (a fleet restarted on a directory emptied meanwhile: logged).
 */
async function countSharedTotal(quota: StoreQuota, log: BackendLogger): Promise<void> {
  const { before, total } = await quota.countAtStart()
  if (before !== undefined && total < before) {
    log.info(
      { storeBytes: total, previousStoreBytes: before, maxStoreBytes: quota.maxStoreBytes },
      'fastify-tus: the shared store quota total was larger than what the directory holds: recounted',
    )
  }
}

function openStore(setup: BackendSetup, downtime: Downtime | undefined) {
  const { options, locker } = setup
  return ExpiringFileStore.open({
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
    holder: { description: setup.holder, redisPrefix: options.redis?.prefix },
    // With Redis the fleet shares one total (quota.ts).
    quotaCounter: options.redis
      ? new RedisQuotaCounter(options.redis.client, options.redis.prefix)
      : undefined,
  })
}

/**
 * One server on its directory gives idle uploads back the time it was down (a restart). With
 * Redis the other instances serve meanwhile, so there is nothing to give back.
 */
async function downtimeBefore(
  directory: string,
  log: BackendLogger,
): Promise<Downtime | undefined> {
  const downtime = await readDowntime(directory)
  if (downtime) {
    log.info(
      { downtimeMs: downtime.toMs - downtime.fromMs },
      'fastify-tus: idle uploads get back the time the server was down',
    )
  }
  return downtime
}

/** A directory is known by its real path, so that two spellings of one directory are one store. */
export async function directoryIdentity(options: ResolvedOptions): Promise<StoreIdentity> {
  const key = await realDirectory(options.directory)
  return { key, name: `directory ${key}`, noun: 'directory' }
}

/**
 * The directory's real path (links resolved), also when it does not exist yet: its nearest
 * existing parent's real path and the rest.
 */
async function realDirectory(directory: string): Promise<string> {
  const absolute = path.resolve(directory)
  try {
    return await fsp.realpath(absolute)
  } catch (error) {
    const parent = path.dirname(absolute)
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || parent === absolute) return absolute
    return path.join(await realDirectory(parent), path.basename(absolute))
  }
}
