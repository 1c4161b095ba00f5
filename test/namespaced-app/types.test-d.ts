/**
 * Type tests of an app that declares its namespaces, checked by `tsc` in `npm run typecheck`
 * (never run). A declaration of namespaces holds for the whole TypeScript program, so this app is
 * a program of its own (this folder's tsconfig.json; the main one leaves the folder out).
 */
import type { Server } from '@tus/server'
import Fastify from 'fastify'
import { expectTypeOf } from 'vitest'
import fastifyTus, {
  type FastifyTusNamespace,
  type FastifyTusNamespaced,
  fastifyRequestOf,
  type SweepReport,
  type TusCleanupDecorator,
} from '../../src/index.js'

declare module '../../src/index.js' {
  interface FastifyTusNamespaces {
    videos: true
    avatars: true
  }
}

const app = Fastify()
app.register(fastifyTus, { namespace: 'videos', path: '/videos', directory: './videos' })
app.register(fastifyTus, { namespace: 'avatars', path: '/avatars', directory: './avatars' })

// Each declared namespace is an entry, always present (no `| undefined`).
expectTypeOf<FastifyTusNamespace>().toEqualTypeOf<'videos' | 'avatars'>()
expectTypeOf(app.tus).toEqualTypeOf<FastifyTusNamespaced<Server>>()
expectTypeOf(app.tus.videos).toEqualTypeOf<Server>()
expectTypeOf(app.tus.avatars.datastore.getUpload).returns.resolves.toHaveProperty('metadata')
expectTypeOf(app.tusCleanup.videos).toEqualTypeOf<TusCleanupDecorator>()
expectTypeOf(app.tusCleanup.avatars.run()).resolves.toEqualTypeOf<SweepReport>()

// And nothing else: a typo, or the Server's members on the object of namespaces (undefined there).
expectTypeOf(app.tus).not.toHaveProperty('vidoes')
expectTypeOf(app.tus).not.toHaveProperty('datastore')
expectTypeOf(app.tusCleanup).not.toHaveProperty('run')
// @ts-expect-error a namespace not declared
app.tus.vidoes
// @ts-expect-error the Server is an entry, not the object of namespaces
app.tus.datastore.getUpload('id')
// @ts-expect-error the cleanup decorator too
app.tusCleanup.run()
// @ts-expect-error the entries are the registrations', not to be replaced
app.tus.videos = app.tus.avatars

// The README's owner check, on a namespace.
app.register(fastifyTus, {
  namespace: 'videos',
  tus: {
    onIncomingRequest: async (req, id) => {
      const { metadata } = await app.tus.videos.datastore.getUpload(id)
      expectTypeOf(metadata?.owner).toEqualTypeOf<string | null | undefined>()
      expectTypeOf(fastifyRequestOf(req)).not.toBeAny()
    },
  },
})
