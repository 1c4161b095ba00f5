/**
 * What takes uploads out of the built-in store: one upload's removal (a DELETE, a final taking
 * over its partials), the sweep over the whole directory (sweep-engine.ts) with the quota's
 * recount it allows, and the work a request leaves running after its answer (`Settling`), which
 * the sweep and the plugin's close wait for.
 */
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import { ERRORS, type Upload } from '@tus/utils'
import { countedBytes, type Downtime, TAKEN_BY, type UploadRecord } from '../../expiry/policy.js'
import type { SweepLocker } from '../../locking/activity-locker.js'
import type { SweepReport } from '../../sweep/report.js'
import type { DirectoryClaim } from './directory-holders.js'
import { recordNameOf } from './names.js'
import type { StoreQuota } from './quota.js'
import { type SweepOptions, sweepDirectory } from './sweep-engine.js'
import type { UploadFiles } from './upload-files.js'

export type StoreSweepOptions = Pick<SweepOptions, 'dryRun' | 'signal' | 'log' | 'concurrency'>

/** Work left running after an answer: the removal of the partials a final took over. */
export class Settling {
  readonly #work = new Set<Promise<void>>()

  /** Keeps `work` until it ends. */
  add(work: Promise<void>): void {
    this.#work.add(work)
    void work.finally(() => this.#work.delete(work))
  }

  /** Resolves once no work is left, work added meanwhile included. */
  async settled(): Promise<void> {
    while (this.#work.size > 0) await Promise.allSettled([...this.#work])
  }
}

/** What removing or releasing an upload needs of the store. */
type RemovableStore = UploadFiles & { readonly quota: StoreQuota | undefined }

/**
 * Removes the upload `id`: its data file and its record, only when the record is that upload's
 * (`<id>.json` naming `id`), never another file of the directory. A missing data file is
 * tolerated; both missing is a 404. `handedOn`: its bytes now count as another upload's (a
 * partial that a final took over), so the quota keeps counting them.
 */
export async function removeUpload(
  store: RemovableStore,
  id: string,
  handedOn: boolean,
): Promise<void> {
  const quota = store.quota
  // Only an upload is removed: without this, DELETE /files/<id>.json unlinked the metadata of
  // upload <id>, and DELETE /files/<name> any other file of the directory.
  const record = (await store.configstore.get(id)) as Partial<Upload> | undefined
  if (record?.id !== id) throw ERRORS.FILE_NOT_FOUND
  const data = store.dataPathOf(id)
  // What the upload counts against the quota (a record alone counts its declared length).
  const counted =
    quota && !handedOn
      ? await fsp.lstat(data).then(
          (stats) => countedBytes(record.size, stats.size),
          () => countedBytes(record.size, 0),
        )
      : 0
  const results = await Promise.allSettled([fsp.unlink(data), fsp.unlink(recordNameOf(data))])
  const failures = results.flatMap((r) => (r.status === 'rejected' ? [r.reason] : []))
  const missing = failures.filter((e) => (e as NodeJS.ErrnoException).code === 'ENOENT')
  if (missing.length === results.length) throw ERRORS.FILE_NOT_FOUND
  // The upload stops counting when its record goes with no data file left (the sweep's count:
  // sweep-engine.ts `tallyKept`): only the call that unlinked the record gives its bytes back,
  // so a release racing this removal cannot give them back twice. A failure leaves the bytes
  // counted: the next sweep's recount corrects the total.
  const [dataUnlink, recordUnlink] = results as [
    PromiseSettledResult<void>,
    PromiseSettledResult<void>,
  ]
  const dataGone = dataUnlink.status === 'fulfilled' || missing.includes(dataUnlink.reason)
  if (recordUnlink.status === 'fulfilled' && dataGone && counted > 0) {
    await quota?.add(-counted).catch(() => {})
  }
  const other = failures.find((e) => !missing.includes(e))
  if (other) throw other
}

/**
 * The app moved or removed the data file of upload `id` itself: its record goes (only when it
 * is that upload's own, and not a partial's that a final took over, counted as the final's) and
 * its counted bytes leave the quota now. Resolves to the bytes released: 0 when the data file is
 * still there, when there is nothing left to release (a second call, a record removed by the
 * app too: then the next sweep's recount releases the bytes), or without a quota. Takes no lock:
 * unlinking the record is the one step that releases, so two calls (or a DELETE) release once.
 */
export async function releaseUpload(store: RemovableStore, id: string): Promise<number> {
  const data = store.dataPathOf(id)
  // Synchronous: after every successful onUploadFinish, a look that finds the data there.
  if (isPresent(data)) return 0
  const record = (await store.configstore.get(id)) as (Upload & UploadRecord) | undefined
  if (record?.id !== id || record[TAKEN_BY] !== undefined) return 0
  try {
    await fsp.unlink(recordNameOf(data))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0
    throw error
  }
  const counted = store.quota ? countedBytes(record.size, 0) : 0
  if (counted === 0) return 0
  // A failure leaves the bytes counted: the next sweep's recount, which no longer sees the
  // upload, corrects the total.
  return (
    store.quota?.add(-counted).then(
      () => counted,
      () => 0,
    ) ?? 0
  )
}

/** What a sweep needs of the store's public members... */
export interface SweptStore {
  readonly directory: string
  readonly expireAfterMs: number
  readonly partialHoldMs: number
  readonly downtime: Downtime | undefined
  readonly quota: StoreQuota | undefined
  /** Resolves once the work the store left running after its answers has ended. */
  settled(): Promise<void>
}

/** ...and what the store keeps to itself. */
export interface SweepParts {
  locker: SweepLocker | undefined
  idPattern: RegExp | undefined
  /** This process' claim on the directory, when it serves it as a holder, as it is now. */
  claim(): DirectoryClaim | undefined
}

/**
 * Runs the sweep engine over the store's directory with the store's lock and periods. With a
 * quota, the sweep also counts what it leaves, and a whole sweep (not a dry run, not stopped)
 * recounts the quota's total.
 */
export async function sweepStore(
  store: SweptStore,
  { locker, idPattern, claim }: SweepParts,
  options: StoreSweepOptions,
): Promise<SweepReport> {
  // Partials a final took over are gone first: they would count, and show as busy.
  await store.settled()
  const at = Date.now()
  // The claim as it is after that wait: a close meanwhile gave it up.
  const holders = claim()
  const tokens = await holders?.liveTokens().catch(() => undefined)
  // Marked right before the walk: what is written between the two may be counted twice.
  const recount = store.quota && !options.dryRun ? store.quota : undefined
  const mark = await recount?.mark()
  try {
    const report = await sweepDirectory({
      holders: tokens && { tokens, at },
      tallyAs: recount?.growingUploads(),
      ...options,
      directory: store.directory,
      expireAfterMs: store.expireAfterMs,
      partialHoldMs: store.partialHoldMs,
      downtime: store.downtime,
      locker,
      idPattern,
      tally: store.quota !== undefined,
    })
    if (recount && mark !== undefined && !report.aborted && report.storeBytes !== undefined) {
      await recount.recount(report.storeBytes, mark).catch((err: unknown) => {
        options.log?.warn({ err }, 'fastify-tus sweep: could not store the recounted quota total')
      })
    }
    return report
  } finally {
    recount?.walked()
  }
}

/** The bytes the store in `directory` holds as the quota counts them: a walk that removes nothing. */
export async function countStore(
  directory: string,
  idPattern: RegExp | undefined,
): Promise<number> {
  const report = await sweepDirectory({ directory, expireAfterMs: 0, idPattern, tally: true })
  return report.storeBytes ?? 0
}

/** Whether `file` exists (an lstat from the page cache, a few µs: see `releaseUpload`). */
function isPresent(file: string): boolean {
  try {
    return fs.lstatSync(file, { throwIfNoEntry: false }) !== undefined
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOTDIR') return false
    throw error
  }
}
