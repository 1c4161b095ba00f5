/**
 * The seam to @tus/server's internals (src/tus-internals.ts), one test per part against the
 * installed version: the part is there, and it behaves as the plugin relies on. Then: a version
 * without a part fails `register` with FST_TUS_INCOMPATIBLE naming it. The same for the members
 * of a user's @tus/s3-store S3Store (no S3 server needed: nothing here reaches the bucket).
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import { FileStore } from '@tus/file-store'
import { S3Store } from '@tus/s3-store'
import { MemoryLocker, Server } from '@tus/server'
import { DataStore, ERRORS, MemoryKvStore, Upload } from '@tus/utils'
import Fastify from 'fastify'
import { afterEach, describe, expect, expectTypeOf, it } from 'vitest'
import type { S3SweepClient } from '../src/backends/s3/client.js'
import { asS3Store, s3Backend } from '../src/backends/s3/index.js'
import fastifyTus, { type FastifyTusOptions } from '../src/index.js'
import { ActivityLocker } from '../src/locking/activity-locker.js'
import { ExpiringFileStore } from '../src/sweep/index.js'
import { newReport } from '../src/sweep/report.js'
import {
  isS3Store,
  memoryLockTable,
  missingS3StoreInternals,
  missingTusInternals,
  S3_CLIENT_METHODS,
  type S3ClientMethod,
  tusCorsHeaders,
  type WriteToStore,
  wrapWriteToStore,
} from '../src/tus-internals.js'
import { tempDir } from './helpers/fs.js'
import { TUS } from './helpers/tus-client.js'

const restores: Array<() => void> = []
afterEach(() => {
  while (restores.length > 0) restores.pop()?.()
})

/** Removes `name` from the prototype that owns it, until the test ends. */
function removeFromPrototypeChain(object: object, name: string): void {
  let owner: object | null = object
  while (owner && !Object.hasOwn(owner, name)) owner = Object.getPrototypeOf(owner)
  if (!owner) throw new Error(`${name} not found`)
  const descriptor = Object.getOwnPropertyDescriptor(owner, name) as PropertyDescriptor
  delete (owner as Record<string, unknown>)[name]
  const target = owner
  restores.push(() => Object.defineProperty(target, name, descriptor))
}

function tusRequest(url: string, init: RequestInit & { headers?: Record<string, string> }) {
  return new Request(url, { ...init, headers: { ...TUS, ...init.headers } })
}

