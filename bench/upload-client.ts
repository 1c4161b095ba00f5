/**
 * One upload of <sizeMiB> in PATCHes of <chunkMiB> from a process of its own:
 * `node upload-client.js <origin> <sizeMiB> <chunkMiB> [tus|5|6]`, in tus 1.0 (the default) or
 * the IETF draft at interop version 5 or 6, with the headers tus-js-client sends for each
 * (http.ts). Prints the throughput in MiB/s, timed from the first PATCH to the last answer, the
 * server's CPU time per GiB over the same span, and over the whole upload (its creation too), and
 * the server's full collections per GiB over the PATCHes.
 */
import { randomFillSync } from 'node:crypto'
import http from 'node:http'
import { appendAt, creationHeaders, isProtocol, sender } from './http.js'

const [origin, sizeArg, chunkArg, protocolArg = 'tus'] = process.argv.slice(2) as [
  string,
  string,
  string,
  string | undefined,
]
if (!isProtocol(protocolArg)) throw new Error(`unknown protocol ${protocolArg}: tus, 5 or 6`)
const protocol = protocolArg
const MiB = 1024 * 1024
const size = Number(sizeArg) * MiB
const chunk = randomFillSync(Buffer.alloc(Number(chunkArg) * MiB))
const agent = new http.Agent({ keepAlive: true })
const send = sender(agent)

/** The server process's CPU time so far, in seconds (its `GET /__cpu`): user, and user + system. */
async function serverCpu(): Promise<{ user: number; total: number }> {
  const res = await fetch(`${origin}/__cpu`)
  const { user, system } = (await res.json()) as { user: number; system: number }
  return { user: user / 1e6, total: (user + system) / 1e6 }
}

const cpuAtStart = await serverCpu()
const created = await send('POST', `${origin}/files`, creationHeaders(protocol, size))
if (created.status !== 201) throw new Error(`POST answered ${created.status}`)
const url = new URL(created.headers.location as string, origin).href

/** The server's collector over the PATCHes (`/__gc/start`, `/__gc/stop`): its full collections. */
async function gc(step: 'start' | 'stop'): Promise<{ majors?: number }> {
  return (await (await fetch(`${origin}/__gc/${step}`)).json()) as { majors?: number }
}

await gc('start')
const cpuBefore = await serverCpu()
const started = performance.now()
for (let offset = 0; offset < size; offset += chunk.length) {
  const part = offset + chunk.length > size ? chunk.subarray(0, size - offset) : chunk
  await appendAt(send, protocol, url, offset, part, offset + part.length === size)
}
const seconds = (performance.now() - started) / 1000
const cpuAfter = await serverCpu()
const { majors = 0 } = await gc('stop')
const gib = size / 1024 ** 3
const cpuSecondsPerGiB = (cpuAfter.total - cpuBefore.total) / gib
const userCpuSecondsPerGiB = (cpuAfter.user - cpuBefore.user) / gib
const wholeCpuSecondsPerGiB = (cpuAfter.total - cpuAtStart.total) / gib
process.stdout.write(
  `${JSON.stringify({ mibPerSecond: size / MiB / seconds, seconds, cpuSecondsPerGiB, userCpuSecondsPerGiB, wholeCpuSecondsPerGiB, majorGcsPerGiB: majors / gib, url })}\n`,
)
agent.destroy()
