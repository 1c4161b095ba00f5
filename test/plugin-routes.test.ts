import path from 'node:path'
import { Server } from '@tus/server'
import Fastify from 'fastify'
import { describe, expect, it, onTestFinished } from 'vitest'
import fastifyTus, { fastifyRequestOf } from '../src/index.js'
import { sha256Of } from './helpers/data.js'
import { listing, sha256, tempDir } from './helpers/fs.js'
import { request } from './helpers/http.js'
import { startServer } from './helpers/server.js'
import { createUpload, head, TUS, tusUpload } from './helpers/tus-client.js'

describe('tus routes', () => {
  it('stores an upload made with tus-js-client byte for byte', async () => {
    const server = await startServer()
    const data = Buffer.from(Array.from({ length: 300_001 }, (_, i) => (i * 7) % 251))
    const url = await tusUpload(server.endpoint, data, {
      chunkSize: 100_000,
      metadata: { filename: 'a.bin' },
    })
    const id = url.slice(url.lastIndexOf('/') + 1)
    expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(data))

    const res = await head(url)
    expect(res.status).toBe(200)
    expect(res.headers['upload-offset']).toBe(String(data.length))
    expect(res.headers['upload-length']).toBe(String(data.length))
  })

  it('answers OPTIONS with the tus versions and extensions', async () => {
    const server = await startServer()
    const res = await request(server.endpoint, 'OPTIONS')
    expect(res.status).toBe(204)
    expect(res.headers['tus-version']).toBe('1.0.0')
    expect(res.headers['tus-extension']).toContain('expiration')
  })

  it('creates the upload directory when it is missing', async () => {
    const server = await startServer()
    const nested = path.join(server.directory, 'a', 'b')
    const other = await startServer({ directory: nested })
    await tusUpload(other.endpoint, Buffer.from('hello'))
    expect((await listing(nested)).length).toBe(2)
  })

  it('serves under a register prefix, with the prefix in Location', async () => {
    const server = await startServer({}, { register: { prefix: '/api' } })
    expect(server.endpoint).toMatch(/\/api\/files$/)
    const { response, url } = await createUpload(server.endpoint, 5)
    expect(response.headers.location).toMatch(
      /^http:\/\/127\.0\.0\.1:\d+\/api\/files\/[0-9a-f]{32}$/,
    )
    expect((await head(url)).status).toBe(200)
    // Nothing at the unprefixed path.
    expect((await request(`${server.origin}/files`, 'OPTIONS')).status).toBe(404)
  })

  it('builds Location from the parent prefixes too', async () => {
    const directory = await tempDir()
    const app = Fastify()
    onTestFinished(() => app.close())
    await app.register(
      async (v1) => {
        await v1.register(fastifyTus, { directory, path: '/uploads', prefix: '/api' })
      },
      { prefix: '/v1' },
    )
    const origin = await app.listen({ host: '127.0.0.1', port: 0 })
    const { response, url } = await createUpload(`${origin}/v1/api/uploads`, 5)
    expect(new URL(response.headers.location as string).pathname).toMatch(
      /^\/v1\/api\/uploads\/[0-9a-f]{32}$/,
    )
    expect((await head(url)).status).toBe(200)
  })

  it('keeps its body parser out of the app: a user route still answers 415', async () => {
    const server = await startServer(
      {},
      {
        before: (app) => {
          app.post('/echo', async (req) => ({ got: req.body }))
        },
      },
    )
    const res = await request(
      `${server.origin}/echo`,
      'POST',
      { 'Content-Type': 'application/offset+octet-stream' },
      'abc',
    )
    expect(res.status).toBe(415)
    // And the app's own JSON parsing is intact.
    const json = await request(
      `${server.origin}/echo`,
      'POST',
      { 'Content-Type': 'application/json' },
      '{"a":1}',
    )
    expect(JSON.parse(json.body)).toEqual({ got: { a: 1 } })
  })

  it('gives tus the exact offset+octet-stream content type while the app sees the header as sent, and tus hooks reach the Fastify request', async () => {
    const seenByApp: unknown[] = []
    const seenByTus: Array<string | null> = []
    const received: string[] = []
    const server = await startServer(
      {
        tus: {
          onUploadFinish: async (req, upload) => {
            seenByTus.push(req.headers.get('content-type'))
            const fastifyRequest = fastifyRequestOf(req)
            received.push(`${fastifyRequest?.method} ${fastifyRequest?.url} ${upload.offset}`)
            return {}
          },
        },
      },
      {
        before: (app) => {
          app.addHook('onResponse', async (request) => {
            if (request.method === 'PATCH') seenByApp.push(request.headers['content-type'])
          })
        },
      },
    )
    const { url } = await createUpload(server.endpoint, 3)
    const res = await request(
      url,
      'PATCH',
      { ...TUS, 'Upload-Offset': '0', 'Content-Type': 'Application/Offset+Octet-Stream; x=1' },
      'abc',
    )
    expect(res.status).toBe(204)
    expect(seenByTus).toEqual(['application/offset+octet-stream'])
    expect(seenByApp).toEqual(['Application/Offset+Octet-Stream; x=1'])
    expect(received).toEqual([`PATCH ${new URL(url).pathname} 3`])
  })

  it('runs the user onRequest hooks for tus requests (auth)', async () => {
    const server = await startServer(
      {},
      {
        before: (app) => {
          app.addHook('onRequest', async (req, reply) => {
            if (req.headers.authorization !== 'Bearer ok') {
              await reply.code(401).send({ error: 'no token' })
            }
          })
        },
      },
    )
    const denied = await request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': '3' })
    expect(denied.status).toBe(401)
    expect(await listing(server.directory)).toEqual([])

    const url = await tusUpload(server.endpoint, Buffer.from('abc'), {
      headers: { Authorization: 'Bearer ok' },
    })
    expect(url).toMatch(/[0-9a-f]{32}$/)
  })

  it('keeps headers that hooks set with reply.header()', async () => {
    const server = await startServer(
      {},
      {
        before: (app) => {
          app.addHook('onRequest', async (req, reply) => {
            reply.header('x-request-id', req.id)
          })
        },
      },
    )
    const res = await request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': '3' })
    expect(res.status).toBe(201)
    expect(res.headers['x-request-id']).toMatch(/^req-/)
    const options = await request(server.endpoint, 'OPTIONS')
    expect(options.headers['x-request-id']).toMatch(/^req-/)
  })

  it('logs tus requests with the Fastify request id', async () => {
    const server = await startServer()
    const { url } = await createUpload(server.endpoint, 3)
    const id = url.slice(url.lastIndexOf('/') + 1)
    await head(url)
    const incoming = server.logs.filter((r) => r.msg === 'incoming request')
    const completed = server.logs.filter((r) => r.msg === 'request completed')
    expect(incoming.length).toBeGreaterThanOrEqual(2)
    expect(completed.map((r) => (r.res as { statusCode: number }).statusCode)).toEqual([201, 200])
    const headLog = incoming.find((r) => (r.req as { url: string }).url.endsWith(id))
    expect(headLog?.reqId).toMatch(/^req-/)
  })

  it('answers once and keeps serving when a failure escapes tus after hijack', async () => {
    const server = await startServer({
      tus: {
        // Runs inside tus' error path; a throw here rejects tus' own handler.
        onResponseError: () => {
          throw new Error('boom in onResponseError')
        },
      },
    })
    // PATCH to an unknown upload: tus answers 404 through onResponseError, which throws.
    const res = await request(`${server.endpoint}/${'0'.repeat(32)}`, 'PATCH', {
      ...TUS,
      'Upload-Offset': '0',
      'Content-Type': 'application/offset+octet-stream',
    })
    expect(res.status).toBe(500)
    const logged = server.logs.find((r) => r.msg.includes('request failed after the hand-off'))
    expect(logged?.reqId).toMatch(/^req-/)
    expect(logged?.err).toMatchObject({ message: 'boom in onResponseError' })
    // Still serving.
    expect((await createUpload(server.endpoint, 1)).response.status).toBe(201)
  })
})

