/**
 * One object per request that the routes hand to tus, carrying what the plugin's steps learn
 * about it on the way: the Fastify request behind it, the concatenation its `Upload-Concat`
 * asked for, the upload tus created for it, what the direct write path wrote. Created where the
 * route hands the request to tus (routes.ts), and reachable from both requests tus passes
 * around: the web `Request` of its hooks and events, and the Node request (the direct write
 * path, the POST_RECEIVE event of the built-in store).
 *
 * Held by one property on each of the two requests, not by a WeakMap keyed by them: a context
 * leads back to its key (the Fastify request holds the Node one), and such a WeakMap entry keeps
 * its request alive past its answer (CONTRIBUTING.md, "Garbage on the request path"). A property
 * goes with its request.
 */
import type { IncomingMessage } from 'node:http'
import type { Upload } from '@tus/utils'
import type { FastifyRequest } from 'fastify'
import type { ConcatRequest, Written } from '../backends/backend.js'

const CONTEXT = Symbol('fastify-tus.requestContext')

type Carrier = { [CONTEXT]?: RequestContext }

export class RequestContext {
  /** The Fastify request: what the app's auth put on it (`request.user`) is reachable here. */
  readonly request: FastifyRequest
  /** What the creation's `Upload-Concat` asked for, as read before the hand-off. */
  concat: ConcatRequest | undefined = undefined
  /** The upload tus created for this POST (its POST_CREATE event), also when it then refused. */
  created: Upload | undefined = undefined
  /** What the direct write path wrote the body to, once the write ended without an error. */
  written: Written | undefined = undefined

  constructor(request: FastifyRequest) {
    this.request = request
  }
}

/** The context of `request`, reachable from `web` (the request handed to tus) and the Node one. */
export function openRequestContext(web: Request, request: FastifyRequest): RequestContext {
  const context = new RequestContext(request)
  ;(web as Carrier)[CONTEXT] = context
  ;(request.raw as Carrier)[CONTEXT] = context
  return context
}

/**
 * The context of a request tus passed to a hook or an event (the web `Request`, or the Node
 * request); `undefined` for one that did not come through the plugin's routes.
 */
export function contextOf(req: Request | IncomingMessage | unknown): RequestContext | undefined {
  return typeof req === 'object' && req !== null ? (req as Carrier)[CONTEXT] : undefined
}
