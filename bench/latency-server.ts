/**
 * The plugin on a directory of sessions, with two bench-only routes to start a sweep and ask
 * whether it ended: `node latency-server.js <dir> <periodMs>`. Prints `{"port": N}`.
 */
import Fastify from 'fastify'
import fastifyTus, { type SweepReport } from '../src/index.js'

const [dir, periodArg] = process.argv.slice(2)
const app = Fastify()
await app.register(fastifyTus, {
  directory: dir as string,
  expireAfterMs: Number(periodArg),
  cleanupOnStart: false,
})
let report: SweepReport | undefined
app.post('/__bench/sweep', async () => {
  report = undefined
  void app.tusCleanup.run().then((r) => {
    report = r
  })
  return { started: true }
})
app.get('/__bench/sweep', async () => ({ done: report !== undefined, report }))
// Warm the directory into the kernel's caches first (a dry run stats every entry), so that the
// idle phase is not measured on a cold directory and the sweep phase on a warm one.
await app.ready()
await app.tusCleanup.run({ dryRun: true })
await app.listen({ host: '127.0.0.1', port: 0 })
const address = app.server.address()
process.stdout.write(
  `${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`,
)
