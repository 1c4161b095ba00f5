/**
 * A connected ioredis client from a URL, for the programs that make their own (the CLI, the
 * demo); the plugin itself takes the user's client. ioredis is an optional dependency, so it is
 * loaded only here, on demand.
 */
import type { Redis, RedisOptions } from 'ioredis'

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
  const client = new RedisClass(url, { connectTimeout: 3000, ...options, lazyConnect: true })
  // ioredis reports the cause (ECONNREFUSED, ...) as an error event, not in the rejection.
  let cause: Error | undefined
  const remember = (error: Error) => {
    cause = error
  }
  client.on('error', remember)
  try {
    await client.connect()
  } catch (error) {
    client.disconnect()
    throw new Error(`cannot reach Redis at ${url}: ${(cause ?? (error as Error)).message}`)
  }
  client.off('error', remember)
  return client
}
