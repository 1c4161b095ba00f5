/**
 * The sweep's schedule: a first sweep when ready (never delaying ready), interval sweeps, one
 * sweep at a time (with a scripted store, and with the built-in store over a real directory), a
 * clean stop on close, and what each sweep logs.
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'
import { DataStore } from '@tus/utils'
import { Redis } from 'ioredis'
import { describe, expect, it, onTestFinished } from 'vitest'
import { randomId } from './helpers/data.js'
import { exists, tempDir, writeSession, writeSessions } from './helpers/fs.js'
import { request } from './helpers/http.js'
import { REDIS_URL } from './helpers/redis.js'
import { startServer } from './helpers/server.js'
import { createUpload } from './helpers/tus-client.js'
import { sleep, waitFor } from './helpers/wait.js'

const HOUR = 3_600_000
const ABANDONED = 'a'.repeat(32)

/** A user's datastore whose deleteExpired() is driven by the test. */
class ScriptedStore extends DataStore {
  calls = 0
  behaviour: () => Promise<number> | number = () => 0
  constructor(extensions = ['creation', 'expiration']) {
    super()
    this.extensions = extensions
  }
  override getExpiration() {
    return 1000
  }
  override deleteExpired(): Promise<number> {
    this.calls++
    return this.behaviour() as Promise<number>
  }
}

function deferred<T>() {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => {
    resolve = r
  })
  return { promise, resolve }
}

describe('startup sweep', () => {
  it('removes an abandoned upload as soon as the server is ready', async () => {
    const dir = await tempDir()
    await writeSession(dir, ABANDONED, { size: 100, bytes: 10, ageMs: HOUR })
    const server = await startServer({
      directory: dir,
      expireAfterMs: 60_000,
      cleanupIntervalMs: HOUR,
    })
    await waitFor(() => server.app.tusCleanup.last, 5000, 'the first sweep')
    expect(await exists(path.join(dir, ABANDONED))).toBe(false)
    expect(server.app.tusCleanup.last).toMatchObject({ removed: 1, scanned: 1, errors: 0 })

    const info = server.logs.find((r) => r.msg === 'removed 1 expired uploads')
    expect(info).toMatchObject({ level: 30, plugin: 'fastify-tus', removed: 1, scanned: 1 })
    expect(info?.bytesFreed).toBeGreaterThan(10)
    expect(typeof info?.durationMs).toBe('number')
  })

  it('waits for the first interval when cleanupOnStart is false', async () => {
    const dir = await tempDir()
    await writeSession(dir, ABANDONED, { size: 100, bytes: 10, ageMs: HOUR })
    const server = await startServer({
      directory: dir,
      expireAfterMs: 60_000,
      cleanupIntervalMs: 400,
      cleanupOnStart: false,
    })
    await sleep(150)
    expect(server.app.tusCleanup.last).toBeUndefined()
    expect(await exists(path.join(dir, ABANDONED))).toBe(true)
    await waitFor(() => server.app.tusCleanup.last, 5000, 'the first interval sweep')
    expect(await exists(path.join(dir, ABANDONED))).toBe(false)
  })

  it('does not make ready() wait for the sweep', async () => {
    const store = new ScriptedStore()
    const gate = deferred<number>()
    store.behaviour = () => gate.promise
    const server = await startServer({ datastore: store, cleanupIntervalMs: HOUR })
    // listen() (and so ready()) resolved although the first sweep is still running.
    expect(store.calls).toBe(1)
    expect(server.app.tusCleanup.last).toBeUndefined()
    expect((await request(server.endpoint, 'OPTIONS')).status).toBe(204)
    gate.resolve(3)
    await waitFor(() => server.app.tusCleanup.last)
    expect(server.app.tusCleanup.last?.removed).toBe(3)
  })
})

