/**
 * The tus routes, registered in an encapsulated child context so that their body parsing does
 * not leak into the user's app, and the hand-off of each request to @tus/server.
 */
import type { Server } from '@tus/server'
import { EVENTS } from '@tus/utils'
import type { FastifyInstance, FastifyReply, FastifyRequest, HTTPMethods } from 'fastify'
import { NodeRequest, sendNodeResponse } from 'srvx/node'
import type { ExpiringFileStore } from './file-store.js'
import { DirectBodyRequest } from './write-path.js'

export interface TusRoutesOptions {
  /** The path relative to the child context, e.g. `/files`. */
  path: string
  tus: Server
  /** The built-in store, which states `Upload-Expires`; absent for a user's datastore. */
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

  const expires = store ? uploadExpiresHeader(tus, store) : undefined
  async function handler(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    reply.hijack()
    await handOff(tus, request, reply, expires, isClosing)
    // Fastify closes idle keep-alive connections once, when close() begins; a hijacked answer
    // that ends after that moment would hold close() until the keep-alive timeout.
    if (isClosing()) child.server.closeIdleConnections()
  }
  for (const url of [path, `${path}/*`]) {
    child.route({ method: TUS_METHODS, url, exposeHeadRoute: false, handler })
  }
}

type ResponseDecorator = (request: Request, response: Response) => Promise<void>

/**
 * Runs the request through @tus/server and writes its answer. After `hijack()` Fastify no
 * longer answers for us, so every failure is caught here: one response, or a closed socket.
 */
async function handOff(
  tus: Server,
  request: FastifyRequest,
  reply: FastifyReply,
  decorate: ResponseDecorator | undefined,
  isClosing: () => boolean,
): Promise<void> {
  const res = reply.raw
  // Headers that the user's hooks set with reply.header() would be lost by hijack().
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) res.setHeader(name, value)
  }
  try {
    // With the built-in store the body stays a Node stream for the direct write path.
    const webRequest = decorate
      ? new DirectBodyRequest({ req: request.raw, res })
      : new NodeRequest({ req: request.raw, res })
    const response = await tus.handleWeb(webRequest)
    await decorate?.(webRequest, response)
    if (isClosing()) response.headers.set('Connection', 'close')
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

/**
 * `Upload-Expires` for POST, PATCH and HEAD answers about an unfinished upload: the stock
 * handlers count from creation, the built-in store from the last activity.
 */
function uploadExpiresHeader(tus: Server, store: ExpiringFileStore): ResponseDecorator {
  // POST learns its id from the naming function; remember it per request.
  const created = new WeakMap<Request, string>()
  tus.on(EVENTS.POST_CREATE, (req, upload) => {
    created.set(req as unknown as Request, upload.id)
  })
  return async (request, response) => {
    if (response.status < 200 || response.status > 299) return
    let id: string | undefined
    if (request.method === 'POST') id = created.get(request)
    else if (request.method === 'PATCH' || request.method === 'HEAD') {
      id = tus.handlers.HEAD.getFileIdFromRequest(request as never)
    }
    if (id === undefined) return
    const expiry = await store.expiresAt(id)
    if (expiry) response.headers.set('Upload-Expires', expiry.toUTCString())
    else response.headers.delete('Upload-Expires')
  }
}
