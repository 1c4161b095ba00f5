/**
 * The concatenation extension in the built-in store: partial uploads, and final uploads
 * assembled from them into one ordinary data file.
 *
 * - A partial upload is an ordinary upload whose record says `concat: "partial"`. It expires
 *   like an unfinished upload even once finished (expiry-policy.ts `mayExpire`): it only waits
 *   for the final upload that uses it.
 * - A final upload is assembled when it is created (as tusd does), from finished partials only:
 *   under the locks of its partials (taken in a fixed order, without asking a holder to let go),
 *   each partial is checked again, their bytes are copied to their places in a temporary dot-file
 *   beside the final's data file (bounded buffers, on libuv's threads) and linked in as the data
 *   file, and only then is the record written. A crash at any point leaves no final
 *   upload (a temporary file, or a data file without a record: both removed by the sweep as
 *   orphans once older than the period), never a half file that claims to be finished.
 * - Once the final's record is written its partials are removed, right after the answer and
 *   still under their locks: parallel uploads do not double the disk space they use. A partial
 *   left by a crash in between is finished and unused, and the sweep removes it after the period.
 */
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import type { Upload } from '@tus/utils'
import type { HeldLock, SweepLocker } from '../sweep/activity-locker.js'
import { CONCAT } from './expiry-policy.js'
import { openStoreFile, tempNameFor } from './record-file.js'

/** What an `Upload-Concat` header asks for, once its URLs are read as upload ids. */
export type Concat = { kind: 'partial' } | { kind: 'final'; partials: string[]; header: string }

/** The record fields of a final upload. */
export interface FinalRecordFields {
  [CONCAT]: 'final'
  /** The ids of its partial uploads, in order. */
  partials: string[]
  /** Its `Upload-Concat` header as HEAD answers it (`final;<url> <url>`). */
  concat_header: string
}

/** An error tus answers as it is (`status_code`, `body`), as the stock errors are. */
export interface TusError {
  status_code: number
  body: string
}

export function tusError(status_code: number, body: string): TusError {
  return { status_code, body: `${body}\n` }
}

/** The concatenation a creation asked for, from the request to the store's `create`. */
const uploads = new WeakMap<Upload, Concat>()

export function markConcat(upload: Upload, concat: Concat): void {
  uploads.set(upload, concat)
}

export function concatOf(upload: Upload): Concat | undefined {
  return uploads.get(upload)
}

/** How long the final waits for a partial's lock that a short request (a HEAD) holds. */
const PARTIAL_LOCK_WAIT_MS = 2000
const PARTIAL_LOCK_RETRY_MS = 25

/**
 * Takes the locks of `ids` in sorted order, each without asking its holder to let go (a request
 * holding a partial only reads it, or writes it when it is unfinished, which the check under
 * the lock then refuses). Rejects with 423 when one stays busy; the locks taken are released.
 */
export async function lockPartials(
  locker: SweepLocker | undefined,
  ids: readonly string[],
): Promise<HeldLock[]> {
  if (!locker) return []
  const held: HeldLock[] = []
  try {
    for (const id of [...new Set(ids)].sort()) {
      const deadline = performance.now() + PARTIAL_LOCK_WAIT_MS
      let lock = await locker.tryLock(id)
      while (!lock && performance.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, PARTIAL_LOCK_RETRY_MS))
        lock = await locker.tryLock(id)
      }
      if (!lock) throw tusError(423, `partial upload ${id} is in use; retry the final upload`)
      held.push(lock)
    }
    return held
  } catch (error) {
    await unlockAll(held)
    throw error
  }
}

export async function unlockAll(locks: readonly HeldLock[]): Promise<void> {
  await Promise.allSettled(locks.map((lock) => lock.unlock()))
}