describe('interval sweeps', () => {
  it('removes an abandoned upload within expireAfterMs + cleanupIntervalMs', async () => {
    const expireAfterMs = 300
    const cleanupIntervalMs = 100
    const server = await startServer({ expireAfterMs, cleanupIntervalMs })
    const started = Date.now()
    const { id } = await createUpload(server.endpoint, 1000)
    const data = path.join(server.directory, id)
    await waitFor(async () => !(await exists(data)), 5000, 'the abandoned upload to go')
    const elapsed = Date.now() - started
    expect(elapsed).toBeGreaterThanOrEqual(expireAfterMs)
    // A generous margin for a loaded CI machine; what matters is "within an interval or so".
    expect(elapsed).toBeLessThan(expireAfterMs + cleanupIntervalMs + 1500)
    expect(await exists(`${data}.json`)).toBe(false)
  })

  it('logs at debug when a sweep removed nothing', async () => {
    const server = await startServer({ cleanupIntervalMs: 50 })
    await waitFor(
      () => server.logs.filter((r) => r.msg === 'no expired uploads to remove').length >= 2,
    )
    const record = server.logs.find((r) => r.msg === 'no expired uploads to remove')
    expect(record).toMatchObject({ level: 20, plugin: 'fastify-tus', removed: 0 })
  })

  it('logs a failing sweep at error, keeps serving and tries again next interval', async () => {
    const store = new ScriptedStore()
    store.behaviour = () => {
      throw new Error('store is down')
    }
    const server = await startServer({ datastore: store, cleanupIntervalMs: 50 })
    await waitFor(() => store.calls >= 3, 5000, 'three sweep attempts')
    const errors = server.logs.filter((r) => r.level === 50 && r.msg === 'fastify-tus sweep failed')
    expect(errors.length).toBeGreaterThanOrEqual(2)
    expect(errors[0]?.err).toMatchObject({ message: 'store is down' })
    expect((await request(server.endpoint, 'OPTIONS')).status).toBe(204)

    // A store that rejects instead of throwing is contained the same way.
    store.behaviour = () => Promise.reject({ status_code: 500, body: 'tus-style failure' })
    const before = store.calls
    await waitFor(() => store.calls >= before + 2)
    expect(
      server.logs.some((r) =>
        (r.err as { message?: string })?.message?.includes('tus-style failure'),
      ),
    ).toBe(true)
  })

  it('logs a sweep of a vanished upload directory at error and sweeps again once it is back', async () => {
    const server = await startServer({ expireAfterMs: 60_000, cleanupIntervalMs: 50 })
    await fs.rm(server.directory, { recursive: true })
    await waitFor(
      () => server.logs.some((r) => r.msg === 'fastify-tus sweep failed'),
      5000,
      'a failed sweep',
    )
    const failed = server.logs.find((r) => r.msg === 'fastify-tus sweep failed')
    expect(failed).toMatchObject({ level: 50, err: { code: 'ENOENT' } })
    expect((await request(server.endpoint, 'OPTIONS')).status).toBe(204)

    await fs.mkdir(server.directory)
    const okBefore = server.logs.filter((r) => r.msg === 'no expired uploads to remove').length
    await waitFor(
      () => server.logs.filter((r) => r.msg === 'no expired uploads to remove').length > okBefore,
    )
    expect((await createUpload(server.endpoint, 10)).response.status).toBe(201)
  })

  it('says once at startup that a store without the expiration extension is not swept', async () => {
    const store = new ScriptedStore(['creation'])
    const server = await startServer({ datastore: store, cleanupIntervalMs: 20 })
    await sleep(200)
    const off = server.logs.filter((r) => r.msg.startsWith('fastify-tus sweep is off'))
    expect(off).toHaveLength(1)
    expect(off[0]?.msg).toContain('expiration extension')
    expect(server.logs.filter((r) => r.level >= 50)).toEqual([])
    expect(store.calls).toBe(0)
  })

  it('turns expiry and the sweep off with expireAfterMs 0', async () => {
    const dir = await tempDir()
    await writeSession(dir, ABANDONED, { size: 100, bytes: 10, ageMs: HOUR })
    const server = await startServer({ directory: dir, expireAfterMs: 0, cleanupIntervalMs: 20 })
    await sleep(150)
    expect(await exists(path.join(dir, ABANDONED))).toBe(true)
    expect(server.logs.some((r) => r.msg === 'fastify-tus sweep is off: expireAfterMs is 0')).toBe(
      true,
    )
    const options = await request(server.endpoint, 'OPTIONS')
    expect(options.headers['tus-extension']).not.toContain('expiration')
    const { response } = await createUpload(server.endpoint, 10)
    expect(response.headers['upload-expires']).toBeUndefined()
  })
})

