/**
 * The tus routes, registered in an encapsulated child context so that their body parsing does
 * not leak into the user's app, and the hand-off of each request to @tus/server: protocol guards
 * before it, fixes to its answers after it.
 */
import { type ServerResponse, STATUS_CODES } from 'node:http'
import type { Server } from '@tus/server'
import type { Upload } from '@tus/utils'
import type { FastifyInstance, FastifyReply, FastifyRequest, HTTPMethods } from 'fastify'
import { NodeRequest, sendNodeResponse } from 'srvx/node'
import type { UploadBackend } from '../backends/backend.js'
import type { TusMetrics } from '../metrics.js'
import { Refusal } from '../refusal.js'
import { answerFixes } from './answer.js'
import { cancelSafe } from './cancel-safe.js'
import {
  answerExistingFinal,
  type ConcatRouting,
  finishFinal,
  readConcat,
  refusingPatchOfFinal,
} from './concatenation.js'
import { type CorsLogger, EXPOSE_HEADERS, listUnion, RouteCors } from './cors.js'
import { downloadHandler } from './download.js'
import { DraftProtocol, type DraftSetup, draftExchangeOf } from './draft/exchange.js'
import { protocolLabel } from './draft/versions.js'
import { normalizeContentType, refusalFor } from './protocol.js'
import { refusalAnswer } from './refusals.js'
import { openRequestContext, type RequestContext } from './request-context.js'
import { DirectBodyRequest } from './write-path.js'

export interface TusRoutesOptions {
  /** The path relative to the child context, e.g. `/files`. */
  path: string
  tus: Server
  /** What the backend can do: the routes ask for capabilities, never which store it is. */
  backend: RouteBackend
  /** The id in an upload URL, as tus reads it (the plugin's `getFileIdFromRequest`). */
  fileIdOf: (request: Request) => string | undefined
  /** True once `fastify.close()` has begun. */
  isClosing: () => boolean
  /** Called for every request the routes serve (the first one is what counts). */
  serving?: () => void
  /** Counts answers and stored bytes (the `metrics` option). */
  metrics?: TusMetrics | undefined
  /** The registration's logger (CORS warnings); the child's own by default. */
  log?: CorsLogger | undefined
  /** The `download` option: `false` answers GET with 405. Default `true`. */
  download?: boolean
}

/** The capabilities the routes use. */
export type RouteBackend = Pick<
  UploadBackend,
  'answers' | 'checksums' | 'discardRefused' | 'concatenation' | 'writer' | 'downloads'
>

const TUS_METHODS: HTTPMethods[] = ['POST', 'HEAD', 'PATCH', 'OPTIONS', 'DELETE', 'GET']

