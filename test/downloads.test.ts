/**
 * Downloads of finished uploads from the built-in store, over real HTTP: single ranges (206,
 * 416), validators and conditional answers (304, If-Range), the `download` option, and a client
 * that goes away mid-download.
 */
import fs from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { pattern } from './helpers/data.js'
import { request } from './helpers/http.js'
import { closedByAll } from './helpers/proc.js'
import { startServer } from './helpers/server.js'
import { createUpload, head, patch, tusUpload } from './helpers/tus-client.js'

const SIZE = 100_000
const DATA = pattern(SIZE, 3)

/** A server and one finished upload of `DATA` on it. */
async function finished(options: Parameters<typeof startServer>[0] = {}) {
  const server = await startServer(options)
  const url = await tusUpload(server.endpoint, DATA, {
    metadata: { filename: 'clip.bin', filetype: 'video/mp4' },
  })
  const id = url.slice(url.lastIndexOf('/') + 1)
  return { server, url, file: path.join(server.directory, id) }
}

/** A GET with `headers`; the body as bytes. */
async function get(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers })
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) }
}

describe('ranges', () => {
  it('answers a range with 206 and exactly those bytes: a-b, a-, a suffix, an end past the size', async () => {
    const { url } = await finished()
    const cases: Array<[string, number, number]> = [
      ['bytes=100-199', 100, 199],
      ['bytes=99990-', 99_990, SIZE - 1],
      ['bytes=-7', SIZE - 7, SIZE - 1],
      ['bytes=-200000', 0, SIZE - 1],
      ['bytes=5-999999', 5, SIZE - 1],
      ['bytes=0-0', 0, 0],
    ]
    for (const [range, start, end] of cases) {
      const res = await get(url, { Range: range })
      expect(res.status, range).toBe(206)
      expect(res.headers.get('content-range'), range).toBe(`bytes ${start}-${end}/${SIZE}`)
      expect(res.headers.get('content-length'), range).toBe(String(end - start + 1))
      expect(res.body.equals(DATA.subarray(start, end + 1)), range).toBe(true)
      expect(res.headers.get('content-type'), range).toBe('video/mp4')
      expect(res.headers.get('accept-ranges'), range).toBe('bytes')
    }
  })

  it('answers 416 with the size for a range that starts past the end, or a suffix of no bytes', async () => {
    const { url } = await finished()
    for (const range of [`bytes=${SIZE}-`, `bytes=${SIZE + 5}-${SIZE + 9}`, 'bytes=-0']) {
      const res = await request(url, 'GET', { Range: range })
      expect(res.status, range).toBe(416)
      expect(res.headers['content-range'], range).toBe(`bytes */${SIZE}`)
      expect(res.body, range).toMatch(/100000 bytes/)
    }
  })

  it('sends the whole upload (200) for several ranges, another unit or a malformed Range', async () => {
    const { url } = await finished()
    for (const range of ['bytes=0-1,4-5', 'bytes=5-2', 'items=0-1', 'bytes=abc', 'bytes=-']) {
      const res = await get(url, { Range: range })
      expect(res.status, range).toBe(200)
      expect(res.headers.get('content-range'), range).toBeNull()
      expect(res.body.equals(DATA), range).toBe(true)
    }
  })

  it('sends an empty upload as 0 bytes, and answers 416 to any range of it', async () => {
    const server = await startServer()
    const { url } = await createUpload(server.endpoint, 0)
    const whole = await request(url, 'GET')
    expect(whole.status).toBe(200)
    expect(whole.headers['content-length']).toBe('0')
    expect(whole.body).toBe('')
    const ranged = await request(url, 'GET', { Range: 'bytes=0-' })
    expect(ranged.status).toBe(416)
    expect(ranged.headers['content-range']).toBe('bytes */0')
  })

  it('keeps the CORS, type, disposition and nosniff headers on a 206', async () => {
    const { url } = await finished({ tus: { allowedOrigins: ['https://app.example'] } })
    const res = await request(url, 'GET', { Range: 'bytes=0-9', Origin: 'https://app.example' })
    expect(res.status).toBe(206)
    expect(res.headers['access-control-allow-origin']).toBe('https://app.example')
    expect(res.headers['x-content-type-options']).toBe('nosniff')
    expect(res.headers['content-disposition']).toBe('inline; filename="clip.bin"')
    // Readable by the page's script, not only by its media elements.
    const exposed = String(res.headers['access-control-expose-headers']).split(/\s*,\s*/)
    expect(exposed).toEqual(expect.arrayContaining(['Content-Range', 'ETag', 'Upload-Offset']))
  })
})

