/**
 * Prometheus metrics (the `metrics` option), with prom-client, an optional peer dependency
 * loaded only when metrics are asked for. Every metric carries an `endpoint` label (the
 * registration's namespace, or its path), so several registrations share one registry: a
 * metric is created once per registry and name, and each registration counts under its label.
 *
 * Per answer the hot path adds one Fastify `onResponse` hook, one Map lookup and a few counter
 * additions: label children are looked up once and kept, not per answer.
 */
import type { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { FreeSpace } from './backends/file/free-space.js'
import type { StoreQuota } from './backends/file/quota.js'
import { MetricsUnavailableError } from './errors.js'
import type { MetricsRegistry, ResolvedMetricsOptions } from './options/index.js'
import type { ScheduleObserver, SweepOutcome } from './sweep/schedule.js'

type PromClient = typeof import('prom-client')
type Count = { inc(value?: number): void }
type Observe = { observe(value: number): void }
type Level = { set(value: number): void }

/** Seconds buckets for sweeps: from a small store (10 ms) to a very large one (10 min). */
const SWEEP_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600]
/** Seconds buckets for lock waits: mostly none, sometimes a handover, at worst the timeout. */
const LOCK_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

interface Definition {
  name: string
  help: string
  type: 'counter' | 'gauge' | 'histogram'
  /** Besides `endpoint`, which every metric has. */
  labels?: readonly string[]
  buckets?: readonly number[]
}

/**
 * Every metric the plugin exposes (docs/metrics.md lists them): names, labels and help texts are
 * what dashboards and alerts match on, so they change here or not at all. A scrape lists them in
 * the order they were first made: the constructor's, then `watchSpace`'s and `watchQuota`'s.
 */
const METRICS = {
  requests: {
    name: 'tus_requests_total',
    help: 'Answers on the tus routes, by method, status and protocol (tus 1.0 or the IETF draft).',
    type: 'counter',
    labels: ['method', 'status', 'protocol'],
  },
  created: { name: 'tus_uploads_created_total', help: 'Uploads created (201).', type: 'counter' },
  finished: {
    name: 'tus_uploads_finished_total',
    help: 'Uploads that received their last byte.',
    type: 'counter',
  },
  terminated: {
    name: 'tus_uploads_terminated_total',
    help: 'Uploads deleted by a client (termination).',
    type: 'counter',
  },
  expired: {
    name: 'tus_uploads_expired_total',
    help: 'Requests answered 410 Gone: the upload had expired.',
    type: 'counter',
  },
  bytes: {
    name: 'tus_bytes_received_total',
    help: 'Upload bytes stored: how far PATCHes (and creations with a body) moved the offsets.',
    type: 'counter',
  },
  mismatches: {
    name: 'tus_checksum_mismatches_total',
    help: 'Bodies refused because they did not match their Upload-Checksum (460).',
    type: 'counter',
  },
  sweeps: {
    name: 'tus_sweeps_total',
    help: 'Scheduled or requested sweeps (dry runs excluded), by result.',
    type: 'counter',
    labels: ['result'],
  },
  removed: {
    name: 'tus_sweep_removed_total',
    help: 'Upload sessions a sweep removed, by kind.',
    type: 'counter',
    labels: ['kind'],
  },
  bytesFreed: {
    name: 'tus_sweep_bytes_freed_total',
    help: 'Bytes the sweeps removed.',
    type: 'counter',
  },
  sweepErrors: {
    name: 'tus_sweep_errors_total',
    help: 'Entries a sweep could not handle.',
    type: 'counter',
  },
  skippedBusy: {
    name: 'tus_sweep_skipped_busy_total',
    help: 'Expired uploads a sweep left because a request held their lock.',
    type: 'counter',
  },
  sweepDuration: {
    name: 'tus_sweep_duration_seconds',
    help: 'How long sweeps took (failed ones included, dry runs excluded).',
    type: 'histogram',
    buckets: SWEEP_BUCKETS,
  },
  lastSuccess: {
    name: 'tus_sweep_last_success_timestamp_seconds',
    help: 'When the last successful sweep ended (Unix time, seconds).',
    type: 'gauge',
  },
  emergencySweeps: {
    name: 'tus_emergency_sweeps_total',
    help: 'Sweeps started at once because free space fell below minFreeBytes or the store reached maxStoreBytes.',
    type: 'counter',
  },
  finishFailures: {
    name: 'tus_finish_failures_total',
    help: 'Runs of onUploadFinish that threw (each is retried until one succeeds).',
    type: 'counter',
  },
  finishPending: {
    name: 'tus_finish_pending',
    help: 'Finished uploads whose onUploadFinish has not succeeded yet, as last counted (at each retry pass and each failure).',
    type: 'gauge',
  },
  // Made only with Redis (`withRedis`).
  lockWait: {
    name: 'tus_lock_wait_seconds',
    help: 'How long requests waited for an upload lock in Redis (acquired or not).',
    type: 'histogram',
    buckets: LOCK_BUCKETS,
  },
  leaseHeld: {
    name: 'tus_sweep_lease_held',
    help: "1 while this instance holds the fleet's sweep lease (it is sweeping), else 0.",
    type: 'gauge',
  },
  // Made once there is something to watch (`watchSpace`, `watchQuota`): a store without a
  // free-space floor or a quota has no such metrics.
  freeBytes: {
    name: 'tus_store_free_bytes',
    help: "Bytes free on the store's filesystem, as last read (statfs, at most every 250 ms while uploads come in).",
    type: 'gauge',
  },
  storeBytes: {
    name: 'tus_store_bytes',
    help: "Bytes the store holds as its quota counts them (unfinished uploads' declared lengths included), as last seen.",
    type: 'gauge',
  },
  maxStoreBytes: {
    name: 'tus_store_max_bytes',
    help: 'The store quota (maxStoreBytes).',
    type: 'gauge',
  },
} as const satisfies Record<string, Definition>

