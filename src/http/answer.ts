/**
 * Fixes to @tus/server's answers, applied after it has answered, one small step each:
 *
 * - `varyOnOrigin`: the allowed origin depends on the request's `Origin` once
 *   `allowedOrigins` is set;
 * - `downloadHeaders`: GET answers carry CORS as the others do (tus leaves them without), and a
 *   download `X-Content-Type-Options: nosniff` and, for pages on other origins, its range and
 *   validator headers (download.ts);
 * - `checksumAlgorithms`: OPTIONS lists `Tus-Checksum-Algorithm` when the backend verifies
 *   checksums;
 * - `removeRefusedCreation`: a POST refused after tus created the upload leaves nothing behind;
 * - `offsetOnConflict`: a 409 (and a 507) carries the upload's current `Upload-Offset`;
 * - `uploadFacts`: `Upload-Expires` from the backend's expiry clock (none once finished), and on
 *   HEAD answers `Upload-Metadata` as the client sent it and `Upload-Concat` for partial and
 *   final uploads (concatenation.ts).
 */
import type { Server } from '@tus/server'
import type { UploadBackend, UploadDescriber, UploadFacts } from '../backends/backend.js'
import { tusCorsHeaders } from '../tus-internals.js'
import { contextOf } from './request-context.js'

/**
 * What a step sees: the request tus answered, its answer, and the upload it is about. Steps read
 * `id` only once they know they need it (it may run the user's getFileIdFromRequest).
 *
 * A class, not an object literal with a getter: such a literal, made per request, kept the request
 * and its answer alive past their answer (CONTRIBUTING.md, "Garbage on the request path").
 */
class Answered {
  readonly request: Request
  readonly response: Response
  readonly method: string
  readonly #fileIdOf: (request: Request) => string | undefined
  #id: { value: string | undefined } | undefined

  constructor(
    request: Request,
    response: Response,
    fileIdOf: (request: Request) => string | undefined,
  ) {
    this.request = request
    this.response = response
    this.method = request.method
    this.#fileIdOf = fileIdOf
  }

  /** The upload's id, or `undefined` (the collection, or a POST that created nothing); read once. */
  get id(): string | undefined {
    this.#id ??= {
      value:
        this.method === 'POST'
          ? contextOf(this.request)?.created?.id
          : this.#fileIdOf(this.request),
    }
    return this.#id.value
  }
}

type Step = (answered: Answered) => void | Promise<void>

export interface AnswerFixOptions {
  tus: Server
  /** The backend's capabilities decide the steps (checksums, refused creations, expiry facts). */
  backend: Pick<UploadBackend, 'answers' | 'checksums' | 'discardRefused'>
  /** The id in an upload URL, as tus reads it (the plugin's `getFileIdFromRequest`). */
  fileIdOf: (request: Request) => string | undefined
}

/** The steps for this server and backend, as one function run on every answer tus gives. */
export function answerFixes({ tus, backend, fileIdOf }: AnswerFixOptions) {
  const { answers, checksums, discardRefused } = backend
  const steps: Step[] = [
    tus.options.allowedOrigins ? varyOnOrigin : undefined,
    downloadHeaders(tus),
    checksums ? checksumAlgorithms(checksums.algorithms) : undefined,
    discardRefused ? removeRefusedCreation(discardRefused) : undefined,
    offsetOnConflict(tus),
    answers ? uploadFacts(answers) : undefined,
  ].filter((step) => step !== undefined)

  return async (request: Request, response: Response): Promise<void> => {
    const answered = new Answered(request, response, fileIdOf)
    for (const step of steps) await step(answered)
  }
}

const varyOnOrigin: Step = ({ response }) => {
  response.headers.append('Vary', 'Origin')
}

