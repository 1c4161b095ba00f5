/**
 * The durable hand-over of finished uploads to the app: its `onUploadFinish` runs at least once
 * for every finished upload, across failures of the hook and crashes of the process.
 *
 * - Before a write that may store an upload's last byte (or a creation that finishes it), the
 *   upload is remembered in the store (`FinishRecords`) and this process takes its finish lock;
 *   the record goes once the hook has returned. A kill -9 anywhere in between leaves the record.
 * - A hook that throws is logged at error level and its record keeps the failure; the upload's
 *   answer stays the success it is (its bytes are stored): the hand-over is the server's to
 *   finish, not the client's.
 * - Passes (at start, then every `passEveryMs`, and when a failed run is due) run the hook again
 *   for the records whose upload is finished, backing off (doubling, capped) while it fails, and
 *   forget the records of uploads that never finished or are gone.
 * - The finish lock (the tus locker's, under its own key; in Redis for a fleet) makes each
 *   upload's hook run once at a time, wherever it runs.
 *
 * A hook that throws `{ status_code, body }` answers the request (tus' way to refuse): the app
 * has seen the upload, so that counts as handed over.
 */
import type { ServerOptions } from '@tus/server'
import type { DataStore, Upload } from '@tus/utils'
import ms from 'ms'
import type { FinishRecords, PendingFinish } from '../backends/backend.js'
import type { ActivityLocker, HeldLock } from '../locking/activity-locker.js'
import { retryDelayMs } from './records.js'

export type OnUploadFinish = NonNullable<ServerOptions['onUploadFinish']>
type HookAnswer = Awaited<ReturnType<OnUploadFinish>>

export interface HandOverLogger {
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
  error(obj: object, msg: string): void
}

export interface HandOverSetup {
  /** The user's `onUploadFinish`. */
  hook: OnUploadFinish
  /** Where finished uploads are read again for a retry. */
  datastore: DataStore
  records: FinishRecords
  locker: ActivityLocker
  log: HandOverLogger
  /** The first retry's delay, and the most the doubling goes to. */
  retry: { firstMs: number; maxMs: number }
  /** Time between passes. */
  passEveryMs: number
  /** The URL of upload `id`, for the request a retry hands the hook. */
  urlOf: (id: string) => string
  /** The app moved or removed the upload's data: what it counted is released (the quota). */
  released?: ((id: string) => Promise<number>) | undefined
  /** Told of each failed run (metrics). */
  onFailure?: (() => void) | undefined
  /** Told how many records there are, after each pass and each failure (metrics). */
  onPending?: ((count: number) => void) | undefined
}

/** What a pass did. */
export interface PassReport {
  handedOver: number
  failed: number
  forgotten: number
}

/**
 * How long a finish lock outlives a creation that may finish its upload (a write's is held until
 * the write settles, however long its body takes).
 */
const HOLD_UNTIL_FINISHED_MS = 5 * 60_000
/** ... and, once it did finish, how long it waits for tus to call the hook. */
const HOLD_UNTIL_HOOK_MS = 30_000

interface Hold {
  lock: HeldLock
  timer: NodeJS.Timeout | undefined
}

export class HandOver {
  readonly #setup: HandOverSetup
  /** Finish locks this process' requests hold, until their hook ran. */
  readonly #holds = new Map<string, Hold>()
  #timer: NodeJS.Timeout | undefined
  #nextPassAt = Number.POSITIVE_INFINITY
  #passing: Promise<PassReport> | undefined
  #closed = false

  constructor(setup: HandOverSetup) {
    this.#setup = setup
  }

  /**
   * Before a write or creation that may finish upload `id`: takes its finish lock (waiting for a
   * retry that runs its hook now) and remembers it. `true` when this call made the record.
   * `untilSettled`: the caller always calls `settle` (a write's `finally`), so the lock is held
   * however long the body takes.
   */
  async expect(id: string, { untilSettled = false } = {}): Promise<boolean> {
    const lock = await this.#lock(id)
    try {
      const made = await this.#setup.records.remember(id)
      this.#hold(id, lock, untilSettled ? undefined : HOLD_UNTIL_FINISHED_MS)
      return made
    } catch (error) {
      await lock.unlock()
      throw error
    }
  }

  /**
   * After the write or creation `expect` announced: once finished, tus calls the hook soon;
   * otherwise the record this request made goes (`made`) and the lock is let go.
   */
  async settle(id: string, finished: boolean, made: boolean): Promise<void> {
    const hold = this.#holds.get(id)
    if (finished) {
      if (hold) this.#hold(id, hold.lock, HOLD_UNTIL_HOOK_MS)
      return
    }
    try {
      if (made) await this.#setup.records.forget(id)
    } finally {
      await this.#release(id)
    }
  }

