/**
 * The way back from what tus hands to the user's hooks to the Fastify request behind it. tus
 * gives its hooks (`onIncomingRequest`, `onUploadCreate`, `onUploadFinish`, `onResponseError`,
 * `namingFunction`, `generateUrl`, `getFileIdFromRequest`, `maxSize`) and its events the web
 * `Request` the plugin passed to `handleWeb`, the same object for one HTTP request; what the
 * app's auth put on the Fastify request (`request.user`) is only reachable from here.
 */
import type { IncomingMessage } from 'node:http'
import type { FastifyRequest } from 'fastify'
import { contextOf } from './request-context.js'

/**
 * The `FastifyRequest` behind a request that tus passed to a hook or an event: the web `Request`
 * of every hook and event, or the Node request of `POST_RECEIVE` with the built-in store.
 * `undefined` for a request that did not come through the plugin's routes (one you built and
 * passed to `fastify.tus.handleWeb` yourself, say). Typed with your app's augmentation of
 * `FastifyRequest`, so `fastifyRequestOf(req)?.user` is what your auth set.
 */
export function fastifyRequestOf(req: Request | IncomingMessage): FastifyRequest | undefined {
  return contextOf(req)?.request
}
