/**
 * The free-space floor of the built-in store (`minFreeBytes`): how many bytes uploads may still
 * take before the filesystem would keep less than the floor free. Read with `statfs`, cached
 * briefly (never a syscall per chunk); the filesystem is the truth, so several instances on one
 * shared directory see the same figure. Told when space runs low, so that the plugin can start an
 * emergency sweep (the store knows nothing of sweeps).
 *
 * Writes under way (PATCH bodies, assemblies of final uploads) claim their bytes first
 * (`claim`): what they will still write counts against the floor, so that writes that each fit
 * alone cannot cross it together. A `statfs` figure already holds what each claim had written
 * when it was read; only the rest of the claim is subtracted from it.
 */
import fsp from 'node:fs/promises'
import path from 'node:path'
import { type Refusal, refusal } from '../../refusal.js'

/**
 * `statfs` of `directory`, or, when it has gone (removed behind the server's back; the store's
 * next creation makes it again), of its nearest existing parent: the filesystem it will be on.
 */
async function statfsNearest(directory: string) {
  for (let dir = directory; ; dir = path.dirname(dir)) {
    try {
      return await fsp.statfs(dir)
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || path.dirname(dir) === dir) throw error
    }
  }
}

/** How long one `statfs` answer is used. */
const CACHE_MS = 250

export interface LowSpace {
  freeBytes: number
  minFreeBytes: number
  /** The bytes the refused creation or PATCH wanted. */
  neededBytes: number
}

/** The default floor: the smaller of 1 GiB and 5% of the filesystem. */
export function defaultMinFreeBytes(totalBytes: number): number {
  return Math.min(1024 ** 3, Math.floor(totalBytes * 0.05))
}

/** Bytes promised to one write under way, from `FreeSpace.claim`. */
export class SpaceClaim {
  /** Bytes the write had written (at least) when the current `statfs` figure was read. */
  atSample: number | undefined
  /** Bytes written so far, as the writer last said (`wrote`). */
  written = 0
  /** Ended: its bytes count until the next `statfs` figure holds them. */
  released = false

  constructor(
    /** The bytes granted: the write must stop there. */
    readonly granted: number,
    readonly onRelease: (claim: SpaceClaim) => void,
  ) {}

  /** Bytes promised and not yet in the current `statfs` figure. */
  get outstanding(): number {
    const promised = this.released ? this.written : this.granted
    return Math.max(0, promised - (this.atSample ?? 0))
  }

  /** The write has put `bytes` in the file so far (never more than it has). */
  wrote(bytes: number): void {
    this.written = bytes
  }

  /** The write ended, having written `bytes` in all (default: as last said). */
  release(bytes = this.written): void {
    if (this.released) return
    this.written = bytes
    this.released = true
    this.onRelease(this)
  }
}

export class FreeSpace {
  readonly #directory: string
  readonly minFreeBytes: number
  #cached: { at: number; stats: Promise<{ free: number; total: number }> } | undefined
  /** Claims of writes under way, and of writes ended since the last `statfs` began. */
  readonly #claims = new Set<SpaceClaim>()
  readonly #onLow: Array<(low: LowSpace) => void> = []
  readonly #onRead: Array<(freeBytes: number) => void> = []

  private constructor(directory: string, minFreeBytes: number) {
    this.#directory = directory
    this.minFreeBytes = minFreeBytes
  }

  /** The floor of `directory`'s filesystem: `minFreeBytes`, or the default when undefined. */
  static async open(directory: string, minFreeBytes: number | undefined): Promise<FreeSpace> {
    if (minFreeBytes !== undefined) return new FreeSpace(directory, minFreeBytes)
    const stats = await statfsNearest(directory)
    return new FreeSpace(directory, defaultMinFreeBytes(stats.blocks * stats.bsize))
  }

