/** The HTTP client of the benchmark clients: one request at a time on a keep-alive agent. */
import http from 'node:http'
import type { Readable } from 'node:stream'

export const TUS = { 'Tus-Resumable': '1.0.0' }

export interface Answer {
  status: number
  headers: http.IncomingHttpHeaders
  /** From sending the request to the end of the answer. */
  ms: number
}

/**
 * One request on `agent`, its body a buffer or a stream piped into it; resolves once the answer
 * has been read to its end.
 */
export function send(
  agent: http.Agent,
  method: string,
  url: string,
  headers: Record<string, string | number>,
  body?: Buffer | Readable,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const started = performance.now()
    const req = http.request(url, { method, headers, agent }, (res) => {
      res.resume()
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          ms: performance.now() - started,
        }),
      )
    })
    req.on('error', reject)
    if (body === undefined || Buffer.isBuffer(body)) req.end(body)
    else body.pipe(req)
  })
}

/** `send` on one agent: what each client calls. */
export function sender(agent: http.Agent) {
  return (
    method: string,
    url: string,
    headers: Record<string, string | number>,
    body?: Buffer | Readable,
  ) => send(agent, method, url, headers, body)
}

/**
 * A PATCH of `chunk` at `offset` with `send`; resolves to its answer once checked (a 204 at the
 * new offset), rejects otherwise.
 */
export async function patchAt(
  send: ReturnType<typeof sender>,
  url: string,
  offset: number,
  chunk: Buffer,
): Promise<Answer> {
  const res = await send(
    'PATCH',
    url,
    {
      ...TUS,
      'Upload-Offset': offset,
      'Content-Type': 'application/offset+octet-stream',
      'Content-Length': chunk.length,
    },
    chunk,
  )
  if (res.status !== 204 || Number(res.headers['upload-offset']) !== offset + chunk.length) {
    throw new Error(
      `PATCH at ${offset} answered ${res.status} offset ${res.headers['upload-offset']}`,
    )
  }
  return res
}
