/**
 * What a browser on another origin needs from the tus routes, as it would send it: preflights,
 * CORS headers on every answer (refusals included), allowedOrigins and credentials, and
 * @fastify/cors registered on the same app.
 */
import cors from '@fastify/cors'
import { describe, expect, it } from 'vitest'
import { request } from '../helpers/http.js'
import { startServer } from '../helpers/server.js'
import { createUpload, patch, TUS } from '../helpers/tus-client.js'

const ORIGIN = 'https://app.example'
const TUS_RESPONSE_HEADERS = [
  'Location',
  'Upload-Offset',
  'Upload-Length',
  'Upload-Metadata',
  'Upload-Expires',
  'Upload-Defer-Length',
  'Tus-Resumable',
  'Tus-Version',
  'Tus-Extension',
  'Tus-Max-Size',
  'Tus-Checksum-Algorithm',
]

function list(value: unknown): string[] {
  return String(value ?? '')
    .split(',')
    .map((item) => item.trim().toLowerCase())
    .filter(Boolean)
}

function preflight(url: string, method: string, origin = ORIGIN) {
  return request(url, 'OPTIONS', {
    Origin: origin,
    'Access-Control-Request-Method': method,
    'Access-Control-Request-Headers':
      'tus-resumable, upload-offset, upload-length, upload-metadata, content-type, upload-checksum',
  })
}

describe('CORS on the tus routes', () => {
  it('answers preflights with the methods and headers tus needs', async () => {
    const server = await startServer()
    const { url } = await createUpload(server.endpoint, 10)
    for (const [target, method] of [
      [server.endpoint, 'POST'],
      [url, 'PATCH'],
      [url, 'HEAD'],
      [url, 'DELETE'],
    ] as const) {
      const res = await preflight(target, method)
      expect([200, 204]).toContain(res.status)
      expect(res.headers['access-control-allow-origin']).toBe('*')
      expect(list(res.headers['access-control-allow-methods'])).toContain(method.toLowerCase())
      const allowed = list(res.headers['access-control-allow-headers'])
      for (const header of [
        'tus-resumable',
        'upload-offset',
        'upload-length',
        'upload-metadata',
        'content-type',
        'upload-checksum',
      ]) {
        expect(allowed).toContain(header)
      }
    }
  })

  it('lets a browser read the tus headers of every answer, refusals included', async () => {
    const server = await startServer()
    const created = await request(server.endpoint, 'POST', {
      ...TUS,
      Origin: ORIGIN,
      'Upload-Length': '10',
    })
    const url = new URL(String(created.headers.location), server.endpoint).href
    const answers = [
      created,
      await patch(url, 0, Buffer.from('abc'), { Origin: ORIGIN }),
      await request(url, 'HEAD', { ...TUS, Origin: ORIGIN }),
      await request(url, 'HEAD', { Origin: ORIGIN }), // 412: no Tus-Resumable
      await request(url, 'DELETE', { ...TUS, Origin: ORIGIN }),
    ]
    expect(answers.map((a) => a.status)).toEqual([201, 204, 200, 412, 204])
    for (const answer of answers) {
      expect(answer.headers['access-control-allow-origin']).toBe('*')
      const exposed = list(answer.headers['access-control-expose-headers'])
      for (const header of TUS_RESPONSE_HEADERS) expect(exposed).toContain(header.toLowerCase())
    }
  })

  it('reflects only an allowed origin, varies on Origin, and sends credentials when asked', async () => {
    const server = await startServer({
      tus: { allowedOrigins: [ORIGIN, 'https://other.example'], allowedCredentials: true },
    })
    const allowed = await request(server.endpoint, 'POST', {
      ...TUS,
      Origin: 'https://other.example',
      'Upload-Length': '1',
    })
    expect(allowed.headers['access-control-allow-origin']).toBe('https://other.example')
    expect(allowed.headers['access-control-allow-credentials']).toBe('true')
    expect(list(allowed.headers.vary)).toContain('origin')

    const stranger = await request(server.endpoint, 'POST', {
      ...TUS,
      Origin: 'https://evil.example',
      'Upload-Length': '1',
    })
    // No origin at all (@tus/server would send its first allowed origin).
    expect(stranger.headers['access-control-allow-origin']).toBeUndefined()

    const refused = await request(server.endpoint, 'POST', {
      Origin: 'https://other.example',
      'Upload-Length': '1',
    })
    expect(refused.status).toBe(412)
    expect(refused.headers['access-control-allow-origin']).toBe('https://other.example')
    expect(refused.headers['access-control-allow-credentials']).toBe('true')
  })
})

describe('with @fastify/cors on the app', () => {
  it('keeps PATCH and DELETE preflights working on the tus routes, and leaves other routes to @fastify/cors', async () => {
    const server = await startServer(
      { tus: { allowedOrigins: [ORIGIN] } },
      {
        before: async (app) => {
          await app.register(cors, { origin: [ORIGIN] }) // its default methods: GET,HEAD,POST
          app.post('/api/things', async () => ({ ok: true }))
        },
      },
    )
    const { url } = await createUpload(server.endpoint, 10)
    for (const method of ['PATCH', 'DELETE', 'HEAD']) {
      const res = await preflight(url, method)
      expect([200, 204]).toContain(res.status)
      expect(list(res.headers['access-control-allow-methods'])).toContain(method.toLowerCase())
      expect(res.headers['access-control-allow-origin']).toBe(ORIGIN)
    }
    const uploaded = await patch(url, 0, Buffer.from('hello'), { Origin: ORIGIN })
    expect(uploaded.status).toBe(204)
    expect(uploaded.headers['access-control-allow-origin']).toBe(ORIGIN)

    // The app's own route: @fastify/cors as configured.
    const own = await preflight(`${server.origin}/api/things`, 'POST')
    expect(list(own.headers['access-control-allow-methods'])).toEqual(['get', 'head', 'post'])
    expect(own.headers['access-control-allow-origin']).toBe(ORIGIN)
  })
})
