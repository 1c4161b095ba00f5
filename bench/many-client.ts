/**
 * Many uploads at once from a process of its own:
 * `node many-client.js <origin> <uploads> <sizeMiB> <chunkMiB>`. Every upload is a POST
 * (`Upload-Length`), then its PATCHes of <chunkMiB> one after the other, each with its
 * `Upload-Offset`; all <uploads> run side by side on a keep-alive agent with a socket for each.
 * The same requests go to every server, the raw pipe included (it creates an empty file on POST
 * and writes each PATCH body at its `Upload-Offset`). Prints the aggregate throughput (every
 * upload's bytes over the time from the first POST to the last answer), the server's CPU time per
 * GiB over the same span, and the latency of every request (POSTs and PATCHes: p50, p99, max).
 */
import { randomFillSync } from 'node:crypto'
import http from 'node:http'
import { patchAt, sender, TUS } from './http.js'
import { percentile } from './measure.js'

const [origin, uploadsArg, sizeArg, chunkArg] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
]
const MiB = 1024 * 1024
const uploads = Number(uploadsArg)
const size = Number(sizeArg) * MiB
const chunkSize = Number(chunkArg) * MiB
// One buffer for all: what matters to the server is how many bytes come, not which.
const data = randomFillSync(Buffer.alloc(size))
const agent = new http.Agent({ keepAlive: true, maxSockets: uploads })
const send = sender(agent)
const latencies: number[] = []
const patchLatencies: number[] = []

/** The server process's CPU time so far, in seconds (its `GET /__cpu`): user, and user + system. */
async function serverCpu(): Promise<{ user: number; total: number }> {
  const res = await fetch(`${origin}/__cpu`)
  const { user, system } = (await res.json()) as { user: number; system: number }
  return { user: user / 1e6, total: (user + system) / 1e6 }
}

async function upload(): Promise<void> {
  const created = await send('POST', `${origin}/files`, { ...TUS, 'Upload-Length': size })
  latencies.push(created.ms)
  if (created.status !== 201) throw new Error(`POST answered ${created.status}`)
  const url = new URL(created.headers.location as string, origin).href
  for (let offset = 0; offset < size; offset += chunkSize) {
    const chunk = data.subarray(offset, Math.min(offset + chunkSize, size))
    const res = await patchAt(send, url, offset, chunk)
    latencies.push(res.ms)
    patchLatencies.push(res.ms)
  }
}

const cpuBefore = await serverCpu()
const started = performance.now()
await Promise.all(Array.from({ length: uploads }, () => upload()))
const seconds = (performance.now() - started) / 1000
const cpuAfter = await serverCpu()
const gib = (uploads * size) / 1024 ** 3
process.stdout.write(
  `${JSON.stringify({
    mibPerSecond: (uploads * size) / MiB / seconds,
    seconds,
    cpuSecondsPerGiB: (cpuAfter.total - cpuBefore.total) / gib,
    userCpuSecondsPerGiB: (cpuAfter.user - cpuBefore.user) / gib,
    requests: latencies.length,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: Math.max(...latencies),
    patchP99Ms: percentile(patchLatencies, 99),
  })}\n`,
)
agent.destroy()
