/**
 * The sweep for @tus/s3-store's layout in a bucket: removes expired unfinished uploads and the
 * halves of uploads that lost the rest, by the same rules as the file store's sweep
 * (file/sweep-engine.ts). No Fastify in here, and no import of the AWS SDK: it is given an S3
 * client (the aggregated `S3` of @aws-sdk/client-s3, the one S3Store keeps) and calls its
 * methods (client.ts).
 *
 * S3Store keeps, for an upload `<id>`: a multipart upload on key `<id>` (its parts are the bytes
 * so far), `<id>.info` (the record: the upload, and the multipart upload's id in the object's
 * metadata), and while fewer bytes than a part wait, `<id>.part`. A finished upload is the
 * object `<id>` (the completed multipart upload) next to its `.info`, tagged `Tus-Completed=true`
 * when the store's expiration period is set.
 *
 * Two passes, each paging through a listing (one page at a time, a bounded number of uploads
 * examined at once):
 * 1. multipart uploads: one initiated within the period is fresh (no further request). Else its
 *    last activity is the latest of its initiation, its parts' `LastModified`, its `.part`'s and
 *    its `.info`'s; expired, it is removed under the upload's lock after a second look taken
 *    under that lock: `.info`, `.part`, then the multipart upload aborted. A multipart upload
 *    whose `.info` is missing (or names another multipart upload) is an orphan: aborted.
 * 2. objects `<id>.part` and `<id>.info` whose upload has no multipart upload any more, older
 *    than the period: a `.part` is an orphan; a `.info` is one only when it is tagged
 *    `Tus-Completed=false` and no object `<id>` exists (a finished upload's `.info` stays, and an
 *    untagged one might be a finished upload whose object the application moved: it stays too).
 * Only names matching `idPattern` are ever removed; the object `<id>` (a finished upload) and
 * every other object of the bucket are never touched.
 */
import { isExpired } from '../../expiry/policy.js'
import type { SweepLocker } from '../../locking/activity-locker.js'
import { newReport, type SweepLogger, type SweepReport } from '../../sweep/report.js'
import { headIfPresent, INFO, isNotFound, PART, partsOf, type S3SweepClient } from './client.js'

export type { S3SweepClient } from './client.js'

export interface S3SweepOptions {
  client: S3SweepClient
  bucket: string
  /** An unfinished upload with no activity for this long expires. 0: nothing expires. */
  expireAfterMs: number
  /** Report what would be removed; remove nothing. */
  dryRun?: boolean
  /** Stops the sweep between uploads; removals under way finish first. */
  signal?: AbortSignal
  /** Uploads examined at once (each makes a few requests, one after the other). Default 8. */
  concurrency?: number
  /** Listing page size (S3's maximum is 1000). Default 1000. */
  pageSize?: number
  /** Which keys are upload ids. Default: 32 hex digits (@tus/utils' `Uid.rand`). */
  idPattern?: RegExp
  /** The tus server's locker; without one (offline use) removals take no lock. */
  locker?: SweepLocker
  /** Called under the lock after an upload's objects are gone (S3Store's cache entry goes). */
  forget?: (id: string) => Promise<void> | void
  /** How many removed ids the report lists. Default 1000. */
  maxReportedIds?: number
  log?: SweepLogger
  now?: () => number
  onRemove?: (removal: S3Removal) => void
}

export interface S3Removal {
  id: string
  /**
   * `upload`: an expired unfinished upload; `orphan-multipart`: a multipart upload without its
   * `.info`; `orphan-data`: a `.part` without its multipart upload; `orphan-metadata`: a `.info`
   * of an unfinished upload without its multipart upload.
   */
  kind: 'upload' | 'orphan-multipart' | 'orphan-data' | 'orphan-metadata'
  /** Bytes S3 reported for what was removed (parts, `.part`, `.info`). */
  bytes: number
  lastActivity: Date
}

const DEFAULT_ID_PATTERN = /^[0-9a-f]{32}$/

/** Sweeps the bucket once. Rejects only when a listing itself fails. */
export async function sweepS3Bucket(options: S3SweepOptions): Promise<SweepReport> {
  return new S3Sweep(options).run()
}

interface Found {
  bytes: number
  lastActivityMs: number
}

