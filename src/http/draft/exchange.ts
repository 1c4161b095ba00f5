/**
 * The IETF draft on the tus routes: a request with `Upload-Draft-Interop-Version` is read as the
 * draft's, handed to @tus/server as the tus 1.0 request it amounts to (one store, one locker,
 * one naming function, the same hooks, events, write path, quota and hand-over as tus 1.0), and
 * tus' answer is given back in the draft's form. An upload made by either protocol is served by
 * both.
 *
 * A new request on an upload ends one still in flight rather than waiting for its lock, as the
 * draft recommends ("The server is RECOMMENDED to take measures to avoid parallel upload
 * transfers: The server MAY terminate any creation or append for the same upload URL", -03,
 * -05): tus' handlers take the locker's lock with a `requestRelease` that cancels the holder,
 * whose write then stops (after tus' `lockDrainTimeout`) with what it has stored.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Server } from '@tus/server'
import { type DataStore, EVENTS, type Upload } from '@tus/utils'
import type { FastifyRequest } from 'fastify'
import { NodeRequest } from 'srvx/node'
import { Refusal, refusal } from '../../refusal.js'
import { refusalFor } from '../protocol.js'
import { contextOf } from '../request-context.js'
import { draftFields, type Limits, refusalAnswer, sfBoolean, uploadLimit } from './answers.js'
import { type Append, appendAnswer, readAppend } from './append.js'
import { deactivate, declareLengthAtEnd } from './completion.js'
import { type Creation, creationAnswer, readCreation } from './creation.js'
import { contentLength, rewriteHeaders } from './fields.js'
import { sendUploadResumptionSupported } from './informational.js'
import { offsetAnswer, optionsAnswer, readRetrieval } from './retrieval.js'
import {
  draftVersionOf,
  INTEROP_HEADER,
  unsupportedVersionReason,
  type VersionFeatures,
} from './versions.js'

const EXCHANGE = Symbol('fastify-tus.draftExchange')

type Carrier = { [EXCHANGE]?: DraftExchange }

export interface DraftSetup {
  tus: Server
  /** The store tus reads and writes: an append's checks read the upload first. */
  datastore: DataStore
  /** The id in an upload URL, as tus reads it. */
  fileIdOf: (request: Request) => string | undefined
  /** The algorithms the backend verifies (`Upload-Checksum`), for the plugin's guards. */
  checksums: readonly string[] | undefined
  /** When an upload just created expires (the backend's expiry clock), for the 104's limits. */
  expiryOf?: ((upload: Upload) => Promise<Date | undefined>) | undefined
}

/** One draft request, from its reading to its answer. */
export class DraftExchange {
  readonly features: VersionFeatures | undefined
  readonly method: string
  readonly request: FastifyRequest
  readonly res: ServerResponse
  readonly tus: Server
  readonly limits: Limits
  /** Why the request is not handed to tus. */
  refusal: Refusal | undefined = undefined
  creation: Creation | undefined = undefined
  append: Append | undefined = undefined
  /** The answer is a 404 for an upload that had expired (tus' 410): counted as expired. */
  expired = false
  /** The 104 went out. */
  informed = false
  /** The 104 on its way (it waits for the upload's expiry): the final answer goes after it. */
  #announcing: Promise<void> | undefined = undefined
  /** The URL of the upload this creation made. */
  #created: string | undefined = undefined

  readonly #expiryOf: DraftSetup['expiryOf']

  constructor(
    features: VersionFeatures | undefined,
    request: FastifyRequest,
    res: ServerResponse,
    { tus, limits, expiryOf }: { tus: Server; limits: Limits; expiryOf: DraftSetup['expiryOf'] },
  ) {
    this.features = features
    this.method = request.raw.method ?? ''
    this.request = request
    this.res = res
    this.tus = tus
    this.limits = limits
    this.#expiryOf = expiryOf
  }

