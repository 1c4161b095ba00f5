/**
 * The tus routes, registered in an encapsulated child context so that their body parsing does
 * not leak into the user's app, and the hand-off of each request to @tus/server: protocol guards
 * before it, fixes to its answers after it.
 */
import type { Server } from '@tus/server'
import { EVENTS, HEADERS, TUS_RESUMABLE } from '@tus/utils'
import type { FastifyInstance, FastifyReply, FastifyRequest, HTTPMethods } from 'fastify'
import { NodeRequest, sendNodeResponse } from 'srvx/node'
import { isFinished } from '../store/expiry-policy.js'
import type { ExpiringFileStore } from '../store/file-store.js'
import {
  CHECKSUM_ALGORITHMS,
  normalizeContentType,
  type Refusal,
  refusalFor,
  TUS_VERSION,
} from './protocol.js'
import { DirectBodyRequest } from './write-path.js'

export interface TusRoutesOptions {
  /** The path relative to the child context, e.g. `/files`. */
  path: string
  tus: Server
  /** The built-in store (expiry headers, checksums, direct writes); absent for a user's datastore. */
  store: ExpiringFileStore | undefined
  /** True once `fastify.close()` has begun. */
  isClosing: () => boolean
}

const TUS_METHODS: HTTPMethods[] = ['POST', 'HEAD', 'PATCH', 'OPTIONS', 'DELETE', 'GET']

export async function tusRoutes(child: FastifyInstance, options: TusRoutesOptions): Promise<void> {
  const { path, tus, store, isClosing } = options

  // Bodies stay unread for tus: no parser here may buffer an upload or apply bodyLimit.
  child.removeAllContentTypeParsers()
  child.addContentTypeParser('*', (_request, _payload, done) => done(null))

  const fixAnswer = answerFixes(tus, store)
  async function handler(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    reply.hijack()
    await handOff(request, reply, { tus, store, fixAnswer, isClosing })
    // Fastify closes idle keep-alive connections once, when close() begins; a hijacked answer
    // that ends after that moment would hold close() until the keep-alive timeout.
    if (isClosing()) child.server.closeIdleConnections()
  }
  for (const url of [path, `${path}/*`]) {
    child.route({
      method: TUS_METHODS,
      url,
      exposeHeadRoute: false,
      // @fastify/cors would answer preflights itself with its own methods (GET,HEAD,POST by
      // default), which breaks PATCH and DELETE from browsers: tus does CORS on these routes.
      config: { cors: false },
      handler,
    })
  }
}

type AnswerFix = (request: Request, response: Response) => Promise<void>

interface HandOff {
  tus: Server
  store: ExpiringFileStore | undefined
  fixAnswer: AnswerFix
  isClosing: () => boolean
}

/**
 * Runs the request through the guards and @tus/server and writes the answer. After `hijack()`
 * Fastify no longer answers for us, so every failure is caught here: one response, or a closed
 * socket.
 */
async function handOff(request: FastifyRequest, reply: FastifyReply, how: HandOff): Promise<void> {
  const res = reply.raw
  // Headers that the user's hooks set with reply.header() would be lost by hijack().
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) res.setHeader(name, value)
  }
  try {
    const refusal = refusalFor(request.raw.method ?? '', request.headers, how.store !== undefined)
    let response: Response
    if (refusal) {
      response = refusalResponse(how.tus, request, refusal)
    } else {
      normalizeContentType(request.raw)
      // With the built-in store the body stays a Node stream for the direct write path.
      const webRequest = how.store
        ? new DirectBodyRequest({ req: request.raw, res })
        : new NodeRequest({ req: request.raw, res })
      response = await how.tus.handleWeb(webRequest)
      await how.fixAnswer(webRequest, response)
    }
    if (request.raw.method === 'HEAD') {
      // The answer describes the upload, not a GET download; 0 frames it for every client.
      response.headers.set('Content-Length', '0')
      response.headers.delete('Content-Type')
    }
    if (how.isClosing()) response.headers.set('Connection', 'close')
    await sendNodeResponse(res, response)
  } catch (error) {
    request.log.error({ err: error }, 'fastify-tus: request failed after the hand-off to tus')
    if (!res.headersSent) {
      res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8', Connection: 'close' })
      res.end('Internal Server Error\n')
    } else {
      res.destroy()
    }
  }
}

