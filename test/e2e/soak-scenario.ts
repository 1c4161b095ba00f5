/**
 * The soak scenario, shared by `npm run soak` (100 uploads) and test/e2e/soak.test.ts (20): many
 * concurrent tus-js-client uploads against the real plugin on a real directory, some abandoned
 * midway, some interrupted and resumed, while the server is closed and restarted on the same
 * directory and port. Then: finished uploads are intact, abandoned ones were swept in time, no
 * 5xx, no unhandled rejection, and file descriptors and heap are back near where they started.
 */
import { createHash } from 'node:crypto'
import { createReadStream, readdirSync } from 'node:fs'
import fs from 'node:fs/promises'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import v8 from 'node:v8'
import vm from 'node:vm'
import Fastify, { type FastifyInstance } from 'fastify'
import * as tus from 'tus-js-client'
import fastifyTus, { type FastifyTusOptions } from '../../src/index.js'

const KiB = 1024
const MiB = 1024 * KiB

export interface SoakOptions {
  /** How many uploads run at once. */
  uploads: number
  /** Upload sizes are drawn from 0 to this many bytes (one is always 0). */
  maxSize: number
  /** tus-js-client `chunkSize` is drawn from this range. */
  minChunk: number
  maxChunk: number
  expireAfterMs: number
  cleanupIntervalMs: number
  /** Server restarts during the run, at evenly spaced points of the overall progress. */
  restarts: number
  /** Slack on top of expireAfterMs + cleanupIntervalMs for an abandoned upload to be gone. */
  marginMs: number
  /** Uploads start at random moments within this window (100 POSTs at once would queue up). */
  startSpreadMs: number
  /**
   * A random pause of up to this long before each PATCH: slower clients, whose uploads outlive
   * expireAfterMs. Keep it well below expireAfterMs, since an upload is idle while it waits.
   */
  paceMs: number
  seed: number
  /**
   * More plugin options, over the scenario's own (`directory`, `expireAfterMs`,
   * `cleanupIntervalMs`): a way to check that the checks fail when the plugin misbehaves.
   */
  plugin: FastifyTusOptions
  /** Progress lines while the scenario runs. */
  log: (line: string) => void
}

export const SOAK_DEFAULTS: SoakOptions = {
  uploads: 100,
  maxSize: 8 * MiB,
  minChunk: 64 * KiB,
  maxChunk: 256 * KiB,
  expireAfterMs: 1000,
  cleanupIntervalMs: 100,
  restarts: 2,
  marginMs: 1500,
  startSpreadMs: 3000,
  paceMs: 0,
  seed: 1,
  plugin: {},
  log: () => {},
}

/**
 * Requests failing while the server restarts are retried, densely at first: an upload waiting
 * for the server to come back is idle, and idle for expireAfterMs it expires.
 */
const RETRY_DELAYS = [0, 50, 100, 100, 100, 200, 200, 500, 1000, 1000, 2000]
const ROLES_SHARE = { abandoned: 0.3, resumed: 0.2 }
/** Open descriptors may differ by a few (lazily opened handles of Node itself). */
const FD_MARGIN = 5
const HEAP_MARGIN = 20 * MiB
const POOL_SLACK = 16 * MiB
const RESTART_GAP_MS = 300
/** Events kept per upload for the report. */
const TIMELINE = 24

type Role = 'finished' | 'abandoned' | 'resumed'

interface Plan {
  index: number
  role: Role
  size: number
  chunkSize: number
  /** Abandoned and resumed: abort once this many bytes are sent (and one chunk is accepted). */
  abortAt: number
  /** Resumed: pause between the abort and the resume. */
  pauseMs: number
  startDelayMs: number
  /** Where the upload's bytes start in the data pool. */
  poolOffset: number
}

export interface RestartRecord {
  /** When the restart began, from the start of the uploads. */
  atMs: number
  /** `app.close()`: in-flight requests finish, then the socket is closed. */
  closeMs: number
  /** From the end of the close to the new app listening. */
  startMs: number
  /** Uploads not yet settled when the restart began. */
  inFlight: number
}

export interface SoakCheck {
  name: string
  ok: boolean
  value: string
}

