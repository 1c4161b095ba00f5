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
 *
 * When Redis is down or slow, whatever the client's retry settings: every call is bounded
 * (bounded.ts), a `lock()` that cannot get an answer rejects with `LockUnavailableError` (503,
 * neutral body) within `acquireLockTimeoutMs`, and `unlock()` never rejects: a release that
 * fails is reported to `onError` and the key's TTL frees the lock, so a request that did its
 * work (a PATCH that wrote its bytes) still answers as usual.
 */
import { randomUUID } from 'node:crypto'
import type { Lock, Locker, RequestRelease } from '@tus/utils'
import { ERRORS } from '@tus/utils'
import { LockTimeoutError, LockUnavailableError } from '../errors.js'
import type { HeldLock, SweepLocker } from '../locking/activity-locker.js'
import { attempt, bounded, CALL_TIMEOUT_MS } from './bounded.js'
import type { RedisClient, RedisSubscriber } from './client.js'
import { KeyRefresher } from './refresher.js'
import { type Scripts, scriptsOf } from './scripts.js'

export type { RedisClient, RedisSubscriber } from './client.js'

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
  /**
   * What goes wrong with Redis, for the logs (the plugin logs it at `warn`): errors of the
   * subscription connection, a `lock()` that failed with `LockUnavailableError` (its `cause` is
   * the Redis error), a release that failed (the lock then frees itself when its key expires).
   * Without it they are dropped.
   */
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

/**
 * `unlock()` waits this long for Redis to delete the key (a healthy Redis takes well under a
 * millisecond), so that the request's answer usually leaves once the lock is free; a release
 * still unanswered then goes on in the background, and the request answers anyway.
 */
const RELEASE_WAIT_MS = 250

/**
 * The least time a call of `lock()` gets, even right at its deadline: the last attempt then still
 * reaches a healthy Redis (a `lock()` may end this much past `acquireLockTimeoutMs`).
 */
const MIN_CALL_MS = 50

