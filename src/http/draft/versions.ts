/**
 * Which protocol a request speaks, and what each served interop version of the IETF draft
 * "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload) defines. A request with
 * `Upload-Draft-Interop-Version` is the draft; one without it is tus 1.0.
 *
 * Served: interop 5 (draft -03) and 6 (drafts -04 and -05), the versions tus-js-client 4.x
 * (`ietf-draft-03`, `ietf-draft-05`) and Apple's URLSession (iOS 18.0, 18.1+) send, and interop 8
 * (drafts -09 to -11, and the editor's copy of 2026-07-01 after -11, which still says "The current
 * interop version is 8"): no client sends 8 yet, so raw HTTP and curl are its only proof
 * (test/draft-current.test.ts). The -15 text (2026-11-02) was not readable here: the newest text
 * read is that editor's copy. Interop 7 (-06 to -08) is not served: untested, as are 2 to 4.
 * Any other value is refused (400, with the versions served): the draft's versions differ in
 * header names and status codes, and a server "MUST NOT send a 104 (Upload Resumption Supported)
 * informational response when the interop version indicated by the `Upload-Draft-Interop-Version`
 * header field in the request is missing or mismatching" (-03, -05, -11).
 */
import type { IncomingHttpHeaders } from 'node:http'

export const INTEROP_HEADER = 'upload-draft-interop-version'

/** The interop versions served, oldest first. */
export const SERVED_VERSIONS = [5, 6, 8] as const

export type InteropVersion = (typeof SERVED_VERSIONS)[number]

/** What a version has beyond interop 5's creation, offset retrieval, append and cancellation. */
export interface VersionFeatures {
  readonly version: InteropVersion
  /** `Upload-Limit` on creation, offset retrieval and OPTIONS answers (-04). */
  readonly uploadLimit: boolean
  /** The `Upload-Limit` key of the upload's lifetime: `expires` (-04, -05), `max-age` (-06 on). */
  readonly lifetimeKey: 'expires' | 'max-age'
  /** RFC 9457 problem types `mismatching-upload-offset` and `completed-upload` (-04). */
  readonly problemTypes: boolean
  /** The problem type `inconsistent-upload-length` for lengths that disagree (-06 on). */
  readonly lengthProblem: boolean
  /** PATCH carries `Content-Type: application/partial-upload` (-04). */
  readonly partialUploadType: boolean
  /** `Upload-Length` is a field of the version: a HEAD must not carry it (-05). */
  readonly uploadLengthField: boolean
  /** HEAD and DELETE with `Upload-Offset` or `Upload-Complete` are refused (-03 to -05 only). */
  readonly refusesStateFields: boolean
  /** An append's success is a `201 (Created)` (-03 to -05); later a 2xx: tus' own `204`. */
  readonly appendCreated: boolean
  /**
   * Creation and append answers all carry `Upload-Complete`, `?0` on a refusal (-09 on: a 409
   * "MUST" carry it), the 104 states `max-age` too, and a 413 states `Upload-Limit`.
   */
  readonly completeEverywhere: boolean
  /** OPTIONS carries `Accept-Patch: application/partial-upload` (-10, -11). */
  readonly acceptPatch: boolean
  /** A malformed `Upload-Length` is ignored, not refused (-07 on: structured fields). */
  readonly malformedIgnored: boolean
  /** GET on an upload is an offset retrieval, as HEAD (the editor's copy after -11). */
  readonly getRetrieves: boolean
}

const FEATURES: Record<InteropVersion, VersionFeatures> = {
  5: {
    version: 5,
    uploadLimit: false,
    lifetimeKey: 'expires',
    problemTypes: false,
    lengthProblem: false,
    partialUploadType: false,
    uploadLengthField: false,
    refusesStateFields: true,
    appendCreated: true,
    completeEverywhere: false,
    acceptPatch: false,
    malformedIgnored: false,
    getRetrieves: false,
  },
  6: {
    version: 6,
    uploadLimit: true,
    lifetimeKey: 'expires',
    problemTypes: true,
    lengthProblem: false,
    partialUploadType: true,
    uploadLengthField: true,
    refusesStateFields: true,
    appendCreated: true,
    completeEverywhere: false,
    acceptPatch: false,
    malformedIgnored: false,
    getRetrieves: false,
  },
  8: {
    version: 8,
    uploadLimit: true,
    lifetimeKey: 'max-age',
    problemTypes: true,
    lengthProblem: true,
    partialUploadType: true,
    uploadLengthField: true,
    refusesStateFields: false,
    appendCreated: false,
    completeEverywhere: true,
    acceptPatch: true,
    malformedIgnored: true,
    getRetrieves: true,
  },
}

/** The draft's version a request asks for: `undefined` for tus 1.0, `null` for one not served. */
export function draftVersionOf(headers: IncomingHttpHeaders): VersionFeatures | null | undefined {
  const value = headers[INTEROP_HEADER]
  if (value === undefined) return undefined
  // An sf-integer: digits only, no sign, no spaces (RFC 8941 with the OWS trimmed).
  const text = String(value).trim()
  if (!/^\d{1,3}$/.test(text)) return null
  return FEATURES[Number(text) as InteropVersion] ?? null
}

/**
 * The `protocol` label of the request metrics: `tus`, `ietf-draft-5`, `ietf-draft-6`, `ietf-draft-8`, or
 * `ietf-draft-other` for a version not served (bounded: a label value per version served).
 */
export function protocolLabel(headers: IncomingHttpHeaders): string {
  const draft = draftVersionOf(headers)
  if (draft === undefined) return 'tus'
  return draft === null ? 'ietf-draft-other' : `ietf-draft-${draft.version}`
}

/** The refusal's reason for a version not served. */
export function unsupportedVersionReason(value: unknown): string {
  return `Upload-Draft-Interop-Version ${JSON.stringify(String(value))} is not served: this server speaks the resumable upload draft's interop versions ${SERVED_VERSIONS.slice(0, -1).join(', ')} and ${SERVED_VERSIONS.at(-1)}, and tus 1.0.0`
}
