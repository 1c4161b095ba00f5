// One server process for test/e2e/hand-over-crash.test.ts, on the built package: its
// onUploadFinish writes `<HOOK_DIR>/started-<id>`, then hangs (HOOK=hang: the test kills the
// process with SIGKILL while it runs) or writes `<HOOK_DIR>/delivered-<id>` (HOOK=deliver).
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import Fastify from 'fastify'
import fastifyTus from '../../dist/src/index.js'

const { DIRECTORY, HOOK, HOOK_DIR } = process.env
const app = Fastify({ logger: true })
await app.register(fastifyTus, {
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
