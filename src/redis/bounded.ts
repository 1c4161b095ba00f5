/**
 * Time bounds on the Redis calls of the locker and the lease, whatever the client's own retry
 * settings: ioredis queues a command while it reconnects, for as long as `maxRetriesPerRequest`
 * (20 reconnection attempts by default, forever with `null`) and `enableOfflineQueue` let it, so
 * a request waiting on the bare call could wait minutes for an answer.
 */

/** The longest a single Redis call may take on the lock path; a healthy Redis answers in a few ms. */
export const CALL_TIMEOUT_MS = 2000

/** A Redis call that did not settle in time (it may still run later: the client keeps it queued). */
export class RedisCallTimeoutError extends Error {
  override readonly name = 'RedisCallTimeoutError'

  constructor(what: string, ms: number) {
    super(`Redis did not answer ${what} within ${ms} ms`)
  }
}

/**
 * Settles as `call()` does, or rejects with `RedisCallTimeoutError` after `ms`. A rejection of the
 * call that comes later is handled here (no unhandled rejection); whoever needs to undo a late
 * success keeps the call's promise and watches it.
 */
export function bounded<T>(call: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new RedisCallTimeoutError(what, ms)), ms)
    call.then(
      (value) => {
        clearTimeout(timer)
        resolve(value)
      },
      (error: unknown) => {
        clearTimeout(timer)
        reject(error)
      },
    )
  })
}

/** Calls `fn`, turning a synchronous throw into a rejection. */
export function attempt<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return fn()
  } catch (error) {
    return Promise.reject(error)
  }
}
