/**
 * Refusals in the draft's forms. Interop 6 (-04, -05) defines two RFC 9457 problem types; a
 * server "MAY use" them, and does here: a client can tell the two conflicts it can act on from
 * any other 4xx. Interop 8 (-09 to -11) adds `inconsistent-upload-length` (-06) for lengths that
 * disagree, and its newest text no longer has `completed-upload`. Interop 5 has none: its
 * refusals are plain text, as every refusal of the plugin.
 */
import { Refusal, refusal } from '../../refusal.js'
import type { VersionFeatures } from './versions.js'

const PROBLEM_TYPES = 'https://iana.org/assignments/http-problem-types'

/** A refusal with a problem type, rendered as `application/problem+json` where defined. */
export class DraftProblem extends Refusal {
  readonly problem: Readonly<Record<string, string | number>>
  /** The feature of the versions that define this problem type. */
  readonly definedBy: 'problemTypes' | 'lengthProblem'

  constructor(
    status: number,
    title: string,
    problem: Record<string, string | number>,
    definedBy: DraftProblem['definedBy'] = 'problemTypes',
  ) {
    super(status, `${title}\n`)
    this.problem = { ...problem, title }
    this.definedBy = definedBy
  }
}

/**
 * -05, "Mismatching Offset": "A response using this problem type SHOULD populate both members,
 * with the value of `expected-offset` taken from the upload resource and the value of
 * `provided-offset` taken from the upload append request."
 */
export function mismatchingOffset(expected: number, provided: number): DraftProblem {
  return new DraftProblem(
    409,
    `offset from request does not match offset of resource: the upload is at ${expected}, the request sent ${provided}`,
    {
      type: `${PROBLEM_TYPES}#mismatching-upload-offset`,
      'expected-offset': expected,
      'provided-offset': provided,
    },
  )
}

/**
 * An append to a complete upload. -05, "Upload Append": "If the upload is already complete, the
 * server MUST NOT modify the upload resource and MUST respond with a `400 (Bad Request)` status
 * code." -11: "the server MUST NOT modify the upload resource and MUST reject the request ... If
 * the client attempted to append a non-zero length document, the server MUST treat this as an
 * inconsistent length failure" (interop 8; an empty one is refused in plain text).
 */
export function completedUpload(features: VersionFeatures, content: boolean): Refusal {
  if (!features.lengthProblem) {
    return new DraftProblem(400, 'upload is already completed', {
      type: `${PROBLEM_TYPES}#completed-upload`,
    })
  }
  if (!content) return refusal(400, 'upload is already completed')
  return inconsistentLength('upload is already completed: no content can be appended to it')
}

/**
 * Lengths that disagree (400). -11, "Length": "If indicators (1) and (2) are both present in the
 * same request, their indicated lengths MUST match. If multiple requests include indicators,
 * their indicated values MUST match. A server can use the problem type ... `inconsistent-upload-
 * length`" (interop 8; plain text for 5 and 6, with the same words).
 */
export function inconsistentLength(title: string): DraftProblem {
  return new DraftProblem(
    400,
    title,
    { type: `${PROBLEM_TYPES}#inconsistent-upload-length` },
    'lengthProblem',
  )
}

/**
 * The body and type of a draft refusal: problem details when the version defines the refusal's
 * problem type, else the plain text every refusal of the plugin has.
 */
export function refusalBody(
  refusal: Refusal,
  features: VersionFeatures,
): { body: string; type: string } {
  if (refusal instanceof DraftProblem && features[refusal.definedBy]) {
    return { body: JSON.stringify(refusal.problem), type: 'application/problem+json' }
  }
  return { body: refusal.body, type: 'text/plain; charset=utf-8' }
}
