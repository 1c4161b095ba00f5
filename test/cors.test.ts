/**
 * Who decides CORS on the tus routes, over real HTTP: the app's @fastify/cors when
 * `tus.allowedOrigins` is unset (registered before the plugin or after it), tus'
 * `allowedOrigins` when set; an origin either refuses gets no `Access-Control-Allow-Origin` on any
 * answer (preflight, creation, refusal, download, the app's 401).
 */
import cors, { type FastifyCorsOptions } from '@fastify/cors'
import Fastify from 'fastify'
import { describe, expect, it } from 'vitest'
import fastifyTus, { type FastifyTusOptions } from '../src/index.js'
import { bearerAuth } from './auth-app.js'
import { afterTest } from './helpers/cleanup.js'
import { tempDir } from './helpers/fs.js'
import { request } from './helpers/http.js'
import { logCapture, startServer, type TestServer } from './helpers/server.js'
import { createUpload, patch, TUS } from './helpers/tus-client.js'

const ALLOWED = 'https://app.example'
const REFUSED = 'https://evil.example'

function list(value: unknown): string[] {
  return String(value ?? '')
    .split(',')
    .map((item) => item.trim().toLowerCase())
    .filter(Boolean)
}

function preflight(url: string, method: string, origin: string) {
  return request(url, 'OPTIONS', {
    Origin: origin,
    'Access-Control-Request-Method': method,
    'Access-Control-Request-Headers': 'tus-resumable, upload-offset, upload-length, content-type',
  })
}

type Order = 'before' | 'after' | 'after, on the parent of the plugin’s context'

/**
 * A listening app with @fastify/cors registered `order` relative to the plugin; the last order
 * registers the plugin inside an encapsulated context (under `/api`), and @fastify/cors later on
 * the root.
 */
async function appWithCors(
  order: Order,
  corsOptions: FastifyCorsOptions,
  options: FastifyTusOptions = {},
): Promise<TestServer> {
  if (order === 'before') {
    return startServer(options, {
      before: async (app) => {
        await app.register(cors, corsOptions)
      },
    })
  }
  if (order === 'after') {
    const server = await startServer(options, { listen: false })
    await server.app.register(cors, corsOptions)
    const origin = await server.app.listen({ host: '127.0.0.1', port: 0 })
    return { ...server, origin, endpoint: `${origin}/files` }
  }
  const directory = await tempDir()
  const { records, stream } = logCapture()
  const app = Fastify({ logger: { level: 'debug', stream } })
  afterTest(() => app.close())
  await app.register(
    async (api) => {
      await api.register(fastifyTus, { ...options, directory })
    },
    { prefix: '/api' },
  )
  await app.register(cors, corsOptions)
  const origin = await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, origin, endpoint: `${origin}/api/files`, logs: records, directory }
}

/** The answers a browser on `origin` would get on the tus routes, one of each kind. */
async function answersTo(server: TestServer, origin: string) {
  const { url } = await createUpload(server.endpoint, 3)
  await patch(url, 0, Buffer.from('abc'))
  return {
    preflightPost: await preflight(server.endpoint, 'POST', origin),
    preflightPatch: await preflight(url, 'PATCH', origin),
    creation: await request(server.endpoint, 'POST', {
      ...TUS,
      Origin: origin,
      'Upload-Length': '1',
    }),
    head: await request(url, 'HEAD', { ...TUS, Origin: origin }),
    refusal: await request(url, 'HEAD', { Origin: origin }), // 412: no Tus-Resumable
    download: await request(url, 'GET', { Origin: origin }),
  }
}