describe('validators', () => {
  it('sends a strong ETag and Last-Modified (the data file’s time) on 200 and 206', async () => {
    const { url, file } = await finished()
    const whole = await request(url, 'GET')
    const part = await request(url, 'GET', { Range: 'bytes=1-2' })
    expect(whole.headers.etag).toMatch(/^"[0-9a-f]+-[0-9a-f]+"$/)
    expect(part.headers.etag).toBe(whole.headers.etag)
    const { mtime } = await fs.stat(file)
    expect(whole.headers['last-modified']).toBe(
      new Date(Math.floor(mtime.getTime() / 1000) * 1000).toUTCString(),
    )
  })

  it('answers 304 to If-None-Match naming the ETag (in a list, weak, or *) and to If-Modified-Since', async () => {
    const { url } = await finished()
    const { headers } = await request(url, 'GET')
    const etag = String(headers.etag)
    const lastModified = String(headers['last-modified'])
    const notModified: Array<Record<string, string>> = [
      { 'If-None-Match': etag },
      { 'If-None-Match': `"other", W/${etag}` },
      { 'If-None-Match': '*' },
      { 'If-Modified-Since': lastModified },
      { 'If-Modified-Since': new Date(Date.now() + 60_000).toUTCString() },
    ]
    for (const conditions of notModified) {
      const res = await request(url, 'GET', conditions)
      expect(res.status, JSON.stringify(conditions)).toBe(304)
      expect(res.body).toBe('')
      expect(res.headers.etag).toBe(etag)
    }
    const modified: Array<Record<string, string>> = [
      { 'If-None-Match': '"other"' },
      { 'If-Modified-Since': new Date(Date.parse(lastModified) - 1000).toUTCString() },
      { 'If-Modified-Since': 'yesterday' },
      // If-None-Match decides when both are sent.
      { 'If-None-Match': '"other"', 'If-Modified-Since': lastModified },
    ]
    for (const conditions of modified) {
      const res = await get(url, conditions)
      expect(res.status, JSON.stringify(conditions)).toBe(200)
      expect(res.body.equals(DATA)).toBe(true)
    }
  })

  it('answers 412 to If-Match naming another tag, or If-Unmodified-Since before Last-Modified', async () => {
    const { url } = await finished()
    const { headers } = await request(url, 'GET')
    const etag = String(headers.etag)
    const lastModified = String(headers['last-modified'])
    const before = new Date(Date.parse(lastModified) - 1000).toUTCString()
    const failed: Array<Record<string, string>> = [
      { 'If-Match': '"other"' },
      { 'If-Match': `W/${etag}` },
      { 'If-Unmodified-Since': before },
    ]
    for (const conditions of failed) {
      const res = await request(url, 'GET', conditions)
      expect(res.status, JSON.stringify(conditions)).toBe(412)
      expect(res.body).toMatch(/If-Match or If-Unmodified-Since/)
    }
    const held: Array<Record<string, string>> = [
      { 'If-Match': `"other", ${etag}` },
      { 'If-Match': '*' },
      { 'If-Unmodified-Since': lastModified },
      // If-Match decides when both are sent.
      { 'If-Match': etag, 'If-Unmodified-Since': before },
    ]
    for (const conditions of held) {
      const res = await get(url, { ...conditions, Range: 'bytes=0-3' })
      expect(res.status, JSON.stringify(conditions)).toBe(206)
      expect(res.body.equals(DATA.subarray(0, 4))).toBe(true)
    }
  })

  it('serves If-Range’s range only while its ETag or date is current, else the whole upload', async () => {
    const { url, file } = await finished()
    const { headers } = await request(url, 'GET')
    const etag = String(headers.etag)
    const date = String(headers['last-modified'])
    for (const ifRange of [etag, date]) {
      const res = await get(url, { Range: 'bytes=10-19', 'If-Range': ifRange })
      expect(res.status, ifRange).toBe(206)
      expect(res.body.equals(DATA.subarray(10, 20))).toBe(true)
    }
    for (const ifRange of [`W/${etag}`, '"other"', new Date(0).toUTCString()]) {
      const res = await get(url, { Range: 'bytes=10-19', 'If-Range': ifRange })
      expect(res.status, ifRange).toBe(200)
      expect(res.body.equals(DATA)).toBe(true)
    }
    // The bytes change (the app rewrote the file): the old tag no longer gets a range.
    const later = new Date(Date.now() + 5000)
    await fs.utimes(file, later, later)
    const stale = await get(url, { Range: 'bytes=10-19', 'If-Range': etag })
    expect(stale.status).toBe(200)
    expect(stale.headers.get('etag')).not.toBe(etag)
  })
})