type Made<D extends Definition> = D['type'] extends 'counter'
  ? Counter<string>
  : D['type'] extends 'gauge'
    ? Gauge<string>
    : Histogram<string>

/**
 * Makes the metric of a definition in `registry`, or returns the one there: several
 * registrations share a registry, and prom-client refuses a second metric of one name.
 */
function maker(prom: PromClient, registry: MetricsRegistry, prefix: string) {
  const registers = [registry as Registry]
  return <D extends Definition>(definition: D): Made<D> => {
    const name = `${prefix}${definition.name}`
    const existing = registry.getSingleMetric(name)
    if (existing) return existing as Made<D>
    const { help, labels = [] } = definition
    const config = { name, help, labelNames: ['endpoint', ...labels], registers }
    if (definition.type === 'counter') return new prom.Counter(config) as Made<D>
    if (definition.type === 'gauge') return new prom.Gauge(config) as Made<D>
    return new prom.Histogram({ ...config, buckets: [...(definition.buckets ?? [])] }) as Made<D>
  }
}

async function loadPromClient(): Promise<PromClient> {
  try {
    return await import('prom-client')
  } catch (error) {
    throw new MetricsUnavailableError({ cause: error })
  }
}

/** The counters, gauges and histograms of one registration, under its `endpoint` label. */
export class TusMetrics implements ScheduleObserver {
  readonly #requests: Counter<string>
  readonly #requestChildren = new Map<string, Count>()
  readonly #created: Count
  readonly #finished: Count
  readonly #terminated: Count
  readonly #expired: Count
  readonly #bytes: Count
  readonly #mismatches: Count
  readonly #sweeps: Counter<string>
  readonly #removedExpired: Count
  readonly #removedPartial: Count
  readonly #removedOrphan: Count
  readonly #bytesFreed: Count
  readonly #sweepErrors: Count
  readonly #skippedBusy: Count
  readonly #sweepDuration: Observe
  readonly #lastSuccess: Level
  readonly #emergencySweeps: Count
  readonly #finishFailures: Count
  readonly #finishPending: Level
  readonly #lockWait: Observe | undefined
  readonly #leaseHeld: Level | undefined
  readonly #make: ReturnType<typeof maker>
  readonly #endpoint: string

  static async create(
    options: ResolvedMetricsOptions,
    endpoint: string,
    withRedis: boolean,
  ): Promise<TusMetrics> {
    const prom = await loadPromClient()
    return new TusMetrics(prom, options, endpoint, withRedis)
  }

  private constructor(
    prom: PromClient,
    { registry = prom.register, prefix }: ResolvedMetricsOptions,
    endpoint: string,
    withRedis: boolean,
  ) {
    this.#endpoint = endpoint
    const make = maker(prom, registry, prefix)
    this.#make = make
    const at = { endpoint }
    this.#requests = make(METRICS.requests)
    this.#created = make(METRICS.created).labels(at)
    this.#finished = make(METRICS.finished).labels(at)
    this.#terminated = make(METRICS.terminated).labels(at)
    this.#expired = make(METRICS.expired).labels(at)
    this.#bytes = make(METRICS.bytes).labels(at)
    this.#mismatches = make(METRICS.mismatches).labels(at)
    this.#sweeps = make(METRICS.sweeps)
    const removed = make(METRICS.removed)
    this.#removedExpired = removed.labels({ endpoint, kind: 'expired' })
    this.#removedPartial = removed.labels({ endpoint, kind: 'partial' })
    this.#removedOrphan = removed.labels({ endpoint, kind: 'orphan' })
    this.#bytesFreed = make(METRICS.bytesFreed).labels(at)
    this.#sweepErrors = make(METRICS.sweepErrors).labels(at)
    this.#skippedBusy = make(METRICS.skippedBusy).labels(at)
    this.#sweepDuration = make(METRICS.sweepDuration).labels(at)
    this.#lastSuccess = make(METRICS.lastSuccess).labels(at)
    this.#emergencySweeps = make(METRICS.emergencySweeps).labels(at)
    this.#finishFailures = make(METRICS.finishFailures).labels(at)
    this.#finishPending = make(METRICS.finishPending).labels(at)
    this.#finishPending.set(0)
    this.#lockWait = withRedis ? make(METRICS.lockWait).labels(at) : undefined
    this.#leaseHeld = withRedis ? make(METRICS.leaseHeld).labels(at) : undefined
    this.#leaseHeld?.set(0)
    this.#startAtZero()
  }