describe('downloads', () => {
  it('serves a finished upload inline only for safe types (an image yes, HTML, SVG and PDF as attachments), with nosniff', async () => {
    const server = await startServer()
    const dispositions: Record<string, string | undefined> = {}
    for (const type of ['image/png', 'text/html', 'image/svg+xml', 'application/pdf']) {
      const url = await tusUpload(server.endpoint, Buffer.from('<b>x</b>'), {
        metadata: { filename: 'f', filetype: type },
      })
      const res = await request(url, 'GET')
      expect(res.status).toBe(200)
      // The uploader's type, which a browser must not second-guess from the bytes.
      expect(res.headers['x-content-type-options']).toBe('nosniff')
      dispositions[type] = String(res.headers['content-disposition']).split(';')[0]
    }
    expect(dispositions).toEqual({
      'image/png': 'inline',
      'text/html': 'attachment',
      'image/svg+xml': 'attachment',
      'application/pdf': 'attachment',
    })
  })
})

describe('close', () => {
  it('does not wait for the keep-alive timeout after a download on a kept-alive connection', async () => {
    const server = await startServer()
    const url = await tusUpload(server.endpoint, Buffer.alloc(200_000, 5))
    // fetch keeps the connection alive; the streamed answer ends a moment after the client has
    // read it, that is after close() has closed the connections that were idle.
    const download = await fetch(url)
    expect((await download.arrayBuffer()).byteLength).toBe(200_000)
    const started = Date.now()
    await server.app.close()
    expect(Date.now() - started).toBeLessThan(5000) // the keep-alive timeout is 72 s
  })
})

describe('decorators', () => {
  it('exposes the tus Server and a cleanup handle', async () => {
    const server = await startServer({ cleanupOnStart: false })
    expect(server.app.tus).toBeInstanceOf(Server)
    expect(server.app.tusCleanup.last).toBeUndefined()
    const report = await server.app.tusCleanup.run()
    for (const key of ['scanned', 'removed', 'bytesFreed', 'errors', 'durationMs'] as const) {
      expect(typeof report[key]).toBe('number')
    }
    expect(server.app.tusCleanup.last).toBe(report)
  })

  it('does not take the scheduler decorator name of @fastify/schedule', async () => {
    const server = await startServer()
    expect(server.app.hasDecorator('scheduler')).toBe(false)
  })
})
