/**
 * What the plugin uses of a Redis client (ioredis 5 or 6, a `Cluster` included): its own module,
 * so that the scripts, the refresher and the lease name it without importing the locker.
 */

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
  /** The connection is closed for good (ioredis: its `retryStrategy` gave up, or `quit()`). */
  on(event: 'end', listener: () => void): unknown
  quit(): Promise<unknown>
  /** Closes the connection at once, without waiting for Redis (when `quit()` cannot get through). */
  disconnect?(): void
}