  /** The user's hook for a finished upload, from tus' handlers: the request path. */
  async deliver(req: Request, upload: Upload): Promise<HookAnswer> {
    const { id } = upload
    const hold = this.#holds.get(id)
    if (hold) {
      clearTimeout(hold.timer)
      this.#holds.delete(id)
    }
    const lock = hold?.lock ?? (await this.#lock(id))
    try {
      if (!hold) await this.#setup.records.remember(id)
      return (await this.#run(req, upload)) ?? {}
    } finally {
      await lock.unlock()
    }
  }

  /**
   * Runs the due hand-overs now (`all`: every pending one, as at startup, when the app's code may
   * have changed); a call during a pass joins it.
   */
  pass({ all = false }: { all?: boolean } = {}): Promise<PassReport> {
    this.#passing ??= this.#pass(all).finally(() => {
      this.#passing = undefined
    })
    return this.#passing
  }

  /** The pending hand-overs, oldest first. */
  pending(): Promise<PendingFinish[]> {
    return this.#setup.records.list()
  }

  /** Starts the passes: one now (not awaited: startup does not wait for the app's hooks). */
  start(): void {
    this.pass({ all: true }).catch((err: unknown) => {
      this.#setup.log.warn({ err }, 'fastify-tus: pending hand-overs could not be read')
    })
  }

