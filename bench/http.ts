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

/**
 * The protocol an upload client speaks: tus 1.0, or the IETF resumable uploads draft at interop
 * version 5 (tus-js-client's `protocol: 'ietf-draft-03'`), 6 (`'ietf-draft-05'`) or 8 (drafts
 * -09 to -11, which no client sends yet: the requests -11 describes).
 */
export type Protocol = 'tus' | '5' | '6' | '8'

export function isProtocol(value: string | undefined): value is Protocol {
  return value === 'tus' || value === '5' || value === '6' || value === '8'
}

/**
 * The headers tus-js-client 4.3 sends (lib/upload.js `openRequest`, `_createUpload`) to create an
 * upload of `size` bytes without content: tus' `Tus-Resumable` and `Upload-Length`; the draft's
 * `Upload-Draft-Interop-Version`, the same `Upload-Length` and `Upload-Complete: ?0`.
 */
export function creationHeaders(protocol: Protocol, size: number): Record<string, string | number> {
  if (protocol === 'tus') return { ...TUS, 'Upload-Length': size }
  return {
    'Upload-Draft-Interop-Version': protocol,
    'Upload-Length': size,
    'Upload-Complete': '?0',
  }
}

/**
 * A PATCH of `chunk` at `offset` with `send` as tus-js-client 4.3 sends it per protocol
 * (`_performUpload`, `_addChunkToRequest`): `Upload-Offset` with tus' `Content-Type`, or with the
 * draft's `Upload-Complete` (`?1` on the last) and, from interop 6 on, `Content-Type:
 * application/partial-upload` (interop 5 sends none). Resolves to its answer once checked: tus'
 * 204, the draft's 201 (interop 8: 204), at the new offset; rejects otherwise.
 */
export async function appendAt(
  send: ReturnType<typeof sender>,
  protocol: Protocol,
  url: string,
  offset: number,
  chunk: Buffer,
  last: boolean,
): Promise<Answer> {
  if (protocol === 'tus') return patchAt(send, url, offset, chunk)
  const headers: Record<string, string | number> = {
    'Upload-Draft-Interop-Version': protocol,
    'Upload-Offset': offset,
    'Upload-Complete': last ? '?1' : '?0',
    'Content-Length': chunk.length,
  }
  if (protocol !== '5') headers['Content-Type'] = 'application/partial-upload'
  const res = await send('PATCH', url, headers, chunk)
  if (
    res.status !== (protocol === '8' ? 204 : 201) ||
    Number(res.headers['upload-offset']) !== offset + chunk.length ||
    res.headers['upload-complete'] !== (last ? '?1' : '?0')
  ) {
    throw new Error(
      `draft ${protocol} PATCH at ${offset} answered ${res.status} offset ${res.headers['upload-offset']} complete ${res.headers['upload-complete']}`,
    )
  }
  return res
}
