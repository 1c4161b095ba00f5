/**
 * Upload append (-03, -05 and -11, "Upload Append"): a PATCH to the upload, handed to tus as a tus
 * 1.0 PATCH. What tus does not know of is checked first, on the upload as read before tus takes
 * its lock: a complete upload, and lengths that disagree with the one recorded. The offset is
 * tus' to check, under the lock: a request still in flight may move it until then.
 */
import type { IncomingHttpHeaders } from 'node:http'
import type { Upload } from '@tus/utils'
import { Refusal, refusal } from '../../refusal.js'
import { TUS_VERSION } from '../protocol.js'
import { sfBoolean, withStatus } from './answers.js'
import { contentLength, hasContent, integerField, uploadComplete, uploadLength } from './fields.js'
import { completedUpload, inconsistentLength, mismatchingOffset } from './problem.js'
import type { VersionFeatures } from './versions.js'

const PARTIAL_UPLOAD = 'application/partial-upload'

/** An append as read: its header rewrite for tus and the offset it names. */
export interface Append {
  changes: Record<string, string | null>
  offset: number
  /** The upload's length, recorded or declared by this append; `undefined`: unknown. */
  length: number | undefined
  /** A complete append of unknown length: its end, once all of it arrived, is the length. */
  lengthAtEnd: boolean
}

/** The append `headers` ask for on `upload` (`undefined`: not readable now; tus answers). */
export function readAppend(
  headers: IncomingHttpHeaders,
  features: VersionFeatures,
  upload: Upload | undefined,
): Append | Refusal {
  const offset = integerField(headers, 'upload-offset')
  if (offset instanceof Refusal) return offset
  // "The `Upload-Offset` field value MUST be set to the resumption offset." (-05); "The client
  // MUST indicate the offset ... by including the `Upload-Offset` header field" (-11).
  if (offset === undefined) return refusal(400, 'an append needs Upload-Offset')
  const complete = uploadComplete(headers)
  if (complete instanceof Refusal) return complete
  if (complete === undefined) return refusal(400, 'an append needs Upload-Complete: ?0 or ?1')
  // -05: "The request MUST use the `PATCH` method with the `application/partial-upload` media
  // type"; -11: "A server applies a `PATCH` request with the `application/partial-upload` media
  // type ... by appending the patch document".
  if (features.partialUploadType && mediaType(headers) !== PARTIAL_UPLOAD) {
    return refusal(415, `an append needs Content-Type: ${PARTIAL_UPLOAD}`)
  }
  const changes: Record<string, string | null> = {
    'tus-resumable': TUS_VERSION,
    'content-type': 'application/offset+octet-stream',
    'upload-length': null,
  }
  if (upload === undefined) return { changes, offset, length: undefined, lengthAtEnd: false }
  if (upload.size !== undefined && upload.offset === upload.size) {
    return completedUpload(features, hasContent(headers))
  }
  const length = lengthOf(headers, { offset, complete, upload, features })
  if (length instanceof Refusal) return length
  if (length !== undefined && upload.size === undefined) changes['upload-length'] = String(length)
  const known = upload.size ?? length
  return { changes, offset, length: known, lengthAtEnd: complete && known === undefined }
}

interface LengthInputs {
  offset: number
  complete: boolean
  upload: Upload
  features: VersionFeatures
}

/**
 * The upload's length after this append, from what it declares, checked against the length
 * recorded. -03 and -05: "If the request includes the `Upload-Complete` field value set to true
 * and a valid `Content-Length` header field, ... the upload's final size is the sum of the
 * upload's offset and the `Content-Length` header field. ... If the server does have a previous
 * record, that value MUST match the upload's final size. If they do not match, the server MUST
 * reject the request with a `400 (Bad Request)` status code." -05: "If a final size has been
 * recorded and the upload append request exceeds this value, the server MUST stop appending
 * bytes ... and reject the request with a `400 (Bad Request)`" (without a `Content-Length`, tus'
 * limit stops the body at the length, 413). -11: "If the length is known, the server MUST
 * prevent the offset from exceeding the upload length by rejecting the request"; interop 8 gets
 * the problem type `inconsistent-upload-length` for each of these.
 */
function lengthOf(
  headers: IncomingHttpHeaders,
  { offset, complete, upload, features }: LengthInputs,
): number | undefined | Refusal {
  const stated = uploadLength(headers, features)
  if (stated instanceof Refusal) return stated
  const content = contentLength(headers)
  const whole = complete && content !== undefined ? offset + content : undefined
  if (stated !== undefined && whole !== undefined && stated !== whole) {
    return inconsistentLength(`Upload-Length ${stated} and the append's end ${whole} differ`)
  }
  const length = stated ?? whole
  const recorded = upload.size
  if (recorded !== undefined && length !== undefined && length !== recorded) {
    return inconsistentLength(`the upload's length is ${recorded}; this append makes it ${length}`)
  }
  if (recorded !== undefined && content !== undefined && offset + content > recorded) {
    return inconsistentLength(
      `the append ends at ${offset + content}, past the upload's length ${recorded}`,
    )
  }
  return length
}

function mediaType(headers: IncomingHttpHeaders): string | undefined {
  return headers['content-type']?.split(';')[0]?.trim().toLowerCase()
}

/**
 * tus' answer as the draft's. A success: "the server MUST acknowledge it by responding with a
 * `201 (Created)` status code" when incomplete, and 201 is "RECOMMENDED" when complete, with
 * `Upload-Complete` (-03, -05). -11: an incomplete append is acknowledged "by sending a `2xx
 * (Successful)` response with the `Upload-Complete` header field set to false"; a complete one's
 * "response MUST include the `Upload-Complete` header field with a true value": tus' own answer
 * (204, or what `onUploadFinish` made of it) with `Upload-Complete`. A 409: the `Upload-Offset`
 * tus' answer carries (answer.ts adds it), and the problem type where the version has it.
 */
export function appendAnswer(
  answer: Response,
  append: Append,
  features: VersionFeatures,
): Response | Refusal {
  const { headers } = answer
  if (answer.status === 409) {
    const expected = Number(headers.get('upload-offset'))
    if (Number.isSafeInteger(expected)) return mismatchingOffset(expected, append.offset)
    return answer
  }
  const offset = Number(headers.get('upload-offset'))
  if (!features.appendCreated) {
    if (answer.status >= 200 && answer.status <= 299) {
      headers.set('Upload-Complete', sfBoolean(offset === append.length))
    }
    return answer
  }
  if (answer.status !== 204) return answer
  headers.set('Upload-Complete', sfBoolean(offset === append.length))
  // tus' 204 has no body: the 201 says so, or it would go out chunked.
  if (!headers.has('content-length')) headers.set('Content-Length', '0')
  return withStatus(answer, 201)
}
