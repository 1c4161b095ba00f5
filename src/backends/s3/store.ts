/**
 * A user's @tus/s3-store `S3Store` passed as `datastore`: recognised and checked through the
 * seam (tus-internals.ts; no import of @tus/s3-store, an optional peer dependency), and given the
 * plugin's expiry instead of its own.
 *
 * What changes on that store object while the plugin serves (`S3ActivityExpiry.adopt`):
 * - `deleteExpired()` (creation-based, no lock: it aborts uploads mid-PATCH) runs the plugin's
 *   sweep instead (s3/sweep.ts), through the plugin's schedule, so calls never overlap;
 * - `getExpiration()` answers 0 to tus' handlers, whose check counts from creation (they would
 *   answer 410 to an upload still receiving data); the store's own `expirationPeriodInMilliseconds`
 *   is left as it is, since it is what makes S3Store tag `.info` objects `Tus-Completed`;
 * - `getUpload()` answers 410 for an unfinished upload idle longer than `expireAfterMs` (by the
 *   sweep's clock: the latest of creation, parts, `.part` and `.info` as S3 dates them), never
 *   for a finished one; answers carry `Upload-Expires` from the same clock (`describe`).
 */
import { type DataStore, ERRORS, MemoryKvStore, type Upload } from '@tus/utils'
import { S3CacheError } from '../../errors.js'
import { expiresAt, isExpired, isFinished } from '../../expiry/policy.js'
import type { SweepLocker } from '../../locking/activity-locker.js'
import type { SweepFunction } from '../../sweep/schedule.js'
import { type S3StoreInternals, s3StoreInternals } from '../../tus-internals.js'
import type { UploadDescriber, UploadFacts } from '../backend.js'
import { LastRead } from '../last-read.js'
import { headIfPresent, INFO, PART, partsOf, type S3SweepClient } from './client.js'
import { sweepS3Bucket } from './sweep.js'

/** What the plugin uses of an S3Store: its public API, and its members the seam checked. */
export type S3StoreLike = S3StoreInternals<S3SweepClient>

/**
 * The store as the plugin reaches an S3Store, if it is one (tus-internals.ts `isS3Store`);
 * `undefined` for any other datastore, which keeps its own `deleteExpired()`. Throws
 * `IncompatibleTusError` (FST_TUS_INCOMPATIBLE) for an S3Store that lacks a part the plugin
 * relies on, naming each, rather than leave it on its own creation-based sweep.
 */
export function asS3Store(store: DataStore): S3StoreLike | undefined {
  return s3StoreInternals<S3SweepClient>(store)
}

/**
 * With several instances (`redis`), an S3Store must not cache upload records in one process's
 * memory: S3Store's default, `MemoryKvStore` (of any copy of @tus/utils).
 */
export function assertSharedCache(store: S3StoreLike): void {
  const { cache } = store
  if (cache instanceof MemoryKvStore || cache?.constructor?.name === 'MemoryKvStore') {
    throw new S3CacheError()
  }
}

export interface S3ExpiryOptions {
  expireAfterMs: number
  idPattern: RegExp
  locker: SweepLocker
}

/** The sweep of the store's bucket, for the plugin's schedule. */
export function s3Sweep(store: S3StoreLike, options: S3ExpiryOptions): SweepFunction {
  return ({ dryRun, signal, log }) =>
    sweepS3Bucket({
      client: store.client,
      bucket: store.bucket,
      expireAfterMs: options.expireAfterMs,
      idPattern: options.idPattern,
      locker: options.locker,
      // After a removal, S3Store's cached record would make the upload look finished.
      forget: (id) => store.forget(id),
      dryRun,
      signal,
      log,
    })
}

/** The methods the plugin replaces on the store object while it serves. */
const TAKEN_OVER = ['getExpiration', 'deleteExpired', 'getUpload'] as const

/** An S3Store's expiry by activity, as the plugin applies it to requests and answers. */
export class S3ActivityExpiry implements UploadDescriber {
  /** The activity a `getUpload` just read, for the HEAD answer that follows it. */
  readonly #lastRead = new LastRead<number | undefined>()
  /** The store's own `getUpload`, for reads that must not answer 410. */
  readonly #ownGetUpload: DataStore['getUpload']
  /** The store object's own properties among `TAKEN_OVER` before `adopt` (to restore). */
  #own: PropertyDescriptorMap | undefined

  constructor(
    readonly s3: S3StoreLike,
    readonly expireAfterMs: number,
  ) {
    const { store } = s3
    this.#ownGetUpload = store.getUpload.bind(store)
  }

  /**
   * Takes over the store's expiry: tus' creation-based checks off, `getUpload` answering 410 by
   * activity, `deleteExpired()` running `runSweep` (the plugin's schedule).
   */
  adopt(runSweep: () => Promise<number>): void {
    const { store } = this.s3
    this.#own = Object.getOwnPropertyDescriptors(store)
    store.getExpiration = () => 0
    store.deleteExpired = runSweep
    store.getUpload = (id) => this.#getUpload(id)
  }

  /** Gives the store its own methods back. */
  restore(): void {
    const own = this.#own
    if (!own) return
    this.#own = undefined
    const store = this.s3.store as unknown as Record<string, unknown>
    for (const key of TAKEN_OVER) {
      const descriptor = own[key]
      if (descriptor) Object.defineProperty(store, key, descriptor)
      else delete store[key]
    }
  }

  async #getUpload(id: string): Promise<Upload> {
    const upload = await this.#ownGetUpload(id)
    const { expireAfterMs } = this
    if (expireAfterMs === 0 || isFinished(upload.size, upload.offset)) return upload
    // Fresh since its creation: no activity can make it expired, and no request is needed.
    const created = Date.parse(upload.creation_date ?? '')
    const fresh = Number.isFinite(created) && !isExpired(created, expireAfterMs, Date.now())
    const activity = fresh ? undefined : await lastActivityOf(this.s3, id)
    if (activity !== undefined && isExpired(activity, expireAfterMs, Date.now())) {
      throw ERRORS.FILE_NO_LONGER_EXISTS
    }
    this.#lastRead.keep(id, activity)
    return upload
  }

  /** What the answers about an upload state (`Upload-Expires`), as the file store's `describe`. */
  async describe(id: string, { afterRead = false } = {}): Promise<UploadFacts | undefined> {
    if (this.expireAfterMs === 0) return undefined
    let activity = afterRead ? this.#lastRead.take(id) : undefined
    if (activity === undefined) {
      const upload = await this.#ownGetUpload(id).catch(() => undefined)
      if (!upload || isFinished(upload.size, upload.offset)) return undefined
      activity = await lastActivityOf(this.s3, id).catch(() => undefined)
    }
    if (activity === undefined) return undefined
    return { expiresAt: new Date(expiresAt(activity, this.expireAfterMs)), rawMetadata: undefined }
  }
}

/**
 * An unfinished upload's last activity by the sweep's clock: the latest of its creation, its
 * parts, its `.part` and its `.info` as S3 dates them; `undefined` when its multipart upload is
 * gone (finished, or removed).
 */
async function lastActivityOf(s3: S3StoreLike, id: string): Promise<number | undefined> {
  const { client, bucket } = s3
  const { uploadId, upload } = await s3.record(id)
  const parts = await partsOf(client, bucket, id, uploadId)
  if (!parts) return undefined
  let last = Math.max(Date.parse(upload.creation_date ?? '') || 0, parts.lastModifiedMs)
  for (const key of [id + PART, id + INFO]) {
    const head = await headIfPresent(client, bucket, key)
    last = Math.max(last, head?.LastModified?.getTime() ?? 0)
  }
  return last
}
