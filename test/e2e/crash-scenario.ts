/**
 * The soak's crash mode (issue 13), shared by `npm run soak -- --crash` (50 clients) and
 * test/e2e/crash-soak.test.ts (12): the built plugin in a child process on a real directory, killed
 * with SIGKILL at random moments while raw HTTP clients upload, about half of them with an
 * `Upload-Checksum` on every PATCH, and restarted on the same directory and port. Clients trust
 * only the offset the server gives them. Then: every upload is finished and byte-identical,
 * every record on disk parsed (at every crash and at the end), no checksummed body a crash cut
 * was kept, and a sweep removes everything the crashes left, leaving exactly the finished pairs.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import fs from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { TEMP_PREFIX } from '../../src/backends/file/names.js'
import { METADATA_SUFFIX, UNVERIFIED_FROM } from '../../src/expiry/policy.js'
import { dataPool, prng } from './soak-scenario.js'

const KiB = 1024
const MiB = 1024 * KiB

export interface CrashSoakOptions {
  /** Concurrent clients, one upload each. */
  clients: number
  /** Upload sizes are drawn from maxSize / 8 to maxSize. */
  maxSize: number
  /** Each PATCH carries a chunk of a size drawn from this range. */
  minChunk: number
  maxChunk: number
  /**
   * Each client sends at a rate (bytes per second) drawn from this range, in slices of
   * `sliceBytes`: slow clients, whose PATCHes are mid-body most of the time, where a kill cuts them.
   */
  minRate: number
  maxRate: number
  sliceBytes: number
  /** Share of the clients that send `Upload-Checksum: sha1` with every PATCH. */
  checksumShare: number
  /** SIGKILLs of the server during the run, at random points of the overall progress. */
  crashes: number
  /** The server stays down this long after a kill (a range), then starts on the same port. */
  minDownMs: number
  maxDownMs: number
  /** At least this long between a restart and the next kill: clients get back to sending. */
  minUpMs: number
  /** Long enough that nothing expires during the run. */
  expireAfterMs: number
  /** Short: sweeps run between and around the crashes. */
  cleanupIntervalMs: number
  /** Clients start at random moments within this window. */
  startSpreadMs: number
  /** Clients still running after this long fail. */
  timeoutMs: number
  seed: number
  /** Keep the upload directory at the end even when every check passed (it is kept on failure). */
  keepDirectory: boolean
  /** Progress lines while the scenario runs. */
  log: (line: string) => void
}

export const CRASH_SOAK_DEFAULTS: CrashSoakOptions = {
  clients: 50,
  maxSize: 8 * MiB,
  minChunk: 64 * KiB,
  maxChunk: 1 * MiB,
  minRate: 512 * KiB,
  maxRate: 2 * MiB,
  sliceBytes: 32 * KiB,
  checksumShare: 0.5,
  crashes: 10,
  minDownMs: 50,
  maxDownMs: 300,
  minUpMs: 400,
  expireAfterMs: 60_000,
  cleanupIntervalMs: 300,
  startSpreadMs: 1000,
  timeoutMs: 300_000,
  seed: 1,
  keepDirectory: false,
  log: () => {},
}

/** Statuses after which a client asks HEAD for the offset and goes on from there. */
const RETRY_STATUSES = new Set([409, 423, 460])
/** Between two attempts while the server is down. */
const RETRY_MS = 25
/** A request with no answer for this long is given up (and retried): a hung server is a failure of its own. */
const REQUEST_TIMEOUT_MS = 30_000
/** How long a kill waits, after its random moment, for a checksummed PATCH to be mid-body. */
const MID_BODY_WAIT_MS = 2000
/** How long the first kill waits for the bytes of the body it holds to reach the data file. */
const HELD_BYTES_WAIT_MS = 10_000
const LISTED = 10
/** Events kept per client for the report. */
const TIMELINE = 24

export interface CrashRecord {
  /** From the start of the uploads. */
  atMs: number
  /** Share of all bytes the server had confirmed. */
  progress: number
  /** PATCHes under way at the kill; of them, checksummed ones with part of their body sent. */
  patchesInFlight: number
  checksummedMidBody: number
  /** The directory while the server was down: records (all of which must parse), ... */
  records: number
  /** ... records marked `unverified_from` (a checksummed body was being written), ... */
  unverifiedMarks: number
  /** ... of which the data file held bytes past the mark: bytes the next access must roll back, ... */
  unverifiedBytes: number
  /** ... and temporary records (`.fastify-tus-tmp.*`). */
  tempFiles: number
  /** From the kill to the new server listening. */
  downMs: number
  /**
   * The upload whose checksummed body this kill held mid-way, its bytes past the mark on disk
   * (the first kill: the plan's guaranteed rollback); `undefined` for the others.
   */
  held: string | undefined
}

export interface CrashSoakCheck {
  name: string
  ok: boolean
  value: string
}

