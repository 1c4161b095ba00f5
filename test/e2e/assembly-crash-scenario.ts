/**
 * The crash soak of the assembly (issue 27): parallel uploads whose finals are assembled while
 * the server is killed with SIGKILL (each kill lands while a final's copy is under way) and
 * restarted on the same directory and port, and whose clients, half of them, go away as soon as
 * their final's assembly starts and send the final again, as tus-js-client does after an error.
 *
 * Checked: every client learns a final, byte-identical to its parts; a kill leaves no copy
 * writing (the temporary file stops growing) and the restart removes it at once; every record
 * parses; a final nobody was told of (a crash's duplicate) is marked so; then a sweep past the
 * period leaves exactly the finals the clients know. Run by test/e2e/assembly-crash-soak.test.ts and
 * `npm run soak -- --assembly`.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import fs from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { TEMP_PREFIX } from '../../src/backends/file/names.js'
import { closedByAll } from '../helpers/proc.js'
import { freePort } from './crash-scenario.js'
import { dataPool, prng } from './soak-scenario.js'

export interface AssemblySoakOptions {
  clients: number
  partsPerClient: number
  /** Part sizes are drawn from this range. */
  minPart: number
  maxPart: number
  /** Clients start one after the other, this far apart: their assemblies too. */
  spreadMs: number
  /** SIGKILLs, each while a final is being assembled (or after `crashWaitMs` without one). */
  crashes: number
  crashWaitMs: number
  seed: number
  /** The package root: its dist/ holds the demo server and the CLI. */
  root: string
  log: (line: string) => void
}

const MiB = 1024 * 1024

export const ASSEMBLY_SOAK_DEFAULTS: Omit<AssemblySoakOptions, 'root' | 'log'> = {
  clients: 12,
  partsPerClient: 4,
  minPart: 4 * MiB,
  maxPart: 32 * MiB,
  spreadMs: 1500,
  crashes: 8,
  crashWaitMs: 6000,
  seed: 1,
}

export interface AssemblySoakResult {
  seed: number
  /** Clients that learned a final, and of them those whose final is byte-identical. */
  learned: number
  intact: number
  /** Kills, and of them those that landed mid-copy (an assembly's temporary file on disk). */
  kills: number
  midCopy: number
  /** Temporary files that grew after their server was killed, or outlived the restart's sweep. */
  grewAfterKill: string[]
  leftAfterRestart: string[]
  /** Clients that went away mid-assembly, and the retried creations answered with a final. */
  gone: number
  retriesAnswered: number
  badRecords: string[]
  /** Finals on disk that no client knows of, and of them those not marked `answer_pending`. */
  unknownFinals: number
  unknownUnmarked: string[]
  /** Finals a client knows that are still marked `answer_pending` (they would expire). */
  knownMarked: string[]
  /** After a sweep past the period: files that should not be there, known finals missing. */
  strayAfterSweep: string[]
  missingAfterSweep: string[]
  /** 5xx answers clients got while the server was up. */
  serverErrors: number
  durationMs: number
}

