/**
 * tus 1.0 on the plugin's routes, rule by rule, with raw HTTP against a listening server; then
 * the checksum extension, by hand and with tus-js-client.
 */
import { createHash } from 'node:crypto'
import fs from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import * as tus from 'tus-js-client'
import { describe, expect, it } from 'vitest'
import { pattern, sha256Of } from './helpers/data.js'
import { listing, sha256 } from './helpers/fs.js'
import { request } from './helpers/http.js'
import { startServer, type TestServer } from './helpers/server.js'
import { createUpload, head, patch, TUS } from './helpers/tus-client.js'

const OCTETS = { 'Content-Type': 'application/offset+octet-stream' }

function digest(algorithm: string, data: Buffer): string {
  return `${algorithm} ${createHash(algorithm).update(data).digest('base64')}`
}

/** A server whose onRequest hook sets a header, to check that every answer keeps it. */
function serverWithHookHeader(
  options: Parameters<typeof startServer>[0] = {},
): Promise<TestServer> {
  return startServer(options, {
    before: (app) => {
      app.addHook('onRequest', async (_req, reply) => {
        reply.header('x-hook', 'kept')
      })
    },
  })
}

describe('Tus-Resumable', () => {
  it.each(['POST', 'HEAD', 'PATCH', 'DELETE'])(
    'answers %s without it, or with an unsupported version, 412 with Tus-Version and does nothing',
    async (method) => {
      const server = await serverWithHookHeader()
      const { url, id } = await createUpload(server.endpoint, 10)
      const target = method === 'POST' ? server.endpoint : url
      const headers: Record<string, string> =
        method === 'POST'
          ? { 'Upload-Length': '10' }
          : method === 'PATCH'
            ? { ...OCTETS, 'Upload-Offset': '0' }
            : {}
      for (const version of [undefined, '0.2.2', '2.0.0']) {
        const res = await request(
          target,
          method,
          { ...headers, ...(version ? { 'Tus-Resumable': version } : {}) },
          method === 'PATCH' ? 'hello' : undefined,
        )
        expect(res.status).toBe(412)
        expect(res.headers['tus-version']).toBe('1.0.0')
        expect(res.headers['tus-resumable']).toBe('1.0.0')
        expect(res.headers['x-hook']).toBe('kept')
        if (method !== 'HEAD') expect(res.body).toMatch(/Tus-Resumable/)
      }
      // Not processed: no new upload, no bytes, not deleted.
      expect((await listing(server.directory)).sort()).toEqual([id, `${id}.json`].sort())
      expect((await head(url)).headers['upload-offset']).toBe('0')
    },
  )
})

describe('OPTIONS', () => {
  it('ignores Tus-Resumable and states versions, extensions and the maximum size', async () => {
    const server = await startServer({ tus: { maxSize: 1_000_000 } })
    const res = await request(server.endpoint, 'OPTIONS', { 'Tus-Resumable': '9.9.9' })
    expect([200, 204]).toContain(res.status)
    expect(res.headers['tus-version']).toBe('1.0.0')
    expect(String(res.headers['tus-extension']).split(',').sort()).toEqual(
      [
        'checksum',
        'concatenation',
        'creation',
        'creation-defer-length',
        'creation-with-upload',
        'expiration',
        'termination',
      ].sort(),
    )
    expect(res.headers['tus-max-size']).toBe('1000000')
    expect(res.headers['tus-checksum-algorithm']).toBe('sha1,md5,sha256')
  })

  it('states no maximum size when none is set', async () => {
    const server = await startServer()
    expect((await request(server.endpoint, 'OPTIONS')).headers['tus-max-size']).toBeUndefined()
  })
})