  /** Bytes free for unprivileged writers (`bavail`), at most `CACHE_MS` old. */
  async freeBytes(): Promise<number> {
    return (await this.#stats()).free
  }

  /** The filesystem's size in bytes: what no upload can exceed, however much is removed. */
  async totalBytes(): Promise<number> {
    return (await this.#stats()).total
  }

  #stats(): Promise<{ free: number; total: number }> {
    const now = performance.now()
    if (!this.#cached || now - this.#cached.at >= CACHE_MS) {
      // What each write had written by now is in the figure this statfs reads.
      for (const claim of this.#claims) {
        if (claim.released) this.#claims.delete(claim)
        else claim.atSample = claim.written
      }
      const stats = statfsNearest(this.#directory).then((s) => {
        const free = s.bavail * s.bsize
        for (const listener of this.#onRead) listener(free)
        return { free, total: s.blocks * s.bsize }
      })
      // A failed statfs is not cached: the next call asks again.
      stats.catch(() => {
        if (this.#cached?.stats === stats) this.#cached = undefined
      })
      this.#cached = { at: now, stats }
    }
    return this.#cached.stats
  }

  /**
   * How many bytes uploads may still take (negative when the floor is already crossed), writes
   * under way counted as if done.
   */
  async allowance(): Promise<number> {
    const free = await this.freeBytes()
    return free - this.minFreeBytes - this.#outstanding()
  }

  #outstanding(): number {
    let bytes = 0
    for (const claim of this.#claims) bytes += claim.outstanding
    return bytes
  }

  /**
   * Whether `neededBytes` fit above the floor, writes under way counted; when they do not, the
   * `onLow` listeners hear of it (and the answer is 507).
   */
  async fits(neededBytes: number): Promise<boolean> {
    const free = await this.freeBytes()
    if (free - this.#outstanding() - neededBytes >= this.minFreeBytes) return true
    this.reportLow({ freeBytes: free, minFreeBytes: this.minFreeBytes, neededBytes })
    return false
  }

  /**
   * Claims up to `wantedBytes` for a write about to start: all of them or nothing, or with
   * `partial` as many as fit above the floor. Resolves to the claim (its `granted` bytes may be
   * 0), which the writer releases when it ends. A grant short of `wantedBytes` is reported low.
   */
  async claim(wantedBytes: number, { partial = false } = {}): Promise<SpaceClaim> {
    const free = await this.freeBytes()
    // From here to the claim's entry, nothing else runs: two writes cannot take the same bytes.
    const room = Math.max(0, free - this.minFreeBytes - this.#outstanding())
    const granted = wantedBytes <= room ? wantedBytes : partial ? room : 0
    if (granted < wantedBytes) {
      this.reportLow({ freeBytes: free, minFreeBytes: this.minFreeBytes, neededBytes: wantedBytes })
    }
    const claim = new SpaceClaim(granted, (ended) => {
      // A claim ended before any statfs counted its bytes holds none: it goes at once.
      if (ended.written === 0 && ended.atSample === undefined) this.#claims.delete(ended)
    })
    if (granted > 0) this.#claims.add(claim)
    return claim
  }

  /** Space ran out under a write (or a creation was refused). */
  reportLow(low: LowSpace): void {
    // What was written meanwhile is not in the cached figure.
    this.#cached = undefined
    for (const listener of this.#onLow) listener(low)
  }

  onLow(listener: (low: LowSpace) => void): void {
    this.#onLow.push(listener)
  }

  /** Told the free bytes each time they are read from the filesystem (metrics). */
  onRead(listener: (freeBytes: number) => void): void {
    this.#onRead.push(listener)
  }
}

/**
 * The answer to a declared length that cannot fit even on an empty filesystem: 413, as for an
 * upload over `maxSize` (retrying later cannot help, unlike a 507).
 */
export function tooLargeForStore(
  neededBytes: number,
  totalBytes: number,
  minFreeBytes: number,
): Refusal {
  return refusal(
    413,
    `Request Entity Too Large: this upload needs ${neededBytes} bytes; the store's filesystem ` +
      `holds ${totalBytes} and the server keeps ${minFreeBytes} of them free`,
  )
}

/** ENOSPC or EDQUOT: the filesystem (or the user's disk quota) has no room left. */
export function isDiskFull(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code
  return code === 'ENOSPC' || code === 'EDQUOT'
}

/** The answer to a write the filesystem itself refused for want of space (ENOSPC, EDQUOT). */
export function diskFull(error: unknown): Refusal {
  const code = (error as NodeJS.ErrnoException).code
  return refusal(
    507,
    `Insufficient Storage: the store's disk has no room left (${code}); try again later`,
  )
}

/** The answer to a creation or a PATCH that the floor refuses. */
export function insufficientStorage(low: LowSpace): Refusal {
  return refusal(
    507,
    `Insufficient Storage: this upload needs ${low.neededBytes} bytes, ${low.freeBytes} are free ` +
      `and the server keeps ${low.minFreeBytes} free; try again later`,
  )
}
