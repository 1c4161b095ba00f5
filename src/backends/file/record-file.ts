/**
 * The files of the built-in store, opened so that neither a crash nor a hostile directory can
 * hurt: records (`<id>.json`) are written whole or not at all, and no read or write follows a
 * link out of the directory, blocks on a FIFO or a device, or swallows a huge file.
 *
 * - A record is written to a temporary dot-file in the same directory and renamed over the
 *   record: a crash leaves the old record or the new one, never a torn one (@tus/utils'
 *   `FileKvStore` truncates, then writes). A temporary file a crash left behind (names.ts
 *   `tempNameFor`) is removed by the sweep once it is older than the period.
 * - Reads and in-place writes open with `O_NOFOLLOW` (a symbolic link is refused by the kernel,
 *   not by an earlier check that a swap could race) and `O_NONBLOCK` (a FIFO does not block a
 *   thread of libuv's pool), then check on the open descriptor that the file is a regular file
 *   and, for a data file, that it has one link (a hard link to an outside file would be written
 *   to), for a record, that it is at most `MAX_RECORD_BYTES` long (a record of a few hundred
 *   bytes, read whole by its first read, needs no `fstat`: see `readRecordFile`).
 */
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import { promisify } from 'node:util'
import { tempNameFor } from './names.js'

/** A record is a few hundred bytes, metadata included (capped at creation): more is not ours. */
export const MAX_RECORD_BYTES = 64 * 1024

// The names of temporary files are names.ts'; re-exported for the modules that import them here.

const { O_RDONLY, O_RDWR, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK } = fs.constants

/** Why a file of the store is refused: a link, a special file, a hard link, too large. */
export class UnsafeFileError extends Error {
  constructor(
    readonly file: string,
    reason: string,
  ) {
    super(`${file} ${reason}`)
    this.name = 'UnsafeFileError'
  }
}

/**
 * Opens an existing file of the store: a regular file with one link, never through a symbolic
 * link, never blocking. Rejects with `UnsafeFileError` otherwise, with ENOENT when it is missing.
 */
export async function openStoreFile(
  file: string,
  mode: 'read' | 'write',
): Promise<{ handle: fsp.FileHandle; stats: fs.Stats }> {
  const handle = await fsp.open(file, storeFileFlags(mode)).catch(refusingLink(file))
  try {
    const stats = await handle.stat()
    checkStoreFileStats(file, stats)
    return { handle, stats }
  } catch (error) {
    await handle.close()
    throw error
  }
}

/**
 * `openStoreFile` on a bare descriptor, through the callback API (a data file opened for every
 * PATCH: a FileHandle and its promises cost more). The caller closes `fd` (`closeFd`).
 */
export async function openStoreFd(
  file: string,
  mode: 'read' | 'write',
): Promise<{ fd: number; stats: fs.Stats }> {
  const fd = await open(file, storeFileFlags(mode)).catch(refusingLink(file))
  try {
    const stats = await fstat(fd)
    checkStoreFileStats(file, stats)
    return { fd, stats }
  } catch (error) {
    await close(fd)
    throw error
  }
}

/**
 * `openStoreFd` for reading, synchronous (a download's stream is made synchronously): the same
 * flags and checks, one open and one fstat of an inode that is in memory as a rule.
 */
export function openStoreFdSync(file: string): number {
  let fd: number
  try {
    fd = fs.openSync(file, storeFileFlags('read'))
  } catch (error) {
    return refusingLink(file)(error)
  }
  try {
    checkStoreFileStats(file, fs.fstatSync(fd))
    return fd
  } catch (error) {
    fs.closeSync(fd)
    throw error
  }
}

function storeFileFlags(mode: 'read' | 'write'): number {
  return (mode === 'read' ? O_RDONLY : O_RDWR) | O_NOFOLLOW | O_NONBLOCK
}

/** An open's error, with a symbolic link (refused by O_NOFOLLOW) as an `UnsafeFileError`. */
function refusingLink(file: string): (error: unknown) => never {
  return (error) => {
    if ((error as NodeJS.ErrnoException).code === 'ELOOP') {
      throw new UnsafeFileError(file, 'is a symbolic link')
    }
    throw error
  }
}

