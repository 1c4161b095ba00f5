/**
 * The walk of a file store's directory tree, shared by the sweep engine (which removes what it
 * finds) and the CLI's store check (which refuses a directory holding anything foreign).
 *
 * The tree is read as a stream, one directory handle open at a time, depth first from a stack of
 * directories still to read (so a subdirectory is read after the rest of its parent). Dot-entries
 * are skipped (but for the store's own temporary files), links are never followed. Leaving early
 * closes the directory being read. The walk is written once (`TreeWalk`) over a `DirReader`
 * whose calls may complete synchronously: the sweep reads directories synchronously, so that
 * most entries cost no promise, and the CLI through `fs/promises`.
 */
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import { isTempName } from './names.js'
import { isPromise, type MaybePromise } from './sweep/steps.js'

/**
 * What the walk reports:
 * - `file`: a regular file;
 * - `link`: a symbolic link (never followed);
 * - `special`: anything else that is not a directory (FIFO, socket, device, unknown type);
 * - `unreadable-directory`: a subdirectory that could not be opened, with the error;
 * - `temp`: a file the store was writing (names.ts `TEMP_PREFIX`), left by a crash if old;
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

/** An open directory; each call may complete synchronously. */
export interface DirHandle {
  /** The next entry, `null` at the end. */
  read(): MaybePromise<fs.Dirent | null>
  close(): MaybePromise<void>
}

/** Opens directories for the walk; throws (or rejects) when it cannot. */
export type DirReader = (dir: string) => MaybePromise<DirHandle>

/** Directories read through `fs/promises`' `opendir` (or `opendir`), 256 entries at a time. */
export function asyncDirReader(opendir: typeof fsp.opendir = fsp.opendir): DirReader {
  return async (dir) => {
    const handle = await opendir(dir, { bufferSize: 256 })
    return { read: () => handle.read(), close: () => handle.close() }
  }
}

/**
 * Directories read synchronously, 32 entries at a time: Node's `Dir` makes a `Dirent` of every
 * entry it reads at once, and fewer of them stay alive across young-generation collections.
 */
export function syncDirReader(opendirSync: typeof fs.opendirSync = fs.opendirSync): DirReader {
  return (dir) => {
    let handle: fs.Dir
    try {
      handle = opendirSync(dir, { bufferSize: 32 })
    } catch (error) {
      throw withPath(error, dir)
    }
    return { read: () => handle.readSync(), close: () => handle.closeSync() }
  }
}

/**
 * The entries of the tree under `root` (an absolute path), as they are read, one `next()` at a
 * time; each `next()` completes synchronously when the reader's calls do. `next()` throws (or
 * rejects) when `root` itself cannot be opened, and on errors while reading a directory's entries.
 */
export class TreeWalk<K extends WalkKind = WalkKind> {
  readonly #steps: Generator<Promise<unknown> | WalkEntry<K>, void, unknown>
  #done = false

  constructor(root: string, read: DirReader, options: Omit<WalkOptions<K>, 'opendir'> = {}) {
    this.#steps = walkSteps(root, read, options)
  }

  /** The next entry; `undefined` once the walk is over. */
  next(): MaybePromise<WalkEntry<K> | undefined> {
    return this.#done ? undefined : this.#resume(undefined, false)
  }

  /** Ends the walk early; closes the directory being read. */
  close(): void {
    this.#done = true
    this.#steps.return()
  }

  /** Runs the walk to its next entry; `value` is what it waited for (an error if `failed`). */
  #resume(value: unknown, failed: boolean): MaybePromise<WalkEntry<K> | undefined> {
    let step: IteratorResult<Promise<unknown> | WalkEntry<K>, void>
    try {
      step = failed ? this.#steps.throw(value) : this.#steps.next(value)
    } catch (error) {
      this.#done = true
      throw error
    }
    if (step.done) {
      this.#done = true
      return undefined
    }
    if (!isPromise(step.value)) return step.value
    return step.value.then(
      (resumed) => this.#resume(resumed, false),
      (error: unknown) => this.#resume(error, true),
    )
  }
}

/**
 * The entries of the tree under `root`, as `TreeWalk`'s, through `fs/promises` (the CLI's store
 * check). Leaving early (`break`, `return()` on the generator) closes the directory being read.
 */
export async function* walkTree<K extends WalkKind = WalkKind>(
  root: string,
  options: WalkOptions<K> = {},
): AsyncGenerator<WalkEntry<K>, void, undefined> {
  const walk = new TreeWalk<K>(root, asyncDirReader(options.opendir), options)
  try {
    for (let entry = await walk.next(); entry !== undefined; entry = await walk.next()) yield entry
  } finally {
    walk.close()
  }
}

/**
 * The walk itself: yields the entries, and the promises of the reader's calls that did not
 * complete synchronously (resumed with their values, or thrown into with their errors).
 */
function* walkSteps<K extends WalkKind>(
  root: string,
  read: DirReader,
  options: Omit<WalkOptions<K>, 'opendir'>,
): Generator<Promise<unknown> | WalkEntry<K>, void, unknown> {
  const { maxEntries = Number.POSITIVE_INFINITY } = options
  const kinds = options.kinds && new Set<WalkKind>(options.kinds)
  const wanted = (kind: WalkKind): boolean => kinds === undefined || kinds.has(kind)
  let entries = 0
  const pending = ['']
  for (let rel = pending.pop(); rel !== undefined; rel = pending.pop()) {
    let dir: DirHandle
    try {
      const opened = read(rel === '' ? root : `${root}/${rel}`)
      dir = isPromise(opened) ? ((yield opened) as DirHandle) : opened
    } catch (error) {
      if (rel === '') throw error
      if (wanted('unreadable-directory')) {
        yield { kind: 'unreadable-directory', path: rel, error } as WalkEntry<K>
      }
      continue
    }
    let ended = false
    try {
      for (;;) {
        const next = dir.read()
        const entry = isPromise(next) ? ((yield next) as fs.Dirent | null) : next
        if (entry === null) break
        if (++entries > maxEntries) {
          if (wanted('truncated')) yield { kind: 'truncated', path: rel } as WalkEntry<K>
          return
        }
        const found = classify(entry, rel, pending, wanted)
        if (found) yield found as WalkEntry<K>
      }
      ended = true
    } finally {
      // Read to its end, the directory is closed before the walk goes on; left early, its close
      // is not waited for.
      if (!ended) closeQuietly(dir)
    }
    const closed = dir.close()
    if (isPromise(closed)) yield closed
  }
}

function closeQuietly(dir: DirHandle): void {
  try {
    const closed = dir.close()
    if (isPromise(closed)) closed.catch(() => {})
  } catch {
    // Closing a directory being left: nothing to tell anyone.
  }
}

/**
 * What the walk reports of `entry`, read in the directory `rel`: `undefined` for a dot-entry
 * (other than a temporary file) or an unwanted kind; a subdirectory goes on `pending`.
 */
function classify(
  entry: fs.Dirent,
  rel: string,
  pending: string[],
  wanted: (kind: WalkKind) => boolean,
): { kind: WalkKind; path: string } | undefined {
  if (entry.name.startsWith('.')) {
    if (isTempName(entry.name) && entry.isFile() && wanted('temp')) {
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
 * `error` of `fs.opendirSync` naming `file`, as `fs/promises`' `opendir` does (on Node 20 the
 * synchronous call's message and `path` leave it out).
 */
function withPath(error: unknown, file: string): unknown {
  const e = error as NodeJS.ErrnoException
  if (e instanceof Error && e.code !== undefined && e.path === undefined) {
    e.path = file
    e.message = `${e.message} '${file}'`
  }
  return error
}
