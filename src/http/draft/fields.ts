/**
 * The draft's header fields as read from a request, and the rewrite that hands a draft request
 * to @tus/server as the tus 1.0 request it amounts to.
 *
 * `Upload-Complete` is an RFC 8941 Boolean (`?0`, `?1`), `Upload-Offset` and `Upload-Length`
 * RFC 8941 Integers (at most 15 digits, non-negative here).
 */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import { Refusal, refusal } from '../../refusal.js'
import type { VersionFeatures } from './versions.js'

/** `Upload-Complete`: `true`, `false`, absent, or the refusal a malformed value deserves. */
export function uploadComplete(headers: IncomingHttpHeaders): boolean | undefined | Refusal {
  const value = headers['upload-complete']
  if (value === undefined) return undefined
  const text = String(value).trim()
  if (text === '?1') return true
  if (text === '?0') return false
  return refusal(400, `Upload-Complete must be ?0 or ?1, got ${JSON.stringify(text)}`)
}

/** An Integer field (`upload-offset`, `upload-length`): a number, absent, or its refusal. */
export function integerField(
  headers: IncomingHttpHeaders,
  name: 'upload-offset' | 'upload-length',
): number | undefined | Refusal {
  const value = headers[name]
  if (value === undefined) return undefined
  const text = String(value).trim()
  if (!/^\d{1,15}$/.test(text)) {
    return refusal(
      400,
      `${fieldName(name)} must be a non-negative whole number, got ${JSON.stringify(text)}`,
    )
  }
  return Number(text)
}

/**
 * `Upload-Length` as the version reads it: a malformed value is refused (-03 to -05), or ignored
 * from -07 on: its value "is a non-negative Integer ... Other values MUST cause the entire header
 * field to be ignored" (-11).
 */
export function uploadLength(
  headers: IncomingHttpHeaders,
  features: VersionFeatures,
): number | undefined | Refusal {
  const length = integerField(headers, 'upload-length')
  return length instanceof Refusal && features.malformedIgnored ? undefined : length
}

/** The body's `Content-Length`, when the request declared one (not chunked). */
export function contentLength(headers: IncomingHttpHeaders): number | undefined {
  if (headers['transfer-encoding'] !== undefined) return undefined
  const value = headers['content-length']
  // Node has checked it is digits and one value.
  return value === undefined ? undefined : Number(value)
}

/** Whether the request carries content: a length above 0, or a chunked body. */
export function hasContent(headers: IncomingHttpHeaders): boolean {
  const length = contentLength(headers)
  return length === undefined ? headers['transfer-encoding'] !== undefined : length > 0
}

/** The field name as the draft spells it. */
export function fieldName(name: string): string {
  return name.replace(
    /(^|-)([a-z])/g,
    (_, dash: string, letter: string) => dash + letter.toUpperCase(),
  )
}

/**
 * Rewrites the request's headers in place: `null` removes one. Both views Node keeps are changed
 * (`headers`, and `rawHeaders`, which the web request handed to tus reads), so tus, the plugin's
 * guards and the direct write path see the same request. The app's hooks ran before: they saw
 * the request as the client sent it.
 */
export function rewriteHeaders(
  raw: IncomingMessage,
  changes: Readonly<Record<string, string | null>>,
): void {
  const rawHeaders: string[] = []
  const names = Object.keys(changes)
  for (let i = 0; i < raw.rawHeaders.length; i += 2) {
    const name = raw.rawHeaders[i] as string
    if (!names.includes(name.toLowerCase())) rawHeaders.push(name, raw.rawHeaders[i + 1] as string)
  }
  for (const [name, value] of Object.entries(changes)) {
    if (value === null) {
      delete raw.headers[name]
    } else {
      raw.headers[name] = value
      rawHeaders.push(fieldName(name), value)
    }
  }
  raw.rawHeaders = rawHeaders
}
