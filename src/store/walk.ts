/**
 * The walk of a file store's directory tree, shared by the sweep engine (which removes what it
 * finds) and the CLI's store check (which refuses a directory holding anything foreign).
 *
 * The tree is read as a stream, one directory handle open at a time, depth first from a stack of
 * directories still to read (so a subdirectory is read after the rest of its parent). Dot-entries
 * are skipped (but for the store's own temporary records), links are never followed. Leaving early (`break`, `return()` on the generator)
 * closes the directory being read.
 */
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

const BUFFER_SIZE = 256

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
      if (entry.name.startsWith('.')) {
        if (entry.name.startsWith(TEMP_PREFIX) && entry.isFile() && wanted('temp')) {
          yield {
            kind: 'temp',
            path: rel === '' ? entry.name : `${rel}/${entry.name}`,
          } as WalkEntry<K>
        }
        continue
      }
      const name = rel === '' ? entry.name : `${rel}/${entry.name}`
      if (entry.isDirectory()) {
        pending.push(name)
        continue
      }
      const kind = entry.isFile() ? 'file' : entry.isSymbolicLink() ? 'link' : 'special'
      if (wanted(kind)) yield { kind, path: name } as WalkEntry<K>
    }
  }
}
