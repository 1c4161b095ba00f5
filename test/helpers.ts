/**
 * Shared test tools: real temporary directories, a real listening Fastify server whose pino
 * records are captured, real HTTP, and the real tus client.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs/promises'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import * as tus from 'tus-js-client'
import { afterEach, onTestFinished } from 'vitest'
import fastifyTus, { type FastifyTusOptions } from '../src/index.js'

export const TUS = { 'Tus-Resumable': '1.0.0' }

/** The Redis the Redis tests use (`.ci/run` starts one on 127.0.0.1:6379). */
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  // Servers first (they may still sweep), then directories.
  while (cleanups.length > 0) await cleanups.pop()?.()
})

/** A new empty directory under the OS temp dir, removed after the test. */
export async function tempDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'fastify-tus-test-'))
  cleanups.push(() => fs.rm(dir, { recursive: true, force: true }))
  return dir
}

export interface LogRecord {
  level: number
  msg: string
  [key: string]: unknown
}

/** A pino destination that keeps every record. */
export function logCapture() {
  const records: LogRecord[] = []
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line) records.push(JSON.parse(line))
      done()
    },
  })
  return { records, stream }
}

export interface TestServer {
  app: FastifyInstance
  /** `http://127.0.0.1:<port>` */
  origin: string
  /** The tus endpoint, e.g. `http://127.0.0.1:<port>/files`. */
  endpoint: string
  logs: LogRecord[]
  directory: string
}

export interface ServerSetup {
  fastify?: FastifyServerOptions
  /** Register extra routes or hooks before the plugin. */
  before?: (app: FastifyInstance) => void | Promise<void>
  register?: { prefix?: string }
  listen?: boolean
}

/** A listening Fastify app with the plugin, closed after the test. */
export async function startServer(
  options: FastifyTusOptions = {},
  setup: ServerSetup = {},
): Promise<TestServer> {
  const directory = options.datastore ? '' : (options.directory ?? (await tempDir()))
  const { records, stream } = logCapture()
  const app = Fastify({ logger: { level: 'debug', stream }, ...setup.fastify })
  cleanups.push(() => app.close())
  await setup.before?.(app)
  const pluginOptions = options.datastore ? options : { ...options, directory }
  await app.register(fastifyTus, { ...pluginOptions, ...setup.register })
  let origin = ''
  if (setup.listen !== false) {
    origin = await app.listen({ host: '127.0.0.1', port: 0 })
  }
  const prefix = setup.register?.prefix ?? ''
  return {
    app,
    origin,
    endpoint: `${origin}${prefix}${options.path ?? '/files'}`,
    logs: records,
    directory,
  }
}

/** A whole upload with tus-js-client; resolves to the upload URL. */
export function tusUpload(
  endpoint: string,
  data: Buffer,
  options: Partial<tus.UploadOptions> = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      endpoint,
      chunkSize: 64 * 1024,
      retryDelays: [],
      ...options,
      onSuccess: () => resolve(upload.url as string),
      onError: reject,
    })
    upload.start()
  })
}

