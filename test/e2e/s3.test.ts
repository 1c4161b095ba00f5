/**
 * The plugin with a stock @tus/s3-store `S3Store` as `datastore`, on a real S3 API (Ceph radosgw
 * started by test/e2e/s3-global-setup.ts, or the server `S3_ENDPOINT` names). Each test has a bucket
 * of its own.
 */
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { MemoryLocker, Server } from '@tus/server'
import { describe, expect, it, onTestFinished } from 'vitest'
import { randomId } from '../helpers/data.js'
import { bucketContents, readObject, s3Store, testBucket } from '../helpers/s3.js'
import { startServer } from '../helpers/server.js'
import { createUpload, head, patch } from '../helpers/tus-client.js'
import { sleep, waitFor } from '../helpers/wait.js'

const MiB = 1024 * 1024
/** Periods with room for a loaded 2-core machine, where one S3 request can take hundreds of ms. */
const EXPIRE_MS = 2500
const SLOW_EXPIRE_MS = 3000

/** PATCHes `data` in `chunk`-byte requests, `pauseMs` apart; stops at the first non-204. */
async function slowUpload(url: string, data: Buffer, chunk: number, pauseMs: number) {
  const statuses: number[] = []
  for (let offset = 0; offset < data.length; offset += chunk) {
    await sleep(pauseMs)
    const res = await patch(url, offset, data.subarray(offset, offset + chunk))
    statuses.push(res.status)
    if (res.status !== 204) break
  }
  return statuses
}