class S3Sweep {
  readonly report: SweepReport
  readonly started = performance.now()
  readonly now: () => number
  readonly idPattern: RegExp
  readonly maxIds: number
  readonly concurrency: number
  readonly pageSize: number

  constructor(readonly options: S3SweepOptions) {
    this.report = newReport(options.dryRun === true)
    this.now = options.now ?? Date.now
    const pattern = options.idPattern ?? DEFAULT_ID_PATTERN
    this.idPattern = new RegExp(`^(?:${pattern.source})$`, pattern.flags.replace(/[gy]/g, ''))
    this.maxIds = options.maxReportedIds ?? 1000
    this.concurrency = Math.max(1, options.concurrency ?? 8)
    this.pageSize = Math.min(1000, Math.max(1, options.pageSize ?? 1000))
  }

  get bucket(): string {
    return this.options.bucket
  }

  get client(): S3SweepClient {
    return this.options.client
  }

  get aborted(): boolean {
    return this.options.signal?.aborted === true
  }

  expired(lastActivityMs: number): boolean {
    return isExpired(lastActivityMs, this.options.expireAfterMs, this.now())
  }

  async run(): Promise<SweepReport> {
    if (this.options.expireAfterMs > 0) {
      await this.multipartPass()
      await this.objectPass()
    }
    this.report.aborted = this.aborted
    this.report.durationMs = Math.round(performance.now() - this.started)
    return this.report
  }

  // Pass 1: the multipart uploads.

  async multipartPass(): Promise<void> {
    let KeyMarker: string | undefined
    let UploadIdMarker: string | undefined
    do {
      if (this.aborted) return
      const page = await this.client.listMultipartUploads({
        Bucket: this.bucket,
        KeyMarker,
        UploadIdMarker,
        MaxUploads: this.pageSize,
      })
      await this.bounded(page.Uploads ?? [], (upload) => this.visitMultipart(upload))
      if (!page.IsTruncated) return
      KeyMarker = page.NextKeyMarker
      UploadIdMarker = page.NextUploadIdMarker
    } while (KeyMarker !== undefined)
  }

  async visitMultipart({
    Key: id,
    UploadId: uploadId,
    Initiated,
  }: {
    Key?: string
    UploadId?: string
    Initiated?: Date
  }): Promise<void> {
    if (id === undefined || uploadId === undefined || Initiated === undefined) return
    this.report.scanned++
    // Most uploads are fresh: the listing alone decides.
    if (!this.expired(Initiated.getTime())) return
    if (!this.idPattern.test(id)) return // not a tus upload's name: never ours to touch
    try {
      const info = await this.headIfPresent(id + INFO)
      const kind: S3Removal['kind'] =
        info?.Metadata?.['upload-id'] === uploadId ? 'upload' : 'orphan-multipart'
      const found = await this.lookMultipart(id, uploadId, Initiated, kind)
      if (found) await this.remove(id, kind, found, { uploadId, initiated: Initiated })
    } catch (error) {
      this.fail(id, error, 'sweep entry failed')
    }
  }

  /**
   * An upload's state now, if it still qualifies for removal as `kind`: its bytes and last
   * activity (the latest of its initiation, parts, `.part` and `.info`). `undefined` when the
   * multipart upload is gone, when `.info` no longer says what `kind` assumed, or when it is not
   * expired.
   */
  async lookMultipart(
    id: string,
    uploadId: string,
    initiated: Date,
    kind: S3Removal['kind'],
  ): Promise<Found | undefined> {
    const parts = await this.partsOf(id, uploadId)
    if (!parts) return undefined
    let bytes = parts.bytes
    let last = Math.max(initiated.getTime(), parts.lastModifiedMs)
    if (kind === 'upload') {
      const info = await this.headIfPresent(id + INFO)
      if (info?.Metadata?.['upload-id'] !== uploadId) return undefined
      const part = await this.headIfPresent(id + PART)
      // All of its bytes are there (a 0-byte upload, whose multipart upload tus never
      // completes; or a crash before CompleteMultipartUpload): finished for tus, never removed.
      const size = await this.recordSize(id)
      if (size !== undefined && parts.bytes + (part?.ContentLength ?? 0) >= size) return undefined
      for (const object of [info, part]) {
        if (!object) continue
        bytes += object.ContentLength ?? 0
        last = Math.max(last, object.LastModified?.getTime() ?? 0)
      }
    } else {
      const info = await this.headIfPresent(id + INFO)
      if (info?.Metadata?.['upload-id'] === uploadId) return undefined // it has its record now
    }
    return this.expired(last) ? { bytes, lastActivityMs: last } : undefined
  }

