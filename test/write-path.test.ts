/**
 * The direct write path (request bytes straight into the data file) keeps every guarantee of
 * the stock path: size limits, kept bytes on disconnect, a lock released at once, a graceful
 * stop when another request wants the lock, progress events, creation-with-upload.
 */
import { createHash } from 'node:crypto'
import fs from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import { MemoryLocker } from '@tus/server'
import { EVENTS, Upload } from '@tus/utils'
import { describe, expect, it } from 'vitest'
import type { Checksum } from '../src/backends/backend.js'
import { fileCapabilities } from '../src/backends/file/capabilities.js'
import { ExpiringFileStore } from '../src/backends/file/file-store.js'
import { DirectBodyRequest } from '../src/http/write-path.js'
import { Refusal } from '../src/refusal.js'
import { pattern as bytes, sha256Of } from './helpers/data.js'
import { listing, listingBecomes, sha256, tempDir } from './helpers/fs.js'
import { request } from './helpers/http.js'
import { startServer } from './helpers/server.js'
import {
  createUpload,
  disconnectMidPatch,
  head,
  patch,
  slowPatch,
  TUS,
} from './helpers/tus-client.js'
import { signal, waitFor } from './helpers/wait.js'

/** Waits until `file` holds at least `n` bytes. */
function bytesOnDisk(file: string, n: number) {
  return waitFor(async () => (await fs.stat(file)).size >= n, 5000, `${n} bytes in ${file}`)
}

describe('direct write path', () => {
  it('answers 413 past tus.maxSize on a chunked body and writes nothing beyond it', async () => {
    const server = await startServer({ tus: { maxSize: 1000 } })
    const { url, id } = await createUpload(server.endpoint, 'deferred')
    const res = await slowPatch(url, 0, [bytes(600), bytes(600, 1)], 0, { chunked: true })
    expect(res.status).toBe(413)
    const size = (await fs.stat(path.join(server.directory, id))).size
    expect(size).toBeLessThanOrEqual(1000)
    expect(Number((await head(url)).headers['upload-offset'])).toBe(size)
  })

  it('answers 413 when the body is longer than the upload', async () => {
    const server = await startServer()
    const { url, id } = await createUpload(server.endpoint, 100)
    expect((await patch(url, 0, bytes(150))).status).toBe(413)
    expect((await fs.stat(path.join(server.directory, id))).size).toBe(0)
  })

  it('keeps the bytes of a client that disconnects mid-PATCH and releases the lock at once', async () => {
    // A held lock would make the next request fail after 1 s instead of waiting 30 s.
    const server = await startServer({
      tus: { locker: new MemoryLocker({ acquireLockTimeout: 1000 }) },
    })
    const data = bytes(300_000)
    const { url, id } = await createUpload(server.endpoint, data.length)

    await disconnectMidPatch(url, data, 100_000, path.join(server.directory, id)) // client gone

    const status = await waitFor(async () => {
      const res = await head(url)
      return res.status === 200 && res.headers['upload-offset'] === '100000' ? res : undefined
    })
    expect(status.headers['upload-offset']).toBe('100000')
    const rest = await patch(url, 100_000, data.subarray(100_000))
    expect(rest.status).toBe(204)
    expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(data))
  })

  it('stops gracefully, keeping its bytes, when another request wants the lock', async () => {
    const server = await startServer({ tus: { lockDrainTimeout: 100 } })
    const chunks = Array.from({ length: 20 }, (_, i) => bytes(1000, i))
    const { url, id } = await createUpload(server.endpoint, 20_000)
    // The first chunk goes at once, the rest only after the PATCH answered: it is stopped
    // mid-body whatever the machine's load.
    const answered = signal()
    const stopped = slowPatch(url, 0, chunks, 60_000, { until: answered.promise })
    await bytesOnDisk(path.join(server.directory, id), 1000) // the PATCH is under way
    // HEAD takes the lock: the PATCH is asked to release it, ends after lockDrainTimeout, and
    // the HEAD then reports the bytes that the PATCH had written.
    const status = await head(url)
    expect(status.status).toBe(200)
    const offset = Number(status.headers['upload-offset'])
    expect(offset).toBeGreaterThan(0)
    expect(offset).toBeLessThan(20_000)
    // The PATCH's own answer: its bytes kept, the offset where they end.
    const answer = await stopped.finally(answered.resolve)
    expect(answer.status).toBe(204)
    expect(answer.headers['upload-offset']).toBe(String(offset))
    const resumed = await patch(url, offset, Buffer.concat(chunks).subarray(offset))
    expect(resumed.status).toBe(204)
    expect(resumed.headers['upload-offset']).toBe('20000')
  })

  it('rolls back a checksummed body that another request cut short, and answers 460', async () => {
    const server = await startServer({ tus: { lockDrainTimeout: 100 } })
    const chunks = Array.from({ length: 20 }, (_, i) => bytes(1000, i))
    const body = Buffer.concat(chunks)
    const { url, id } = await createUpload(server.endpoint, body.length)
    const checksum = `sha1 ${createHash('sha1').update(body).digest('base64')}`
    // The first chunk goes at once, the rest only after the PATCH answered: it is cut short
    // whatever the machine's load (had the whole body arrived, its digest would match).
    const answered = signal()
    const cut = slowPatch(url, 0, chunks, 60_000, { checksum, until: answered.promise })
    await bytesOnDisk(path.join(server.directory, id), 1000) // the PATCH is under way
    // The HEAD takes the lock; the PATCH stops with part of a body whose digest cannot match.
    const status = await head(url)
    expect(status.headers['upload-offset']).toBe('0')
    const answer = await cut.finally(answered.resolve)
    expect(answer.status).toBe(460)
    expect(answer.body).toBe('Checksum Mismatch\n')
    expect((await fs.stat(path.join(server.directory, id))).size).toBe(0)
    expect((await head(url)).headers['upload-offset']).toBe('0')
  })

  it('emits POST_RECEIVE progress events', async () => {
    const server = await startServer({ tus: { postReceiveInterval: 50 } })
    const offsets: number[] = []
    server.app.tus.on(EVENTS.POST_RECEIVE, (_req, upload) => {
      offsets.push(upload.offset)
    })
    const chunks = Array.from({ length: 10 }, (_, i) => bytes(1000, i))
    const { url } = await createUpload(server.endpoint, 10_000)
    expect((await slowPatch(url, 0, chunks, 30)).status).toBe(204)
    expect(offsets.length).toBeGreaterThan(1)
    expect(offsets).toEqual([...offsets].sort((a, b) => a - b))
    expect(offsets.at(-1)).toBeLessThanOrEqual(10_000)
  })

  it('writes the body of a creation-with-upload POST', async () => {
    const server = await startServer()
    const data = bytes(5000)
    const res = await request(
      server.endpoint,
      'POST',
      { ...TUS, 'Upload-Length': '8000', 'Content-Type': 'application/offset+octet-stream' },
      data,
    )
    expect(res.status).toBe(201)
    expect(res.headers['upload-offset']).toBe('5000')
    const id = String(res.headers.location).split('/').pop() as string
    expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(data))
  })

  it('still offers the body as a web stream to anyone who reads it', async () => {
    const server = http.createServer(async (req, res) => {
      const webRequest = new DirectBodyRequest({ req, res })
      const text = await new Response(webRequest.body).text()
      res.end(`got ${text}`)
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const { port } = server.address() as { port: number }
      const res = await request(`http://127.0.0.1:${port}/`, 'PATCH', {}, 'hello')
      expect(res.body).toBe('got hello')
    } finally {
      server.close()
    }
  })
})