export interface CrashSoakResult {
  options: Omit<CrashSoakOptions, 'log'>
  port: number
  directory: string
  /** Whether the directory is still there (on a failed check, or with keepDirectory). */
  directoryKept: boolean
  clients: number
  checksummedClients: number
  totalBytes: number
  /** Clients whose last answer said offset == length, and HEAD says so at the end. */
  finished: number
  /** Finished uploads whose data file hashes like what the client sent (sha256, size). */
  intact: number
  failed: number
  crashes: CrashRecord[]
  /** A client saw its PATCH fail with part of its body sent: checksummed, plain. */
  checksummedCuts: number
  plainCuts: number
  /** A PATCH failed after its whole body was sent (the answer was lost), or before any of it. */
  answersLost: number
  cutsBeforeBody: number
  /** Marks found at crashes; of them, the client's next HEAD gave the marked offset (rolled back). */
  rollbacksExpected: number
  rollbacksSeen: number
  /**
   * Of the marks, those whose data file held bytes past the mark at the crash (a body cut
   * mid-way); of them, the ones rolled back: the next HEAD and the data file at the mark.
   */
  cutBodies: number
  cutBodiesRolledBack: number
  /** After a failed PATCH, a server offset outside what the client sent (checksummed: all or nothing). */
  offsetViolations: number
  /** POSTs retried after a failure (the lost one may have created an upload: a leftover). */
  creationsRetried: number
  /** Answers by status, and failures by error code, as the clients saw them. */
  statuses: Record<string, number>
  client5xx: number
  /** 460 answers: the clients' checksums are right, so the server hashed other bytes. */
  checksumMismatches: number
  /** Records read (at every crash and at the end); those that did not parse or had another id. */
  recordsRead: number
  badRecords: string[]
  /** Records still marked `unverified_from` at the end. */
  unverifiedLeft: string[]
  /** What the directory held besides the finished uploads before the final sweep. */
  leftovers: { tempFiles: number; orphanData: number; orphanRecords: number; unfinished: number }
  finalSweep: {
    exitCode: number | null
    scanned: number
    removed: number
    orphans: number
    errors: number
  }
  /** Entries left after the final sweep that are not a finished upload or its record. */
  strayAfterSweep: string[]
  /** Finished uploads missing after the final sweep. */
  missingAfterSweep: string[]
  /** The server's own sweeps during the run, their errors and removals. */
  serverSweeps: number
  serverSweepErrors: number
  serverSweepRemoved: number
  serverWarnings: number
  serverErrorLogs: number
  /** The server exited without being killed (it was started again). */
  unexpectedExits: number
  durations: { uploadsMs: number; verifyMs: number; sweepMs: number; totalMs: number }
  problems: string[]
  checks: CrashSoakCheck[]
  ok: boolean
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex')

/** The package root (this file runs from test/e2e/ under vitest, from dist/test/e2e/ in the script). */
function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const pkg = path.join(dir, 'package.json')
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).name === 'fastify-tus') return dir
    const parent = path.dirname(dir)
    if (parent === dir) throw new Error('fastify-tus package root not found')
    dir = parent
  }
}

/** A TCP port free on 127.0.0.1 at the moment it is asked for. */
export async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

interface Answer {
  status: number
  headers: http.IncomingHttpHeaders
}
type Exchange = ({ answer: Answer } | { error: Error }) & { written: number }

interface Client {
  index: number
  size: number
  checksummed: boolean
  rate: number
  startDelayMs: number
  random: () => number
  data: Buffer
  hash: string
  agent: http.Agent
  url: string
  id: string
  /** The offset the server last gave. */
  offset: number
  /** The PATCH under way: where it started, its length, how much of its body was sent. */
  patch: { start: number; length: number; written: number } | undefined
  /** While set, the client sends no more of its body (the crasher holds it mid-way). */
  hold: Promise<void> | undefined
  finished: boolean
  events: Array<{ at: number; event: string }>
}

interface ServerChild {
  child: ChildProcess
  exited: Promise<void>
  killed: boolean
  stderr: string
}

export async function runCrashSoak(
  input: Partial<CrashSoakOptions> = {},
): Promise<CrashSoakResult> {
  // Whatever happens, no server process outlives the scenario.
  const children = new Set<ChildProcess>()
  try {
    return await crashSoak(input, children)
  } finally {
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
  }
}

