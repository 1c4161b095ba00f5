/**
 * Faults: what the plugin does when the disk, the client or the operator misbehaves. One test
 * per fault of the reliability list; each stands on its own.
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs/promises'
import type http from 'node:http'
import path from 'node:path'
import type { FastifyHttpOptions, FastifyInstance } from 'fastify'
import { describe, expect, it } from 'vitest'
import { startDemo } from '../demo/app.js'
import { type SweepFs, sweepDirectory } from '../src/sweep/engine.js'
import {
  pattern as bytes,
  createUpload,
  disconnectMidPatch,
  head,
  patch,
  type RawResponse,
  request,
  sha256,
  sha256Of,
  sleep,
  slowPatch,
  startServer,
  tempDir,
  tusUpload,
  waitFor,
  writeSession,
} from './helpers.js'

const HOUR = 3_600_000

/** An upload id of the default pattern, numbered. */
const hex = (i: number) => i.toString(16).padStart(32, '0')

/**
 * `count` expired unfinished sessions in the store's layout, fast: every data file is a hard link
 * of one aged file (so they share its old mtime), every record a small JSON of its own id.
 */
async function expiredSessions(dir: string, count: number): Promise<string[]> {
  const seed = path.join(dir, '.seed')
  await fs.writeFile(seed, 'x')
  const old = new Date(Date.now() - HOUR)
  await fs.utimes(seed, old, old)
  const ids = Array.from({ length: count }, (_, i) => hex(i))
  for (let i = 0; i < ids.length; i += 500) {
    await Promise.all(
      ids.slice(i, i + 500).map(async (id) => {
        await fs.link(seed, path.join(dir, id))
        const record = { id, size: 100, offset: 0, metadata: {}, creation_date: old.toISOString() }
        await fs.writeFile(path.join(dir, `${id}.json`), JSON.stringify(record))
      }),
    )
  }
  return ids
}

/** A slow PATCH that may be cut: its answer, or `undefined` when the connection was dropped. */
function slowPatchOrCut(...args: Parameters<typeof slowPatch>): Promise<RawResponse | undefined> {
  return slowPatch(...args).catch(() => undefined)
}

/** Runs an ES module script in a Node process of its own; kills it after `timeoutMs`. */
async function runNode(script: string, timeoutMs: number) {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (c) => {
    stdout += c
  })
  child.stderr.on('data', (c) => {
    stderr += c
  })
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  clearTimeout(timer)
  return { code, stdout, stderr }
}

/** The upload goes on from the offset the server kept, to the end, with the right bytes. */
async function expectResumable(url: string, dataFile: string, data: Buffer): Promise<void> {
  const status = await head(url)
  expect(status.status).toBe(200)
  const offset = Number(status.headers['upload-offset'])
  expect((await fs.stat(dataFile)).size).toBe(offset)
  if (offset < data.length) {
    expect((await patch(url, offset, data.subarray(offset))).status).toBe(204)
  }
  expect(await sha256(dataFile)).toBe(sha256Of(data))
}

