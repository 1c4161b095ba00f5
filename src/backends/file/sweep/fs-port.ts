/**
 * The sweep engine's fs port: the few filesystem calls it makes, each of which completes
 * synchronously when the `SweepFs` it wraps has the synchronous call and that kind of call is on
 * (`SyncBreaker`), else returns a promise of the call through libuv's pool. Missing files are
 * answers (`undefined`, `false`), not errors. The engine is written once against this port.
 */
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import { promisify } from 'node:util'
import { isMissing, readRecordFile, readRecordFileSync } from '../record-file.js'
import { asyncDirReader, type DirReader, syncDirReader } from '../walk.js'
import { SyncBreaker } from './breaker.js'
import type { MaybePromise } from './steps.js'

/** The filesystem calls the engine makes; tests inject faults here. */
export type SweepFs = Pick<typeof fsp, 'opendir' | 'lstat' | 'readFile' | 'unlink'> & {
  /**
   * `lstat`, synchronous: the file's stats, or `undefined` when it is missing. With it, the first
   * look at every entry is synchronous; without it (an `fs` of asynchronous calls only), every
   * look is asynchronous.
   */
  lstatSync?: (file: string) => fs.Stats | undefined
  /** A record's text, synchronous, or `undefined` when it is missing; else `readFile` reads it. */
  readFileSync?: (file: string) => string | undefined
  /**
   * With `lstatSync`: whether anything (a link included) is at `file`, without building its
   * stats; the first look at a record asks it of its data file. Default: `lstatSync`.
   */
  existsSync?: (file: string) => boolean
  /** With `lstatSync`: the walk reads directories synchronously too (`opendir` is then unused). */
  opendirSync?: typeof fs.opendirSync
  /** `unlink`, synchronous, for files of at most `SYNC_UNLINK_MAX_BYTES`; else `unlink` removes them. */
  unlinkSync?: (file: string) => void
}

/**
 * The default: the callback API, promisified, which costs less than `fs/promises`, and the
 * synchronous calls (why: CONTRIBUTING.md, "Why the sweep is written as it is").
 */
export const callbackFs: SweepFs = {
  opendir: fsp.opendir,
  lstat: promisify(fs.lstat) as SweepFs['lstat'],
  // Records are read as the store reads them: never through a link, never blocking on a FIFO.
  readFile: (async (file: string) => {
    const text = await readRecordFile(file)
    if (text === undefined) throw Object.assign(new Error(`${file} is missing`), { code: 'ENOENT' })
    return text
  }) as SweepFs['readFile'],
  unlink: promisify(fs.unlink),
  lstatSync: (file) => fs.lstatSync(file, { throwIfNoEntry: false }),
  // access(2) builds no Stats; it follows links, so when it finds nothing, lstat tells a
  // dangling link from no file at all.
  existsSync: (file) =>
    fs.existsSync(file) || fs.lstatSync(file, { throwIfNoEntry: false }) !== undefined,
  readFileSync: readRecordFileSync,
  opendirSync: fs.opendirSync,
  unlinkSync: fs.unlinkSync,
}

/**
 * Files up to this size are unlinked synchronously; a larger data file goes to the pool, since
 * freeing its blocks can take long.
 */
export const SYNC_UNLINK_MAX_BYTES = 1024 * 1024

/** The breakers of the three kinds of synchronous call, shared by a port and its pinned view. */
interface Breakers {
  looks: SyncBreaker
  reads: SyncBreaker
  unlinks: SyncBreaker
}

export class SweepPort {
  /** How the walk reads directories: synchronously when the fs can look synchronously too. */
  readonly dirs: DirReader
  readonly #fs: SweepFs
  readonly #breakers: Breakers
  /** Makes the synchronous calls it has even while their kind is off (`pinned`). */
  readonly #pinned: boolean
  #pinnedView: SweepPort | undefined

  /** `clock`: the monotonic clock (ms) the breakers time synchronous calls with. */
  static of(sweepFs: SweepFs, clock: () => number): SweepPort {
    const breaker = () => new SyncBreaker(clock)
    return new SweepPort(sweepFs, { looks: breaker(), reads: breaker(), unlinks: breaker() }, false)
  }

