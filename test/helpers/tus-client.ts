/**
 * The tus client side: the tus requests (creation, PATCH, HEAD) over raw HTTP, PATCH bodies that
 * trickle or stop halfway, and whole uploads with the real tus client (tus-js-client).
 */
import fs from 'node:fs/promises'
import http from 'node:http'
import * as tus from 'tus-js-client'
import { type RawResponse, request } from './http.js'
import { waitFor } from './wait.js'

export const TUS = { 'Tus-Resumable': '1.0.0' }

/** POST a new upload of `length` bytes (or deferred length); resolves to its URL and id. */
export async function createUpload(
  endpoint: string,
  length: number | 'deferred',
  extraHeaders: Record<string, string> = {},
) {
  const lengthHeader: Record<string, string> =
    length === 'deferred' ? { 'Upload-Defer-Length': '1' } : { 'Upload-Length': String(length) }
  const res = await request(endpoint, 'POST', { ...TUS, ...lengthHeader, ...extraHeaders })
  if (res.status !== 201) throw new Error(`POST answered ${res.status}: ${res.body}`)
  const url = new URL(res.headers.location as string, endpoint).href
  return { url, id: url.slice(url.lastIndexOf('/') + 1), response: res }
}

export function patch(
  url: string,
  offset: number,
  body: Buffer,
  extra: Record<string, string> = {},
) {
  return request(
    url,
    'PATCH',
    {
      ...TUS,
      'Upload-Offset': offset,
      'Content-Type': 'application/offset+octet-stream',
      ...extra,
    },
    body,
  )
}

export function head(url: string) {
  return request(url, 'HEAD', TUS)
}

/**
 * A PATCH whose body trickles in: the `chunks` one every `everyMs`; with `chunked`, without
 * Content-Length (chunked transfer encoding); with `checksum`, an Upload-Checksum header; with
 * `headers`, those too (Authorization, ...); with `until`, the chunks not yet sent go at once when `until` settles (a body that trickles, or
 * stalls, exactly as long as the test needs). Resolves to the response.
 */
export function slowPatch(
  url: string,
  offset: number,
  chunks: Buffer[],
  everyMs: number,
  {
    chunked = false,
    checksum,
    until,
    headers = {},
  }: {
    chunked?: boolean
    checksum?: string
    until?: Promise<unknown>
    headers?: Record<string, string>
  } = {},
): Promise<RawResponse> {
  const total = chunks.reduce((n, c) => n + c.length, 0)
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: 'PATCH',
        agent: false,
        headers: {
          ...TUS,
          ...headers,
          'Upload-Offset': offset,
          'Content-Type': 'application/offset+octet-stream',
          ...(chunked ? {} : { 'Content-Length': total }),
          ...(checksum ? { 'Upload-Checksum': checksum } : {}),
        },
      },
      (res) => {
        const body: Buffer[] = []
        res.on('data', (c: Buffer) => body.push(c))
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(body).toString(),
          }),
        )
      },
    )
    req.on('error', reject)
    let i = 0
    let hurry = false
    let timer: NodeJS.Timeout | undefined
    const next = () => {
      timer = undefined
      do {
        const chunk = chunks[i++]
        if (chunk === undefined) return void req.end()
        req.write(chunk)
      } while (hurry)
      timer = setTimeout(next, everyMs)
    }
    next()
    const rest = () => {
      hurry = true
      if (timer === undefined) return // ended already
      clearTimeout(timer)
      next()
    }
    until?.then(rest, rest)
  })
}

/**
 * A PATCH of `data` from offset 0 whose client goes away (socket destroyed) once `sent` bytes
 * are in `dataFile`.
 */
export async function disconnectMidPatch(
  url: string,
  data: Buffer,
  sent: number,
  dataFile: string,
): Promise<void> {
  const req = http.request(url, {
    method: 'PATCH',
    agent: false,
    headers: {
      ...TUS,
      'Upload-Offset': 0,
      'Content-Type': 'application/offset+octet-stream',
      'Content-Length': data.length,
    },
  })
  req.on('error', () => {})
  req.write(data.subarray(0, sent))
  await waitFor(async () => (await fs.stat(dataFile)).size === sent, 5000, 'bytes on disk')
  req.destroy()
}

/** A whole upload with tus-js-client; resolves to the upload URL. */
export function tusUpload(
  endpoint: string,
  data: Buffer,
  options: Partial<tus.UploadOptions> = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      endpoint,
      chunkSize: 64 * 1024,
      retryDelays: [],
      ...options,
      onSuccess: () => resolve(upload.url as string),
      onError: reject,
    })
    upload.start()
  })
}