export interface RawResponse {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

/**
 * One HTTP request with node:http (no client-side header rules, a fresh connection each time).
 * `rawPath` is sent as written, where a URL would normalise `..`, `%2e` and the like.
 */
export function request(
  url: string,
  method: string,
  headers: Record<string, string | string[] | number> = {},
  body?: Buffer | string,
  { rawPath }: { rawPath?: string } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const options = {
      method,
      headers,
      agent: false,
      ...(rawPath !== undefined && { path: rawPath }),
    }
    const req = http.request(url, options, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      )
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

/**
 * A PATCH of `data` from offset 0 whose client goes away (socket destroyed) once `sent` bytes
 * are in `dataFile`.
 */
export async function disconnectMidPatch(
  url: string,
  data: Buffer,
  sent: number,
  dataFile: string,
): Promise<void> {
  const req = http.request(url, {
    method: 'PATCH',
    agent: false,
    headers: {
      ...TUS,
      'Upload-Offset': 0,
      'Content-Type': 'application/offset+octet-stream',
      'Content-Length': data.length,
    },
  })
  req.on('error', () => {})
  req.write(data.subarray(0, sent))
  await waitFor(async () => (await fs.stat(dataFile)).size === sent, 5000, 'bytes on disk')
  req.destroy()
}

/** POST a new upload of `length` bytes (or deferred length); resolves to its URL and id. */
export async function createUpload(
  endpoint: string,
  length: number | 'deferred',
  extraHeaders: Record<string, string> = {},
) {
  const lengthHeader: Record<string, string> =
    length === 'deferred' ? { 'Upload-Defer-Length': '1' } : { 'Upload-Length': String(length) }
  const res = await request(endpoint, 'POST', { ...TUS, ...lengthHeader, ...extraHeaders })
  if (res.status !== 201) throw new Error(`POST answered ${res.status}: ${res.body}`)
  const url = new URL(res.headers.location as string, endpoint).href
  return { url, id: url.slice(url.lastIndexOf('/') + 1), response: res }
}

export function patch(
  url: string,
  offset: number,
  body: Buffer,
  extra: Record<string, string> = {},
) {
  return request(
    url,
    'PATCH',
    {
      ...TUS,
      'Upload-Offset': offset,
      'Content-Type': 'application/offset+octet-stream',
      ...extra,
    },
    body,
  )
}

export function head(url: string) {
  return request(url, 'HEAD', TUS)
}

/**
 * A PATCH whose body trickles in: the `chunks` one every `everyMs`; with `chunked`, without
 * Content-Length (chunked transfer encoding); with `checksum`, an Upload-Checksum header; with
 * `headers`, those too (Authorization, ...); with `until`, the chunks not yet sent go at once when `until` settles (a body that trickles, or
 * stalls, exactly as long as the test needs). Resolves to the response.
 */
export function slowPatch(
  url: string,
  offset: number,
  chunks: Buffer[],
  everyMs: number,
  {
    chunked = false,
    checksum,
    until,
    headers = {},
  }: {
    chunked?: boolean
    checksum?: string
    until?: Promise<unknown>
    headers?: Record<string, string>
  } = {},
): Promise<RawResponse> {
  const total = chunks.reduce((n, c) => n + c.length, 0)
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: 'PATCH',
        agent: false,
        headers: {
          ...TUS,
          ...headers,
          'Upload-Offset': offset,
          'Content-Type': 'application/offset+octet-stream',
          ...(chunked ? {} : { 'Content-Length': total }),
          ...(checksum ? { 'Upload-Checksum': checksum } : {}),
        },
      },
      (res) => {
        const body: Buffer[] = []
        res.on('data', (c: Buffer) => body.push(c))
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(body).toString(),
          }),
        )
      },
    )
    req.on('error', reject)
    let i = 0
    let hurry = false
    let timer: NodeJS.Timeout | undefined
    const next = () => {
      timer = undefined
      do {
        const chunk = chunks[i++]
        if (chunk === undefined) return void req.end()
        req.write(chunk)
      } while (hurry)
      timer = setTimeout(next, everyMs)
    }
    next()
    const rest = () => {
      hurry = true
      if (timer === undefined) return // ended already
      clearTimeout(timer)
      next()
    }
    until?.then(rest, rest)
  })
}

/** `n` bytes of a repeatable pattern; `seed` varies it. */
export function pattern(n: number, seed = 0): Buffer {
  return Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) % 256))
}

/** Polls `check` until it returns a truthy value; fails after `timeoutMs`. */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  timeoutMs = 5000,
  what = 'condition',
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value as NonNullable<T>
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(10)
  }
}

/** A promise and the function that resolves it (Promise.withResolvers, which Node 20 lacks). */
export function signal(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void
  const promise = new Promise<void>((r) => {
    resolve = r
  })
  return { promise, resolve }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  )
}

export async function sha256(file: string): Promise<string> {
  return createHash('sha256')
    .update(await fs.readFile(file))
    .digest('hex')
}

export function sha256Of(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

/** Sets a file's mtime `ms` into the past: an upload last active that long ago. */
export async function age(file: string, ms: number): Promise<void> {
  const when = new Date(Date.now() - ms)
  await fs.utimes(file, when, when)
}

/**
 * Writes an upload session in the file store's own layout: data file `<id>` with `bytes`
 * bytes and `<id>.json`, both last touched `ageMs` ago.
 */
export async function writeSession(
  dir: string,
  id: string,
  { size, bytes, ageMs = 0 }: { size: number | undefined; bytes: number; ageMs?: number },
): Promise<void> {
  const data = path.join(dir, id)
  await fs.mkdir(path.dirname(data), { recursive: true })
  await fs.writeFile(data, Buffer.alloc(bytes, 1))
  const record = {
    id,
    size,
    offset: 0,
    metadata: {},
    creation_date: new Date(Date.now() - ageMs).toISOString(),
  }
  await fs.writeFile(`${data}.json`, JSON.stringify(record))
  if (ageMs > 0) {
    await age(data, ageMs)
    await age(`${data}.json`, ageMs)
  }
}

/**
 * Many sessions as `writeSession` writes them, fast: every data file is a hard link of one file
 * of `bytes` bytes last touched `ageMs` ago (creating a file costs far more than linking one on
 * some disks), every record a JSON of its own id. Ids may be nested (`sub/<id>`).
 */
export async function writeSessions(
  dir: string,
  ids: string[],
  { size, bytes, ageMs = 0 }: { size: number | undefined; bytes: number; ageMs?: number },
): Promise<void> {
  const seed = path.join(await tempDir(), 'seed')
  await fs.writeFile(seed, Buffer.alloc(bytes, 1))
  if (ageMs > 0) await age(seed, ageMs)
  const creation_date = new Date(Date.now() - ageMs).toISOString()
  const one = async (id: string) => {
    const data = path.join(dir, id)
    await fs.mkdir(path.dirname(data), { recursive: true })
    await fs.link(seed, data)
    const record = { id, size, offset: 0, metadata: {}, creation_date }
    await fs.writeFile(`${data}.json`, JSON.stringify(record))
    if (ageMs > 0) await age(`${data}.json`, ageMs)
  }
  for (let i = 0; i < ids.length; i += 200) await Promise.all(ids.slice(i, i + 200).map(one))
}

export function randomId(): string {
  return createHash('md5').update(String(Math.random())).digest('hex')
}

/** The operator CLI as built by the global setup (`fastify-tus`, what npm links the bin to). */
export const CLI = path.resolve('dist/src/cli/main.js')

export interface CliRun {
  child: ChildProcess
  out: { stdout: string; stderr: string }
  exited: Promise<number | null>
}

/** Starts the built CLI with only PATH, HOME and `env` in its environment; killed after the test. */
export function startCli(args: string[], env: Record<string, string> = {}): CliRun {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const out = { stdout: '', stderr: '' }
  child.stdout?.on('data', (c) => {
    out.stdout += c
  })
  child.stderr?.on('data', (c) => {
    out.stderr += c
  })
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve))
  onTestFinished(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  return { child, out, exited }
}

