/**
 * The README's auth example as test code: the app's `onRequest` hook takes a bearer token (and
 * lets preflights through), and the tus hooks keep each upload to the user who created it.
 */
import type { Server } from '@tus/server'
import type { FastifyInstance } from 'fastify'
import { fastifyRequestOf, type TusServerOptions } from '../src/index.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the app's auth hook. */
    user?: { id: string }
  }
}

/** `Authorization` values and the user each stands for. */
export const TOKENS: Record<string, string> = {
  'Bearer alice': 'alice',
  'Bearer bob': 'bob',
  'Bearer good': 'good',
}

export const bearer = (user: string) => ({ Authorization: `Bearer ${user}` })

/** The app's auth: a user for every request but preflights (which carry no token), or 401. */
export function bearerAuth(app: FastifyInstance): void {
  app.addHook('onRequest', async (request, reply) => {
    if (request.method === 'OPTIONS') return
    const id = TOKENS[request.headers.authorization ?? '']
    if (id === undefined) return reply.code(401).send({ error: 'Unauthorized' })
    request.user = { id }
  })
}

/**
 * tus hooks that record the creator as the upload's `owner` metadata (whatever `owner` the client
 * sent) and refuse HEAD, PATCH, GET and DELETE by anyone else with 403. `app`: the app, once
 * it exists (the hooks run after `register`); `namespace`: the registration's, if it has one.
 */
export function ownerCheck(app: () => FastifyInstance, namespace?: string): TusServerOptions {
  // An app types `app.tus.<namespace>` by declaring its namespaces, for its whole program; this
  // program (every test file) has apps with and without, so the entry is read by name.
  const tus = (): Server =>
    namespace === undefined
      ? app().tus
      : ((app().tus as unknown as Record<string, Server>)[namespace] as Server)
  return {
    onUploadCreate: async (req, upload) => {
      const user = fastifyRequestOf(req)?.user
      if (!user) throw { status_code: 401, body: 'Unauthorized\n' }
      return { metadata: { ...upload.metadata, owner: user.id } }
    },
    onIncomingRequest: async (req, id) => {
      if (req.method === 'POST') return // the upload is being created: onUploadCreate's turn
      const upload = await tus().datastore.getUpload(id)
      if (upload.metadata?.owner !== fastifyRequestOf(req)?.user?.id) {
        throw { status_code: 403, body: 'Forbidden: not your upload\n' }
      }
    },
  }
}
