/**
 * The walk of a file store's directory tree, shared by the sweep engine (which removes what it
 * finds) and the CLI's store check (which refuses a directory holding anything foreign).
 *
 * The tree is read as a stream, one directory handle open at a time, depth first from a stack of
 * directories still to read (so a subdirectory is read after the rest of its parent). Dot-entries
 * are skipped (but for the store's own temporary records), links are never followed. Leaving early (`break`, `return()` on the generator)
 * closes the directory being read. `walkTreeSync` is the same walk on synchronous calls, for the
 * sweep engine, which bounds how long it runs before the event loop turns.
 */
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import { TEMP_PREFIX } from './record-file.js'

/**
 * What the walk reports:
 * - `file`: a regular file;
 * - `link`: a symbolic link (never followed);
 * - `special`: anything else that is not a directory (FIFO, socket, device, unknown type);
 * - `unreadable-directory`: a subdirectory that could not be opened, with the error;
 * - `temp`: a record the store was writing (record-file.ts `TEMP_PREFIX`), left by a crash if old;
 *   the only dot-entries the walk yields;
 * - `truncated`: the walk read `maxEntries` entries and stopped; always the last entry.
 */
export type WalkKind = 'file' | 'link' | 'special' | 'unreadable-directory' | 'temp' | 'truncated'

/** An entry of kind `K`; `path` is relative to the root, `/`-separated (for `truncated`: the directory being read). */
export type WalkEntry<K extends WalkKind = WalkKind> = K extends 'unreadable-directory'
  ? { kind: K; path: string; error: unknown }
  : { kind: K; path: string }

export interface WalkOptions<K extends WalkKind> {
  /** The kinds of entries to yield; default all. */
  kinds?: readonly K[]
  /** Directory entries read at most over the whole tree (dot-entries and directories count). */
  maxEntries?: number
  /** Opens a directory; tests inject faults here. Default `fs/promises`' `opendir`. */
  opendir?: typeof fsp.opendir
}

export interface WalkSyncOptions<K extends WalkKind> extends Omit<WalkOptions<K>, 'opendir'> {
  /** Opens a directory; default `fs.opendirSync`. */
  opendirSync?: typeof fs.opendirSync
}

const BUFFER_SIZE = 256
/**
 * The synchronous walk reads fewer entries at a time: a read costs no trip through libuv's pool,
 * and Node's `Dir` makes a `Dirent` of every entry it reads at once, which a long walk would
 * otherwise keep alive across young-generation collections (enough of those makes V8 grow it).
 */
const SYNC_BUFFER_SIZE = 32

/**
 * The entries of the tree under `root` (an absolute path), as they are read. Throws when `root`
 * itself cannot be opened; errors while reading a directory's entries propagate as well.
 */
export async function* walkTree<K extends WalkKind = WalkKind>(
  root: string,
  options: WalkOptions<K> = {},
): AsyncGenerator<WalkEntry<K>, void, undefined> {
  const { maxEntries = Number.POSITIVE_INFINITY, opendir = fsp.opendir } = options
  const kinds = options.kinds && new Set<WalkKind>(options.kinds)
  const wanted = (kind: WalkKind): boolean => kinds === undefined || kinds.has(kind)
  let entries = 0
  const pending = ['']
  for (let rel = pending.pop(); rel !== undefined; rel = pending.pop()) {
    let dir: Awaited<ReturnType<typeof fsp.opendir>>
    try {
      dir = await opendir(rel === '' ? root : `${root}/${rel}`, { bufferSize: BUFFER_SIZE })
    } catch (error) {
      if (rel === '') throw error
      if (wanted('unreadable-directory')) {
        yield { kind: 'unreadable-directory', path: rel, error } as WalkEntry<K>
      }
      continue
    }
    // Leaving this loop, by a return here or the consumer's, closes the directory handle.
    for await (const entry of dir) {
      if (++entries > maxEntries) {
        if (wanted('truncated')) yield { kind: 'truncated', path: rel } as WalkEntry<K>
        return
      }
      const found = classify(entry, rel, pending, wanted)
      if (found) yield found as WalkEntry<K>
    }
  }
}

/**
 * The same walk, synchronous, for a caller whose every look is synchronous (the sweep engine,
 * which bounds how long it runs before the event loop turns). Directories are read 32 entries
 * at a time; leaving early closes the directory being read.
 */
export function* walkTreeSync<K extends WalkKind = WalkKind>(
  root: string,
  options: WalkSyncOptions<K> = {},
): Generator<WalkEntry<K>, void, undefined> {
  const { maxEntries = Number.POSITIVE_INFINITY, opendirSync = fs.opendirSync } = options
  const kinds = options.kinds && new Set<WalkKind>(options.kinds)
  const wanted = (kind: WalkKind): boolean => kinds === undefined || kinds.has(kind)
  let entries = 0
  const pending = ['']
  for (let rel = pending.pop(); rel !== undefined; rel = pending.pop()) {
    let dir: fs.Dir
    const dirPath = rel === '' ? root : `${root}/${rel}`
    try {
      dir = opendirSync(dirPath, { bufferSize: SYNC_BUFFER_SIZE })
    } catch (error) {
      withPath(error, dirPath)
      if (rel === '') throw error
      if (wanted('unreadable-directory')) {
        yield { kind: 'unreadable-directory', path: rel, error } as WalkEntry<K>
      }
      continue
    }
    try {
      for (let entry = dir.readSync(); entry !== null; entry = dir.readSync()) {
        if (++entries > maxEntries) {
          if (wanted('truncated')) yield { kind: 'truncated', path: rel } as WalkEntry<K>
          return
        }
        const found = classify(entry, rel, pending, wanted)
        if (found) yield found as WalkEntry<K>
      }
    } finally {
      dir.closeSync()
    }
  }
}

/**
 * What the walk reports of `entry`, read in the directory `rel`: `undefined` for a dot-entry
 * (other than a temporary record) or an unwanted kind; a subdirectory goes on `pending`.
 */
function classify(
  entry: fs.Dirent,
  rel: string,
  pending: string[],
  wanted: (kind: WalkKind) => boolean,
): { kind: WalkKind; path: string } | undefined {
  if (entry.name.startsWith('.')) {
    if (entry.name.startsWith(TEMP_PREFIX) && entry.isFile() && wanted('temp')) {
      return { kind: 'temp', path: rel === '' ? entry.name : `${rel}/${entry.name}` }
    }
    return undefined
  }
  const name = rel === '' ? entry.name : `${rel}/${entry.name}`
  if (entry.isDirectory()) {
    pending.push(name)
    return undefined
  }
  const kind = entry.isFile() ? 'file' : entry.isSymbolicLink() ? 'link' : 'special'
  return wanted(kind) ? { kind, path: name } : undefined
}

/**
 * Names `file` in an error of `fs.opendirSync`, as `fs/promises`' `opendir` does (on Node 20 the
 * synchronous call's message and `path` leave it out).
 */
function withPath(error: unknown, file: string): void {
  const e = error as NodeJS.ErrnoException
  if (e instanceof Error && e.code !== undefined && e.path === undefined) {
    e.path = file
    e.message = `${e.message} '${file}'`
  }
}
