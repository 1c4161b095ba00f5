/**
 * The store quota of the built-in store (`maxStoreBytes`): how many bytes the store may hold,
 * finished uploads included, and space promised to unfinished uploads counted as taken.
 *
 * What one upload counts (`countedBytes`): its declared length when it has one (however few of
 * its bytes arrived: the length is a promise the store must keep), else (a deferred length) the
 * bytes it holds. An upload whose data file the app moved out keeps counting its declared length
 * while its record (`<id>.json`) is there: releasing it (removal.ts `releaseUpload`, after the
 * app's `onUploadFinish` or from `tusCleanup.release`) removes the record and gives the bytes
 * back, and a recount that saw the record counted them, so they cannot be given back twice.
 * Foreign files are not counted.
 *
 * The running total starts from a count of the directory (the startup sweep's walk, or a walk
 * that removes nothing, which also lowers a shared total left larger: `countAtStart`), is
 * recomputed by every sweep, and in between moves with this process' creations, writes to
 * deferred-length uploads, length declarations, removals and releases. With Redis the total is
 * one counter shared by the fleet (`RedisQuotaCounter`), without it a number in memory.
 *
 * A recount never lands below the truth: the total becomes the walk's figure, plus everything
 * added while it walked (`added`, a counter that only grows), plus the claims in flight when it
 * began (taken, but maybe not on disk yet for the walk to see). The walk counts the uploads this
 * process' claims grow at what they held when their claim began (`growingUploads`). Other
 * changes under the walk may be counted twice until the next sweep: refusing a little early,
 * never overfilling.
 */
import { randomUUID } from 'node:crypto'
import { attempt, bounded, CALL_TIMEOUT_MS } from '../../redis/bounded.js'
import type { RedisClient } from '../../redis/locker.js'
import { type Scripts, scriptsOf } from '../../redis/scripts.js'
import { type Refusal, refusal } from '../../refusal.js'

/** The quota's figures when it refused bytes (the warn log, the 507's body). */
export interface QuotaLow {
  storeBytes: number
  maxStoreBytes: number
  /** The bytes the refused creation, declaration or PATCH wanted. */
  neededBytes: number
}

/** Where a recount starts: the grow-only `added` counter, and the bytes of claims in flight. */
export interface QuotaMark {
  added: number
  inFlight: number
}

/**
 * Where the running total lives: in memory, or shared by the fleet in Redis.
 *
 * A claim is in flight from the moment it takes its bytes until its caller settles it (the
 * creation's record is written, the PATCH body has ended): a walk may not see its bytes yet, so
 * a recount adds the claims in flight when it began.
 */
export interface QuotaCounter {
  /** The total, or `undefined` when it was never counted (or Redis lost it). */
  get(): Promise<number | undefined>
  /** Sets the total from a count, unless one exists (another instance counted first). */
  init(total: number): Promise<number>
  /**
   * Takes `bytes` if they fit under `max` (all or nothing, or with `partial` as many as fit);
   * what it takes is in flight under `token`. Resolves to the bytes taken and the total after,
   * or `undefined` when never counted.
   */
  claim(
    bytes: number,
    max: number,
    partial: boolean,
    token: string,
  ): Promise<{ granted: number; total: number } | undefined>
  /** Ends the claim `token` of `granted` bytes, giving `giveBack` of them back. */
  settle(token: string, granted: number, giveBack: number): Promise<number | undefined>
  /** Keeps claims in flight alive (a PATCH body takes long); no-op in memory. */
  refresh(claims: Array<[token: string, granted: number]>): Promise<void>
  /** Moves the total by `delta` (a removal when negative), if it was counted. */
  add(delta: number): Promise<number | undefined>
  /** Where a recount starts. */
  mark(): Promise<QuotaMark>
  /** The total becomes `walked` plus what was added since `mark` and what was in flight then. */
  recount(walked: number, mark: QuotaMark): Promise<number>
}

