/**
 * Offset retrieval (HEAD), cancellation (DELETE) and discovery (OPTIONS), handed to tus as their
 * tus 1.0 requests.
 */
import type { IncomingHttpHeaders } from 'node:http'
import { type Refusal, refusal } from '../../refusal.js'
import { TUS_VERSION } from '../protocol.js'
import { type Limits, sfBoolean, uploadLimit, withStatus } from './answers.js'
import type { VersionFeatures } from './versions.js'

/**
 * -03: "The request MUST NOT include an `Upload-Offset` or `Upload-Complete` header field. The
 * server MUST reject requests with either of these fields by responding with a `400 (Bad
 * Request)` status code." -05 adds `Upload-Length` for offset retrieval. -09 dropped the rule:
 * interop 8 has no field a HEAD or a DELETE must not carry (tus ignores them).
 */
export function readRetrieval(
  method: 'HEAD' | 'DELETE',
  headers: IncomingHttpHeaders,
  features: VersionFeatures,
): Record<string, string | null> | Refusal {
  if (!features.refusesStateFields) return { 'tus-resumable': TUS_VERSION }
  const forbidden = ['upload-offset', 'upload-complete']
  if (method === 'HEAD' && features.uploadLengthField) forbidden.push('upload-length')
  for (const name of forbidden) {
    if (headers[name] !== undefined) {
      const what = method === 'HEAD' ? 'an offset retrieval (HEAD)' : 'a cancellation (DELETE)'
      return refusal(
        400,
        `${what} must not carry ${name.replace(/(^|-)(\w)/g, (m) => m.toUpperCase())}`,
      )
    }
  }
  return { 'tus-resumable': TUS_VERSION }
}

/**
 * tus' HEAD answer as the draft's: "it MUST respond with a `204 (No Content)` or `200 (OK)`
 * status code. The response MUST include the `Upload-Offset` header field ... The response MUST
 * include the `Upload-Complete` header field" (-03); "The response MUST include the
 * `Upload-Length` header field set to the upload's final size if one was recorded" and "MAY
 * include the `Upload-Limit` header field" (-05); "the response SHOULD include a
 * `Cache-Control` header field with the value `no-store`". -11: a successful response "MUST
 * include the offset in the `Upload-Offset` header field", "MUST include the `Upload-Complete`
 * header field", "MUST include the length in the `Upload-Length` header field, unless the client
 * has not supplied one", "MUST indicate the limits in the `Upload-Limit` header field".
 */
export function offsetAnswer(
  answer: Response,
  features: VersionFeatures,
  limits: Limits,
): Response {
  if (answer.status !== 200 && answer.status !== 204) return answer
  const { headers } = answer
  const offset = headers.get('upload-offset')
  const length = headers.get('upload-length')
  headers.set('Upload-Complete', sfBoolean(offset !== null && offset === length))
  headers.set('Cache-Control', 'no-store')
  if (features.uploadLimit) {
    const expires = headers.get('upload-expires')
    headers.set('Upload-Limit', uploadLimit(limits, expires, features.lifetimeKey))
  }
  return withStatus(answer, 204)
}

/**
 * -05, "Upload-Limit": "A server that supports the creation of a resumable upload resource ...
 * under a target URI MUST include the `Upload-Limit` header field with the corresponding limits
 * in a response to an `OPTIONS` request sent to this target URI." The editor's copy after -11
 * keeps that "MUST" ("If the server does not apply any limits, it MUST use `min-size=0`"); -10 and
 * -11 also say "the server MUST include the `Accept-Patch` ... header field" whose value "MUST
 * include the full `application/partial-upload` media type" (interop 8 answers both texts).
 */
export function optionsAnswer(
  answer: Response,
  features: VersionFeatures,
  limits: Limits,
): Response {
  if (features.uploadLimit && answer.status < 300) {
    answer.headers.set('Upload-Limit', uploadLimit(limits, null, features.lifetimeKey))
  }
  if (features.acceptPatch && answer.status < 300) {
    answer.headers.set('Accept-Patch', 'application/partial-upload')
  }
  return answer
}