function downloadHeaders(tus: Server): Step {
  return ({ method, request, response }) => {
    if (method !== 'GET') return
    // The type is the uploader's (`filetype`): a browser must not guess another from the bytes.
    if (response.ok) response.headers.set('X-Content-Type-Options', 'nosniff')
    if (response.headers.has('Access-Control-Allow-Origin')) return
    for (const [name, value] of tusCorsHeaders(tus, request.headers.get('origin') ?? undefined)) {
      response.headers.set(name, value)
    }
    // A page on another origin that fetches ranges reads these (download.ts' answers).
    if (response.headers.has('Accept-Ranges')) {
      const exposed = response.headers.get('Access-Control-Expose-Headers')
      response.headers.set('Access-Control-Expose-Headers', `${exposed}, ${DOWNLOAD_EXPOSED}`)
    }
  }
}

/** The headers of a download that are not CORS-safelisted. */
const DOWNLOAD_EXPOSED = 'Accept-Ranges, Content-Range, Content-Disposition, ETag'

function checksumAlgorithms(algorithms: readonly string[]): Step {
  const header = algorithms.join(',')
  return ({ method, response }) => {
    if (method === 'OPTIONS') response.headers.set('Tus-Checksum-Algorithm', header)
  }
}

/**
 * A POST whose body failed (413 past the declared length or `maxSize`, a checksum mismatch, a
 * client gone) after tus had created the upload: the client was refused and never learned the
 * URL, so the unfinished upload is nobody's. A finished one (a user's `onUploadFinish` that
 * refused it) stays.
 */
function removeRefusedCreation(discard: (id: string) => Promise<void>): Step {
  return async (answered) => {
    const { method, response } = answered
    if (method !== 'POST' || response.status < 400) return
    const id = answered.id
    if (id !== undefined) await discard(id)
  }
}

function offsetOnConflict(tus: Server): Step {
  return async (answered) => {
    const { method, response } = answered
    // 409: the offset the client should resume from; 507: how far the body got before the floor.
    if (method !== 'PATCH' || (response.status !== 409 && response.status !== 507)) return
    const id = answered.id
    if (id === undefined) return
    const offset = await tus.datastore.getUpload(id).then(
      (upload) => upload.offset,
      () => undefined,
    )
    if (offset !== undefined) response.headers.set('Upload-Offset', String(offset))
  }
}

/** `Upload-Expires` and `Upload-Metadata` as sent: both from one read of the upload's facts. */
function uploadFacts(store: UploadDescriber): Step {
  return async (answered) => {
    const { method, request, response } = answered
    if (response.status < 200 || response.status > 299) return
    if (method !== 'POST' && method !== 'PATCH' && method !== 'HEAD') return
    const context = method === 'HEAD' ? undefined : contextOf(request)
    // A creation without a body: what it created is known without reading it back.
    const fresh =
      method === 'POST' && store.factsOfCreation && !response.headers.has('Upload-Offset')
        ? context?.created
        : undefined
    if (fresh && store.factsOfCreation) {
      uploadExpires(response, await store.factsOfCreation(fresh))
      return
    }
    // A body written by the direct path: the store knows the record it gave the handler.
    const written = context?.written
    const afterWrite = written && (await store.factsAfterWrite?.(written.upload, written.stats))
    if (afterWrite) {
      uploadExpires(response, afterWrite)
      return
    }
    const id = answered.id
    if (id === undefined) return
    // A HEAD answers what tus' getUpload just read; after a PATCH or a POST, read afresh.
    const facts = await store.describe(id, { afterRead: method === 'HEAD' })
    uploadExpires(response, facts)
    if (method === 'HEAD') {
      // The metadata as the client sent it, where the backend kept it.
      if (facts?.rawMetadata !== undefined)
        response.headers.set('Upload-Metadata', facts.rawMetadata)
      if (facts?.concat) response.headers.set('Upload-Concat', facts.concat)
    }
  }
}

function uploadExpires(
  response: Response,
  facts: Pick<UploadFacts, 'expiresAt'> | undefined,
): void {
  if (facts?.expiresAt) response.headers.set('Upload-Expires', facts.expiresAt.toUTCString())
  else response.headers.delete('Upload-Expires')
}