describe('faults', () => {
  it('upload directory removed while running: the sweep logs it, the next upload recreates it', async () => {
    const directory = path.join(await tempDir(), 'uploads')
    const server = await startServer({ directory, expireAfterMs: HOUR, cleanupIntervalMs: 50 })
    const before = await createUpload(server.endpoint, 10)
    await fs.rm(directory, { recursive: true })

    const failure = await waitFor(
      () => server.logs.find((r) => r.msg === 'fastify-tus sweep failed'),
      5000,
      'a sweep to log the missing directory',
    )
    expect(failure).toMatchObject({ level: 50, err: { code: 'ENOENT' } })
    expect(String((failure.err as { message: string }).message)).toContain(directory)
    // Still serving; the uploads that were in the directory are gone with it.
    expect((await request(server.endpoint, 'OPTIONS')).status).toBe(204)
    expect((await head(before.url)).status).toBe(404)

    // The file store's `create` makes the directory again: uploads work without a restart.
    const data = bytes(200_000)
    const url = await tusUpload(server.endpoint, data, { chunkSize: 64 * 1024 })
    const id = url.slice(url.lastIndexOf('/') + 1)
    expect(await sha256(path.join(directory, id))).toBe(sha256Of(data))
    // ...and the sweep succeeds again.
    const back = Date.now()
    await waitFor(
      () => Date.parse(server.app.tusCleanup.last?.startedAt ?? '') >= back,
      5000,
      'a sweep to succeed again',
    )
    expect(server.app.tusCleanup.last?.errors).toBe(0)
  })

  it('unwritable directory at startup: ready() rejects naming the path, nothing uncaught', async () => {
    // In a process of its own: the stock FileStore throws from an fs callback, after the fact,
    // which ends the process. As root, only procfs refuses: /proc/self exists and takes no new
    // entry, /proc/self/uploads cannot be made (Node's recursive mkdir loops forever on it), and
    // a path under a regular file fails with ENOTDIR.
    const file = path.join(await tempDir(), 'a-file')
    await fs.writeFile(file, 'x')
    const directories = ['/proc/self', '/proc/self/uploads', path.join(file, 'uploads')]
    const script = `
      import Fastify from 'fastify'
      import fastifyTus from '${path.resolve('dist/src/index.js')}'
      for (const directory of ${JSON.stringify(directories)}) {
        const app = Fastify()
        app.register(fastifyTus, { directory })
        const error = await app.ready().then(() => undefined, (e) => e)
        console.log(JSON.stringify({ directory, code: error?.code, message: error?.message }))
        await app.close()
      }
      // Time for a throwing callback to end the process.
      await new Promise((resolve) => setTimeout(resolve, 300))
      console.log('still alive')
    `
    const { code, stdout, stderr } = await runNode(script, 15_000)
    expect(code, stderr).toBe(0)
    const lines = stdout.trim().split('\n')
    expect(lines.at(-1)).toBe('still alive')
    const results = lines.slice(0, -1).map((line) => JSON.parse(line))
    expect(results.map((r) => r.directory)).toEqual(directories)
    for (const { directory, code, message } of results) {
      expect(code).toBe('FST_TUS_DIRECTORY')
      expect(message).toContain(directory)
    }
  })

  it('an unlink that fails during a sweep is counted in errors and the sweep goes on', async () => {
    // At the engine: the plugin has no way to inject a filesystem, and as root permission bits
    // do not make an unlink fail, so the fault is injected at the engine's fs boundary.
    const dir = await tempDir()
    for (let i = 1; i <= 5; i++) {
      await writeSession(dir, hex(i), { size: 100, bytes: 10, ageMs: 2 * HOUR })
    }
    const faulty: SweepFs = {
      ...fs,
      unlink: async (file) => {
        if (path.basename(String(file)) === hex(3)) {
          throw Object.assign(new Error(`EIO: i/o error, unlink '${file}'`), { code: 'EIO' })
        }
        return fs.unlink(file)
      },
    }
    const warnings: Array<{ obj: Record<string, unknown>; msg: string }> = []
    const report = await sweepDirectory({
      directory: dir,
      expireAfterMs: HOUR,
      fs: faulty,
      log: { warn: (obj, msg) => warnings.push({ obj: obj as Record<string, unknown>, msg }) },
    })
    expect(report).toMatchObject({ errors: 1, removed: 4, scanned: 5 })
    expect(report.ids.sort()).toEqual([hex(1), hex(2), hex(4), hex(5)])
    expect(warnings).toHaveLength(1)
    expect(warnings[0]?.obj).toMatchObject({ id: hex(3), err: { code: 'EIO' } })
    expect((await fs.readdir(dir)).sort()).toEqual([hex(3), `${hex(3)}.json`])
  })

  it('a client that disconnects mid-PATCH: bytes kept, lock released at once, upload resumes', async () => {
    // The stock locker and drain timeout: a lock still held would cost the next PATCH
    // lockDrainTimeout (3 s) before it got in, and a HEAD the same.
    const server = await startServer()
    expect(server.app.tus.options.lockDrainTimeout).toBe(3000)
    const data = bytes(300_000)
    const { url, id } = await createUpload(server.endpoint, data.length)
    const dataFile = path.join(server.directory, id)

    await disconnectMidPatch(url, data, 100_000, dataFile) // the client goes away mid-body

    const started = performance.now()
    const rest = await patch(url, 100_000, data.subarray(100_000))
    const elapsed = performance.now() - started
    expect(rest.status).toBe(204)
    expect(rest.headers['upload-offset']).toBe(String(data.length))
    expect(elapsed).toBeLessThan(2000)
    expect(await sha256(dataFile)).toBe(sha256Of(data))
  })

  it('close() during a sweep over 20,000 expired uploads: prompt, and nothing deleted after', async () => {
    const dir = await tempDir()
    const ids = await expiredSessions(dir, 20_000)
    const entries = ids.length * 2 + 1 // and the seed
    const server = await startServer({
      directory: dir,
      expireAfterMs: 60_000,
      cleanupIntervalMs: HOUR,
    })
    // The startup sweep is under way: close in the middle of it.
    await waitFor(
      async () => (await fs.readdir(dir)).length < entries,
      10_000,
      'the sweep to start removing',
    )
    const started = performance.now()
    await server.app.close()
    expect(performance.now() - started).toBeLessThan(3000)

    // close() recorded its time (a dot-file the sweep leaves alone); the sessions are the rest.
    const afterClose = (await fs.readdir(dir))
      .filter((name) => name !== '.fastify-tus-closed')
      .sort()
    await sleep(500)
    expect((await fs.readdir(dir)).filter((name) => name !== '.fastify-tus-closed').sort()).toEqual(
      afterClose,
    )
    const report = server.app.tusCleanup.last
    expect(report?.aborted).toBe(true)
    expect(report?.removed).toBeLessThan(ids.length)
    expect(afterClose.length).toBe(entries - 2 * (report?.removed ?? 0))
    // Whole sessions or none: no pair half removed.
    const names = new Set(afterClose)
    for (const id of ids) expect(names.has(id)).toBe(names.has(`${id}.json`))
  }, 60_000)

  describe("long uploads and Fastify's timeouts", () => {
    // A PATCH that lasts 2.5 s with data every 250 ms, and one that pauses 1.5 s mid-body.
    const STEADY = Array.from({ length: 10 }, (_, i) => bytes(1000, i))
    const PAUSING = [bytes(1000), bytes(1000, 1)]
    const steadyPatch = (url: string) => slowPatchOrCut(url, 0, STEADY, 250)
    const pausingPatch = (url: string) => slowPatchOrCut(url, 0, PAUSING, 1500)

    async function serverWith(fastify: FastifyHttpOptions<http.Server>) {
      const server = await startServer({}, { fastify })
      const upload = async (data: Buffer[]) => {
        const { url, id } = await createUpload(server.endpoint, data.length * 1000)
        return { url, dataFile: path.join(server.directory, id), data: Buffer.concat(data) }
      }
      return { server, upload }
    }

    it('the demo server sets no request or connection timeout; slow and pausing PATCHes complete', async () => {
      const uploadDir = await tempDir()
      const app: FastifyInstance = await startDemo({
        host: '127.0.0.1',
        port: 0,
        uploadDir,
        expireAfterMs: 600_000,
        cleanupIntervalMs: 600_000,
        logLevel: 'silent',
      })
      try {
        expect(app.server.requestTimeout).toBe(0)
        expect(app.server.timeout).toBe(0) // connectionTimeout
        const { port } = app.server.address() as { port: number }
        const endpoint = `http://127.0.0.1:${port}/files`
        const steady = await createUpload(endpoint, 10_000)
        const pausing = await createUpload(endpoint, 2000)
        const [a, b] = await Promise.all([steadyPatch(steady.url), pausingPatch(pausing.url)])
        expect(a?.status).toBe(204)
        expect(b?.status).toBe(204)
      } finally {
        await app.close()
      }
    })

    it('keep-alive, header and handler timeouts shorter than a PATCH do not cut it', async () => {
      const { upload } = await serverWith({
        requestTimeout: 0,
        connectionTimeout: 0,
        keepAliveTimeout: 500,
        handlerTimeout: 500,
        // Node checks the header and request timeouts on this interval (30 s by default).
        http: { headersTimeout: 500, connectionsCheckingInterval: 50 },
      })
      const steady = await upload(STEADY)
      const pausing = await upload(PAUSING)
      const [a, b] = await Promise.all([steadyPatch(steady.url), pausingPatch(pausing.url)])
      expect(a?.status).toBe(204)
      expect(b?.status).toBe(204)
      await expectResumable(steady.url, steady.dataFile, steady.data)
      await expectResumable(pausing.url, pausing.dataFile, pausing.data)
    })

    it('a requestTimeout shorter than a PATCH cuts it; the upload resumes from the kept bytes', async () => {
      const { upload } = await serverWith({
        requestTimeout: 1000,
        // Node cuts a request at the larger of the two, and looks every 30 s by default.
        http: { headersTimeout: 1000, connectionsCheckingInterval: 50 },
      })
      const steady = await upload(STEADY)
      const answer = await steadyPatch(steady.url)
      // 408, or a reset when the client was still writing.
      expect(answer === undefined || answer.status === 408).toBe(true)
      expect((await fs.stat(steady.dataFile)).size).toBeLessThan(steady.data.length)
      await expectResumable(steady.url, steady.dataFile, steady.data)
    })

    it('a connectionTimeout shorter than a pause cuts the PATCH; the upload resumes', async () => {
      const { upload } = await serverWith({ connectionTimeout: 1000 })
      const pausing = await upload(PAUSING)
      expect(await pausingPatch(pausing.url)).toBeUndefined()
      expect((await fs.stat(pausing.dataFile)).size).toBeLessThan(pausing.data.length)
      await expectResumable(pausing.url, pausing.dataFile, pausing.data)
    })
  })
})
