/**
 * The Redis locker and the sweep's lease on the real Redis server (REDIS_URL, default
 * redis://127.0.0.1:6379). Lockers on separate connections stand for separate processes; the
 * fleet tests (fleet.test.ts) run real processes.
 */
import path from 'node:path'
import { Redis } from 'ioredis'
import { afterEach, describe, expect, it } from 'vitest'
import { LockTimeoutError } from '../../src/errors.js'
import { RedisSweepLease } from '../../src/redis/lease.js'
import { RedisLocker, type RedisLockerOptions } from '../../src/redis/locker.js'
import { KeyRefresher } from '../../src/redis/refresher.js'
import { scriptsOf } from '../../src/redis/scripts.js'
import { pattern, randomId, sha256Of } from '../helpers/data.js'
import { age, exists, sha256, tempDir, writeSession } from '../helpers/fs.js'
import { request } from '../helpers/http.js'
import { REDIS_URL } from '../helpers/redis.js'
import { startServer } from '../helpers/server.js'
import { createUpload, head, slowPatch, tusUpload } from '../helpers/tus-client.js'
import { sleep, waitFor } from '../helpers/wait.js'

const clients: Redis[] = []
const lockers: RedisLocker[] = []
afterEach(async () => {
  for (const locker of lockers.splice(0)) await locker.close()
  for (const client of clients.splice(0)) client.disconnect()
})

function connect(): Redis {
  const client = new Redis(REDIS_URL, { lazyConnect: false, maxRetriesPerRequest: 1 })
  clients.push(client)
  return client
}

/** A locker on its own connection, as another process would have; one key prefix per test. */
function lockerFor(prefix: string, options: Partial<RedisLockerOptions> = {}): RedisLocker {
  const locker = new RedisLocker({ client: connect(), prefix, ...options })
  lockers.push(locker)
  return locker
}

const never = new AbortController().signal
function noRelease() {}

/**
 * Counts the PUBLISH calls made on `client` (each one still goes to Redis): a waiting locker
 * publishes one release request when it starts waiting for a holder, and another every second
 * (`ASK_AGAIN_MS`) while it still waits.
 */
function countPublishes(client: RedisLockerOptions['client']): () => number {
  let count = 0
  const publish = client.publish.bind(client)
  client.publish = ((...args: Parameters<typeof publish>) => {
    count++
    return publish(...args)
  }) as typeof client.publish
  return () => count
}

describe('Redis locker', () => {
  // Locking with the owner's token and a TTL, and the hand-over through pub/sub, run against both
  // ioredis majors in redis-clients.test.ts.

  it('gives up after acquireLockTimeoutMs with a 423 error when the holder does not let go', async () => {
    const prefix = `test:${randomId()}:`
    const a = lockerFor(prefix)
    const b = lockerFor(prefix, { acquireLockTimeoutMs: 300 })
    const held = a.newLock('u1')
    let asked = 0
    await held.lock(never, () => {
      asked++
    })
    const releaseRequests = countPublishes(b.client)
    const started = Date.now()
    const error = await b
      .newLock('u1')
      .lock(never, noRelease)
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(LockTimeoutError)
    expect(error).toMatchObject({ code: 'FST_TUS_LOCK_TIMEOUT', status_code: 423 })
    expect(String((error as LockTimeoutError).body)).toMatch(/upload u1 is locked.*300 ms/)
    expect(Date.now() - started).toBeGreaterThanOrEqual(290)
    // It asked the holder once and gave up before asking again (a second after the first):
    // whatever the machine's load, the deadline came first.
    expect(releaseRequests()).toBe(1)
    await waitFor(() => asked === 1, 5000, 'the holder to be asked')
    await held.unlock()
  })

  it('stops waiting when the request is aborted', async () => {
    const prefix = `test:${randomId()}:`
    const a = lockerFor(prefix)
    const b = lockerFor(prefix)
    const held = a.newLock('u1')
    await held.lock(never, noRelease)
    const abort = new AbortController()
    setTimeout(() => abort.abort(), 100)
    await expect(b.newLock('u1').lock(abort.signal, noRelease)).rejects.toMatchObject({
      status_code: 400,
    })
    await held.unlock()
  })

  it('keeps a held lock alive past its TTL while the holder lives', async () => {
    const prefix = `test:${randomId()}:`
    const a = lockerFor(prefix, { lockTtlMs: 900 })
    const b = lockerFor(prefix)
    const held = a.newLock('u1')
    await held.lock(never, noRelease)
    await sleep(2500)
    expect(await b.tryLock('u1')).toBeUndefined()
    await held.unlock()
    const taken = await b.tryLock('u1')
    expect(taken).toBeDefined()
    await taken?.unlock()
  })

  it('takes the lock of a holder that died once its TTL runs out', async () => {
    const prefix = `test:${randomId()}:`
    const redis = connect()
    // A dead process's lock: a token nobody refreshes and nobody answers for.
    await redis.set(`${prefix}lock:u1`, 'dead-process', 'PX', 400)
    const b = lockerFor(prefix)
    const started = Date.now()
    const lock = b.newLock('u1')
    await lock.lock(never, noRelease)
    expect(Date.now() - started).toBeGreaterThanOrEqual(300)
    await lock.unlock()
  })

  it('tells the holder to stop when its lock was lost', async () => {
    const prefix = `test:${randomId()}:`
    const redis = connect()
    const a = lockerFor(prefix, { lockTtlMs: 300 })
    let asked = 0
    await a.newLock('u1').lock(never, () => {
      asked++
    })
    // Someone else's token now (as after a TTL that ran out while Redis was unreachable).
    await redis.set(`${prefix}lock:u1`, 'someone-else', 'PX', 5000)
    await waitFor(() => asked === 1, 2000, 'the holder to be told')
    expect(await redis.get(`${prefix}lock:u1`)).toBe('someone-else')
  })

  it('tryLock never asks a holder to let go', async () => {
    const prefix = `test:${randomId()}:`
    const a = lockerFor(prefix)
    const b = lockerFor(prefix)
    let asked = 0
    const held = a.newLock('u1')
    await held.lock(never, () => {
      asked++
    })
    const releaseRequests = countPublishes(b.client)
    expect(await b.tryLock('u1')).toBeUndefined()
    expect(releaseRequests()).toBe(0)
    expect(asked).toBe(0)
    await held.unlock()
  })
})