describe('one sweep at a time', () => {
  it('joins a running sweep instead of starting another', async () => {
    const store = new ScriptedStore()
    const gate = deferred<number>()
    store.behaviour = () => gate.promise
    const server = await startServer({ datastore: store, cleanupIntervalMs: HOUR })
    expect(store.calls).toBe(1) // the startup sweep, still running
    const a = server.app.tusCleanup.run()
    const b = server.app.tusCleanup.run()
    gate.resolve(2)
    const [ra, rb] = await Promise.all([a, b])
    expect(ra).toBe(rb)
    expect(store.calls).toBe(1)
    expect(server.app.tus.cleanUpExpiredUploads).toBeTypeOf('function')
  })

  it('with the built-in store over a real directory: two manual runs join, a scheduled tick that comes meanwhile (holding the lease in Redis) joins too, a dry run queues behind; no two sweeps overlap', async () => {
    const dir = await tempDir()
    // Enough expired sessions that one sweep (a lock in Redis per removal) lasts several
    // intervals: the scheduled ticks come while it runs.
    const ids = Array.from({ length: 1000 }, (_, i) => i.toString(16).padStart(32, '0'))
    await writeSessions(dir, ids, { size: 100, bytes: 1, ageMs: HOUR })
    const client = new Redis(REDIS_URL)
    onTestFinished(() => void client.disconnect())
    const prefix = `test:${randomId()}:`
    // Not ready yet: the schedule's job starts with ready(), after the manual runs below.
    const server = await startServer(
      {
        directory: dir,
        expireAfterMs: 60_000,
        cleanupOnStart: false,
        cleanupIntervalMs: 50,
        redis: { client, prefix },
      },
      { listen: false },
    )
    const sweepRecords = () =>
      server.logs.filter((r) => typeof r.scanned === 'number' && typeof r.durationMs === 'number')

    // Two manual runs at once, and a dry run; then the scheduled ticks start.
    let manualDone = false
    const a = server.app.tusCleanup.run()
    const b = server.app.tusCleanup.run()
    const dry = server.app.tusCleanup.run({ dryRun: true })
    void a.finally(() => {
      manualDone = true
    })
    await server.app.ready()
    // A scheduled tick takes the fleet's sweep lease (its `running` key in Redis) while the
    // manual sweep still runs: it must join that sweep, not start one beside it.
    const tickDuringManual = await waitFor(
      async () =>
        manualDone
          ? 'the manual sweep ended first'
          : await client.exists(`${prefix}{sweep}:running`),
      10_000,
      'a scheduled tick during the manual sweep',
    )
    expect(tickDuringManual).toBe(1)
    const [ra, rb, rdry] = await Promise.all([a, b, dry])
    expect(ra).toBe(rb) // one sweep, the very same report
    expect(ra).toMatchObject({ removed: ids.length, errors: 0, dryRun: false })
    expect(rdry).toMatchObject({ dryRun: true, removed: 0 }) // it ran after: nothing was left
    // Ticks go on sweeping after it (each with its slot).
    await waitFor(() => sweepRecords().some((r) => typeof r.slot === 'number'), 5000, 'a tick')
    await server.app.close()

    // Every sweep logs one record when it ends: its interval is [time - durationMs, time].
    const spans = sweepRecords().map((r) => ({
      slot: r.slot,
      dryRun: r.dryRun,
      removed: r.removed,
      start: Number(r.time) - Number(r.durationMs),
      end: Number(r.time),
    }))
    const manual = spans.filter((span) => span.removed === ids.length)
    expect(manual).toHaveLength(1) // the two runs and the tick: one sweep, with no slot
    expect(manual[0]?.slot).toBeUndefined()
    expect(spans.filter((span) => span.dryRun)).toHaveLength(1)
    // No two overlap (the log's clock is in whole ms, durations are rounded: 2 ms of slack).
    const sorted = spans.sort((x, y) => x.start - y.start)
    for (let i = 1; i < sorted.length; i++) {
      const [before, after] = [sorted[i - 1], sorted[i]]
      expect(after?.start, JSON.stringify({ before, after })).toBeGreaterThanOrEqual(
        (before?.end ?? 0) - 2,
      )
    }
  })

  it('routes server.cleanUpExpiredUploads() through the same sweep', async () => {
    const dir = await tempDir()
    const ids = Array.from({ length: 200 }, (_, i) => i.toString(16).padStart(32, '0'))
    await writeSessions(dir, ids, { size: 100, bytes: 1, ageMs: HOUR })
    const server = await startServer({
      directory: dir,
      cleanupOnStart: false,
      cleanupIntervalMs: HOUR,
    })
    const [viaRun, viaTus] = await Promise.all([
      server.app.tusCleanup.run(),
      server.app.tus.cleanUpExpiredUploads(),
    ])
    expect(viaRun.removed).toBe(200)
    expect(viaTus).toBe(200) // the same sweep's count, not a second sweep finding nothing
  })

  it('rejects a dry run on a datastore that can only delete', async () => {
    const server = await startServer({ datastore: new ScriptedStore(), cleanupOnStart: false })
    await expect(server.app.tusCleanup.run({ dryRun: true })).rejects.toThrow(
      /dryRun.*built-in file store/,
    )
  })
})

