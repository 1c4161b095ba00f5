/**
 * Bad options fail register/ready with a coded error naming the option; nothing crashes.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import { DataStore } from '@tus/utils'
import Fastify from 'fastify'
import { describe, expect, it } from 'vitest'
import fastifyTus, { DEFAULT_ID_PATTERN, type FastifyTusOptions } from '../src/index.js'
import { resolveOptions } from '../src/options/index.js'
import { tempDir } from './helpers/fs.js'

/** Enough of a client's shape to pass the type check; validation fails before it is used. */
function fakeClient() {
  return { defineCommand() {}, publish() {}, duplicate() {} }
}

async function registerWith(options: unknown) {
  const app = Fastify()
  try {
    await app.register(fastifyTus, options as FastifyTusOptions)
    await app.ready()
    return undefined
  } catch (error) {
    return error as Error & { code?: string }
  } finally {
    await app.close()
  }
}

describe('option errors', () => {
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    [
      'negative interval',
      { cleanupIntervalMs: -5 },
      /`cleanupIntervalMs` must be a whole number of milliseconds from 1 to .*got -5/,
    ],
    ['zero interval', { cleanupIntervalMs: 0 }, /`cleanupIntervalMs`.*got 0/],
    ['interval past setInterval', { cleanupIntervalMs: 2 ** 31 }, /`cleanupIntervalMs`/],
    [
      'fractional expiry',
      { expireAfterMs: 1.5 },
      /`expireAfterMs` must be a whole number.*got 1.5/,
    ],
    ['negative expiry', { expireAfterMs: -1 }, /`expireAfterMs`.*>= 0.*got -1/],
    ['string expiry', { expireAfterMs: '600000' }, /`expireAfterMs`.*got "600000"/],
    [
      'non-boolean cleanupOnStart',
      { cleanupOnStart: 'yes' },
      /`cleanupOnStart` must be true or false/,
    ],
    ['path without slash', { path: 'files' }, /`path` must be a route path.*got "files"/],
    ['path with trailing slash', { path: '/files/' }, /`path`/],
    ['path with a wildcard', { path: '/files/*' }, /`path`/],
    ['empty directory', { directory: '' }, /`directory` must be a non-empty path/],
    [
      'directory and datastore',
      { directory: '/tmp/x', datastore: new DataStore() },
      /`datastore` replaces `directory`/,
    ],
    [
      'datastore of the wrong kind',
      { datastore: { write: 1 } },
      /`datastore` must be a @tus\/server DataStore/,
    ],
    ['unknown option', { expireAfter: 5 }, /`expireAfter` is not an option of fastify-tus/],
    ['empty namespace', { namespace: '' }, /`namespace` must be a name such as 'videos'.*got ""/],
    ['namespace with a dot', { namespace: 'a.b' }, /`namespace` must be a name.*got "a.b"/],
    ['namespace from a digit', { namespace: '1st' }, /`namespace` must be a name.*got "1st"/],
    ['namespace __proto__', { namespace: '__proto__' }, /`namespace` must be a name/],
    ['namespace not a string', { namespace: 5 }, /`namespace` must be a name.*got 5/],
    ['tus.path', { tus: { path: '/x' } }, /`tus.path` is set by fastify-tus/],
    ['tus.datastore', { tus: { datastore: {} } }, /`tus.datastore` is set by fastify-tus/],
    ['locker function', { tus: { locker: () => ({}) } }, /`tus.locker` must be a Locker object/],
    ['idPattern string', { idPattern: '[a-z]+' }, /`idPattern` must be a RegExp/],
    ['tus not an object', { tus: 5 }, /`tus` must be an object/],
    ['redis not an object', { redis: 'redis://x' }, /`redis` must be an object such as/],
    ['redis without a client', { redis: {} }, /`redis.client` must be an ioredis client/],
    [
      'redis with a node-redis-like client',
      { redis: { client: { set() {}, get() {} } } },
      /`redis.client` must be an ioredis client/,
    ],
    [
      'redis unknown key',
      { redis: { client: fakeClient(), ttl: 5 } },
      /`redis.ttl` is not an option/,
    ],
    [
      'redis empty prefix',
      { redis: { client: fakeClient(), prefix: '' } },
      /`redis.prefix` must be a non-empty string/,
    ],
    [
      'redis lockTtlMs too short',
      { redis: { client: fakeClient(), lockTtlMs: 50 } },
      /`redis.lockTtlMs` must be a whole number of milliseconds from 100/,
    ],
    [
      'redis acquireLockTimeoutMs not a number',
      { redis: { client: fakeClient(), acquireLockTimeoutMs: '30s' } },
      /`redis.acquireLockTimeoutMs` must be a whole number.*got "30s"/,
    ],
    [
      'metrics not a boolean or object',
      { metrics: 'yes' },
      /`metrics` must be true, false or \{ registry, prefix\? \}/,
    ],
    ['metrics unknown key', { metrics: { registery: {} } }, /`metrics.registery` is not an option/],
    [
      'metrics registry of the wrong kind',
      { metrics: { registry: { metrics: 1 } } },
      /`metrics.registry` must be a prom-client Registry/,
    ],
    [
      'metrics prefix that is no metric name',
      { metrics: { prefix: 'my-app.' } },
      /`metrics.prefix` must be the start of a Prometheus metric name.*got "my-app."/,
    ],
    [
      'negative minFreeBytes',
      { minFreeBytes: -1 },
      /`minFreeBytes` must be a whole number of bytes >= 0 \(0 turns the floor off\), got -1/,
    ],
    [
      'minFreeBytes with a datastore',
      { datastore: new DataStore(), minFreeBytes: 5 },
      /`minFreeBytes` applies to the built-in file store/,
    ],
    [
      'maxStoreBytes that is no whole number of bytes',
      { maxStoreBytes: 0 },
      /`maxStoreBytes` must be a whole number of bytes >= 1 \(leave it out for no quota\), got 0/,
    ],
    [
      'maxStoreBytes as a string',
      { maxStoreBytes: '10GB' },
      /`maxStoreBytes` must be a whole number of bytes >= 1.*got "10GB"/,
    ],
    [
      'maxStoreBytes with a datastore',
      { datastore: new DataStore(), maxStoreBytes: 5 },
      /`maxStoreBytes` applies to the built-in file store/,
    ],
    [
      'partialHoldMs shorter than expireAfterMs',
      { expireAfterMs: 60_000, partialHoldMs: 1000 },
      /`partialHoldMs` must be a whole number of milliseconds >= 60000 \(expireAfterMs: a finished partial upload waits at least as long as an unfinished one\), got 1000/,
    ],
    [
      'partialHoldMs as a string',
      { partialHoldMs: '1d' },
      /`partialHoldMs` must be a whole number of milliseconds .*got "1d"/,
    ],
    [
      'partialHoldMs with a datastore',
      { datastore: new DataStore(), partialHoldMs: 86_400_000 },
      /`partialHoldMs` applies to the built-in file store/,
    ],
    [
      'redis with tus.locker',
      { redis: { client: fakeClient() }, tus: { locker: { newLock() {} } } },
      /`tus.locker` cannot be set together with `redis`/,
    ],
  ]
  it.each(cases)('%s', async (_name, options, message) => {
    if (!('datastore' in options) && !('directory' in options)) {
      options = { ...options, directory: await tempDir() }
    }
    const error = await registerWith(options)
    expect(error?.code).toBe('FST_TUS_INVALID_OPTION')
    expect(error?.message).toMatch(message)
  })

  it('rejects a directory that cannot be created, naming the path', async () => {
    const dir = await tempDir()
    const file = path.join(dir, 'a-file')
    await fs.writeFile(file, 'x')
    const error = await registerWith({ directory: path.join(file, 'uploads') })
    expect(error?.code).toBe('FST_TUS_DIRECTORY')
    expect(error?.message).toContain(path.join(file, 'uploads'))
    expect(error?.message).toMatch(/option `directory`: .* is not a writable directory \(ENOTDIR/)
  })

  it('rejects a read-only directory (a probe, since root passes permission checks)', async () => {
    // /proc/self is a directory where nobody, root included, can create an entry.
    const error = await registerWith({ directory: '/proc/self' })
    expect(error?.code).toBe('FST_TUS_DIRECTORY')
    expect(error?.message).toContain('/proc/self')
  })

  it('accepts register options of Fastify itself', async () => {
    expect(
      await registerWith({ directory: await tempDir(), logLevel: 'warn', prefix: '/x' }),
    ).toBeUndefined()
  })
})

