/**
 * The `metrics` option: Prometheus metrics in prom-client's registry, scraped after real
 * uploads, refusals, sweeps that remove something and sweeps that fail; values, not just names.
 */
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'
import Fastify from 'fastify'
import fastifyMetrics from 'fastify-metrics'
import { Redis } from 'ioredis'
import { register as defaultRegistry, Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import fastifyTus, { type FastifyTusOptions } from '../src/index.js'
import { pattern, randomId } from './helpers/data.js'
import { age, tempDir, writeSession } from './helpers/fs.js'
import { request } from './helpers/http.js'
import { REDIS_URL } from './helpers/redis.js'
import { startServer } from './helpers/server.js'
import { createUpload, head, patch, slowPatch, TUS, tusUpload } from './helpers/tus-client.js'
import { signal, waitFor } from './helpers/wait.js'

type Labels = Record<string, string | number>

/** The value of one series (a counter, a gauge, or a histogram's `_count`/`_sum`), 0 if absent. */
async function value(registry: Registry, name: string, labels: Labels = {}): Promise<number> {
  return seriesValue(await registry.metrics(), name, labels)
}

/** `value`, read in the text of a Prometheus scrape. */
function seriesValue(text: string, name: string, labels: Labels = {}): number {
  let total: number | undefined
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!match || match[1] !== name) continue
    const series = Object.fromEntries(
      [...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]),
    )
    if (Object.entries(labels).every(([k, v]) => series[k] === String(v))) {
      total = (total ?? 0) + Number(match[3])
    }
  }
  return total ?? 0
}

function sha1(data: Buffer): string {
  return createHash('sha1').update(data).digest('base64')
}

afterEach(() => defaultRegistry.clear())

const isRoot = process.getuid?.() === 0

/** A server whose app serves `registry` on `GET /metrics`, as docs/metrics.md shows. */
function serverWithMetricsRoute(registry: Registry, options: FastifyTusOptions = {}) {
  return startServer(
    { metrics: { registry }, cleanupOnStart: false, ...options },
    {
      before: (app) => {
        app.get('/metrics', async (_request, reply) =>
          reply.type(registry.contentType).send(await registry.metrics()),
        )
      },
    },
  )
}

/** One series of the endpoint `/files`, as a scrape of `GET /metrics` gives it. */
async function scraped(origin: string, name: string, labels: Labels = {}): Promise<number> {
  const res = await request(`${origin}/metrics`, 'GET')
  expect(res.status).toBe(200)
  return seriesValue(res.body, name, { endpoint: '/files', ...labels })
}

/** Runs `chattr` (e2fsprogs) on `file`: `+i` makes it immutable, so that not even root can unlink it. */
function chattr(flag: '+i' | '-i', file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('chattr', [flag, file], (error, _stdout, stderr) =>
      error ? reject(new Error(`chattr ${flag} ${file}: ${stderr || error.message}`)) : resolve(),
    )
  })
}