  /** Whether the multipart upload is still there (one request, whatever its number of parts). */
  async multipartExists(id: string, uploadId: string): Promise<boolean> {
    try {
      await this.client.listParts({ Bucket: this.bucket, Key: id, UploadId: uploadId, MaxParts: 1 })
      return true
    } catch (error) {
      if (isNotFound(error)) return false
      throw error
    }
  }

  /** The sum of the parts' sizes and the latest part's time; `undefined` if the upload is gone. */
  partsOf(id: string, uploadId: string) {
    return partsOf(this.client, this.bucket, id, uploadId)
  }

  // Pass 2: `.part` and `.info` objects whose upload has no multipart upload any more.

  async objectPass(): Promise<void> {
    let ContinuationToken: string | undefined
    // The listing is in key order, `<id>` just before `<id>.info` and `<id>.part`: a finished
    // upload's object is in the same page as its `.info`, or ends the page before.
    let previousLast: string | undefined
    do {
      if (this.aborted) return
      const page = await this.client.listObjectsV2({
        Bucket: this.bucket,
        ContinuationToken,
        MaxKeys: this.pageSize,
      })
      const contents = page.Contents ?? []
      const keys = new Set(contents.map((object) => object.Key))
      if (previousLast !== undefined) keys.add(previousLast)
      await this.bounded(contents, (object) => this.visitObject(object, keys))
      previousLast = contents.at(-1)?.Key
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined
    } while (ContinuationToken !== undefined)
  }

  async visitObject(
    { Key: key, LastModified }: { Key?: string; LastModified?: Date },
    listed: Set<string | undefined>,
  ) {
    if (key === undefined || LastModified === undefined) return
    const suffix = key.endsWith(INFO) ? INFO : key.endsWith(PART) ? PART : undefined
    if (suffix === undefined) return // an upload's object, or not a tus object at all
    const id = key.slice(0, -suffix.length)
    if (!this.idPattern.test(id)) return
    // A finished upload (its object is listed next to it): no request at all.
    if (listed.has(id)) return
    // Fresh: the listing alone decides (an upload with a multipart upload is pass 1's).
    if (!this.expired(LastModified.getTime())) return
    try {
      const kind = suffix === PART ? 'orphan-data' : 'orphan-metadata'
      const found = await this.lookOrphan(id, kind)
      if (found === 'live') return
      this.report.scanned++
      if (found) await this.remove(id, kind, found)
    } catch (error) {
      this.fail(key, error, 'sweep entry failed')
    }
  }

  /**
   * `live` when the upload still has its multipart upload (pass 1 decides about it); else the
   * orphan's bytes and time if it is one, expired; else `undefined` (a finished upload's record,
   * or one that may be: kept).
   */
  async lookOrphan(
    id: string,
    kind: 'orphan-data' | 'orphan-metadata',
  ): Promise<Found | 'live' | undefined> {
    const info = await this.headIfPresent(id + INFO)
    const uploadId = info?.Metadata?.['upload-id']
    if (uploadId !== undefined && (await this.multipartExists(id, uploadId))) return 'live'
    const object = kind === 'orphan-data' ? await this.headIfPresent(id + PART) : info
    if (!object) return undefined
    const lastActivityMs = object.LastModified?.getTime() ?? 0
    if (!this.expired(lastActivityMs)) return undefined
    if (kind === 'orphan-metadata') {
      // Only a record that says it is unfinished, of an upload with no object: a finished
      // upload's record stays, whatever became of its object.
      if ((await this.completedTag(id + INFO)) !== 'false') return undefined
      if (await this.headIfPresent(id)) return undefined
    }
    return { bytes: object.ContentLength ?? 0, lastActivityMs }
  }

