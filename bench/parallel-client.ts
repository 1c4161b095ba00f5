/**
 * One upload of <sizeMiB> over <parallel> connections, each throttled on the client side to
 * <rateMiB> MiB/s (as a long fat network would hold each TCP stream):
 * `node parallel-client.js <origin> <sizeMiB> <parallel> <rateMiB> <dir> <cp-first|cp-after>`. With 1 it is a single
 * upload in one PATCH; with more, the file is split as tus-js-client's `parallelUploads` splits it
 * (equal parts, the last takes the rest): that many partial uploads PATCHed side by side, then the
 * final upload. Prints the wall time, and for parallel uploads the time of the final POST (the
 * assembly; sent once the partials' bytes are flushed to the disk with `sync`, which is not
 * counted), the time `cp` takes for the same bytes in the store's directory `<dir>` (the
 * partials joined with `cat` before the final, or the final copied after it), the server's
 * longest event-loop delay during the assembly, and the final's URL.
 */
import { execFileSync } from 'node:child_process'
import { randomFillSync } from 'node:crypto'
import http from 'node:http'
import path from 'node:path'
import { Readable } from 'node:stream'
import { sender, TUS } from './http.js'

const [origin, sizeArg, parallelArg, rateArg, dir, order] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
  string,
  'cp-first' | 'cp-after',
]
const MiB = 1024 * 1024
const size = Number(sizeArg) * MiB
const parallel = Number(parallelArg)
const rate = Number(rateArg) * MiB
const data = randomFillSync(Buffer.alloc(size))
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 })
const send = sender(agent)
const SLICE = 64 * 1024

/** `body` at `rate` bytes per second at most, in 64 KiB slices. */
function throttled(body: Buffer): Readable {
  const started = performance.now()
  let sent = 0
  return new Readable({
    read() {
      const allowed = ((performance.now() - started) / 1000) * rate
      const wait = sent >= allowed ? ((sent + SLICE - allowed) / rate) * 1000 : 0
      setTimeout(() => {
        if (sent >= body.length) {
          this.push(null)
          return
        }
        const end = Math.min(sent + SLICE, body.length)
        this.push(body.subarray(sent, end))
        sent = end
      }, wait)
    },
  })
}

/** `cp` of one file, or `cat` of several into one (the same bytes as the final): its time in ms. */
function timedCopy(sources: string[], target: string): number {
  const started = performance.now()
  if (sources.length === 1) execFileSync('cp', [sources[0] as string, target])
  else execFileSync('sh', ['-c', 'cat "$@" > "$0"', target, ...sources])
  return performance.now() - started
}

async function upload(body: Buffer, concat?: string): Promise<string> {
  const created = await send('POST', `${origin}/files`, {
    ...TUS,
    'Upload-Length': body.length,
    ...(concat && { 'Upload-Concat': concat }),
  })
  if (created.status !== 201) throw new Error(`POST answered ${created.status}`)
  const url = new URL(created.headers.location as string, origin).href
  const res = await send(
    'PATCH',
    url,
    {
      ...TUS,
      'Upload-Offset': 0,
      'Content-Type': 'application/offset+octet-stream',
      'Content-Length': body.length,
    },
    body.length > 0 ? throttled(body) : undefined,
  )
  if (res.status !== 204) throw new Error(`PATCH answered ${res.status}`)
  return url
}

const started = performance.now()
let url: string
let assemblyMs = 0
let cpMs = 0
let uploadSeconds = 0
let loopMaxMs = 0
if (parallel === 1) {
  url = await upload(data)
} else {
  const part = Math.floor(size / parallel)
  const parts = Array.from({ length: parallel }, (_, i) =>
    data.subarray(i * part, i === parallel - 1 ? size : (i + 1) * part),
  )
  const urls = await Promise.all(parts.map((p) => upload(p, 'partial')))
  uploadSeconds = (performance.now() - started) / 1000
  // The bytes just received are flushed first, so that the assembly and the copy it is compared
  // with start from the same page-cache state (cached, clean); which of the two goes first
  // alternates from round to round (the first large write after a sync is sometimes the slower).
  const partialFiles = urls.map((u) => path.join(dir, path.basename(new URL(u).pathname)))
  execFileSync('sync')
  if (order === 'cp-first') {
    cpMs = timedCopy(partialFiles, path.join(dir, '.bench-copy'))
    execFileSync('sync')
  }
  // Resets the server's event-loop maximum: what is read after is the assembly's.
  await fetch(`${origin}/__loop`)
  const lastPartial = performance.now()
  const final = await send('POST', `${origin}/files`, {
    ...TUS,
    'Upload-Concat': `final;${urls.join(' ')}`,
  })
  if (final.status !== 201) throw new Error(`final POST answered ${final.status}`)
  assemblyMs = performance.now() - lastPartial
  loopMaxMs = ((await (await fetch(`${origin}/__loop`)).json()) as { maxMs: number }).maxMs
  url = new URL(final.headers.location as string, origin).href
  if (order === 'cp-after') {
    execFileSync('sync')
    cpMs = timedCopy(
      [path.join(dir, path.basename(new URL(url).pathname))],
      path.join(dir, '.bench-copy'),
    )
  }
}
// The sync is not the upload's: it is left out of the parallel upload's time.
const seconds =
  parallel === 1 ? (performance.now() - started) / 1000 : uploadSeconds + assemblyMs / 1000
process.stdout.write(
  `${JSON.stringify({ seconds, mibPerSecond: size / MiB / seconds, assemblyMs, cpMs, loopMaxMs, url })}\n`,
)
agent.destroy()