export interface SoakResult {
  options: Omit<SoakOptions, 'log' | 'plugin'>
  started: number
  /** Uploads that reached onSuccess (straight ones and resumed ones). */
  finished: number
  /** Finished uploads whose data file, size or HEAD answer matches what was sent. */
  intact: number
  abandoned: number
  /** Abandoned uploads whose data and metadata files were gone within the limit. */
  abandonedGone: number
  /** Uploads that were abandoned as planned (an abandoned one may fail before its abort). */
  abandonedWatched: number
  resumed: number
  /** Resumed uploads that continued the same URL from an offset above 0. */
  resumedFromOffset: number
  /** Uploads for which the client had to create a new upload (the first one was lost). */
  recreated: number
  /** Uploads that ended in onError, or finished when they should have been aborted. */
  failed: number
  restarts: RestartRecord[]
  totalBytes: number
  server5xx: number
  client5xx: number
  /** Retries tus-js-client made (connection refused or reset during restarts, ...). */
  clientRetries: number
  /** Answers by status code, counted at the http server of every app instance. */
  statuses: Record<string, number>
  unhandledRejections: number
  uncaughtExceptions: number
  /** Fastify log records at level error or above. */
  errorLogs: number
  /** Files in the upload directory at the end that are neither a finished upload nor its metadata. */
  strayFiles: number
  fdBefore: number
  fdAfter: number
  heapBeforeMiB: number
  heapAfterMiB: number
  gcExposed: boolean
  /** The longest start-to-finish time of a finished upload: above expireAfterMs, sweeps ran while it was active. */
  longestUploadMs: number
  /** The longest wait of an upload from a PATCH (or its creation) to its next HEAD or PATCH. */
  maxWriteGapMs: number
  /** Event-loop delay while the uploads ran: a starved process makes active uploads look idle. */
  loopDelayMaxMs: number
  loopDelayP99Ms: number
  /** 1-minute load average at the start and at the end (other processes count). */
  loadAverage: [number, number]
  maxAbandonedSurvivalMs: number
  survivalLimitMs: number
  durations: { uploadsMs: number; sweepWaitMs: number; verifyMs: number; totalMs: number }
  /** The first problems met, for the report. */
  problems: string[]
  checks: SoakCheck[]
  ok: boolean
}

/** A small seeded PRNG (mulberry32): the same seed plans the same run. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * Random-looking, repeatable bytes for every upload without generating hundreds of MiB: one
 * seeded pool, and each upload a window of it at its own offset (no copy). Uploads overlap in
 * the pool but start at different places, so bytes landing in the wrong upload or at the wrong
 * offset change the hash.
 */
export function dataPool(seed: number, size: number): Buffer {
  const pool = Buffer.alloc(size + (4 - (size % 4)))
  const words = new Uint32Array(pool.buffer, pool.byteOffset, pool.length / 4)
  let x = (seed * 2654435761) >>> 0 || 1
  for (let i = 0; i < words.length; i++) {
    // xorshift32
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    words[i] = x >>> 0
  }
  return pool.subarray(0, size)
}

function makePlans(o: SoakOptions): Plan[] {
  const random = prng(o.seed)
  const between = (min: number, max: number) => min + Math.floor(random() * (max - min + 1))
  const abandonedN = Math.round(o.uploads * ROLES_SHARE.abandoned)
  const resumedN = Math.round(o.uploads * ROLES_SHARE.resumed)
  const roles: Role[] = Array.from({ length: o.uploads }, (_, i) =>
    i < abandonedN ? 'abandoned' : i < abandonedN + resumedN ? 'resumed' : 'finished',
  )
  for (let i = roles.length - 1; i > 0; i--) {
    const j = between(0, i)
    ;[roles[i], roles[j]] = [roles[j] as Role, roles[i] as Role]
  }
  let zeroDone = false
  return roles.map((role, index) => {
    const startDelayMs = Math.floor(random() * o.startSpreadMs)
    if (role === 'finished') {
      const size = zeroDone ? between(0, o.maxSize) : 0
      zeroDone = true
      return {
        index,
        role,
        size,
        chunkSize: between(o.minChunk, o.maxChunk),
        abortAt: 0,
        pauseMs: 0,
        startDelayMs,
        poolOffset: between(0, POOL_SLACK),
      }
    }
    // At least 4 chunks, and an abort point between 25% and 65%: a chunk boundary always falls
    // between the abort point and the end, so the abort happens before the upload completes.
    const size = between(Math.max(4 * o.minChunk, Math.floor(o.maxSize / 4)), o.maxSize)
    return {
      index,
      role,
      size,
      chunkSize: between(o.minChunk, Math.min(o.maxChunk, Math.floor(size / 4))),
      abortAt: Math.floor(size * (0.25 + 0.4 * random())),
      // Well within expireAfterMs: an interrupted upload that comes back must not have expired.
      pauseMs: between(100, 200),
      startDelayMs,
      poolOffset: between(0, POOL_SLACK),
    }
  })
}

