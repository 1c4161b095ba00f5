/**
 * The write path of the built-in store: request bytes go from the socket's Node stream straight
 * into the data file.
 *
 * The stock path sends every chunk through Node request → srvx web `Request` → web
 * `ReadableStream` → `Readable.fromWeb` → PassThrough → StreamLimiter → the store's counting
 * Transform → `fs.createWriteStream`: two promise-based queues and three Node transforms per chunk.
 * Here the handlers' `writeToStore` (PATCH, and POST with a body) receives the Node request
 * through a marked body and pumps it into the file, keeping what the stock path guarantees: the
 * size limit (413, the crossing chunk is not written), a graceful stop when the lock is asked
 * for (the bytes so far are kept and the new offset returned), `ABORTED` when the client goes
 * away (the bytes so far are kept), `FILE_WRITE_ERROR` when the disk fails, and POST_RECEIVE
 * progress events. It also verifies `Upload-Checksum` as the bytes are written, and rolls the
 * file back to its old length when the digest does not match (460).
 */
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import type { IncomingMessage } from 'node:http'
import { Readable } from 'node:stream'
import { promisify } from 'node:util'
import type { Server } from '@tus/server'
import { type CancellationContext, ERRORS, EVENTS, type Upload } from '@tus/utils'
import { NodeRequest } from 'srvx/node'
import type { DirectWriteStore } from '../backends/file/direct-write.js'
import {
  diskFull,
  insufficientStorage,
  isDiskFull,
  type SpaceClaim,
} from '../backends/file/free-space.js'
import { QUOTA_UNAVAILABLE, type QuotaClaim, quotaExceeded } from '../backends/file/quota.js'
import {
  closeFd,
  isMissing,
  openStoreFd,
  truncateFd,
  UnsafeFileError,
} from '../backends/file/record-file.js'
import { type WritingHandler, wrapWriteToStore } from '../tus-internals.js'
import { CHECKSUM_MISMATCH, type Checksum, parseChecksum } from './protocol.js'

const NODE_BODY = Symbol('fastify-tus.nodeBody')

type MarkedBody = ReadableStream<Uint8Array> & { [NODE_BODY]: IncomingMessage }

/**
 * A srvx request whose `body` keeps the Node stream within reach of the handlers below. The body
 * is still a real web stream for anyone else who reads it (a user hook, a fallback path): it
 * converts the Node stream only when first pulled, so nothing is read before someone asks.
 */
export class DirectBodyRequest extends NodeRequest {
  readonly nodeRequest: IncomingMessage
  directBody: MarkedBody | null | undefined

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
      this.directBody = method === 'GET' || method === 'HEAD' ? null : markedBody(this.nodeRequest)
    }
    return this.directBody
  },
})

