/**
 * Three Fastify instances on one bucket and one Redis, each with an S3Store of its own (its own
 * S3 client, its own Redis client, a cache on Redis): nothing is shared but the bucket and Redis.
 * They run in this test's process; what they share is what separate processes would share.
 */
import { randomBytes } from 'node:crypto'
import { IoRedisKvStore } from '@tus/utils'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import { describe, expect, it, onTestFinished } from 'vitest'
import fastifyTus from '../src/index.js'
import {
  createUpload,
  head,
  type LogRecord,
  logCapture,
  patch,
  REDIS_URL,
  randomId,
  sleep,
  waitFor,
} from './helpers.js'
import { bucketContents, readObject, s3Store, testBucket } from './s3-helpers.js'

const MiB = 1024 * 1024
const INTERVAL_MS = 200
const EXPIRE_MS = 3000

async function startFleet(bucket: string) {
  const prefix = `fleet-test:${randomId()}:`
  return Promise.all(
    ['a', 'b', 'c'].map(async (name) => {
      const client = new Redis(REDIS_URL)
      const { records, stream } = logCapture()
      const app = Fastify({ logger: { level: 'debug', stream } })
      onTestFinished(async () => {
        await app.close()
        client.disconnect()
      })
      await app.register(fastifyTus, {
        datastore: s3Store(bucket, { cache: new IoRedisKvStore(client, `${prefix}s3:`) }),
        redis: { client, prefix, lockTtlMs: 1000 },
        expireAfterMs: EXPIRE_MS,
        cleanupIntervalMs: INTERVAL_MS,
      })
      const origin = await app.listen({ host: '127.0.0.1', port: 0 })
      return { name, app, records, endpoint: `${origin}/files` }
    }),
  )
}

/** The sweeps an instance ran on the schedule (their records carry the lease's slot). */
const sweeps = (records: LogRecord[]) => records.filter((r) => typeof r.slot === 'number')

describe('S3Store: several instances on one bucket and one Redis', () => {
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