/** `global.gc` when node runs with --expose-gc, else the same function obtained through V8 flags. */
function gcFunction(): (() => void) | undefined {
  const exposed = (globalThis as { gc?: () => void }).gc
  if (typeof exposed === 'function') return exposed
  try {
    v8.setFlagsFromString('--expose-gc')
    return vm.runInNewContext('gc') as () => void
  } catch {
    return undefined
  }
}

async function settledHeap(gc: (() => void) | undefined): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc?.()
    await sleep(20)
  }
  return process.memoryUsage().heapUsed
}

function openFds(): number {
  try {
    return readdirSync('/proc/self/fd').length
  } catch {
    return -1 // not Linux: reported, not checked
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  )
}

/** Hashed once the upload is done: what tus-js-client was given and sent. */
function sha256Of(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256')
  await pipeline(createReadStream(file), hash)
  return hash.digest('hex')
}

function headRequest(url: string): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' }, agent: false },
      (res) => {
        res.resume()
        res.on('end', () => resolve(res))
      },
    )
    req.on('error', reject)
    req.end()
  })
}

interface Track {
  plan: Plan
  sent: number
  /** Every upload URL the client used; more than one means the first upload was lost. */
  urls: string[]
  settled: boolean
  /** The client's last requests and answers, for the report of a failed upload. */
  events: string[]
}

interface UploadRun {
  outcome: 'success' | 'aborted'
  /** The first progress value: the offset the upload started (or resumed) from. */
  firstProgress: number
  url: string
}

type SoakUploadOptions = tus.UploadOptions

/** tus-js-client's Node build exports FileUrlStorage; its type declarations do not. */
const { FileUrlStorage } = tus as unknown as {
  FileUrlStorage: new (file: string) => NonNullable<SoakUploadOptions['urlStorage']>
}

