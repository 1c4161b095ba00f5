/**
 * A tus `Locker` shared by every instance that uses the same Redis: the lock of an upload is a
 * Redis key holding its owner's token, set with NX and a TTL, kept alive while held, deleted only
 * by its owner. A request that waits for a lock asks its holder, wherever it runs, to let go
 * (pub/sub), as @tus/server's MemoryLocker does within one process.
 *
 * Keys and channels (prefix `fastify-tus:` by default):
 * - `<prefix>lock:<id>`: the owner's token, expiring after `lockTtlMs` unless refreshed;
 * - channel `<prefix>release`: `{"id","token"}`, "the holder of this token, please release";
 * - channel `<prefix>unlocked`: `<id>`, wakes the waiters of that lock at once.
 */
import { randomUUID } from 'node:crypto'
import type { Lock, Locker, RequestRelease } from '@tus/utils'
import { ERRORS } from '@tus/utils'
import { LockTimeoutError } from '../errors.js'
import type { HeldLock, SweepLocker } from '../sweep/activity-locker.js'

/** The calls made on the client the user passes (an ioredis `Redis`). */
export interface RedisClient {
  eval(script: string, numKeys: number, ...args: Array<string | number>): Promise<unknown>
  publish(channel: string, message: string): Promise<number>
  /** A second connection for subscriptions (a subscribed connection can do nothing else). */
  duplicate(): RedisSubscriber
}

export interface RedisSubscriber {
  subscribe(...channels: string[]): Promise<unknown>
  on(event: 'message', listener: (channel: string, message: string) => void): unknown
  on(event: 'error', listener: (error: Error) => void): unknown
  quit(): Promise<unknown>
}

export interface RedisLockerOptions {
  client: RedisClient
  /** Prefix of the keys and channels. Default `'fastify-tus:'`. */
  prefix?: string
  /** A held lock lives this long unless refreshed (every third of it) by its holder. Default 10 s. */
  lockTtlMs?: number
  /** A request gives up waiting for a lock after this long (HTTP 423). Default 30 s. */
  acquireLockTimeoutMs?: number
  /** A waiter looks again at least this often (a holder that died never says it let go). Default 100 ms. */
  retryMs?: number
  /** Errors of the subscription connection (the plugin logs them); without it they are dropped. */
  onError?: (error: Error) => void
}

export const REDIS_LOCKER_DEFAULTS = {
  prefix: 'fastify-tus:',
  lockTtlMs: 10_000,
  acquireLockTimeoutMs: 30_000,
  retryMs: 100,
} as const

/** A waiter asks the same holder again after this long, in case the first request was missed. */
const ASK_AGAIN_MS = 1000

/** Sets the key if it is free; answers nil when it did, else the holder's token. */
const ACQUIRE = `
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return nil end
return redis.call('get', KEYS[1])`

/** Deletes the key only for its owner. KEYS: key. ARGV: token. */
export const RELEASE = `
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0`

/** Extends the key's life only for its owner. KEYS: key. ARGV: token, ttl. */
export const REFRESH = `
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0`

interface Holder {
  token: string
  requestRelease: RequestRelease
}

/** Members marked `@internal` are the plumbing of its locks, left out of the published types. */
export class RedisLocker implements Locker, SweepLocker {
  readonly client: RedisClient
  readonly prefix: string
  readonly lockTtlMs: number
  readonly acquireLockTimeoutMs: number
  readonly retryMs: number
  readonly #onError: (error: Error) => void
  readonly #releaseChannel: string
  readonly #unlockedChannel: string
  /** Locks this locker holds: id → token and how to ask the request to let go. */
  readonly #held = new Map<string, Holder>()
  /** Requests of this locker waiting for a lock: id → wake-up calls. */
  readonly #waiters = new Map<string, Set<() => void>>()
  #subscriber: RedisSubscriber | undefined
  #subscribed: Promise<unknown> | undefined

  constructor(options: RedisLockerOptions) {
    this.client = options.client
    this.prefix = options.prefix ?? REDIS_LOCKER_DEFAULTS.prefix
    this.lockTtlMs = options.lockTtlMs ?? REDIS_LOCKER_DEFAULTS.lockTtlMs
    this.acquireLockTimeoutMs =
      options.acquireLockTimeoutMs ?? REDIS_LOCKER_DEFAULTS.acquireLockTimeoutMs
    this.retryMs = options.retryMs ?? REDIS_LOCKER_DEFAULTS.retryMs
    this.#onError = options.onError ?? (() => {})
    this.#releaseChannel = `${this.prefix}release`
    this.#unlockedChannel = `${this.prefix}unlocked`
  }

  newLock(id: string): Lock {
    return new RedisLock(id, this)
  }

  /** Takes the lock only if nobody holds it, without asking anyone to let go (for the sweep). */
  async tryLock(id: string): Promise<HeldLock | undefined> {
    const lock = new RedisLock(id, this)
    return (await lock.tryOnce(() => {})) === true ? lock : undefined
  }

  /** Closes the subscription connection (the user's client stays open: it is theirs). */
  async close(): Promise<void> {
    const subscriber = this.#subscriber
    this.#subscriber = undefined
    this.#subscribed = undefined
    await subscriber?.quit().catch(() => {})
  }

  /** @internal */
  keyOf(id: string): string {
    return `${this.prefix}lock:${id}`
  }