describe('resolved options', () => {
  it('fills in every default', () => {
    expect(resolveOptions(undefined)).toEqual({
      namespace: undefined,
      path: '/files',
      prefix: '',
      directory: './uploads',
      datastore: undefined,
      expireAfterMs: 600_000,
      partialHoldMs: 86_400_000,
      cleanupIntervalMs: 600_000,
      cleanupOnStart: true,
      finishRetryMs: 60_000,
      finishRetryMaxMs: 3_600_000,
      idPattern: DEFAULT_ID_PATTERN,
      tus: {},
      redis: undefined,
      metrics: undefined,
      minFreeBytes: undefined,
      maxStoreBytes: undefined,
      download: true,
    })
    // `null` is a left-out option where there is a default, and refused where there is none.
    expect(resolveOptions({ path: null, tus: null }).path).toBe('/files')
    expect(() => resolveOptions({ namespace: null })).toThrow(
      /`namespace` must be a name.*got null/,
    )
  })

  it('derives defaults from the options above: the partial hold, the Redis prefix', () => {
    expect(resolveOptions({ expireAfterMs: 2 * 86_400_000 }).partialHoldMs).toBe(2 * 86_400_000)
    const client = fakeClient()
    expect(resolveOptions({ redis: { client } }).redis).toEqual({
      client,
      prefix: 'fastify-tus:',
      lockTtlMs: 10_000,
      acquireLockTimeoutMs: 30_000,
    })
    expect(resolveOptions({ namespace: 'videos', redis: { client } }).redis?.prefix).toBe(
      'fastify-tus:videos:',
    )
    expect(resolveOptions({ metrics: true }).metrics).toEqual({ registry: undefined, prefix: '' })
    expect(resolveOptions({ metrics: false }).metrics).toBeUndefined()
  })

  it('accepts exactly the options the README lists', async () => {
    const readme = await fs.readFile('README.md', 'utf8')
    const section = readme.slice(readme.indexOf('## Options'), readme.indexOf('**Errors**'))
    const documented = [...section.matchAll(/^- `(\w+)`/gm)].map((match) => match[1])
    let listed: string[] = []
    try {
      resolveOptions({ notAnOption: 1 })
    } catch (error) {
      listed = /\(options: ([^)]*)\)/.exec((error as Error).message)?.[1]?.split(', ') ?? []
    }
    expect(listed.length).toBeGreaterThan(10)
    expect([...listed].sort()).toEqual([...documented].sort())
    // Each of them is accepted: none is refused as unknown.
    for (const key of listed) {
      expect(() => resolveOptions({ [key]: Symbol() }), key).not.toThrow(/is not an option/)
    }
  })

  it('reports the first problem, in the order the options are checked', () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ expireAfter: 5, path: 'files' }, /`expireAfter` is not an option/],
      [{ directory: '', datastore: { write: 1 } }, /`datastore` replaces `directory`/],
      [{ datastore: new DataStore(), minFreeBytes: -1 }, /`minFreeBytes` must be a whole number/],
      [{ datastore: new DataStore(), partialHoldMs: 5 }, /`partialHoldMs` applies to the built-in/],
      [
        { redis: { client: fakeClient(), lockTtlMs: 5 }, tus: { locker: {} } },
        /`tus.locker` cannot be set together with `redis`/,
      ],
      [{ redis: { client: 5, ttl: 1 } }, /`redis.ttl` is not an option/],
      [{ metrics: { prefix: '-' }, maxStoreBytes: 0 }, /`metrics.prefix` must be/],
    ]
    for (const [options, message] of cases) {
      expect(() => resolveOptions(options), JSON.stringify(options)).toThrow(message)
    }
  })
})