/** Throws `UnsafeFileError` unless `stats` are those of a regular file with one link. */
function checkStoreFileStats(file: string, stats: fs.Stats): void {
  const problem = !stats.isFile()
    ? 'is not a regular file'
    : stats.nlink > 1
      ? `has ${stats.nlink} links`
      : undefined
  if (problem) throw new UnsafeFileError(file, problem)
}

/** A first read of this much holds every record of the store's own making (a few hundred bytes). */
const RECORD_READ_BYTES = 4096

/** Closes a descriptor of `openStoreFd`. */
export const closeFd: (fd: number) => Promise<void> = promisify(fs.close)

/** Truncates the file of a descriptor of `openStoreFd` to `length` bytes. */
export const truncateFd: (fd: number, length: number) => Promise<void> = promisify(fs.ftruncate)

/**
 * The text of a record file; `undefined` when there is none. Rejects on an unsafe file. On the
 * callback API, promisified: every HEAD, PATCH and sweep of an expired upload reads one, and a
 * FileHandle costs more (CONTRIBUTING.md, "Why the sweep is written as it is"). A record is read
 * with three calls (open, one read, and a close not waited for): a first read that returns some
 * bytes but fewer than it asked for has reached the end of a regular file. Anything else
 * (nothing read, a full buffer, an error) is looked at with `fstat`, and a file that is not a
 * regular file or is larger than `MAX_RECORD_BYTES` is refused.
 */
export async function readRecordFile(file: string): Promise<string | undefined> {
  let fd: number
  try {
    fd = await open(file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK)
  } catch (error) {
    if (isMissing(error)) return undefined
    if ((error as NodeJS.ErrnoException).code === 'ELOOP') {
      throw new UnsafeFileError(file, 'is a symbolic link')
    }
    throw error
  }
  let text: string
  try {
    const first = Buffer.allocUnsafe(RECORD_READ_BYTES)
    const n = await read(fd, first, 0, first.length, 0).catch(() => -1)
    text = n > 0 && n < first.length ? first.toString('utf8', 0, n) : await readWhole(file, fd)
  } catch (error) {
    await close(fd)
    throw error
  }
  // A descriptor only read from: its close goes on while the caller goes on.
  close(fd).catch(() => {})
  return text
}

/** The record file open as `fd`, checked with `fstat` first (see readRecordFile). */
async function readWhole(file: string, fd: number): Promise<string> {
  const stats = await fstat(fd)
  checkRecordStats(file, stats)
  // One byte more than the stat said: a file that grew meanwhile (not a record: records are
  // replaced, never written in place) is caught. A read that returns the stat's size of the
  // size + 1 asked for has met the end of the file: no second read to hear it say 0.
  const buffer = Buffer.allocUnsafe(stats.size + 1)
  let length = 0
  for (;;) {
    const n = await read(fd, buffer, length, buffer.length - length, length)
    length += n
    if (n === 0 || length === buffer.length || length === stats.size) break
  }
  if (length === buffer.length) throw new UnsafeFileError(file, 'grew while it was read')
  return buffer.toString('utf8', 0, length)
}

/**
 * `readRecordFile`, synchronous, for the sweep: the same checks without a trip through libuv's
 * pool per call. A record is at most `MAX_RECORD_BYTES` long, from the page cache as a rule, so
 * the event loop hardly waits. Reads into one buffer that every call reuses.
 */
export function readRecordFileSync(file: string): string | undefined {
  let fd: number
  try {
    fd = fs.openSync(file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK)
  } catch (error) {
    if (isMissing(error)) return undefined
    if ((error as NodeJS.ErrnoException).code === 'ELOOP') {
      throw new UnsafeFileError(file, 'is a symbolic link')
    }
    throw error
  }
  try {
    const stats = fs.fstatSync(fd)
    checkRecordStats(file, stats)
    // As readRecordFile: one byte more than the stat said catches a file that grew.
    const wanted = stats.size + 1
    let length = 0
    for (;;) {
      const n = fs.readSync(fd, syncBuffer, length, wanted - length, length)
      length += n
      if (n === 0 || length === wanted) break
    }
    if (length === wanted) throw new UnsafeFileError(file, 'grew while it was read')
    return syncBuffer.toString('utf8', 0, length)
  } finally {
    fs.closeSync(fd)
  }
}
const syncBuffer = Buffer.allocUnsafe(MAX_RECORD_BYTES + 1)

