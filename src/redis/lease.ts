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
import { REFRESH, RELEASE, type RedisClient } from './locker.js'

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

/**
 * KEYS: slot, running. ARGV: token, intervalMs, ttlMs. Answers {1, slot} when taken, else {0, slot}.
 * The slot key outlives its slot by one interval, so that a slot is never taken twice.
 */
const TAKE = `
local time = redis.call('time')
local interval = tonumber(ARGV[2])
local slot = math.floor((tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)) / interval)
if redis.call('exists', KEYS[2]) == 1 then return {0, slot} end
local last = tonumber(redis.call('get', KEYS[1]) or '-1')
if slot <= last then return {0, slot} end
redis.call('set', KEYS[1], slot, 'PX', interval * 2)
redis.call('set', KEYS[2], ARGV[1], 'PX', ARGV[3])
return {1, slot}`

export class RedisSweepLease implements SweepLease {
  readonly #options: RedisSweepLeaseOptions
  // One hash tag, so that both keys live on one node of a Redis Cluster (the script uses both).
  readonly #slotKey: string
  readonly #runningKey: string

  constructor(options: RedisSweepLeaseOptions) {
    this.#options = options
    this.#slotKey = `${options.prefix}{sweep}:slot`
    this.#runningKey = `${options.prefix}{sweep}:running`
  }

  async acquire(): Promise<HeldLease | undefined> {
    const { client, intervalMs, ttlMs } = this.#options
    const token = randomUUID()
    const answer = (await client.eval(
      TAKE,
      2,
      this.#slotKey,
      this.#runningKey,
      token,
      intervalMs,
      ttlMs,
    )) as [number, number]
    if (answer[0] !== 1) return undefined
    const refresher = setInterval(() => {
      // A failed refresh is tried again; if the key expires meanwhile, another instance may
      // start a sweep while this one ends: each removal still takes the upload's lock.
      client.eval(REFRESH, 1, this.#runningKey, token, ttlMs).catch(() => {})
    }, ttlMs / 3)
    refresher.unref()
    return {
      slot: answer[1],
      release: async () => {
        clearInterval(refresher)
        await client.eval(RELEASE, 1, this.#runningKey, token)
      },
    }
  }
}
