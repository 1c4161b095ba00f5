/**
 * The one shape of a refused request, for every layer: the backends throw it (a quota, the
 * free-space floor, a partial upload that is not finished), the http guards return it, and it
 * reaches the client either through @tus/server, which answers a thrown error with its
 * `status_code` and `body` as they are (the stock `ERRORS` have the same two fields), or through
 * the plugin's own answer (http/refusals.ts), which adds tus' headers.
 *
 * Not an `Error`: a refusal is an answer, not a fault, and some are thrown on every request of a
 * kind (a 460, a 507 while the disk is full), where a stack trace would cost for nothing. The
 * startup errors of errors.ts (`FST_TUS_*`) stay errors.
 */
export class Refusal {
  /** The answer's status; named as @tus/server reads it from a thrown error. */
  readonly status_code: number
  /** The answer's body, exactly as sent (the plugin's own end in a newline). */
  readonly body: string

  constructor(status: number, body: string) {
    this.status_code = status
    this.body = body
  }

  get status(): number {
    return this.status_code
  }
}

/** A refusal of `status` for `reason` (a newline is added). */
export function refusal(status: number, reason: string): Refusal {
  return new Refusal(status, `${reason}\n`)
}

/**
 * `error` as a refusal when it is one, or has its shape (tus' own `ERRORS`, the lock errors of
 * errors.ts, an app hook's `{status_code, body}`); `undefined` for any other error.
 */
export function asRefusal(error: unknown): Refusal | undefined {
  if (error instanceof Refusal) return error
  if (typeof error !== 'object' || error === null) return undefined
  const { status_code, body } = error as { status_code?: unknown; body?: unknown }
  if (typeof status_code !== 'number' || typeof body !== 'string') return undefined
  return new Refusal(status_code, body)
}