/** Each worker's two copy buffers hold this much each. */
const COPY_BUFFER_BYTES = 1024 * 1024
/**
 * Workers copying at once, each a segment at a time. Node reads into a buffer and writes it out
 * (two memory copies per byte, one libuv round trip per MiB each way); four side by side come
 * within 1.3× of `cat` on a 2-core machine, where one alone takes about 2× (BENCHMARKS.md).
 * Memory: 8 MiB at most per assembly.
 */
const COPY_WORKERS = 4
/** The unit of work: so that a final of two partials also keeps four workers busy. */
const SEGMENT_BYTES = 16 * 1024 * 1024

/** A data file to copy: exactly `bytes` bytes from its start. */
export interface CopySource {
  file: string
  bytes: number
}

/** `length` bytes of `file` from `from`, to go to `at` in the target. */
interface Segment {
  file: string
  from: number
  length: number
  at: number
}

/**
 * Writes the first `bytes` bytes of each source, in order, to `target`, which must not exist:
 * through a temporary dot-file beside it, linked in once complete, so that `target` appears
 * whole or not at all. The bytes are copied to their places in segments of 16 MiB by
 * `COPY_WORKERS` workers; each reads its next buffer while its last one is written (all on
 * libuv's threads). Like every write of the store, nothing is flushed to the disk here (see
 * docs/protocol.md). Resolves to the bytes written.
 */
export async function concatenateFiles(
  sources: readonly CopySource[],
  target: string,
): Promise<number> {
  const segments: Segment[] = []
  let total = 0
  for (const { file, bytes } of sources) {
    for (let from = 0; from < bytes; from += SEGMENT_BYTES) {
      const length = Math.min(SEGMENT_BYTES, bytes - from)
      segments.push({ file, from, length, at: total + from })
    }
    total += bytes
  }
  const temp = tempNameFor(target)
  const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants
  const out = await fsp.open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o644)
  try {
    try {
      let next = 0
      const worker = async () => {
        const buffers = [
          Buffer.allocUnsafe(COPY_BUFFER_BYTES),
          Buffer.allocUnsafe(COPY_BUFFER_BYTES),
        ]
        while (next < segments.length) {
          await copySegment(out, segments[next++] as Segment, buffers)
        }
      }
      const workers = Math.min(COPY_WORKERS, segments.length)
      const results = await Promise.allSettled(Array.from({ length: workers }, worker))
      const failed = results.find((r) => r.status === 'rejected')
      if (failed) throw failed.reason
    } finally {
      await out.close()
    }
    // A link fails when the target exists; the temporary name goes right after.
    await fsp.link(temp, target)
  } finally {
    await fsp.unlink(temp).catch(() => {})
  }
  return total
}

/** Copies one segment into `out`, reading one buffer while writing the other. */
async function copySegment(out: fsp.FileHandle, segment: Segment, buffers: Buffer[]) {
  const { handle } = await openStoreFile(segment.file, 'read')
  let writing: Promise<void> = Promise.resolve()
  try {
    let turn = 0
    for (let done = 0; done < segment.length; ) {
      // This buffer's last write was awaited in the round before: it is free.
      const buffer = buffers[turn] as Buffer
      const want = Math.min(buffer.length, segment.length - done)
      const [{ bytesRead }] = await Promise.all([
        handle.read(buffer, 0, want, segment.from + done),
        writing,
      ])
      if (bytesRead === 0) {
        throw new Error(`${segment.file} is shorter than ${segment.from + segment.length} bytes`)
      }
      writing = writeAll(out, buffer, bytesRead, segment.at + done)
      done += bytesRead
      turn ^= 1
    }
    await writing
  } finally {
    await writing.catch(() => {})
    await handle.close()
  }
}

async function writeAll(
  out: fsp.FileHandle,
  buffer: Buffer,
  length: number,
  position: number,
): Promise<void> {
  for (let done = 0; done < length; ) {
    const { bytesWritten } = await out.write(buffer, done, length - done, position + done)
    done += bytesWritten
  }
}