describe('the installed @tus/server', () => {
  it('has every part of the seam', () => {
    expect(missingTusInternals()).toEqual([])
  })

  it("calls the handlers' writeToStore with (body, upload, maxFileSize, context) and answers the offset it returns", async () => {
    const directory = await tempDir()
    const server = new Server({ path: '/files', datastore: new FileStore({ directory }) })
    const calls: Array<{ method: string; args: Parameters<WriteToStore> }> = []
    wrapWriteToStore(server, (handler, stock) => async (...args) => {
      calls.push({ method: (handler as object) === server.handlers.PATCH ? 'PATCH' : 'POST', args })
      return stock(...args)
    })
    const created = await server.handleWeb(
      tusRequest('http://localhost/files', {
        method: 'POST',
        headers: { 'Upload-Length': '10', 'Content-Type': 'application/offset+octet-stream' },
        body: '01234',
      }),
    )
    expect(created.status).toBe(201)
    expect(created.headers.get('Upload-Offset')).toBe('5')
    const location = created.headers.get('Location') as string
    const patched = await server.handleWeb(
      tusRequest(location, {
        method: 'PATCH',
        headers: { 'Upload-Offset': '5', 'Content-Type': 'application/offset+octet-stream' },
        body: '56789',
      }),
    )
    expect(patched.status).toBe(204)
    expect(patched.headers.get('Upload-Offset')).toBe('10')
    expect(calls.map((call) => call.method)).toEqual(['POST', 'PATCH'])
    // The most each body may add: the whole length for the POST, what is left for the PATCH.
    const room = { POST: 10, PATCH: 5 }
    for (const { method, args } of calls) {
      const [body, upload, maxFileSize, context] = args
      expect(body).toBeInstanceOf(ReadableStream)
      expect(upload.id).toBe(location.split('/').pop())
      expect(maxFileSize).toBe(room[method as keyof typeof room])
      expect(context.signal).toBeInstanceOf(AbortSignal)
    }
    const id = location.split('/').pop() as string
    expect(await fs.readFile(path.join(directory, id), 'utf8')).toBe('0123456789')
  })

  it("makes a request's lock wait while MemoryLocker's lock table holds an entry for the upload", async () => {
    const locker = new MemoryLocker({ acquireLockTimeout: 10_000 })
    const table = memoryLockTable(locker)
    table.set('u1', { requestRelease: () => {} })
    const lock = locker.newLock('u1')
    const gaveUp = lock.lock(AbortSignal.timeout(150), () => {})
    await expect(gaveUp).rejects.toBe(ERRORS.ERR_LOCK_TIMEOUT)
    table.delete('u1')
    await lock.lock(AbortSignal.timeout(1000), () => {})
    expect(table.has('u1')).toBe(true)
    await lock.unlock()
    expect(table.has('u1')).toBe(false)
  })

  it("FileStore's directory check is off for the built-in store: an unusable directory is a rejection, not a crash", async () => {
    const parent = await tempDir()
    const file = path.join(parent, 'a-file')
    await fs.writeFile(file, '')
    const crashes: unknown[] = []
    const onCrash = (error: unknown) => crashes.push(error)
    process.on('uncaughtException', onCrash)
    try {
      const store = new ExpiringFileStore({
        directory: path.join(file, 'uploads'),
        expireAfterMs: 0,
      })
      // The stock check runs in a callback of fs.mkdir: give it every chance to throw.
      await new Promise((resolve) => setTimeout(resolve, 100))
      expect(crashes).toEqual([])
      await expect(store.init()).rejects.toMatchObject({ code: 'FST_TUS_DIRECTORY' })
    } finally {
      process.off('uncaughtException', onCrash)
    }
  })

  describe("the CORS headers of the plugin's own answers are tus' own", () => {
    const configs = [
      { name: 'no allowedOrigins', options: {} },
      {
        name: 'an allowedOrigins list',
        options: { allowedOrigins: ['https://a.example', 'https://b.example'] },
      },
      {
        name: 'an allowedOrigins function and credentials',
        options: {
          allowedOrigins: (origin: string) => origin.endsWith('.example'),
          allowedCredentials: true,
          exposedHeaders: ['X-Extra'],
        },
      },
    ]
    for (const { name, options } of configs) {
      it(`with ${name}`, async () => {
        const server = new Server({
          path: '/files',
          datastore: new FileStore({ directory: await tempDir() }),
          ...options,
        })
        for (const origin of [
          undefined,
          'https://a.example',
          'https://b.example',
          'https://evil.test',
        ]) {
          const answer = await server.handleWeb(
            tusRequest('http://localhost/files/0123', {
              method: 'HEAD',
              headers: origin ? { Origin: origin } : {},
            }),
          )
          const ours = tusCorsHeaders(server, origin)
          for (const header of [
            'Access-Control-Allow-Origin',
            'Access-Control-Expose-Headers',
            'Access-Control-Allow-Credentials',
          ]) {
            expect(ours.get(header), `${header} for ${origin}`).toBe(answer.headers.get(header))
          }
        }
      })
    }
  })
})

describe('a @tus/server without a part of the seam', () => {
  const registerError = async () => registerWith({ directory: await tempDir() })

  it("fails register with FST_TUS_INCOMPATIBLE naming the handlers' writeToStore", async () => {
    const probe = new Server({
      path: '/x',
      datastore: new FileStore({ directory: await tempDir() }),
    })
    removeFromPrototypeChain(probe.handlers.PATCH, 'writeToStore')
    const error = await registerError()
    expect(error?.code).toBe('FST_TUS_INCOMPATIBLE')
    expect(error?.message).toMatch(/@tus\/server@\d+\.\d+\.\d+/)
    expect(error?.message).toContain('Server.handlers.PATCH.writeToStore')
    expect(error?.message).toContain('Server.handlers.POST.writeToStore')
  })

  it("fails register with FST_TUS_INCOMPATIBLE naming FileStore's checkOrCreateDirectory", async () => {
    removeFromPrototypeChain(FileStore.prototype, 'checkOrCreateDirectory')
    const error = await registerError()
    expect(error?.code).toBe('FST_TUS_INCOMPATIBLE')
    expect(error?.message).toContain('FileStore.prototype.checkOrCreateDirectory')
  })

  it("fails register with FST_TUS_INCOMPATIBLE naming the server's CORS origin rule", async () => {
    removeFromPrototypeChain(Server.prototype, 'getCorsOrigin')
    const error = await registerError()
    expect(error?.code).toBe('FST_TUS_INCOMPATIBLE')
    expect(error?.message).toContain('Server.prototype.getCorsOrigin')
  })

  it('registers once the part is back', async () => {
    expect(await registerError()).toBeUndefined()
  })
})

