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
import { EVENTS } from '@tus/utils'
import { describe, expect, it } from 'vitest'
import { DirectBodyRequest } from '../src/http/write-path.js'
import {
  pattern as bytes,
  createUpload,
  disconnectMidPatch,
  head,
  patch,
  request,
  sha256,
  sha256Of,
  signal,
  slowPatch,
  startServer,
  TUS,
  waitFor,
} from './helpers.js'

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
