/**
 * What a download answers, from the request's headers and the validators of the bytes: the
 * conditional requests of RFC 9110 (13.1, evaluated in the order of 13.2.2) and single byte
 * ranges (14.2). Pure functions: download.ts reads the bytes.
 *
 * - `If-Match` (strong comparison, `*` included) that names another tag answers 412; so does
 *   `If-Unmodified-Since` before `Last-Modified`, only without `If-Match`.
 * - `If-None-Match` (weak comparison, `*` included) answers 304; `If-Modified-Since` does only
 *   without `If-None-Match`, and is ignored unless it is a valid HTTP-date.
 * - `Range: bytes=a-b`, `bytes=a-` and `bytes=-n` answer 206; a range that starts past the end
 *   (or `bytes=-0`, or any range of no bytes) answers 416. Several ranges, another unit, or a
 *   malformed header are ignored: the whole, 200, as 14.2 permits (multipart/byteranges is not
 *   served).
 * - `If-Range` keeps the range only when it names the current bytes: the ETag, compared strongly,
 *   or exactly the `Last-Modified` date; otherwise the whole, 200.
 */
import type { ByteRange, DownloadFacts } from '../backends/backend.js'

/** The request headers a download reads (lower-case names, as the web `Headers` gives them). */
export interface ConditionalHeaders {
  get(name: string): string | null
}

export type DownloadAnswer =
  | { status: 200 }
  | { status: 206; range: ByteRange }
  | { status: 304 }
  | { status: 412 }
  | { status: 416 }

/** What to answer for bytes of `size` that `facts` describe. */
export function downloadAnswer(
  headers: ConditionalHeaders,
  facts: DownloadFacts,
  size: number,
): DownloadAnswer {
  if (!preconditionsHold(headers, facts)) return { status: 412 }
  if (notModified(headers, facts)) return { status: 304 }
  const header = headers.get('range')
  if (header === null || !rangeStillValid(headers.get('if-range'), facts)) return { status: 200 }
  const range = parseRange(header, size)
  if (range === 'ignored') return { status: 200 }
  if (range === 'unsatisfiable') return { status: 416 }
  return { status: 206, range }
}

/** `Last-Modified` as sent: whole seconds, as HTTP-dates have them. */
export function lastModified(facts: DownloadFacts): Date {
  return new Date(Math.floor(facts.modifiedMs / 1000) * 1000)
}

function preconditionsHold(headers: ConditionalHeaders, facts: DownloadFacts): boolean {
  const ifMatch = headers.get('if-match')
  if (ifMatch !== null) {
    if (ifMatch.trim() === '*') return true
    return entityTags(ifMatch).some((tag) => !tag.startsWith('W/') && tag === facts.etag)
  }
  const since = httpDate(headers.get('if-unmodified-since'))
  return since === undefined || lastModified(facts).getTime() <= since
}

function notModified(headers: ConditionalHeaders, facts: DownloadFacts): boolean {
  const ifNoneMatch = headers.get('if-none-match')
  if (ifNoneMatch !== null) {
    if (ifNoneMatch.trim() === '*') return true
    const ours = opaque(facts.etag)
    return entityTags(ifNoneMatch).some((tag) => opaque(tag) === ours)
  }
  const since = httpDate(headers.get('if-modified-since'))
  return since !== undefined && lastModified(facts).getTime() <= since
}

function rangeStillValid(ifRange: string | null, facts: DownloadFacts): boolean {
  if (ifRange === null) return true
  const value = ifRange.trim()
  if (value.startsWith('"') || value.startsWith('W/')) {
    // A weak tag never matches here: a range of bytes needs them unchanged to the byte.
    return !value.startsWith('W/') && value === facts.etag
  }
  return httpDate(value) === lastModified(facts).getTime()
}

/**
 * One range of `Range` within `size` bytes, `unsatisfiable` when it has none of them, or
 * `ignored` for a header that asks for anything but one range of bytes.
 */
export function parseRange(header: string, size: number): ByteRange | 'unsatisfiable' | 'ignored' {
  const match = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header)
  if (!match) return 'ignored'
  const [, first = '', last = ''] = match
  if (first === '') {
    if (last === '') return 'ignored'
    const suffix = Number(last)
    if (suffix === 0 || size === 0) return 'unsatisfiable'
    return { start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(first)
  const end = last === '' ? Number.POSITIVE_INFINITY : Number(last)
  if (end < start) return 'ignored'
  if (start >= size) return 'unsatisfiable'
  return { start, end: Math.min(end, size - 1) }
}

/** The entity tags of an `If-None-Match` list. */
function entityTags(list: string): string[] {
  return list.match(/(?:W\/)?"[^"]*"/g) ?? []
}

/** A tag without its weakness, for the weak comparison. */
function opaque(tag: string): string {
  return tag.startsWith('W/') ? tag.slice(2) : tag
}

/** An HTTP-date's time, or `undefined` when the value is none. */
function httpDate(value: string | null): number | undefined {
  if (value === null) return undefined
  const time = Date.parse(value)
  return Number.isNaN(time) ? undefined : time
}
