/**
 * The store quota of the built-in store (`maxStoreBytes`): how many bytes the store may hold,
 * finished uploads included, and space promised to unfinished uploads counted as taken.
 *
 * What one upload counts (`countedBytes`): its declared length when it has one (however few of
 * its bytes arrived: the length is a promise the store must keep), else (a deferred length) the
 * bytes it holds. Records (`<id>.json`) and foreign files are not counted.
 *
 * The running total starts from a count of the directory (the startup sweep's walk, or a walk
 * that removes nothing), is recomputed by every sweep, and in between moves with this process'
 * creations, writes to deferred-length uploads, length declarations and removals. With Redis the
 * total is one counter shared by the fleet (`RedisQuotaCounter`), without it a number in memory.
 *
 * A recount never lands below the truth: the total becomes the walk's figure plus everything
 * added while it walked (`added`, a counter that only grows). What changed under the walk may be
 * counted twice until the next sweep: refusing a little early, never overfilling.
 */
import { attempt, bounded, CALL_TIMEOUT_MS } from '../redis/bounded.js'
import type { RedisClient } from '../redis/locker.js'
import { type Scripts, scriptsOf } from '../redis/scripts.js'

/** The quota's figures when it refused bytes (the warn log, the 507's body). */
export interface QuotaLow {
  storeBytes: number
  maxStoreBytes: number
  /** The bytes the refused creation, declaration or PATCH wanted. */
  neededBytes: number
}

/** Where the running total lives: in memory, or shared by the fleet in Redis. */
export interface QuotaCounter {
  /** The total, or `undefined` when it was never counted (or Redis lost it). */
  get(): Promise<number | undefined>
  /** Sets the total from a count, unless one exists (another instance counted first). */
  init(total: number): Promise<number>
  /**
   * Takes `bytes` if they fit under `max` (all or nothing, or with `partial` as many as fit).
   * Resolves to the bytes taken and the total after, or `undefined` when never counted.
   */
  claim(
    bytes: number,
    max: number,
    partial: boolean,
  ): Promise<{ granted: number; total: number } | undefined>
  /** Moves the total by `delta` (a release when negative), if it was counted. */
  add(delta: number): Promise<number | undefined>
  /** Where the grow-only `added` counter stands: a recount starts here. */
  mark(): Promise<number>
  /** The total becomes `walked` plus what was added since `mark`. */
  recount(walked: number, mark: number | undefined): Promise<number>
}

export class LocalQuotaCounter implements QuotaCounter {
  #total: number | undefined
  #added = 0

  async get(): Promise<number | undefined> {
    return this.#total
  }

  async init(total: number): Promise<number> {
    this.#total ??= total
    return this.#total
  }

