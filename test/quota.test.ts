/**
 * The store quota (`maxStoreBytes`): the bytes the store may hold, finished uploads included and
 * unfinished uploads' declared lengths counted as taken. Creations and declarations over it
 * answer 507 and create nothing, a deferred-length PATCH stops at it (bytes before kept,
 * resumable), running into it starts an emergency sweep, every sweep recounts the total, and a
 * fleet on one directory shares the total in Redis. Real HTTP, real directories, a real Redis.
 */

import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'
import { Redis } from 'ioredis'
import { Registry } from 'prom-client'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { TusCleanupDecorator } from '../src/index.js'
import { randomId, sha256Of } from './helpers/data.js'
import { exists, listing, listingBecomes, sha256, tempDir, writeSession } from './helpers/fs.js'
import { request } from './helpers/http.js'
import { REDIS_URL } from './helpers/redis.js'
import { emergencySweepRecord, startServer } from './helpers/server.js'
import { createUpload, head, patch, slowPatch, TUS } from './helpers/tus-client.js'
import { signal, waitFor } from './helpers/wait.js'

const KiB = 1024

/** A server with a 100 KiB quota, no free-space floor and no startup sweep. */
function quotaServer() {
  return startServer({ maxStoreBytes: 100 * KiB, minFreeBytes: 0, cleanupOnStart: false })
}
const HOUR = 3_600_000

/** The number a Prometheus scrape gives a series of the `/files` endpoint. */
function scraped(scrape: string, name: string): number {
  const line = scrape.split('\n').find((l) => l.startsWith(`${name}{endpoint="/files"} `))
  if (!line) throw new Error(`no ${name} in the scrape`)
  return Number(line.slice(line.lastIndexOf(' ') + 1))
}

