/**
 * The answer to a refusal the plugin gives itself, instead of tus (a protocol guard, an
 * `Upload-Concat` that cannot be served): the one place a `Refusal` becomes a `Response`. A
 * refusal thrown inside tus' handlers (a backend's 507, a 460) is answered by tus itself, from
 * the same two fields.
 */
import type { Refusal } from '../refusal.js'
import { TUS_VERSION } from './protocol.js'

/**
 * `refusal` as an answer, with `headers` (those tus puts on its own answers: the version, CORS):
 * a plain-text body framed by its length, and `Tus-Version` with a 412 (tus 1.0, "Tus-Resumable").
 *
 * `streamed`: as the refusals of a retried final creation have always been sent (the shape of
 * the `Response` tus builds: the body streamed, fetch's default content type); kept so, byte for
 * byte, as every answer of the plugin is.
 */
export function refusalAnswer(
  refusal: Refusal,
  headers: Headers,
  { streamed = false }: { streamed?: boolean } = {},
): Response {
  if (!streamed) {
    headers.set('Content-Type', 'text/plain; charset=utf-8')
    headers.set('Content-Length', String(Buffer.byteLength(refusal.body)))
    if (refusal.status_code === 412) headers.set('Tus-Version', TUS_VERSION)
  }
  return new Response(refusal.body, { status: refusal.status_code, headers })
}