function noop() {}

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
  /** The SUBSCRIBE in flight or done on `#subscriber`; `undefined` when it has to be sent again. */
  #subscription: Promise<unknown> | undefined
  /** The subscription answered: release requests and wake-ups reach this locker. */
  #subscribed = false

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

  /**
   * Takes the lock only if nobody holds it, without asking anyone to let go (for the sweep).
   * Rejects with the Redis error (or a timeout after a couple of seconds) when Redis fails.
   */
  async tryLock(id: string): Promise<HeldLock | undefined> {
    const token = randomUUID()
    const holder = await this.#tryOnce(id, token, noop, () => CALL_TIMEOUT_MS)
    if (holder !== true) return undefined
    return { unlock: () => this.#unlock(id, token) }
  }

  /** Closes the subscription connection (the user's client stays open: it is theirs). */
  async close(): Promise<void> {
    const subscriber = this.#subscriber
    this.#subscriber = undefined
    this.#subscription = undefined
    this.#subscribed = false
    if (!subscriber) return
    // QUIT waits for Redis' answer: with Redis down, close the connection without it.
    await bounded(
      attempt(() => subscriber.quit()),
      CALL_TIMEOUT_MS,
      'QUIT',
    ).catch(() => subscriber.disconnect?.())
  }

  /**
   * Waits for the lock up to `acquireLockTimeoutMs` (then `LockTimeoutError`, 423). Redis down,
   * unreachable or too slow: `LockUnavailableError` (503) as soon as a call fails or runs out of
   * time, never later than the deadline (plus `MIN_CALL_MS`), however the client retries.
   */
  async #lock(
    id: string,
    token: string,
    signal: AbortSignal,
    requestRelease: RequestRelease,
  ): Promise<void> {
    const deadline = Date.now() + this.acquireLockTimeoutMs
    try {
      await this.#acquire(id, token, signal, requestRelease, deadline)
    } catch (error) {
      if (error instanceof LockTimeoutError || error === ERRORS.ABORTED) throw error
      // The client gets a neutral 503 (tus clients retry it); the Redis error goes to the log.
      const unavailable = new LockUnavailableError({ cause: error })
      this.#report(unavailable)
      throw unavailable
    }
  }

  async #acquire(
    id: string,
    token: string,
    signal: AbortSignal,
    requestRelease: RequestRelease,
    deadline: number,
  ): Promise<void> {
    // Each call gets what is left of the time, at most CALL_TIMEOUT_MS.
    const callMs = () => Math.min(CALL_TIMEOUT_MS, Math.max(MIN_CALL_MS, deadline - Date.now()))
    let asked: string | undefined
    let askedAt = 0
    for (;;) {
      if (signal.aborted) throw ERRORS.ABORTED
      const holder = await this.#tryOnce(id, token, requestRelease, callMs)
      if (holder === true) return
      const now = Date.now()
      if (now >= deadline) throw new LockTimeoutError(id, this.acquireLockTimeoutMs)
      if (holder !== asked || now - askedAt >= ASK_AGAIN_MS) {
        asked = holder
        askedAt = now
        const message = JSON.stringify({ id, token: holder })
        await bounded(
          attempt(() => this.client.publish(this.#releaseChannel, message)),
          callMs(),
          'a release request',
        )
      }
      await this.#waitForRelease(id, Math.min(this.retryMs, deadline - now), signal)
    }
  }

  /**
   * One attempt: true when taken (and then kept alive), else the holder's token. Each Redis
   * call gets `callMs()`; a call that fails or runs out of time rejects the attempt.
   */
  async #tryOnce(
    id: string,
    token: string,
    requestRelease: RequestRelease,
    callMs: () => number,
  ): Promise<true | string> {
    // Release requests must reach this holder from the moment it holds the lock.
    await this.#listening(callMs())
    const key = this.#keyOf(id)
    const acquiring = attempt(() => this.#scripts.fastifyTusAcquireLock(key, token, this.lockTtlMs))
    let holder: string | null
    try {
      holder = await bounded(acquiring, callMs(), 'a lock acquisition')
    } catch (error) {
      // Given up on, but the client may still send it once Redis is back: a lock taken then
      // belongs to no request, so it is given back at once instead of blocking for a whole TTL.
      acquiring.then((late) => {
        if (late == null) void this.#release(key, id, token)
      }, noop)
      throw error
    }
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

  /**
   * Does nothing unless the lock is held with this token (never taken, lost, or let go). Never
   * rejects: the request has done its work (a PATCH wrote its bytes, and tus unlocks before it
   * answers), so a release that fails only delays the next request until the key expires.
   */
  async #unlock(id: string, token: string): Promise<void> {
    if (!this.#forget(id, token)) return
    const key = this.#keyOf(id)
    this.#refresher.delete(key, token)
    const released = this.#release(key, id, token)
    let timer: NodeJS.Timeout | undefined
    const waited = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, RELEASE_WAIT_MS)
    })
    await Promise.race([released, waited])
    clearTimeout(timer)
  }

  /** Deletes the key if it still holds the token and wakes the waiters; never rejects. */
  async #release(key: string, id: string, token: string): Promise<void> {
    try {
      await bounded(
        attempt(() => this.#scripts.fastifyTusRelease(key, token)),
        CALL_TIMEOUT_MS,
        'a lock release',
      )
      await bounded(
        attempt(() => this.client.publish(this.#unlockedChannel, id)),
        CALL_TIMEOUT_MS,
        'a wake-up',
      )
    } catch (error) {
      this.#report(
        new Error(
          `fastify-tus could not release the lock of upload ${id} in Redis; it frees itself when its key expires (lockTtlMs ${this.lockTtlMs} ms)`,
          { cause: error },
        ),
      )
    }
  }

  /** To the user's `onError`, which must not break the lock path by throwing. */
  #report(error: Error): void {
    try {
      this.#onError(error)
    } catch {
      // The logger failed: nothing better to do with the error.
    }
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

  /**
   * The subscription that carries release requests and wake-ups; opened on first use, waited
   * for at most `ms`. One connection for the locker's life: ioredis reconnects it and subscribes
   * again by itself. A SUBSCRIBE that failed or did not answer in time is sent again by the
   * next lock (subscribing twice is harmless); a connection closed for good is replaced.
   */
  async #listening(ms: number): Promise<void> {
    if (this.#subscribed) return
    const subscriber = this.#subscriber ?? this.#openSubscriber()
    const subscription =
      this.#subscription ??
      attempt(() => subscriber.subscribe(this.#releaseChannel, this.#unlockedChannel))
    this.#subscription = subscription
    try {
      await bounded(subscription, ms, 'SUBSCRIBE')
    } catch (error) {
      if (this.#subscription === subscription) this.#subscription = undefined
      throw error
    }
    if (this.#subscription === subscription) this.#subscribed = true
  }

  #openSubscriber(): RedisSubscriber {
    const subscriber = this.#duplicate()
    subscriber.on('message', (channel, message) => this.#onMessage(channel, message))
    // Without a listener ioredis prints its connection errors to the console itself.
    subscriber.on('error', (error) => this.#report(error))
    subscriber.on('end', () => {
      if (this.#subscriber !== subscriber) return
      this.#subscriber = undefined
      this.#subscription = undefined
      this.#subscribed = false
    })
    this.#subscriber = subscriber
    return subscriber
  }

  /**
   * A new connection like the user's, whose commands wait for it to connect even when the
   * user's client has no offline queue (`enableOfflineQueue: false` would fail the first
   * SUBSCRIBE of a connection still connecting); the waits are bounded here anyway. An ioredis
   * `Cluster` takes other arguments: duplicated as it is.
   */
  #duplicate(): RedisSubscriber {
    if (this.client.isCluster) return this.client.duplicate()
    const duplicate = this.client.duplicate as (override: object) => RedisSubscriber
    return duplicate.call(this.client, { enableOfflineQueue: true })
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