  async claim(bytes: number, max: number, partial: boolean) {
    if (this.#total === undefined) return undefined
    const room = Math.max(0, max - this.#total)
    const granted = bytes <= room ? bytes : partial ? room : 0
    this.#total += granted
    this.#added += granted
    return { granted, total: this.#total }
  }

  async add(delta: number): Promise<number | undefined> {
    if (this.#total === undefined) return undefined
    this.#total = Math.max(0, this.#total + delta)
    if (delta > 0) this.#added += delta
    return this.#total
  }

  async mark(): Promise<number> {
    return this.#added
  }

  async recount(walked: number, mark: number | undefined): Promise<number> {
    this.#total = walked + (mark === undefined ? 0 : this.#added - mark)
    return this.#total
  }
}

/**
 * The fleet's total in Redis, under the plugin's prefix: `<prefix>{quota}:bytes` (the total) and
 * `<prefix>{quota}:added` (grow-only, for recounts). Every change is one script call (a claim
 * checks and takes in one step, so two instances cannot both take the last bytes); the keys have
 * no TTL. Whichever instance sweeps sets the recounted total.
 */
export class RedisQuotaCounter implements QuotaCounter {
  readonly #scripts: RedisClient & Scripts
  readonly #bytesKey: string
  readonly #addedKey: string

  constructor(client: RedisClient, prefix: string) {
    this.#scripts = scriptsOf(client)
    this.#bytesKey = `${prefix}{quota}:bytes`
    this.#addedKey = `${prefix}{quota}:added`
  }

  #call<T>(what: string, fn: (s: Scripts) => Promise<T>): Promise<T> {
    return bounded(
      attempt(() => fn(this.#scripts)),
      CALL_TIMEOUT_MS,
      what,
    )
  }

  async get(): Promise<number | undefined> {
    const total = await this.#call('the store quota', (s) =>
      s.fastifyTusQuotaAdd(this.#bytesKey, this.#addedKey, 0),
    )
    return total ?? undefined
  }

  init(total: number): Promise<number> {
    return this.#call('the store quota', (s) =>
      s.fastifyTusQuotaInit(this.#bytesKey, this.#addedKey, total),
    )
  }

  async claim(bytes: number, max: number, partial: boolean) {
    const [granted, total] = await this.#call('the store quota', (s) =>
      s.fastifyTusQuotaClaim(this.#bytesKey, this.#addedKey, bytes, max, partial ? 1 : 0),
    )
    return granted < 0 ? undefined : { granted, total }
  }

  async add(delta: number): Promise<number | undefined> {
    if (delta === 0) return this.get()
    const total = await this.#call('the store quota', (s) =>
      s.fastifyTusQuotaAdd(this.#bytesKey, this.#addedKey, delta),
    )
    return total ?? undefined
  }

  mark(): Promise<number> {
    return this.#call('the store quota', (s) => s.fastifyTusQuotaMark(this.#addedKey))
  }

  recount(walked: number, mark: number | undefined): Promise<number> {
    return this.#call('the store quota', (s) =>
      s.fastifyTusQuotaRecount(this.#bytesKey, this.#addedKey, walked, mark ?? -1),
    )
  }
}

/** The quota of one store: its limit, its counter, and who hears of a refusal. */
export class StoreQuota {
  readonly maxStoreBytes: number
  readonly counter: QuotaCounter
  /** Counts the store's directory (a walk that removes nothing): when no total exists yet. */
  readonly #count: () => Promise<number>
  #counting: Promise<number> | undefined
  /** The total as last seen, for logs and metrics. */
  lastSeen: number | undefined
  readonly #onLow: Array<(low: QuotaLow) => void> = []
  readonly #onTotal: Array<(total: number) => void> = []

  constructor(maxStoreBytes: number, counter: QuotaCounter, count: () => Promise<number>) {
    this.maxStoreBytes = maxStoreBytes
    this.counter = counter
    this.#count = count
  }

  /** Makes sure a total exists: counts the directory when nobody has (once at a time). */
  async ensureCounted(): Promise<number> {
    const total = await this.counter.get()
    if (total !== undefined) return this.#seen(total)
    this.#counting ??= this.#count()
      .then((walked) => this.counter.init(walked))
      .finally(() => {
        this.#counting = undefined
      })
    return this.#seen(await this.#counting)
  }

  /**
   * Takes `bytes` for an upload (a creation's length, a declared length's rest, a PATCH body
   * of a deferred-length upload). All or nothing unless `partial`; resolves to the bytes taken.
   * A refusal (or a partial grant) is reported to the `onLow` listeners.
   */
  async claim(bytes: number, { partial = false } = {}): Promise<number> {
    if (bytes <= 0) return 0
    let claimed = await this.counter.claim(bytes, this.maxStoreBytes, partial)
    if (!claimed) {
      // Never counted (Redis lost the keys, say): count, then try again.
      await this.ensureCounted()
      claimed = await this.counter.claim(bytes, this.maxStoreBytes, partial)
      if (!claimed) throw new Error('the store quota has no total')
    }
    this.#seen(claimed.total)
    if (claimed.granted < bytes) {
      const low = {
        storeBytes: claimed.total,
        maxStoreBytes: this.maxStoreBytes,
        neededBytes: bytes,
      }
      for (const listener of this.#onLow) listener(low)
    }
    return claimed.granted
  }

  /** Gives back (negative) or adds bytes outside a claim: removals, bytes a body did not use. */
  async add(delta: number): Promise<void> {
    if (delta === 0) return
    const total = await this.counter.add(delta)
    if (total !== undefined) this.#seen(total)
  }

  /** Where a recount starts (see `QuotaCounter.mark`); `undefined` when the counter fails. */
  mark(): Promise<number | undefined> {
    return this.counter.mark().catch(() => undefined)
  }

  /** A sweep walked the whole store and found `walked` bytes. */
  async recount(walked: number, mark: number | undefined): Promise<void> {
    this.#seen(await this.counter.recount(walked, mark))
  }

  #seen(total: number): number {
    this.lastSeen = total
    for (const listener of this.#onTotal) listener(total)
    return total
  }

  onLow(listener: (low: QuotaLow) => void): void {
    this.#onLow.push(listener)
  }

  /** Told the total each time it is read or changed (metrics). */
  onTotal(listener: (total: number) => void): void {
    this.#onTotal.push(listener)
  }
}

/** The answer to a creation, declaration or PATCH that the quota refuses. */
export function quotaExceeded(low: QuotaLow): { status_code: 507; body: string } {
  return {
    status_code: 507,
    body:
      `Insufficient Storage: this upload needs ${low.neededBytes} bytes and the store holds ` +
      `${low.storeBytes} of its ${low.maxStoreBytes} (maxStoreBytes, unfinished uploads' ` +
      `declared lengths included); try again later\n`,
  }
}

/** The answer to a declared length larger than the whole quota: no retry can help. */
export function tooLargeForQuota(
  neededBytes: number,
  maxStoreBytes: number,
): { status_code: 413; body: string } {
  return {
    status_code: 413,
    body: `Request Entity Too Large: this upload needs ${neededBytes} bytes; the store holds at most ${maxStoreBytes} (maxStoreBytes)\n`,
  }
}

/** Redis failed or was too slow for a quota check: 503, which tus clients retry. */
export const QUOTA_UNAVAILABLE = {
  status_code: 503,
  body: 'The store quota cannot be checked right now; try again\n',
} as const
