/**
 * The Lua scripts of the Redis locker and the sweep's lease, registered on the user's client
 * with ioredis' `defineCommand`: ioredis then sends each script's SHA (EVALSHA), and its text
 * only on a connection that does not know it yet (NOSCRIPT). The command names carry a
 * `fastifyTus` prefix so that they cannot clash with the user's own commands, and are defined
 * once per client, however many lockers, leases and plugin registrations share it.
 */
import type { RedisClient } from './client.js'

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
  /** Sets the store quota's total unless it exists (and `added` to 0); answers the total. */
  fastifyTusQuotaInit(bytesKey: string, addedKey: string, total: number): Promise<number>
  /**
   * Takes bytes if they fit, in flight as `<token>:<granted>` until settled: `[granted, total]`, or
   * `[-1, 0]` when there is no total.
   */
  fastifyTusQuotaClaim(
    bytesKey: string,
    addedKey: string,
    inFlightKey: string,
    bytes: number,
    max: number,
    partial: 0 | 1,
    token: string,
    ttlMs: number,
  ): Promise<[number, number]>
  /** Ends a claim in flight, giving bytes back; answers the total (nil: none). */
  fastifyTusQuotaSettle(
    bytesKey: string,
    inFlightKey: string,
    member: string,
    giveBack: number,
  ): Promise<number | null>
  /** Keeps claims in flight alive for another TTL. */
  fastifyTusQuotaRefresh(inFlightKey: string, ttlMs: number, ...members: string[]): Promise<number>
  /** Moves the total by a delta (0: reads it); nil when there is no total. */
  fastifyTusQuotaAdd(bytesKey: string, addedKey: string, delta: number): Promise<number | null>
  /** `[added, bytes in flight]`, after dropping the claims in flight that expired. */
  fastifyTusQuotaMark(addedKey: string, inFlightKey: string): Promise<[number, number]>
  /** The total becomes the walked bytes, plus what was added since the mark and was in flight then. */
  fastifyTusQuotaRecount(
    bytesKey: string,
    addedKey: string,
    walked: number,
    markAdded: number,
    markInFlight: number,
  ): Promise<number>
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
  /** KEYS: bytes, added. ARGV: total. */
  fastifyTusQuotaInit: {
    numberOfKeys: 2,
    lua: `
redis.call('set', KEYS[1], ARGV[1], 'NX')
redis.call('set', KEYS[2], '0', 'NX')
return tonumber(redis.call('get', KEYS[1]))`,
  },
  /**
   * KEYS: bytes, added, inflight. ARGV: bytes, max, partial (1) or all or nothing (0), token,
   * ttlMs. The member is scored by when it expires (Redis time).
   */
  fastifyTusQuotaClaim: {
    numberOfKeys: 3,
    lua: `
local current = redis.call('get', KEYS[1])
if not current then return {-1, 0} end
current = tonumber(current)
local wanted = tonumber(ARGV[1])
local room = tonumber(ARGV[2]) - current
if room < 0 then room = 0 end
local granted = 0
if wanted <= room then granted = wanted elseif ARGV[3] == '1' then granted = room end
if granted == 0 then return {0, current} end
local text = string.format('%d', granted)
local time = redis.call('time')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local member = ARGV[4] .. ':' .. text
redis.call('zadd', KEYS[3], now + tonumber(ARGV[5]), member)
redis.call('incrby', KEYS[2], text)
return {granted, redis.call('incrby', KEYS[1], text)}`,
  },
  /** KEYS: bytes, inflight. ARGV: member, giveBack. */
  fastifyTusQuotaSettle: {
    numberOfKeys: 2,
    lua: `
redis.call('zrem', KEYS[2], ARGV[1])
if redis.call('exists', KEYS[1]) == 0 then return nil end
local total = redis.call('decrby', KEYS[1], ARGV[2])
if total < 0 then redis.call('set', KEYS[1], '0') return 0 end
return total`,
  },
  /** KEYS: inflight. ARGV: ttlMs, members... */
  fastifyTusQuotaRefresh: {
    numberOfKeys: 1,
    lua: `
local time = redis.call('time')
local expires = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + tonumber(ARGV[1])
local kept = 0
for i = 2, #ARGV do kept = kept + redis.call('zadd', KEYS[1], 'XX', 'CH', expires, ARGV[i]) end
return kept`,
  },
  /** KEYS: bytes, added. ARGV: delta. */
  fastifyTusQuotaAdd: {
    numberOfKeys: 2,
    lua: `
if redis.call('exists', KEYS[1]) == 0 then return nil end
if tonumber(ARGV[1]) > 0 then redis.call('incrby', KEYS[2], ARGV[1]) end
local total = redis.call('incrby', KEYS[1], ARGV[1])
if total < 0 then redis.call('set', KEYS[1], '0') return 0 end
return total`,
  },
  /** KEYS: added, inflight. Members are <token>:<bytes>. */
  fastifyTusQuotaMark: {
    numberOfKeys: 2,
    lua: `
local time = redis.call('time')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('zremrangebyscore', KEYS[2], '-inf', now)
local inflight = 0
for _, member in ipairs(redis.call('zrange', KEYS[2], 0, -1)) do
  inflight = inflight + tonumber(string.match(member, ':([0-9]+)$'))
end
return {tonumber(redis.call('get', KEYS[1]) or '0'), inflight}`,
  },
  /** KEYS: bytes, added. ARGV: walked, the mark's added and in-flight bytes. */
  fastifyTusQuotaRecount: {
    numberOfKeys: 2,
    lua: `
local added = tonumber(redis.call('get', KEYS[2]) or '0')
local since = added - tonumber(ARGV[2])
if since < 0 then since = 0 end
local total = tonumber(ARGV[1]) + since + tonumber(ARGV[3])
redis.call('set', KEYS[1], string.format('%d', total))
redis.call('set', KEYS[2], string.format('%d', added))
return total`,
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
