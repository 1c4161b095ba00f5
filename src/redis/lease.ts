/**
 * One sweep per interval across a fleet of instances sharing a Redis: the scheduled sweep of
 * an instance runs only if it wins that interval's lease.
 *
 * Time (Redis' clock, so that the instances' clocks do not matter) is cut into slots of
 * `intervalMs`. The first instance whose job ticks in a slot takes it: the slot number is
 * stored, so nobody else sweeps in that slot, and a `running` key with a TTL kept alive while it
 * sweeps, so that no other sweep starts before it ends. Every instance ticks once per interval,
 * so when the sweeping instance dies another one takes the next slot; if it died in the middle
 * of a sweep, its `running` key first has to expire (`ttlMs`).
 */
import { randomUUID } from 'node:crypto'
import { attempt, bounded, CALL_TIMEOUT_MS } from './bounded.js'
import type { RedisClient } from './client.js'
import { KeyRefresher } from './refresher.js'
import { type Scripts, scriptsOf } from './scripts.js'

/** A lease held for one sweep. */
export interface HeldLease {
  /** The interval this sweep belongs to (Redis time / intervalMs). */
  slot: number
  release(): Promise<void>
}

/** What the schedule asks before a scheduled sweep. */
export interface SweepLease {
  /** The lease of the current interval, or `undefined` when another instance has it. */
  acquire(): Promise<HeldLease | undefined>
}

export interface RedisSweepLeaseOptions {
  client: RedisClient
  prefix: string
  intervalMs: number
  /** The `running` key lives this long unless refreshed (every third of it). */
  ttlMs: number
}

export class RedisSweepLease implements SweepLease {
  readonly #options: RedisSweepLeaseOptions
  readonly #scripts: RedisClient & Scripts
  /** Keeps the `running` key alive while this instance sweeps. */
  readonly #refresher: KeyRefresher
  // One hash tag, so that both keys live on one node of a Redis Cluster (the script uses both).
  readonly #slotKey: string
  readonly #runningKey: string

  constructor(options: RedisSweepLeaseOptions) {
    this.#options = options
    this.#scripts = scriptsOf(options.client)
    this.#refresher = new KeyRefresher(options.client)
    this.#slotKey = `${options.prefix}{sweep}:slot`
    this.#runningKey = `${options.prefix}{sweep}:running`
  }

  /**
   * Rejects when Redis fails or does not answer within a couple of seconds, whatever the
   * client's retry settings (the schedule then skips this interval with a warning).
   */
  async acquire(): Promise<HeldLease | undefined> {
    const { intervalMs, ttlMs } = this.#options
    const token = randomUUID()
    const acquiring = attempt(() =>
      this.#scripts.fastifyTusAcquireLease(
        this.#slotKey,
        this.#runningKey,
        token,
        intervalMs,
        ttlMs,
      ),
    )
    let taken: number
    let slot: number
    try {
      ;[taken, slot] = await bounded(acquiring, CALL_TIMEOUT_MS, 'the sweep lease')
    } catch (error) {
      // Given up on, but the client may still send it once Redis is back: nobody sweeps with
      // a lease taken then, so its `running` key goes at once rather than after a whole TTL.
      acquiring.then(([late]) => {
        if (late === 1) this.#release(token).catch(() => {})
      }, noop)
      throw error
    }
    if (taken !== 1) return undefined
    // If the key expires meanwhile (Redis unreachable for a whole TTL), another instance may
    // start a sweep while this one ends: each removal still takes the upload's lock.
    this.#refresher.add(this.#runningKey, token, ttlMs, () => {})
    return {
      slot,
      release: async () => {
        this.#refresher.delete(this.#runningKey, token)
        await this.#release(token)
      },
    }
  }

  #release(token: string): Promise<number> {
    return bounded(
      attempt(() => this.#scripts.fastifyTusRelease(this.#runningKey, token)),
      CALL_TIMEOUT_MS,
      'the sweep lease release',
    )
  }
}

function noop() {}