export async function tusRoutes(child: FastifyInstance, options: TusRoutesOptions): Promise<void> {
  const { path, tus, backend, isClosing } = options

  // Bodies stay unread for tus: no parser here may buffer an upload or apply bodyLimit.
  child.removeAllContentTypeParsers()
  child.addContentTypeParser('*', (_request, _payload, done) => done(null))

  // Who decides CORS here: tus' allowedOrigins, or else the app's @fastify/cors (cors.ts).
  const cors = new RouteCors(tus, options.log ?? child.log)
  child.addHook('onReady', async () => cors.ready(child))

  // Answers Fastify sends on these routes (a refusal from the app's auth hook, a thrown error)
  // carry what tus puts on its own: without Access-Control-Allow-Origin a browser on another
  // origin sees a network error instead of the 401. Hijacked tus answers do not pass here.
  child.addHook('onSend', async (request, reply, payload) => {
    for (const [name, value] of Object.entries(cors.answerHeaders(request.headers.origin))) {
      reply.header(name, mergedHeader(name, reply.getHeader(name), value))
    }
    return payload
  })

  const { metrics } = options
  if (metrics) {
    // Every answer on these routes, the app's hook refusals and hijacked tus answers included.
    child.addHook('onResponse', async (request, reply) => {
      const expired = draftExchangeOf(request.raw)?.expired
      metrics.answered(request.raw.method ?? '', reply.raw.statusCode, {
        protocol: protocolLabel(request.headers),
        expired,
      })
    })
  }

  const fixAnswer = answerFixes({ tus, backend, fileIdOf: options.fileIdOf })
  const download = downloadHandler({
    tus,
    downloads: backend.downloads,
    enabled: options.download ?? true,
    fileIdOf: options.fileIdOf,
  })
  const concat: ConcatRouting = {
    fullPath: tus.options.path,
    path,
    fileIdOf: options.fileIdOf,
    anyPath: tus.options.generateUrl !== undefined,
  }
  const draft = new DraftProtocol(draftSetup(tus, backend, options.fileIdOf))
  async function handler(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    options.serving?.()
    reply.hijack()
    await handOff(request, reply, {
      tus,
      backend,
      fixAnswer,
      isClosing,
      metrics,
      concat,
      cors,
      download,
      draft,
    })
    // Fastify closes idle keep-alive connections once, when close() begins; a hijacked answer
    // that ends after that moment would hold close() until the keep-alive timeout.
    if (isClosing()) child.server.closeIdleConnections()
  }
  for (const url of [path, `${path}/*`]) {
    child.route({
      method: TUS_METHODS,
      url,
      exposeHeadRoute: false,
      config: cors.routeConfig,
      handler,
    })
  }
}

type AnswerFix = ReturnType<typeof answerFixes>

interface HandOff {
  tus: Server
  backend: RouteBackend
  fixAnswer: AnswerFix
  isClosing: () => boolean
  metrics: TusMetrics | undefined
  concat: ConcatRouting
  cors: RouteCors
  /** GET, when the plugin answers it rather than tus (download.ts). */
  download: ((request: Request) => Promise<Response>) | undefined
  /** The IETF resumable uploads draft (draft/exchange.ts). */
  draft: DraftProtocol
}

/** What the draft's side of the routes reads: tus, its store, and the backend's expiry clock. */
function draftSetup(
  tus: Server,
  backend: RouteBackend,
  fileIdOf: DraftSetup['fileIdOf'],
): DraftSetup {
  const { answers } = backend
  // When an upload just created expires (interop 8's 104 states it).
  const expiryOf = async (upload: Upload): Promise<Date | undefined> => {
    const facts = answers?.factsOfCreation
      ? await answers.factsOfCreation(upload)
      : await answers?.describe(upload.id)
    return facts?.expiresAt
  }
  return {
    tus,
    datastore: tus.datastore,
    fileIdOf,
    checksums: backend.checksums?.algorithms,
    expiryOf: answers ? expiryOf : undefined,
  }
}

/**
 * Runs the request through the guards and @tus/server and writes the answer. After `hijack()`
 * Fastify no longer answers for us, so every failure is caught here: one response, or a closed
 * socket.
 */
