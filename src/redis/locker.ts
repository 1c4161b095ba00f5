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
 *
 * The locker keeps all the state (the locks it holds, its waiting requests, the subscription);
 * a lock is a handle (upload id and token) whose calls go to the locker.
 */
import { randomUUID } from 'node:crypto'
import type { Lock, Locker, RequestRelease } from '@tus/utils'
import { ERRORS } from '@tus/utils'
import { LockTimeoutError } from '../errors.js'
import type { HeldLock, SweepLocker } from '../sweep/activity-locker.js'
import { KeyRefresher } from './refresher.js'
import { type Scripts, scriptsOf } from './scripts.js'

/** The calls made on the client the user passes (an ioredis `Redis`). */
export interface RedisClient {
  /** Defines a Lua script as a command of the client (see scripts.ts). */
  defineCommand(name: string, definition: { lua: string; numberOfKeys?: number }): void
  publish(channel: string, message: string): Promise<number>
  /** A second connection for subscriptions (a subscribed connection can do nothing else). */
  duplicate(): RedisSubscriber
  /** True for an ioredis `Cluster`, whose scripts may only use keys of one node. */
  readonly isCluster?: boolean
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

interface Holder {
  token: string
  requestRelease: RequestRelease
}

export class RedisLocker implements Locker, SweepLocker {
  readonly client: RedisClient
  readonly prefix: string
  readonly lockTtlMs: number
  readonly acquireLockTimeoutMs: number
  readonly retryMs: number
  readonly #scripts: RedisClient & Scripts
  readonly #refresher: KeyRefresher
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
    this.#scripts = scriptsOf(this.client)
    this.#refresher = new KeyRefresher(this.client)
    this.#onError = options.onError ?? (() => {})
    this.#releaseChannel = `${this.prefix}release`
    this.#unlockedChannel = `${this.prefix}unlocked`
  }

  newLock(id: string): Lock {
    const token = randomUUID()
    return {
      lock: (signal, requestRelease) => this.#lock(id, token, signal, requestRelease),
      unlock: () => this.#unlock(id, token),
    }
  }

  /** Takes the lock only if nobody holds it, without asking anyone to let go (for the sweep). */
  async tryLock(id: string): Promise<HeldLock | undefined> {
    const token = randomUUID()
    if ((await this.#tryOnce(id, token, () => {})) !== true) return undefined
    return { unlock: () => this.#unlock(id, token) }
  }

  /** Closes the subscription connection (the user's client stays open: it is theirs). */
  async close(): Promise<void> {
    const subscriber = this.#subscriber
    this.#subscriber = undefined
    this.#subscribed = undefined
    await subscriber?.quit().catch(() => {})
  }

  async #lock(
    id: string,
    token: string,
    signal: AbortSignal,
    requestRelease: RequestRelease,
  ): Promise<void> {
    const deadline = Date.now() + this.acquireLockTimeoutMs
    let asked: string | undefined
    let askedAt = 0
    for (;;) {
      if (signal.aborted) throw ERRORS.ABORTED
      const holder = await this.#tryOnce(id, token, requestRelease)
      if (holder === true) return
      const now = Date.now()
      if (now >= deadline) throw new LockTimeoutError(id, this.acquireLockTimeoutMs)
      if (holder !== asked || now - askedAt >= ASK_AGAIN_MS) {
        asked = holder
        askedAt = now
        await this.client.publish(this.#releaseChannel, JSON.stringify({ id, token: holder }))
      }
      await this.#waitForRelease(id, Math.min(this.retryMs, deadline - now), signal)
    }
  }

  /** One attempt: true when taken (and then kept alive), else the holder's token. */
  async #tryOnce(
    id: string,
    token: string,
    requestRelease: RequestRelease,
  ): Promise<true | string> {
    // Release requests must reach this holder from the moment it holds the lock.
    await this.#listening()
    const key = this.#keyOf(id)
    const holder = await this.#scripts.fastifyTusAcquireLock(key, token, this.lockTtlMs)
    if (holder != null) return String(holder)
    // The lock's TTL ran out (Redis unreachable for a whole TTL, or a stalled process): another
    // request may hold it now, so the request that thought it held it must stop. Added before
    // the lock is held, so that a holder of this locker that lost it to this one is told.
    this.#refresher.add(key, token, this.lockTtlMs, () => {
      if (this.#forget(id, token)) requestRelease()
    })
    this.#held.set(id, { token, requestRelease })
    return true
  }

  /** Does nothing unless the lock is held with this token (never taken, lost, or let go). */
  async #unlock(id: string, token: string): Promise<void> {
    if (!this.#forget(id, token)) return
    const key = this.#keyOf(id)
    this.#refresher.delete(key, token)
    await this.#scripts.fastifyTusRelease(key, token)
    await this.client.publish(this.#unlockedChannel, id)
  }

  /** True when the lock was held with this token, and is no longer. */
  #forget(id: string, token: string): boolean {
    if (this.#held.get(id)?.token !== token) return false
    this.#held.delete(id)
    return true
  }

  #keyOf(id: string): string {
    return `${this.prefix}lock:${id}`
  }

  /** The subscription that carries release requests and wake-ups; opened on first use. */
  #listening(): Promise<unknown> {
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

  /** Resolves when the lock is released here or elsewhere, after `ms`, or on abort. */
  #waitForRelease(id: string, ms: number, signal: AbortSignal): Promise<void> {
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
