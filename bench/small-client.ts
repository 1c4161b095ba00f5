/**
 * Small requests against one upload server, from a process of its own, with autocannon (the
 * Fastify organisation's load tool): `node small-client.js <origin> <POST|HEAD> <seconds>`.
 * POST creates 1-byte uploads (the creation's own cost); HEAD asks for the offsets of 256
 * uploads in turn. 16 keep-alive connections, after a 1 s warm-up. Prints requests per second, the
 * latency p99 in ms, the server's CPU time per request (its `GET /__cpu`), and what its garbage
 * collector did per request (`GET /__gc/start`, `/__gc/stop`).
 */
import autocannon from 'autocannon'

const [origin, method, secondsArg] = process.argv.slice(2) as [string, 'POST' | 'HEAD', string]
const TUS = { 'Tus-Resumable': '1.0.0' }

const url = `${origin}/files`
let headers: Record<string, string> = { ...TUS, 'Upload-Length': '1' }
/** HEADs go round 256 uploads: tus locks an upload for a HEAD, and 16 at once on one would queue. */
const paths: string[] = []
if (method === 'HEAD') {
  for (let i = 0; i < 256; i++) {
    const created = await fetch(url, { method: 'POST', headers })
    if (created.status !== 201) throw new Error(`POST answered ${created.status}`)
    paths.push(new URL(created.headers.get('location') as string, origin).pathname)
  }
  headers = { ...TUS }
}
let next = 0

async function run(duration: number) {
  const result = await autocannon({
    url,
    method,
    headers,
    connections: 16,
    duration,
    ...(paths.length > 0 && {
      requests: [{ setupRequest: (req) => ({ ...req, path: paths[next++ % paths.length] }) }],
    }),
  })
  if (result.non2xx > 0 || result.errors > 0) {
    throw new Error(`${method}: ${result.non2xx} answers not 2xx, ${result.errors} errors`)
  }
  return result
}

async function serverCpuSeconds(): Promise<number> {
  const { user, system } = (await (await fetch(`${origin}/__cpu`)).json()) as {
    user: number
    system: number
  }
  return (user + system) / 1e6
}

interface GcSummary {
  scavenges: number
  scavengeMs: number
  promotedBytes: number
}

await run(1)
const before = await serverCpuSeconds()
await fetch(`${origin}/__gc/start`)
const result = await run(Number(secondsArg))
const gc = (await (await fetch(`${origin}/__gc/stop`)).json()) as GcSummary
const cpu = (await serverCpuSeconds()) - before
const requests = result.requests.total
process.stdout.write(
  `${JSON.stringify({
    requestsPerSecond: result.requests.average,
    p99Ms: result.latency.p99,
    cpuMicrosPerRequest: (cpu * 1e6) / requests,
    promotedBytesPerRequest: gc.promotedBytes / requests,
    scavengeMsPer1000: (gc.scavengeMs * 1000) / requests,
    scavengeMeanMs: gc.scavenges > 0 ? gc.scavengeMs / gc.scavenges : 0,
  })}\n`,
)
