/**
 * One upload server in a process of its own: `node upload-server.js <plugin|tus|raw> <dir>`.
 * - plugin: Fastify with fastify-tus (the README setup);
 * - plugin-metrics: the same with `metrics: true` (prom-client counting every answer and byte);
 * - tus: bare @tus/server with FileStore on node:http;
 * - raw: node:http piping each PATCH body into fs.createWriteStream, the ceiling for Node on this disk.
 * Every variant answers `GET /__cpu` with its `process.cpuUsage()`, `GET /__loop` with the
 * longest event-loop delay since the last such call, `GET /__gc/start` then `GET /__gc/stop`
 * with what V8's collector did in between, and `GET /__heap` with its heap and RSS (after a full
 * collection when run with `--expose-gc`). `BENCH_BALLAST_MB` gives it that much heap of live
 * objects, as an application's own. Prints `{"port": N}`. Profile one with
 * `node --cpu-prof upload-server.js ...` and end it with SIGTERM.
 */
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { pipeline } from 'node:stream/promises'
import v8 from 'node:v8'
import { FileStore } from '@tus/file-store'
import { Server } from '@tus/server'
import Fastify from 'fastify'
import fastifyTus from '../src/index.js'

const [variant, dir] = process.argv.slice(2) as [string, string]

/**
 * An application's own live objects, about `BENCH_BALLAST_MB` MB of heap (none by default): what
 * a full collection has to mark besides the server's.
 */
const ballast = Array.from(
  { length: Math.round(Number(process.env.BENCH_BALLAST_MB ?? 0) * 14_000) },
  (_, i) => ({ i, s: `x${i}` }),
)

/** The event loop's delays, for `GET /__loop`: the longest since the last call (which resets it). */
const loop = monitorEventLoopDelay({ resolution: 5 })
loop.enable()
function loopMaxMs(): { maxMs: number } {
  const maxMs = loop.max / 1e6
  loop.reset()
  return { maxMs }
}

/** What the collector did between `/__gc/start` and `/__gc/stop` (V8's GCProfiler). */
let gcProfiler: v8.GCProfiler | undefined
function gcSummary(): object {
  const statistics = gcProfiler?.stop()?.statistics ?? []
  gcProfiler = undefined
  const oldUsed = (heap: v8.GCProfilerResult['statistics'][number]['beforeGC']) =>
    heap.heapSpaceStatistics
      .filter(
        (space) => space.spaceName === 'old_space' || space.spaceName === 'large_object_space',
      )
      .reduce((sum, space) => sum + space.spaceUsedSize, 0)
  const scavenges = statistics.filter((gc) => gc.gcType === 'Scavenge')
  const majors = statistics.filter((gc) => gc.gcType === 'MarkSweepCompact')
  return {
    scavenges: scavenges.length,
    scavengeMs: scavenges.reduce((sum, gc) => sum + gc.cost, 0) / 1000,
    // What each scavenge moved to the old generation: objects that outlived two of them.
    promotedBytes: scavenges.reduce(
      (sum, gc) => sum + Math.max(0, oldUsed(gc.afterGC) - oldUsed(gc.beforeGC)),
      0,
    ),
    majors: majors.length,
    majorMs: majors.reduce((sum, gc) => sum + gc.cost, 0) / 1000,
  }
}

/** The answers to the benchmark's own routes; `undefined` for any other URL. */
function benchAnswer(url: string | undefined): object | undefined {
  switch (url) {
    case '/__cpu':
      return process.cpuUsage()
    case '/__loop':
      return loopMaxMs()
    case '/__gc/start':
      gcProfiler?.stop()
      gcProfiler = new v8.GCProfiler()
      gcProfiler.start()
      return {}
    case '/__gc/stop':
      return gcSummary()
    case '/__heap': {
      ;(globalThis as { gc?: () => void }).gc?.()
      const { heapUsed, rss } = process.memoryUsage()
      return { heapUsed, rss, ballastObjects: ballast.length }
    }
    default:
      return undefined
  }
}
const BENCH_URLS = ['/__cpu', '/__loop', '/__gc/start', '/__gc/stop', '/__heap']

/** Answers the benchmark's own routes on a node:http server; false for any other request. */
function cpuRoute(req: http.IncomingMessage, res: http.ServerResponse): boolean {
  const body = benchAnswer(req.url)
  if (body === undefined) return false
  res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(body))
  return true
}

async function listen(server: http.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  return typeof address === 'object' && address ? address.port : 0
}

function rawServer(): http.Server {
  return http.createServer((req, res) => {
    if (cpuRoute(req, res)) return
    if (req.method === 'POST') {
      const id = randomBytes(16).toString('hex')
      fs.writeFileSync(path.join(dir, id), '')
      res.writeHead(201, { Location: `/files/${id}`, 'Tus-Resumable': '1.0.0' }).end()
      return
    }
    const id = path.basename(req.url ?? '')
    const offset = Number(req.headers['upload-offset'])
    const target = fs.createWriteStream(path.join(dir, id), { flags: 'r+', start: offset })
    pipeline(req, target).then(
      () => res.writeHead(204, { 'Upload-Offset': String(offset + target.bytesWritten) }).end(),
      () => res.writeHead(500).end(),
    )
  })
}

let port: number
if (variant === 'plugin' || variant === 'plugin-metrics') {
  const app = Fastify()
  await app.register(fastifyTus, { directory: dir, metrics: variant === 'plugin-metrics' })
  for (const url of BENCH_URLS) app.get(url, async () => benchAnswer(url))
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  port = typeof address === 'object' && address ? address.port : 0
} else if (variant === 'tus') {
  const tus = new Server({ path: '/files', datastore: new FileStore({ directory: dir }) })
  port = await listen(
    http.createServer((req, res) => {
      if (cpuRoute(req, res)) return
      // Bare tus answers HEAD without Content-Length: a keep-alive client (autocannon) then
      // waits for a body that never comes. The plugin sends `Content-Length: 0`; so does this.
      if (req.method === 'HEAD') res.setHeader('Content-Length', '0')
      void tus.handle(req, res)
    }),
  )
} else if (variant === 'raw') {
  port = await listen(rawServer())
} else {
  throw new Error(`unknown variant ${variant}`)
}
// A SIGTERM ends the process normally, so that one run with `--cpu-prof` writes its profile.
process.once('SIGTERM', () => process.exit(0))
process.stdout.write(`${JSON.stringify({ port })}\n`)