  /**
   * Every counter series of the endpoint exists from the start (at 0), so that rates and alerts
   * work before the first event.
   */
  #startAtZero(): void {
    for (const count of [
      this.#created,
      this.#finished,
      this.#terminated,
      this.#expired,
      this.#bytes,
      this.#mismatches,
      this.#emergencySweeps,
      this.#finishFailures,
      this.#removedExpired,
      this.#removedPartial,
      this.#removedOrphan,
      this.#bytesFreed,
      this.#sweepErrors,
      this.#skippedBusy,
    ]) {
      count.inc(0)
    }
    for (const result of ['ok', 'failed', 'skipped']) {
      this.#sweeps.labels({ endpoint: this.#endpoint, result }).inc(0)
    }
  }

  /**
   * An answer on the tus routes (any status, hook refusals included). `protocol`: `tus`, or
   * `ietf-draft-<interop version>`; `expired`: a draft's 404 for an expired upload (tus' 410).
   */
  answered(
    method: string,
    status: number,
    {
      protocol = 'tus',
      expired = false,
    }: { protocol?: string; expired?: boolean | undefined } = {},
  ): void {
    const key = `${method} ${status} ${protocol}`
    let child = this.#requestChildren.get(key)
    if (!child) {
      const labels = { endpoint: this.#endpoint, method, status: String(status), protocol }
      child = this.#requests.labels(labels)
      this.#requestChildren.set(key, child)
    }
    child.inc()
    if (status === 201 && method === 'POST') this.#created.inc()
    else if (status === 410 || expired) this.#expired.inc()
    else if (status === 460) this.#mismatches.inc()
  }

  bytesReceived(bytes: number): void {
    if (bytes > 0) this.#bytes.inc(bytes)
  }

  uploadFinished(): void {
    this.#finished.inc()
  }

  uploadTerminated(): void {
    this.#terminated.inc()
  }

  /** Dry runs are not sweeps here: the schedule does not report them. */
  sweepEnded(outcome: SweepOutcome): void {
    this.#sweeps.labels({ endpoint: this.#endpoint, result: outcome.result }).inc()
    if (outcome.result === 'failed') this.#sweepDuration.observe(outcome.durationMs / 1000)
    if (outcome.result !== 'ok') return
    const { report } = outcome
    this.#sweepDuration.observe(report.durationMs / 1000)
    this.#removedExpired.inc(report.removed - report.orphans - report.partials)
    this.#removedPartial.inc(report.partials)
    this.#removedOrphan.inc(report.orphans)
    this.#bytesFreed.inc(report.bytesFreed)
    this.#sweepErrors.inc(report.errors)
    this.#skippedBusy.inc(report.skippedBusy)
    this.#lastSuccess.set(Date.now() / 1000)
  }

  emergencySweep(): void {
    this.#emergencySweeps.inc()
  }

  finishFailed(): void {
    this.#finishFailures.inc()
  }

  finishPending(count: number): void {
    this.#finishPending.set(count)
  }

  /** `tus_store_free_bytes` follows what the store's free-space floor reads. */
  watchSpace(space: FreeSpace): void {
    const level = this.#make(METRICS.freeBytes).labels({ endpoint: this.#endpoint })
    space.onRead((free) => level.set(free))
    space.freeBytes().catch(() => {})
  }

  /** `tus_store_bytes` follows the quota's total; `tus_store_max_bytes` is the quota. */
  watchQuota(quota: StoreQuota): void {
    const at = { endpoint: this.#endpoint }
    this.#make(METRICS.maxStoreBytes).labels(at).set(quota.maxStoreBytes)
    const level = this.#make(METRICS.storeBytes).labels(at)
    if (quota.lastSeen !== undefined) level.set(quota.lastSeen)
    quota.onTotal((total) => level.set(total))
  }

  lockWaited(seconds: number): void {
    this.#lockWait?.observe(seconds)
  }

  leaseHeld(held: boolean): void {
    this.#leaseHeld?.set(held ? 1 : 0)
  }
}
