/**
 * The pump of the write path (write-path.ts): a request body's bytes from the socket's Node
 * stream into the upload's data file, with what tus' own path guarantees (the size limit: 413,
 * the crossing chunk is not written; a graceful stop when the lock is asked for; `ABORTED` when
 * the client goes away; `FILE_WRITE_ERROR` when the disk fails; the bytes so far kept in each
 * case), the digest of `Upload-Checksum` computed as the bytes go, and the roll-back of a body
 * whose digest does not match (460: the file is truncated back to its old length).
 */
import { createHash, type Hash } from 'node:crypto'
import fs from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { promisify } from 'node:util'
import { ERRORS } from '@tus/utils'
import { refusal } from '../../refusal.js'
import type { Checksum } from '../backend.js'
import { isDiskFull } from './free-space.js'
import { closeFd, isMissing, openStoreFd, truncateFd, UnsafeFileError } from './record-file.js'

/** tus' status for a body whose checksum does not match. */
export const CHECKSUM_MISMATCH = refusal(460, 'Checksum Mismatch')

/** Why a body stopped short of its end without a tus error: the room granted to it ran out. */
export class BodyStopped {
  constructor(
    /** `room`: the bytes granted (floor, quota) ran out; `disk`: the filesystem refused. */
    readonly by: 'room' | 'disk',
  ) {}
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
  onProgress?: ((received: number) => void) | undefined
  /** Told the bytes that have reached the file so far (for the free-space floor's claim). */
  onWritten?: ((bytesWritten: number) => void) | undefined
}

/**
 * How many bytes of a body may wait for the disk before the socket is paused. The stream's
 * default (16 KiB) is less than one socket read (64 KiB): every chunk would be a `write` of its
 * own, and the socket paused and resumed around each. With room for several chunks, those that
 * arrive while a write is under way go out together in one `writev`; a slow disk still holds at
 * most this much per upload in memory.
 */
const WRITE_BUFFER_BYTES = 256 * 1024

const lstat = promisify(fs.lstat)

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
    bytes = await new Pump(source, fd, options).run()
  } catch (error) {
    await closeFd(fd)
    throw error
  }
  // The file as the answer describes it (its clock), read alongside the close, not after it.
  const [, stats] = await Promise.all([closeFd(fd), lstat(file).catch(() => undefined)])
  return { bytes, stats }
}

/** One body into one open data file: listeners on the source, one write stream out. */
class Pump {
  readonly #source: IncomingMessage
  readonly #fd: number
  readonly #options: PumpOptions
  readonly #spaceLeft: number
  readonly #out: fs.WriteStream
  readonly #hash: Hash | undefined
  #received = 0
  #failure: unknown
  #stopped = false
  #settled = false
  #resolve: (bytes: number) => void = () => {}
  #reject: (error: unknown) => void = () => {}

  constructor(source: IncomingMessage, fd: number, options: PumpOptions) {
    this.#source = source
    this.#fd = fd
    this.#options = options
    this.#spaceLeft = options.spaceLeft ?? Number.POSITIVE_INFINITY
    // Left open by the stream (`autoClose: false`) for the truncation and the close.
    this.#out = fs.createWriteStream('', {
      fd,
      start: options.offset,
      autoClose: false,
      highWaterMark: WRITE_BUFFER_BYTES,
    })
    this.#hash = options.checksum ? createHash(options.checksum.algorithm) : undefined
  }

  /** Resolves to the bytes written once every write has reached the file. */
  run(): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
      this.#out.on('error', this.#onWriteError)
      this.#out.on('finish', this.#finish)
      const source = this.#source
      source.on('data', this.#onData)
      source.on('end', this.#onEnd)
      source.on('error', this.#onSourceGone)
      source.on('aborted', this.#onSourceGone)
      source.on('close', this.#onClose)
      this.#options.signal.addEventListener('abort', this.#onEnd, { once: true })
      source.resume()
    })
  }

  readonly #onData = (chunk: Buffer) => {
    const { maxBytes, onProgress, onWritten } = this.#options
    this.#received += chunk.length
    if (this.#received > maxBytes) return this.#stop(ERRORS.ERR_MAX_SIZE_EXCEEDED)
    if (this.#received > this.#spaceLeft) {
      // The part of the chunk that fits is kept: the body ends exactly at the limit.
      const fits = chunk.length - (this.#received - this.#spaceLeft)
      if (fits > 0) {
        this.#hash?.update(chunk.subarray(0, fits))
        this.#out.write(chunk.subarray(0, fits))
        onProgress?.(this.#spaceLeft)
      }
      return this.#stop(new BodyStopped('room'))
    }
    this.#hash?.update(chunk)
    onWritten?.(this.#out.bytesWritten)
    if (!this.#out.write(chunk)) {
      this.#source.pause()
      this.#out.once('drain', () => {
        if (!this.#stopped) this.#source.resume()
      })
    }
    onProgress?.(this.#received)
  }

  /** The body ended, or the lock was asked for: a graceful stop, the bytes so far kept. */
  readonly #onEnd = () => this.#stop(undefined)
  readonly #onSourceGone = () => this.#stop(ERRORS.ABORTED)
  readonly #onClose = () => {
    if (!this.#source.complete) this.#stop(ERRORS.ABORTED)
  }

  readonly #onWriteError = (error: unknown) => {
    const failed = isDiskFull(error) ? new BodyStopped('disk') : ERRORS.FILE_WRITE_ERROR
    this.#stop(failed)
    this.#failure = failed
    this.#finish()
  }

  #stop(error: unknown): void {
    if (this.#stopped) return
    this.#stopped = true
    this.#failure = error
    const source = this.#source
    source.off('data', this.#onData)
    source.off('end', this.#onEnd)
    source.off('error', this.#onSourceGone)
    source.off('aborted', this.#onSourceGone)
    source.off('close', this.#onClose)
    this.#options.signal.removeEventListener('abort', this.#onEnd)
    // Whatever is left of the body is not ours any more: Node discards it once the answer ends.
    if (!source.readableEnded) source.pause()
    this.#out.end()
  }

  /** Every write has reached the file (or failed): keep the bytes, or roll them back. */
  readonly #finish = () => {
    if (this.#settled) return
    this.#settled = true
    const { checksum, offset, onWritten } = this.#options
    onWritten?.(this.#out.bytesWritten)
    const failure = this.#failure
    if (checksum && (failure || !this.#hash?.digest().equals(checksum.digest))) {
      // The digest covers the whole body: bytes that do not match it are not the upload's.
      truncateFd(this.#fd, offset).then(
        () => this.#reject(failure ?? CHECKSUM_MISMATCH),
        () => this.#reject(ERRORS.FILE_WRITE_ERROR),
      )
    } else if (failure) this.#reject(failure)
    else this.#resolve(this.#out.bytesWritten)
  }
}
