/**
 * Type tests, checked by `tsc` in `npm test` (never run): the public types of the package as a
 * user's TypeScript sees them.
 */
import type { Server } from '@tus/server'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import { Redis as Redis5 } from 'ioredis5'
import { expectTypeOf } from 'vitest'
import fastifyTus, {
  type FastifyTusOptions,
  fastifyTus as named,
  type SweepReport,
  type TusCleanupDecorator,
} from '../src/index.js'

const app = Fastify()
app.register(fastifyTus, { directory: './uploads', expireAfterMs: 60_000, prefix: '/api' })
app.register(named, { path: '/uploads', tus: { maxSize: 1024, relativeLocation: true } })

// Decorators, by declaration merging.
expectTypeOf(app.tus).toEqualTypeOf<Server>()
expectTypeOf(app.tusCleanup).toEqualTypeOf<TusCleanupDecorator>()
expectTypeOf(app.tusCleanup.run()).resolves.toEqualTypeOf<SweepReport>()
expectTypeOf(app.tusCleanup.run({ dryRun: true })).resolves.toHaveProperty('ids')
expectTypeOf(app.tusCleanup.last).toEqualTypeOf<SweepReport | undefined>()
expectTypeOf<SweepReport['removed']>().toBeNumber()
expectTypeOf<SweepReport['bytesFreed']>().toBeNumber()

// Options are typed.
expectTypeOf<FastifyTusOptions['expireAfterMs']>().toEqualTypeOf<number | undefined>()
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