  /**
   * tus announced the upload this creation made, before its content is read: the 104 with its
   * URL. -03 and -05: "In the first informational response, the `Location` header field MUST be
   * set to the URL pointing to the upload resource." -11: "When sent, it MUST include `Location`
   * header field pointing to the upload resource and MUST include the `Upload-Limit` header field
   * with the corresponding limits ... if existing": interop 8's 104 waits for the upload's expiry
   * (`max-age`); 6's states `max-size` only, as it always has.
   */
  created(url: string, upload: Upload): void {
    const { features } = this
    if (features === undefined || this.informed || this.#announcing) return
    this.#created = url
    const expiryOf = features.completeEverywhere ? this.#expiryOf : undefined
    if (expiryOf === undefined) {
      this.#inform(features, url, null)
      return
    }
    this.#announcing = expiryOf(upload).then(
      (at) => this.#inform(features, url, at?.toUTCString() ?? null),
      () => this.#inform(features, url, null),
    )
  }

  #inform(features: VersionFeatures, url: string, expires: string | null): void {
    const fields: Record<string, string> = {
      Location: url,
      'Upload-Draft-Interop-Version': String(features.version),
    }
    if (features.uploadLimit) {
      fields['Upload-Limit'] = uploadLimit(this.limits, expires, features.lifetimeKey)
    }
    this.informed = sendUploadResumptionSupported(this.res, fields)
  }

  /** The answer (tus', or the refusal's) as the draft words it. */
  async answer(tusAnswer: Response): Promise<Response> {
    const { features } = this
    // A version not served: the refusal as it is, with no draft field.
    if (features === undefined) return tusAnswer
    await this.#announcing
    // A GET handed to tus as a HEAD is a GET again, for the metrics.
    this.request.raw.method = this.method
    if (tusAnswer.status === 410) this.expired = true
    const answer = await this.#lengthAtEnd(tusAnswer)
    if (features.completeEverywhere && answer.status === 413) await this.#pastLength()
    let made: Response | Refusal = answer
    if (this.refusal) made = this.refusal
    else if (this.creation) made = creationAnswer(answer, this.creation, features, this.limits)
    else if (this.append) made = appendAnswer(answer, this.append, features)
    else if (this.method === 'HEAD' || this.method === 'GET') {
      made = offsetAnswer(answer, features, this.limits)
    } else if (this.method === 'OPTIONS') return optionsAnswer(answer, features, this.limits)
    if (made instanceof Refusal) made = refusalAnswer(made, features, answer)
    if (features.completeEverywhere) this.#stateOfRefusal(made, features)
    return draftFields(made, features)
  }

  /**
   * Interop 8's fields on a creation's or an append's refusal. -11: "the server MUST reject the
   * request with a `409 (Conflict)` status code and the `Upload-Complete` header field set to
   * false"; the server "SHOULD include the `Upload-Complete` header field in the response"
   * (creation, append); "A server responding with a `413 (Content Too Large)` status code as a
   * result of its upload limits SHOULD include the `Upload-Limit` header field in this response".
   */
  #stateOfRefusal(answer: Response, features: VersionFeatures): void {
    const { headers, status } = answer
    if (this.method !== 'POST' && this.method !== 'PATCH') return
    if (!headers.has('upload-complete')) headers.set('Upload-Complete', sfBoolean(false))
    if (status === 413)
      headers.set('Upload-Limit', uploadLimit(this.limits, null, features.lifetimeKey))
  }

  /**
   * Interop 8: a body without `Content-Length` that ran past the upload's known length, which tus
   * stopped there (413), deactivates the upload (completion.ts' `deactivate`). One with a
   * `Content-Length` that would run past it was refused before a byte was stored.
   */
  async #pastLength(): Promise<void> {
    const step = this.creation ?? this.append
    if (step?.length === undefined || contentLength(this.request.headers) !== undefined) return
    const url = this.creation ? this.#created : this.request.raw.url
    if (url) await deactivate(this.tus, this.request, url)
  }

  /**
   * A complete creation or append without a stated length (completion.ts): once tus stored its
   * content, the length is declared; the answer is the declaration's when that fails.
   */
  async #lengthAtEnd(answer: Response): Promise<Response> {
    const step = this.creation ?? this.append
    if (!step?.lengthAtEnd || answer.status < 200 || answer.status > 299) return answer
    const offset = Number(answer.headers.get('upload-offset'))
    const url = this.creation ? answer.headers.get('location') : this.request.raw.url
    if (!Number.isSafeInteger(offset) || !url) return answer
    const declared = await declareLengthAtEnd(this.tus, this.request, url, offset)
    if (declared === undefined) return answer
    if (declared.status !== 204) {
      answer.body?.cancel().catch(() => {})
      return declared
    }
    declared.body?.cancel().catch(() => {})
    step.length = offset
    return answer
  }
}