describe('what a refused or cut body leaves behind', () => {
  const OCTETS = { 'Content-Type': 'application/offset+octet-stream' }
  const sha1 = (data: Buffer) => `sha1 ${createHash('sha1').update(data).digest('base64')}`

  it('a PATCH whose Upload-Checksum does not match answers 460 and leaves the upload as it was: data file length, record, nothing else', async () => {
    const server = await startServer()
    const data = bytes(8000)
    const { url, id } = await createUpload(server.endpoint, data.length)
    expect((await patch(url, 0, data.subarray(0, 3000))).status).toBe(204)
    const record = await fs.readFile(path.join(server.directory, `${id}.json`), 'utf8')

    const wrong = await patch(url, 3000, data.subarray(3000), {
      'Upload-Checksum': sha1(bytes(10)),
    })
    expect(wrong.status).toBe(460)
    expect(wrong.body).toBe('Checksum Mismatch\n')
    // Exactly the upload's two files (no temporary record), the data file at its old length,
    // the record byte for byte as before (no mark of an unverified body left in it).
    expect(await listing(server.directory)).toEqual([id, `${id}.json`].sort())
    expect((await fs.stat(path.join(server.directory, id))).size).toBe(3000)
    expect(await fs.readFile(path.join(server.directory, `${id}.json`), 'utf8')).toBe(record)
    expect((await head(url)).headers['upload-offset']).toBe('3000')
  })

  it('a creation-with-upload whose Upload-Checksum does not match answers 460 and leaves nothing', async () => {
    const server = await startServer()
    const data = bytes(5000)
    const res = await request(
      server.endpoint,
      'POST',
      { ...TUS, ...OCTETS, 'Upload-Length': '8000', 'Upload-Checksum': sha1(bytes(10)) },
      data,
    )
    expect(res.status).toBe(460)
    expect(res.headers.location).toBeUndefined()
    // The upload tus created for it is removed before the answer: the client never learnt it.
    expect(await listing(server.directory)).toEqual([])
  })

  it.each([
    ['without a checksum', {}],
    ['with an Upload-Checksum', { 'Upload-Checksum': sha1(bytes(100_000)) }],
  ])(
    'a creation-with-upload whose client goes away mid-body (%s) leaves nothing',
    async (_, extra) => {
      const server = await startServer()
      const req = http.request(server.endpoint, {
        method: 'POST',
        agent: false,
        headers: {
          ...TUS,
          ...OCTETS,
          ...extra,
          'Upload-Length': '100000',
          'Content-Length': '100000',
        },
      })
      req.on('error', () => {})
      req.write(bytes(30_000))
      // The creation exists and holds the bytes sent so far: the body is under way.
      const id = await waitFor(async () => {
        const files = await listing(server.directory)
        const data = files.find((name) => !name.endsWith('.json'))
        if (!data || !files.includes(`${data}.json`)) return undefined
        return (await fs.stat(path.join(server.directory, data))).size === 30_000 ? data : undefined
      })
      expect(id).toMatch(/^[0-9a-f]{32}$/)
      req.destroy()
      // Nobody learnt its URL: the unfinished upload is removed, and nothing else is left.
      expect(await listingBecomes(server.directory, [])).toEqual([])
      await server.app.close() // the request's handling has ended: nothing comes back
      expect(await listing(server.directory)).toEqual([])
    },
  )
})

