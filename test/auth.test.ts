/**
 * Auth in front of the tus routes, as an app does it: refusals by the app's hooks reach a browser
 * on another origin as their status (CORS headers on every answer of the tus routes, and only
 * there), `fastifyRequestOf` gives every tus hook and event the Fastify request behind it, and
 * the README's owner check keeps each upload to the user who created it.
 */
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { EVENTS } from '@tus/utils'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { describe, expect, it } from 'vitest'
import { fastifyRequestOf } from '../src/index.js'
import { bearer, bearerAuth, ownerCheck } from './auth-app.js'
import { pattern } from './helpers/data.js'
import { request } from './helpers/http.js'
import { startServer } from './helpers/server.js'
import { createUpload, slowPatch, TUS, tusUpload } from './helpers/tus-client.js'

const ORIGIN = 'https://app.example'

function list(value: unknown): string[] {
  return String(value ?? '')
    .split(',')
    .map((item) => item.trim().toLowerCase())
    .filter(Boolean)
}

function expectTusCors(headers: Record<string, unknown>, origin = '*') {
  expect(headers['access-control-allow-origin']).toBe(origin)
  const exposed = list(headers['access-control-expose-headers'])
  for (const header of ['location', 'upload-offset', 'upload-length', 'tus-resumable']) {
    expect(exposed).toContain(header)
  }
  expect(headers['tus-resumable']).toBe('1.0.0')
}

describe('a refusal by the app’s hooks on the tus routes', () => {
  it('answers a 401 from an onRequest auth hook with the tus CORS headers, for every tus method', async () => {
    const server = await startServer({}, { before: bearerAuth })
    const { url } = await createUpload(server.endpoint, 10, bearer('alice'))
    const answers = [
      await request(server.endpoint, 'POST', { ...TUS, Origin: ORIGIN, 'Upload-Length': '10' }),
      await request(url, 'HEAD', { ...TUS, Origin: ORIGIN }),
      await request(
        url,
        'PATCH',
        {
          ...TUS,
          Origin: ORIGIN,
          'Upload-Offset': '0',
          'Content-Type': 'application/offset+octet-stream',
          Authorization: 'Bearer wrong',
        },
        Buffer.from('abc'),
      ),
      await request(url, 'DELETE', { ...TUS, Origin: ORIGIN }),
      await request(url, 'GET', { Origin: ORIGIN }),
    ]
    expect(answers.map((a) => a.status)).toEqual([401, 401, 401, 401, 401])
    for (const answer of answers) expectTusCors(answer.headers)
    expect(JSON.parse(answers[0]?.body ?? '')).toEqual({ error: 'Unauthorized' })
    // Nothing was written.
    const status = await request(url, 'HEAD', { ...TUS, ...bearer('alice') })
    expect(status.headers['upload-offset']).toBe('0')
  })

  it('reflects an allowed origin, sends credentials and varies on Origin on a 403 thrown by a preHandler', async () => {
    const server = await startServer(
      { tus: { allowedOrigins: [ORIGIN], allowedCredentials: true } },
      {
        before: (app) => {
          app.addHook('preHandler', async (request, reply) => {
            reply.header('Vary', 'Accept-Encoding')
            if (request.headers.authorization !== 'Bearer good') {
              throw Object.assign(new Error('no access'), { statusCode: 403 })
            }
          })
        },
      },
    )
    const res = await request(server.endpoint, 'POST', {
      ...TUS,
      Origin: ORIGIN,
      'Upload-Length': '10',
    })
    expect(res.status).toBe(403)
    expect(JSON.parse(res.body)).toMatchObject({ statusCode: 403, message: 'no access' })
    expectTusCors(res.headers, ORIGIN)
    expect(res.headers['access-control-allow-credentials']).toBe('true')
    expect(list(res.headers.vary)).toEqual(['accept-encoding', 'origin'])
  })

  it('keeps the tus CORS headers on the 500 of a hook that fails', async () => {
    const server = await startServer(
      {},
      {
        before: (app) => {
          app.addHook('onRequest', async () => {
            throw new Error('auth backend down')
          })
        },
      },
    )
    const res = await request(server.endpoint, 'POST', {
      ...TUS,
      Origin: ORIGIN,
      'Upload-Length': '10',
    })
    expect(res.status).toBe(500)
    expectTusCors(res.headers)
  })

  it('lets preflights through an auth hook that skips OPTIONS, and an authorised upload passes', async () => {
    const server = await startServer({ tus: { allowedOrigins: [ORIGIN] } }, { before: bearerAuth })
    const preflight = await request(server.endpoint, 'OPTIONS', {
      Origin: ORIGIN,
      'Access-Control-Request-Method': 'POST',
      'Access-Control-Request-Headers': 'authorization, tus-resumable, upload-length',
    })
    expect(preflight.status).toBe(204)
    expect(preflight.headers['access-control-allow-origin']).toBe(ORIGIN)
    expect(list(preflight.headers['access-control-allow-headers'])).toContain('authorization')
    const created = await createUpload(server.endpoint, 3, { ...bearer('good'), Origin: ORIGIN })
    expect(created.response.headers['access-control-allow-origin']).toBe(ORIGIN)
  })

  it('leaves the app’s own routes without tus headers', async () => {
    const server = await startServer(
      {},
      {
        before: (app) => {
          bearerAuth(app)
          app.get('/api/me', async (request) => request.user)
        },
      },
    )
    const refused = await request(`${server.origin}/api/me`, 'GET', { Origin: ORIGIN })
    expect(refused.status).toBe(401)
    expect(refused.headers['access-control-allow-origin']).toBeUndefined()
    expect(refused.headers['tus-resumable']).toBeUndefined()
    const me = await request(`${server.origin}/api/me`, 'GET', bearer('bob'))
    expect(JSON.parse(me.body)).toEqual({ id: 'bob' })
  })

  it('answers a download (GET) with CORS like every other tus answer', async () => {
    const server = await startServer({ tus: { allowedOrigins: [ORIGIN] } })
    const url = await tusUpload(server.endpoint, Buffer.from('hello'))
    const res = await request(url, 'GET', { Origin: ORIGIN })
    expect(res.status).toBe(200)
    expect(res.body).toBe('hello')
    expect(res.headers['access-control-allow-origin']).toBe(ORIGIN)
    expect(list(res.headers.vary)).toContain('origin')
  })
})