describe('what is not a download', () => {
  it('answers 404 to GET of an unfinished upload, as tus did', async () => {
    const server = await startServer()
    const { url } = await createUpload(server.endpoint, 10)
    expect((await patch(url, 0, Buffer.from('abc'))).status).toBe(204)
    const res = await request(url, 'GET', { Range: 'bytes=0-1' })
    expect(res.status).toBe(404)
    expect(res.headers.etag).toBeUndefined()
  })

  it('answers a refusal of the app’s onIncomingRequest as tus answers it', async () => {
    const { url } = await finished({
      tus: {
        onIncomingRequest: async (req) => {
          if (req.method === 'GET' && !req.headers.get('authorization')) {
            throw { status_code: 401, body: 'Who are you?\n' }
          }
        },
      },
    })
    const refused = await request(url, 'GET', { Range: 'bytes=0-1' })
    expect(refused.status).toBe(401)
    expect(refused.body).toBe('Who are you?\n')
    const allowed = await get(url, { Range: 'bytes=0-1', Authorization: 'Bearer x' })
    expect(allowed.status).toBe(206)
  })

  it('answers errors through the app’s onResponseError, as tus does', async () => {
    const server = await startServer({
      tus: {
        onResponseError: async (_req, error) =>
          (error as { status_code?: number }).status_code === 404
            ? { status_code: 404, body: 'No such download\n' }
            : undefined,
      },
    })
    const { url } = await createUpload(server.endpoint, 10)
    const res = await request(url, 'GET')
    expect(res.status).toBe(404)
    expect(res.body).toBe('No such download\n')
  })

  it('leaves a GET route the app added with tus.get() to it, downloads on or off', async () => {
    for (const download of [true, false]) {
      const server = await startServer({ download })
      server.app.tus.get('/files/about', async () => new Response('about these files'))
      const res = await request(`${server.endpoint}/about`, 'GET', { Range: 'bytes=0-1' })
      expect(res.status, String(download)).toBe(200)
      expect(res.body).toBe('about these files')
    }
  })

  it('answers GET with 405 and Allow when download is false; the rest of tus works', async () => {
    const { url } = await finished({ download: false })
    const res = await request(url, 'GET')
    expect(res.status).toBe(405)
    expect(res.headers.allow).toBe('POST, HEAD, PATCH, DELETE, OPTIONS')
    expect(res.body).toMatch(/download: false/)
    expect(res.headers['access-control-allow-origin']).toBe('*')
    expect((await head(url)).headers['upload-offset']).toBe(String(SIZE))
  })
})

describe('a client gone mid-download', () => {
  it('does not end the server, and the data file is closed', async () => {
    const server = await startServer()
    const big = pattern(8 * 1024 * 1024)
    const url = await tusUpload(server.endpoint, big, { chunkSize: 4 * 1024 * 1024 })
    const file = path.join(server.directory, url.slice(url.lastIndexOf('/') + 1))
    for (const range of [undefined, 'bytes=1000-']) {
      await new Promise<void>((resolve, reject) => {
        const headers = range ? { Range: range } : {}
        const req = http.get(url, { agent: false, headers }, (res) => {
          res.once('data', () => {
            req.destroy()
            resolve()
          })
        })
        req.on('error', reject)
      })
      await closedByAll(file)
    }
    const res = await get(url, { Range: 'bytes=-3' })
    expect(res.body.equals(big.subarray(-3))).toBe(true)
  })
})
