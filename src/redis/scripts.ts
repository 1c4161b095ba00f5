/**
 * The Lua scripts of the Redis locker and the sweep's lease, registered on the user's client
 * with ioredis' `defineCommand`: ioredis then sends each script's SHA (EVALSHA), and its text
 * only on a connection that does not know it yet (NOSCRIPT). The command names carry a
 * `fastifyTus` prefix so that they cannot clash with the user's own commands, and are defined
 * once per client, however many lockers, leases and plugin registrations share it.
 */
import type { RedisClient } from './locker.js'

/** The commands defined on the client; each resolves to its script's answer. */
export interface Scripts {
  /** Sets the key to the token if it is free; nil when it did, else the holder's token. */
  fastifyTusAcquireLock(key: string, token: string, ttlMs: number): Promise<string | null>
  /** Takes the sweep lease of the current slot: `[1, slot]` when taken, else `[0, slot]`. */
  fastifyTusAcquireLease(
    slotKey: string,
    runningKey: string,
    token: string,
    intervalMs: number,
    ttlMs: number,
  ): Promise<[number, number]>
  /** Deletes the key only for its owner: 1 when deleted, else 0. */
  fastifyTusRelease(key: string, token: string): Promise<number>
  /**
   * Extends each key's life only for its owner. Arguments: the number of keys, the keys, then
   * for each key its token and TTL. Answers, for each key, 1 when extended, else 0.
   */
  fastifyTusRefresh(
    numberOfKeys: number,
    ...keysThenArgs: Array<string | number>
  ): Promise<number[]>
}

const SCRIPTS: Record<keyof Scripts, { lua: string; numberOfKeys?: number }> = {
  /** KEYS: key. ARGV: token, ttl. */
  fastifyTusAcquireLock: {
    numberOfKeys: 1,
    lua: `
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return nil end
return redis.call('get', KEYS[1])`,
  },
  /**
   * KEYS: slot, running. ARGV: token, intervalMs, ttlMs. The slot is Redis time / intervalMs;
   * the slot key outlives its slot by one interval, so that a slot is never taken twice.
   */
  fastifyTusAcquireLease: {
    numberOfKeys: 2,
    lua: `
local time = redis.call('time')
local interval = tonumber(ARGV[2])
local slot = math.floor((tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)) / interval)
if redis.call('exists', KEYS[2]) == 1 then return {0, slot} end
local last = tonumber(redis.call('get', KEYS[1]) or '-1')
if slot <= last then return {0, slot} end
redis.call('set', KEYS[1], slot, 'PX', interval * 2)
redis.call('set', KEYS[2], ARGV[1], 'PX', ARGV[3])
return {1, slot}`,
  },
  /** KEYS: key. ARGV: token. */
  fastifyTusRelease: {
    numberOfKeys: 1,
    lua: `
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0`,
  },
  /** KEYS: any number of keys. ARGV: token and ttl of the first key, of the second, ... */
  fastifyTusRefresh: {
    lua: `
local kept = {}
for i, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[i * 2 - 1] then
    kept[i] = redis.call('pexpire', key, ARGV[i * 2])
  else
    kept[i] = 0
  end
end
return kept`,
  },
}

/** The client with the scripts' commands, defined on it unless it already has them. */
export function scriptsOf(client: RedisClient): RedisClient & Scripts {
  const defined = client as RedisClient & Partial<Record<keyof Scripts, unknown>>
  for (const [name, definition] of Object.entries(SCRIPTS)) {
    if (typeof defined[name as keyof Scripts] !== 'function') client.defineCommand(name, definition)
  }
  return client as RedisClient & Scripts
}