describe('metrics', () => {
  it('counts uploads created, finished, terminated and expired, bytes stored, answers and checksum mismatches', async () => {
    const registry = new Registry()
    const server = await startServer({ metrics: { registry }, cleanupOnStart: false })
    const endpoint = { endpoint: '/files' }

    const a = pattern(300_000, 1)
    await tusUpload(server.endpoint, a, { chunkSize: 100_000 }) // POST + 3 PATCHes
    const b = pattern(1000, 2)
    const withBody = await request(
      server.endpoint,
      'POST',
      {
        ...TUS,
        'Upload-Length': '1000',
        'Content-Type': 'application/offset+octet-stream',
      },
      b,
    ) // a creation with the whole body
    expect(withBody.status).toBe(201)

    const c = await createUpload(server.endpoint, 20)
    const bad = await patch(c.url, 0, Buffer.alloc(10, 7), {
      'Upload-Checksum': `sha1 ${sha1(Buffer.alloc(10, 8))}`,
    })
    expect(bad.status).toBe(460)
    const good = await patch(c.url, 0, Buffer.alloc(10, 7), {
      'Upload-Checksum': `sha1 ${sha1(Buffer.alloc(10, 7))}`,
    })
    expect(good.status).toBe(204)
    expect((await request(c.url, 'DELETE', TUS)).status).toBe(204)

    const d = await createUpload(server.endpoint, 50)
    await age(path.join(server.directory, d.id), 3_600_000)
    await age(path.join(server.directory, `${d.id}.json`), 3_600_000)
    expect((await head(d.url)).status).toBe(410)

    const count = (name: string, labels: Labels = {}) =>
      value(registry, name, { ...endpoint, ...labels })
    expect(await count('tus_uploads_created_total')).toBe(4)
    expect(await count('tus_uploads_finished_total')).toBe(2)
    expect(await count('tus_uploads_terminated_total')).toBe(1)
    expect(await count('tus_uploads_expired_total')).toBe(1)
    expect(await count('tus_checksum_mismatches_total')).toBe(1)
    // The 460's bytes were not kept; the others were.
    expect(await count('tus_bytes_received_total')).toBe(300_000 + 1000 + 10)
    expect(await count('tus_requests_total', { method: 'POST', status: 201 })).toBe(4)
    expect(await count('tus_requests_total', { method: 'PATCH', status: 204 })).toBe(4)
    expect(await count('tus_requests_total', { method: 'PATCH', status: 460 })).toBe(1)
    expect(await count('tus_requests_total', { method: 'DELETE', status: 204 })).toBe(1)
    expect(await count('tus_requests_total', { method: 'HEAD', status: 410 })).toBe(1)
  })

  it("counts the answers of the app's own hooks on the tus routes (a 401 from an auth hook)", async () => {
    const registry = new Registry()
    const server = await startServer(
      { metrics: { registry }, cleanupOnStart: false },
      {
        before: (app) => {
          app.addHook('onRequest', async (req, reply) => {
            if (req.headers.authorization !== 'Bearer ok') return reply.code(401).send('no')
          })
        },
      },
    )
    expect((await request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': '5' })).status).toBe(
      401,
    )
    expect(
      await value(registry, 'tus_requests_total', {
        endpoint: '/files',
        method: 'POST',
        status: 401,
      }),
    ).toBe(1)
    expect(await value(registry, 'tus_uploads_created_total')).toBe(0)
  })

  it('counts a sweep that removes an expired upload and an orphan: removed by kind, bytes freed, duration, last success', async () => {
    const registry = new Registry()
    const server = await startServer({ metrics: { registry }, cleanupOnStart: false })
    const expired = randomId()
    await writeSession(server.directory, expired, { size: 100, bytes: 40, ageMs: 7_200_000 })
    const orphan = randomId()
    await writeSession(server.directory, orphan, { size: 100, bytes: 0, ageMs: 7_200_000 })
    await fs.rm(path.join(server.directory, orphan)) // only its record is left
    const fresh = randomId()
    await writeSession(server.directory, fresh, { size: 100, bytes: 5 })

    const before = Date.now() / 1000
    const report = await server.app.tusCleanup.run()
    expect(report).toMatchObject({ removed: 2, orphans: 1, errors: 0 })
    await server.app.tusCleanup.run({ dryRun: true }) // not a sweep: counts nothing

    const at = { endpoint: '/files' }
    expect(await value(registry, 'tus_sweeps_total', { ...at, result: 'ok' })).toBe(1)
    expect(await value(registry, 'tus_sweeps_total', { ...at, result: 'failed' })).toBe(0)
    expect(await value(registry, 'tus_sweep_removed_total', { ...at, kind: 'expired' })).toBe(1)
    expect(await value(registry, 'tus_sweep_removed_total', { ...at, kind: 'orphan' })).toBe(1)
    expect(await value(registry, 'tus_sweep_bytes_freed_total', at)).toBe(report.bytesFreed)
    expect(report.bytesFreed).toBeGreaterThan(40)
    expect(await value(registry, 'tus_sweep_errors_total', at)).toBe(0)
    expect(await value(registry, 'tus_sweep_skipped_busy_total', at)).toBe(0)
    expect(await value(registry, 'tus_sweep_duration_seconds_count', at)).toBe(1)
    expect(await value(registry, 'tus_sweep_duration_seconds_sum', at)).toBeCloseTo(
      report.durationMs / 1000,
    )
    const last = await value(registry, 'tus_sweep_last_success_timestamp_seconds', at)
    expect(last).toBeGreaterThanOrEqual(before)
    expect(last).toBeLessThanOrEqual(Date.now() / 1000)
  })

  it('counts a sweep that fails, and leaves the last success where it was', async () => {
    const registry = new Registry()
    const server = await startServer({ metrics: { registry }, cleanupOnStart: false })
    await server.app.tusCleanup.run()
    const last = await value(registry, 'tus_sweep_last_success_timestamp_seconds')
    // The store's directory is gone: the sweep cannot read it.
    await fs.rm(server.directory, { recursive: true })
    await expect(server.app.tusCleanup.run()).rejects.toThrow()
    const at = { endpoint: '/files' }
    expect(await value(registry, 'tus_sweeps_total', { ...at, result: 'ok' })).toBe(1)
    expect(await value(registry, 'tus_sweeps_total', { ...at, result: 'failed' })).toBe(1)
    expect(await value(registry, 'tus_sweep_duration_seconds_count', at)).toBe(2)
    expect(await value(registry, 'tus_sweep_last_success_timestamp_seconds', at)).toBe(last)
  })

  // Root only (CI runs as root): elsewhere it is skipped, and its name says why.
  ;(isRoot ? it : it.skip)(
    'tus_sweep_errors_total moves when a sweep cannot remove an expired upload (its data file immutable, chattr +i: needs root), and the scrape shows it',
    async () => {
      const registry = new Registry()
      const server = await serverWithMetricsRoute(registry)
      const id = randomId()
      await writeSession(server.directory, id, { size: 100, bytes: 40, ageMs: 7_200_000 })
      const dataFile = path.join(server.directory, id)
      expect(await scraped(server.origin, 'tus_sweep_errors_total')).toBe(0)
      // The filesystem refuses the unlink (EPERM), whoever asks: a fault of the disk's own.
      await chattr('+i', dataFile)
      try {
        const report = await server.app.tusCleanup.run()
        expect(report).toMatchObject({ removed: 0, errors: 1 })
        // What the README's alert rule reads: the entry's error, in a sweep that still ended ok.
        expect(await scraped(server.origin, 'tus_sweep_errors_total')).toBe(1)
        expect(await scraped(server.origin, 'tus_sweeps_total', { result: 'ok' })).toBe(1)
        expect(await scraped(server.origin, 'tus_sweep_removed_total')).toBe(0)
        const warned = server.logs.find((r) => r.level === 40 && r.id === id)
        expect((warned?.err as { code?: string } | undefined)?.code).toBe('EPERM')
        // Every sweep that meets it counts it again, until someone sees to it.
        expect((await server.app.tusCleanup.run()).errors).toBe(1)
        expect(await scraped(server.origin, 'tus_sweep_errors_total')).toBe(2)
      } finally {
        await chattr('-i', dataFile)
      }
      expect(await server.app.tusCleanup.run()).toMatchObject({ removed: 1, errors: 0 })
      expect(await scraped(server.origin, 'tus_sweep_errors_total')).toBe(2)
    },
  )

  it('tus_sweep_skipped_busy_total moves when a sweep meets an expired upload whose PATCH holds its lock, and the scrape shows it', async () => {
    const registry = new Registry()
    const server = await serverWithMetricsRoute(registry, { expireAfterMs: 3_600_000 })
    const chunks = [Buffer.alloc(1000, 1), Buffer.alloc(1000, 2)]
    const { url, id } = await createUpload(server.endpoint, 2000)
    const dataFile = path.join(server.directory, id)
    // A PATCH sends its first 1000 bytes, then stalls past the period (its data file backdated
    // two hours): by its mtime the upload is abandoned, but the PATCH holds its lock.
    const swept = signal()
    const patching = slowPatch(url, 0, chunks, 60_000, { until: swept.promise })
    let report: Awaited<ReturnType<typeof server.app.tusCleanup.run>>
    try {
      await waitFor(async () => (await fs.stat(dataFile)).size === 1000, 5000, 'the first bytes')
      await age(dataFile, 7_200_000)
      expect(await scraped(server.origin, 'tus_sweep_skipped_busy_total')).toBe(0)
      report = await server.app.tusCleanup.run()
    } finally {
      swept.resolve()
    }
    expect(report).toMatchObject({ removed: 0, skippedBusy: 1, errors: 0 })
    expect(await scraped(server.origin, 'tus_sweep_skipped_busy_total')).toBe(1)
    expect(await scraped(server.origin, 'tus_sweep_removed_total')).toBe(0)
    // The PATCH was never disturbed: its body ends, and the upload is whole.
    const answer = await patching
    expect(answer.status).toBe(204)
    expect(answer.headers['upload-offset']).toBe('2000')
  })

  it('labels a namespaced registration by its namespace, next to the others in one app', async () => {
    const registry = new Registry()
    const directory = await tempDir()
    const server = await startServer(
      { namespace: 'videos', path: '/videos', metrics: { registry }, cleanupOnStart: false },
      {
        before: async (app) => {
          await app.register(fastifyTus, {
            namespace: 'avatars',
            path: '/avatars',
            directory,
            metrics: { registry },
            cleanupOnStart: false,
          })
        },
      },
    )
    await createUpload(server.endpoint, 5)
    await createUpload(`${server.origin}/avatars`, 5)
    await createUpload(`${server.origin}/avatars`, 5)
    expect(await value(registry, 'tus_uploads_created_total', { endpoint: 'videos' })).toBe(1)
    expect(await value(registry, 'tus_uploads_created_total', { endpoint: 'avatars' })).toBe(2)
  })

  it('lets several registrations share one registry, each under its endpoint label', async () => {
    const registry = new Registry()
    const one = await startServer(
      { metrics: { registry }, cleanupOnStart: false },
      { register: { prefix: '/a' } },
    )
    const two = await startServer({
      metrics: { registry },
      path: '/uploads',
      cleanupOnStart: false,
    })
    await createUpload(one.endpoint, 5)
    await createUpload(one.endpoint, 5)
    await createUpload(two.endpoint, 5)
    expect(await value(registry, 'tus_uploads_created_total', { endpoint: '/a/files' })).toBe(2)
    expect(await value(registry, 'tus_uploads_created_total', { endpoint: '/uploads' })).toBe(1)
  })

  it("registers into prom-client's default registry with metrics: true, names prefixed when asked", async () => {
    const server = await startServer({ metrics: true, cleanupOnStart: false })
    await createUpload(server.endpoint, 5)
    expect(await value(defaultRegistry, 'tus_uploads_created_total', { endpoint: '/files' })).toBe(
      1,
    )
    // Every series of the endpoint is there from the start, at 0.
    expect(await defaultRegistry.metrics()).toMatch(
      /^tus_sweeps_total\{endpoint="\/files",result="failed"\} 0$/m,
    )

    const registry = new Registry()
    const prefixed = await startServer({
      metrics: { registry, prefix: 'myapp_' },
      cleanupOnStart: false,
    })
    await createUpload(prefixed.endpoint, 5)
    expect(await value(registry, 'myapp_tus_uploads_created_total')).toBe(1)
    expect(await value(registry, 'tus_uploads_created_total')).toBe(0)
  })

  it('works with the registry of fastify-metrics, served on its /metrics route', async () => {
    const app = Fastify()
    // A CommonJS module with `exports.default`: its plugin is `.default` when imported from ESM.
    await app.register(fastifyMetrics.default, { endpoint: '/metrics' })
    const directory = await tempDir()
    await app.register(fastifyTus, {
      directory,
      cleanupOnStart: false,
      metrics: { registry: app.metrics.client.register },
    })
    try {
      const origin = await app.listen({ host: '127.0.0.1', port: 0 })
      await createUpload(`${origin}/files`, 5)
      const scrape = await request(`${origin}/metrics`, 'GET', {})
      expect(scrape.status).toBe(200)
      expect(scrape.body).toMatch(/^tus_uploads_created_total\{endpoint="\/files"\} 1$/m)
      expect(scrape.body).toMatch(
        /^tus_requests_total\{endpoint="\/files",method="POST",status="201",protocol="tus"\} 1$/m,
      )
    } finally {
      await app.close()
    }
  })

  it('with Redis: lock waits observed, the lease gauge back at 0, and the instance that lost the lease counts a skipped sweep', async () => {
    const clients = [new Redis(REDIS_URL), new Redis(REDIS_URL)]
    const servers: Array<Awaited<ReturnType<typeof startServer>>> = []
    try {
      const prefix = `test:${randomId()}:`
      const directory = await tempDir()
      const registries = [new Registry(), new Registry()]
      for (const [i, client] of clients.entries()) {
        servers.push(
          await startServer({
            directory,
            metrics: { registry: registries[i] as Registry },
            redis: { client, prefix },
            cleanupIntervalMs: 3_600_000,
          }),
        )
      }
      const at = { endpoint: '/files' }
      const sum = async (name: string, labels: Labels) =>
        (await value(registries[0] as Registry, name, labels)) +
        (await value(registries[1] as Registry, name, labels))
      // Both scheduled their first sweep at start; one of them won this interval's lease.
      await expect
        .poll(async () => [
          await sum('tus_sweeps_total', { ...at, result: 'ok' }),
          await sum('tus_sweeps_total', { ...at, result: 'skipped' }),
        ])
        .toEqual([1, 1])
      expect(await sum('tus_sweep_lease_held', at)).toBe(0)

      const first = servers[0] as Awaited<ReturnType<typeof startServer>>
      const { url } = await createUpload(first.endpoint, 10)
      await patch(url, 0, Buffer.alloc(10))
      await head(url)
      const waits = await value(registries[0] as Registry, 'tus_lock_wait_seconds_count', at)
      expect(waits).toBeGreaterThanOrEqual(2) // PATCH and HEAD take the upload's lock
    } finally {
      for (const server of servers) await server.app.close()
      for (const client of clients) client.disconnect()
    }
  })

  it('registers exactly the metrics docs/metrics.md lists, with their types and labels', async () => {
    const client = new Redis(REDIS_URL)
    try {
      const registry = new Registry()
      // Every feature that brings metrics of its own: Redis, a free-space floor, a quota.
      const server = await startServer({
        metrics: { registry },
        redis: { client, prefix: `test:${randomId()}:` },
        minFreeBytes: 1,
        maxStoreBytes: 2 ** 40,
        cleanupOnStart: false,
      })
      const { url } = await createUpload(server.endpoint, 5)
      await head(url)
      await server.app.tusCleanup.run()
      const scrape = await registry.metrics()
      const found = new Map<string, { type: string; labels: Set<string> }>()
      for (const [, name, type] of scrape.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
        found.set(name as string, { type: type as string, labels: new Set() })
      }
      for (const [, name, labels] of scrape.matchAll(/^(\w+)\{([^}]*)\} \S+$/gm)) {
        const metric =
          found.get(name as string) ??
          found.get((name as string).replace(/_(bucket|sum|count)$/, ''))
        for (const [, label] of (labels as string).matchAll(/(\w+)="/g)) {
          metric?.labels.add(label as string)
        }
      }
      for (const [name, { labels }] of found) expect(labels.has('endpoint'), name).toBe(true)
      const docs = await fs.readFile('docs/metrics.md', 'utf8')
      const documented = [...docs.matchAll(/^\| `(tus_\w+)` +\| (\w+) +\| ([^|]*)\|/gm)].map(
        ([, name, type, labels]) => [name, type, (labels as string).match(/\w+/g)?.sort() ?? []],
      )
      const registered = [...found].map(([name, { type, labels }]) => [
        name,
        type,
        [...labels].filter((label) => label !== 'endpoint' && label !== 'le').sort(),
      ])
      expect(documented.length).toBeGreaterThan(10)
      expect(registered.sort()).toEqual(documented.sort())
    } finally {
      client.disconnect()
    }
  })

  it('without Redis, has no lock-wait or lease series', async () => {
    const registry = new Registry()
    await startServer({ metrics: { registry }, cleanupOnStart: false })
    const text = await registry.metrics()
    expect(text).not.toMatch(/tus_lock_wait_seconds|tus_sweep_lease_held/)
  })
})