/** The draft side of the routes: reads draft requests and words their answers. */
export class DraftProtocol {
  readonly #setup: DraftSetup
  readonly #limits: Limits

  constructor(setup: DraftSetup) {
    this.#setup = setup
    const { maxSize } = setup.tus.options
    this.#limits = { maxSize: typeof maxSize === 'number' && maxSize > 0 ? maxSize : undefined }
    // tus names the upload and builds its URL, then announces it before reading the content.
    setup.tus.on(EVENTS.POST_CREATE, (req: Request, upload: Upload, url: string) => {
      draftExchangeOf(contextOf(req)?.request.raw)?.created(url, upload)
    })
  }

  /**
   * The exchange of a draft request, its headers rewritten for tus (or its refusal set);
   * `undefined` for a tus 1.0 request, and for GET where the version does not define it.
   */
  async open(request: FastifyRequest, res: ServerResponse): Promise<DraftExchange | undefined> {
    const features = draftVersionOf(request.headers)
    const method = request.raw.method ?? ''
    if (features === undefined || (method === 'GET' && !features?.getRetrieves)) return undefined
    const exchange = new DraftExchange(features ?? undefined, request, res, {
      tus: this.#setup.tus,
      limits: this.#limits,
      expiryOf: this.#setup.expiryOf,
    })
    ;(request.raw as Carrier)[EXCHANGE] = exchange
    if (features === null) {
      exchange.refusal = refusal(400, unsupportedVersionReason(request.headers[INTEROP_HEADER]))
      return exchange
    }
    const changes = await this.#read(exchange, request, res, features)
    if (changes instanceof Refusal) {
      exchange.refusal = changes
      return exchange
    }
    rewriteHeaders(request.raw, changes)
    exchange.refusal = refusalFor(method, request.headers, this.#setup.checksums)
    return exchange
  }

  async #read(
    exchange: DraftExchange,
    request: FastifyRequest,
    res: ServerResponse,
    features: VersionFeatures,
  ): Promise<Record<string, string | null> | Refusal> {
    const { headers } = request
    switch (exchange.method) {
      case 'POST': {
        const creation = readCreation(headers, features)
        if (creation instanceof Refusal) return creation
        exchange.creation = creation
        return creation.changes
      }
      case 'PATCH': {
        const upload = await this.#uploadOf(request, res)
        const append = readAppend(headers, features, upload)
        if (append instanceof Refusal) return append
        exchange.append = append
        return append.changes
      }
      case 'GET':
        // The editor's copy after -11: "A successful response to a `HEAD` or `GET` request
        // against an upload resource MUST include the offset ...": tus answers it as a HEAD.
        request.raw.method = 'HEAD'
        return readRetrieval('HEAD', headers, features)
      case 'HEAD':
      case 'DELETE':
        return readRetrieval(exchange.method, headers, features)
      default:
        return {}
    }
  }

  /** The upload a request names, as the store has it now; `undefined` when it cannot be read. */
  async #uploadOf(request: FastifyRequest, res: ServerResponse): Promise<Upload | undefined> {
    const id = this.#setup.fileIdOf(new NodeRequest({ req: request.raw, res }))
    if (id === undefined) return undefined
    try {
      return await this.#setup.datastore.getUpload(id)
    } catch {
      // Gone, expired, unreadable: tus reads it again under its lock and answers that.
      return undefined
    }
  }
}

/** The draft exchange of a Node request, if it is a draft request. */
export function draftExchangeOf(req: IncomingMessage | undefined): DraftExchange | undefined {
  return req === undefined ? undefined : (req as Carrier)[EXCHANGE]
}