/** Runs the built CLI to its end: its exit code and output. */
export async function cli(args: string[], env: Record<string, string> = {}) {
  const { out, exited } = startCli(args, env)
  const code = await exited
  return { code, ...out }
}

/**
 * Files of the tree (not directories, not the plugin's close marker nor its servers' holder
 * files), relative, sorted.
 */
export async function listing(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true })
  return entries
    .filter((e) => !e.isDirectory() && e.name !== '.fastify-tus-closed')
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .filter((file) => !file.startsWith('.fastify-tus-holders'))
    .sort()
}

/**
 * Waits until the tree's files (as `listing` reads them) are `expected`: work left running after
 * an answer (a final's used partials being removed) may still be under way. Resolves to the
 * listing; fails with the last listing seen after `timeoutMs`.
 */
export async function listingBecomes(
  dir: string,
  expected: string[],
  timeoutMs = 5000,
): Promise<string[]> {
  const want = JSON.stringify([...expected].sort())
  let last: string[] = []
  try {
    await waitFor(
      async () => {
        last = await listing(dir)
        return JSON.stringify(last) === want
      },
      timeoutMs,
      `the listing ${want}`,
    )
  } catch {
    // The assertion below says what differs.
  }
  return last
}

/** The two files of the upload session `id`. */
export const pair = (id: string) => [id, `${id}.json`]

/** A server in a child process of its own, as `startServerProcess` started it. */
export interface ServerProcess {
  name: string
  child: ChildProcess
  /** `http://127.0.0.1:<port>` */
  origin: string
  /** `<origin>/files` */
  endpoint: string
  /** Its pino records, parsed from stdout as they come. */
  records: LogRecord[]
  exited: Promise<unknown>
}

/**
 * Starts `node <script>` with exactly `env` (a server that logs pino JSON on stdout, the demo
 * server or a test's own); resolves once it logs that it listens. Stopped (SIGTERM, then awaited)
 * after the test; rejects with its stderr if it exits before listening.
 */
export async function startServerProcess(
  name: string,
  script: string,
  env: Record<string, string | undefined>,
): Promise<ServerProcess> {
  const child = spawn(process.execPath, [script], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  const records: LogRecord[] = []
  let buffered = ''
  let stderr = ''
  child.stdout?.on('data', (chunk) => {
    buffered += chunk
    const lines = buffered.split('\n')
    buffered = lines.pop() ?? ''
    for (const line of lines) if (line.startsWith('{')) records.push(JSON.parse(line))
  })
  child.stderr?.on('data', (chunk) => {
    stderr += chunk
  })
  const exited = new Promise((resolve) => child.on('exit', resolve))
  onTestFinished(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      await exited
    }
  })
  const listening = await waitFor(
    () =>
      records.find((r) => /^Server listening at http:\/\/127\.0\.0\.1:\d+$/.test(r.msg)) ??
      (child.exitCode !== null
        ? Promise.reject(new Error(`${name} exited: ${stderr}`))
        : undefined),
    15_000,
    `${name} to listen`,
  )
  const origin = listening.msg.slice('Server listening at '.length)
  return { name, child, origin, endpoint: `${origin}/files`, records, exited }
}

/** Waits for the record of an emergency sweep that removed one expired upload (free space or quota). */
export function emergencySweepRecord(logs: LogRecord[]): Promise<LogRecord> {
  return waitFor(
    () => logs.find((r) => r.emergency === true && /removed 1 expired/.test(String(r.msg))),
    5000,
    'the emergency sweep',
  )
}
