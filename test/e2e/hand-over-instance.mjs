// One server process for test/e2e/hand-over-crash.test.ts, on the built package: its
// onUploadFinish writes `<HOOK_DIR>/started-<id>`, then hangs (HOOK=hang: the test kills the
// process with SIGKILL while it runs) or writes `<HOOK_DIR>/delivered-<id>` (HOOK=deliver).
// With REDIS_URL, one instance of a fleet (REDIS_PREFIX), with short periods.
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import fastifyTus from '../../dist/src/index.js'

const { DIRECTORY, HOOK, HOOK_DIR, REDIS_URL, REDIS_PREFIX } = process.env
const fleet = REDIS_URL
  ? {
      redis: { client: new Redis(REDIS_URL), prefix: REDIS_PREFIX, lockTtlMs: 500 },
      cleanupIntervalMs: 200,
    }
  : {}
const app = Fastify({ logger: true })
await app.register(fastifyTus, {
  ...fleet,
  directory: DIRECTORY,
  tus: {
    async onUploadFinish(req, upload) {
      await writeFile(
        path.join(HOOK_DIR, `started-${upload.id}`),
        req.headers.get('x-fastify-tus-retry') ?? '',
      )
      if (HOOK === 'hang') await new Promise(() => {})
      await writeFile(path.join(HOOK_DIR, `delivered-${upload.id}`), String(process.pid))
      return {}
    },
  },
})
await app.listen({ host: '127.0.0.1', port: 0 })
