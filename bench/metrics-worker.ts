/**
 * The cost of counting, per request: `node metrics-worker.js <plugin|plugin-metrics> <dir> <n>`
 * answers `n` HEAD requests with `inject` (no sockets, no disk writes: what is left is the
 * plugin's own work per request) and prints the process's CPU time per request, in µs.
 */
import Fastify from 'fastify'
import fastifyTus from '../src/index.js'

const [variant, directory, countArg] = process.argv.slice(2) as [string, string, string]
const count = Number(countArg)
const app = Fastify()
await app.register(fastifyTus, {
  directory,
  cleanupOnStart: false,
  metrics: variant === 'plugin-metrics',
})
await app.ready()
const TUS = { 'tus-resumable': '1.0.0' }
const created = await app.inject({
  method: 'POST',
  url: '/files',
  headers: { ...TUS, 'upload-length': '10' },
})
const url = new URL(created.headers.location as string, 'http://localhost').pathname
// Warm-up: the first requests compile and fill caches.
for (let i = 0; i < 2000; i++) await app.inject({ method: 'HEAD', url, headers: TUS })
const before = process.cpuUsage()
for (let i = 0; i < count; i++) {
  const res = await app.inject({ method: 'HEAD', url, headers: TUS })
  if (res.statusCode !== 200) throw new Error(`HEAD answered ${res.statusCode}`)
}
const used = process.cpuUsage(before)
await app.close()
process.stdout.write(
  `${JSON.stringify({ cpuMicrosPerRequest: (used.user + used.system) / count })}\n`,
)