export async function runSoak(partial: Partial<SoakOptions> = {}): Promise<SoakResult> {
  const o: SoakOptions = { ...SOAK_DEFAULTS, ...partial }
  const plans = makePlans(o)
  const gc = gcFunction()
  const pool = dataPool(o.seed, o.maxSize + POOL_SLACK)
  const problems: string[] = []
  const problem = (text: string) => {
    if (problems.length < 20) problems.push(text)
  }
  const statuses: Record<string, number> = {}
  let server5xx = 0
  let client5xx = 0
  let clientRetries = 0
  let unhandledRejections = 0
  let uncaughtExceptions = 0
  let errorLogs = 0
  const onRejection = (reason: unknown) => {
    unhandledRejections++
    problem(`unhandled rejection: ${String(reason)}`)
  }
  const onException = (error: unknown) => {
    uncaughtExceptions++
    problem(`uncaught exception: ${String(error)}`)
  }

  const loadBefore = os.loadavg()[0] ?? 0
  const heapBefore = await settledHeap(gc)
  const fdBefore = openFds()
  const totalStarted = performance.now()
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'fastify-tus-soak-'))
  const directory = path.join(root, 'uploads')
  const clientDir = path.join(root, 'client')
  await fs.mkdir(directory)
  await fs.mkdir(clientDir)
  process.on('unhandledRejection', onRejection)
  process.on('uncaughtException', onException)

  // Error-level records of the plugin and Fastify (a failed hand-off, a failed sweep, ...).
  const logStream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) {
        if (!line) continue
        const record = JSON.parse(line) as { level: number; msg: string }
        if (record.level >= 50) {
          errorLogs++
          problem(`log: ${line.slice(0, 300)}`)
        }
      }
      done()
    },
  })

  // Timelines of the last requests of each upload, client and server side, in ms since `epoch`.
  let epoch = performance.now()
  const clock = () => (performance.now() - epoch).toFixed(0)
  const note = (events: string[], event: string) => {
    events.push(`${clock()} ${event}`)
    if (events.length > TIMELINE) events.shift()
  }
  const serverEvents = new Map<string, string[]>()
  const idOf = (url: string | undefined) => {
    const id = (url ?? '').split('?')[0]?.split('/').pop() ?? ''
    return id === 'files' ? '' : id
  }
  const serverNote = (url: string | undefined, event: string) => {
    const id = idOf(url)
    if (!id) return
    const events = serverEvents.get(id) ?? []
    serverEvents.set(id, events)
    note(events, event)
  }

  // The longest time an upload went without a request writing to it, server side: from the
  // answer to its creation or to a PATCH, to the arrival of its next HEAD or PATCH. An upload
  // idle for expireAfterMs expires, so this is the margin of the active uploads.
  const writeEnds = new Map<string, number>()
  let maxWriteGapMs = 0
  // Set once every upload has settled; the verification's HEADs are not waits.
  let uploadsDone = false

  let port = 0
  async function startApp(): Promise<FastifyInstance> {
    const app = Fastify({
      logger: { level: 'warn', stream: logStream },
      // Fastify answers 503 to a request that arrives on a kept-alive connection once close()
      // has begun (before it closes idle connections); tus clients retry it, but it is a 5xx.
      // Served instead, the plugin answers it with `Connection: close`.
      return503OnClosing: false,
    })
    // Counted at the http server, so hijacked tus answers and Fastify's own answers (a 503
    // while closing, for instance) are all seen.
    app.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      serverNote(req.url, `server got ${req.method}`)
      const patchOf = req.method === 'PATCH' ? idOf(req.url) : ''
      // A HEAD is the client coming back (after a restart, or to resume): it ends the wait too.
      const idle = writeEnds.get(req.method === 'HEAD' ? idOf(req.url) : patchOf)
      if (idle !== undefined && !uploadsDone)
        maxWriteGapMs = Math.max(maxWriteGapMs, performance.now() - idle)
      res.on('close', () => {
        if (patchOf) writeEnds.set(patchOf, performance.now())
        if (!res.writableFinished) serverNote(req.url, `server: ${req.method} connection closed`)
      })
      res.on('finish', () => {
        serverNote(req.url, `server answered ${req.method} ${res.statusCode}`)
        const created = req.method === 'POST' ? idOf(String(res.getHeader('location') ?? '')) : ''
        if (created) writeEnds.set(created, performance.now())
        statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1
        if (res.statusCode >= 500) {
          server5xx++
          problem(`server answered ${res.statusCode} to ${req.method} ${req.url}`)
        }
      })
    })
    await app.register(fastifyTus, {
      directory,
      expireAfterMs: o.expireAfterMs,
      cleanupIntervalMs: o.cleanupIntervalMs,
      ...o.plugin,
    })
    // The same port again, so that the clients' upload URLs stay valid. A connection of this
    // process may hold it as its local port for a moment: try again shortly.
    for (let attempt = 1; ; attempt++) {
      try {
        await app.listen({ host: '127.0.0.1', port })
        break
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt === 10) {
          await app.close()
          throw error
        }
        await sleep(50)
      }
    }
    const address = app.server.address()
    port = typeof address === 'object' && address ? address.port : port
    return app
  }

  let app = await startApp()
  const endpoint = `http://127.0.0.1:${port}/files`
  o.log(`server on port ${port}, directory ${directory}`)

  const shouldRetry = (track: Track, err: tus.DetailedError): boolean => {
    const status = err.originalResponse?.getStatus() ?? 0
    note(track.events, `client retry? ${status || (err.causingError?.message ?? err.message)}`)
    if (status >= 500) {
      client5xx++
      problem(`client saw ${status} on ${err.originalRequest?.getMethod()}: ${err.message}`)
    }
    // tus-js-client's own rule: retry unless a 4xx other than 409 and 423.
    const retry = !(status >= 400 && status < 500) || status === 409 || status === 423
    if (retry) clientRetries++
    return retry
  }

  function runUpload(
    track: Track,
    data: Buffer,
    extra: Partial<SoakUploadOptions>,
    abortWhen?: (sent: number, chunksDone: number) => boolean,
    before?: (upload: tus.Upload) => Promise<void>,
  ): Promise<UploadRun> {
    const { plan } = track
    return new Promise<UploadRun>((resolve, reject) => {
      let stopped = false
      let chunksDone = 0
      let firstProgress: number | undefined
      const check = () => {
        if (stopped || !abortWhen?.(track.sent, chunksDone)) return
        stopped = true
        note(track.events, `client aborted at ${track.sent} B`)
        void upload.abort()
        resolve({ outcome: 'aborted', firstProgress: firstProgress ?? 0, url: upload.url ?? '' })
      }
      const upload = new tus.Upload(data, {
        endpoint,
        chunkSize: plan.chunkSize,
        retryDelays: RETRY_DELAYS,
        metadata: { filename: `soak-${plan.index}.bin` },
        ...extra,
        onUploadUrlAvailable: () => {
          if (upload.url && !track.urls.includes(upload.url)) track.urls.push(upload.url)
        },
        onProgress: (bytes) => {
          firstProgress ??= bytes
          track.sent = Math.max(track.sent, bytes)
          check()
        },
        onChunkComplete: (_chunk, accepted) => {
          chunksDone++
          track.sent = Math.max(track.sent, accepted)
          check()
        },
        onShouldRetry: (err) => shouldRetry(track, err),
        onBeforeRequest: async (req) => {
          if (o.paceMs > 0 && req.getMethod() === 'PATCH') await sleep(Math.random() * o.paceMs)
          const offset = req.getHeader('Upload-Offset')
          note(track.events, `client sent ${req.getMethod()}${offset ? ` @${offset}` : ''}`)
        },
        onAfterResponse: (req, res) => {
          note(track.events, `client got ${req.getMethod()} ${res.getStatus()}`)
        },
        onSuccess: () => {
          if (stopped) return
          stopped = true
          resolve({ outcome: 'success', firstProgress: firstProgress ?? 0, url: upload.url ?? '' })
        },
        onError: (error) => {
          const status = (error as tus.DetailedError).originalResponse?.getStatus() ?? 0
          if (status >= 500) client5xx++
          stopped = true
          reject(error)
        },
      })
      Promise.resolve(before?.(upload))
        .then(() => upload.start())
        .catch(reject)
    })
  }

  // Abandoned uploads: the time from their last write to the moment both files are gone.
  const survivalLimitMs = o.expireAfterMs + o.cleanupIntervalMs + o.marginMs
  const survivals: number[] = []
  async function watchUntilGone(url: string, abortedAt: number): Promise<boolean> {
    const file = path.join(directory, url.slice(url.lastIndexOf('/') + 1))
    let lastActivity = 0
    const deadline = Date.now() + survivalLimitMs + 5000
    for (;;) {
      const stat = await fs.stat(file).catch(() => undefined)
      if (stat) lastActivity = Math.max(lastActivity, stat.mtimeMs)
      if (!stat && !(await exists(`${file}.json`))) {
        survivals.push(Date.now() - (lastActivity || abortedAt))
        return true
      }
      if (Date.now() > deadline) {
        survivals.push(Date.now() - (lastActivity || abortedAt))
        return false
      }
      await sleep(50)
    }
  }

  const tracks: Track[] = plans.map((plan) => ({
    plan,
    sent: 0,
    urls: [],
    settled: false,
    events: [],
  }))
  const sentHashes = new Map<Track, string>()
  const finishedUrls = new Map<Track, string>()
  const watchers: Array<Promise<boolean>> = []
  let resumedFromOffset = 0
  let longestUploadMs = 0
  let failed = 0

  async function runTrack(track: Track): Promise<void> {
    const { plan } = track
    await sleep(plan.startDelayMs)
    const data = pool.subarray(plan.poolOffset, plan.poolOffset + plan.size)
    const began = performance.now()
    const finished = () => {
      longestUploadMs = Math.max(longestUploadMs, performance.now() - began)
    }
    const abortAt = (sent: number, chunksDone: number) => chunksDone >= 1 && sent >= plan.abortAt
    try {
      if (plan.role === 'finished') {
        const run = await runUpload(track, data, {})
        finishedUrls.set(track, run.url)
        finished()
        sentHashes.set(track, sha256Of(data))
      } else if (plan.role === 'abandoned') {
        const run = await runUpload(track, data, {}, abortAt)
        if (run.outcome !== 'aborted')
          throw new Error(`upload ${plan.index} finished before its abort`)
        watchers.push(watchUntilGone(run.url, Date.now()))
      } else {
        // Interrupted and resumed the way an app does it: the URL kept in a FileUrlStorage, found
        // again by fingerprint. One storage file per upload: FileUrlStorage reads without its
        // lock, so a find may see another upload's half-written file.
        const resumable: Partial<SoakUploadOptions> = {
          urlStorage: new FileUrlStorage(path.join(clientDir, `urls-${plan.index}.json`)),
          fingerprint: async () => `soak-${o.seed}-${plan.index}`,
        }
        const first = await runUpload(track, data, resumable, abortAt)
        if (first.outcome !== 'aborted')
          throw new Error(`upload ${plan.index} finished before its abort`)
        await sleep(plan.pauseMs)
        const second = await runUpload(track, data, resumable, undefined, async (upload) => {
          const previous = await upload.findPreviousUploads()
          if (!previous[0]) throw new Error(`upload ${plan.index}: no previous upload stored`)
          upload.resumeFromPreviousUpload(previous[0])
        })
        finishedUrls.set(track, second.url)
        finished()
        sentHashes.set(track, sha256Of(data))
        if (second.firstProgress > 0 && second.url === first.url) resumedFromOffset++
        else
          problem(
            `upload ${plan.index} resumed from ${second.firstProgress} at ${second.url} (was ${first.url})`,
          )
      }
    } catch (error) {
      failed++
      const ids = track.urls.map((url) => url.slice(url.lastIndexOf('/') + 1))
      const timeline = [...track.events, ...ids.flatMap((id) => serverEvents.get(id) ?? [])]
        .sort((a, b) => Number.parseInt(a, 10) - Number.parseInt(b, 10))
        .join('; ')
      problem(
        `upload ${plan.index} (${plan.role}, ${plan.size} B, chunks of ${plan.chunkSize} B): ` +
          `${String(error)}; last events (ms): ${timeline}`,
      )
    } finally {
      track.settled = true
    }
  }

  // Restarts at evenly spaced points of the overall progress, so that uploads are in flight.
  const target = (t: Track) => (t.plan.role === 'abandoned' ? t.plan.abortAt : t.plan.size)
  const totalTarget = tracks.reduce((n, t) => n + target(t), 0)
  const progress = () =>
    tracks.reduce((n, t) => n + Math.min(t.sent, target(t)), 0) / Math.max(1, totalTarget)
  const restarts: RestartRecord[] = []
  const uploadsStarted = performance.now()
  epoch = uploadsStarted
  const loopDelay = monitorEventLoopDelay({ resolution: 10 })
  loopDelay.enable()
  const restarter = (async () => {
    let lastRestart = 0
    for (let r = 1; r <= o.restarts; r++) {
      // At evenly spaced points of the progress, and some time apart.
      while (
        !uploadsDone &&
        (progress() < r / (o.restarts + 1) || performance.now() - lastRestart < RESTART_GAP_MS)
      ) {
        await sleep(10)
      }
      if (uploadsDone) return
      const began = performance.now()
      const inFlight = tracks.filter((t) => !t.settled).length
      await app.close()
      const closed = performance.now()
      app = await startApp()
      const record = {
        atMs: began - uploadsStarted,
        closeMs: closed - began,
        startMs: performance.now() - closed,
        inFlight,
      }
      restarts.push(record)
      lastRestart = performance.now()
      o.log(
        `restart ${r} at ${(record.atMs / 1000).toFixed(1)} s, ${Math.round(progress() * 100)}% sent: ` +
          `close ${record.closeMs.toFixed(0)} ms, start ${record.startMs.toFixed(0)} ms, ` +
          `${inFlight} uploads in flight`,
      )
    }
  })().catch((error: unknown) => {
    problem(`restart failed: ${String(error)}`)
  })

  await Promise.all(tracks.map(runTrack))
  uploadsDone = true
  await restarter
  loopDelay.disable()
  const uploadsMs = performance.now() - uploadsStarted
  o.log(`uploads settled after ${(uploadsMs / 1000).toFixed(1)} s; waiting for the sweeps`)

  const sweepStarted = performance.now()
  const gone = await Promise.all(watchers)
  const sweepWaitMs = performance.now() - sweepStarted

  // Finished uploads: bytes on disk and the server's HEAD against what was sent.
  const verifyStarted = performance.now()
  let intact = 0
  const finishedIds = new Set<string>()
  for (const [track, url] of finishedUrls) {
    const id = url.slice(url.lastIndexOf('/') + 1)
    finishedIds.add(id)
    const file = path.join(directory, id)
    try {
      const [hash, res, stat] = await Promise.all([
        sha256File(file),
        headRequest(url),
        fs.stat(file),
      ])
      const size = String(track.plan.size)
      const ok =
        hash === sentHashes.get(track) &&
        stat.size === track.plan.size &&
        res.statusCode === 200 &&
        res.headers['upload-offset'] === size &&
        res.headers['upload-length'] === size
      if (ok) intact++
      else
        problem(
          `upload ${track.plan.index}: sha256 ${hash === sentHashes.get(track) ? 'ok' : 'differs'}, ` +
            `${stat.size}/${size} B on disk, HEAD ${res.statusCode} ` +
            `offset ${res.headers['upload-offset']} length ${res.headers['upload-length']}`,
        )
    } catch (error) {
      problem(`upload ${track.plan.index}: ${String(error)}`)
    }
  }
  // The serving plugin's holder folder (directory-holders.ts) is its own, not a stray.
  const strays = (await fs.readdir(directory)).filter(
    (name) => name !== '.fastify-tus-holders' && !finishedIds.has(name.replace(/\.json$/, '')),
  )
  for (const name of strays.slice(0, 5)) problem(`stray file in the upload directory: ${name}`)
  const verifyMs = performance.now() - verifyStarted

  await app.close()
  await fs.rm(root, { recursive: true, force: true })
  // Sockets the server ended reach the client's agent a moment later.
  await sleep(200)
  const fdAfter = openFds()
  const heapAfter = await settledHeap(gc)
  process.off('unhandledRejection', onRejection)
  process.off('uncaughtException', onException)

  const count = (role: Role) => plans.filter((p) => p.role === role).length
  const expectedFinished = count('finished') + count('resumed')
  const maxSurvival = survivals.length > 0 ? Math.max(...survivals) : 0
  const recreated = tracks.filter((t) => t.urls.length > 1).length
  const mib = (bytes: number) => bytes / MiB
  const result: Omit<SoakResult, 'checks' | 'ok'> = {
    options: {
      uploads: o.uploads,
      maxSize: o.maxSize,
      minChunk: o.minChunk,
      maxChunk: o.maxChunk,
      expireAfterMs: o.expireAfterMs,
      cleanupIntervalMs: o.cleanupIntervalMs,
      restarts: o.restarts,
      marginMs: o.marginMs,
      startSpreadMs: o.startSpreadMs,
      paceMs: o.paceMs,
      seed: o.seed,
    },
    started: tracks.length,
    finished: finishedUrls.size,
    intact,
    abandoned: count('abandoned'),
    abandonedGone: gone.filter(Boolean).length,
    abandonedWatched: watchers.length,
    resumed: count('resumed'),
    resumedFromOffset,
    recreated,
    failed,
    restarts,
    totalBytes: plans.reduce((n, p) => n + p.size, 0),
    server5xx,
    client5xx,
    clientRetries,
    statuses,
    unhandledRejections,
    uncaughtExceptions,
    errorLogs,
    strayFiles: strays.length,
    fdBefore,
    fdAfter,
    heapBeforeMiB: mib(heapBefore),
    heapAfterMiB: mib(heapAfter),
    gcExposed: gc !== undefined,
    longestUploadMs,
    maxWriteGapMs,
    loopDelayMaxMs: loopDelay.max / 1e6,
    loopDelayP99Ms: loopDelay.percentile(99) / 1e6,
    loadAverage: [loadBefore, os.loadavg()[0] ?? 0],
    maxAbandonedSurvivalMs: maxSurvival,
    survivalLimitMs,
    durations: { uploadsMs, sweepWaitMs, verifyMs, totalMs: performance.now() - totalStarted },
    problems,
  }
  const checks: SoakCheck[] = [
    {
      name: 'every upload that was not abandoned finished',
      ok: result.finished === expectedFinished && failed === 0,
      value: `${result.finished}/${expectedFinished}, ${failed} failed`,
    },
    {
      name: 'every finished upload is byte-identical (sha256, size, HEAD)',
      ok: intact === expectedFinished,
      value: `${intact}/${expectedFinished}`,
    },
    {
      name: 'every resumed upload continued its URL from an offset above 0',
      ok: resumedFromOffset === count('resumed'),
      value: `${resumedFromOffset}/${count('resumed')}`,
    },
    {
      name: 'no upload was lost and re-created by the client',
      ok: recreated === 0,
      value: String(recreated),
    },
    {
      // Over the uploads that were abandoned: one that failed before its abort counts in `failed`.
      name: `every abandoned upload is gone within ${survivalLimitMs} ms of its last write`,
      ok:
        watchers.length > 0 &&
        result.abandonedGone === watchers.length &&
        maxSurvival <= survivalLimitMs,
      value: `${result.abandonedGone}/${watchers.length}, max ${maxSurvival.toFixed(0)} ms`,
    },
    {
      name: 'the upload directory holds nothing else',
      ok: strays.length === 0,
      value: `${strays.length} stray files`,
    },
    {
      name: `the server restarted ${o.restarts} times with uploads in flight`,
      ok: restarts.length === o.restarts && restarts.every((r) => r.inFlight > 0),
      value: restarts.map((r) => `${r.inFlight} in flight`).join(', ') || 'none',
    },
    {
      name: 'no 5xx answer (server side, client side)',
      ok: server5xx === 0 && client5xx === 0,
      value: `${server5xx}, ${client5xx}`,
    },
    {
      name: 'no unhandled rejection, no uncaught exception, no error log',
      ok: unhandledRejections === 0 && uncaughtExceptions === 0 && errorLogs === 0,
      value: `${unhandledRejections}, ${uncaughtExceptions}, ${errorLogs}`,
    },
    {
      name: `open file descriptors back near the start (+${FD_MARGIN})`,
      ok: fdBefore < 0 || fdAfter <= fdBefore + FD_MARGIN,
      value: `${fdBefore} -> ${fdAfter}`,
    },
    {
      name: `heap back near the start (+${mib(HEAP_MARGIN)} MiB after gc)`,
      ok: gc !== undefined && heapAfter <= heapBefore + HEAP_MARGIN,
      value: `${mib(heapBefore).toFixed(1)} -> ${mib(heapAfter).toFixed(1)} MiB`,
    },
  ]
  return { ...result, checks, ok: checks.every((c) => c.ok) }
}