function markedBody(source: IncomingMessage): MarkedBody {
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined
  const stream = new ReadableStream<Uint8Array>(
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
  return Object.assign(stream, { [NODE_BODY]: source })
}

/** What a body was written to by the direct path. */
export interface Written {
  /** The `Upload` the store handed the handler. */
  upload: Upload
  /** Its data file's `lstat` once the body's bytes were in it; `undefined` if it failed. */
  stats: fs.Stats | undefined
}

/** The upload each request wrote its body to through the direct path, for its answer. */
const writtenUploads = new WeakMap<IncomingMessage, Written>()

/**
 * What the direct path wrote `request`'s body to, once the write ended without an error
 * (whole, or stopped gracefully); `undefined` otherwise (another path, a failure, no body yet).
 */
export function uploadWrittenBy(request: Request): Written | undefined {
  return request instanceof DirectBodyRequest ? writtenUploads.get(request.nodeRequest) : undefined
}

/** The Node request behind a body made by `DirectBodyRequest`, or `undefined`. */
function nodeBodyOf(body: unknown): IncomingMessage | undefined {
  return body !== null && typeof body === 'object' && NODE_BODY in body
    ? (body as MarkedBody)[NODE_BODY]
    : undefined
}

function isDirectWriteStore(store: unknown): store is DirectWriteStore {
  return typeof (store as Partial<DirectWriteStore>).dataPathOf === 'function'
}

export interface PumpOptions {
  offset: number
  /** The body's expected digest: on a mismatch (or a body cut short) the file is truncated back. */
  checksum?: Checksum | undefined
  /** Bytes this request may add; more is a 413, as with the stock StreamLimiter. */
  maxBytes: number
  /** Bytes the free-space floor (and the quota) still allow: the body stops exactly there. */
  spaceLeft?: number | undefined
  /** Aborts gracefully: what arrived so far is written and counted. */
  signal: AbortSignal
  onProgress?: (received: number) => void
  /** Told the bytes that have reached the file so far (for the free-space floor's claim). */
  onWritten?: ((bytesWritten: number) => void) | undefined
}

/**
 * How many bytes of a body may wait for the disk before the socket is paused. The stream's
 * default (16 KiB) is less than one socket read (64 KiB): every chunk was then a `write` of its
 * own, handed to the thread pool, and the socket paused and resumed around each. With room for
 * several chunks, those that arrive while a write is under way go out together in one `writev`.
 * On this VM a bare pipe spent 3.1-3.8 s of CPU per GiB with 16 KiB, about 2.7 with 256 KiB and
 * 2.0-2.7 with 1 MiB; 256 KiB keeps most of the gain while a slow disk holds at most a quarter
 * of a MiB per upload in memory (500 uploads at once: 125 MiB, not 500).
 */
const WRITE_BUFFER_BYTES = 256 * 1024

/** A body stopped at the free-space floor: the bytes before it are kept (unless checksummed). */
const OUT_OF_SPACE = Symbol('out of space')
/** The filesystem refused a write (ENOSPC, EDQUOT): the bytes before it are kept, as above. */
const DISK_FULL = Symbol('disk full')

/**
 * Writes `source` into the data file `file` at `offset`; resolves to the number of bytes
 * written and the file's `lstat` once they are in it (`undefined` if that failed). The file is
 * opened without following a link, and must be a regular file with one link (record-file.ts):
 * otherwise 404, and nothing is written.
 */
export async function pumpToFile(
  source: IncomingMessage,
  file: string,
  options: PumpOptions,
): Promise<{ bytes: number; stats: fs.Stats | undefined }> {
  if (options.signal.aborted) throw ERRORS.ABORTED
  let fd: number
  try {
    ;({ fd } = await openStoreFd(file, 'write'))
  } catch (error) {
    if (error instanceof UnsafeFileError || isMissing(error)) throw ERRORS.FILE_NOT_FOUND
    throw ERRORS.FILE_WRITE_ERROR
  }
  let bytes: number
  try {
    bytes = await pump(source, fd, options)
  } catch (error) {
    await closeFd(fd)
    throw error
  }
  // The file as the answer describes it (its clock), read alongside the close, not after it.
  const [, stats] = await Promise.all([closeFd(fd), lstat(file).catch(() => undefined)])
  return { bytes, stats }
}

const lstat = promisify(fs.lstat)

function pump(source: IncomingMessage, fd: number, options: PumpOptions): Promise<number> {
  const {
    offset,
    maxBytes,
    spaceLeft = Number.POSITIVE_INFINITY,
    signal,
    onProgress,
    onWritten,
    checksum,
  } = options
  return new Promise<number>((resolve, reject) => {
    // Left open by the stream (`autoClose: false`) for the truncation and the close below.
    const out = fs.createWriteStream('', {
      fd,
      start: offset,
      autoClose: false,
      highWaterMark: WRITE_BUFFER_BYTES,
    })
    const hash = checksum ? createHash(checksum.algorithm) : undefined
    let received = 0
    let failure: unknown
    let stopped = false
    let settled = false

    const onData = (chunk: Buffer) => {
      received += chunk.length
      if (received > maxBytes) return stop(ERRORS.ERR_MAX_SIZE_EXCEEDED)
      if (received > spaceLeft) {
        // The part of the chunk that fits is kept: the body ends exactly at the limit.
        const fits = chunk.length - (received - spaceLeft)
        if (fits > 0) {
          hash?.update(chunk.subarray(0, fits))
          out.write(chunk.subarray(0, fits))
          onProgress?.(spaceLeft)
        }
        return stop(OUT_OF_SPACE)
      }
      hash?.update(chunk)
      onWritten?.(out.bytesWritten)
      if (!out.write(chunk)) {
        source.pause()
        out.once('drain', () => {
          if (!stopped) source.resume()
        })
      }
      onProgress?.(received)
    }
    const onEnd = () => stop(undefined)
    const onSourceGone = () => stop(ERRORS.ABORTED)
    const onClose = () => {
      if (!source.complete) stop(ERRORS.ABORTED)
    }
    const onAbort = () => stop(undefined)

    function stop(error: unknown) {
      if (stopped) return
      stopped = true
      failure = error
      source.off('data', onData)
      source.off('end', onEnd)
      source.off('error', onSourceGone)
      source.off('aborted', onSourceGone)
      source.off('close', onClose)
      signal.removeEventListener('abort', onAbort)
      // Whatever is left of the body is not ours any more: Node discards it once the answer ends.
      if (!source.readableEnded) source.pause()
      out.end()
    }

    /** Every write has reached the file (or failed): keep the bytes, or roll them back. */
    function finish() {
      if (settled) return
      settled = true
      onWritten?.(out.bytesWritten)
      if (checksum && (failure || !hash?.digest().equals(checksum.digest))) {
        // The digest covers the whole body: bytes that do not match it are not the upload's.
        truncateFd(fd, offset).then(
          () => reject(failure ?? CHECKSUM_MISMATCH),
          () => reject(ERRORS.FILE_WRITE_ERROR),
        )
      } else if (failure) reject(failure)
      else resolve(out.bytesWritten)
    }

    out.on('error', (error) => {
      const failed = isDiskFull(error) ? DISK_FULL : ERRORS.FILE_WRITE_ERROR
      stop(failed)
      failure = failed
      finish()
    })
    out.on('finish', finish)
    source.on('data', onData)
    source.on('end', onEnd)
    source.on('error', onSourceGone)
    source.on('aborted', onSourceGone)
    source.on('close', onClose)
    signal.addEventListener('abort', onAbort, { once: true })
    source.resume()
  })
}

/**
 * Routes the `writeToStore` of the server's PATCH and POST handlers through the direct path when
 * the body came from a `DirectBodyRequest` and the store can take it; otherwise through the
 * stock one.
 */
export function installDirectWrite(server: Server): void {
  wrapWriteToStore(server, (handler, stock) => async (body, upload, maxFileSize, context) => {
    const written = await writeDirect(handler, body, upload, maxFileSize, context)
    return written ?? stock(body, upload, maxFileSize, context)
  })
}

/** `writeToStore` for the direct path, or `undefined` when it does not apply. */
async function writeDirect(
  handler: WritingHandler,
  body: ReadableStream | null,
  upload: Upload,
  maxFileSize: number,
  context: CancellationContext,
): Promise<number | undefined> {
  const source = nodeBodyOf(body)
  if (!source || !isDirectWriteStore(handler.store)) return undefined
  const header = source.headers['upload-checksum']
  const checksum = header === undefined ? undefined : parseChecksum(header)
  if (checksum && 'status' in checksum) throw { status_code: checksum.status, body: checksum.body }
  const store = handler.store
  const length = Number(source.headers['content-length'])
  const wanted = Math.min(Number.isSafeInteger(length) ? length : maxFileSize, maxFileSize)
  const room = await claimRoom(store, upload, wanted)
  let stats: fs.Stats | undefined
  const pumping = () =>
    pumpToFile(source, store.dataPathOf(upload.id), {
      checksum,
      offset: upload.offset,
      maxBytes: maxFileSize,
      spaceLeft: Number.isFinite(room.left) ? room.left : undefined,
      signal: context.signal,
      onProgress: progressEvents(handler, source, upload),
      onWritten: room.space && ((written) => room.space?.wrote(written)),
    }).then(
      (result) => {
        stats = result.stats
        return result.bytes
      },
      (error) => room.refused(error, Number.isSafeInteger(length) ? length : undefined),
    )
  try {
    const offset = await writtenWith(store, upload, pumping, checksum)
    writtenUploads.set(source, { upload, stats })
    return offset
  } finally {
    await room.settle()
  }
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

/** The room a body may take: what the free-space floor and the store quota grant it. */
interface Room {
  /** Bytes the body may write before one of them stops it. */
  left: number
  /** The floor's claim, told the bytes written as they are. */
  space: SpaceClaim | undefined
  /** The error of a body that stopped: a 507 when it was the room that stopped it. */
  refused(error: unknown, neededBytes: number | undefined): Promise<never>
  /** The body ended: the claims keep what it added to the file, the rest goes back. */
  settle(): Promise<void>
}

/**
 * Claims room for a body of at most `wanted` bytes: of the free-space floor (writes under way
 * count), and of the quota when the upload's length is deferred (a declared length took all of
 * its bytes at creation or declaration; a deferred one grows with its bytes, up to what is left).
 */
async function claimRoom(store: DirectWriteStore, upload: Upload, wanted: number): Promise<Room> {
  const { space, quota } = store
  const rest = upload.size === undefined ? wanted : Math.min(wanted, upload.size - upload.offset)
  const claimed = space ? await space.claim(Math.max(0, rest), { partial: true }) : undefined
  let quotaClaim: QuotaClaim | undefined
  try {
    quotaClaim =
      quota && upload.size === undefined
        ? await quota
            .claim(Math.min(wanted, Number.MAX_SAFE_INTEGER), {
              partial: true,
              grows: { id: upload.id, from: upload.offset },
            })
            .catch(() => {
              throw QUOTA_UNAVAILABLE
            })
        : undefined
  } catch (error) {
    claimed?.release(0)
    throw error
  }
  const freeLeft = claimed?.granted ?? Number.POSITIVE_INFINITY
  const quotaLeft = quotaClaim?.granted ?? Number.POSITIVE_INFINITY
  return {
    left: Math.min(freeLeft, quotaLeft),
    space: claimed,
    refused: async (error, length) => {
      const neededBytes = length ?? Math.min(freeLeft, quotaLeft) + 1
      if (error === OUT_OF_SPACE && quota && quotaLeft <= freeLeft) {
        // The quota is reached (the claim told the quota's listeners): bytes so far kept, 507.
        const storeBytes = quota.lastSeen ?? 0
        throw quotaExceeded({ storeBytes, maxStoreBytes: quota.maxStoreBytes, neededBytes })
      }
      if (error !== OUT_OF_SPACE && error !== DISK_FULL) throw error
      // The floor, or the disk itself, is reached: the bytes so far are kept, and the answer
      // says where they end (507).
      const low = {
        freeBytes: space ? await space.freeBytes().catch(() => 0) : 0,
        minFreeBytes: space?.minFreeBytes ?? 0,
        neededBytes,
      }
      space?.reportLow(low)
      throw error === DISK_FULL ? diskFull({ code: 'ENOSPC' }) : insufficientStorage(low)
    },
    settle: async () => {
      claimed?.release()
      if (!quotaClaim) return
      // What the body left in the file stays counted; the rest of the claim goes back.
      const size = await fsp.lstat(store.dataPathOf(upload.id)).then(
        (stats) => stats.size,
        () => upload.offset,
      )
      await quotaClaim.settle(size - upload.offset)
    },
  }
}

/**
 * Pumps the body; with a checksum, the bytes past the offset are marked unverified in the record
 * until the digest matched. Resolves to the new offset.
 */
async function writtenWith(
  store: DirectWriteStore,
  upload: Upload,
  pump: () => Promise<number>,
  checksum: Checksum | undefined,
): Promise<number> {
  const offset = upload.offset
  if (!checksum) return offset + (await pump())
  await store.beginChecksummedWrite(upload.id, offset)
  let bytes: number
  try {
    bytes = await pump()
  } finally {
    await store.endChecksummedWrite(upload.id)
  }
  return offset + bytes
}
