/**
 * The lock-wait load: `node lockwait-client.js <origin> <one|many> <connections> <seconds>`.
 * Creates one upload (`one`) or one per connection (`many`), then opens `connections` sockets
 * that each send a PATCH's headers (a 1000-byte body announced) and never the body, so that each
 * request waits: for the one upload's lock (`one`), or for its body (`many`). Reads the server's
 * heap (`/__heap`, after a full collection) before, a third of the way in and at the end, counts
 * the answers that came meanwhile, then closes the sockets. Prints one JSON line.
 */
import http from 'node:http'
import net from 'node:net'

const [origin, mode, connectionsText, secondsText] = process.argv.slice(2) as [
  string,
  'one' | 'many',
  string,
  string,
]
const connections = Number(connectionsText)
const seconds = Number(secondsText)
const target = new URL(origin)

function get(path: string): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    http
      .get(`${origin}${path}`, { agent: false }, (res) => {
        let body = ''
        res.on('data', (chunk) => {
          body += chunk
        })
        res.on('end', () => resolve(JSON.parse(body)))
      })
      .on('error', reject)
  })
}

function create(): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${origin}/files`, {
      method: 'POST',
      agent: false,
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': '1000' },
    })
    req.on('response', (res) => {
      res.resume()
      resolve(new URL(String(res.headers.location), origin).pathname)
    })
    req.on('error', reject)
    req.end()
  })
}

const paths: string[] = []
for (let i = 0; i < (mode === 'one' ? 1 : connections); i++) paths.push(await create())
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const before = await get('/__heap')
const statuses: Record<string, number> = {}
const sockets: net.Socket[] = []
for (let i = 0; i < connections; i++) {
  const socket = net.connect(Number(target.port), target.hostname)
  socket.on('error', () => {})
  socket.setEncoding('latin1')
  socket.once('data', (chunk: string) => {
    const status = chunk.slice(9, 12)
    statuses[status] = (statuses[status] ?? 0) + 1
  })
  socket.write(
    `PATCH ${paths[i % paths.length]} HTTP/1.1\r\nHost: ${target.host}\r\nTus-Resumable: 1.0.0\r\n` +
      'Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: 1000\r\n\r\n',
  )
  sockets.push(socket)
  // A few at a time: the server's accept queue is not what is measured.
  if (i % 100 === 99) await sleep(10)
}
await sleep((seconds * 1000) / 3)
const third = await get('/__heap')
await sleep((seconds * 2000) / 3)
const end = await get('/__heap')
for (const socket of sockets) socket.destroy()
console.log(JSON.stringify({ before, third, end, statuses }))
