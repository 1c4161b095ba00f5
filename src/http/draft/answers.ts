/**
 * What every draft answer shares: tus 1.0's own fields taken off, the interop version echoed,
 * `Upload-Complete` and `Upload-Limit` as the version defines them, refusals in the version's
 * form, and 404 for an upload that is no longer active.
 */
import type { Refusal } from '../../refusal.js'
import { refusalBody } from './problem.js'
import type { VersionFeatures } from './versions.js'

/** tus 1.0 fields that mean nothing to a draft client (OPTIONS keeps them: discovery). */
const TUS_ONLY = ['tus-resumable', 'tus-version', 'upload-defer-length']

/** The limits an answer states (`Upload-Limit`, interop 6). */
export interface Limits {
  /** `tus.maxSize` when it is a number: the most an upload may reach. */
  maxSize: number | undefined
}

/** `answer` with another status, its headers kept, and its body (none for a 204). */
export function withStatus(answer: Response, status: number): Response {
  if (answer.status === status) return answer
  if (status !== 204) return new Response(answer.body, { status, headers: answer.headers })
  answer.body?.cancel().catch(() => {})
  return new Response(null, { status, headers: answer.headers })
}

/** An sf-boolean. */
export function sfBoolean(value: boolean): string {
  return value ? '?1' : '?0'
}

/**
 * -05, "Upload-Limit": `max-size` ("a maximum size that an upload resource is allowed to
 * reach") from `tus.maxSize`; `expires` ("the remaining lifetime of the upload resource in
 * seconds counted from the generation of the response") from the sliding expiry the answer
 * states in `Upload-Expires`; -06 on name it `max-age` ("the remaining lifetime of the upload
 * resource in seconds counted from the generation of the response", -11). "If the server does not
 * apply any limits, it MUST use `min-size=0` instead of an empty header value."
 */
export function uploadLimit(
  limits: Limits,
  expires: string | null,
  key: VersionFeatures['lifetimeKey'] = 'expires',
  now = Date.now(),
): string {
  const items: string[] = []
  if (limits.maxSize !== undefined) items.push(`max-size=${limits.maxSize}`)
  const until = expires === null ? Number.NaN : Date.parse(expires)
  if (Number.isFinite(until)) items.push(`${key}=${Math.max(0, Math.floor((until - now) / 1000))}`)
  return items.length > 0 ? items.join(', ') : 'min-size=0'
}

/**
 * The fields every draft answer gets: the interop version, no tus 1.0 fields. A 410 (an expired
 * upload) becomes 404: "If the server does not consider the upload resource to be active, it
 * MUST respond with a `404 (Not Found)` status code" (-03 and -05, each request kind).
 */
export function draftFields(answer: Response, features: VersionFeatures): Response {
  const { headers } = answer
  for (const name of TUS_ONLY) headers.delete(name)
  headers.set('Upload-Draft-Interop-Version', String(features.version))
  return answer.status === 410 ? withStatus(answer, 404) : answer
}

/** A refusal as the version words it, on the headers the plugin's answer had (CORS). */
export function refusalAnswer(
  refusal: Refusal,
  features: VersionFeatures,
  answer: Response,
): Response {
  const { body, type } = refusalBody(refusal, features)
  const headers = new Headers(answer.headers)
  headers.set('Content-Type', type)
  headers.set('Content-Length', String(Buffer.byteLength(body)))
  answer.body?.cancel().catch(() => {})
  return new Response(body, { status: refusal.status_code, headers })
}
