/**
 * Three server processes (test/e2e/s3-instance.mjs: the built plugin with a stock S3Store, its cache
 * and locks on Redis) on one bucket and one Redis; and the startup check against a per-process
 * cache.
 */
import { randomBytes } from 'node:crypto'
import path from 'node:path'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import { describe, expect, inject, it, onTestFinished } from 'vitest'
import fastifyTus from '../../src/index.js'
import { randomId } from '../helpers/data.js'
import { startServerProcess } from '../helpers/process.js'
import { REDIS_URL } from '../helpers/redis.js'
import { bucketContents, readObject, s3Store, testBucket } from '../helpers/s3.js'
import type { LogRecord } from '../helpers/server.js'
import { createUpload, head, patch } from '../helpers/tus-client.js'
import { sleep, waitFor } from '../helpers/wait.js'

const MiB = 1024 * 1024
const INTERVAL_MS = 200
const EXPIRE_MS = 3000
const INSTANCE = path.resolve('test/e2e/s3-instance.mjs')

/** Three processes (test/e2e/s3-instance.mjs, on the built package), one bucket, one Redis prefix. */
async function startFleet(bucket: string) {
  const s3 = inject('s3')
  const shared = {
    PATH: process.env.PATH,
    BUCKET: bucket,
    REDIS_URL,
    REDIS_PREFIX: `fleet-test:${randomId()}:`,
    EXPIRE_AFTER_MS: String(EXPIRE_MS),
    CLEANUP_INTERVAL_MS: String(INTERVAL_MS),
    S3_ENDPOINT: s3.endpoint,
    S3_ACCESS_KEY_ID: s3.accessKeyId,
    S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
    S3_REGION: s3.region,
    S3_FORCE_PATH_STYLE: String(s3.forcePathStyle),
  }
  return Promise.all(['a', 'b', 'c'].map((name) => startServerProcess(name, INSTANCE, shared)))
}

/** The sweeps an instance ran on the schedule (their records carry the lease's slot). */
const sweeps = (records: LogRecord[]) => records.filter((r) => typeof r.slot === 'number')

describe('S3Store: three processes on one bucket and one Redis', () => {
  it('completes an upload PATCHed round-robin across three instances, with exactly one sweeper per interval', async () => {
    const { client, bucket } = await testBucket()
    const fleet = await startFleet(bucket)
    const data = randomBytes(11 * MiB)
    const { id } = await createUpload((fleet[0] as { endpoint: string }).endpoint, data.length)
    for (let offset = 0, i = 0; offset < data.length; offset += MiB, i++) {
      const instance = fleet[i % 3] as (typeof fleet)[number]
      await sleep(300)
      const res = await patch(
        `${instance.endpoint}/${id}`,
        offset,
        data.subarray(offset, offset + MiB),
      )
      expect(res.status, `PATCH ${i} on ${instance.name}: ${res.body}`).toBe(204)
      // Every instance reads the same offset (the cache is shared, the parts are in S3).
      const next = fleet[(i + 1) % 3] as (typeof fleet)[number]
      expect((await head(`${next.endpoint}/${id}`)).headers['upload-offset']).toBe(
        String(Math.min(offset + MiB, data.length)),
      )
    }
    expect((await readObject(client, bucket, id)).equals(data)).toBe(true)

    // One sweep per slot across the fleet; and sweeps did run on more than one instance's turn.
    const all = fleet.flatMap((instance) => sweeps(instance.records).map((r) => r.slot))
    expect(all.length).toBeGreaterThan(10)
    expect(new Set(all).size).toBe(all.length)
    expect(fleet.flatMap((i) => i.records).filter((r) => r.level >= 50)).toEqual([])
  }, 60_000)

  it('an upload abandoned on one instance is removed by the fleet, and every instance then answers 404', async () => {
    const { client, bucket } = await testBucket()
    const fleet = await startFleet(bucket)
    const [a, b, c] = fleet as [(typeof fleet)[0], (typeof fleet)[0], (typeof fleet)[0]]
    const { id } = await createUpload(a.endpoint, 12 * MiB)
    expect((await patch(`${a.endpoint}/${id}`, 0, randomBytes(MiB))).status).toBe(204)
    // b and c have read it (their S3Store would cache it in memory without a shared cache).
    expect((await head(`${b.endpoint}/${id}`)).status).toBe(200)
    expect((await head(`${c.endpoint}/${id}`)).status).toBe(200)
    await waitFor(
      async () => (await bucketContents(client, bucket)).objects.length === 0,
      EXPIRE_MS + 5000,
      'the abandoned upload to be swept',
    )
    expect(await bucketContents(client, bucket)).toEqual({ objects: [], multipart: [] })
    for (const instance of fleet) {
      expect((await head(`${instance.endpoint}/${id}`)).status).toBe(404)
    }
    const removals = fleet.flatMap((i) => i.records).filter((r) => (r.removed as number) > 0)
    expect(removals.map((r) => r.removed)).toEqual([1])
  }, 30_000)

  it('refuses at register an S3Store left on its per-process cache when redis is set (FST_TUS_S3_LOCAL_CACHE)', async () => {
    const { bucket } = await testBucket()
    const client = new Redis(REDIS_URL)
    onTestFinished(() => client.disconnect())
    const app = Fastify()
    onTestFinished(() => app.close())
    await expect(
      app
        .register(fastifyTus, {
          datastore: s3Store(bucket),
          redis: { client, prefix: `fleet-test:${randomId()}:` },
        })
        .ready(),
    ).rejects.toMatchObject({ code: 'FST_TUS_S3_LOCAL_CACHE' })
  })
})