/** An S3Store on a bucket no test reaches (port 9: nothing listens). */
function newS3Store(options: Partial<ConstructorParameters<typeof S3Store>[0]> = {}): S3Store {
  return new S3Store({
    ...options,
    s3ClientConfig: {
      bucket: 'seam-bucket',
      region: 'us-east-1',
      endpoint: 'http://127.0.0.1:9',
      credentials: { accessKeyId: 'a', secretAccessKey: 'b' },
    },
  })
}

/** `register` with `datastore` (no sweep at start: nothing may reach the bucket), or its error. */
/** The error `register` with `options` ends in, or `undefined` when the app is ready. */
async function registerWith(options: FastifyTusOptions) {
  const app = Fastify()
  app.register(fastifyTus, options)
  try {
    await app.ready()
  } catch (error) {
    return error as Error & { code?: string }
  } finally {
    await app.close().catch(() => {})
  }
  return undefined
}

/** `registerWith` a datastore, without the startup sweep. */
const registerStore = (datastore: DataStore) => registerWith({ datastore, cleanupOnStart: false })

describe('the installed @tus/s3-store', () => {
  it('has every part of the seam', () => {
    const store = newS3Store()
    expect(isS3Store(store)).toBe(true)
    expect(missingS3StoreInternals(store)).toEqual([])
  })

  it("reaches the store's bucket, client, cache and records as the plugin relies on", async () => {
    const cache = new MemoryKvStore<{ 'upload-id': string; file: Upload; 'tus-version': string }>()
    const store = newS3Store({ cache })
    const s3 = asS3Store(store)
    expect(s3?.store).toBe(store)
    expect(s3?.bucket).toBe('seam-bucket')
    expect(s3?.cache).toBe(cache)
    for (const method of S3_CLIENT_METHODS) expect(typeof s3?.client[method]).toBe('function')
    // getMetadata answers S3Store's cached record without a request (the bucket is unreachable).
    const file = new Upload({ id: 'u1', size: 10, offset: 0, creation_date: '2026-01-01' })
    await cache.set('u1', { 'upload-id': 'mp-1', file, 'tus-version': '1.0.0' })
    expect(await s3?.record('u1')).toEqual({ uploadId: 'mp-1', upload: file })
    // clearCache drops it: the next record would be read from the bucket.
    await s3?.forget('u1')
    expect(await cache.get('u1')).toBeUndefined()
  })

  it('the S3 calls the sweep makes are the ones the seam checks', () => {
    expectTypeOf<Exclude<keyof S3SweepClient, S3ClientMethod>>().toEqualTypeOf<never>()
    expectTypeOf<Exclude<S3ClientMethod, keyof S3SweepClient>>().toEqualTypeOf<never>()
  })

  it("register takes over the store's expiry methods and gives them back on close", async () => {
    const store = newS3Store({ expirationPeriodInMilliseconds: 60_000 })
    const app = Fastify()
    await app.register(fastifyTus, { datastore: store, cleanupOnStart: false })
    await app.ready()
    expect(store.getExpiration()).toBe(0)
    expect(Object.hasOwn(store, 'getUpload')).toBe(true)
    await app.close()
    expect(store.getExpiration()).toBe(60_000)
    for (const name of ['getUpload', 'getExpiration', 'deleteExpired']) {
      expect(Object.hasOwn(store, name), name).toBe(false)
    }
  })

  it('the S3 backend names the bucket, serves the store, and takes its methods only between start and close', async () => {
    const store = newS3Store({ expirationPeriodInMilliseconds: 60_000 })
    const s3 = asS3Store(store)
    if (!s3) throw new Error('not recognised')
    const backend = s3Backend({
      store: s3,
      expireAfterMs: 1000,
      idPattern: /^[0-9a-f]{32}$/,
      locker: new ActivityLocker(new MemoryLocker()),
      redis: false,
    })
    expect(backend.description).toBe('the S3 bucket seam-bucket')
    expect(backend.datastore).toBe(store)
    expect('run' in backend.sweep).toBe(true)
    expect(store.getExpiration()).toBe(60_000)
    await backend.start?.(async () => ({ ...newReport(false), removed: 3 }))
    expect(store.getExpiration()).toBe(0)
    expect(await store.deleteExpired()).toBe(3)
    await backend.close(Date.now())
    expect(store.getExpiration()).toBe(60_000)
    expect(Object.hasOwn(store, 'deleteExpired')).toBe(false)
  })

  it('the S3 backend refuses, with redis, a store on its per-process cache', () => {
    const s3 = asS3Store(newS3Store()) as NonNullable<ReturnType<typeof asS3Store>>
    const options = {
      expireAfterMs: 1000,
      idPattern: /^[0-9a-f]{32}$/,
      locker: new ActivityLocker(new MemoryLocker()),
    }
    expect(() => s3Backend({ ...options, store: s3, redis: true })).toThrow(
      expect.objectContaining({ code: 'FST_TUS_S3_LOCAL_CACHE' }),
    )
    expect(() => s3Backend({ ...options, store: s3, redis: false })).not.toThrow()
  })
})