describe('Content-Type', () => {
  it('answers a PATCH without application/offset+octet-stream 415', async () => {
    const server = await serverWithHookHeader()
    const { url } = await createUpload(server.endpoint, 10)
    for (const type of [undefined, 'text/plain', 'application/octet-stream']) {
      const res = await request(
        url,
        'PATCH',
        { ...TUS, 'Upload-Offset': '0', ...(type ? { 'Content-Type': type } : {}) },
        'hello',
      )
      expect(res.status).toBe(415)
      expect(res.body).toMatch(/application\/offset\+octet-stream/)
      expect(res.headers['x-hook']).toBe('kept')
    }
    expect((await head(url)).headers['upload-offset']).toBe('0')
    // Parameters and letter case of the media type do not matter.
    const ok = await patch(url, 0, Buffer.from('hello'), {
      'Content-Type': 'Application/Offset+Octet-Stream; x=1',
    })
    expect(ok.status).toBe(204)
  })

  it('answers a POST that carries a body of another type 415, and accepts one without a body', async () => {
    const server = await startServer()
    const withBody = await request(
      server.endpoint,
      'POST',
      { ...TUS, 'Upload-Length': '5', 'Content-Type': 'application/json' },
      '{"a":1}',
    )
    expect(withBody.status).toBe(415)
    expect(await listing(server.directory)).toEqual([])
    const withoutBody = await request(server.endpoint, 'POST', {
      ...TUS,
      'Upload-Length': '5',
      'Content-Type': 'application/json',
    })
    expect(withoutBody.status).toBe(201)
  })
})

describe('Upload-Offset', () => {
  it.each([undefined, '-1', 'abc', '1.5', '1e3', '0x10', '99999999999999999999'])(
    'answers a PATCH with Upload-Offset %s 400',
    async (offset) => {
      const server = await startServer()
      const { url } = await createUpload(server.endpoint, 10)
      const res = await request(
        url,
        'PATCH',
        { ...TUS, ...OCTETS, ...(offset === undefined ? {} : { 'Upload-Offset': offset }) },
        'hello',
      )
      expect(res.status).toBe(400)
      expect(res.body).toMatch(/Upload-Offset/)
    },
  )

  it('answers a conflicting offset 409 with the current Upload-Offset', async () => {
    const server = await serverWithHookHeader()
    const { url } = await createUpload(server.endpoint, 10)
    expect((await patch(url, 0, Buffer.from('abc'))).status).toBe(204)
    const res = await patch(url, 1, Buffer.from('defg'))
    expect(res.status).toBe(409)
    expect(res.headers['upload-offset']).toBe('3')
    expect(res.headers['x-hook']).toBe('kept')
  })
})

describe('POST', () => {
  it("frames a creation's 201 with Content-Length: 0 on a reusable connection, and a hook's body whole", async () => {
    const server = await startServer({
      tus: {
        onUploadFinish: async () => ({ body: 'stored, thank you\n' }),
      },
    })
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const post = (headers: Record<string, string>, body?: string) =>
      new Promise<{ res: http.IncomingMessage; text: string }>((resolve, reject) => {
        const req = http.request(
          server.endpoint,
          { method: 'POST', headers: { ...TUS, ...headers }, agent },
          (res) => {
            let text = ''
            res.setEncoding('utf8')
            res.on('data', (chunk) => {
              text += chunk
            })
            res.on('end', () => resolve({ res, text }))
          },
        )
        req.on('error', reject)
        req.end(body)
      })
    try {
      const created = await post({ 'Upload-Length': '3' })
      expect(created.res.statusCode).toBe(201)
      expect(created.res.headers['content-length']).toBe('0')
      expect(created.res.headers['transfer-encoding']).toBeUndefined()
      expect(created.text).toBe('')
      // Creation with upload that finishes it: the hook's body, framed with its own length.
      const finished = await post({ 'Upload-Length': '3', ...OCTETS }, 'abc')
      expect(finished.res.statusCode).toBe(201)
      expect(finished.text).toBe('stored, thank you\n')
      expect(finished.res.headers['content-length']).toBe(String(finished.text.length))
      expect(finished.res.socket).toBe(created.res.socket)
    } finally {
      agent.destroy()
    }
  })
})