async function handOff(request: FastifyRequest, reply: FastifyReply, how: HandOff): Promise<void> {
  const res = reply.raw
  // Headers that the user's hooks set with reply.header() would be lost by hijack().
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) res.setHeader(name, value)
  }
  try {
    const method = request.raw.method ?? ''
    // A draft request is rewritten for tus here (or refused), and its answer worded back below.
    const draft = await how.draft.open(request, res)
    const refusal = draft
      ? draft.refusal
      : refusalFor(method, request.headers, how.backend.checksums?.algorithms)
    const handed = refusal ?? (await handedRequest(request, res, how))
    let response: Response
    if (handed instanceof Refusal) {
      response = refusalResponse(how.cors, request, handed)
    } else {
      response = await tusAnswer(how, handed.web, res, handed.context)
      await how.fixAnswer(handed.web, response)
      if (how.metrics) how.metrics.bytesReceived(bytesStored(request, response))
    }
    if (draft) response = await draft.answer(response)
    if (method === 'HEAD') {
      // The answer describes the upload, not a GET download; 0 frames it for every client.
      response.headers.set('Content-Length', '0')
      response.headers.delete('Content-Type')
    }
    how.cors.settle(res, request.headers.origin, response.headers)
    if (how.isClosing()) response.headers.set('Connection', 'close')
    if (response.body === null || !mayHaveBody(method, response)) {
      // tus builds most answers on an empty body (`new Response('')`, a 201 with
      // `Content-Length: 0`, a HEAD): there is nothing to stream.
      response.body?.cancel().catch(() => {})
      writeBodyless(res, response)
    } else {
      await sendNodeResponse(res, finalAnswer(response))
    }
  } catch (error) {
    request.log.error({ err: error }, 'fastify-tus: request failed after the hand-off to tus')
    if (!res.headersSent) {
      let tusHeaders: Record<string, string> = {}
      try {
        tusHeaders = how.cors.answerHeaders(request.headers.origin)
      } catch {
        // A user's allowedOrigins function that throws: the 500 goes out without CORS.
      }
      res.writeHead(500, {
        ...tusHeaders,
        'Content-Type': 'text/plain; charset=utf-8',
        Connection: 'close',
      })
      res.end('Internal Server Error\n')
    } else {
      res.destroy()
    }
  }
}

/**
 * The web request handed to tus, with its context (the one object that carries what the plugin
 * learns about the request to tus' hooks and events), or the refusal its `Upload-Concat`
 * deserves. With a backend that writes bodies itself, the body stays a Node stream for it.
 */
async function handedRequest(
  request: FastifyRequest,
  res: ServerResponse,
  how: HandOff,
): Promise<{ web: Request; context: RequestContext } | Refusal> {
  const { concatenation, writer } = how.backend
  const web = writer
    ? new DirectBodyRequest({ req: request.raw, res })
    : new NodeRequest({ req: request.raw, res })
  const context = openRequestContext(web, request)
  normalizeContentType(request.headers, web)
  // Upload-Concat is read here, for a backend that has the extension (without, tus answers 501).
  if (request.raw.method === 'POST' && concatenation) {
    const concat = await readConcat(request.headers, web, concatenation, how.concat)
    if (concat instanceof Refusal) return concat
    context.concat = concat
  }
  return { web, context }
}

/**
 * tus' answer to `webRequest`, with what the plugin adds for the concatenation extension: a
 * final upload is finished once created (its finish hook runs), its creation is answered from
 * the final that exists when it is a retry, and it waits for its answer to reach the client.
 */
async function tusAnswer(
  how: HandOff,
  webRequest: Request,
  res: ServerResponse,
  context: RequestContext,
): Promise<Response> {
  const { tus } = how
  if (webRequest.method === 'GET' && how.download) return how.download(webRequest)
  const { concatenation } = how.backend
  const parts = context.concat
  if (parts?.kind !== 'final' || !concatenation) {
    const response = await tus.handleWeb(webRequest)
    framingEmptyBody(webRequest.method, response)
    if (!concatenation || webRequest.method !== 'PATCH') return response
    return refusingPatchOfFinal(tus, concatenation, how.concat.fileIdOf(webRequest), response)
  }
  if (parts.existing !== undefined) {
    return answerExistingFinal(tus, concatenation, webRequest, res, parts.existing)
  }
  // A flag, not `res` itself: the concatenation the backend keeps must not lead to the request.
  const client = { gone: res.destroyed }
  if (!client.gone) res.once('close', () => (client.gone = true))
  context.concat = { ...parts, clientWaiting: () => !client.gone }
  return finishFinal(tus, concatenation, webRequest, await tus.handleWeb(webRequest), res)
}

/**
 * Whether an answer may carry bytes: not to HEAD, nor with 204 or 304 (RFC 9110, 6.4.1), nor
 * with `Content-Length: 0`.
 */
