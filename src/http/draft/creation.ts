/**
 * Upload creation (-03 and -05, "Upload Creation"): a POST with `Upload-Complete`, with or
 * without content, handed to tus as the tus 1.0 creation it amounts to: a known length
 * (`Upload-Length`, or `Upload-Complete: ?1` with a `Content-Length`) or a deferred one, and the
 * content as a creation-with-upload body, which the direct write path stores as it arrives (an
 * interrupted creation resumes from what was stored). tus names the upload, runs the hooks,
 * builds `Location` and announces it (POST_CREATE), where the 104 goes out (exchange.ts).
 */
import type { IncomingHttpHeaders } from 'node:http'
import { Refusal, refusal } from '../../refusal.js'
import { TUS_VERSION } from '../protocol.js'
import { type Limits, sfBoolean, uploadLimit } from './answers.js'
import { contentLength, hasContent, uploadComplete, uploadLength } from './fields.js'
import { inconsistentLength } from './problem.js'
import type { VersionFeatures } from './versions.js'

const OCTET_STREAM = 'application/offset+octet-stream'

/** A creation as read: its header rewrite for tus, and the length it declares. */
export interface Creation {
  changes: Record<string, string | null>
  /** The upload's length, when the request states it. */
  length: number | undefined
  /** A complete creation of unknown length: its end, once all of it arrived, is the length. */
  lengthAtEnd: boolean
}

/** The creation `headers` ask for, or why it is refused. */
export function readCreation(
  headers: IncomingHttpHeaders,
  features: VersionFeatures,
): Creation | Refusal {
  const complete = uploadComplete(headers)
  if (complete instanceof Refusal) return complete
  // "This header field can be used for request identification by a server": a POST without it
  // is no resumable creation.
  if (complete === undefined) {
    return refusal(400, 'a creation needs Upload-Complete: ?0 or ?1 (resumable uploads draft)')
  }
  // "The request MUST NOT include the `Upload-Offset` header field."
  if (headers['upload-offset'] !== undefined) {
    return refusal(400, 'a creation must not carry Upload-Offset')
  }
  if (headers['upload-concat'] !== undefined) {
    return refusal(
      400,
      'Upload-Concat (concatenation) is a tus 1.0 extension: send it with Tus-Resumable: 1.0.0',
    )
  }
  const length = declaredLength(headers, complete, features)
  if (length instanceof Refusal) return length
  const body = hasContent(headers)
  const changes: Record<string, string | null> = {
    'tus-resumable': TUS_VERSION,
    'upload-length': length === undefined ? null : String(length),
    'upload-defer-length': length === undefined ? '1' : null,
    'content-type': body ? OCTET_STREAM : null,
  }
  // The representation's metadata, for the hooks as tus 1.0 has it, unless tus' own is sent
  // (tus-js-client sends Upload-Metadata with every protocol).
  if (headers['upload-metadata'] === undefined) {
    const metadata = metadataOf(headers)
    if (metadata !== undefined) changes['upload-metadata'] = metadata
  }
  return { changes, length, lengthAtEnd: complete && length === undefined }
}

/**
 * -05: "The request can indicate the upload's final size in two different ways. Both
 * indicators may be present in the same request as long as they convey the same size. If the
 * sizes are inconsistent, the server MUST reject the request by responding with a `400 (Bad
 * Request)` status code." (`Upload-Length` is -05's; interop 5 clients send it too.) -11: "If
 * indicators (1) and (2) are both present in the same request, their indicated lengths MUST
 * match"; interop 8 gets the problem type `inconsistent-upload-length`.
 */
function declaredLength(
  headers: IncomingHttpHeaders,
  complete: boolean,
  features: VersionFeatures,
): number | undefined | Refusal {
  const length = uploadLength(headers, features)
  if (length instanceof Refusal) return length
  const content = contentLength(headers)
  const whole = complete ? content : undefined
  if (length !== undefined && whole !== undefined && length !== whole) {
    return inconsistentLength(
      `Upload-Length ${length} and the complete content's length ${whole} differ`,
    )
  }
  const declared = length ?? whole
  if (declared !== undefined && content !== undefined && content > declared) {
    return inconsistentLength(
      `the content (${content} bytes) is longer than Upload-Length ${declared}`,
    )
  }
  return declared
}

/** `Upload-Metadata` (tus' form) from the representation's `Content-Type` and file name. */
function metadataOf(headers: IncomingHttpHeaders): string | undefined {
  const pairs: string[] = []
  const type = headers['content-type']?.split(';')[0]?.trim()
  if (type) pairs.push(`filetype ${Buffer.from(type).toString('base64')}`)
  const disposition = headers['content-disposition']
  const name = disposition && /filename="?([^";]+)"?/i.exec(disposition)?.[1]
  if (name) pairs.push(`filename ${Buffer.from(name).toString('base64')}`)
  return pairs.length > 0 ? pairs.join(',') : undefined
}

/**
 * tus' 201 as the draft's: "The server MUST send the `Upload-Offset` header field in the
 * response if it considers the upload active"; a complete upload's answer "MUST NOT include the
 * `Upload-Complete` header field with the value of false", an incomplete one's carries it false
 * (-03, -05). -11: "If the `Upload-Complete` request header field is set to false ... the server
 * MUST include the `Location` response header field pointing to the upload resource and MUST
 * include the `Upload-Limit` header field with the corresponding limits if existing."
 */
export function creationAnswer(
  answer: Response,
  creation: Creation,
  features: VersionFeatures,
  limits: Limits,
): Response {
  if (answer.status < 200 || answer.status > 299) return answer
  const { headers } = answer
  const offset = Number(headers.get('upload-offset') ?? 0)
  headers.set('Upload-Offset', String(offset))
  headers.set('Upload-Complete', sfBoolean(offset === creation.length))
  if (features.uploadLimit) {
    const expires = headers.get('upload-expires')
    headers.set('Upload-Limit', uploadLimit(limits, expires, features.lifetimeKey))
  }
  return answer
}
