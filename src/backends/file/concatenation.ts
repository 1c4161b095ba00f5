/**
 * The concatenation extension in the built-in store: partial uploads, and final uploads
 * assembled from them into one ordinary data file.
 *
 * - A partial upload is an ordinary upload whose record says `concat: "partial"`. It expires
 *   like an unfinished upload even once finished (expiry-policy.ts `mayExpire`): it only waits
 *   for the final upload that uses it.
 * - A final upload is assembled when it is created (as tusd does), from finished partials only:
 *   under the locks of its partials (taken in a fixed order, without asking a holder to let go),
 *   each partial is checked again, their bytes are copied in order into a temporary dot-file
 *   beside the final's data file (by `cat` in the kernel where it can be tied to this process'
 *   life, else through bounded buffers on libuv's threads) and linked in as the data file, and
 *   only then is the record written. A crash at any point leaves no final upload (a temporary
 *   file, or a data file without a record: both removed by the sweep as orphans), never a half
 *   file that claims to be finished; and no copy goes on without the process that started it.
 * - Once the final's record is written its partials are removed, right after the answer and
 *   still under their locks: parallel uploads do not double the disk space they use. A partial
 *   left by a crash in between is finished and unused, and the sweep removes it after the period.
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import type { Upload } from '@tus/utils'
import { ANSWER_PENDING, CONCAT } from '../../expiry/policy.js'
import type { HeldLock, SweepLocker } from '../../locking/activity-locker.js'
import { refusal } from '../../refusal.js'
import type { ConcatRequest } from '../backend.js'
import { isDiskFull } from './free-space.js'
import { tempNameFor } from './names.js'
import { openStoreFile } from './record-file.js'
import { note, notesOf } from './upload-notes.js'

/** What an `Upload-Concat` header asks for (backend.ts); a retried final's id is `existing`. */
export type Concat = ConcatRequest

/** The record fields of a final upload. */
export interface FinalRecordFields {
  [CONCAT]: 'final'
  /** The ids of its partial uploads, in order. */
  partials: string[]
  /** Its `Upload-Concat` header as HEAD answers it (`final;<url> <url>`). */
  concat_header: string
  /** Until someone knows of it (finals.ts). */
  [ANSWER_PENDING]?: true
}

/** The concatenation a creation asked for, from the request to the store's `create`. */
export function markConcat(upload: Upload, concat: Concat): void {
  note(upload, { asked: concat })
}

export function concatOf(upload: Upload): Concat | undefined {
  return notesOf(upload)?.asked
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
  what = 'partial upload',
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
      if (!lock) throw refusal(423, `${what} ${id} is in use; retry the final upload`)
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
 * Workers copying at once, each a segment at a time, when the copy runs in Node. Node reads into
 * a buffer and writes it out (two memory copies per byte, one libuv round trip per MiB each way):
 * several side by side keep the disk busy where one alone waits on each round trip (the figures:
 * BENCHMARKS.md, "Parallel uploads"). Memory: 8 MiB at most per assembly.
 */
const COPY_WORKERS = 4
/** The unit of work: so that a final of two partials also keeps four workers busy. */
const SEGMENT_BYTES = 16 * 1024 * 1024

/**
 * Below this many bytes in all, `auto` copies in Node: starting a `cat` process costs a few
 * milliseconds, what copying about this much through buffers costs.
 */
const KERNEL_COPY_MIN_BYTES = 4 * 1024 * 1024

/** A data file to copy: exactly `bytes` bytes from its start. */
export interface CopySource {
  file: string
  bytes: number
}

/**
 * How the bytes are copied: `kernel` hands the open files to `cat`, which copies them in the
 * kernel (`copy_file_range` with GNU coreutils ≥ 9), `node` copies them through buffers, and
 * `auto` (the default) takes `kernel` for 4 MiB or more where a `cat` can be started tied to
 * this process (see `kernelCopier`), and falls back to `node` when it fails or when a file holds
 * more than its `bytes`. A full disk is not retried: it fails the copy (ENOSPC).
 */
export type Copier = 'auto' | 'kernel' | 'node'

/**
 * Writes the first `bytes` bytes of each source, in order, to `target`, which must not exist:
 * through a temporary dot-file beside it, linked in once complete, so that `target` appears
 * whole or not at all. Each source is opened here as the store opens its files (no symbolic
 * link, a regular file of one link; `UnsafeFileError` otherwise), and only those open files are
 * copied. Like every write of the store, nothing is flushed to the disk here (see
 * docs/protocol.md). Resolves to the bytes written.
 */
export async function concatenateFiles(
  sources: readonly CopySource[],
  target: string,
  copier: Copier = 'auto',
): Promise<number> {
  const total = sources.reduce((sum, { bytes }) => sum + bytes, 0)
  const temp = tempNameFor(target)
  const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants
  const opened: Array<{ handle: fsp.FileHandle; stats: fs.Stats }> = []
  try {
    for (const { file } of sources) opened.push(await openStoreFile(file, 'read'))
    const out = await fsp.open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o644)
    try {
      const exact = opened.every(({ stats }, i) => stats.size === sources[i]?.bytes)
      const small = copier === 'auto' && total < KERNEL_COPY_MIN_BYTES
      const cat = copier === 'node' || small || !exact ? undefined : await kernelCopier()
      if (copier === 'kernel' && !cat) {
        throw new Error(
          exact ? 'no cat that dies with this process' : 'a source holds more than its bytes',
        )
      }
      let copied = false
      if (cat) {
        try {
          await catInto(
            cat,
            out.fd,
            opened.map(({ handle }) => handle.fd),
          )
          copied = (await out.stat()).size === total
        } catch (error) {
          if (copier === 'kernel' || isDiskFull(error)) throw error
        }
        if (!copied && copier === 'kernel') throw new Error('cat did not copy every byte')
      }
      if (!copied) {
        const segments: Segment[] = []
        let at = 0
        sources.forEach(({ file, bytes }, i) => {
          const { handle } = opened[i] as { handle: fsp.FileHandle }
          for (let from = 0; from < bytes; from += SEGMENT_BYTES) {
            const length = Math.min(SEGMENT_BYTES, bytes - from)
            segments.push({ file, handle, from, length, at })
            at += length
          }
        })
        await copyInNode(segments, out)
        // What a failed `cat` may have written past the end goes.
        await out.truncate(total)
      }
    } finally {
      await out.close()
    }
    // A link fails when the target exists; the temporary name goes right after.
    await fsp.link(temp, target)
  } finally {
    await Promise.allSettled(opened.map(({ handle }) => handle.close()))
    await fsp.unlink(temp).catch(() => {})
  }
  return total
}