describe('Redis scripts and refresher', () => {
  it('defines the scripts once per client, whoever shares it, and survives a SCRIPT FLUSH', async () => {
    const prefix = `test:${randomId()}:`
    const client = connect()
    const defined: string[] = []
    const defineCommand = client.defineCommand.bind(client)
    client.defineCommand = (name, definition) => {
      defined.push(name)
      defineCommand(name, definition)
    }
    const a = new RedisLocker({ client, prefix })
    const b = new RedisLocker({ client, prefix })
    lockers.push(a, b)
    const lease = new RedisSweepLease({ client, prefix, intervalMs: 100, ttlMs: 1000 })
    // Every script of the plugin (locks, the lease, the store quota), once for the client.
    expect(defined.sort()).toEqual([
      'fastifyTusAcquireLease',
      'fastifyTusAcquireLock',
      'fastifyTusQuotaAdd',
      'fastifyTusQuotaClaim',
      'fastifyTusQuotaInit',
      'fastifyTusQuotaMark',
      'fastifyTusQuotaRecount',
      'fastifyTusQuotaRefresh',
      'fastifyTusQuotaSettle',
      'fastifyTusRefresh',
      'fastifyTusRelease',
    ])

    // Redis forgot the scripts (a restart, a flush): ioredis sends them again by itself.
    await connect().script('FLUSH')
    const lock = a.newLock('u1')
    await lock.lock(never, noRelease)
    expect(await b.tryLock('u1')).toBeUndefined()
    await lock.unlock()
    const held = await lease.acquire()
    expect(held).toBeDefined()
    await held?.release()
  })

  it('refreshes all its keys in one call per tick, and tells only the owner of a lost one', async () => {
    const prefix = `test:${randomId()}:`
    const redis = connect()
    const client = connect()
    const calls: number[] = []
    const scripts = scriptsOf(client)
    const refresh = scripts.fastifyTusRefresh.bind(client)
    scripts.fastifyTusRefresh = (numberOfKeys, ...rest) => {
      calls.push(numberOfKeys)
      return refresh(numberOfKeys, ...rest)
    }
    const refresher = new KeyRefresher(client)
    const lost: string[] = []
    for (const name of ['a', 'b']) {
      await redis.set(`${prefix}${name}`, `token-${name}`, 'PX', 600)
      refresher.add(`${prefix}${name}`, `token-${name}`, 600, () => lost.push(name))
    }
    await sleep(1000) // beyond the TTL: both kept alive
    expect(await redis.get(`${prefix}a`)).toBe('token-a')
    expect(await redis.get(`${prefix}b`)).toBe('token-b')
    expect(calls.length).toBeGreaterThanOrEqual(2)
    expect(calls.every((keys) => keys === 2)).toBe(true)

    await redis.set(`${prefix}b`, 'someone-else', 'PX', 5000)
    await waitFor(() => lost.length > 0, 2000, 'the owner of b to be told')
    expect(lost).toEqual(['b'])
    await sleep(500)
    expect(await redis.get(`${prefix}a`)).toBe('token-a')
    expect(calls.at(-1)).toBe(1) // b is no longer refreshed

    refresher.delete(`${prefix}a`, 'token-a')
    const after = calls.length
    await sleep(500)
    expect(calls.length).toBe(after) // no key left: no timer
    expect(lost).toEqual(['b'])

    // A key taken again with another token before a tick: its previous owner lost it.
    refresher.add(`${prefix}c`, 'first', 600, () => lost.push('c, first'))
    refresher.add(`${prefix}c`, 'second', 600, () => lost.push('c, second'))
    expect(lost).toEqual(['b', 'c, first'])
    refresher.delete(`${prefix}c`, 'first') // no longer its key: nothing happens
    refresher.delete(`${prefix}c`, 'second')
    await sleep(300)
    expect(calls.length).toBe(after)
  })
})