async function crashSoak(
  input: Partial<CrashSoakOptions>,
  children: Set<ChildProcess>,
): Promise<CrashSoakResult> {
  const o: CrashSoakOptions = { ...CRASH_SOAK_DEFAULTS, ...input }
  const totalStarted = performance.now()
  const root = packageRoot()
  const entry = path.join(root, 'dist/src/index.js')
  const cli = path.join(root, 'dist/src/cli/main.js')
  if (!existsSync(entry) || !existsSync(cli)) throw new Error('dist/ is missing: npm run build')
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'fastify-tus-crash-'))
  const port = await freePort()
  const endpoint = `http://127.0.0.1:${port}/files`
  const problems: string[] = []
  const problem = (line: string) => {
    if (problems.length < 40) problems.push(line)
  }
  o.log(`seed ${o.seed}: server on port ${port}, directory ${directory}`)

  // The plan: every client's size, checksum choice, rate, start and bytes, from the seed.
  const random = prng(o.seed)
  const between = (min: number, max: number, r = random) => min + Math.floor(r() * (max - min + 1))
  const pool = dataPool(o.seed, 2 * o.maxSize)
  const clients: Client[] = Array.from({ length: o.clients }, (_, index) => {
    const size = between(Math.max(1, Math.floor(o.maxSize / 8)), o.maxSize)
    const start = between(0, o.maxSize)
    const data = pool.subarray(start, start + size)
    return {
      index,
      size,
      // The first ones, shuffled below: the share is exact.
      checksummed: index < Math.round(o.clients * o.checksumShare),
      rate: between(o.minRate, o.maxRate),
      startDelayMs: between(0, o.startSpreadMs),
      random: prng(o.seed * 7919 + index + 1),
      data,
      hash: sha256(data),
      agent: new http.Agent({ keepAlive: true, maxSockets: 1 }),
      url: '',
      id: '',
      offset: 0,
      patch: undefined,
      hold: undefined,
      finished: false,
      events: [],
    }
  })
  for (let i = clients.length - 1; i > 0; i--) {
    const j = between(0, i)
    const [a, b] = [clients[i] as Client, clients[j] as Client]
    ;[a.checksummed, b.checksummed] = [b.checksummed, a.checksummed]
  }
  const clientsById = new Map<string, Client>()
  /** An event of a client's timeline, at `at` (epoch ms; the server's clock is the same). */
  const note = (c: Client, event: string, at = Date.now()) => {
    c.events.push({ at, event })
    if (c.events.length > TIMELINE) c.events.shift()
  }
  const timeline = (c: Client) =>
    c.events
      .sort((a, b) => a.at - b.at)
      .map((e) => `${((e.at - uploadsEpoch) / 1000).toFixed(2)}s ${e.event}`)
      .join('; ')

  // ---- The server: a child process, killed and started again on the same directory and port.
  let serverSweeps = 0
  let serverSweepErrors = 0
  let serverSweepRemoved = 0
  let serverWarnings = 0
  let serverErrorLogs = 0
  let unexpectedExits = 0
  const script = `
    import Fastify from 'fastify'
    import fastifyTus from ${JSON.stringify(pathToFileURL(entry).href)}
    const app = Fastify({ logger: { level: 'debug' }, disableRequestLogging: true })
    // A trace of every request, for the timelines of the report.
    app.server.on('request', (req, res) => {
      const trace = (event) =>
        console.log(JSON.stringify({ trace: event, t: Date.now(), m: req.method, u: req.url, s: res.statusCode }))
      trace('got')
      res.on('close', () => trace(res.writableFinished ? 'answered' : 'closed unanswered'))
    })
    await app.register(fastifyTus, ${JSON.stringify({
      directory,
      expireAfterMs: o.expireAfterMs,
      cleanupIntervalMs: o.cleanupIntervalMs,
    })})
    // A client's connection attempt may hold the port for a moment (a self-connect): again.
    for (let attempt = 1; ; attempt++) {
      try {
        await app.listen({ host: '127.0.0.1', port: ${port} })
        break
      } catch (error) {
        if (error.code !== 'EADDRINUSE' || attempt === 40) throw error
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    }
    console.log(JSON.stringify({ crashSoakReady: true }))
    // Gone with the scenario's process, whatever ended it.
    process.stdin.on('end', () => process.exit(1)).resume()`

  function onLogLine(line: string) {
    let record: Record<string, unknown>
    try {
      record = JSON.parse(line)
    } catch {
      return // a line a kill cut short
    }
    if (record.crashSoakReady) return
    if (typeof record.trace === 'string') {
      const id = String(record.u).split('/').pop() ?? ''
      const client = clientsById.get(id)
      if (client) {
        const status = record.trace === 'got' ? '' : ` ${record.s}`
        note(client, `server ${record.trace} ${record.m}${status}`, Number(record.t))
      }
      return
    }
    if (typeof record.scanned === 'number' && typeof record.errors === 'number') {
      serverSweeps++
      serverSweepErrors += record.errors
      serverSweepRemoved += Number(record.removed) || 0
    }
    const level = Number(record.level)
    if (level >= 40) {
      if (level >= 50) serverErrorLogs++
      else serverWarnings++
      const err = record.err as { message?: string } | undefined
      problem(`server log (level ${level}): ${record.msg}${err ? `: ${err.message}` : ''}`)
    }
  }

  async function startServer(): Promise<ServerChild> {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      cwd: root,
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    children.add(child)
    const server: ServerChild = {
      child,
      killed: false,
      stderr: '',
      exited: new Promise((resolve) =>
        child.once('exit', () => {
          children.delete(child)
          resolve()
        }),
      ),
    }
    let pending = ''
    let onReady: () => void = () => {}
    const ready = new Promise<void>((resolve) => {
      onReady = resolve
    })
    child.stdout?.on('data', (chunk: Buffer) => {
      const lines = (pending + chunk.toString('utf8')).split('\n')
      pending = lines.pop() ?? ''
      for (const line of lines) {
        if (line.includes('"crashSoakReady"')) onReady()
        onLogLine(line)
      }
    })
    child.stderr?.on('data', (chunk: Buffer) => {
      server.stderr = (server.stderr + chunk.toString('utf8')).slice(-2000)
    })
    const outcome = await Promise.race([
      ready.then(() => 'ready' as const),
      server.exited.then(() => 'exited' as const),
      sleep(30_000).then(() => 'timeout' as const),
    ])
    if (outcome !== 'ready') {
      child.kill('SIGKILL')
      await server.exited
      throw new Error(`the server did not start (${outcome}): ${server.stderr.trim()}`)
    }
    void server.exited.then(() => {
      if (server.killed || stopping) return
      unexpectedExits++
      problem(`the server exited on its own (${child.exitCode}): ${server.stderr.trim()}`)
      if (current === server) restarting = startServer().then((s) => (current = s))
    })
    return server
  }

  async function kill(server: ServerChild) {
    server.killed = true
    server.child.kill('SIGKILL')
    await server.exited
  }

  let stopping = false
  let restarting: Promise<unknown> = Promise.resolve()
  let current = await startServer()

  // ---- What the clients see.
  const statuses: Record<string, number> = {}
  let client5xx = 0
  let checksumMismatches = 0
  let checksummedCuts = 0
  let plainCuts = 0
  let answersLost = 0
  let cutsBeforeBody = 0
  let offsetViolations = 0
  let creationsRetried = 0
  let rollbacksSeen = 0
  let cutBodies = 0
  let cutBodiesRolledBack = 0
  /**
   * Upload id → the offset its record was marked unverified from at a crash, and whether its data
   * file held bytes past it then.
   */
  const rollbackExpected = new Map<string, { from: number; bytesPast: boolean }>()
  let rollbacksExpected = 0
  const deadline = performance.now() + o.timeoutMs

  function exchange(
    c: Client,
    method: string,
    url: string,
    headers: Record<string, string>,
    body?: Buffer,
  ): Promise<Exchange> {
    return new Promise((resolve) => {
      let written = 0
      let settled = false
      const req = http.request(url, {
        method,
        agent: c.agent,
        headers: { 'Tus-Resumable': '1.0.0', ...headers },
      })
      const done = (result: { answer: Answer } | { error: Error }) => {
        if (settled) return
        settled = true
        if (body && written < body.length) req.destroy() // answered early: the socket is spent
        const key = 'answer' in result ? String(result.answer.status) : errorCode(result.error)
        statuses[key] = (statuses[key] ?? 0) + 1
        resolve({ ...result, written })
      }
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error('no answer (timeout)')))
      req.on('error', (error) => done({ error }))
      req.on('response', (res) => {
        res.resume()
        res.on('end', () => done({ answer: { status: res.statusCode ?? 0, headers: res.headers } }))
        res.on('error', (error) => done({ error }))
        res.on('close', () => {
          if (!res.complete) done({ error: new Error('answer cut short') })
        })
      })
      if (!body) {
        req.end()
        return
      }
      // The body in slices, at the client's rate: a slow client. The request is ended with its
      // last slice: the answer may come before that write's callback, and a request never ended
      // would hold the agent's socket until the server drops it.
      void (async () => {
        while (written < body.length && !settled) {
          while (c.hold) await c.hold
          if (settled) return
          const slice = body.subarray(written, written + o.sliceBytes)
          const last = written + slice.length === body.length
          const ok = await new Promise<boolean>((r) => {
            const callback = (error?: Error | null) => r(!error)
            if (last) req.end(slice, callback)
            else req.write(slice, callback)
          })
          if (!ok) return
          written += slice.length
          if (c.patch) c.patch.written = written
          if (!last) await sleep((slice.length / c.rate) * 1000)
        }
      })()
    })
  }

  function checkDeadline(c: Client, what: string) {
    if (performance.now() > deadline) throw new Error(`timed out ${what} (offset ${c.offset})`)
  }

  /** HEAD until the server answers 200 (it may be down, or the upload locked): its offset. */
  async function headOffset(c: Client): Promise<number> {
    for (;;) {
      checkDeadline(c, 'waiting for HEAD')
      const r = await exchange(c, 'HEAD', c.url, {})
      if ('error' in r) {
        await sleep(RETRY_MS)
        continue
      }
      const { status, headers } = r.answer
      if (status >= 500) {
        client5xx++
        problem(`client ${c.index}: HEAD answered ${status}`)
      }
      if (status === 200) {
        const offset = Number(headers['upload-offset'])
        if (headers['upload-length'] !== String(c.size) || !Number.isSafeInteger(offset)) {
          throw new Error(`HEAD said offset ${offset}, length ${headers['upload-length']}`)
        }
        const marked = rollbackExpected.get(c.id)
        if (marked !== undefined) {
          // The HEAD took the upload's lock, which rolls back: the data file is cut at the mark.
          // Nothing writes to it until this client's next PATCH.
          rollbackExpected.delete(c.id)
          const onDisk = (await fs.stat(path.join(directory, c.id)).catch(() => undefined))?.size
          if (offset === marked.from && onDisk === marked.from) {
            rollbacksSeen++
            if (marked.bytesPast) cutBodiesRolledBack++
          } else
            problem(
              `client ${c.index}: marked unverified from ${marked.from} at a crash ` +
                `(${marked.bytesPast ? 'with' : 'without'} bytes past it), then HEAD said ` +
                `${offset} with ${onDisk} B on disk`,
            )
        }
        note(c, `HEAD ${offset}`)
        return offset
      }
      if (status >= 500 || RETRY_STATUSES.has(status)) {
        await sleep(RETRY_MS)
        continue
      }
      throw new Error(`HEAD answered ${status}`)
    }
  }

  async function create(c: Client) {
    for (;;) {
      checkDeadline(c, 'creating the upload')
      const name = Buffer.from(`crash-${o.seed}-${c.index}.bin`).toString('base64')
      const r = await exchange(c, 'POST', endpoint, {
        'Upload-Length': String(c.size),
        'Upload-Metadata': `filename ${name}`,
      })
      if ('answer' in r && r.answer.status === 201) {
        c.url = new URL(String(r.answer.headers.location), endpoint).href
        c.id = c.url.slice(c.url.lastIndexOf('/') + 1)
        clientsById.set(c.id, c)
        note(c, `created ${c.id}`)
        return
      }
      if ('answer' in r && r.answer.status < 500)
        throw new Error(`POST answered ${r.answer.status}`)
      if ('answer' in r) {
        client5xx++
        problem(`client ${c.index}: POST answered ${r.answer.status}`)
      }
      creationsRetried++
      note(c, `POST failed: ${'error' in r ? errorCode(r.error) : r.answer.status}`)
      await sleep(RETRY_MS)
    }
  }

  async function upload(c: Client) {
    await create(c)
    while (c.offset < c.size) {
      checkDeadline(c, 'uploading')
      const start = c.offset
      const length = Math.min(c.size - start, between(o.minChunk, o.maxChunk, c.random))
      const body = c.data.subarray(start, start + length)
      const headers: Record<string, string> = {
        'Upload-Offset': String(start),
        'Content-Type': 'application/offset+octet-stream',
        'Content-Length': String(length),
      }
      if (c.checksummed) {
        headers['Upload-Checksum'] = `sha1 ${createHash('sha1').update(body).digest('base64')}`
      }
      c.patch = { start, length, written: 0 }
      const r = await exchange(c, 'PATCH', c.url, headers, body)
      c.patch = undefined
      if ('answer' in r && r.answer.status === 204) {
        const offset = Number(r.answer.headers['upload-offset'])
        if (offset !== start + length) {
          offsetViolations++
          problem(`client ${c.index}: 204 with offset ${offset} after ${length} B at ${start}`)
          c.offset = await headOffset(c)
        } else c.offset = offset
        continue
      }
      if ('error' in r) {
        const cut = r.written > 0 && r.written < length
        if (cut && c.checksummed) checksummedCuts++
        else if (cut) plainCuts++
        else if (r.written === length) answersLost++
        else cutsBeforeBody++
        note(c, `PATCH ${start}+${length} failed after ${r.written} B: ${errorCode(r.error)}`)
      } else {
        const { status } = r.answer
        note(c, `PATCH ${start}+${length} answered ${status}`)
        if (status >= 500 || status === 460) {
          // Every checksum the clients send is right: a 460 means the server hashed other bytes.
          if (status === 460) checksumMismatches++
          else client5xx++
          problem(`client ${c.index}: PATCH ${start}+${length} answered ${status}`)
        } else if (!RETRY_STATUSES.has(status)) throw new Error(`PATCH answered ${status}`)
      }
      // Never assume: the server says where the upload is. A checksummed body is all or nothing.
      const offset = await headOffset(c)
      const within = c.checksummed
        ? offset === start || offset === start + length
        : offset >= start && offset <= start + length
      if (!within) {
        offsetViolations++
        problem(
          `client ${c.index} (${c.checksummed ? 'checksummed' : 'plain'}): after a failed PATCH of ` +
            `${length} B at ${start}, the server said ${offset}`,
        )
      }
      c.offset = offset
    }
    c.finished = true
  }

  let failed = 0
  async function runClient(c: Client) {
    await sleep(c.startDelayMs)
    try {
      await upload(c)
    } catch (error) {
      failed++
      problem(
        `client ${c.index} (${c.size} B, ${c.checksummed ? 'checksummed' : 'plain'}, ${c.id}): ` +
          `${(error as Error).message}; last events: ${timeline(c)}`,
      )
    }
  }

  // ---- The crasher: SIGKILL at random points of the progress, with a checksummed body mid-way.
  const totalBytes = clients.reduce((n, c) => n + c.size, 0)
  const progress = () => clients.reduce((n, c) => n + c.offset, 0) / Math.max(1, totalBytes)
  const crashes: CrashRecord[] = []
  let recordsRead = 0
  const badRecords: string[] = []
  let uploadsDone = false
  let uploadsStarted = performance.now()
  let uploadsEpoch = Date.now()

  /** The directory while the server is down: every record must parse. */
  async function inspect(record: CrashRecord) {
    for (const name of await fs.readdir(directory)) {
      if (name.startsWith(TEMP_PREFIX)) record.tempFiles++
      if (name.startsWith('.') || !name.endsWith(METADATA_SUFFIX)) continue
      const parsed = await readRecord(name)
      record.records++
      if (!parsed) continue
      const from = parsed[UNVERIFIED_FROM]
      if (typeof from !== 'number') continue
      record.unverifiedMarks++
      const id = name.slice(0, -METADATA_SUFFIX.length)
      const size = (await fs.stat(path.join(directory, id)).catch(() => undefined))?.size ?? 0
      if (size > from) record.unverifiedBytes++
      // Still there from an earlier crash: the client has not come back yet.
      const earlier = rollbackExpected.get(id)
      if (!earlier) rollbacksExpected++
      const bytesPast = size > from || earlier?.bytesPast === true
      if (bytesPast && !earlier?.bytesPast) cutBodies++
      rollbackExpected.set(id, { from, bytesPast })
    }
  }

  /** The data file of `id` holds bytes past `from`, and its record is marked unverified from it. */
  async function unverifiedBytesOnDisk(id: string, from: number): Promise<boolean> {
    const size = (await fs.stat(path.join(directory, id)).catch(() => undefined))?.size ?? 0
    if (size <= from) return false
    const text = await fs.readFile(path.join(directory, id + METADATA_SUFFIX), 'utf8')
    try {
      return JSON.parse(text)?.[UNVERIFIED_FROM] === from
    } catch {
      return false // being replaced
    }
  }

  /**
   * Holds a checksummed client mid-body (it sends no more of it) until some of its bytes are in
   * the data file past the record's mark: a kill then cuts a body whose digest cannot have been
   * checked, and the next access must roll it back. The plan's first kill waits for one, so that
   * every run rolls back at least one body. Resolves to the function that lets the client go on,
   * or `undefined` when the uploads ended first.
   */
  async function holdMidBody(): Promise<{ id: string; release: () => void } | undefined> {
    while (!uploadsDone) {
      const c = clients.find(
        (c) => c.checksummed && c.patch && c.patch.written > 0 && c.patch.written < c.patch.length,
      )
      const patch = c?.patch
      if (!c || !patch) {
        await sleep(2)
        continue
      }
      let release: () => void = () => {}
      c.hold = new Promise<void>((resolve) => {
        release = () => {
          c.hold = undefined
          resolve()
        }
      })
      const until = performance.now() + HELD_BYTES_WAIT_MS
      while (c.patch === patch && performance.now() < until) {
        if (await unverifiedBytesOnDisk(c.id, patch.start)) return { id: c.id, release }
        await sleep(5)
      }
      // Its last slice was already on its way (the PATCH ended), or its bytes never showed.
      if (c.patch === patch) {
        problem(`client ${c.index}: held mid-body, no byte reached the data file past the mark`)
      }
      release()
    }
    return undefined
  }

  async function readRecord(name: string): Promise<Record<string, unknown> | undefined> {
    recordsRead++
    const text = await fs.readFile(path.join(directory, name), 'utf8').catch(() => undefined)
    if (text === undefined) return undefined // removed meanwhile (at the end, the server is up)
    try {
      const parsed = JSON.parse(text)
      if (parsed?.id !== name.slice(0, -METADATA_SUFFIX.length)) {
        badRecords.push(`${name}: id ${JSON.stringify(parsed?.id)}`)
        return undefined
      }
      return parsed
    } catch {
      badRecords.push(`${name}: ${JSON.stringify(text.slice(0, 80))}`)
      return undefined
    }
  }

  const crasher = async () => {
    let lastStart = performance.now()
    for (let k = 0; k < o.crashes; k++) {
      // Stratified: one crash in each of `crashes` slices of 5% to 90% of the progress.
      const target = 0.05 + (0.85 * (k + random())) / o.crashes
      while (!uploadsDone && (progress() < target || performance.now() - lastStart < o.minUpMs)) {
        await sleep(10)
      }
      const midBody = () =>
        clients.filter(
          (c) =>
            c.checksummed && c.patch && c.patch.written > 0 && c.patch.written < c.patch.length,
        ).length
      const held = k === 0 ? await holdMidBody() : undefined
      const waitUntil = performance.now() + MID_BODY_WAIT_MS
      while (!uploadsDone && midBody() === 0 && performance.now() < waitUntil) await sleep(2)
      if (uploadsDone) {
        held?.release()
        return
      }
      const record: CrashRecord = {
        atMs: performance.now() - uploadsStarted,
        progress: progress(),
        patchesInFlight: clients.filter((c) => c.patch).length,
        checksummedMidBody: midBody(),
        records: 0,
        unverifiedMarks: 0,
        unverifiedBytes: 0,
        tempFiles: 0,
        downMs: 0,
        held: held?.id,
      }
      const killedAt = performance.now()
      await restarting
      await kill(current)
      held?.release()
      for (const c of clients) note(c, `KILL ${k + 1}`)
      await inspect(record)
      await sleep(between(o.minDownMs, o.maxDownMs))
      current = await startServer()
      for (const c of clients) note(c, 'server up')
      lastStart = performance.now()
      record.downMs = lastStart - killedAt
      crashes.push(record)
      o.log(
        `crash ${k + 1} at ${(record.atMs / 1000).toFixed(1)} s, ${Math.round(record.progress * 100)}%: ` +
          `${record.patchesInFlight} PATCHes in flight (${record.checksummedMidBody} checksummed mid-body), ` +
          `${record.unverifiedMarks} marks (${record.unverifiedBytes} with bytes to roll back), ` +
          `${record.tempFiles} temp files; down ${record.downMs.toFixed(0)} ms`,
      )
    }
  }

  uploadsStarted = performance.now()
  uploadsEpoch = Date.now()
  const crashing = crasher().catch((error: unknown) => problem(`crasher: ${String(error)}`))
  await Promise.all(clients.map(runClient))
  uploadsDone = true
  await crashing
  await restarting
  const uploadsMs = performance.now() - uploadsStarted
  o.log(`uploads settled after ${(uploadsMs / 1000).toFixed(1)} s; verifying`)

  // ---- With the server up: records, HEAD, bytes.
  const verifyStarted = performance.now()
  const unverifiedLeft: string[] = []
  for (const name of await fs.readdir(directory)) {
    if (name.startsWith('.') || !name.endsWith(METADATA_SUFFIX)) continue
    const parsed = await readRecord(name)
    if (parsed && UNVERIFIED_FROM in parsed)
      unverifiedLeft.push(`${name}: ${parsed[UNVERIFIED_FROM]}`)
  }
  const finishedIds = new Set<string>()
  let finished = 0
  let intact = 0
  for (const c of clients.filter((c) => c.finished)) {
    const r = await exchange(c, 'HEAD', c.url, {})
    const headOk =
      'answer' in r &&
      r.answer.status === 200 &&
      r.answer.headers['upload-offset'] === String(c.size) &&
      r.answer.headers['upload-length'] === String(c.size)
    if (!headOk) {
      problem(
        `client ${c.index}: final HEAD ${'answer' in r ? `${r.answer.status} offset ${r.answer.headers['upload-offset']}` : errorCode(r.error)}`,
      )
      continue
    }
    finished++
    finishedIds.add(c.id)
    const file = path.join(directory, c.id)
    const onDisk = await fs.readFile(file).catch(() => undefined)
    if (onDisk && onDisk.length === c.size && sha256(onDisk) === c.hash) intact++
    else {
      const at = onDisk ? firstDifference(onDisk, c.data) : -1
      problem(
        `client ${c.index} (${c.checksummed ? 'checksummed' : 'plain'}): ${file} is ${onDisk?.length ?? 'missing'}` +
          `/${c.size} B, sha256 differs${at >= 0 ? ` from byte ${at}` : ''}; last events: ${timeline(c)}`,
      )
    }
  }
  for (const c of clients) c.agent.destroy()
  const verifyMs = performance.now() - verifyStarted

  // ---- The server down for good; whatever the crashes left is aged, then swept.
  stopping = true
  await kill(current)
  const sweepStarted = performance.now()
  const leftovers = { tempFiles: 0, orphanData: 0, orphanRecords: 0, unfinished: 0 }
  const before = new Set(await fs.readdir(directory))
  const old = new Date(Date.now() - 3_600_000)
  for (const name of before) {
    // The finished uploads too: a sweep must keep them, however old.
    await fs.utimes(path.join(directory, name), old, old)
    if (name.startsWith(TEMP_PREFIX)) leftovers.tempFiles++
    else if (name.startsWith('.')) continue
    else if (name.endsWith(METADATA_SUFFIX)) {
      const id = name.slice(0, -METADATA_SUFFIX.length)
      if (!before.has(id)) leftovers.orphanRecords++
    } else if (!finishedIds.has(name)) {
      if (before.has(name + METADATA_SUFFIX)) leftovers.unfinished++
      else leftovers.orphanData++
    }
  }
  const sweep = await runCli(cli, ['sweep', '--dir', directory, '--expire-after', '1ms', '--json'])
  const finalSweep = { exitCode: sweep.code, scanned: 0, removed: 0, orphans: 0, errors: -1 }
  try {
    const { report } = JSON.parse(sweep.stdout)
    Object.assign(finalSweep, {
      scanned: report.scanned,
      removed: report.removed,
      orphans: report.orphans,
      errors: report.errors,
    })
  } catch {
    problem(
      `final sweep (exit ${sweep.code}): ${sweep.stdout.slice(0, 300)} ${sweep.stderr.slice(0, 300)}`,
    )
  }
  if (sweep.code !== 0 || finalSweep.errors !== 0) problem(`final sweep: ${sweep.stderr.trim()}`)
  const after = await fs.readdir(directory)
  const expected = new Set([...finishedIds].flatMap((id) => [id, id + METADATA_SUFFIX]))
  const strayAfterSweep = after.filter((name) => !expected.has(name))
  const missingAfterSweep = [...expected].filter((name) => !after.includes(name))
  const sweepMs = performance.now() - sweepStarted

  const { log: _log, ...plainOptions } = o
  const result: Omit<CrashSoakResult, 'checks' | 'ok' | 'directoryKept'> = {
    options: plainOptions,
    port,
    directory,
    clients: clients.length,
    checksummedClients: clients.filter((c) => c.checksummed).length,
    totalBytes,
    finished,
    intact,
    failed,
    crashes,
    checksummedCuts,
    plainCuts,
    answersLost,
    cutsBeforeBody,
    rollbacksExpected,
    rollbacksSeen,
    cutBodies,
    cutBodiesRolledBack,
    offsetViolations,
    creationsRetried,
    statuses,
    client5xx,
    checksumMismatches,
    recordsRead,
    badRecords,
    unverifiedLeft,
    leftovers,
    finalSweep,
    strayAfterSweep,
    missingAfterSweep,
    serverSweeps,
    serverSweepErrors,
    serverSweepRemoved,
    serverWarnings,
    serverErrorLogs,
    unexpectedExits,
    durations: { uploadsMs, verifyMs, sweepMs, totalMs: 0 },
    problems,
  }
  const list = (names: string[]) =>
    names.length === 0
      ? 'none'
      : names.slice(0, LISTED).join(', ') + (names.length > LISTED ? ', ...' : '')
  const checks: CrashSoakCheck[] = [
    {
      name: 'every client finished its upload (its last answer and a final HEAD: offset == length)',
      ok: finished === o.clients && failed === 0,
      value: `${finished}/${o.clients}, ${failed} failed`,
    },
    {
      name: 'every finished upload is byte-identical to what its client sent (sha256, size)',
      ok: intact === o.clients,
      value: `${intact}/${o.clients}`,
    },
    {
      name: 'every record on disk parsed, with the id of its name (at every crash and at the end)',
      ok: badRecords.length === 0 && recordsRead > 0,
      value: `${recordsRead} read, ${badRecords.length} bad: ${list(badRecords)}`,
    },
    {
      name: `no record still carries ${UNVERIFIED_FROM} at the end`,
      ok: unverifiedLeft.length === 0,
      value: list(unverifiedLeft),
    },
    {
      name: 'after a failed PATCH the server offset was within what was sent (checksummed: all or nothing)',
      ok: offsetViolations === 0,
      value: String(offsetViolations),
    },
    {
      name: 'every record marked unverified at a crash was rolled back: next HEAD and data file at the mark',
      ok: rollbacksSeen === rollbacksExpected,
      value: `${rollbacksSeen}/${rollbacksExpected}`,
    },
    {
      name: 'kills cut checksummed bodies with bytes past their mark (the first kill holds one), and each was rolled back',
      ok:
        cutBodies > 0 &&
        cutBodiesRolledBack === cutBodies &&
        crashes[0]?.held !== undefined &&
        (crashes[0]?.unverifiedBytes ?? 0) > 0,
      value: `${cutBodiesRolledBack}/${cutBodies}; first kill held ${crashes[0]?.held ?? 'none'}`,
    },
    {
      name: `the server was killed ${o.crashes} times, each with PATCHes in flight`,
      ok: crashes.length === o.crashes && crashes.every((c) => c.patchesInFlight > 0),
      value: crashes.map((c) => c.patchesInFlight).join(', ') || 'none',
    },
    {
      name: 'crashes cut checksummed PATCHes mid-body (clients saw it)',
      ok: checksummedCuts > 0,
      value: `${checksummedCuts} (and ${plainCuts} plain)`,
    },
    {
      name: 'no 5xx answer (connection failures during crashes aside), no 460 (checksum mismatch)',
      ok: client5xx === 0 && checksumMismatches === 0,
      value: `${client5xx}, ${checksumMismatches}`,
    },
    {
      name: 'the server never exited on its own and logged no error; its sweeps had no error',
      ok:
        unexpectedExits === 0 &&
        serverErrorLogs === 0 &&
        serverSweepErrors === 0 &&
        serverSweeps > 0,
      value: `${unexpectedExits} exits, ${serverErrorLogs} error logs, ${serverSweeps} sweeps with ${serverSweepErrors} errors`,
    },
    {
      name: 'the final sweep (CLI, --expire-after 1 on aged files) ran with no error',
      ok: finalSweep.exitCode === 0 && finalSweep.errors === 0,
      value: `exit ${finalSweep.exitCode}, removed ${finalSweep.removed} (${finalSweep.orphans} orphans), errors ${finalSweep.errors}`,
    },
    {
      name: 'after it the directory holds exactly the finished uploads and their records',
      ok:
        strayAfterSweep.length === 0 &&
        missingAfterSweep.length === 0 &&
        finishedIds.size === o.clients,
      value: `${after.length} entries, stray: ${list(strayAfterSweep)}, missing: ${list(missingAfterSweep)}`,
    },
  ]
  const ok = checks.every((c) => c.ok)
  const directoryKept = !ok || o.keepDirectory
  if (!directoryKept) await fs.rm(directory, { recursive: true, force: true })
  result.durations.totalMs = performance.now() - totalStarted
  return { ...result, directoryKept, checks, ok }
}