describe('HEAD', () => {
  it('states offset, length, metadata as sent, no-store, and leaves a keep-alive connection usable', async () => {
    const server = await startServer()
    // Not canonical once decoded and re-encoded: a non-UTF-8 value, a key without a value, a
    // numeric key after another.
    const metadata = 'filename d29ybGQ=,bin /w==,flag,7 c2V2ZW4='
    const { url } = await createUpload(server.endpoint, 10, { 'Upload-Metadata': metadata })
    const deferred = await createUpload(server.endpoint, 'deferred')

    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const viaAgent = (target: string) =>
      new Promise<http.IncomingMessage>((resolve, reject) => {
        http
          .request(target, { method: 'HEAD', headers: TUS, agent }, (res) => {
            res.resume()
            res.on('end', () => resolve(res))
          })
          .on('error', reject)
          .end()
      })
    try {
      const first = await viaAgent(url)
      const second = await viaAgent(deferred.url) // the same socket: the first left no body
      expect(first.headers['cache-control']).toBe('no-store')
      expect(first.headers['upload-offset']).toBe('0')
      expect(first.headers['upload-length']).toBe('10')
      expect(first.headers['upload-metadata']).toBe(metadata)
      expect(second.headers['upload-defer-length']).toBe('1')
      expect(second.headers['upload-length']).toBeUndefined()
      expect(second.socket).toBe(first.socket)
      expect(first.headers['content-length']).toBe('0')
    } finally {
      agent.destroy()
    }
  })

  it('answers the metadata of a record larger than one first read (about 8 KiB) whole, and accepts bytes', async () => {
    const server = await startServer()
    // 2 keys of about 3.9 KiB each: the record (metadata twice, as sent and as decoded) is past 4 KiB.
    const value = Buffer.alloc(2900, 'm').toString('base64')
    const metadata = `a ${value},b ${value}`
    const { url } = await createUpload(server.endpoint, 3, { 'Upload-Metadata': metadata })
    const id = path.basename(new URL(url).pathname)
    expect((await fs.stat(path.join(server.directory, `${id}.json`))).size).toBeGreaterThan(8192)
    expect((await head(url)).headers['upload-metadata']).toBe(metadata)
    expect((await patch(url, 0, Buffer.from('abc'))).status).toBe(204)
    expect((await head(url)).headers['upload-offset']).toBe('3')
  })
})

describe('upload URLs', () => {
  it('ignores a query string on an upload URL', async () => {
    const server = await startServer()
    const { url } = await createUpload(server.endpoint, 10)
    expect((await patch(`${url}?token=abc`, 0, Buffer.from('hello'))).status).toBe(204)
    const res = await head(`${url}?token=abc&x=%2F..`)
    expect(res.status).toBe(200)
    expect(res.headers['upload-offset']).toBe('5')
    expect((await request(`${url}?token=1`, 'DELETE', TUS)).status).toBe(204)
  })

  it.each(['..%2F..%2Fetc%2Fpasswd', '%2E%2E', 'a%5Cb', 'a%00b', '%252F', `${'a'.repeat(300)}`])(
    'refuses the id %s without touching anything outside the directory',
    async (id) => {
      const server = await startServer()
      const res = await request(`${server.endpoint}/${id}`, 'HEAD', TUS)
      expect([400, 404]).toContain(res.status)
      const del = await request(`${server.endpoint}/${id}`, 'DELETE', TUS)
      expect([400, 404]).toContain(del.status)
    },
  )
})