describe('Redis sweep lease', () => {
  it('gives each interval to one instance and keeps it while that one sweeps', async () => {
    const prefix = `test:${randomId()}:`
    const fleet = [connect(), connect(), connect()].map(
      (client) => new RedisSweepLease({ client, prefix, intervalMs: 200, ttlMs: 1000 }),
    )
    const slots: number[] = []
    const rounds: number[] = []
    // Every instance tries, as each one's job ticks, until six intervals were taken.
    await waitFor(
      async () => {
        const held = (await Promise.all(fleet.map((lease) => lease.acquire()))).filter(
          (lease) => lease !== undefined,
        )
        rounds.push(held.length)
        for (const lease of held) {
          slots.push(lease.slot)
          await lease.release()
        }
        return slots.length >= 6
      },
      15_000,
      'six intervals taken',
    )
    expect(Math.max(...rounds)).toBe(1) // one instance at most per round
    expect(rounds.length).toBeGreaterThan(slots.length) // the others were refused...
    expect(new Set(slots).size).toBe(slots.length) // ...and never the same interval twice
  })

  it('lets nobody sweep while a sweep runs, and frees itself when its holder dies', async () => {
    const prefix = `test:${randomId()}:`
    // A TTL of 1.5 s, refreshed every 500 ms: room for a late timer while browsers start beside.
    const a = new RedisSweepLease({ client: connect(), prefix, intervalMs: 100, ttlMs: 1500 })
    const b = new RedisSweepLease({ client: connect(), prefix, intervalMs: 100, ttlMs: 1500 })
    const held = await a.acquire()
    expect(held).toBeDefined()
    await sleep(2500) // many intervals, beyond the TTL: the holder keeps it alive
    expect(await b.acquire()).toBeUndefined()
    await held?.release()
    const next = await waitFor(() => b.acquire(), 1000, 'the next interval')
    await next.release()

    // A holder that dies: its key is not refreshed and expires after ttlMs.
    const redis = connect()
    await redis.set(`${prefix}{sweep}:running`, 'dead-process', 'PX', 300)
    const started = Date.now()
    const taken = await waitFor(() => b.acquire(), 2000, 'the lease of a dead holder')
    expect(Date.now() - started).toBeGreaterThanOrEqual(200)
    await taken.release()
  })
})

