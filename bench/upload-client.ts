/**
 * One upload of <sizeMiB> in PATCHes of <chunkMiB> from a process of its own:
 * `node upload-client.js <origin> <sizeMiB> <chunkMiB>`. Prints the throughput in MiB/s, timed
 * from the first PATCH to the last answer, and the server's CPU time per GiB over the same span.
 */
import { randomFillSync } from 'node:crypto'
import http from 'node:http'
import { patchAt, sender, TUS } from './http.js'

const [origin, sizeArg, chunkArg] = process.argv.slice(2) as [string, string, string]
const MiB = 1024 * 1024
const size = Number(sizeArg) * MiB
const chunk = randomFillSync(Buffer.alloc(Number(chunkArg) * MiB))
const agent = new http.Agent({ keepAlive: true })
const send = sender(agent)

const created = await send('POST', `${origin}/files`, { ...TUS, 'Upload-Length': size })
if (created.status !== 201) throw new Error(`POST answered ${created.status}`)
const url = new URL(created.headers.location as string, origin).href

/** The server process's CPU time so far, in seconds (its `GET /__cpu`): user, and user + system. */
async function serverCpu(): Promise<{ user: number; total: number }> {
  const res = await fetch(`${origin}/__cpu`)
  const { user, system } = (await res.json()) as { user: number; system: number }
  return { user: user / 1e6, total: (user + system) / 1e6 }
}

const cpuBefore = await serverCpu()
const started = performance.now()
for (let offset = 0; offset < size; offset += chunk.length) {
  await patchAt(send, url, offset, chunk)
}
const seconds = (performance.now() - started) / 1000
const cpuAfter = await serverCpu()
const gib = size / 1024 ** 3
const cpuSecondsPerGiB = (cpuAfter.total - cpuBefore.total) / gib
const userCpuSecondsPerGiB = (cpuAfter.user - cpuBefore.user) / gib
process.stdout.write(
  `${JSON.stringify({ mibPerSecond: size / MiB / seconds, seconds, cpuSecondsPerGiB, userCpuSecondsPerGiB, url })}\n`,
)
agent.destroy()
