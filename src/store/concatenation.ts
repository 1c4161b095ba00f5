/**
 * The concatenation extension in the built-in store: partial uploads, and final uploads
 * assembled from them into one ordinary data file.
 *
 * - A partial upload is an ordinary upload whose record says `concat: "partial"`. It expires
 *   like an unfinished upload even once finished (expiry-policy.ts `mayExpire`): it only waits
 *   for the final upload that uses it.
 * - A final upload is assembled when it is created (as tusd does), from finished partials only:
 *   under the locks of its partials (taken in a fixed order, without asking a holder to let go),
 *   each partial is checked again, their bytes are copied in order into a temporary dot-file beside
 *   the final's data file (a bounded buffer, on libuv's threads), flushed to the disk and linked in
 *   as the data file, and only then is the record written. A crash at any point leaves no final
 *   upload (a temporary file, or a data file without a record: both removed by the sweep as
 *   orphans once older than the period), never a half file that claims to be finished.
 * - Once the final's record is written its partials are removed at once: parallel uploads do
 *   not double the disk space they use. A partial left by a crash in between is finished and
 *   unused, and the sweep removes it after the period.
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
 * Partials copied at once. One copy through user space costs two memory copies per byte (read,
 * then write) where `cp` makes one in the kernel (copy_file_range, which Node does not offer at an
 * offset): two copies side by side use both cores of a small machine. Memory: 4 MiB at most.
 */
const COPY_WORKERS = 2

/** A data file to copy: exactly `bytes` bytes from its start. */
export interface CopySource {
  file: string
  bytes: number
}

/**
 * Writes the first `bytes` bytes of each source, in order, to `target`, which must not exist:
 * through a temporary dot-file beside it, linked in once complete, so that `target` appears
 * whole or not at all. Sources are copied to their places in the file by `COPY_WORKERS` workers;
 * each reads its next buffer while its last one is written (all on libuv's threads). Like every
 * write of the store, nothing is flushed to the disk here (see docs/protocol.md). Resolves to the
 * bytes written.
 */
export async function concatenateFiles(
  sources: readonly CopySource[],
  target: string,
): Promise<number> {
  const temp = tempNameFor(target)
  const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants
  const out = await fsp.open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o644)
  const starts: number[] = []
  let total = 0
  for (const source of sources) {
    starts.push(total)
    total += source.bytes
  }
  try {
    try {
      let next = 0
      const worker = async () => {
        const buffers = [
          Buffer.allocUnsafe(COPY_BUFFER_BYTES),
          Buffer.allocUnsafe(COPY_BUFFER_BYTES),
        ]
        while (next < sources.length) {
          const i = next++
          await copyInto(out, sources[i] as CopySource, starts[i] as number, buffers)
        }
      }
      const workers = Math.min(COPY_WORKERS, sources.length)
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

/** Copies `source` to `at` in `out`, reading one buffer while writing the other. */
async function copyInto(
  out: fsp.FileHandle,
  source: CopySource,
  at: number,
  buffers: Buffer[],
): Promise<void> {
  const { handle } = await openStoreFile(source.file, 'read')
  let writing: Promise<void> = Promise.resolve()
  try {
    let turn = 0
    for (let position = 0; position < source.bytes; ) {
      // This buffer's last write was awaited in the round before: it is free.
      const buffer = buffers[turn] as Buffer
      const want = Math.min(buffer.length, source.bytes - position)
      const [{ bytesRead }] = await Promise.all([handle.read(buffer, 0, want, position), writing])
      if (bytesRead === 0) throw new Error(`${source.file} is shorter than ${source.bytes} bytes`)
      writing = writeAll(out, buffer, bytesRead, at + position)
      position += bytesRead
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