export class LocalQuotaCounter implements QuotaCounter {
  #total: number | undefined
  #added = 0
  readonly #inFlight = new Map<string, number>()

  async get(): Promise<number | undefined> {
    return this.#total
  }

  async init(total: number): Promise<number> {
    this.#total ??= total
    return this.#total
  }

  async claim(bytes: number, max: number, partial: boolean, token: string) {
    if (this.#total === undefined) return undefined
    const room = Math.max(0, max - this.#total)
    const granted = bytes <= room ? bytes : partial ? room : 0
    this.#total += granted
    this.#added += granted
    if (granted > 0) this.#inFlight.set(token, granted)
    return { granted, total: this.#total }
  }

  async settle(token: string, _granted: number, giveBack: number): Promise<number | undefined> {
    this.#inFlight.delete(token)
    return this.add(-giveBack)
  }

  async refresh(): Promise<void> {}

  async add(delta: number): Promise<number | undefined> {
    if (this.#total === undefined) return undefined
    this.#total = Math.max(0, this.#total + delta)
    if (delta > 0) this.#added += delta
    return this.#total
  }

  async mark(): Promise<QuotaMark> {
    let inFlight = 0
    for (const bytes of this.#inFlight.values()) inFlight += bytes
    return { added: this.#added, inFlight }
  }

  async recount(walked: number, mark: QuotaMark): Promise<number> {
    this.#total = walked + Math.max(0, this.#added - mark.added) + mark.inFlight
    return this.#total
  }
}

/** A claim in flight in Redis outlives a process that died this long (refreshed while alive). */
const IN_FLIGHT_TTL_MS = 30_000

/**
 * The fleet's total in Redis, under the plugin's prefix: `<prefix>{quota}:bytes` (the total),
 * `<prefix>{quota}:added` (grow-only, for recounts) and `<prefix>{quota}:inflight` (a sorted set
 * of the claims in flight, scored by when they expire unless refreshed). Every change is one
 * script call (a claim checks and takes in one step, so two instances cannot both take the last
 * bytes); the keys have no TTL. Whichever instance sweeps sets the recounted total.
 */
export class RedisQuotaCounter implements QuotaCounter {
  readonly #scripts: RedisClient & Scripts
  readonly #bytesKey: string
  readonly #addedKey: string
  readonly #inFlightKey: string

  constructor(client: RedisClient, prefix: string) {
    this.#scripts = scriptsOf(client)
    this.#bytesKey = `${prefix}{quota}:bytes`
    this.#addedKey = `${prefix}{quota}:added`
    this.#inFlightKey = `${prefix}{quota}:inflight`
  }

  #call<T>(fn: (s: Scripts) => Promise<T>): Promise<T> {
    return bounded(
      attempt(() => fn(this.#scripts)),
      CALL_TIMEOUT_MS,
      'the store quota',
    )
  }

  async get(): Promise<number | undefined> {
    return this.add(0)
  }

  init(total: number): Promise<number> {
    return this.#call((s) => s.fastifyTusQuotaInit(this.#bytesKey, this.#addedKey, total))
  }

  async claim(bytes: number, max: number, partial: boolean, token: string) {
    const [granted, total] = await this.#call((s) =>
      s.fastifyTusQuotaClaim(
        this.#bytesKey,
        this.#addedKey,
        this.#inFlightKey,
        bytes,
        max,
        partial ? 1 : 0,
        token,
        IN_FLIGHT_TTL_MS,
      ),
    )
    return granted < 0 ? undefined : { granted, total }
  }

  async settle(token: string, granted: number, giveBack: number): Promise<number | undefined> {
    const total = await this.#call((s) =>
      s.fastifyTusQuotaSettle(this.#bytesKey, this.#inFlightKey, `${token}:${granted}`, giveBack),
    )
    return total ?? undefined
  }

  async refresh(claims: Array<[token: string, granted: number]>): Promise<void> {
    if (claims.length === 0) return
    const members = claims.map(([token, granted]) => `${token}:${granted}`)
    await this.#call((s) =>
      s.fastifyTusQuotaRefresh(this.#inFlightKey, IN_FLIGHT_TTL_MS, ...members),
    )
  }

  async add(delta: number): Promise<number | undefined> {
    const total = await this.#call((s) =>
      s.fastifyTusQuotaAdd(this.#bytesKey, this.#addedKey, delta),
    )
    return total ?? undefined
  }

  async mark(): Promise<QuotaMark> {
    const [added, inFlight] = await this.#call((s) =>
      s.fastifyTusQuotaMark(this.#addedKey, this.#inFlightKey),
    )
    return { added, inFlight }
  }

  recount(walked: number, mark: QuotaMark): Promise<number> {
    return this.#call((s) =>
      s.fastifyTusQuotaRecount(this.#bytesKey, this.#addedKey, walked, mark.added, mark.inFlight),
    )
  }
}

/** The upload a claim grows, and what a walk counted for it before (see `growingUploads`). */
export interface GrowingUpload {
  id: string
  from: number
}

/** Bytes taken from the quota, in flight until `settle` says how many of them stay. */
export interface QuotaClaim {
  readonly granted: number
  /** The claim ends: `kept` of its bytes stay counted, the rest goes back. Never rejects. */
  settle(kept: number): Promise<void>
}

const NO_CLAIM: QuotaClaim = { granted: 0, settle: async () => {} }

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
  /** This process' claims in flight: token → granted bytes (refreshed in Redis while alive). */
  readonly #inFlight = new Map<string, number>()
  /**
   * The uploads this process' claims in flight grow (a creation, a length declared, a PATCH body
   * of a deferred-length upload): token → the upload's id and the bytes the walk would have
   * counted for it before its claim (`growingUploads`).
   */
  readonly #growing = new Map<string, GrowingUpload>()
  /** While a recount walks: the uploads of the claims that ended since its mark, the same way. */
  #walking: Map<string, number> | undefined
  #refreshing: NodeJS.Timeout | undefined

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
   * The first count of a process, before it serves: counts the directory, and sets the total from
   * it when none exists, or lowers it when the directory holds less than the total says (a fleet
   * restarted on a directory emptied meanwhile). Lowered by the sweep's recount, never below
   * the truth: the claims in flight elsewhere at the mark and what was added since keep their
   * bytes. A total at or under the count stays (what the fleet counted is not counted again).
   */
  async countAtStart(): Promise<{ before: number | undefined; total: number }> {
    const mark = await this.counter.mark()
    const walked = await this.#count()
    const before = await this.counter.get()
    let total = before
    if (total === undefined) total = await this.counter.init(walked)
    else {
      const since = (await this.counter.mark()).added - mark.added
      const recounted = walked + Math.max(0, since) + mark.inFlight
      if (recounted < total) total = await this.counter.recount(walked, mark)
    }
    return { before, total: this.#seen(total) }
  }

  /**
   * Takes `bytes` for an upload (a creation's length, a declared length's rest, a PATCH body
   * of a deferred-length upload). All or nothing unless `partial`. A refusal (or a partial
   * grant) is reported to the `onLow` listeners. Rejects when the counter fails.
   */
  async claim(
    bytes: number,
    { partial = false, grows }: { partial?: boolean; grows?: GrowingUpload | undefined } = {},
  ): Promise<QuotaClaim> {
    if (bytes <= 0) return NO_CLAIM
    const token = randomUUID()
    let claimed = await this.counter.claim(bytes, this.maxStoreBytes, partial, token)
    if (!claimed) {
      // Never counted (Redis lost the keys, say): count, then try again.
      await this.ensureCounted()
      claimed = await this.counter.claim(bytes, this.maxStoreBytes, partial, token)
      if (!claimed) throw new Error('the store quota has no total')
    }
    this.#seen(claimed.total)
    const { granted } = claimed
    if (granted < bytes) {
      const low = {
        storeBytes: claimed.total,
        maxStoreBytes: this.maxStoreBytes,
        neededBytes: bytes,
      }
      for (const listener of this.#onLow) listener(low)
    }
    if (granted === 0) return NO_CLAIM
    this.#track(token, granted)
    if (grows) this.#growing.set(token, grows)
    return {
      granted,
      settle: async (kept) => {
        this.#untrack(token)
        this.#growing.delete(token)
        if (grows) this.#walking?.set(grows.id, grows.from)
        const giveBack = Math.max(0, granted - Math.max(0, kept))
        // A failure leaves the bytes counted (and the claim in flight, until it expires): the
        // next sweep's recount corrects the total.
        const total = await this.counter.settle(token, granted, giveBack).catch(() => undefined)
        if (total !== undefined) this.#seen(total)
      },
    }
  }

  #track(token: string, granted: number): void {
    this.#inFlight.set(token, granted)
    if (this.#refreshing || !(this.counter instanceof RedisQuotaCounter)) return
    this.#refreshing = setInterval(() => {
      this.counter.refresh([...this.#inFlight]).catch(() => {})
    }, IN_FLIGHT_TTL_MS / 3)
    this.#refreshing.unref()
  }

  #untrack(token: string): void {
    this.#inFlight.delete(token)
    if (this.#inFlight.size === 0 && this.#refreshing) {
      clearInterval(this.#refreshing)
      this.#refreshing = undefined
    }
  }

  /** Gives back (negative) or adds bytes outside a claim: a removal. */
  async add(delta: number): Promise<void> {
    if (delta === 0) return
    const total = await this.counter.add(delta)
    if (total !== undefined) this.#seen(total)
  }

  /**
   * What a recount's walk should count for the uploads of this process' claims made or in flight
   * since its mark: what each held before its claim, not what it holds by then, since the claim
   * counts the rest (in flight at the mark, or added since): counting the new bytes or length a
   * second time would refuse bytes until the next sweep.
   */
  growingUploads(): Pick<ReadonlyMap<string, number>, 'get'> {
    return {
      get: (id) => {
        for (const growing of this.#growing.values()) if (growing.id === id) return growing.from
        return this.#walking?.get(id)
      },
    }
  }

  /** Where a recount starts; `undefined` when the counter fails (then nothing is recounted). */
  async mark(): Promise<QuotaMark | undefined> {
    // Before the counter's mark, not after it: a claim in flight at the mark that ends while
    // the mark is on its way to Redis is counted by the mark, so the walk must not count it.
    this.#walking = new Map()
    const mark = await this.counter.mark().catch(() => undefined)
    if (!mark) this.#walking = undefined
    return mark
  }

  /** The walk that began at the last mark has ended (recounted or not). */
  walked(): void {
    this.#walking = undefined
  }

  /** A sweep walked the whole store and found `walked` bytes. */
  async recount(walked: number, mark: QuotaMark): Promise<void> {
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
export function quotaExceeded(low: QuotaLow): Refusal {
  return refusal(
    507,
    `Insufficient Storage: this upload needs ${low.neededBytes} bytes and the store holds ` +
      `${low.storeBytes} of its ${low.maxStoreBytes} (maxStoreBytes, unfinished uploads' ` +
      `declared lengths included); try again later`,
  )
}

/** The answer to a declared length larger than the whole quota: no retry can help. */
export function tooLargeForQuota(neededBytes: number, maxStoreBytes: number): Refusal {
  return refusal(
    413,
    `Request Entity Too Large: this upload needs ${neededBytes} bytes; the store holds at most ${maxStoreBytes} (maxStoreBytes)`,
  )
}

/** Redis failed or was too slow for a quota check: 503, which tus clients retry. */
export const QUOTA_UNAVAILABLE = refusal(
  503,
  'The store quota cannot be checked right now; try again',
)