  /**
   * The upload's declared length from its `.info` record (JSON: the tus `Upload`), or
   * `undefined` for a deferred length. Throws on a record that is not one: never removed on a
   * guess.
   */
  async recordSize(id: string): Promise<number | undefined> {
    const { Body } = await this.client.getObject({ Bucket: this.bucket, Key: id + INFO })
    const record: unknown = JSON.parse((await Body?.transformToString()) ?? '')
    if (typeof record !== 'object' || record === null) throw new TypeError('.info is not a record')
    const { size } = record as { size?: unknown }
    if (size === undefined || size === null) return undefined
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      throw new TypeError(`.info has an invalid size: ${JSON.stringify(size)}`)
    }
    return size
  }

  /** The `Tus-Completed` tag S3Store sets on `.info` (when its expiration period is set). */
  async completedTag(key: string): Promise<string | undefined> {
    try {
      const { TagSet } = await this.client.getObjectTagging({ Bucket: this.bucket, Key: key })
      return TagSet?.find((tag) => tag.Key === 'Tus-Completed')?.Value
    } catch (error) {
      if (isNotFound(error)) return undefined
      throw error
    }
  }

  // Removal, under the upload's lock.

  /** Removes one upload (or orphan) under its lock, after looking again under that lock. */
  async remove(
    id: string,
    kind: S3Removal['kind'],
    first: Found,
    multipart?: { uploadId: string; initiated: Date },
  ) {
    if (this.aborted) return
    if (this.report.dryRun) {
      this.count(id, kind, first)
      return
    }
    const { locker } = this.options
    const lock = locker ? await locker.tryLock(id) : undefined
    if (locker && !lock) {
      this.report.skippedBusy++
      return
    }
    try {
      const found = await this.lookAgain(id, kind, multipart)
      // Checked under the lock: once close() has begun, nothing more is deleted.
      if (!found || this.aborted) return
      if (kind === 'upload') {
        // The record first: whatever a failure leaves behind is then an orphan the next sweep
        // recognises (a multipart upload without `.info` is removed whatever the tags say).
        await this.deleteObject(id + INFO)
        await this.deleteObject(id + PART)
        await this.abort(id, multipart as { uploadId: string })
      } else if (kind === 'orphan-multipart') {
        await this.abort(id, multipart as { uploadId: string })
      } else {
        await this.deleteObject(id + (kind === 'orphan-data' ? PART : INFO))
      }
      if (kind !== 'orphan-data') await this.options.forget?.(id)
      this.count(id, kind, found)
    } finally {
      await lock?.unlock()
    }
  }

  async lookAgain(
    id: string,
    kind: S3Removal['kind'],
    multipart: { uploadId: string; initiated: Date } | undefined,
  ): Promise<Found | undefined> {
    if (multipart) return this.lookMultipart(id, multipart.uploadId, multipart.initiated, kind)
    if (kind !== 'orphan-data' && kind !== 'orphan-metadata') return undefined
    const found = await this.lookOrphan(id, kind)
    return found === 'live' ? undefined : found
  }

  async abort(id: string, { uploadId }: { uploadId: string }): Promise<void> {
    try {
      await this.client.abortMultipartUpload({ Bucket: this.bucket, Key: id, UploadId: uploadId })
    } catch (error) {
      if (!isNotFound(error)) throw error
    }
  }

  async deleteObject(key: string): Promise<void> {
    // DeleteObject of a missing key succeeds on S3: nothing to catch.
    await this.client.deleteObject({ Bucket: this.bucket, Key: key })
  }

  headIfPresent(key: string) {
    return headIfPresent(this.client, this.bucket, key)
  }

  count(id: string, kind: S3Removal['kind'], found: Found): void {
    const report = this.report
    report.removed++
    if (kind !== 'upload') report.orphans++
    report.bytesFreed += found.bytes
    if (report.ids.length < this.maxIds) report.ids.push(id)
    else report.idsTruncated = true
    this.options.onRemove?.({
      id,
      kind,
      bytes: found.bytes,
      lastActivity: new Date(found.lastActivityMs),
    })
  }

  fail(id: string, error: unknown, msg: string): void {
    this.report.errors++
    this.options.log?.warn({ id, err: error }, `fastify-tus sweep: ${msg}`)
  }

  /** `visit` over `items`, `concurrency` at a time; stops starting new ones once aborted. */
  async bounded<T>(items: T[], visit: (item: T) => Promise<void>): Promise<void> {
    let next = 0
    const worker = async () => {
      while (next < items.length && !this.aborted) {
        const item = items[next++] as T
        await visit(item)
      }
    }
    await Promise.all(Array.from({ length: Math.min(this.concurrency, items.length) }, worker))
  }
}
