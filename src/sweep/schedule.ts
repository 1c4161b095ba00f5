/**
 * The sweep's schedule: one sweep at a time, run on a toad-scheduler interval job, logged,
 * stoppable; `run()` and `last` are what the plugin decorates as `fastify.tusCleanup`. Knows
 * nothing of Fastify or of stores: it is given a `sweep` function and a pino-style logger.
 */
import { AsyncTask, SimpleIntervalJob, ToadScheduler } from 'toad-scheduler'
import { ClosedError, toError } from '../errors.js'
import type { SweepLease } from '../redis/lease.js'
import { newReport, type SweepLogger, type SweepReport } from './report.js'

export interface RunOptions {
  /** Report what would be removed, with the ids; remove nothing (built-in file store and S3Store only). */
  dryRun?: boolean
}

export interface ScheduleLogger extends SweepLogger {
  info(obj: object, msg: string): void
  debug(obj: object, msg: string): void
  error(obj: object, msg: string): void
}

export type SweepFunction = (options: {
  dryRun: boolean
  signal: AbortSignal
  log: SweepLogger
}) => Promise<SweepReport>

export interface SweepScheduleOptions {
  sweep: SweepFunction
  log: ScheduleLogger
  intervalMs: number
  runOnStart: boolean
  /** Why sweeping is off (expiry off, a store without expiry); `undefined` when it is on. */
  offBecause?: string | undefined
  /** With several instances: a scheduled sweep runs only on the instance that wins the lease. */
  lease?: SweepLease | undefined
  /** Told how each sweep ended, and when the lease is taken and given back (for metrics). */
  observer?: ScheduleObserver | undefined
}

/** How a sweep ended: `skipped` is a scheduled tick that did not sweep (another instance's lease, or Redis unreachable). */
export type SweepOutcome =
  | { result: 'ok'; report: SweepReport }
  | { result: 'failed'; durationMs: number }
  | { result: 'skipped' }

export interface ScheduleObserver {
  sweepEnded(outcome: SweepOutcome): void
  leaseHeld(held: boolean): void
}

const JOB_ID = 'fastify-tus-sweep'

export class SweepSchedule {
  readonly #options: SweepScheduleOptions
  readonly #scheduler = new ToadScheduler()
  /** Aborted by `stop()`: the running sweep stops between entries. */
  readonly #stopping = new AbortController()
  #running: { dryRun: boolean; promise: Promise<SweepReport> } | undefined
  /** The job's current tick: with a lease, it also takes and gives back the lease. */
  #tick: Promise<void> | undefined
  #last: SweepReport | undefined

  constructor(options: SweepScheduleOptions) {
    this.#options = options
  }

  /** The report of the last sweep that ended, or `undefined`. */
  get last(): SweepReport | undefined {
    return this.#last
  }

  /** Sweeps now; a call while a sweep of the same kind runs joins it instead of starting another. */
  run({ dryRun = false }: RunOptions = {}): Promise<SweepReport> {
    return this.#run(dryRun, {})
  }

  /**
   * An emergency sweep (free space ran low): the same sweep and locks, joined by one under way;
   * its log record says `emergency: true`.
   */
  runEmergency(): Promise<SweepReport> {
    return this.#run(false, { emergency: true })
  }

  /** `logFields` go into the sweep's log record (the lease's slot), if this call starts a sweep. */
  #run(dryRun: boolean, logFields: object): Promise<SweepReport> {
    if (this.#stopping.signal.aborted) return Promise.reject(new ClosedError())
    const running = this.#running
    if (running?.dryRun === dryRun) return running.promise
    if (running) {
      // A sweep of the other kind is running: sweeps never overlap, so this one queues behind it.
      const retry = () => this.#run(dryRun, logFields)
      return running.promise.then(retry, retry)
    }
    if (this.#options.offBecause !== undefined) return Promise.resolve(newReport(dryRun))

    const promise = this.#sweepOnce(dryRun, logFields).finally(() => {
      if (this.#running?.promise === promise) this.#running = undefined
    })
    this.#running = { dryRun, promise }
    return promise
  }

