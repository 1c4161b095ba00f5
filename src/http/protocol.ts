/**
 * Protocol guards: the parts of tus 1.0 that @tus/server gets wrong behind Fastify, fixed at
 * the plugin's layer. Checks that run before a request reaches tus, and fixes to its answers.
 *
 * - A missing or unsupported `Tus-Resumable` answers 412 with `Tus-Version` (stock: 412 without
 *   it, or 400), and the request is not processed.
 * - PATCH, and POST with a body, need `Content-Type: application/offset+octet-stream`: 415
 *   (stock: 403 or 400 for PATCH, and a POST body of any type is accepted).
 * - PATCH needs a valid `Upload-Offset`: 400 (stock: 403 when it is missing).
 * - `Upload-Checksum` must be `<algorithm> <base64 digest>` of a supported algorithm: 400 (a digest
 *   of the wrong length for its algorithm is a mismatch: 460).
 * - `X-HTTP-Method-Override` naming another method answers 400 (stock: ignored, so a POST meant
 *   as DELETE or PATCH creates an upload; honouring it would let a POST pass hooks that
 *   authorise by method and then act as DELETE).
 * - A 409 carries the upload's current `Upload-Offset`.
 * - The id of an upload URL ignores its query string (stock: `<id>?x=1` is looked up, 404).
 * - `Upload-Metadata` longer than 8 KiB answers 400 at creation (stock: accepted, and then every
 *   HEAD answer is too large for Node's HTTP client to read).
 * - Answers carry the standard reason phrase (`201 Created`; stock: `201 `).
 * - HEAD answers carry `Content-Length: 0`: without it Node's own client (and others) cannot
 *   reuse a keep-alive connection after a HEAD.
 */
import type { IncomingHttpHeaders } from 'node:http'
import type { Checksum } from '../backends/backend.js'
import { Refusal, refusal } from '../refusal.js'

export const TUS_VERSION = '1.0.0'

const OFFSET_OCTET_STREAM = 'application/offset+octet-stream'
const MAX_ID_BYTES = 250
/**
 * HEAD answers `Upload-Metadata` back, and Node's clients refuse answers whose headers pass
 * 16 KiB (`--max-http-header-size`): a larger header would make the upload impossible to resume.
 */
export const MAX_METADATA_BYTES = 8 * 1024
const TUS_METHODS_WITH_RESUMABLE = new Set(['POST', 'HEAD', 'PATCH', 'DELETE'])

/**
 * Why `request` must not reach tus, or `undefined`. `checksums`: the algorithms the backend
 * verifies (`undefined`: it verifies none, and `Upload-Checksum` is left to tus).
 */
export function refusalFor(
  method: string,
  headers: IncomingHttpHeaders,
  checksums: readonly string[] | undefined,
): Refusal | undefined {
  if (TUS_METHODS_WITH_RESUMABLE.has(method)) {
    const resumable = headers['tus-resumable']
    if (resumable !== TUS_VERSION) {
      return refusal(
        412,
        resumable === undefined
          ? `Tus-Resumable header required; this server speaks tus ${TUS_VERSION}`
          : `Tus-Resumable ${String(resumable)} is not supported; this server speaks tus ${TUS_VERSION}`,
      )
    }
  }
  const override = headers['x-http-method-override']
  if (override !== undefined && String(override).trim().toUpperCase() !== method) {
    return refusal(
      400,
      `X-HTTP-Method-Override is not supported: send ${JSON.stringify(String(override))} as the request method`,
    )
  }
  if (method === 'PATCH') {
    if (!isOffsetOctetStream(headers['content-type'])) {
      return refusal(415, `PATCH needs Content-Type: ${OFFSET_OCTET_STREAM}`)
    }
    const offset = headers['upload-offset']
    if (
      typeof offset !== 'string' ||
      !/^\d+$/.test(offset) ||
      !Number.isSafeInteger(Number(offset))
    ) {
      return refusal(
        400,
        `Upload-Offset must be a non-negative whole number, got ${offset === undefined ? 'none' : JSON.stringify(offset)}`,
      )
    }
  }
  const metadata = headers['upload-metadata']
  if (method === 'POST' && metadata !== undefined) {
    const bytes = Buffer.byteLength(String(metadata))
    if (bytes > MAX_METADATA_BYTES) {
      return refusal(
        400,
        `Upload-Metadata is ${bytes} bytes; at most ${MAX_METADATA_BYTES} are accepted`,
      )
    }
  }
  if (method === 'POST' && hasBody(headers) && !isOffsetOctetStream(headers['content-type'])) {
    return refusal(415, `a POST with a body needs Content-Type: ${OFFSET_OCTET_STREAM}`)
  }
  const checksum = headers['upload-checksum']
  if (checksums && (method === 'PATCH' || method === 'POST') && checksum !== undefined) {
    const parsed = parseChecksum(checksum, checksums)
    if (parsed instanceof Refusal) return parsed
  }
  return undefined
}

/**
 * Gives the request handed to tus an accepted `application/offset+octet-stream` content type
 * (other letter case, or parameters) in the exact form, the only one @tus/server's own checks
 * recognise. The Node request keeps its headers as sent.
 */
export function normalizeContentType(headers: IncomingHttpHeaders, web: Request): void {
  const type = headers['content-type']
  if (type === undefined || type === OFFSET_OCTET_STREAM || !isOffsetOctetStream(type)) return
  web.headers.set('content-type', OFFSET_OCTET_STREAM)
}

/** The media type, without parameters, compared as HTTP does: case-insensitively. */
function isOffsetOctetStream(contentType: string | undefined): boolean {
  return contentType?.split(';')[0]?.trim().toLowerCase() === OFFSET_OCTET_STREAM
}

function hasBody(headers: IncomingHttpHeaders): boolean {
  const length = headers['content-length']
  return headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}

/** `Upload-Checksum: <algorithm> <base64>` of one of `algorithms`, or the 400 it deserves. */
export function parseChecksum(
  header: string | string[],
  algorithms: readonly string[],
): Checksum | Refusal {
  if (Array.isArray(header)) return refusal(400, 'Upload-Checksum may be sent once')
  const match = /^([A-Za-z0-9-]+) ([A-Za-z0-9+/]+={0,2})$/.exec(header.trim())
  if (!match) {
    return refusal(400, 'Upload-Checksum must be "<algorithm> <base64 digest>"')
  }
  const algorithm = (match[1] as string).toLowerCase()
  if (!algorithms.includes(algorithm)) {
    return refusal(
      400,
      `Upload-Checksum algorithm ${algorithm} is not supported (supported: ${algorithms.join(',')})`,
    )
  }
  // A well-formed digest of the wrong length is not malformed: it cannot match, so the body
  // answers 460 like any other mismatch (as the compliance suite and tusdotnet have it).
  return { algorithm, digest: Buffer.from(match[2] as string, 'base64') }
}

/**
 * The upload id in the path of a tus URL (query string already removed): its last segment,
 * decoded; `undefined` for the collection itself and for ids that could leave the directory.
 */
export function uploadIdFromPath(pathname: string, collectionPath: string): string | undefined {
  const match = /([^/]+)\/?$/.exec(pathname)
  if (!match || pathname.replace(/\/$/, '') === collectionPath) return undefined
  let id: string
  try {
    id = decodeURIComponent(match[1] as string)
  } catch {
    return undefined
  }
  if (id === '.' || id === '..' || /[/\\\0]/.test(id)) return undefined
  // A file name holds 255 bytes, and the store adds `.json`.
  if (Buffer.byteLength(id) > MAX_ID_BYTES) return undefined
  return id
}