/** A command that runs `cat`, killed by the kernel when this process dies. */
interface CatCommand {
  file: string
  args: string[]
}

let catFound: Promise<CatCommand | undefined> | undefined

/**
 * Run by `sh` once the death signal is set: a server that died before it was set (between the
 * fork and `setpriv`'s prctl) left the copy to another parent, so it must not start.
 */
const UNLESS_ORPHANED = '[ "$PPID" = "$1" ] || exit 75; cat=$2; shift 2; exec "$cat" "$@"'

/**
 * `cat` under util-linux' `setpriv --pdeathsig KILL`: the kernel kills it when this process dies
 * (a `kill -9` of the server), so that no copy goes on writing without it; and a `sh` between
 * the two checks that this process was still its parent once the signal was set. Looked for
 * once, and tried once; none where one is missing (not Linux, no util-linux): the copy is done
 * in Node.
 */
export function kernelCopier(): Promise<CatCommand | undefined> {
  catFound ??= (async () => {
    if (process.platform !== 'linux') return undefined
    const setpriv = await firstExecutable(['/usr/bin/setpriv', '/bin/setpriv'])
    const sh = await firstExecutable(['/bin/sh', '/usr/bin/sh'])
    const cat = await firstExecutable(['/usr/bin/cat', '/bin/cat'])
    if (!setpriv || !sh || !cat) return undefined
    const parent = String(process.pid)
    const args = ['--pdeathsig', 'KILL', '--', sh, '-c', UNLESS_ORPHANED, 'sh', parent, cat]
    const command = { file: setpriv, args }
    // An older setpriv without --pdeathsig fails here, once.
    return (await runs(command)) ? command : undefined
  })()
  return catFound
}

async function firstExecutable(candidates: string[]): Promise<string | undefined> {
  for (const candidate of candidates) {
    try {
      await fsp.access(candidate, fs.constants.X_OK)
      return candidate
    } catch {}
  }
  return undefined
}

function runs({ file, args }: CatCommand): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn(file, [...args, '/dev/null'], { stdio: 'ignore' })
    child.once('error', () => resolve(false))
    child.once('close', (code) => resolve(code === 0))
  })
}

/**
 * Runs `cat` over the open files `inputs` (handed to it as its descriptors 3, 4, ..., read as
 * `/dev/fd/N`: the files this process checked, not paths looked up again) with `out` as its
 * standard output, so that the bytes never pass through this process. A full disk rejects with
 * ENOSPC (or EDQUOT), as a write of this process would.
 */
function catInto(cat: CatCommand, out: number, inputs: readonly number[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const files = inputs.map((_, i) => `/dev/fd/${i + 3}`)
    const child = spawn(cat.file, [...cat.args, '--', ...files], {
      stdio: ['ignore', out, 'pipe', ...inputs],
    })
    let stderr = ''
    child.stderr?.setEncoding('utf8')
    child.stderr?.on('data', (chunk: string) => {
      if (stderr.length < 1000) stderr += chunk
    })
    child.once('error', reject)
    child.once('close', (code, signal) => {
      if (code === 0) return resolve()
      const error = new Error(`cat exited with ${signal ?? code}: ${stderr.trim()}`)
      const full = /No space left/.test(stderr) ? 'ENOSPC' : /quota/i.test(stderr) ? 'EDQUOT' : ''
      reject(full ? Object.assign(error, { code: full }) : error)
    })
  })
}

/** `length` bytes of an open source from `from`, to go to `at` in the target. */
interface Segment {
  file: string
  handle: fsp.FileHandle
  from: number
  length: number
  at: number
}

/**
 * The copy through buffers: segments of 16 MiB taken in turn by `COPY_WORKERS` workers; each
 * reads its next buffer while its last one is written (all on libuv's threads).
 */
async function copyInNode(segments: readonly Segment[], out: fsp.FileHandle): Promise<void> {
  let next = 0
  const worker = async () => {
    const buffers = [Buffer.allocUnsafe(COPY_BUFFER_BYTES), Buffer.allocUnsafe(COPY_BUFFER_BYTES)]
    while (next < segments.length) {
      await copySegment(out, segments[next++] as Segment, buffers)
    }
  }
  const workers = Math.min(COPY_WORKERS, segments.length)
  const results = await Promise.allSettled(Array.from({ length: workers }, worker))
  const failed = results.find((r) => r.status === 'rejected')
  if (failed) throw failed.reason
}

/** Copies one segment into `out`, reading one buffer while writing the other. */
async function copySegment(out: fsp.FileHandle, segment: Segment, buffers: Buffer[]) {
  const { handle } = segment
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
