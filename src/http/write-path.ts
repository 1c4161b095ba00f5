/**
 * The hook of the direct write path into @tus/server's handlers. The write itself (space, pump,
 * checksum, settle) is the backend's (`writer`; for the built-in store,
 * backends/file/write-path.ts); here, the request handed to tus keeps its Node stream within
 * reach, and the handlers' `writeToStore` (PATCH, and POST with a body) hands that stream to the
 * writer instead of reading the web stream tus would read.
 */
import type { IncomingMessage } from 'node:http'
import { Readable } from 'node:stream'
import type { Server } from '@tus/server'
import { type CancellationContext, EVENTS, type Upload } from '@tus/utils'
import { NodeRequest } from 'srvx/node'
import type { BodyWriter, Checksums } from '../backends/backend.js'
import { Refusal, refusal } from '../refusal.js'
import { type WritingHandler, wrapWriteToStore } from '../tus-internals.js'
import { parseChecksum } from './protocol.js'
import { contextOf } from './request-context.js'

/**
 * A request body that is a real web stream for anyone who reads it (a user hook, a fallback
 * path), and keeps the Node stream it comes from for the direct write path. It converts the Node
 * stream only when first pulled, so nothing is read before someone asks.
 */
export class NodeBody extends ReadableStream<Uint8Array> {
  readonly source: IncomingMessage

  constructor(source: IncomingMessage) {
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined
    super(
      {
        async pull(controller) {
          reader ??= (Readable.toWeb(source) as ReadableStream<Uint8Array>).getReader()
          const { done, value } = await reader.read()
          if (done) controller.close()
          else controller.enqueue(value)
        },
        async cancel(reason) {
          if (reader) await reader.cancel(reason)
          else source.destroy()
        },
      },
      // 0: no pull before a read, so the Node stream stays untouched unless someone reads this.
      { highWaterMark: 0 },
    )
    this.source = source
  }
}

/** A srvx request whose `body` is a `NodeBody`: the handlers below reach the Node stream. */
export class DirectBodyRequest extends NodeRequest {
  readonly nodeRequest: IncomingMessage
  directBody: NodeBody | null | undefined

  constructor(context: ConstructorParameters<typeof NodeRequest>[0]) {
    super(context)
    this.nodeRequest = context.req as IncomingMessage
  }
}
// An accessor over the base class's own: TypeScript sees `body` as a plain property of Request.
Object.defineProperty(DirectBodyRequest.prototype, 'body', {
  get(this: DirectBodyRequest) {
    if (this.directBody === undefined) {
      const method = this.nodeRequest.method
      this.directBody =
        method === 'GET' || method === 'HEAD' ? null : new NodeBody(this.nodeRequest)
    }
    return this.directBody
  },
})

/**
 * Routes the `writeToStore` of the server's PATCH and POST handlers to `writer` when the body is
 * a `NodeBody`; otherwise through the stock path.
 */
export function installDirectWrite(
  server: Server,
  writer: BodyWriter,
  {
    checksums,
    isFinal,
  }: { checksums: Checksums; isFinal?: ((upload: Upload) => boolean) | undefined },
): void {
  const patch = server.handlers.PATCH as unknown
  wrapWriteToStore(server, (handler, stock) => async (body, upload, maxFileSize, context) => {
    // Under the lock, on the upload tus just read: a final upload's bytes come from its partials.
    if (handler === patch && isFinal?.(upload)) throw FINAL_PATCHED
    if (!(body instanceof NodeBody)) return stock(body, upload, maxFileSize, context)
    const direct = { writer, handler, checksums: checksums.algorithms }
    return writeDirect(direct, body.source, upload, maxFileSize, context)
  })
}

/**
 * tus 1.0, "Concatenation": "The Server MUST respond with the 403 Forbidden status to PATCH
 * requests against a final upload URL and MUST NOT modify the final or its partial uploads."
 */
export const FINAL_PATCHED = refusal(
  403,
  'a final upload cannot be patched: its bytes come from its partials',
)

interface DirectWrite {
  writer: BodyWriter
  handler: WritingHandler
  /** The algorithms the backend verifies: any other `Upload-Checksum` answers 400. */
  checksums: readonly string[]
}

/** `writeToStore` for the direct path: what the writer needs, read from the request. */
async function writeDirect(
  { writer, handler, checksums }: DirectWrite,
  source: IncomingMessage,
  upload: Upload,
  maxFileSize: number,
  context: CancellationContext,
): Promise<number> {
  const header = source.headers['upload-checksum']
  const checksum = header === undefined ? undefined : parseChecksum(header, checksums)
  // Thrown inside tus' handler: tus answers it (400).
  if (checksum instanceof Refusal) throw checksum
  const length = Number(source.headers['content-length'])
  const { offset, written } = await writer.write(source, upload, {
    maxBytes: maxFileSize,
    contentLength: Number.isSafeInteger(length) ? length : undefined,
    checksum,
    signal: context.signal,
    onProgress: progressEvents(handler, source, upload),
  })
  const requestContext = contextOf(source)
  if (requestContext) requestContext.written = written
  return offset
}

/** POST_RECEIVE progress events, at most one per `postReceiveInterval`, when anyone listens. */
function progressEvents(
  handler: WritingHandler,
  source: IncomingMessage,
  upload: Upload,
): ((received: number) => void) | undefined {
  if (handler.listenerCount(EVENTS.POST_RECEIVE) === 0) return undefined
  const interval = handler.options.postReceiveInterval ?? 1000
  let nextProgress = performance.now() + interval
  return (received: number) => {
    const now = performance.now()
    if (now < nextProgress) return
    nextProgress = now + interval
    handler.emit(EVENTS.POST_RECEIVE, source, { ...upload, offset: upload.offset + received })
  }
}