describe('an S3Store without a part of the seam', () => {
  function expectRefused(error: (Error & { code?: string }) | undefined, parts: string[]) {
    expect(error?.code).toBe('FST_TUS_INCOMPATIBLE')
    expect(error?.message).toMatch(/the installed @tus\/s3-store@\d+\.\d+\.\d+ lacks/)
    for (const part of parts) expect(error?.message).toContain(part)
  }

  it('fails register naming each S3Store method a new version dropped', async () => {
    removeFromPrototypeChain(S3Store.prototype, 'getMetadata')
    removeFromPrototypeChain(S3Store.prototype, 'clearCache')
    const error = await registerStore(newS3Store())
    expectRefused(error, ['S3Store.getMetadata(id)', 'S3Store.clearCache(id)'])
    expect(error?.message).not.toContain('S3Store.bucket')
  })

  it('fails register for a subclass that renames a member (client) or names its objects otherwise', async () => {
    class Renamed extends S3Store {
      readonly s3: unknown
      constructor() {
        super({ s3ClientConfig: { bucket: 'b', region: 'us-east-1' } })
        const self = this as unknown as { client?: unknown }
        this.s3 = self.client
        delete self.client
      }
      protected override infoKey(id: string): string {
        return `${id}.json`
      }
    }
    const error = await registerStore(new Renamed())
    expectRefused(error, ['S3Store.client (an S3 client)', 'S3Store.infoKey(id)'])
    // A missing client is named once, not once per call.
    expect(error?.message).not.toContain('S3Store.client.listParts')
  })

  it('fails register naming each S3 call its client lacks, and the methods it does not replace', async () => {
    class Lacking extends S3Store {
      constructor() {
        super({ s3ClientConfig: { bucket: 'b', region: 'us-east-1' } })
        const self = this as unknown as { client: Record<string, unknown> }
        const {
          listParts: _,
          headObject: __,
          ...rest
        } = Object.fromEntries(S3_CLIENT_METHODS.map((m) => [m, () => Promise.resolve({})]))
        self.client = rest
      }
    }
    // A newer S3Store that leaves deleteExpired to DataStore would sweep nothing.
    Object.defineProperty(Lacking.prototype, 'deleteExpired', {
      value: DataStore.prototype.deleteExpired,
    })
    const error = await registerStore(new Lacking())
    expectRefused(error, [
      'S3Store.client.listParts(input)',
      'S3Store.client.headObject(input)',
      "S3Store's own getUpload(id), getExpiration() and deleteExpired()",
    ])
    expect(error?.message).not.toContain('S3Store.client.listObjectsV2')
  })

  it('fails register for a copy of S3Store that lacks most of it (recognised by its name)', async () => {
    const Copy = {
      S3Store: class S3Store extends DataStore {
        bucket = 'b'
      },
    }.S3Store
    const error = await registerStore(new Copy())
    expectRefused(error, [
      'S3Store.client (an S3 client)',
      'S3Store.cache',
      'S3Store.getMetadata(id)',
    ])
  })

  it('recognises an S3Store by its members when its class was renamed (a bundle)', () => {
    const store = newS3Store()
    const bundled = Object.setPrototypeOf(
      Object.assign(Object.create(null), store),
      Object.assign(Object.create(DataStore.prototype), {
        getMetadata() {},
        clearCache() {},
        infoKey: (id: string) => `${id}.info`,
        partKey: (id: string) => `${id}.part`,
      }),
    ) as DataStore
    expect(isS3Store(bundled)).toBe(true)
  })

  it('accepts any other datastore as before, and leaves its own expiry to it', async () => {
    class BucketStore extends DataStore {
      bucket = 'b'
      client = { listParts() {} }
      override async deleteExpired() {
        return 0
      }
    }
    const store = new BucketStore()
    expect(isS3Store(store)).toBe(false)
    expect(asS3Store(store)).toBeUndefined()
    expect(await registerStore(store)).toBeUndefined()
    expect(isS3Store(new FileStore({ directory: await tempDir() }))).toBe(false)
  })

  it('registers once the parts are back', async () => {
    expect(await registerStore(newS3Store())).toBeUndefined()
  })
})