describe('close', () => {
  it('waits for a running sweep before close() resolves', async () => {
    const store = new ScriptedStore()
    const gate = deferred<number>()
    store.behaviour = () => gate.promise
    const server = await startServer({ datastore: store, cleanupIntervalMs: HOUR })
    let closed = false
    const closing = server.app.close().then(() => {
      closed = true
    })
    await sleep(100)
    expect(closed).toBe(false)
    gate.resolve(0)
    await closing
    expect(closed).toBe(true)
    await expect(server.app.tusCleanup.run()).rejects.toMatchObject({ code: 'FST_TUS_CLOSED' })
  })

  it('stops a sweep over a large directory between entries; nothing is removed after close', async () => {
    const dir = await tempDir()
    // 600 sessions: the sweep takes far longer than the wait for its first removal. (The
    // large-store e2e test does the same over 20,000.)
    const ids = Array.from({ length: 600 }, (_, i) => i.toString(16).padStart(32, '0'))
    await writeSessions(dir, ids, { size: 100, bytes: 1, ageMs: HOUR })
    const server = await startServer({
      directory: dir,
      expireAfterMs: 60_000,
      cleanupIntervalMs: HOUR,
    })
    // The startup sweep is under way; close in the middle of it.
    await waitFor(
      async () => (await fs.readdir(dir)).length < ids.length * 2,
      5000,
      'the sweep to start removing',
    )
    await server.app.close()
    const afterClose = (await fs.readdir(dir)).sort()
    await sleep(300)
    expect((await fs.readdir(dir)).sort()).toEqual(afterClose)
    const report = server.app.tusCleanup.last
    expect(report?.aborted).toBe(true)
    expect(report?.removed).toBeLessThan(ids.length)
    // Every session is either whole or gone: no half-removed pair.
    const names = new Set(afterClose)
    for (const id of ids) expect(names.has(id)).toBe(names.has(`${id}.json`))
  })

  it('leaves nothing that keeps the process alive', async () => {
    const dir = await tempDir()
    const script = `
      import Fastify from 'fastify'
      import fastifyTus from '${path.resolve('dist/src/index.js')}'
      const app = Fastify()
      await app.register(fastifyTus, { directory: ${JSON.stringify(dir)}, expireAfterMs: 100, cleanupIntervalMs: 20 })
      const origin = await app.listen({ host: '127.0.0.1', port: 0 })
      const res = await fetch(origin + '/files', { method: 'POST', headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': '5' } })
      if (res.status !== 201) throw new Error('POST ' + res.status)
      await new Promise((r) => setTimeout(r, 150))
      await app.close()
      console.log('closed')
    `
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      cwd: process.cwd(),
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let output = ''
    child.stdout.on('data', (c) => {
      output += c
    })
    child.stderr.on('data', (c) => {
      output += c
    })
    const code = await Promise.race([
      new Promise<number | null>((resolve) => child.on('exit', resolve)),
      sleep(10_000).then(() => 'still running' as const),
    ])
    if (code === 'still running') child.kill('SIGKILL')
    expect(code, output).toBe(0)
    expect(output).toContain('closed')
  })
})
