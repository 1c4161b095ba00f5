/**
 * GET of a finished upload, answered by the plugin when the backend reads ranges of its bytes
 * (`UploadBackend.downloads`: the built-in store, S3Store): single ranges, `ETag` and
 * `Last-Modified`, conditional answers (download-conditions.ts). Other datastores keep tus' own
 * GET, the whole file. With `download: false`, GET of the routes answers 405.
 *
 * The steps are those of tus' GetHandler, through its public API: a path the app registered
 * with `tus.get()` is tus', `onIncomingRequest` runs first, an unfinished upload is a 404, the
 * type and disposition are tus' (`filterContentType`: inline only for safe types), the upload's
 * lock is held while its bytes are opened, and errors are answered as tus answers them
 * (`onResponseError` included).
 */
import { Readable } from 'node:stream'
import type { Server } from '@tus/server'
import { ERRORS } from '@tus/utils'
import type { Downloads } from '../backends/backend.js'
import { downloadAnswer, lastModified } from './download-conditions.js'

export interface DownloadOptions {
  tus: Server
  /** The backend's downloads; `undefined`: tus' own GET. */
  downloads: Downloads | undefined
  /** The `download` option: `false` answers GET with 405. */
  enabled: boolean
  /** The id in an upload URL, as tus reads it. */
  fileIdOf: (request: Request) => string | undefined
}

const PRECONDITION_FAILED =
  'Precondition Failed: the upload is not the one If-Match or If-Unmodified-Since names\n'

/** The methods of the routes once GET is off, for `Allow`. */
const ALLOW_WITHOUT_GET = 'POST, HEAD, PATCH, DELETE, OPTIONS'

/** The answer to a GET of the routes, or `undefined` when tus' own GET answers it. */
export function downloadHandler(
  options: DownloadOptions,
): ((request: Request) => Promise<Response>) | undefined {
  const { tus, downloads, enabled, fileIdOf } = options
  if (enabled && !downloads) return undefined
  return async (request) => {
    // A route of the app's own (`tus.get(path, handler)`) stays the app's.
    if (tus.handlers.GET.paths.has(new URL(request.url).pathname)) return tus.handleWeb(request)
    if (!enabled || !downloads) return notAllowed()
    const id = fileIdOf(request)
    if (!id) return tus.handleWeb(request)
    try {
      return await download(tus, downloads, request, id)
    } catch (error) {
      return errorAnswer(tus, request, error)
    }
  }
}

async function download(
  tus: Server,
  downloads: Downloads,
  request: Request,
  id: string,
): Promise<Response> {
  await tus.options.onIncomingRequest?.(request, id)
  const upload = await tus.datastore.getUpload(id)
  if (upload.size === undefined || upload.offset !== upload.size) throw ERRORS.FILE_NOT_FOUND
  const { contentType, contentDisposition } = tus.handlers.GET.filterContentType(upload)
  const lock = await lockUpload(tus, request, id)
  try {
    const facts = await downloads.describe(upload)
    const size = upload.offset
    const answer = downloadAnswer(request.headers, facts, size)
    const headers = new Headers({
      'Accept-Ranges': 'bytes',
      ETag: facts.etag,
      'Last-Modified': lastModified(facts).toUTCString(),
    })
    if (answer.status === 304) return new Response(null, { status: 304, headers })
    if (answer.status === 412) return textAnswer(412, PRECONDITION_FAILED, headers)
    if (answer.status === 416) return unsatisfiable(headers, size)
    const range = answer.status === 206 ? answer.range : undefined
    headers.set('Content-Type', contentType)
    headers.set('Content-Disposition', contentDisposition)
    headers.set('Content-Length', String(range ? range.end - range.start + 1 : size))
    if (range) headers.set('Content-Range', `bytes ${range.start}-${range.end}/${size}`)
    const bytes = await downloads.read(upload, facts, range)
    return new Response(Readable.toWeb(bytes) as ReadableStream<Uint8Array>, {
      status: answer.status,
      headers,
    })
  } finally {
    await lock.unlock()
  }
}

/** The upload's lock, as tus' GetHandler takes it: held while the bytes are opened. */
async function lockUpload(tus: Server, request: Request, id: string) {
  const { locker } = tus.options
  const resolved = await (typeof locker === 'function' ? locker(request) : locker)
  const lock = resolved.newLock(id)
  await lock.lock(request.signal, () => {})
  return lock
}

function unsatisfiable(headers: Headers, size: number): Response {
  const body = `Range Not Satisfiable: the upload has ${size} bytes\n`
  headers.set('Content-Range', `bytes */${size}`)
  return textAnswer(416, body, headers)
}

function notAllowed(): Response {
  const body = 'Downloads are turned off on this endpoint (download: false)\n'
  return textAnswer(405, body, new Headers({ Allow: ALLOW_WITHOUT_GET }))
}

/** An error as tus' own handler answers it: its `status_code` and `body`, or a 500. */
async function errorAnswer(tus: Server, request: Request, error: unknown): Promise<Response> {
  const { status_code, body, message } = (error ?? {}) as {
    status_code?: number
    body?: string
    message?: string
  }
  let status = status_code || ERRORS.UNKNOWN_ERROR.status_code
  let text = body || `${ERRORS.UNKNOWN_ERROR.body}${message || ''}\n`
  const mapped = await tus.options.onResponseError?.(request, error as Error)
  if (mapped) {
    status = mapped.status_code
    text = mapped.body
  }
  return textAnswer(status, text, new Headers())
}

function textAnswer(status: number, body: string, headers: Headers): Response {
  headers.set('Content-Type', 'text/plain; charset=utf-8')
  headers.set('Content-Length', String(Buffer.byteLength(body)))
  return new Response(body, { status, headers })
}