describe('the file write path (FileWriter) on its own, without tus', () => {
  /** A store in a new directory, and an upload of `size` bytes created in it. */
  async function storeWithUpload(size: number, options: { minFreeBytes?: number } = {}) {
    const store = await ExpiringFileStore.open({
      directory: await tempDir(),
      expireAfterMs: 0,
      minFreeBytes: options.minFreeBytes ?? 0,
    })
    const upload = await store.create(new Upload({ id: 'u1', size, offset: 0 }))
    return { store, upload }
  }

  /** Sends `body` over real HTTP to a server whose only job is the writer's `write`. */
  async function writeOverHttp(
    store: ExpiringFileStore,
    upload: Upload,
    body: Buffer,
    checksum?: Checksum,
  ) {
    const { writer } = fileCapabilities(store)
    const server = http.createServer(async (req, res) => {
      try {
        const { offset, written } = await writer.write(req, upload, {
          maxBytes: 1_000_000,
          contentLength: Number(req.headers['content-length']),
          checksum,
          signal: new AbortController().signal,
          onProgress: undefined,
        })
        res.end(JSON.stringify({ offset, sameUpload: written.upload === upload }))
      } catch (error) {
        const refused = error instanceof Refusal
        res.end(
          JSON.stringify({
            refused,
            status: refused ? error.status : undefined,
            body: refused ? error.body : String(error),
          }),
        )
      }
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const { port } = server.address() as { port: number }
      const res = await request(`http://127.0.0.1:${port}/`, 'PATCH', {}, body)
      return JSON.parse(res.body) as Record<string, unknown>
    } finally {
      server.close()
    }
  }

  it('writes a body at the upload offset and resolves to the new offset and the upload it wrote', async () => {
    const { store, upload } = await storeWithUpload(10)
    expect(await writeOverHttp(store, upload, Buffer.from('hello'))).toEqual({
      offset: 5,
      sameUpload: true,
    })
    expect(await fs.readFile(store.dataPathOf('u1'), 'utf8')).toBe('hello')
  })

  it('refuses a body whose digest does not match with a Refusal (460), the file and the record as they were', async () => {
    const { store, upload } = await storeWithUpload(10)
    const record = await fs.readFile(`${store.dataPathOf('u1')}.json`, 'utf8')
    const digest = createHash('sha1').update('other').digest()
    const answer = await writeOverHttp(store, upload, Buffer.from('hello'), {
      algorithm: 'sha1',
      digest,
    })
    expect(answer).toEqual({ refused: true, status: 460, body: 'Checksum Mismatch\n' })
    expect((await fs.stat(store.dataPathOf('u1'))).size).toBe(0)
    expect(await fs.readFile(`${store.dataPathOf('u1')}.json`, 'utf8')).toBe(record)
  })

  it('refuses through the creation guard with a Refusal: 413 for a length the filesystem could never hold', async () => {
    const { store } = await storeWithUpload(0, { minFreeBytes: 1 })
    const { creation } = fileCapabilities(store)
    const refused = await creation.reserve(Number.MAX_SAFE_INTEGER).catch((error: unknown) => error)
    expect(refused).toBeInstanceOf(Refusal)
    expect((refused as Refusal).status).toBe(413)
    expect((refused as Refusal).body).toMatch(
      /^Request Entity Too Large: this upload needs 9007199254740991 bytes; the store's filesystem holds \d+ and the server keeps 1 of them free\n$/,
    )
  })
})