  /** The subscription that carries release requests and wake-ups; opened on first use. @internal */
  listening(): Promise<unknown> {
    if (!this.#subscribed) {
      const subscriber = this.client.duplicate()
      subscriber.on('message', (channel, message) => this.#onMessage(channel, message))
      // Without a listener ioredis prints its connection errors to the console itself.
      subscriber.on('error', (error) => this.#onError(error))
      this.#subscriber = subscriber
      this.#subscribed = subscriber.subscribe(this.#releaseChannel, this.#unlockedChannel)
      // A failed subscription is tried again by the next lock.
      this.#subscribed.catch(() => {
        if (this.#subscriber === subscriber) this.#subscribed = undefined
      })
    }
    return this.#subscribed
  }

  /** Atomically takes the key; `undefined` when taken, else the holder's token. @internal */
  async acquire(id: string, token: string): Promise<string | undefined> {
    const holder = await this.client.eval(ACQUIRE, 1, this.keyOf(id), token, this.lockTtlMs)
    return holder == null ? undefined : String(holder)
  }

  /** @internal */
  async release(id: string, token: string): Promise<void> {
    this.#held.delete(id)
    await this.client.eval(RELEASE, 1, this.keyOf(id), token)
    await this.client.publish(this.#unlockedChannel, id)
  }

  /** False when the lock is no longer this token's (it expired, and maybe someone took it). @internal */
  async refresh(id: string, token: string): Promise<boolean> {
    return (await this.client.eval(REFRESH, 1, this.keyOf(id), token, this.lockTtlMs)) === 1
  }

  /** @internal */
  askToRelease(id: string, token: string): Promise<number> {
    return this.client.publish(this.#releaseChannel, JSON.stringify({ id, token }))
  }

  /** @internal */
  hold(id: string, holder: Holder): void {
    this.#held.set(id, holder)
  }

  /** @internal */
  forget(id: string, token: string): void {
    if (this.#held.get(id)?.token === token) this.#held.delete(id)
  }

  /** Resolves when the lock is released here or elsewhere, after `ms`, or on abort. @internal */
  waitForRelease(id: string, ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const waiters = this.#waiters.get(id) ?? new Set<() => void>()
      this.#waiters.set(id, waiters)
      const done = () => {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        waiters.delete(done)
        if (waiters.size === 0 && this.#waiters.get(id) === waiters) this.#waiters.delete(id)
        resolve()
      }
      const timer = setTimeout(done, ms)
      signal.addEventListener('abort', done)
      waiters.add(done)
    })
  }

  #onMessage(channel: string, message: string): void {
    if (channel === this.#unlockedChannel) {
      for (const wake of [...(this.#waiters.get(message) ?? [])]) wake()
      return
    }
    if (channel !== this.#releaseChannel) return
    let request: { id?: unknown; token?: unknown }
    try {
      request = JSON.parse(message)
    } catch {
      return
    }
    if (typeof request.id !== 'string') return
    const holder = this.#held.get(request.id)
    if (holder && holder.token === request.token) holder.requestRelease()
  }
}

class RedisLock implements Lock, HeldLock {
  #token: string | undefined
  #refresher: NodeJS.Timeout | undefined

  constructor(
    readonly id: string,
    readonly locker: RedisLocker,
  ) {}

  async lock(signal: AbortSignal, requestRelease: RequestRelease): Promise<void> {
    const { locker, id } = this
    const token = randomUUID()
    const deadline = Date.now() + locker.acquireLockTimeoutMs
    let asked: string | undefined
    let askedAt = 0
    for (;;) {
      if (signal.aborted) throw ERRORS.ABORTED
      const holder = await this.tryOnce(requestRelease, token)
      if (holder === true) return
      const now = Date.now()
      if (now >= deadline) throw new LockTimeoutError(id, locker.acquireLockTimeoutMs)
      if (holder !== asked || now - askedAt >= ASK_AGAIN_MS) {
        asked = holder
        askedAt = now
        await locker.askToRelease(id, holder)
      }
      await locker.waitForRelease(id, Math.min(locker.retryMs, deadline - now), signal)
    }
  }

  /** One attempt: true when taken, else the holder's token. */
  async tryOnce(requestRelease: RequestRelease, token = randomUUID()): Promise<true | string> {
    // Release requests must reach this holder from the moment it holds the lock.
    await this.locker.listening()
    const holder = await this.locker.acquire(this.id, token)
    if (holder !== undefined) return holder
    this.#token = token
    this.locker.hold(this.id, { token, requestRelease })
    this.#refresher = setInterval(() => this.#refresh(requestRelease), this.locker.lockTtlMs / 3)
    this.#refresher.unref()
    return true
  }

  async unlock(): Promise<void> {
    const token = this.#token
    if (token === undefined) return
    this.#stop()
    await this.locker.release(this.id, token)
  }

  #refresh(requestRelease: RequestRelease): void {
    const token = this.#token
    if (token === undefined) return
    this.locker.refresh(this.id, token).then(
      (stillOurs) => {
        if (stillOurs || this.#token !== token) return
        // The lease ran out (Redis unreachable for a whole TTL, or a stalled process): another
        // request may hold it now, so the request that thought it held it must stop.
        this.#stop()
        this.locker.forget(this.id, token)
        requestRelease()
      },
      // Redis unreachable: the next refresh tries again; the lease lasts a whole TTL.
      () => {},
    )
  }

  #stop(): void {
    clearInterval(this.#refresher)
    this.#refresher = undefined
    this.#token = undefined
  }
}
