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
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'

export const TUS_VERSION = '1.0.0'

/** Checksum algorithms of the built-in store, as tus names them, in order of preference. */
export const CHECKSUM_ALGORITHMS = ['sha1', 'md5', 'sha256'] as const
export type ChecksumAlgorithm = (typeof CHECKSUM_ALGORITHMS)[number]

/** tus' status for a body whose checksum does not match. */
export const CHECKSUM_MISMATCH = { status_code: 460, body: 'Checksum Mismatch\n' }

/** An answer a guard gives instead of tus. */
export interface Refusal {
  status: number
  body: string
}

const OFFSET_OCTET_STREAM = 'application/offset+octet-stream'
const MAX_ID_BYTES = 250
/**
 * HEAD answers `Upload-Metadata` back, and Node's clients refuse answers whose headers pass
 * 16 KiB (`--max-http-header-size`): a larger header would make the upload impossible to resume.
 */
export const MAX_METADATA_BYTES = 8 * 1024
const TUS_METHODS_WITH_RESUMABLE = new Set(['POST', 'HEAD', 'PATCH', 'DELETE'])

/** Why `request` must not reach tus, or `undefined`. `checksums`: the store verifies checksums. */
export function refusalFor(
  method: string,
  headers: IncomingHttpHeaders,
  checksums: boolean,
): Refusal | undefined {
  if (TUS_METHODS_WITH_RESUMABLE.has(method)) {
    const resumable = headers['tus-resumable']
    if (resumable !== TUS_VERSION) {
      return {
        status: 412,
        body:
          resumable === undefined
            ? `Tus-Resumable header required; this server speaks tus ${TUS_VERSION}\n`
            : `Tus-Resumable ${String(resumable)} is not supported; this server speaks tus ${TUS_VERSION}\n`,
      }
    }
  }
  const override = headers['x-http-method-override']
  if (override !== undefined && String(override).trim().toUpperCase() !== method) {
    return {
      status: 400,
      body: `X-HTTP-Method-Override is not supported: send ${JSON.stringify(String(override))} as the request method\n`,
    }
  }
  if (method === 'PATCH') {
    if (!isOffsetOctetStream(headers['content-type'])) {
      return { status: 415, body: `PATCH needs Content-Type: ${OFFSET_OCTET_STREAM}\n` }
    }
    const offset = headers['upload-offset']
    if (
      typeof offset !== 'string' ||
      !/^\d+$/.test(offset) ||
      !Number.isSafeInteger(Number(offset))
    ) {
      return {
        status: 400,
        body: `Upload-Offset must be a non-negative whole number, got ${offset === undefined ? 'none' : JSON.stringify(offset)}\n`,
      }
    }
  }
  const metadata = headers['upload-metadata']
  if (method === 'POST' && metadata !== undefined) {
    const bytes = Buffer.byteLength(String(metadata))
    if (bytes > MAX_METADATA_BYTES) {
      return {
        status: 400,
        body: `Upload-Metadata is ${bytes} bytes; at most ${MAX_METADATA_BYTES} are accepted\n`,
      }
    }
  }
  if (method === 'POST' && hasBody(headers) && !isOffsetOctetStream(headers['content-type'])) {
    return { status: 415, body: `a POST with a body needs Content-Type: ${OFFSET_OCTET_STREAM}\n` }
  }
  const checksum = headers['upload-checksum']
  if (checksums && (method === 'PATCH' || method === 'POST') && checksum !== undefined) {
    const parsed = parseChecksum(checksum)
    if ('status' in parsed) return parsed
  }
  return undefined
}

/**
 * Rewrites an accepted `application/offset+octet-stream` content type (other letter case, or
 * parameters) to the exact form, the only one @tus/server's own checks recognise.
 */
export function normalizeContentType(request: IncomingMessage): void {
  const type = request.headers['content-type']
  if (type === undefined || type === OFFSET_OCTET_STREAM || !isOffsetOctetStream(type)) return
  request.headers['content-type'] = OFFSET_OCTET_STREAM
  // tus reads the raw list too (srvx builds its Headers from it).
  const raw = request.rawHeaders
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]?.toLowerCase() === 'content-type') raw[i + 1] = OFFSET_OCTET_STREAM
  }
}

/** The media type, without parameters, compared as HTTP does: case-insensitively. */
function isOffsetOctetStream(contentType: string | undefined): boolean {
  return contentType?.split(';')[0]?.trim().toLowerCase() === OFFSET_OCTET_STREAM
}

function hasBody(headers: IncomingHttpHeaders): boolean {
  const length = headers['content-length']
  return headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}

export interface Checksum {
  algorithm: ChecksumAlgorithm
  digest: Buffer
}

/** `Upload-Checksum: <algorithm> <base64>`, or the 400 it deserves. */
export function parseChecksum(header: string | string[]): Checksum | Refusal {
  if (Array.isArray(header)) return { status: 400, body: 'Upload-Checksum may be sent once\n' }
  const match = /^([A-Za-z0-9-]+) ([A-Za-z0-9+/]+={0,2})$/.exec(header.trim())
  if (!match) {
    return { status: 400, body: 'Upload-Checksum must be "<algorithm> <base64 digest>"\n' }
  }
  const algorithm = (match[1] as string).toLowerCase()
  if (!(CHECKSUM_ALGORITHMS as readonly string[]).includes(algorithm)) {
    return {
      status: 400,
      body: `Upload-Checksum algorithm ${algorithm} is not supported (supported: ${CHECKSUM_ALGORITHMS.join(',')})\n`,
    }
  }
  // A well-formed digest of the wrong length is not malformed: it cannot match, so the body
  // answers 460 like any other mismatch (as the compliance suite and tusdotnet have it).
  return {
    algorithm: algorithm as ChecksumAlgorithm,
    digest: Buffer.from(match[2] as string, 'base64'),
  }
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
