/**
 * Refusals in the draft's forms. Interop 6 (-04, -05) defines two RFC 9457 problem types; a
 * server "MAY use" them, and does here: a client can tell the two conflicts it can act on from
 * any other 4xx. Interop 5 has none: its refusals are plain text, as every refusal of the plugin.
 */
import { Refusal } from '../../refusal.js'
import type { VersionFeatures } from './versions.js'

const PROBLEM_TYPES = 'https://iana.org/assignments/http-problem-types'

/** A refusal with a problem type, rendered as `application/problem+json` where defined. */
export class DraftProblem extends Refusal {
  readonly problem: Readonly<Record<string, string | number>>

  constructor(status: number, title: string, problem: Record<string, string | number>) {
    super(status, `${title}\n`)
    this.problem = { ...problem, title }
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
 * -05, "Upload Append": "If the upload is already complete, the server MUST NOT modify the
 * upload resource and MUST respond with a `400 (Bad Request)` status code."
 */
export function completedUpload(): DraftProblem {
  return new DraftProblem(400, 'upload is already completed', {
    type: `${PROBLEM_TYPES}#completed-upload`,
  })
}

/**
 * The body and type of a draft refusal: problem details when the version defines the refusal's
 * problem type, else the plain text every refusal of the plugin has.
 */
export function refusalBody(
  refusal: Refusal,
  features: VersionFeatures,
): { body: string; type: string } {
  if (refusal instanceof DraftProblem && features.problemTypes) {
    return { body: JSON.stringify(refusal.problem), type: 'application/problem+json' }
  }
  return { body: refusal.body, type: 'text/plain; charset=utf-8' }
}
