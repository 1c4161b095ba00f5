/**
 * The seam to @tus/server's internals (src/tus-internals.ts), one test per part against the
 * installed version: the part is there, and it behaves as the plugin relies on. Then: a version
 * without a part fails `register` with FST_TUS_INCOMPATIBLE naming it.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import { FileStore } from '@tus/file-store'
import { MemoryLocker, Server } from '@tus/server'
import { ERRORS } from '@tus/utils'
import Fastify from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import fastifyTus from '../src/index.js'
import { ExpiringFileStore } from '../src/sweep/index.js'
import {
  memoryLockTable,
  missingTusInternals,
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
  async function registerError() {
    const app = Fastify()
    app.register(fastifyTus, { directory: await tempDir() })
    try {
      await app.ready()
    } catch (error) {
      return error as Error & { code?: string }
    } finally {
      await app.close().catch(() => {})
    }
    return undefined
  }

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
