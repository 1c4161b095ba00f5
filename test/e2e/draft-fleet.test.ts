/**
 * A draft upload (tus-js-client in Node, `protocol: 'ietf-draft-03'` and `'ietf-draft-05'`)
 * handed between three instances of the built demo server on one upload directory and one Redis
 * prefix (REDIS_URL, default redis://127.0.0.1:6379): begun on one, resumed on another by a fresh
 * client given only its URL there while an append hangs on the first (the draft's "a new request
 * ends the one in flight", through the Redis lock), finished on the third; every instance then
 * answers its end.
 */
import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import * as tus from 'tus-js-client'
import { describe, expect, it, onTestFinished } from 'vitest'
import { randomId, sha256Of } from '../helpers/data.js'
import { sha256, tempDir } from '../helpers/fs.js'
import { request } from '../helpers/http.js'
import { type ServerProcess, startServerProcess } from '../helpers/process.js'
import { REDIS_URL } from '../helpers/redis.js'
import { tusUpload } from '../helpers/tus-client.js'
import { waitFor } from '../helpers/wait.js'

const SERVER = path.resolve('dist/demo/server.js')
const MiB = 1024 * 1024

const PROTOCOLS = [
  ['ietf-draft-03', 5],
  ['ietf-draft-05', 6],
] as const

/** Three demo servers on `directory`, their locks under one Redis prefix (unique to the test). */
async function startFleet(directory: string) {
  const shared = {
    PATH: process.env.PATH,
    PORT: '0',
    LOG_LEVEL: 'info',
    UPLOAD_DIR: directory,
    REDIS_URL,
    REDIS_PREFIX: `fleet-test:${randomId()}:`,
    REDIS_LOCK_TTL_MS: '1000',
  }
  return Promise.all(['a', 'b', 'c'].map((name) => startServerProcess(name, SERVER, shared)))
}

/** Options with `protocol`, which tus-js-client 4.3's type declarations do not list yet. */
function speaking(protocol: string, options: Partial<tus.UploadOptions> = {}) {
  return { ...options, protocol } as Partial<tus.UploadOptions>
}

/**
 * Uploads `data` from a fresh client and aborts once `atLeast` bytes are acknowledged. Resolves
 * to the upload's URL and the offset of the first chunk this client sent.
 */
function cutUpload(
  data: Buffer,
  options: Partial<tus.UploadOptions>,
  atLeast: number,
): Promise<{ url: string; firstOffset: number | undefined }> {
  let firstOffset: number | undefined
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      retryDelays: [],
      ...options,
      onChunkComplete: (chunk, accepted) => {
        firstOffset ??= accepted - chunk
        if (accepted < atLeast) return
        upload.abort().then(() => resolve({ url: upload.url as string, firstOffset }), reject)
      },
      onSuccess: () => reject(new Error('the upload finished before it was cut')),
      onError: reject,
    })
    upload.start()
  })
}

/**
 * A draft append of `body` at `offset` on `url` that sends `sent` bytes of it, then nothing: a
 * client whose connection went quiet. `ended` resolves once the server has ended it.
 */
function hangingAppend(url: string, version: number, offset: number, body: Buffer, sent: number) {
  const append = http.request(url, {
    method: 'PATCH',
    agent: false,
    headers: {
      'Upload-Draft-Interop-Version': version,
      'Upload-Offset': offset,
      'Upload-Complete': '?1',
      'Content-Type': 'application/partial-upload',
      'Content-Length': body.length,
    },
  })
  append.on('error', () => {})
  const ended = new Promise<void>((resolve) => {
    append.on('response', (res) => res.resume().on('end', resolve))
    append.on('close', resolve)
  })
  append.write(body.subarray(0, sent))
  return { ended, destroy: () => void append.destroy() }
}

/** `promise`, or a failure naming `what` after `ms`. */
function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms)
  })
  return Promise.race([promise, late]).finally(() => clearTimeout(timer))
}

/** The same upload's URL on another instance: same path, that instance's origin. */
const on = (instance: ServerProcess, url: string) => `${instance.origin}${new URL(url).pathname}`

