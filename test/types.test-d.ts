/**
 * Type tests, checked by `tsc` in `npm test` (never run): the public types of the package as a
 * user's TypeScript sees them.
 */
import type { Server } from '@tus/server'
import Fastify, { type FastifyRequest } from 'fastify'
import { Redis } from 'ioredis'
import { Redis as Redis5 } from 'ioredis5'
import { expectTypeOf } from 'vitest'
import fastifyTus, {
  AlreadyRegisteredError,
  DirectoryInUseError,
  type FastifyTusNamespace,
  type FastifyTusOptions,
  fastifyRequestOf,
  fastifyTus as named,
  type SweepReport,
  type TusCleanupDecorator,
} from '../src/index.js'
// The app's augmentation of FastifyRequest (`user`), as an app that authenticates has one.
import type {} from './auth-app.js'

const app = Fastify()
app.register(fastifyTus, { directory: './uploads', expireAfterMs: 60_000, prefix: '/api' })
app.register(named, { path: '/uploads', tus: { maxSize: 1024, relativeLocation: true } })

// Decorators, by declaration merging.
expectTypeOf(app.tus).toExtend<Server>()
expectTypeOf(app.tus.handle).toEqualTypeOf<Server['handle']>()
expectTypeOf(app.tusCleanup).toExtend<TusCleanupDecorator>()
expectTypeOf(app.tusCleanup.run()).resolves.toEqualTypeOf<SweepReport>()
expectTypeOf(app.tusCleanup.run({ dryRun: true })).resolves.toHaveProperty('ids')
expectTypeOf(app.tusCleanup.last).toEqualTypeOf<SweepReport | undefined>()
expectTypeOf(app.tusCleanup.release).parameter(0).toEqualTypeOf<string>()
expectTypeOf(app.tusCleanup.release('id')).resolves.toEqualTypeOf<number>()
expectTypeOf<SweepReport['removed']>().toBeNumber()
expectTypeOf<SweepReport['bytesFreed']>().toBeNumber()

// Options are typed.
expectTypeOf<FastifyTusOptions['expireAfterMs']>().toEqualTypeOf<number | undefined>()
expectTypeOf<FastifyTusOptions['maxStoreBytes']>().toEqualTypeOf<number | undefined>()
expectTypeOf<SweepReport['storeBytes']>().toEqualTypeOf<number | undefined>()
// @ts-expect-error a string is not a number of milliseconds
app.register(fastifyTus, { expireAfterMs: '10m' })
// @ts-expect-error the sweep needs a locker object, not a per-request function
app.register(fastifyTus, { tus: { locker: () => ({ newLock: () => undefined }) } })
// @ts-expect-error path comes from the plugin's own option
app.register(fastifyTus, { tus: { path: '/x' } })

// Several instances: an ioredis client is what `redis.client` takes.
app.register(fastifyTus, { redis: { client: new Redis(), prefix: 'uploads:', lockTtlMs: 5000 } })
// ioredis 5 (what @fastify/redis 8 and BullMQ use) as well.
app.register(fastifyTus, { redis: { client: new Redis5() } })
// @ts-expect-error a URL is not a client
app.register(fastifyTus, { redis: { client: 'redis://127.0.0.1:6379' } })
// @ts-expect-error the client is required
app.register(fastifyTus, { redis: { prefix: 'uploads:' } })

// Several endpoints: without namespaces declared (this program declares none; an app that has
// some declares them: test/namespaced-app/), the decorators are the Server and its cleanup, and
// nothing else.
expectTypeOf(app.tus).toEqualTypeOf<Server>()
expectTypeOf(app.tusCleanup).toEqualTypeOf<TusCleanupDecorator>()
expectTypeOf<FastifyTusNamespace>().toBeNever()
expectTypeOf(app.tus).not.toHaveProperty('videos')
// @ts-expect-error no namespace is declared: `videos` is not a property of the Server
app.tus.videos
// @ts-expect-error nor of the cleanup decorator
app.tusCleanup.videos
expectTypeOf<FastifyTusOptions['namespace']>().toEqualTypeOf<string | undefined>()
app.register(fastifyTus, { namespace: 'videos', path: '/videos', directory: './videos' })
// @ts-expect-error a namespace is a name
app.register(fastifyTus, { namespace: 5 })
expectTypeOf(new AlreadyRegisteredError('x').code).toEqualTypeOf<'FST_TUS_ALREADY_REGISTERED'>()
expectTypeOf(new DirectoryInUseError('x').code).toEqualTypeOf<'FST_TUS_DIRECTORY_IN_USE'>()

// A tus hook reaches the Fastify request behind its web Request, with the app's augmentation.
app.register(fastifyTus, {
  tus: {
    onUploadCreate: async (req, upload) => {
      expectTypeOf(fastifyRequestOf(req)).toEqualTypeOf<FastifyRequest | undefined>()
      expectTypeOf(fastifyRequestOf(req)?.user?.id).toEqualTypeOf<string | undefined>()
      return { metadata: { ...upload.metadata, owner: fastifyRequestOf(req)?.user?.id ?? null } }
    },
  },
})
// @ts-expect-error a string is not a request
fastifyRequestOf('/files/1')