describe('the plugin with the redis option', () => {
  it('locks uploads in Redis, sweeps under the lease and closes its own connection only', async () => {
    const prefix = `test:${randomId()}:`
    const name = `fastify-tus-test-${randomId()}`
    const client = new Redis(REDIS_URL, { connectionName: name })
    clients.push(client)
    const named = async () =>
      String(await client.client('LIST'))
        .split('\n')
        .filter((line) => line.includes(`name=${name} `)).length

    const server = await startServer({
      expireAfterMs: 60_000,
      cleanupIntervalMs: 100,
      redis: { client, prefix },
    })
    // A whole upload with the real client.
    const data = pattern(200_000, 5)
    const url = await tusUpload(server.endpoint, data)
    const id = url.slice(url.lastIndexOf('/') + 1)
    expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(data))

    // While a PATCH writes, its lock is a key in Redis; afterwards it is gone.
    const slow = await createUpload(server.endpoint, 3000)
    const chunks = [pattern(1000, 1), pattern(1000, 2), pattern(1000, 3)]
    const writing = slowPatch(slow.url, 0, chunks, 150)
    await waitFor(() => client.exists(`${prefix}lock:${slow.id}`), 2000, 'the lock key')
    expect((await writing).status).toBe(204)
    expect(await client.exists(`${prefix}lock:${slow.id}`)).toBe(0)

    // The scheduled sweeps went through the lease: their records carry its slot.
    await waitFor(() => server.logs.filter((r) => typeof r.slot === 'number').length >= 3)
    expect(await named()).toBe(2) // the user's client and the plugin's subscriber
    await server.app.close()
    expect(await named()).toBe(1) // the user's client stays open: it is theirs
    // Other instances serve while this one is down: no downtime is recorded to give back.
    expect(await exists(path.join(server.directory, '.fastify-tus-closed'))).toBe(false)
  })

  it('answers 423 with a reason when the lock stays held elsewhere past acquireLockTimeoutMs', async () => {
    const prefix = `test:${randomId()}:`
    const client = connect()
    const server = await startServer({
      redis: { client, prefix, acquireLockTimeoutMs: 300 },
    })
    const { url, id } = await createUpload(server.endpoint, 10)
    // Another instance's request holds the lock and does not let go.
    const elsewhere = lockerFor(prefix)
    const held = elsewhere.newLock(id)
    await held.lock(never, noRelease)
    const releaseRequests = countPublishes(client)
    const res = await head(url)
    expect(res.status).toBe(423)
    expect(res.headers['tus-resumable']).toBe('1.0.0')
    // It asked the holder once and gave up at its deadline, before asking again a second later.
    expect(releaseRequests()).toBe(1)
    await held.unlock()
    expect((await head(url)).status).toBe(200)
  })

  it('with Redis down: requests that need a lock fail fast, sweeps are skipped with a warning, nothing is removed', async () => {
    // Nothing listens on port 1; no offline queue, so commands fail at once instead of waiting.
    const down = new Redis('redis://127.0.0.1:1', {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    })
    down.on('error', () => {})
    clients.push(down)
    const directory = await tempDir()
    await writeSession(directory, 'a'.repeat(32), { size: 100, bytes: 10, ageMs: 3_600_000 })
    const server = await startServer({
      directory,
      expireAfterMs: 1000,
      cleanupIntervalMs: 100,
      redis: { client: down, prefix: `test:${randomId()}:` },
    })
    await waitFor(
      () =>
        server.logs.some((r) => r.msg === 'fastify-tus could not reach Redis for the sweep lease'),
      3000,
      'the warning',
    )
    const res = await head(`${server.endpoint}/${'a'.repeat(32)}`)
    expect(res.status).toBe(503)
    // It failed on the client's own error, at once, not on a bound of the locker's (its
    // acquireLockTimeoutMs is the default 30 s here).
    const unavailable = server.logs
      .map((r) => r.err as { type?: string; message?: string } | undefined)
      .filter((err) => err?.type === 'LockUnavailableError')
    expect(unavailable).toHaveLength(1)
    expect(unavailable[0]?.message).not.toMatch(/within \d+ ms/)
    expect(await exists(path.join(directory, 'a'.repeat(32)))).toBe(true)
    expect(server.app.tusCleanup.last).toBeUndefined() // no sweep ran
    // The plugin's own connection reports through the Fastify logger, not ioredis' console line.
    await waitFor(() => server.logs.some((r) => r.msg === 'fastify-tus: Redis error'))
    expect((await request(server.endpoint, 'OPTIONS')).status).toBe(204) // still serving
  })

  it('does not remove an expired upload whose lock another instance holds', async () => {
    const prefix = `test:${randomId()}:`
    const server = await startServer({
      expireAfterMs: 1000,
      cleanupIntervalMs: 100,
      cleanupOnStart: false,
      redis: { client: connect(), prefix },
    })
    const { id } = await createUpload(server.endpoint, 10)
    await age(path.join(server.directory, id), 60_000)
    const held = lockerFor(prefix).newLock(id)
    await held.lock(never, noRelease)
    const report = await server.app.tusCleanup.run()
    expect(report).toMatchObject({ removed: 0, skippedBusy: 1 })
    expect(await exists(path.join(server.directory, id))).toBe(true)
    await held.unlock()
    expect(await server.app.tusCleanup.run()).toMatchObject({ removed: 1 })
    expect(await exists(path.join(server.directory, id))).toBe(false)
  })
})