  private constructor(sweepFs: SweepFs, breakers: Breakers, pinned: boolean) {
    this.#fs = sweepFs
    this.#breakers = breakers
    this.#pinned = pinned
    const { lstatSync, opendirSync, opendir } = sweepFs
    this.dirs =
      lstatSync && opendirSync
        ? syncDirReader(opendirSync)
        : asyncDirReader((dir, options) => opendir(dir, options))
  }

  /**
   * This port with every call synchronous (timed all the same), as long as looks, reads and
   * unlinks are all on now; else `undefined`. A removal runs on it as one synchronous section.
   */
  pinned(): SweepPort | undefined {
    if (!this.allOn()) return undefined
    this.#pinnedView ??= new SweepPort(this.#fs, this.#breakers, true)
    return this.#pinnedView
  }

  /** Whether looks, reads and unlinks are all synchronous now. */
  allOn(): boolean {
    const { lstatSync, readFileSync, unlinkSync } = this.#fs
    const { looks, reads, unlinks } = this.#breakers
    return !!(lstatSync && readFileSync && unlinkSync) && looks.on && reads.on && unlinks.on
  }

  /** The file's stats (`lstat`), or `undefined` when it is missing. */
  stat(file: string): MaybePromise<fs.Stats | undefined> {
    const { lstatSync } = this.#fs
    const { looks } = this.#breakers
    if (!lstatSync || !(this.#pinned || looks.on)) {
      return (this.#fs.lstat(file) as Promise<fs.Stats>).catch(undefinedIfMissing)
    }
    const started = looks.clock()
    try {
      return lstatSync(file)
    } catch (error) {
      return undefinedIfMissing(error)
    } finally {
      looks.ended(started)
    }
  }

  /** Whether anything (a link included) is at `file`. */
  exists(file: string): MaybePromise<boolean> {
    const { lstatSync, existsSync } = this.#fs
    const { looks } = this.#breakers
    if (!lstatSync || !(this.#pinned || looks.on)) {
      return this.#fs.lstat(file).then(() => true, falseIfMissing)
    }
    const started = looks.clock()
    try {
      return existsSync ? existsSync(file) : lstatSync(file) !== undefined
    } catch (error) {
      return falseIfMissing(error)
    } finally {
      looks.ended(started)
    }
  }

  /** A record's text, or `undefined` when it is missing. */
  readRecord(file: string): MaybePromise<string | undefined> {
    const { readFileSync } = this.#fs
    const { reads } = this.#breakers
    if (!readFileSync || !(this.#pinned || reads.on)) {
      return (this.#fs.readFile(file, 'utf8') as Promise<string>).catch(undefinedIfMissing)
    }
    const started = reads.clock()
    try {
      return readFileSync(file)
    } catch (error) {
      return undefinedIfMissing(error)
    } finally {
      reads.ended(started)
    }
  }

  /**
   * Removes `file`: true when this call removed it, false when it was already gone. `size`, when
   * known from a look, lets a small file go synchronously; a pinned port's unlinks are all
   * synchronous (its caller checked the sizes).
   */
  unlink(file: string, size?: number): MaybePromise<boolean> {
    const { unlinkSync } = this.#fs
    const { unlinks } = this.#breakers
    const small = size !== undefined && size <= SYNC_UNLINK_MAX_BYTES
    if (!unlinkSync || !(this.#pinned || (small && unlinks.on))) {
      return this.#fs.unlink(file).then(() => true, falseIfMissing)
    }
    const started = unlinks.clock()
    try {
      unlinkSync(file)
      return true
    } catch (error) {
      return falseIfMissing(error)
    } finally {
      unlinks.ended(started)
    }
  }
}

/** `undefined` for an error that says the file is missing; throws any other. */
function undefinedIfMissing(error: unknown): undefined {
  if (isMissing(error)) return undefined
  throw error
}

/** `false` for an error that says the file is missing; throws any other. */
function falseIfMissing(error: unknown): false {
  if (isMissing(error)) return false
  throw error
}