describe('fastifyRequestOf', () => {
  it('gives every tus hook and event the Fastify request behind it, with what the auth hook set', async () => {
    /** Hook or event → the users it saw (`null`: no Fastify request). */
    const seen: Record<string, Array<string | null>> = {}
    const note = (name: string, req: Parameters<typeof fastifyRequestOf>[0]) => {
      const request = fastifyRequestOf(req)
      seen[name] = [...(seen[name] ?? []), request ? (request.user?.id ?? 'no user') : null]
    }
    let app: FastifyInstance | undefined
    const server = await startServer(
      {
        idPattern: /^up-[0-9a-f]{8}$/,
        tus: {
          postReceiveInterval: 1,
          namingFunction: (req) => {
            note('namingFunction', req)
            return `up-${Math.random().toString(16).slice(2, 10).padEnd(8, '0')}`
          },
          generateUrl: (req, { proto, host, path, id }) => {
            note('generateUrl', req)
            return `${proto}://${host}${path}/${id}`
          },
          getFileIdFromRequest: (req, id) => {
            note('getFileIdFromRequest', req)
            return id
          },
          maxSize: (req) => {
            note('maxSize', req)
            return 1024 * 1024
          },
          onIncomingRequest: async (req) => note('onIncomingRequest', req),
          onUploadCreate: async (req) => {
            note('onUploadCreate', req)
            return {}
          },
          onUploadFinish: async (req) => {
            note('onUploadFinish', req)
            return {}
          },
          onResponseError: async (req) => {
            note('onResponseError', req)
          },
        },
      },
      {
        before: (a) => {
          app = a
          bearerAuth(a)
        },
      },
    )
    const { tus } = server.app
    tus.on(EVENTS.POST_CREATE, (req) => note(EVENTS.POST_CREATE, req))
    // With the built-in store, progress events carry the Node request (the direct write path).
    tus.on(EVENTS.POST_RECEIVE, (req) => note(EVENTS.POST_RECEIVE, req))
    tus.on(EVENTS.POST_FINISH, (req) => note(EVENTS.POST_FINISH, req))
    tus.on(EVENTS.POST_TERMINATE, (req) => note(EVENTS.POST_TERMINATE, req))
    const { url } = await createUpload(server.endpoint, 9, bearer('alice'))
    const patched = await slowPatch(url, 0, [pattern(3), pattern(3), pattern(3)], 30, {
      headers: bearer('alice'),
    })
    expect(patched.status).toBe(204)
    await request(`${url}x`, 'HEAD', { ...TUS, ...bearer('bob') }) // 404: onResponseError
    expect((await request(url, 'DELETE', { ...TUS, ...bearer('bob') })).status).toBe(204)

    expect(app).toBe(server.app)
    const everyone = (...users: string[]) => expect.arrayContaining(users)
    expect(seen).toMatchObject({
      namingFunction: ['alice'],
      generateUrl: ['alice'],
      onUploadCreate: ['alice'],
      onUploadFinish: ['alice'],
      onResponseError: ['bob'],
      [EVENTS.POST_CREATE]: ['alice'],
      [EVENTS.POST_FINISH]: ['alice'],
      [EVENTS.POST_TERMINATE]: ['bob'],
      getFileIdFromRequest: everyone('alice', 'bob'),
      maxSize: everyone('alice'),
      onIncomingRequest: everyone('alice', 'bob'),
    })
    expect(seen[EVENTS.POST_RECEIVE]?.length).toBeGreaterThan(0)
    for (const users of Object.values(seen)) expect(users).not.toContain(null)
  })

  it('is undefined for a request that did not come through the plugin’s routes', async () => {
    let inHook: FastifyRequest | undefined | 'not called' = 'not called'
    const server = await startServer({
      tus: {
        onIncomingRequest: async (req) => {
          inHook = fastifyRequestOf(req)
        },
      },
    })
    const { url } = await createUpload(server.endpoint, 5)
    const answer = await server.app.tus.handleWeb(
      new Request(url, { method: 'HEAD', headers: TUS }),
    )
    expect(answer.status).toBe(200)
    expect(inHook).toBeUndefined()
    expect(fastifyRequestOf(new Request(url))).toBeUndefined()
  })
})