describe('the store quota', () => {
  it('a creation whose length would go over the quota answers 507 with the figures and creates nothing', async () => {
    const server = await startServer({ maxStoreBytes: 100 * KiB, minFreeBytes: 0 })
    const first = await createUpload(server.endpoint, 60 * KiB)
    const refused = await request(server.endpoint, 'POST', {
      ...TUS,
      'Upload-Length': String(50 * KiB),
    })
    expect(refused.status).toBe(507)
    expect(refused.body).toBe(
      `Insufficient Storage: this upload needs ${50 * KiB} bytes and the store holds ${60 * KiB} of its ${100 * KiB} (maxStoreBytes, unfinished uploads' declared lengths included); try again later\n`,
    )
    expect(await listing(server.directory)).toEqual([first.id, `${first.id}.json`].sort())
    // What still fits is created; OPTIONS keeps answering Tus-Max-Size as configured (none).
    expect((await createUpload(server.endpoint, 40 * KiB)).response.status).toBe(201)
    const options = await request(server.endpoint, 'OPTIONS', {})
    expect(options.headers['tus-max-size']).toBeUndefined()
  })

  it('a length larger than the whole quota answers 413 (a retry cannot help); Tus-Max-Size stays tus.maxSize', async () => {
    const server = await startServer({
      maxStoreBytes: 100 * KiB,
      minFreeBytes: 0,
      tus: { maxSize: 1024 * KiB },
    })
    const refused = await request(server.endpoint, 'POST', {
      ...TUS,
      'Upload-Length': String(101 * KiB),
    })
    expect(refused.status).toBe(413)
    expect(refused.body).toMatch(/the store holds at most 102400 \(maxStoreBytes\)/)
    expect(await listing(server.directory)).toEqual([])
    const options = await request(server.endpoint, 'OPTIONS', {})
    expect(options.headers['tus-max-size']).toBe(String(1024 * KiB))
  })

  it('a late Upload-Length that can never fit answers 413, counting the bytes already written (not 507)', async () => {
    const server = await startServer({ maxStoreBytes: 100 * KiB, minFreeBytes: 0 })
    const { url } = await createUpload(server.endpoint, 'deferred')
    expect((await patch(url, 0, Buffer.from('x'))).status).toBe(204)
    // One byte is in: the rest (100 KiB) would fit the quota, the whole upload never could.
    const refused = await patch(url, 1, Buffer.alloc(0), { 'Upload-Length': String(100 * KiB + 1) })
    expect(refused.status).toBe(413)
    expect(refused.body).toMatch(/this upload needs 102401 bytes; the store holds at most 102400/)
    expect((await head(url)).headers['upload-length']).toBeUndefined()
    // A length that fits whole is taken.
    const fits = await patch(url, 1, Buffer.alloc(0), { 'Upload-Length': String(100 * KiB) })
    expect(fits.status, fits.body).toBe(204)
  })

  it('unfinished uploads reserve their declared length: many small creations with no bytes stop at the quota', async () => {
    const server = await startServer({ maxStoreBytes: 10 * KiB, minFreeBytes: 0 })
    const statuses = []
    for (let i = 0; i < 15; i++) {
      const res = await request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': '1024' })
      statuses.push(res.status)
    }
    expect(statuses).toEqual([...Array(10).fill(201), ...Array(5).fill(507)])
    // Not one byte was written: the promises alone fill the quota.
    const files = await listing(server.directory)
    expect(files).toHaveLength(20)
    for (const file of files.filter((f) => !f.endsWith('.json'))) {
      expect((await fs.stat(path.join(server.directory, file))).size).toBe(0)
    }
  })

  it('concurrent creations never promise more than the quota, even with the emergency sweep recounting among them', async () => {
    const server = await startServer({
      maxStoreBytes: 10 * KiB,
      minFreeBytes: 0,
      cleanupOnStart: false,
    })
    const answers = await Promise.all(
      Array.from({ length: 30 }, () =>
        request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': '1024' }),
      ),
    )
    expect(answers.filter((r) => r.status === 201)).toHaveLength(10)
    expect(answers.filter((r) => r.status === 507)).toHaveLength(20)
    // The emergency sweep recounted meanwhile: the total still holds every promise.
    await waitFor(() => server.app.tusCleanup.last, 5000, 'the emergency sweep')
    const late = await request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': '1' })
    expect(late.status).toBe(507)
  })

  it('a deferred-length PATCH stops at the quota: bytes before kept, 507 with the new offset, resumes once space is freed', async () => {
    const server = await startServer({ maxStoreBytes: 1024 * KiB, minFreeBytes: 0 })
    const other = await createUpload(server.endpoint, 400 * KiB)
    const { url, id } = await createUpload(server.endpoint, 'deferred')
    const data = randomBytes(900 * KiB)

    const cut = await patch(url, 0, data)
    expect(cut.status).toBe(507)
    expect(cut.body).toMatch(/^Insufficient Storage: this upload needs 921600 bytes/)
    expect(cut.headers['upload-offset']).toBe(String(624 * KiB))
    expect((await fs.stat(path.join(server.directory, id))).size).toBe(624 * KiB)
    expect((await head(url)).headers['upload-offset']).toBe(String(624 * KiB))

    // Still full: the next PATCH writes nothing.
    const again = await patch(url, 624 * KiB, data.subarray(624 * KiB))
    expect(again.status).toBe(507)
    expect(again.headers['upload-offset']).toBe(String(624 * KiB))

    // The other upload is terminated: its reservation goes back, and the upload resumes.
    expect((await request(other.url, 'DELETE', TUS)).status).toBe(204)
    const rest = await patch(url, 624 * KiB, data.subarray(624 * KiB), {
      'Upload-Length': String(data.length),
    })
    expect(rest.status, rest.body).toBe(204)
    expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(data))
  })

  it("a sweep's recount while a deferred-length PATCH writes counts its bytes once", async () => {
    const server = await quotaServer()
    const { url, id } = await createUpload(server.endpoint, 'deferred')
    const chunks = Array.from({ length: 10 }, (_, i) => randomBytes(4 * KiB).fill(i, 0, 1))
    const swept = signal()
    onTestFinished(() => swept.resolve())
    // 40 KiB claimed at once; half of it on disk when the sweep walks the store.
    const writing = slowPatch(url, 0, chunks, 50, { until: swept.promise })
    await waitFor(async () => (await fs.stat(path.join(server.directory, id))).size >= 20 * KiB)
    await server.app.tusCleanup.run()
    swept.resolve()
    expect((await writing).status).toBe(204)
    // 40 KiB counted, not 40 plus what the walk saw: 60 KiB more fit exactly.
    const fits = await request(server.endpoint, 'POST', {
      ...TUS,
      'Upload-Length': String(60 * KiB),
    })
    expect(fits.status, fits.body).toBe(201)
  })

  it('a checksummed body cut by the quota is rolled back whole and gives its bytes back', async () => {
    const server = await startServer({ maxStoreBytes: 100 * KiB, minFreeBytes: 0 })
    const { url, id } = await createUpload(server.endpoint, 'deferred')
    const data = randomBytes(150 * KiB)
    const checksum = (body: Buffer) =>
      `sha256 ${createHash('sha256').update(body).digest('base64')}`
    const cut = await patch(url, 0, data, { 'Upload-Checksum': checksum(data) })
    expect(cut.status).toBe(507)
    expect(cut.headers['upload-offset']).toBe('0')
    expect((await fs.stat(path.join(server.directory, id))).size).toBe(0)
    // Nothing of the cut body stays counted: the whole quota is there for the next one.
    const fits = data.subarray(0, 100 * KiB)
    const next = await patch(url, 0, fits, { 'Upload-Checksum': checksum(fits) })
    expect(next.status, next.body).toBe(204)
    expect(next.headers['upload-offset']).toBe(String(100 * KiB))
  })

  it('a deferred length is checked against the quota when it is declared', async () => {
    const server = await startServer({ maxStoreBytes: 100 * KiB, minFreeBytes: 0 })
    const { url } = await createUpload(server.endpoint, 'deferred')
    expect((await patch(url, 0, Buffer.alloc(10 * KiB, 7))).status).toBe(204)
    await createUpload(server.endpoint, 50 * KiB)
    // 10 KiB held + 50 KiB reserved: a length of 60 KiB needs 50 KiB more, 40 are left.
    const refused = await patch(url, 10 * KiB, Buffer.alloc(0), {
      'Upload-Length': String(60 * KiB),
    })
    expect(refused.status).toBe(507)
    expect(refused.body).toMatch(/needs 51200 bytes and the store holds 61440 of its 102400/)
    expect((await head(url)).headers['upload-defer-length']).toBe('1')
    const fits = await patch(url, 10 * KiB, Buffer.alloc(0), { 'Upload-Length': String(50 * KiB) })
    expect(fits.status, fits.body).toBe(204)
    // Now the store is full: 50 + 50 KiB promised.
    const full = await request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': '1' })
    expect(full.status).toBe(507)
  })

  it('counts at startup what the store holds: finished uploads, declared lengths and deferred bytes; not what the startup sweep removes', async () => {
    const directory = await tempDir()
    await writeSession(directory, randomId(), { size: 30 * KiB, bytes: 30 * KiB }) // finished
    await writeSession(directory, randomId(), { size: 40 * KiB, bytes: 10 * KiB }) // unfinished
    await writeSession(directory, randomId(), { size: undefined, bytes: 5 * KiB }) // deferred
    const expired = randomId()
    await writeSession(directory, expired, { size: 50 * KiB, bytes: 1, ageMs: 2 * HOUR })
    const registry = new Registry()
    const server = await startServer({
      directory,
      maxStoreBytes: 100 * KiB,
      minFreeBytes: 0,
      expireAfterMs: HOUR,
      metrics: { registry },
    })
    // The startup sweep ran before the routes served, and its walk was the count.
    expect(server.app.tusCleanup.last).toMatchObject({ removed: 1, ids: [expired] })
    const scrape = await registry.metrics()
    expect(scraped(scrape, 'tus_store_bytes')).toBe(75 * KiB)
    expect(scraped(scrape, 'tus_store_max_bytes')).toBe(100 * KiB)
    expect((await createUpload(server.endpoint, 25 * KiB)).response.status).toBe(201)
    const full = await request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': '1' })
    expect(full.status).toBe(507)
  })

  it('the quota running out starts an emergency sweep that removes an expired upload; the retry gets through; logged with the free space and the quota', async () => {
    const directory = await tempDir()
    const abandoned = randomId()
    // Promised 80 KiB, of which 8 arrived, two hours ago.
    await writeSession(directory, abandoned, { size: 80 * KiB, bytes: 8 * KiB, ageMs: 2 * HOUR })
    const registry = new Registry()
    const server = await startServer({
      directory,
      maxStoreBytes: 100 * KiB,
      expireAfterMs: HOUR,
      cleanupOnStart: false,
      metrics: { registry },
    })
    const refused = await request(server.endpoint, 'POST', {
      ...TUS,
      'Upload-Length': String(50 * KiB),
    })
    expect(refused.status).toBe(507)
    const sweep = await emergencySweepRecord(server.logs)
    expect(sweep).toMatchObject({ removed: 1, emergency: true })
    const warning = server.logs.find((r) => /emergency sweep/.test(String(r.msg)))
    expect(warning).toMatchObject({
      level: 40,
      msg: 'fastify-tus: the store is at its quota: emergency sweep',
      storeBytes: 80 * KiB,
      maxStoreBytes: 100 * KiB,
      neededBytes: 50 * KiB,
    })
    expect(warning?.freeBytes).toEqual(expect.any(Number))
    expect(warning?.minFreeBytes).toEqual(expect.any(Number))
    expect(await listing(directory)).toEqual([])

    expect((await createUpload(server.endpoint, 50 * KiB)).response.status).toBe(201)
    const scrape = await registry.metrics()
    expect(scraped(scrape, 'tus_emergency_sweeps_total')).toBe(1)
    expect(scraped(scrape, 'tus_store_bytes')).toBe(50 * KiB)
  })

  it('with no floor (minFreeBytes 0) the quota warning still shows the free space', async () => {
    const server = await startServer({
      maxStoreBytes: KiB,
      minFreeBytes: 0,
      cleanupOnStart: false,
    })
    const refused = await request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': '2000' })
    expect(refused.status).toBe(413)
    expect(
      (await request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': '1000' })).status,
    ).toBe(201)
    expect(
      (await request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': '100' })).status,
    ).toBe(507)
    const warning = await waitFor(
      () => server.logs.find((r) => /emergency sweep/.test(String(r.msg))),
      2000,
      'the warning',
    )
    expect(warning).toMatchObject({ storeBytes: 1000, maxStoreBytes: KiB, neededBytes: 100 })
    expect(warning.freeBytes).toBeGreaterThan(0)
    expect(warning).not.toHaveProperty('minFreeBytes')
  })

  it('every sweep recounts the total: an upload removed behind the plugin back stops counting after the next sweep', async () => {
    const server = await quotaServer()
    const { id } = await createUpload(server.endpoint, 60 * KiB)
    // Both files removed without the plugin (an operator's rm): nothing is left to release.
    await fs.rm(path.join(server.directory, id))
    await fs.rm(path.join(server.directory, `${id}.json`))
    const stale = await request(server.endpoint, 'POST', {
      ...TUS,
      'Upload-Length': String(60 * KiB),
    })
    expect(stale.status).toBe(507)
    const report = await server.app.tusCleanup.run()
    expect(report.storeBytes).toBe(0)
    expect((await createUpload(server.endpoint, 60 * KiB)).response.status).toBe(201)
    // A dry run counts too, but leaves the total alone.
    expect((await server.app.tusCleanup.run({ dryRun: true })).storeBytes).toBe(60 * KiB)
  })
})

describe('releasing uploads the app moved out of the store', () => {
  it('a finish hook that moves the data file out releases its bytes at once: its record goes, tus_store_bytes drops, and an upload that needed the space is accepted without a sweep', async () => {
    const directory = await tempDir()
    const files = await tempDir()
    const registry = new Registry()
    const server = await startServer({
      directory,
      maxStoreBytes: 100 * KiB,
      minFreeBytes: 0,
      cleanupOnStart: false,
      metrics: { registry },
      tus: {
        async onUploadFinish(_req, upload) {
          await fs.rename(path.join(directory, upload.id), path.join(files, upload.id))
          return {}
        },
      },
    })
    const data = randomBytes(60 * KiB)
    const { url, id } = await createUpload(server.endpoint, data.length)
    expect(scraped(await registry.metrics(), 'tus_store_bytes')).toBe(60 * KiB)
    expect((await patch(url, 0, data)).status).toBe(204)
    expect(await sha256(path.join(files, id))).toBe(sha256Of(data))
    expect(await listing(directory)).toEqual([])
    expect(scraped(await registry.metrics(), 'tus_store_bytes')).toBe(0)
    expect((await createUpload(server.endpoint, 100 * KiB)).response.status).toBe(201)
    expect(server.app.tusCleanup.last).toBeUndefined()
  })

  it('tusCleanup.release(id) after the app removed the data file itself gives its bytes back and removes its record; a second call releases 0', async () => {
    const server = await quotaServer()
    const { id } = await createUpload(server.endpoint, 60 * KiB)
    await fs.rm(path.join(server.directory, id))
    // Until it is released, the upload counts: its record is still in the store.
    const stale = await request(server.endpoint, 'POST', {
      ...TUS,
      'Upload-Length': String(60 * KiB),
    })
    expect(stale.status).toBe(507)
    expect(await server.app.tusCleanup.release(id)).toBe(60 * KiB)
    expect(await listing(server.directory)).toEqual([])
    expect(await server.app.tusCleanup.release(id)).toBe(0)
    expect((await createUpload(server.endpoint, 100 * KiB)).response.status).toBe(201)
  })

  it('an upload whose data file the app removed counts until released, also across a sweep, so its bytes are given back once', async () => {
    const server = await quotaServer()
    await createUpload(server.endpoint, 30 * KiB)
    const { id } = await createUpload(server.endpoint, 60 * KiB)
    await fs.rm(path.join(server.directory, id))
    // The sweep's recount still counts the record left behind (it is not expired: kept).
    expect((await server.app.tusCleanup.run()).storeBytes).toBe(90 * KiB)
    expect(await server.app.tusCleanup.release(id)).toBe(60 * KiB)
    // 30 KiB stay counted: 70 KiB fit, and not a byte more.
    expect((await createUpload(server.endpoint, 70 * KiB)).response.status).toBe(201)
    const full = await request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': '1' })
    expect(full.status).toBe(507)
  })

  it('a DELETE of an upload whose data file the app removed gives its bytes back', async () => {
    const server = await quotaServer()
    const { url, id } = await createUpload(server.endpoint, 60 * KiB)
    await fs.rm(path.join(server.directory, id))
    expect((await request(url, 'DELETE', TUS)).status).toBe(204)
    expect(await listing(server.directory)).toEqual([])
    expect(await server.app.tusCleanup.release(id)).toBe(0)
    expect((await createUpload(server.endpoint, 100 * KiB)).response.status).toBe(201)
  })

  it('releasing an upload whose data file is still in the store releases 0 and removes nothing', async () => {
    const server = await quotaServer()
    const { url, id } = await createUpload(server.endpoint, 60 * KiB)
    expect(await server.app.tusCleanup.release(id)).toBe(0)
    expect(await listing(server.directory)).toEqual([id, `${id}.json`].sort())
    expect((await head(url)).status).toBe(200)
    const refused = await request(server.endpoint, 'POST', {
      ...TUS,
      'Upload-Length': String(41 * KiB),
    })
    expect(refused.status).toBe(507)
  })

  it('tusCleanup.release refuses what is not an upload id of the endpoint, and touches nothing outside the store', async () => {
    const root = await tempDir()
    const directory = path.join(root, 'store')
    // Beside the store: what `../victim` would name, record included.
    await fs.writeFile(path.join(root, 'victim.json'), JSON.stringify({ id: '../victim', size: 1 }))
    // An idPattern that allows dots and slashes: the path itself is checked too.
    const server = await startServer({
      directory,
      namespace: 'docs',
      maxStoreBytes: 100 * KiB,
      minFreeBytes: 0,
      cleanupOnStart: false,
      idPattern: /[\w./]+/,
    })
    // Namespaces are typed per app (FastifyTusNamespaces); this test program declares none.
    const namespaced = server.app.tusCleanup as unknown as Record<string, TusCleanupDecorator>
    const release = namespaced.docs?.release
    if (!release) throw new Error('no tusCleanup.docs')
    for (const id of [
      '../victim',
      'a/../../victim',
      '/tmp/victim',
      './victim',
      'a//b',
      'no spaces',
    ]) {
      await expect(release(id)).rejects.toMatchObject({
        code: 'FST_TUS_INVALID_UPLOAD_ID',
        message: expect.stringContaining(JSON.stringify(id)),
      })
    }
    expect(await exists(path.join(root, 'victim.json'))).toBe(true)
    // An id of the pattern that is no upload: nothing to release.
    expect(await release('nothing/here')).toBe(0)
  })

  it('with the default idPattern, a name that is not 32 hex digits is refused', async () => {
    const server = await startServer({ maxStoreBytes: 100 * KiB, minFreeBytes: 0 })
    const { id } = await createUpload(server.endpoint, 10)
    await expect(server.app.tusCleanup.release(`${id}.json`)).rejects.toThrow(
      `fastify-tus: "${id}.json" is not an upload id of this endpoint (idPattern /^[0-9a-f]{32}$/)`,
    )
    expect(await listing(server.directory)).toEqual([id, `${id}.json`].sort())
  })
})

/** Finished partial uploads of `sizes` bytes, then the creation of their final: its answer. */
async function parallelUpload(endpoint: string, sizes: number[]) {
  const urls: string[] = []
  for (const size of sizes) {
    const part = randomBytes(size)
    const { url } = await createUpload(endpoint, size, { 'Upload-Concat': 'partial' })
    expect((await patch(url, 0, part)).status).toBe(204)
    urls.push(url)
  }
  const final = await request(endpoint, 'POST', {
    ...TUS,
    'Upload-Concat': `final;${urls.join(' ')}`,
  })
  return { ...final, partials: urls.map((url) => url.slice(url.lastIndexOf('/') + 1)) }
}

describe('the store quota and parallel uploads', () => {
  it("a final upload takes over its partials' bytes: a parallel upload needs its size of the quota, not twice", async () => {
    const server = await startServer({ maxStoreBytes: 100 * KiB, minFreeBytes: 0 })
    // 60 KiB of partials in a 100 KiB quota: the final would not fit beside them.
    const final = await parallelUpload(server.endpoint, [30 * KiB + 1, 30 * KiB + 2])
    expect(final.status, final.body).toBe(201)
    // The count is the final's alone: 40 KiB more fit, and a sweep's recount agrees.
    const more = await request(server.endpoint, 'POST', {
      ...TUS,
      'Upload-Length': String(39 * KiB),
    })
    expect(more.status).toBe(201)
    expect((await server.app.tusCleanup.run()).storeBytes).toBe(60 * KiB + 3 + 39 * KiB)
  })

  it("a finish hook that moves a final upload out releases its bytes at once; its partials' records stay, counting nothing", async () => {
    const directory = await tempDir()
    const files = await tempDir()
    const server = await startServer({
      directory,
      maxStoreBytes: 100 * KiB,
      minFreeBytes: 0,
      cleanupOnStart: false,
      tus: {
        async onUploadFinish(_req, upload) {
          await fs.rename(path.join(directory, upload.id), path.join(files, upload.id))
          return {}
        },
      },
    })
    const final = await parallelUpload(server.endpoint, [30 * KiB, 30 * KiB])
    expect(final.status, final.body).toBe(201)
    const finalId = String(final.headers.location).split('/').pop() as string
    expect((await fs.stat(path.join(files, finalId))).size).toBe(60 * KiB)
    // What stays: the partials' records, marked taken (a retried final creation finds it).
    await listingBecomes(
      directory,
      final.partials.map((id) => `${id}.json`),
    )
    expect((await createUpload(server.endpoint, 100 * KiB)).response.status).toBe(201)
    expect((await server.app.tusCleanup.run({ dryRun: true })).storeBytes).toBe(100 * KiB)
  })
})

describe('the store quota with several instances (Redis)', () => {
  function redisClient(): Redis {
    const client = new Redis(REDIS_URL)
    onTestFinished(() => void client.disconnect())
    return client
  }

  /** Two instances on one directory, sharing a Redis prefix of this test's own. */
  async function fleet(maxStoreBytes: number) {
    const options = await fleetOptions(maxStoreBytes)
    const a = await startServer(options)
    const b = await startServer(options)
    const { client, prefix } = options.redis
    return { a, b, client, prefix, directory: options.directory }
  }

  /** The options of a fleet's instance on a directory and a Redis prefix of this test's own. */
  async function fleetOptions(maxStoreBytes: number) {
    const client = redisClient()
    const prefix = `test:${randomId()}:`
    onTestFinished(async () => {
      const keys = await client.keys(`${prefix}*`)
      if (keys.length > 0) await client.del(...keys)
    })
    const directory = await tempDir()
    const redis = { client, prefix }
    return { directory, maxStoreBytes, minFreeBytes: 0, cleanupOnStart: false, redis }
  }

  it('instances on one directory share one total: what one promised, the other cannot promise again', async () => {
    const { a, b, client, prefix } = await fleet(100 * KiB)
    expect(await client.get(`${prefix}{quota}:bytes`)).toBe('0')
    await createUpload(a.endpoint, 70 * KiB)
    const refused = await request(b.endpoint, 'POST', {
      ...TUS,
      'Upload-Length': String(40 * KiB),
    })
    expect(refused.status).toBe(507)
    expect(refused.body).toMatch(/the store holds 71680 of its 102400/)
    expect((await createUpload(b.endpoint, 30 * KiB)).response.status).toBe(201)
    expect(await client.get(`${prefix}{quota}:bytes`)).toBe(String(100 * KiB))
  })

  it('concurrent creations on both instances never promise more than the quota, even with emergency sweeps recounting among them', async () => {
    const { a, b, directory } = await fleet(10 * KiB)
    const answers = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        request(i % 2 ? a.endpoint : b.endpoint, 'POST', { ...TUS, 'Upload-Length': '1024' }),
      ),
    )
    const statuses = answers.map((r) => r.status)
    expect(statuses.filter((s) => s === 201)).toHaveLength(10)
    expect(statuses.filter((s) => s === 507)).toHaveLength(20)
    expect(await listing(directory)).toHaveLength(20)
  })

  it('a sweep on either instance recounts the shared total from the directory', async () => {
    const { a, b, client, prefix, directory } = await fleet(100 * KiB)
    const { id } = await createUpload(a.endpoint, 80 * KiB)
    await fs.rm(path.join(directory, id))
    await fs.rm(path.join(directory, `${id}.json`))
    expect(
      (await request(a.endpoint, 'POST', { ...TUS, 'Upload-Length': String(80 * KiB) })).status,
    ).toBe(507)
    await b.app.tusCleanup.run()
    expect(await client.get(`${prefix}{quota}:bytes`)).toBe('0')
    expect((await createUpload(a.endpoint, 80 * KiB)).response.status).toBe(201)
  })

  it('a new instance takes the fleet total from Redis instead of counting the directory', async () => {
    const { a, client, prefix, directory } = await fleet(100 * KiB)
    await createUpload(a.endpoint, 30 * KiB)
    // A file the fleet does not know of: a new instance that walked the directory would count it.
    await writeSession(directory, randomId(), { size: 50 * KiB, bytes: 0 })
    const c = await startServer({
      directory,
      maxStoreBytes: 100 * KiB,
      minFreeBytes: 0,
      cleanupOnStart: false,
      redis: { client, prefix },
    })
    expect((await createUpload(c.endpoint, 70 * KiB)).response.status).toBe(201)
  })

  it('a total Redis lost is counted again from the directory by the next instance that needs it', async () => {
    const { a, client, prefix } = await fleet(100 * KiB)
    await createUpload(a.endpoint, 60 * KiB)
    await client.del(`${prefix}{quota}:bytes`, `${prefix}{quota}:added`)
    const refused = await request(a.endpoint, 'POST', {
      ...TUS,
      'Upload-Length': String(50 * KiB),
    })
    expect(refused.status).toBe(507)
    expect(await client.get(`${prefix}{quota}:bytes`)).toBe(String(60 * KiB))
  })

  it('a fleet restarted on a directory emptied meanwhile recounts the shared total at start: the first upload fits, tus_store_bytes says so, logged at info', async () => {
    const options = await fleetOptions(100 * KiB)
    const { client, prefix } = options.redis
    const first = await startServer(options)
    await createUpload(first.endpoint, 80 * KiB)
    await first.app.close()
    for (const file of await listing(options.directory)) {
      await fs.rm(path.join(options.directory, file))
    }
    expect(await client.get(`${prefix}{quota}:bytes`)).toBe(String(80 * KiB))

    const registry = new Registry()
    const again = await startServer({ ...options, metrics: { registry } })
    expect(await client.get(`${prefix}{quota}:bytes`)).toBe('0')
    expect(scraped(await registry.metrics(), 'tus_store_bytes')).toBe(0)
    expect(again.logs.find((r) => /quota total was larger/.test(String(r.msg)))).toMatchObject({
      level: 30,
      storeBytes: 0,
      previousStoreBytes: 80 * KiB,
      maxStoreBytes: 100 * KiB,
    })
    expect((await createUpload(again.endpoint, 100 * KiB)).response.status).toBe(201)
  })

  it("an instance starting while another serves lowers a stale shared total, keeping the bytes of the other's claims in flight", async () => {
    const options = await fleetOptions(100 * KiB)
    const { client, prefix } = options.redis
    const a = await startServer(options)
    // 50 KiB that the total counts and the directory no longer holds.
    const gone = await createUpload(a.endpoint, 50 * KiB)
    await fs.rm(path.join(options.directory, gone.id))
    await fs.rm(path.join(options.directory, `${gone.id}.json`))
    // A deferred-length PATCH on `a` has claimed its 40 KiB; 20 KiB of them are on disk.
    const { url, id } = await createUpload(a.endpoint, 'deferred')
    const resume = signal()
    onTestFinished(() => resume.resolve())
    const body = [randomBytes(20 * KiB), randomBytes(20 * KiB)]
    const writing = slowPatch(url, 0, body, 60_000, { until: resume.promise })
    await waitFor(async () => (await fs.stat(path.join(options.directory, id))).size >= 20 * KiB)
    expect(await client.get(`${prefix}{quota}:bytes`)).toBe(String(90 * KiB))

    const b = await startServer(options)
    // What the walk saw (20 KiB) and the claim in flight (40 KiB), not the stale 90 KiB.
    expect(await client.get(`${prefix}{quota}:bytes`)).toBe(String(60 * KiB))
    const over = await request(b.endpoint, 'POST', { ...TUS, 'Upload-Length': String(41 * KiB) })
    expect(over.status).toBe(507)
    expect((await createUpload(b.endpoint, 40 * KiB)).response.status).toBe(201)
    resume.resolve()
    expect((await writing).status).toBe(204)
  })

  it('starts while Redis is down, and answers 503 to a creation while it stays down', async () => {
    const down = new Redis('redis://127.0.0.1:1', {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      retryStrategy: () => null,
    })
    down.on('error', () => {})
    onTestFinished(() => void down.disconnect())
    const server = await startServer({
      maxStoreBytes: 100 * KiB,
      minFreeBytes: 0,
      cleanupOnStart: false,
      redis: { client: down, prefix: `test:${randomId()}:` },
    })
    expect(server.logs.some((r) => /store quota at startup/.test(String(r.msg)))).toBe(true)
    const refused = await request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': '10' })
    expect(refused.status).toBe(503)
    // The creation's lock is refused first (upload locks live in the same Redis).
    expect(refused.body).toMatch(
      /^(Upload locks are unavailable|The store quota cannot be checked)/,
    )
    expect(await listing(server.directory)).toEqual([])
  })
})