  /**
   * Starts the interval job (the `onReady` hook); returns at once, without waiting for a sweep.
   * `runOnStart: false` when the store's startup sweep already ran (it counted the quota).
   */
  start({ runOnStart = this.#options.runOnStart }: { runOnStart?: boolean } = {}): void {
    const { intervalMs, offBecause, log } = this.#options
    if (offBecause !== undefined) {
      log.info({ sweep: 'off' }, `fastify-tus sweep is off: ${offBecause}`)
      return
    }
    const task = new AsyncTask(
      JOB_ID,
      // A sweep logs its own failure; the next interval simply tries again.
      () => {
        const tick = this.#scheduledRun()
        this.#tick = tick
        return tick.then(noop, noop)
      },
      (error) => log.error({ err: toError(error) }, 'fastify-tus sweep task failed'),
    )
    const job = new SimpleIntervalJob(
      { milliseconds: intervalMs, runImmediately: runOnStart },
      task,
      { id: JOB_ID, preventOverrun: true, unref: true },
    )
    this.#scheduler.addSimpleIntervalJob(job)
  }

  /** Stops the job and the running sweep (the `onClose` hook); after it resolves nothing is removed. */
  async stop(): Promise<void> {
    this.#scheduler.stop()
    this.#stopping.abort()
    await this.#running?.promise.catch(noop)
    // The lease goes back before close() resolves, while the Redis client is still open.
    await this.#tick?.catch(noop)
  }

  /** A tick of the job: a sweep, if this instance wins the interval's lease (when there is one). */
  async #scheduledRun(): Promise<void> {
    const { lease, log, observer } = this.#options
    if (!lease) {
      await this.run()
      return
    }
    let held: Awaited<ReturnType<SweepLease['acquire']>>
    try {
      held = await lease.acquire()
    } catch (error) {
      log.warn({ err: toError(error) }, 'fastify-tus could not reach Redis for the sweep lease')
      observer?.sweepEnded({ result: 'skipped' })
      return
    }
    if (!held) {
      // another instance sweeps this interval
      observer?.sweepEnded({ result: 'skipped' })
      return
    }
    observer?.leaseHeld(true)
    try {
      if (!this.#stopping.signal.aborted) await this.#run(false, { slot: held.slot })
    } finally {
      await held.release().catch(noop)
      observer?.leaseHeld(false)
    }
  }

  async #sweepOnce(dryRun: boolean, logFields: object): Promise<SweepReport> {
    const { log, sweep, observer } = this.#options
    const started = performance.now()
    let report: SweepReport
    try {
      report = await sweep({ dryRun, signal: this.#stopping.signal, log })
    } catch (error) {
      const err = toError(error)
      log.error({ err }, 'fastify-tus sweep failed')
      if (!dryRun)
        observer?.sweepEnded({ result: 'failed', durationMs: performance.now() - started })
      throw err
    }
    this.#last = report
    logReport(log, report, logFields)
    if (!dryRun) observer?.sweepEnded({ result: 'ok', report })
    return report
  }
}

/**
 * The record a sweep leaves in the log: its counts at `info` when it removed something (or was a
 * dry run), at `debug` otherwise. The CLI's `--log json` writes the same record.
 */
export function logReport(log: ScheduleLogger, report: SweepReport, logFields: object = {}): void {
  const { removed, scanned, bytesFreed, durationMs, errors, orphans, partials } = report
  const { skippedBusy, dryRun } = report
  const fields = {
    removed,
    scanned,
    bytesFreed,
    durationMs,
    errors,
    orphans,
    partials,
    skippedBusy,
    dryRun,
    ...logFields,
  }
  if (dryRun) {
    log.info({ ...fields, ids: report.ids }, `dry run: would remove ${removed} expired uploads`)
  } else if (removed > 0) {
    log.info(fields, `removed ${removed} expired uploads`)
  } else {
    log.debug(fields, 'no expired uploads to remove')
  }
}

function noop(): void {}