/** The PATCH requests on `id` an instance logged (Fastify's "incoming request" records). */
function patchesOn(instance: ServerProcess, id: string): number {
  return instance.records.filter((r) => {
    const req = r.req as { method?: string; url?: string } | undefined
    return r.msg === 'incoming request' && req?.method === 'PATCH' && req.url === `/files/${id}`
  }).length
}

describe.each(PROTOCOLS)(
  'a draft upload across three instances, protocol %s (interop %i)',
  (protocol, version) => {
    it('is begun on one, resumed from a fresh client on another, finished on the third, byte-identical, and complete on all three', async () => {
      const directory = await tempDir()
      const [a, b, c] = (await startFleet(directory)) as [
        ServerProcess,
        ServerProcess,
        ServerProcess,
      ]
      const draft = { 'Upload-Draft-Interop-Version': version }
      const data = randomBytes(6 * MiB + 5)
      const options = speaking(protocol, { chunkSize: 512 * 1024 })

      // Begun on A, cut past 1 MiB.
      const begun = await cutUpload(data, { ...options, endpoint: a.endpoint }, 1 * MiB)
      expect(new URL(begun.url).origin).toBe(a.origin)
      const id = begun.url.slice(begun.url.lastIndexOf('/') + 1)
      const afterA = await request(on(b, begun.url), 'HEAD', draft)
      const storedA = Number(afterA.headers['upload-offset'])
      expect(storedA).toBeGreaterThanOrEqual(1 * MiB)
      expect(storedA).toBeLessThan(3 * MiB)
      expect(afterA.headers['upload-complete']).toBe('?0')

      // The client's next append, on A, goes quiet after 256 KiB: A holds the upload's lock.
      const hung = storedA + 256 * 1024
      const append = hangingAppend(
        on(a, begun.url),
        version,
        storedA,
        data.subarray(storedA),
        hung - storedA,
      )
      onTestFinished(append.destroy)
      let appendEnded = false
      void append.ended.then(() => {
        appendEnded = true
      })
      const file = path.join(directory, id)
      await waitFor(async () => (await fs.stat(file)).size === hung, 5000, 'the hung bytes')

      // Resumed on B by a fresh client that has only the URL there: its HEAD asks A, through
      // Redis, to end the append, and it goes on from what that append stored; cut past 3 MiB.
      // (A's write stops within @tus/server's lockDrainTimeout, 3 s; never, without the release.)
      const resumed = await within(
        10_000,
        cutUpload(data, { ...options, uploadUrl: on(b, begun.url) }, 3 * MiB),
        'the resume on B while an append hangs on A',
      )
      expect(appendEnded).toBe(true)
      expect(resumed.firstOffset).toBe(hung)
      const afterB = await request(on(c, begun.url), 'HEAD', draft)
      const storedB = Number(afterB.headers['upload-offset'])
      expect(storedB).toBeGreaterThanOrEqual(3 * MiB)
      expect(storedB).toBeLessThan(data.length)
      expect(afterB.headers['upload-complete']).toBe('?0')

      // Finished on C, from where B stopped.
      const firstOnC: number[] = []
      const finished = await tusUpload(c.endpoint, data, {
        ...options,
        uploadUrl: on(c, begun.url),
        onChunkComplete: (chunk, accepted) => firstOnC.push(accepted - chunk),
      })
      expect(finished).toBe(on(c, begun.url))
      expect(firstOnC[0]).toBe(storedB)
      expect(await sha256(path.join(directory, id))).toBe(sha256Of(data))

      // Each instance wrote part of it, and each answers its end alike.
      for (const instance of [a, b, c]) {
        expect(patchesOn(instance, id), instance.name).toBeGreaterThan(0)
        const end = await request(on(instance, begun.url), 'HEAD', draft)
        expect(end.status, instance.name).toBe(204)
        expect(end.headers['upload-offset'], instance.name).toBe(String(data.length))
        expect(end.headers['upload-complete'], instance.name).toBe('?1')
      }
    }, 30_000)
  },
)
