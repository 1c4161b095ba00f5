/**
 * Fixes to @tus/server's answers, applied after it has answered, one small step each:
 *
 * - `varyOnOrigin`: the allowed origin depends on the request's `Origin` once
 *   `allowedOrigins` is set;
 * - `corsOnDownloads`: GET answers carry CORS as the others do (tus leaves them without);
 * - `checksumAlgorithms`: OPTIONS lists `Tus-Checksum-Algorithm` when the store verifies checksums;
 * - `removeRefusedCreation`: a POST refused after tus created the upload leaves nothing behind;
 * - `offsetOnConflict`: a 409 (and a 507) carries the upload's current `Upload-Offset`;
 * - `uploadExpires`: `Upload-Expires` from the built-in store's activity clock (none once finished);
 * - `metadataAsSent`: HEAD answers `Upload-Metadata` as the client sent it (store/raw-metadata.ts);
 * - `Upload-Concat` on HEAD answers about partial and final uploads (concatenation.ts).
 */
import type { Server } from '@tus/server'
import { EVENTS, type Upload } from '@tus/utils'
import type { ExpiringFileStore, UploadFacts } from '../backends/file/file-store.js'
import { answerRawMetadata } from '../backends/file/raw-metadata.js'
import { isFinished } from '../expiry/policy.js'
import { tusCorsHeaders } from '../tus-internals.js'
import { CHECKSUM_ALGORITHMS } from './protocol.js'
import { uploadWrittenBy } from './write-path.js'

/**
 * What a step sees: the request tus answered, its answer, and the upload it is about. Steps read
 * `id` only once they know they need it (it may run the user's getFileIdFromRequest).
 *
 * A class, not an object literal with a getter: V8 allocates such a literal's accessor pair in the
 * old generation, where it holds the getter's closure, and through it the request and its answer,
 * until a full GC (a creation's whole request was promoted that way).
 */
class Answered {
  readonly request: Request
  readonly response: Response
  readonly method: string
  readonly #created: CreatedUploads
  readonly #fileIdOf: (request: Request) => string | undefined
  #id: { value: string | undefined } | undefined

  constructor(
    request: Request,
    response: Response,
    created: CreatedUploads,
    fileIdOf: (request: Request) => string | undefined,
  ) {
    this.request = request
    this.response = response
    this.method = request.method
    this.#created = created
    this.#fileIdOf = fileIdOf
  }

  /** The upload's id, or `undefined` (the collection, or a POST that created nothing); read once. */
  get id(): string | undefined {
    this.#id ??= {
      value:
        this.method === 'POST' ? this.#created.idOf(this.request) : this.#fileIdOf(this.request),
    }
    return this.#id.value
  }
}

type Step = (answered: Answered) => void | Promise<void>

export interface AnswerFixOptions {
  tus: Server
  /** The built-in store; `undefined` for a user's datastore (then only store-free steps run). */
  store: ExpiringFileStore | undefined
  /** `Upload-Expires` for a user datastore whose expiry the plugin applies (S3Store). */
  facts?: UploadDescriber | undefined
  /** The id in an upload URL, as tus reads it (the plugin's `getFileIdFromRequest`). */
  fileIdOf: (request: Request) => string | undefined
}

/** What an answer states about an upload beyond tus' own headers (the built-in store's `describe`). */
export type UploadDescriber = Pick<ExpiringFileStore, 'describe'> &
  Partial<Pick<ExpiringFileStore, 'factsOfCreation' | 'factsAfterWrite'>>

/** The steps for this server and store, as one function run on every answer tus gives. */
export function answerFixes({ tus, store, facts, fileIdOf }: AnswerFixOptions) {
  const created = new CreatedUploads(tus)
  const steps: Step[] = [
    tus.options.allowedOrigins ? varyOnOrigin : undefined,
    corsOnDownloads(tus),
    store ? checksumAlgorithms : undefined,
    store ? removeRefusedCreation(store) : undefined,
    offsetOnConflict(tus),
    store ? uploadFacts(store, created) : facts ? uploadFacts(facts, created) : undefined,
  ].filter((step) => step !== undefined)

  return async (request: Request, response: Response): Promise<void> => {
    const answered = new Answered(request, response, created, fileIdOf)
    for (const step of steps) await step(answered)
  }
}

/**
 * The id of the upload a POST created: tus names it (the naming function) and tells it only in
 * its POST_CREATE event, also when the answer then is a refusal without `Location`.
 */
class CreatedUploads {
  readonly #uploads = new WeakMap<Request, Upload>()

  constructor(tus: Server) {
    tus.on(EVENTS.POST_CREATE, (req, upload) => {
      this.#uploads.set(req as unknown as Request, upload)
    })
  }

  idOf(request: Request): string | undefined {
    return this.#uploads.get(request)?.id
  }

  uploadOf(request: Request): Upload | undefined {
    return this.#uploads.get(request)
  }
}

const varyOnOrigin: Step = ({ response }) => {
  response.headers.append('Vary', 'Origin')
}

function corsOnDownloads(tus: Server): Step {
  return ({ method, request, response }) => {
    if (method !== 'GET' || response.headers.has('Access-Control-Allow-Origin')) return
    for (const [name, value] of tusCorsHeaders(tus, request.headers.get('origin') ?? undefined)) {
      response.headers.set(name, value)
    }
  }
}

const checksumAlgorithms: Step = ({ method, response }) => {
  if (method === 'OPTIONS') {
    response.headers.set('Tus-Checksum-Algorithm', CHECKSUM_ALGORITHMS.join(','))
  }
}

/**
 * A POST whose body failed (413 past the declared length or `maxSize`, a checksum mismatch, a
 * client gone) after tus had created the upload: the client was refused and never learned the
 * URL, so the unfinished upload is nobody's. A finished one (a user's `onUploadFinish` that
 * refused it) stays.
 */
function removeRefusedCreation(store: ExpiringFileStore): Step {
  return async (answered) => {
    const { method, response } = answered
    if (method !== 'POST' || response.status < 400) return
    const id = answered.id
    if (id === undefined) return
    try {
      const upload = await store.getUpload(id)
      if (!isFinished(upload.size, upload.offset)) await store.remove(id)
    } catch {
      // Already gone, or unreadable: the sweep deals with what is left.
    }
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
function uploadFacts(store: UploadDescriber, created: CreatedUploads): Step {
  return async (answered) => {
    const { method, request, response } = answered
    if (response.status < 200 || response.status > 299) return
    if (method !== 'POST' && method !== 'PATCH' && method !== 'HEAD') return
    // A creation without a body: what it created is known without reading it back.
    const fresh =
      method === 'POST' && store.factsOfCreation && !response.headers.has('Upload-Offset')
        ? created.uploadOf(request)
        : undefined
    if (fresh && store.factsOfCreation) {
      uploadExpires(response, await store.factsOfCreation(fresh))
      return
    }
    // A body written by the direct path: the store knows the record it gave the handler.
    const written = method === 'HEAD' ? undefined : uploadWrittenBy(request)
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
      answerRawMetadata(response, facts?.rawMetadata)
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