/** The result as a readable table, for the script and for failing tests. */
export function formatSoak(r: SoakResult): string {
  const o = r.options
  const size = (bytes: number) =>
    bytes >= MiB ? `${(bytes / MiB).toFixed(bytes % MiB ? 1 : 0)} MiB` : `${bytes / KiB} KiB`
  const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`
  const rows: Array<[string, string]> = [
    ['uploads started', String(r.started)],
    ['  finished', `${r.finished} (${r.finished - r.resumed} straight, ${r.resumed} resumed)`],
    ['  abandoned', String(r.abandoned)],
    ['  resumed from an offset > 0', `${r.resumedFromOffset}/${r.resumed}`],
    ['  failed', String(r.failed)],
    ['  lost and re-created', String(r.recreated)],
    ['bytes planned', size(r.totalBytes)],
    ['finished intact (sha256, HEAD)', `${r.intact}/${r.finished}`],
    ['abandoned gone', `${r.abandonedGone}/${r.abandonedWatched}`],
    [
      'abandoned: max life after last write',
      `${r.maxAbandonedSurvivalMs.toFixed(0)} ms (limit ${r.survivalLimitMs} ms)`,
    ],
    ['restarts', String(r.restarts.length)],
    ...r.restarts.map((x, i): [string, string] => [
      `  restart ${i + 1}`,
      `at ${s(x.atMs)}, close ${x.closeMs.toFixed(0)} ms, start ${x.startMs.toFixed(0)} ms, ${x.inFlight} uploads in flight`,
    ]),
    [
      'answers by status',
      Object.entries(r.statuses)
        .map(([status, n]) => `${status}: ${n}`)
        .join(', '),
    ],
    ['5xx answers (server, client)', `${r.server5xx}, ${r.client5xx}`],
    ['client retries', String(r.clientRetries)],
    ['unhandled rejections', String(r.unhandledRejections)],
    ['uncaught exceptions', String(r.uncaughtExceptions)],
    ['error logs', String(r.errorLogs)],
    ['stray files', String(r.strayFiles)],
    ['open fds (before -> after)', `${r.fdBefore} -> ${r.fdAfter}`],
    [
      `heap after gc (before -> after)${r.gcExposed ? '' : ', gc not available'}`,
      `${r.heapBeforeMiB.toFixed(1)} -> ${r.heapAfterMiB.toFixed(1)} MiB`,
    ],
    ['longest finished upload', `${r.longestUploadMs.toFixed(0)} ms`],
    [
      'longest wait of an upload between requests',
      `${r.maxWriteGapMs.toFixed(0)} ms (expireAfterMs ${o.expireAfterMs})`,
    ],
    [
      'event-loop delay while uploading',
      `p99 ${r.loopDelayP99Ms.toFixed(0)} ms, max ${r.loopDelayMaxMs.toFixed(0)} ms`,
    ],
    ['load average (start, end)', r.loadAverage.map((n) => n.toFixed(2)).join(', ')],
    ['uploads phase', s(r.durations.uploadsMs)],
    ['waiting for the sweeps', s(r.durations.sweepWaitMs)],
    ['verification', s(r.durations.verifyMs)],
    ['total', s(r.durations.totalMs)],
  ]
  const width = Math.max(...rows.map(([k]) => k.length))
  const lines = [
    `fastify-tus soak: ${o.uploads} uploads of 0 to ${size(o.maxSize)}, chunks of ${size(o.minChunk)} ` +
      `to ${size(o.maxChunk)}, expireAfterMs ${o.expireAfterMs}, cleanupIntervalMs ` +
      `${o.cleanupIntervalMs}, ${o.restarts} restarts, ` +
      `${o.paceMs > 0 ? `up to ${o.paceMs} ms before each PATCH, ` : ''}seed ${o.seed}`,
    '',
    ...rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`),
    '',
    ...r.checks.map((c) => `${c.ok ? 'ok  ' : 'FAIL'}  ${c.name}: ${c.value}`),
  ]
  if (r.problems.length > 0) lines.push('', 'problems:', ...r.problems.map((p) => `  ${p}`))
  lines.push('', r.ok ? 'soak passed' : 'soak FAILED')
  return lines.join('\n')
}