function errorCode(error: Error): string {
  return (error as NodeJS.ErrnoException).code ?? error.message
}

function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i
  return a.length === b.length ? -1 : n
}

function runCli(cli: string, args: string[]) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => {
      stdout += chunk
    })
    child.stderr.on('data', (chunk) => {
      stderr += chunk
    })
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

/** The result as a readable table, for the script and for failing tests. */
export function formatCrashSoak(r: CrashSoakResult): string {
  const o = r.options
  const size = (bytes: number) =>
    bytes >= MiB ? `${(bytes / MiB).toFixed(1)} MiB` : `${(bytes / KiB).toFixed(0)} KiB`
  const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`
  const sum = (key: 'unverifiedMarks' | 'unverifiedBytes') =>
    r.crashes.reduce((n, c) => n + c[key], 0)
  const rows: Array<[string, string]> = [
    [
      'clients',
      `${r.clients} (${r.checksummedClients} checksummed, ${r.clients - r.checksummedClients} plain)`,
    ],
    ['bytes planned', size(r.totalBytes)],
    ['finished (final HEAD offset == length)', `${r.finished}/${r.clients}, ${r.failed} failed`],
    ['byte-identical (sha256)', `${r.intact}/${r.clients}`],
    ['crashes (SIGKILL)', String(r.crashes.length)],
    ...r.crashes.map((c, i): [string, string] => [
      `  crash ${i + 1}`,
      `at ${s(c.atMs)} (${Math.round(c.progress * 100)}%), ${c.patchesInFlight} PATCHes in flight ` +
        `(${c.checksummedMidBody} checksummed mid-body${c.held ? `, ${c.held} held` : ''}), ${c.records} records, ` +
        `${c.unverifiedMarks} marked (${c.unverifiedBytes} with bytes past the mark), ${c.tempFiles} temp; ` +
        `down ${c.downMs.toFixed(0)} ms`,
    ]),
    ['checksummed PATCHes cut mid-body', String(r.checksummedCuts)],
    ['plain PATCHes cut mid-body', String(r.plainCuts)],
    ['PATCHes lost before their body, after it', `${r.cutsBeforeBody}, ${r.answersLost}`],
    [
      'marked unverified at a crash (with bytes past the mark)',
      `${sum('unverifiedMarks')} (${sum('unverifiedBytes')})`,
    ],
    ['  rolled back (next HEAD, data file)', `${r.rollbacksSeen}/${r.rollbacksExpected}`],
    ['  of them with bytes past the mark', `${r.cutBodiesRolledBack}/${r.cutBodies}`],
    ['server offset outside what was sent', String(r.offsetViolations)],
    ['creations retried', String(r.creationsRetried)],
    [
      'answers by status (client side)',
      Object.entries(r.statuses)
        .map(([status, n]) => `${status}: ${n}`)
        .join(', '),
    ],
    ['5xx, 460 answers', `${r.client5xx}, ${r.checksumMismatches}`],
    ['records read (crashes, end), bad', `${r.recordsRead}, ${r.badRecords.length}`],
    ['records still marked at the end', String(r.unverifiedLeft.length)],
    [
      'left before the final sweep',
      `${r.leftovers.tempFiles} temp records, ${r.leftovers.orphanData} orphan data, ` +
        `${r.leftovers.orphanRecords} orphan records, ${r.leftovers.unfinished} unfinished uploads`,
    ],
    [
      'final sweep (CLI)',
      `exit ${r.finalSweep.exitCode}, scanned ${r.finalSweep.scanned}, removed ${r.finalSweep.removed} ` +
        `(${r.finalSweep.orphans} orphans), errors ${r.finalSweep.errors}`,
    ],
    ['after it: stray, missing', `${r.strayAfterSweep.length}, ${r.missingAfterSweep.length}`],
    [
      'server sweeps during the run',
      `${r.serverSweeps}, ${r.serverSweepErrors} errors, ${r.serverSweepRemoved} removed`,
    ],
    [
      'server warnings, error logs, exits on its own',
      `${r.serverWarnings}, ${r.serverErrorLogs}, ${r.unexpectedExits}`,
    ],
    ['uploads phase', s(r.durations.uploadsMs)],
    ['verification', s(r.durations.verifyMs)],
    ['final sweep', s(r.durations.sweepMs)],
    ['total', s(r.durations.totalMs)],
  ]
  const width = Math.max(...rows.map(([k]) => k.length))
  const lines = [
    `fastify-tus crash soak: ${o.clients} clients of ${size(o.maxSize / 8)} to ${size(o.maxSize)}, ` +
      `chunks of ${size(o.minChunk)} to ${size(o.maxChunk)} at ${size(o.minRate)}/s to ${size(o.maxRate)}/s, ` +
      `${o.crashes} kills -9, cleanupIntervalMs ${o.cleanupIntervalMs}, seed ${o.seed}`,
    '',
    ...rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`),
    '',
    ...r.checks.map((c) => `${c.ok ? 'ok  ' : 'FAIL'}  ${c.name}: ${c.value}`),
  ]
  if (r.problems.length > 0) lines.push('', 'problems:', ...r.problems.map((p) => `  ${p}`))
  if (r.directoryKept) lines.push('', `upload directory kept: ${r.directory}`)
  lines.push('', r.ok ? 'crash soak passed' : `crash soak FAILED (seed ${o.seed})`)
  return lines.join('\n')
}