interface Part {
  url: string
  data: Buffer
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex')

export async function runAssemblyCrashSoak(o: AssemblySoakOptions): Promise<AssemblySoakResult> {
  const started = performance.now()
  const server = path.join(o.root, 'dist/demo/server.js')
  const cli = path.join(o.root, 'dist/src/cli/main.js')
  if (!existsSync(server) || !existsSync(cli)) throw new Error('dist/ is missing: npm run build')
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'fastify-tus-assembly-crash-'))
  const port = await freePort()
  const endpoint = `http://127.0.0.1:${port}/files`
  const random = prng(o.seed)
  const pool = dataPool(o.seed, 2 * o.maxPart)
  const result: AssemblySoakResult = {
    seed: o.seed,
    learned: 0,
    intact: 0,
    kills: 0,
    midCopy: 0,
    grewAfterKill: [],
    leftAfterRestart: [],
    gone: 0,
    retriesAnswered: 0,
    badRecords: [],
    unknownFinals: 0,
    unknownUnmarked: [],
    knownMarked: [],
    strayAfterSweep: [],
    missingAfterSweep: [],
    serverErrors: 0,
    durationMs: 0,
  }
  const env = {
    PATH: process.env.PATH,
    PORT: String(port),
    UPLOAD_DIR: directory,
    EXPIRE_AFTER_MS: '3600000',
    CLEANUP_INTERVAL_MS: '200',
    LOG_LEVEL: 'info',
  }
  let child = await startServer(server, env)
  try {
    const finals = new Map<number, { id: string; hash: string }>()
    const clients = Array.from({ length: o.clients }, (_, index) =>
      runClient(index, index % 2 === 1).then((final) => finals.set(index, final)),
    )
    const crasher = (async () => {
      for (let n = 0; n < o.crashes; n++) {
        const temps = await assemblyUnderWay(directory, o.crashWaitMs)
        if (temps.length > 0) result.midCopy++
        child.kill('SIGKILL')
        await new Promise((resolve) => child.once('exit', resolve))
        result.kills++
        // The kernel kills the copy with its server (a copy call under way ends first): once
        // nothing holds the files open, they must not grow.
        for (const name of temps) {
          await closedByAll(path.join(directory, name)).catch(() => result.grewAfterKill.push(name))
        }
        const sizes = await sizesOf(directory, temps)
        await sleep(300)
        for (const [name, size] of await sizesOf(directory, temps)) {
          if (size !== sizes.get(name)) result.grewAfterKill.push(name)
        }
        child = await startServer(server, env)
        // The restart's first sweep removes a dead assembly's file at once.
        await sleep(1000)
        for (const name of temps) {
          if (existsSync(path.join(directory, name))) result.leftAfterRestart.push(name)
        }
        o.log(`kill ${n + 1}: ${temps.length} assembly file(s) under way`)
        await sleep(200 + Math.floor(random() * 400))
      }
    })()
    await Promise.all([...clients, crasher])
    await checkStore(directory, finals, result)
    child.kill('SIGTERM')
    await new Promise((resolve) => child.once('exit', resolve))
    await sweepPastPeriod(directory, cli, finals, result)
    result.durationMs = Math.round(performance.now() - started)
    return result
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    const failed = result.learned !== o.clients || result.intact !== o.clients
    if (!failed) await fs.rm(directory, { recursive: true, force: true })
    else o.log(`directory kept: ${directory}`)
  }

  /** One parallel upload: its parts, then its final, sent again until a final is known. */
  async function runClient(index: number, goesAway: boolean) {
    const r = prng(o.seed * 7919 + index + 1)
    await sleep(index * o.spreadMs + Math.floor(r() * o.spreadMs))
    const parts: Part[] = []
    for (let i = 0; i < o.partsPerClient; i++) {
      const size = o.minPart + Math.floor(r() * (o.maxPart - o.minPart + 1))
      const from = Math.floor(r() * o.maxPart)
      const data = pool.subarray(from, from + size)
      parts.push({ url: await uploadPart(data), data })
    }
    const header = `final;${parts.map((p) => p.url).join(' ')}`
    if (goesAway) {
      result.gone++
      await postAndLeave(header)
    }
    for (;;) {
      const answer = await send('POST', endpoint, { 'Upload-Concat': header })
      if (answer?.status === 201) {
        if (goesAway) result.retriesAnswered++
        const id = String(answer.headers.location).split('/').pop() as string
        result.learned++
        return { id, hash: sha256(Buffer.concat(parts.map((p) => p.data))) }
      }
      await sleep(25)
    }
  }

  /** A partial upload of `data`, resumed from the server's offset through any crash. */
  async function uploadPart(data: Buffer): Promise<string> {
    let url: string | undefined
    while (!url) {
      const answer = await send('POST', endpoint, {
        'Upload-Concat': 'partial',
        'Upload-Length': String(data.length),
      })
      if (answer?.status === 201) url = new URL(String(answer.headers.location), endpoint).href
      else await sleep(25)
    }
    for (;;) {
      const state = await send('HEAD', url, {})
      const offset = Number(state?.headers['upload-offset'])
      if (state?.status === 200 && offset === data.length) return url
      if (state?.status !== 200 || !Number.isSafeInteger(offset)) {
        await sleep(25)
        continue
      }
      await send(
        'PATCH',
        url,
        { 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream' },
        data.subarray(offset),
      )
    }
  }

  /** Sends the final's creation and closes the socket once its assembly is under way. */
  async function postAndLeave(header: string): Promise<void> {
    const socket = net.connect(port, '127.0.0.1')
    socket.on('error', () => {})
    socket.write(
      `POST /files HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nTus-Resumable: 1.0.0\r\n` +
        `Upload-Concat: ${header}\r\nContent-Length: 0\r\n\r\n`,
    )
    await assemblyUnderWay(directory, 2000)
    socket.destroy()
  }

  /** One request; `undefined` when the server is down or the connection broke. */
  function send(
    method: string,
    url: string,
    headers: Record<string, string>,
    body?: Buffer,
  ): Promise<{ status: number; headers: http.IncomingHttpHeaders } | undefined> {
    return new Promise((resolve) => {
      const req = http.request(url, {
        method,
        agent: false,
        headers: { 'Tus-Resumable': '1.0.0', 'Content-Length': body?.length ?? 0, ...headers },
      })
      req.setTimeout(30_000, () => req.destroy())
      req.on('response', (res) => {
        res.resume()
        res.on('end', () => {
          if ((res.statusCode ?? 0) >= 500) result.serverErrors++
          resolve({ status: res.statusCode ?? 0, headers: res.headers })
        })
        res.on('error', () => resolve(undefined))
      })
      req.on('error', () => resolve(undefined))
      req.end(body)
    })
  }
}