describe('the README’s per-upload owner check', () => {
  async function ownedServer() {
    let app: FastifyInstance | undefined
    const server = await startServer(
      { tus: ownerCheck(() => app as FastifyInstance) },
      {
        before: (a) => {
          app = a
          bearerAuth(a)
        },
      },
    )
    return server
  }

  it('refuses HEAD, PATCH, GET and DELETE by another user with 403 and leaves the upload intact', async () => {
    const server = await ownedServer()
    const data = pattern(10_000, 3)
    const metadata = 'filename YS5iaW4=,bin /w=='
    const { url, id } = await createUpload(server.endpoint, data.length, {
      ...bearer('alice'),
      'Upload-Metadata': metadata,
    })
    const patchAs = (user: string, offset: number, body: Buffer) =>
      request(
        url,
        'PATCH',
        {
          ...TUS,
          ...bearer(user),
          'Upload-Offset': offset,
          'Content-Type': 'application/offset+octet-stream',
        },
        body,
      )
    expect((await patchAs('alice', 0, data.subarray(0, 4000))).status).toBe(204)

    const asBob = [
      await request(url, 'HEAD', { ...TUS, ...bearer('bob') }),
      await patchAs('bob', 4000, data.subarray(4000)),
      await request(url, 'DELETE', { ...TUS, ...bearer('bob') }),
    ]
    expect(asBob.map((a) => a.status)).toEqual([403, 403, 403])
    expect(asBob[1]?.body).toBe('Forbidden: not your upload\n')
    expect(asBob[1]?.headers['access-control-allow-origin']).toBe('*')
    expect((await readFile(path.join(server.directory, id))).equals(data.subarray(0, 4000))).toBe(
      true,
    )

    // Alice still can; HEAD answers her metadata as sent, with the owner the hook added.
    const status = await request(url, 'HEAD', { ...TUS, ...bearer('alice') })
    expect(status.status).toBe(200)
    expect(status.headers['upload-offset']).toBe('4000')
    expect(status.headers['upload-metadata']).toBe(
      `${metadata},owner ${Buffer.from('alice').toString('base64')}`,
    )
    expect((await patchAs('alice', 4000, data.subarray(4000))).status).toBe(204)

    expect((await request(url, 'GET', bearer('bob'))).status).toBe(403)
    const download = await fetch(url, { headers: bearer('alice') })
    expect(Buffer.from(await download.arrayBuffer()).equals(data)).toBe(true)

    expect((await request(url, 'DELETE', { ...TUS, ...bearer('bob') })).status).toBe(403)
    expect((await readFile(path.join(server.directory, id))).equals(data)).toBe(true)
    expect((await request(url, 'DELETE', { ...TUS, ...bearer('alice') })).status).toBe(204)
    // Without a token the app's hook answers first.
    expect((await request(url, 'HEAD', TUS)).status).toBe(401)
  })

  it('on a namespaced registration reads that namespace’s Server: 403 for another user, 200 for the owner', async () => {
    let app: FastifyInstance | undefined
    const server = await startServer(
      {
        namespace: 'videos',
        path: '/videos',
        tus: ownerCheck(() => app as FastifyInstance, 'videos'),
      },
      {
        before: (a) => {
          app = a
          bearerAuth(a)
        },
      },
    )
    const { url } = await createUpload(server.endpoint, 10, bearer('alice'))
    expect((await request(url, 'HEAD', { ...TUS, ...bearer('bob') })).status).toBe(403)
    const own = await request(url, 'HEAD', { ...TUS, ...bearer('alice') })
    expect(own.status).toBe(200)
    expect(own.headers['upload-metadata']).toBe(`owner ${Buffer.from('alice').toString('base64')}`)
  })

  it('records the creator as owner whatever owner the client sends', async () => {
    const server = await ownedServer()
    const claimed = `filename Yi5iaW4=,owner ${Buffer.from('alice').toString('base64')}`
    const { url } = await createUpload(server.endpoint, 5, {
      ...bearer('bob'),
      'Upload-Metadata': claimed,
    })
    expect((await request(url, 'HEAD', { ...TUS, ...bearer('alice') })).status).toBe(403)
    const status = await request(url, 'HEAD', { ...TUS, ...bearer('bob') })
    expect(status.status).toBe(200)
    // A sent key changed: the metadata as tus encodes it, not the header the client sent.
    expect(status.headers['upload-metadata']).toBe(
      `filename Yi5iaW4=,owner ${Buffer.from('bob').toString('base64')}`,
    )
  })

  it('lets each user upload with tus-js-client and resume only their own upload', async () => {
    const server = await ownedServer()
    const data = pattern(50_000, 9)
    const url = await tusUpload(server.endpoint, data, {
      headers: bearer('alice'),
      metadata: { filename: 'a.bin' },
    })
    const id = url.slice(url.lastIndexOf('/') + 1)
    expect((await readFile(path.join(server.directory, id))).equals(data)).toBe(true)
    // Without an endpoint, tus-js-client reports the refused HEAD instead of creating anew.
    await expect(
      tusUpload(server.endpoint, data, { headers: bearer('bob'), uploadUrl: url, endpoint: null }),
    ).rejects.toThrow(/response code: 403/)
  })
})