describe('with @fastify/cors on the app and no tus.allowedOrigins', () => {
  const orders: Order[] = ['before', 'after', 'after, on the parent of the plugin’s context']
  for (const order of orders) {
    it(`follows @fastify/cors registered ${order}: its origin on every answer, none for an origin it refuses`, async () => {
      const server = await appWithCors(order, { origin: [ALLOWED] })
      const allowed = await answersTo(server, ALLOWED)
      expect(allowed.creation.status).toBe(201)
      expect(allowed.refusal.status).toBe(412)
      for (const [kind, answer] of Object.entries(allowed)) {
        expect(answer.headers['access-control-allow-origin'], kind).toBe(ALLOWED)
        expect(list(answer.headers.vary), kind).toContain('origin')
      }
      // tus answers the preflights: its methods and headers, not @fastify/cors' GET,HEAD,POST.
      expect(list(allowed.preflightPatch.headers['access-control-allow-methods'])).toContain(
        'patch',
      )
      expect(list(allowed.preflightPatch.headers['access-control-allow-headers'])).toContain(
        'upload-offset',
      )
      expect(list(allowed.head.headers['access-control-expose-headers'])).toContain('upload-offset')

      const refused = await answersTo(server, REFUSED)
      for (const [kind, answer] of Object.entries(refused)) {
        expect(answer.headers['access-control-allow-origin'], kind).toBeUndefined()
      }
    })
  }

  it('takes credentials and exposed headers from @fastify/cors, next to the tus headers', async () => {
    const server = await appWithCors('before', {
      origin: (origin, done) => done(null, origin === ALLOWED),
      credentials: true,
      exposedHeaders: ['X-Request-Id'],
    })
    const created = await request(server.endpoint, 'POST', {
      ...TUS,
      Origin: ALLOWED,
      'Upload-Length': '1',
    })
    expect(created.status).toBe(201)
    expect(created.headers['access-control-allow-origin']).toBe(ALLOWED)
    expect(created.headers['access-control-allow-credentials']).toBe('true')
    const exposed = list(created.headers['access-control-expose-headers'])
    expect(exposed).toContain('x-request-id')
    expect(exposed).toContain('location')
    expect(exposed).toContain('upload-expires')

    const refused = await preflight(server.endpoint, 'POST', REFUSED)
    expect(refused.headers['access-control-allow-origin']).toBeUndefined()
    expect(refused.headers['access-control-allow-credentials']).toBeUndefined()
  })

  it('follows @fastify/cors on what the app’s own hooks answer (a 401)', async () => {
    const server = await startServer(
      {},
      {
        before: async (app) => {
          await app.register(cors, { origin: [ALLOWED], exposedHeaders: 'X-Request-Id' })
          bearerAuth(app)
        },
      },
    )
    const unauthorized = (origin: string) =>
      request(server.endpoint, 'POST', { ...TUS, Origin: origin, 'Upload-Length': '1' })
    const allowed = await unauthorized(ALLOWED)
    expect(allowed.status).toBe(401)
    expect(allowed.headers['access-control-allow-origin']).toBe(ALLOWED)
    const exposed = list(allowed.headers['access-control-expose-headers'])
    expect(exposed).toContain('x-request-id')
    expect(exposed).toContain('tus-resumable')
    const refused = await unauthorized(REFUSED)
    expect(refused.status).toBe(401)
    expect(refused.headers['access-control-allow-origin']).toBeUndefined()
  })

  it('warns that tus.allowedCredentials is ignored, naming @fastify/cors’ option', async () => {
    const server = await appWithCors(
      'before',
      { origin: [ALLOWED] },
      { tus: { allowedCredentials: true } },
    )
    const warning = server.logs.find((r) => /allowedCredentials is ignored/.test(r.msg))
    expect(warning?.level).toBe(40)
    expect(warning?.msg).toContain('`credentials: true` in @fastify/cors')
    expect(warning?.endpoint).toBe('/files')
    const created = await request(server.endpoint, 'POST', {
      ...TUS,
      Origin: ALLOWED,
      'Upload-Length': '1',
    })
    expect(created.headers['access-control-allow-credentials']).toBeUndefined()
  })
})

describe('with tus.allowedOrigins', () => {
  const rules = {
    list: [ALLOWED, 'https://b.example'],
    function: (origin: string) => origin === ALLOWED,
  }
  for (const [name, allowedOrigins] of Object.entries(rules)) {
    it(`as a ${name}: sends no Access-Control-Allow-Origin to an origin it refuses, on any answer`, async () => {
      const server = await startServer({ tus: { allowedOrigins } })
      const allowed = await answersTo(server, ALLOWED)
      for (const [kind, answer] of Object.entries(allowed)) {
        expect(answer.headers['access-control-allow-origin'], kind).toBe(ALLOWED)
        expect(list(answer.headers.vary), kind).toContain('origin')
      }
      const refused = await answersTo(server, REFUSED)
      for (const [kind, answer] of Object.entries(refused)) {
        expect(answer.headers['access-control-allow-origin'], kind).toBeUndefined()
      }
    })
  }

  it('decides for the tus routes even with @fastify/cors on the app', async () => {
    const server = await appWithCors(
      'after',
      { origin: '*' },
      { tus: { allowedOrigins: [ALLOWED] } },
    )
    const refused = await preflight(server.endpoint, 'POST', REFUSED)
    expect(refused.headers['access-control-allow-origin']).toBeUndefined()
    const allowed = await preflight(server.endpoint, 'POST', ALLOWED)
    expect(allowed.headers['access-control-allow-origin']).toBe(ALLOWED)
    expect(server.logs.filter((r) => r.level >= 40)).toEqual([])
  })
})