/** A guard's answer, with the headers tus puts on its own answers (version, CORS). */
function refusalResponse(tus: Server, request: FastifyRequest, refusal: Refusal): Response {
  const headers = new Headers({
    'Tus-Resumable': TUS_RESUMABLE,
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(refusal.body)),
    'Access-Control-Expose-Headers': exposedHeaders(tus),
  })
  if (refusal.status === 412) headers.set('Tus-Version', TUS_VERSION)
  const origin = corsOrigin(tus, request.headers.origin)
  if (origin) headers.set('Access-Control-Allow-Origin', origin)
  if (tus.options.allowedOrigins) headers.set('Vary', 'Origin')
  if (tus.options.allowedCredentials === true)
    headers.set('Access-Control-Allow-Credentials', 'true')
  // The body of a refused request is not read: closing beats reading it to the end.
  if (request.headers['content-length'] || request.headers['transfer-encoding']) {
    headers.set('Connection', 'close')
  }
  return new Response(refusal.body, { status: refusal.status, headers })
}

/** @tus/server's rule for `Access-Control-Allow-Origin`, for answers it does not write. */
function corsOrigin(tus: Server, origin: string | undefined): string | null {
  const { allowedOrigins } = tus.options
  if (typeof allowedOrigins === 'function') return origin && allowedOrigins(origin) ? origin : null
  if (!allowedOrigins) return '*'
  if (!origin) return allowedOrigins[0] ?? null
  return allowedOrigins.includes(origin) ? origin : (allowedOrigins[0] ?? null)
}

function exposedHeaders(tus: Server): string {
  return [...HEADERS, ...(tus.options.exposedHeaders ?? [])].join(', ')
}

/**
 * Fixes to tus' answers: `Upload-Expires` from the built-in store's activity clock and
 * `Upload-Metadata` as sent, the current `Upload-Offset` on a 409, `Tus-Checksum-Algorithm` on
 * OPTIONS when the store checks checksums, no upload left behind by a refused creation.
 */
function answerFixes(tus: Server, store: ExpiringFileStore | undefined): AnswerFix {
  // POST learns its id from the naming function; remember it per request.
  const created = new WeakMap<Request, string>()
  tus.on(EVENTS.POST_CREATE, (req, upload) => {
    created.set(req as unknown as Request, upload.id)
  })
  const idOf = (request: Request) =>
    request.method === 'POST'
      ? created.get(request)
      : tus.handlers.HEAD.getFileIdFromRequest(request as never)

  return async (request, response) => {
    const { method } = request
    // The allowed origin depends on the request's Origin once allowedOrigins is set.
    if (tus.options.allowedOrigins) response.headers.append('Vary', 'Origin')
    if (method === 'OPTIONS' && store) {
      response.headers.set('Tus-Checksum-Algorithm', CHECKSUM_ALGORITHMS.join(','))
    }
    if (method === 'POST' && response.status >= 400 && store) {
      await removeRefusedCreation(store, created.get(request))
    }
    if (method === 'PATCH' && response.status === 409) {
      const id = idOf(request)
      const offset =
        id === undefined
          ? undefined
          : await tus.datastore.getUpload(id).then(
              (upload) => upload.offset,
              () => undefined,
            )
      if (offset !== undefined) response.headers.set('Upload-Offset', String(offset))
    }
    if (store && response.status >= 200 && response.status <= 299) {
      if (method !== 'POST' && method !== 'PATCH' && method !== 'HEAD') return
      const id = idOf(request)
      if (id === undefined) return
      const facts = await store.describe(id)
      if (facts?.expiresAt) response.headers.set('Upload-Expires', facts.expiresAt.toUTCString())
      else response.headers.delete('Upload-Expires')
      if (method === 'HEAD' && facts?.rawMetadata !== undefined) {
        response.headers.set('Upload-Metadata', facts.rawMetadata)
      }
    }
  }
}

/**
 * A POST whose body failed (413 past the declared length or `maxSize`, a checksum mismatch, a
 * client gone) after tus had created the upload: the client was refused and never learned the
 * URL, so the unfinished upload is nobody's. A finished one (a user's `onUploadFinish` that
 * refused it) stays.
 */
async function removeRefusedCreation(store: ExpiringFileStore, id: string | undefined) {
  if (id === undefined) return
  try {
    const upload = await store.getUpload(id)
    if (!isFinished(upload.size, upload.offset)) await store.remove(id)
  } catch {
    // Already gone, or unreadable: the sweep deals with what is left.
  }
}
