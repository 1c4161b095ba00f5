/**
 * The Redis locker and the sweep's lease with each supported major of ioredis (the peer range is
 * `^5.4.1 || ^6.0.0`: ioredis 5 is what @fastify/redis 8 and BullMQ give an application), on the
 * real Redis server (REDIS_URL, default redis://127.0.0.1:6379): the scripts defined with
 * `defineCommand`, the pub/sub connection made with `duplicate()`, locks, contention, TTLs kept
 * alive, the lease. The client under test is only handed to the locker and the lease; what is in
 * Redis is read through a separate ioredis 6 connection. The longer waits and the failures are in
 * redis-locker.test.ts and redis-down.test.ts (ioredis 6).
 */
import { Redis as Redis6 } from 'ioredis'
import { Redis as Redis5 } from 'ioredis5'
import { afterEach, describe, expect, it } from 'vitest'
import { LockTimeoutError } from '../../src/errors.js'
import { RedisSweepLease } from '../../src/redis/lease.js'
import { type RedisClient, RedisLocker, type RedisLockerOptions } from '../../src/redis/locker.js'
import { scriptsOf } from '../../src/redis/scripts.js'
import { randomId } from '../helpers/data.js'
import { REDIS_URL } from '../helpers/redis.js'
import { sleep, waitFor } from '../helpers/wait.js'

type Client = RedisClient & { disconnect(): void }

const options = { lazyConnect: false, maxRetriesPerRequest: 1 }
// Each major's `Redis` is a `RedisClient` as it is (checked by the type check of this file).
const majors: Array<[string, () => Client]> = [
  ['ioredis 6', () => new Redis6(REDIS_URL, options)],
  ['ioredis 5', () => new Redis5(REDIS_URL, options)],
]

const clients: Array<{ disconnect(): void }> = []
const lockers: RedisLocker[] = []
afterEach(async () => {
  for (const locker of lockers.splice(0)) await locker.close()
  for (const client of clients.splice(0)) client.disconnect()
})

/** Reads what is in Redis, whatever the client under test. */
function observer(): Redis6 {
  const client = new Redis6(REDIS_URL, options)
  clients.push(client)
  return client
}

const never = new AbortController().signal
function noRelease() {}

describe.each(majors)('with %s', (major, create) => {
  function connect(): Client {
    const client = create()
    clients.push(client)
    return client
  }

  /** A locker on its own connection, as another process would have. */
  function lockerFor(prefix: string, extra: Partial<RedisLockerOptions> = {}): RedisLocker {
    const locker = new RedisLocker({ client: connect(), prefix, ...extra })
    lockers.push(locker)
    return locker
  }

  it('locks with the owner token and a TTL, and only the owner unlocks', async () => {
    const prefix = `test:${randomId()}:`
    const redis = observer()
    const client = connect()
    const locker = new RedisLocker({ client, prefix, lockTtlMs: 5000 })
    lockers.push(locker)
    const lock = locker.newLock('u1')
    await lock.lock(never, noRelease)
    const token = await redis.get(`${prefix}lock:u1`)
    expect(token).toMatch(/^[0-9a-f-]{36}$/)
    const ttl = await redis.pttl(`${prefix}lock:u1`)
    expect(ttl).toBeGreaterThan(0)
    expect(ttl).toBeLessThanOrEqual(5000)
    // The scripts are commands of the client under test.
    expect(await scriptsOf(client).fastifyTusRelease(`${prefix}lock:u1`, 'not-the-owner')).toBe(0)
    expect(await redis.get(`${prefix}lock:u1`)).toBe(token)
    await lock.unlock()
    expect(await redis.exists(`${prefix}lock:u1`)).toBe(0)
  })

  it('asks the holder on another connection to let go (pub/sub), and hands the lock over', async () => {
    const prefix = `test:${randomId()}:`
    const a = lockerFor(prefix)
    const b = lockerFor(prefix)
    const held = a.newLock('u1')
    let asked = 0
    await held.lock(never, () => {
      asked++
      // The holder (a PATCH) ends its write and unlocks, as @tus/server's handlers do.
      setTimeout(() => held.unlock(), 50)
    })
    const started = Date.now()
    const waiting = b.newLock('u1')
    await waiting.lock(never, noRelease)
    expect(asked).toBe(1)
    // Woken by the unlock message, not by a slow poll or a timeout.
    expect(Date.now() - started).toBeLessThan(1000)
    expect(await a.tryLock('u1')).toBeUndefined()
    await waiting.unlock()
    const again = await a.tryLock('u1')
    expect(again).toBeDefined()
    await again?.unlock()
  })

  it('gives up with a 423 error when the holder does not let go', async () => {
    const prefix = `test:${randomId()}:`
    const held = lockerFor(prefix).newLock('u1')
    await held.lock(never, noRelease)
    const error = await lockerFor(prefix, { acquireLockTimeoutMs: 200 })
      .newLock('u1')
      .lock(never, noRelease)
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(LockTimeoutError)
    expect(error).toMatchObject({ code: 'FST_TUS_LOCK_TIMEOUT', status_code: 423 })
    await held.unlock()
  })

  it('keeps a held lock alive past its TTL, and survives a SCRIPT FLUSH', async () => {
    const prefix = `test:${randomId()}:`
    // Refreshed every third of the TTL: a late timer on a loaded machine still has 2/3 of it.
    const a = lockerFor(prefix, { lockTtlMs: 900 })
    const b = lockerFor(prefix)
    // Redis forgot the scripts (a restart, a flush): the client sends them again by itself.
    await observer().script('FLUSH')
    const held = a.newLock('u1')
    await held.lock(never, noRelease)
    await sleep(1500) // past the TTL
    expect(await b.tryLock('u1')).toBeUndefined()
    await held.unlock()
    const taken = await b.tryLock('u1')
    expect(taken).toBeDefined()
    await taken?.unlock()
  })

  it('gives the sweep lease of an interval to one instance, and the next one after', async () => {
    const prefix = `test:${randomId()}:`
    const a = new RedisSweepLease({ client: connect(), prefix, intervalMs: 100, ttlMs: 1000 })
    const b = new RedisSweepLease({ client: connect(), prefix, intervalMs: 100, ttlMs: 1000 })
    const held = await a.acquire()
    expect(held).toBeDefined()
    expect(held?.slot).toEqual(expect.any(Number))
    await sleep(150) // a later interval, but a sweep still runs
    expect(await b.acquire()).toBeUndefined()
    await held?.release()
    const next = await waitFor(() => b.acquire(), 1000, `the next interval (${major})`)
    expect(next.slot).toBeGreaterThan(held?.slot ?? 0)
    await next.release()
  })
})
