/**
 * A steady load of small tus requests (OPTIONS, POST + 1 KiB PATCH) from its own process, four
 * at a time: after a 1 s warm-up, first while the server is idle, then while it sweeps.
 * `node latency-client.js <origin> <idleMs>`; prints latency percentiles of both phases.
 */
import http from 'node:http'
import { sender, TUS } from './http.js'
import { percentile } from './measure.js'

const [origin, idleArg] = process.argv.slice(2) as [string, string]
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 })
const body = Buffer.alloc(1024, 3)
const send = sender(agent)

let phase: 'warmup' | 'idle' | 'sweep' | 'stop' = 'warmup'
const samples = { warmup: [] as number[], idle: [] as number[], sweep: [] as number[] }
let failures = 0

async function worker(n: number) {
  for (let i = n; phase !== 'stop'; i++) {
    const current = phase
    const record = (ms: number, ok: boolean) => {
      samples[current].push(ms)
      if (!ok) failures++
    }
    if (i % 2 === 0) {
      const r = await send('OPTIONS', `${origin}/files`, {})
      record(r.ms, r.status === 204)
    } else {
      const created = await send('POST', `${origin}/files`, {
        ...TUS,
        'Upload-Length': body.length,
      })
      record(created.ms, created.status === 201)
      const url = new URL(created.headers.location as string, origin).href
      const patched = await send(
        'PATCH',
        url,
        {
          ...TUS,
          'Upload-Offset': 0,
          'Content-Type': 'application/offset+octet-stream',
          'Content-Length': body.length,
        },
        body,
      )
      record(patched.ms, patched.status === 204)
    }
  }
}

const workers = [0, 1, 2, 3].map(worker)
// Not measured: JIT warm-up of client and server.
await new Promise((r) => setTimeout(r, 1000))
phase = 'idle'
await new Promise((r) => setTimeout(r, Number(idleArg)))
phase = 'sweep'
const sweepStarted = performance.now()
await send('POST', `${origin}/__bench/sweep`, {})
let report: unknown
for (;;) {
  await new Promise((r) => setTimeout(r, 50))
  const status = await new Promise<{ done: boolean; report: unknown }>((resolve, reject) => {
    http
      .get(`${origin}/__bench/sweep`, { agent }, (res) => {
        let text = ''
        res.on('data', (c) => {
          text += c
        })
        res.on('end', () => resolve(JSON.parse(text)))
      })
      .on('error', reject)
  })
  if (status.done) {
    report = status.report
    break
  }
}
const sweepMs = performance.now() - sweepStarted
phase = 'stop'
await Promise.all(workers)
const stats = (xs: number[]) => ({
  n: xs.length,
  p50: percentile(xs, 50),
  p99: percentile(xs, 99),
  max: Math.max(...xs),
})
process.stdout.write(
  `${JSON.stringify({ idle: stats(samples.idle), sweep: stats(samples.sweep), sweepMs, failures, report })}\n`,
)
agent.destroy()