  async close(): Promise<void> {
    this.#closed = true
    clearTimeout(this.#timer)
    await this.#passing?.catch(() => {})
    for (const id of [...this.#holds.keys()]) await this.#release(id)
  }

  async #pass(all: boolean): Promise<PassReport> {
    const report: PassReport = { handedOver: 0, failed: 0, forgotten: 0 }
    let earliest = Number.POSITIVE_INFINITY
    try {
      const records = await this.#setup.records.list()
      for (const record of records) {
        if (this.#closed) break
        if (!all && record.nextAt !== undefined && record.nextAt > Date.now()) {
          earliest = Math.min(earliest, record.nextAt)
          continue
        }
        const outcome = await this.#retry(record.id, all)
        if (outcome) report[outcome]++
        if (outcome === 'failed') {
          const nextAt = (await this.#setup.records.read(record.id))?.nextAt
          if (nextAt !== undefined) earliest = Math.min(earliest, nextAt)
        }
      }
    } finally {
      this.#nextPassAt = Number.POSITIVE_INFINITY
      this.#arm(Math.min(earliest, Date.now() + this.#setup.passEveryMs))
    }
    await this.#count()
    if (report.handedOver + report.failed + report.forgotten > 0) {
      this.#setup.log.info(report, 'fastify-tus: pending hand-overs retried')
    }
    return report
  }

  /** One record, under its finish lock: skipped when another run holds it. */
  async #retry(id: string, all: boolean): Promise<keyof PassReport | undefined> {
    if (this.#holds.has(id)) return undefined
    const lock = await this.#setup.locker.tryLock(finishLockKey(id))
    if (!lock) return undefined
    try {
      // Read again under the lock: another instance may have handed it over meanwhile.
      const record = await this.#setup.records.read(id)
      if (!record) return undefined
      if (!all && record.nextAt !== undefined && record.nextAt > Date.now()) return undefined
      const upload = await this.#finishedUpload(id)
      if (upload === 'gone' || upload === 'unfinished') {
        await this.#setup.records.forget(id)
        // A run that moved the bytes out and then failed: what is left of it is released.
        await this.#setup.released?.(id)
        return 'forgotten'
      }
      return (await this.#run(retryRequest(this.#setup.urlOf(id), record), upload))
        ? 'handedOver'
        : 'failed'
    } finally {
      await lock.unlock()
    }
  }

  /** The upload, when it is there and finished. */
  async #finishedUpload(id: string): Promise<Upload | 'gone' | 'unfinished'> {
    let upload: Upload
    try {
      upload = await this.#setup.datastore.getUpload(id)
    } catch (error) {
      const status = (error as { status_code?: unknown }).status_code
      if (status === 404 || status === 410) return 'gone'
      throw error
    }
    return upload.size !== undefined && upload.offset === upload.size ? upload : 'unfinished'
  }

  /** Runs the hook: its answer once it returned (the record gone), `undefined` when it failed. */
  async #run(req: Request, upload: Upload): Promise<HookAnswer | undefined> {
    const { hook, records, released, log } = this.#setup
    let answer: unknown
    try {
      answer = await hook(req, upload)
    } catch (error) {
      // The app refused the upload in its answer: it has seen it.
      if (isAnswerShaped(error)) {
        await records.forget(upload.id)
        throw error
      }
      await this.#failed(upload.id, error)
      return undefined
    }
    if (!isHookAnswer(answer)) {
      log.error(
        { hook: 'onUploadFinish', uploadId: upload.id, returned: describeValue(answer) },
        `fastify-tus: onUploadFinish returned ${describeValue(answer)} for upload ${upload.id}: it must return an object (\`{}\` to answer as usual); the upload counts as handed over`,
      )
      answer = {}
    }
    await records.forget(upload.id)
    await released?.(upload.id)
    return answer as HookAnswer
  }

  async #failed(id: string, error: unknown): Promise<void> {
    const { records, retry, log, onFailure } = this.#setup
    const before = await records.read(id)
    const attempts = (before?.attempts ?? 0) + 1
    // The first retry comes no later than the next pass.
    const backoff = retryDelayMs(attempts, retry.firstMs, retry.maxMs)
    const delay = attempts === 1 ? Math.min(backoff, this.#setup.passEveryMs) : backoff
    const nextAt = Date.now() + delay
    const message = error instanceof Error ? error.message : String(error)
    await records.update({
      id,
      since: before?.since ?? Date.now(),
      attempts,
      lastError: message,
      nextAt,
    })
    onFailure?.()
    await this.#count()
    log.error(
      { err: error, hook: 'onUploadFinish', uploadId: id, attempts, retryInMs: delay },
      `fastify-tus: onUploadFinish failed for upload ${id} (attempt ${attempts}): it runs again in ${ms(delay)}`,
    )
    this.#arm(nextAt)
  }

  async #count(): Promise<void> {
    const { onPending, records } = this.#setup
    if (onPending) onPending((await records.list()).length)
  }

  /** The next pass at `at`, unless one comes sooner. */
  #arm(at: number): void {
    if (this.#closed || at >= this.#nextPassAt) return
    clearTimeout(this.#timer)
    this.#nextPassAt = at
    this.#timer = setTimeout(
      () => {
        this.#nextPassAt = Number.POSITIVE_INFINITY
        this.pass().catch((err: unknown) => {
          this.#setup.log.warn({ err }, 'fastify-tus: a pass over pending hand-overs failed')
        })
      },
      Math.max(0, at - Date.now()),
    )
    this.#timer.unref()
  }

  async #lock(id: string): Promise<HeldLock> {
    const lock = this.#setup.locker.newLock(finishLockKey(id))
    // A run of the hook has nothing to give up early: a request waits for it to end.
    await lock.lock(new AbortController().signal, () => {})
    return lock
  }

  /** Keeps `lock` for `id`: at most `forMs`, should the hook never come; else until settled. */
  #hold(id: string, lock: HeldLock, forMs: number | undefined): void {
    const previous = this.#holds.get(id)
    if (previous) clearTimeout(previous.timer)
    const timer =
      forMs === undefined ? undefined : setTimeout(() => this.#release(id).catch(() => {}), forMs)
    timer?.unref()
    this.#holds.set(id, { lock, timer })
  }

  async #release(id: string): Promise<void> {
    const hold = this.#holds.get(id)
    if (!hold) return
    clearTimeout(hold.timer)
    this.#holds.delete(id)
    await hold.lock.unlock()
  }
}

/**
 * The finish lock of upload `id`: the tus locker's, under a key of its own, so that it neither
 * waits for nor ends the upload's requests.
 */
export function finishLockKey(id: string): string {
  return `finish:${id}`
}

/** What a retry hands the hook: a request for the upload's URL, with no client behind it. */
function retryRequest(url: string, record: PendingFinish): Request {
  return new Request(url, {
    method: 'PATCH',
    headers: { 'Tus-Resumable': '1.0.0', 'X-Fastify-Tus-Retry': String(record.attempts) },
  })
}

/** tus' way for a hook to refuse: a thrown `{ status_code, body }`. */
function isAnswerShaped(error: unknown): boolean {
  return (
    typeof error === 'object' &&
    error !== null &&
    typeof (error as { status_code?: unknown }).status_code === 'number'
  )
}

/** `{}`, or `{ status_code?, headers?, body? }`. */
export function isHookAnswer(value: unknown): boolean {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

export function describeValue(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  return typeof value === 'object'
    ? 'an object'
    : `${typeof value === 'string' ? 'a string' : String(value)}`
}