describe('checksum extension', () => {
  it.each(['sha1', 'md5', 'sha256'])(
    'accepts a PATCH whose %s digest matches',
    async (algorithm) => {
      const server = await startServer()
      const data = pattern(5000)
      const { url, id } = await createUpload(server.endpoint, data.length)
      const res = await patch(url, 0, data, { 'Upload-Checksum': digest(algorithm, data) })
      expect(res.status).toBe(204)
      expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(data))
    },
  )

  it('answers a mismatch 460, rolls the bytes back, and accepts the retry', async () => {
    const server = await startServer()
    const data = pattern(8000)
    const { url, id } = await createUpload(server.endpoint, data.length)
    expect((await patch(url, 0, data.subarray(0, 3000))).status).toBe(204)

    const chunk = data.subarray(3000)
    const wrong = await patch(url, 3000, chunk, { 'Upload-Checksum': digest('sha1', pattern(10)) })
    expect(wrong.status).toBe(460)
    expect((await head(url)).headers['upload-offset']).toBe('3000')
    expect((await fs.stat(path.join(server.directory, id))).size).toBe(3000)

    const retry = await patch(url, 3000, chunk, { 'Upload-Checksum': digest('sha1', chunk) })
    expect(retry.status).toBe(204)
    expect(retry.headers['upload-offset']).toBe('8000')
    expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(data))
  })

  it('checks the body of a creation-with-upload POST', async () => {
    const server = await startServer()
    const data = pattern(100)
    const bad = await request(
      server.endpoint,
      'POST',
      { ...TUS, ...OCTETS, 'Upload-Length': '100', 'Upload-Checksum': digest('md5', pattern(5)) },
      data,
    )
    expect(bad.status).toBe(460)
    const good = await request(
      server.endpoint,
      'POST',
      { ...TUS, ...OCTETS, 'Upload-Length': '100', 'Upload-Checksum': digest('md5', data) },
      data,
    )
    expect(good.status).toBe(201)
    expect(good.headers['upload-offset']).toBe('100')
  })

  it.each([
    ['an unknown algorithm', 'crc32 AAAAAA=='],
    ['no digest', 'sha1'],
    ['a digest that is not base64', 'sha1 !!!!'],
    ['extra parts', 'sha1 AAAA AAAA'],
  ])('answers %s 400', async (_what, header) => {
    const server = await startServer()
    const { url } = await createUpload(server.endpoint, 10)
    const res = await patch(url, 0, Buffer.from('hello'), { 'Upload-Checksum': header })
    expect(res.status).toBe(400)
    expect(res.body).toMatch(/Upload-Checksum/)
    expect((await head(url)).headers['upload-offset']).toBe('0')
  })

  it('answers a well-formed digest of the wrong length 460, as a mismatch, and keeps the offset', async () => {
    const server = await startServer()
    const { url } = await createUpload(server.endpoint, 12)
    for (const header of [
      'sha1 AAAA',
      'sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAAA',
      'md5 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
    ]) {
      const res = await patch(url, 0, Buffer.from('Hello, tus!\n'), { 'Upload-Checksum': header })
      expect(res.status, header).toBe(460)
      expect((await head(url)).headers['upload-offset']).toBe('0')
    }
    const good = await patch(url, 0, Buffer.from('Hello, tus!\n'), {
      'Upload-Checksum': 'sha1 E7X121m3do5RTtnrOi5XTG9Uq0A=',
    })
    expect(good.status).toBe(204)
    expect(good.headers['upload-offset']).toBe('12')
  })

  it('uploads with tus-js-client sending a checksum with every PATCH', async () => {
    const server = await startServer()
    const data = pattern(300_000, 7)
    let checksummed = 0
    // tus-js-client has no checksum option: its HTTP stack adds the header to each PATCH body.
    const stack = new tus.DefaultHttpStack({})
    const httpStack: tus.HttpStack = {
      getName: () => 'checksum-stack',
      createRequest(method, url) {
        const req = stack.createRequest(method, url)
        const send = req.send.bind(req)
        req.send = async (body?: unknown) => {
          if (method === 'PATCH' && body) {
            req.setHeader('Upload-Checksum', digest('sha256', await bodyBytes(body)))
            checksummed++
          }
          return send(body)
        }
        return req
      },
    }
    const url = await new Promise<string>((resolve, reject) => {
      const upload = new tus.Upload(data, {
        endpoint: server.endpoint,
        chunkSize: 64 * 1024,
        retryDelays: [],
        httpStack,
        onSuccess: () => resolve(upload.url as string),
        onError: reject,
      })
      upload.start()
    })
    expect(checksummed).toBe(Math.ceil(data.length / (64 * 1024)))
    const id = url.slice(url.lastIndexOf('/') + 1)
    expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(data))
  })
})

async function bodyBytes(body: unknown): Promise<Buffer> {
  if (Buffer.isBuffer(body)) return body
  if (body instanceof Uint8Array) return Buffer.from(body)
  const chunks: Buffer[] = []
  for await (const chunk of body as AsyncIterable<Buffer>) chunks.push(Buffer.from(chunk))
  return Buffer.concat(chunks)
}