function mayHaveBody(method: string, response: Response): boolean {
  const { status, headers } = response
  return (
    method !== 'HEAD' && status !== 204 && status !== 304 && headers.get('content-length') !== '0'
  )
}

/**
 * tus gives every answer it writes with bytes a Content-Length (BaseHandler.write, Server.write),
 * all but a download's stream (GET): without one, the body is its '' (a creation's 201). Framed
 * with 0, it is written bodyless rather than streamed (`Transfer-Encoding: chunked`, one empty
 * chunk). Only for tus' own answers: a Response built here may carry a body without a length.
 */
function framingEmptyBody(method: string, response: Response): void {
  if (method !== 'GET' && response.body !== null && !response.headers.has('content-length')) {
    response.headers.set('Content-Length', '0')
  }
}

/** How far the answer moved the upload's offset: the bytes a PATCH (or a creation) stored. */
function bytesStored(request: FastifyRequest, response: Response): number {
  const after = response.headers.get('upload-offset')
  if (after === null) return 0
  if (request.raw.method === 'POST') return response.status === 201 ? Number(after) : 0
  if (request.raw.method !== 'PATCH' || response.status !== 204) return 0
  return Number(after) - Number(request.headers['upload-offset'])
}

/** Reason phrases of the statuses tus answers that Node does not know. */
const REASONS: Record<number, string> = { 460: 'Checksum Mismatch' }

/**
 * The answer as it is sent: with the standard reason phrase (`HTTP/1.1 201 Created`; tus builds
 * its answers without one, and an empty one would be sent as it is, `HTTP/1.1 201 `), and with a
 * body that can be cancelled safely (see cancel-safe.ts: a download cut by the client must not
 * end the process).
 */
function finalAnswer(response: Response): Response {
  const statusText = reasonOf(response)
  return new Response(response.body && cancelSafe(response.body), {
    status: response.status,
    statusText,
    headers: response.headers,
  })
}

/**
 * An answer without a body (HEAD, a PATCH's 204, OPTIONS), written as srvx writes one, with the
 * reason phrase, and without building a second Response for it (a HEAD costs less).
 */
function writeBodyless(res: ServerResponse, response: Response): void {
  const headers: string[] = []
  for (const [name, value] of response.headers) headers.push(name, value)
  if (!res.headersSent) {
    // HTTP/2 has no reason phrase.
    if (res.req?.httpVersion === '2.0') res.writeHead(response.status, headers)
    else res.writeHead(response.status, reasonOf(response), headers)
  }
  res.end()
}

/** The standard reason phrase of an answer's status. */
function reasonOf(response: Response): string {
  return response.statusText || STATUS_CODES[response.status] || REASONS[response.status] || ''
}

/** A header of the plugin's on an answer Fastify sends: lists keep what the app's hooks set. */
function mergedHeader(name: string, current: unknown, value: string): string {
  const lower = name.toLowerCase()
  if (lower === 'vary') return varyWith(current, value)
  return lower === EXPOSE_HEADERS && current !== undefined ? listUnion(current, value) : value
}

/** A `Vary` header that also names `value`, keeping what it named. */
function varyWith(current: unknown, value: string): string {
  if (current === undefined || current === '') return value
  const names = String(current)
    .split(',')
    .map((name) => name.trim().toLowerCase())
  return names.includes(value.toLowerCase()) || names.includes('*')
    ? String(current)
    : `${String(current)}, ${value}`
}

/** A guard's answer, with the headers tus puts on its own answers (version, CORS). */
function refusalResponse(cors: RouteCors, request: FastifyRequest, refusal: Refusal): Response {
  const headers = new Headers(cors.answerHeaders(request.headers.origin))
  // The body of a refused request is not read: closing beats reading it to the end.
  if (request.headers['content-length'] || request.headers['transfer-encoding']) {
    headers.set('Connection', 'close')
  }
  return refusalAnswer(refusal, headers)
}