describe('S3Store: the plugin expires by activity, under the lock', () => {
  it('completes byte-identical an upload PATCHed slowly past expireAfterMs while sweeps run every 200 ms', async () => {
    const { client, bucket } = await testBucket()
    const { endpoint, app, logs } = await startServer({
      datastore: s3Store(bucket),
      expireAfterMs: SLOW_EXPIRE_MS,
      cleanupIntervalMs: 200,
    })
    const data = randomBytes(11 * MiB)
    const { url, id } = await createUpload(endpoint, data.length)
    const started = Date.now()
    // 1 MiB every 500 ms: each PATCH rewrites `.part` until 5 MiB make a part.
    const statuses = await slowUpload(url, data, MiB, 500)
    expect(Date.now() - started).toBeGreaterThan(2 * SLOW_EXPIRE_MS)
    expect(statuses).toEqual(Array(11).fill(204))
    expect((await readObject(client, bucket, id)).equals(data)).toBe(true)
    // The sweeps saw the upload while it was under way and left it.
    const sweeps = logs.filter((r) => r.msg === 'no expired uploads to remove')
    expect(sweeps.filter((r) => (r.scanned as number) >= 1).length).toBeGreaterThan(5)
    expect(app.tusCleanup.last?.errors).toBe(0)
  }, 30_000)

  it('the stock S3Store deleteExpired() in the same setup ends that upload (why the plugin replaces it)', async () => {
    const { bucket } = await testBucket()
    const store = s3Store(bucket, { expirationPeriodInMilliseconds: SLOW_EXPIRE_MS })
    const tus = new Server({ path: '/files', datastore: store })
    const server = http.createServer((req, res) => tus.handle(req, res))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const timer = setInterval(() => store.deleteExpired().catch(() => {}), 200)
    onTestFinished(async () => {
      clearInterval(timer)
      await new Promise((resolve) => server.close(resolve))
    })
    const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}/files`
    const data = randomBytes(11 * MiB)
    const { url } = await createUpload(endpoint, data.length)
    const statuses = await slowUpload(url, data, MiB, 500)
    // A PATCH fails (410 from the creation-based check, or an error once the sweep aborted the
    // multipart upload) before the upload can finish.
    expect(statuses.at(-1)).not.toBe(204)
  }, 30_000)

  it('removes abandoned uploads entirely: multipart upload, .info and .part (and one without .part)', async () => {
    const { client, bucket } = await testBucket()
    const { endpoint, app } = await startServer({
      datastore: s3Store(bucket),
      expireAfterMs: EXPIRE_MS,
      cleanupOnStart: false,
    })
    const withPart = await createUpload(endpoint, 12 * MiB)
    expect((await patch(withPart.url, 0, randomBytes(MiB))).status).toBe(204)
    const withoutPart = await createUpload(endpoint, 12 * MiB)
    expect((await patch(withoutPart.url, 0, randomBytes(5 * MiB))).status).toBe(204)
    expect(await bucketContents(client, bucket)).toEqual({
      objects: [`${withPart.id}.info`, `${withPart.id}.part`, `${withoutPart.id}.info`].sort(),
      multipart: [withPart.id, withoutPart.id].sort(),
    })

    // Not yet expired: nothing goes.
    expect((await app.tusCleanup.run()).removed).toBe(0)
    await sleep(EXPIRE_MS + 200)
    const before = await bucketContents(client, bucket)
    const dry = await app.tusCleanup.run({ dryRun: true })
    expect(dry).toMatchObject({ removed: 2, dryRun: true })
    expect(await bucketContents(client, bucket)).toEqual(before)
    const report = await app.tusCleanup.run()
    expect(report).toMatchObject({ removed: 2, orphans: 0, errors: 0, skippedBusy: 0 })
    expect(report.ids.sort()).toEqual([withPart.id, withoutPart.id].sort())
    expect(report.bytesFreed).toBeGreaterThanOrEqual(6 * MiB)
    expect(await bucketContents(client, bucket)).toEqual({ objects: [], multipart: [] })
    // Gone for the clients too (S3Store's cached record was dropped with it).
    expect((await head(withPart.url)).status).toBe(404)
    expect((await head(withoutPart.url)).status).toBe(404)
  })

  it('never touches a finished upload: its object, its .info and its HEAD survive every sweep', async () => {
    const { client, bucket } = await testBucket()
    const store = s3Store(bucket)
    const { endpoint, app } = await startServer({
      datastore: store,
      expireAfterMs: EXPIRE_MS,
      cleanupOnStart: false,
    })
    const data = randomBytes(6 * MiB + 123)
    const { url, id } = await createUpload(endpoint, data.length)
    expect((await patch(url, 0, data)).status).toBe(204)
    // Finished at its creation: tus never completes its multipart upload (no object), but all
    // of its 0 bytes are there.
    const empty = await createUpload(endpoint, 0)
    await sleep(EXPIRE_MS + 200)
    expect((await app.tusCleanup.run()).removed).toBe(0)
    // The store's own deleteExpired() and tus' cleanUpExpiredUploads() are the plugin's sweep now.
    expect(await store.deleteExpired()).toBe(0)
    expect(await app.tus.cleanUpExpiredUploads()).toBe(0)
    expect(await bucketContents(client, bucket)).toEqual({
      objects: [id, `${id}.info`, `${empty.id}.info`].sort(),
      multipart: [empty.id],
    })
    expect((await readObject(client, bucket, id)).equals(data)).toBe(true)
    const res = await head(url)
    expect(res.status).toBe(200)
    expect(res.headers['upload-offset']).toBe(String(data.length))
    expect((await head(empty.url)).status).toBe(200)
  })

  it('skips an expired upload whose lock a request holds (skippedBusy), and removes it once free', async () => {
    const { client, bucket } = await testBucket()
    const locker = new MemoryLocker()
    const { endpoint, app } = await startServer({
      datastore: s3Store(bucket),
      expireAfterMs: EXPIRE_MS,
      cleanupOnStart: false,
      tus: { locker },
    })
    const { url, id } = await createUpload(endpoint, 12 * MiB)
    expect((await patch(url, 0, randomBytes(MiB))).status).toBe(204)
    await sleep(EXPIRE_MS + 200)
    const lock = locker.newLock(id)
    await lock.lock(new AbortController().signal, () => {})
    expect(await app.tusCleanup.run()).toMatchObject({ removed: 0, skippedBusy: 1 })
    expect((await bucketContents(client, bucket)).multipart).toEqual([id])
    await lock.unlock()
    expect(await app.tusCleanup.run()).toMatchObject({ removed: 1, skippedBusy: 0 })
    expect(await bucketContents(client, bucket)).toEqual({ objects: [], multipart: [] })
  })
})

describe('S3Store: answers by the same expiry', () => {
  it('answers 410 to an upload idle past expireAfterMs before any sweep removed it, and never to a finished one', async () => {
    const { client, bucket } = await testBucket()
    const { endpoint } = await startServer({
      datastore: s3Store(bucket),
      expireAfterMs: EXPIRE_MS,
      cleanupOnStart: false,
    })
    const idle = await createUpload(endpoint, 12 * MiB)
    expect((await patch(idle.url, 0, randomBytes(MiB))).status).toBe(204)
    const done = await createUpload(endpoint, MiB)
    expect((await patch(done.url, 0, randomBytes(MiB))).status).toBe(204)
    expect((await head(idle.url)).status).toBe(200)
    await sleep(EXPIRE_MS + 200)
    expect((await head(idle.url)).status).toBe(410)
    expect((await patch(idle.url, MiB, randomBytes(MiB))).status).toBe(410)
    // Not swept: still in the bucket.
    expect((await bucketContents(client, bucket)).multipart).toEqual([idle.id])
    const finished = await head(done.url)
    expect(finished.status).toBe(200)
    expect(finished.headers['upload-expires']).toBeUndefined()
  })

  it('HEAD and PATCH carry an Upload-Expires that slides with each PATCH (and none once finished)', async () => {
    const { bucket } = await testBucket()
    const expireAfterMs = 5000
    const { endpoint } = await startServer({
      datastore: s3Store(bucket),
      expireAfterMs,
      cleanupOnStart: false,
    })
    const { url } = await createUpload(endpoint, 3 * MiB)
    const expires = (res: { headers: Record<string, unknown> }) =>
      Date.parse(res.headers['upload-expires'] as string)
    const first = await patch(url, 0, randomBytes(MiB))
    expect(first.status).toBe(204)
    expect(Math.abs(expires(first) - (Date.now() + expireAfterMs))).toBeLessThan(2000)
    await sleep(1500)
    // HEAD: the same clock, not moved by the HEAD itself.
    expect(expires(await head(url))).toBe(expires(first))
    const second = await patch(url, MiB, randomBytes(MiB))
    expect(expires(second)).toBeGreaterThan(expires(first))
    expect(expires(await head(url))).toBe(expires(second))
    const last = await patch(url, 2 * MiB, randomBytes(MiB))
    expect(last.status).toBe(204)
    expect(last.headers['upload-expires']).toBeUndefined()
    expect((await head(url)).headers['upload-expires']).toBeUndefined()
  })
})

describe('S3Store: orphans and other objects', () => {
  it('removes orphans older than the period and never touches objects that are not tus uploads', async () => {
    const { client, bucket } = await testBucket()
    const { app } = await startServer({
      datastore: s3Store(bucket),
      expireAfterMs: EXPIRE_MS,
      cleanupOnStart: false,
    })
    const put = (Key: string, extra: object = {}) =>
      client.putObject({ Bucket: bucket, Key, Body: 'x', ...extra })
    // Orphans: a `.part` alone, a multipart upload without `.info`, an unfinished `.info` alone.
    const [partAlone, multipartAlone, infoAlone] = [randomId(), randomId(), randomId()]
    await put(`${partAlone}.part`)
    await client.createMultipartUpload({ Bucket: bucket, Key: multipartAlone })
    await put(`${infoAlone}.info`, { Tagging: 'Tus-Completed=false' })
    // Not tus uploads, or not provably unfinished: all stay.
    const finishedMoved = randomId() // a finished upload's `.info` whose object the app moved
    const foreign = randomId()
    await put(`${finishedMoved}.info`, { Tagging: 'Tus-Completed=true' })
    await put(`${randomId()}.info`) // untagged: cannot tell, kept
    await put(foreign) // an object named like an id
    await put('notes.txt')
    await put('report.info')
    await put('video.part')
    await client.createMultipartUpload({ Bucket: bucket, Key: 'videos/big.mp4' })
    const keep = await bucketContents(client, bucket)

    expect((await app.tusCleanup.run()).removed).toBe(0)
    await sleep(EXPIRE_MS + 200)
    const report = await app.tusCleanup.run()
    expect(report).toMatchObject({ removed: 3, orphans: 3, errors: 0 })
    expect(report.ids.sort()).toEqual([partAlone, multipartAlone, infoAlone].sort())
    expect(await bucketContents(client, bucket)).toEqual({
      objects: keep.objects.filter((k) => k !== `${partAlone}.part` && k !== `${infoAlone}.info`),
      multipart: ['videos/big.mp4'],
    })
  })
})

describe('S3Store: finished uploads are handed over durably', () => {
  it('keeps a failed onUploadFinish in the bucket, untouched by sweeps, and the next app hands it over at startup', async () => {
    const { client, bucket } = await testBucket()
    const failing = await startServer({
      datastore: s3Store(bucket),
      expireAfterMs: EXPIRE_MS,
      cleanupOnStart: false,
      finishRetryMs: 600_000,
      tus: {
        async onUploadFinish() {
          throw new Error('storage down')
        },
      },
    })
    const data = randomBytes(1234)
    const { url, id } = await createUpload(failing.endpoint, data.length)
    expect((await patch(url, 0, data)).status).toBe(204)
    expect(await failing.app.tusCleanup.pending()).toMatchObject([{ id, attempts: 1 }])
    await sleep(EXPIRE_MS + 200)
    expect((await failing.app.tusCleanup.run()).removed).toBe(0)
    expect((await bucketContents(client, bucket)).objects).toContain(
      `.fastify-tus-finishing/${id}.json`,
    )
    await failing.app.close()

    const delivered: string[] = []
    const next = await startServer({
      datastore: s3Store(bucket),
      tus: {
        async onUploadFinish(_req, upload) {
          delivered.push(upload.id)
          return {}
        },
      },
    })
    await waitFor(() => delivered.length === 1, 10_000, 'the hand-over at startup')
    expect(delivered).toEqual([id])
    await waitFor(async () => (await next.app.tusCleanup.pending()).length === 0)
    expect((await bucketContents(client, bucket)).objects.sort()).toEqual([id, `${id}.info`].sort())
    expect((await readObject(client, bucket, id)).equals(data)).toBe(true)
  })
})