/** The names of assembly files (`.fastify-tus-tmp.*` data, not records) once one is there. */
async function assemblyUnderWay(directory: string, waitMs: number): Promise<string[]> {
  const until = performance.now() + waitMs
  for (;;) {
    const names = (await fs.readdir(directory)).filter(
      (name) => name.startsWith(TEMP_PREFIX) && !name.endsWith('.json'),
    )
    if (names.length > 0 || performance.now() > until) return names
    await sleep(5)
  }
}

async function sizesOf(directory: string, names: string[]): Promise<Map<string, number>> {
  const sizes = new Map<string, number>()
  for (const name of names) {
    const stats = await fs.stat(path.join(directory, name)).catch(() => undefined)
    if (stats) sizes.set(name, stats.size)
  }
  return sizes
}

/** Records parse; the known finals are whole; any other final is marked as nobody's. */
async function checkStore(
  directory: string,
  finals: Map<number, { id: string; hash: string }>,
  result: AssemblySoakResult,
): Promise<void> {
  const known = new Set([...finals.values()].map((f) => f.id))
  for (const { id, hash } of finals.values()) {
    const data = await fs.readFile(path.join(directory, id)).catch(() => undefined)
    if (data && sha256(data) === hash) result.intact++
  }
  for (const name of await fs.readdir(directory)) {
    if (!name.endsWith('.json')) continue
    let record: Record<string, unknown>
    try {
      record = JSON.parse(await fs.readFile(path.join(directory, name), 'utf8'))
    } catch {
      result.badRecords.push(name)
      continue
    }
    if (record.concat !== 'final') continue
    if (known.has(String(record.id))) {
      if (record.answer_pending !== undefined) result.knownMarked.push(String(record.id))
      continue
    }
    result.unknownFinals++
    if (record.answer_pending !== true) result.unknownUnmarked.push(String(record.id))
  }
}

/** Everything but the known finals aged past the period, then the CLI's sweep. */
async function sweepPastPeriod(
  directory: string,
  cli: string,
  finals: Map<number, { id: string; hash: string }>,
  result: AssemblySoakResult,
): Promise<void> {
  const past = new Date(Date.now() - 2 * 3_600_000)
  for (const name of await fs.readdir(directory)) {
    if (!name.startsWith('.')) await fs.utimes(path.join(directory, name), past, past)
  }
  await new Promise<void>((resolve, reject) => {
    const run = spawn(process.execPath, [cli, 'sweep', '--dir', directory, '--expire-after', '1h'])
    run.on('error', reject)
    run.on('exit', () => resolve())
  })
  const expected = [...finals.values()].flatMap(({ id }) => [id, `${id}.json`]).sort()
  const left = (await fs.readdir(directory)).filter((name) => !name.startsWith('.')).sort()
  result.strayAfterSweep = left.filter((name) => !expected.includes(name))
  result.missingAfterSweep = expected.filter((name) => !left.includes(name))
}

/** The demo server on `env`; resolves once it listens (it may take a restart's port back). */
async function startServer(script: string, env: Record<string, string | undefined>) {
  for (let attempt = 0; attempt < 100; attempt++) {
    const child = spawn(process.execPath, [script], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    const listening = await new Promise<boolean>((resolve) => {
      let out = ''
      child.stdout?.on('data', (chunk) => {
        out += chunk
        if (out.includes('Server listening at')) resolve(true)
      })
      child.once('exit', () => resolve(false))
    })
    if (listening) return child as ChildProcess
    await sleep(50)
  }
  throw new Error(`the server (${script}) did not start`)
}

/** Whether every check holds for a run of `clients` clients (half of them gone mid-assembly). */
export function assemblySoakOk(r: AssemblySoakResult, clients: number): boolean {
  return (
    r.learned === clients &&
    r.intact === clients &&
    r.midCopy > 0 &&
    r.grewAfterKill.length === 0 &&
    r.leftAfterRestart.length === 0 &&
    r.retriesAnswered === r.gone &&
    r.badRecords.length === 0 &&
    r.unknownUnmarked.length === 0 &&
    r.knownMarked.length === 0 &&
    r.serverErrors === 0 &&
    r.strayAfterSweep.length === 0 &&
    r.missingAfterSweep.length === 0
  )
}

export function formatAssemblySoak(r: AssemblySoakResult): string {
  return [
    `assembly crash soak, seed ${r.seed}: ${r.learned} finals learned, ${r.intact} intact`,
    `${r.kills} kills, ${r.midCopy} mid-copy; grew after a kill: ${r.grewAfterKill.length}; left after the restart: ${r.leftAfterRestart.length}`,
    `${r.gone} clients went away mid-assembly, ${r.retriesAnswered} answered on a retry`,
    `bad records ${r.badRecords.length}; finals nobody knows ${r.unknownFinals} (unmarked ${r.unknownUnmarked.length}); known finals still marked ${r.knownMarked.length}; 5xx ${r.serverErrors}`,
    `after the sweep: stray ${JSON.stringify(r.strayAfterSweep)}, missing ${JSON.stringify(r.missingAfterSweep)}; ${(r.durationMs / 1000).toFixed(1)} s`,
  ].join('\n')
}