/** Throws `UnsafeFileError` unless `stats` are those of a record: a regular file, not too large. */
function checkRecordStats(file: string, stats: fs.Stats): void {
  // Records are never written in place (they are replaced), so a hard link to a record is
  // harmless: a copy made with links (backups, the benchmarks' datasets) is read as it is.
  const problem = !stats.isFile()
    ? 'is not a regular file'
    : stats.size > MAX_RECORD_BYTES
      ? `is larger than ${MAX_RECORD_BYTES} bytes`
      : undefined
  if (problem) throw new UnsafeFileError(file, problem)
}

const open = promisify(fs.open) as (file: string, flags: number) => Promise<number>
const fstat = promisify(fs.fstat) as (fd: number) => Promise<fs.Stats>
const close = promisify(fs.close)
const read = (fd: number, buffer: Buffer, offset: number, length: number, position: number) =>
  new Promise<number>((resolve, reject) => {
    fs.read(fd, buffer, offset, length, position, (error, bytesRead) => {
      if (error) reject(error)
      else resolve(bytesRead)
    })
  })

/**
 * Replaces `file` with `text` atomically: a temporary file beside it, renamed over it. With
 * `durable`, the temporary file is flushed to the disk first (the record then survives a power
 * loss too, not only a crash of the process). On the callback API, as `readRecordFile`: every
 * creation and length declaration writes one.
 */
export async function writeRecordFile(
  file: string,
  text: string,
  options: { durable?: boolean } = {},
): Promise<void> {
  await (await stageRecordFile(file, text, options)).commit()
}

/** A record written to its temporary file, not yet in place. */
export interface StagedRecord {
  /** Renames it over the record. */
  commit(): Promise<void>
  /** Removes it, leaving the record as it was. */
  discard(): Promise<void>
}

/**
 * The first half of `writeRecordFile`: `text` in a temporary file beside `file`, to be renamed
 * over it (`commit`) or removed (`discard`). A creation stages its record while it creates the
 * data file, and puts it in place only once that file, made with O_EXCL, says the id is its own.
 */
export async function stageRecordFile(
  file: string,
  text: string,
  { durable = false }: { durable?: boolean } = {},
): Promise<StagedRecord> {
  const temp = tempNameFor(file)
  const fd = await openMode(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o644)
  const discard = () => fsp.unlink(temp).catch(() => {})
  try {
    try {
      const bytes = Buffer.from(text)
      for (let done = 0; done < bytes.length; ) {
        done += await write(fd, bytes, done, bytes.length - done, done)
      }
      if (durable) await fsync(fd)
    } finally {
      await close(fd)
    }
  } catch (error) {
    await discard()
    throw error
  }
  return {
    commit: () =>
      rename(temp, file).catch(async (error: unknown) => {
        await discard()
        throw error
      }),
    discard,
  }
}

/**
 * Creates the empty file `file`, failing when it exists or is a link: an upload's data file.
 * Resolves to its descriptor, which the caller closes (`closeFd`).
 */
export async function createEmptyFile(file: string): Promise<number> {
  return openMode(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o644)
}

const openMode = promisify(fs.open) as (
  file: string,
  flags: number,
  mode: number,
) => Promise<number>
const fsync = promisify(fs.fsync)
const rename = promisify(fs.rename)
const write = (fd: number, buffer: Buffer, offset: number, length: number, position: number) =>
  new Promise<number>((resolve, reject) => {
    fs.write(fd, buffer, offset, length, position, (error, written) => {
      if (error) reject(error)
      else resolve(written)
    })
  })

export function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code
  return code === 'ENOENT' || code === 'ENOTDIR'
}
