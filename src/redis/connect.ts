/**
 * A connected ioredis client from a URL, for the programs that make their own (the CLI, the
 * demo); the plugin itself takes the user's client. ioredis is an optional dependency, so it is
 * loaded only here, on demand.
 */
import type { Redis, RedisOptions } from 'ioredis'

/**
 * Settings for a client that fails fast while Redis is down (the demo's), where ioredis'
 * defaults queue a command over 20 reconnection attempts: a command sent while the connection
 * is down fails at once (no offline queue), one caught by a dropped connection fails after two
 * reconnection attempts. The lock path bounds its own calls whatever the client (docs/redis.md,
 * "When Redis fails"). Without an offline queue a command sent before the first connection is
 * ready fails too: connect first, as `connectRedis()` does.
 */
export const FAIL_FAST_REDIS_OPTIONS = {
  maxRetriesPerRequest: 1,
  enableOfflineQueue: false,
} as const satisfies RedisOptions

/** `redis://` or `rediss://`, and something after it. */
export function isRedisUrl(value: string): boolean {
  return /^rediss?:\/\/./.test(value)
}

/**
 * Connects, or rejects with `cannot reach Redis at <url>: <cause>`. The client has no `error`
 * listener once connected: the caller adds its own (ioredis prints errors nobody listens to).
 */
export async function connectRedis(url: string, options: RedisOptions = {}): Promise<Redis> {
  let RedisClass: typeof Redis
  try {
    ;({ Redis: RedisClass } = await import('ioredis'))
  } catch {
    throw new Error('Redis needs the ioredis package: npm install ioredis')
  }
  // The first connection is tried once: a Redis that refuses it is reported at once, not after
  // ioredis' reconnection attempts. Once connected, the client reconnects as configured.
  let connected = false
  const reconnect = options.retryStrategy ?? ((times: number) => Math.min(times * 50, 2000))
  const client = new RedisClass(url, {
    connectTimeout: 3000,
    ...options,
    lazyConnect: true,
    retryStrategy: (times) => (connected ? reconnect(times) : null),
  })
  // ioredis reports the cause (ECONNREFUSED, ...) as an error event, not in the rejection.
  let cause: Error | undefined
  const remember = (error: Error) => {
    cause = error
  }
  client.on('error', remember)
  try {
    await client.connect()
  } catch (error) {
    // A client that has ended has nothing to close; disconnect() would arm a 2 s timer
    // (ioredis' connector) that keeps a failing program alive that long.
    if (client.status !== 'end') client.disconnect()
    throw new Error(`cannot reach Redis at ${url}: ${(cause ?? (error as Error)).message}`)
  }
  connected = true
  client.off('error', remember)
  return client
}
