/**
 * Which protocol a request speaks, and what each served interop version of the IETF draft
 * "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload) defines. A request with
 * `Upload-Draft-Interop-Version` is the draft; one without it is tus 1.0.
 *
 * Served: interop 5 (draft -03) and 6 (drafts -04 and -05), the versions tus-js-client 4.x
 * (`ietf-draft-03`, `ietf-draft-05`) and Apple's URLSession (iOS 18.0, 18.1+) send, and the only
 * ones tested here. Any other value is refused (400, with the versions served): the draft's
 * versions differ in header names and status codes, and a server "MUST NOT send a 104 (Upload
 * Resumption Supported) informational response when the interop version indicated by the
 * `Upload-Draft-Interop-Version` header field in the request is missing or mismatching" (-03, -05).
 */
import type { IncomingHttpHeaders } from 'node:http'

export const INTEROP_HEADER = 'upload-draft-interop-version'

/** The interop versions served, oldest first. */
export const SERVED_VERSIONS = [5, 6] as const

export type InteropVersion = (typeof SERVED_VERSIONS)[number]

/** What a version has beyond interop 5's creation, offset retrieval, append and cancellation. */
export interface VersionFeatures {
  readonly version: InteropVersion
  /** `Upload-Limit` on creation, offset retrieval and OPTIONS answers (-04). */
  readonly uploadLimit: boolean
  /** RFC 9457 problem types `mismatching-upload-offset` and `completed-upload` (-04). */
  readonly problemTypes: boolean
  /** PATCH carries `Content-Type: application/partial-upload` (-04). */
  readonly partialUploadType: boolean
  /** `Upload-Length` is a field of the version: a HEAD must not carry it (-05). */
  readonly uploadLengthField: boolean
}

const FEATURES: Record<InteropVersion, VersionFeatures> = {
  5: {
    version: 5,
    uploadLimit: false,
    problemTypes: false,
    partialUploadType: false,
    uploadLengthField: false,
  },
  6: {
    version: 6,
    uploadLimit: true,
    problemTypes: true,
    partialUploadType: true,
    uploadLengthField: true,
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
 * The `protocol` label of the request metrics: `tus`, `ietf-draft-5`, `ietf-draft-6`, or
 * `ietf-draft-other` for a version not served (bounded: a label value per version served).
 */
export function protocolLabel(headers: IncomingHttpHeaders): string {
  const draft = draftVersionOf(headers)
  if (draft === undefined) return 'tus'
  return draft === null ? 'ietf-draft-other' : `ietf-draft-${draft.version}`
}

/** The refusal's reason for a version not served. */
export function unsupportedVersionReason(value: unknown): string {
  return `Upload-Draft-Interop-Version ${JSON.stringify(String(value))} is not served: this server speaks the resumable upload draft's interop versions ${SERVED_VERSIONS.join(' and ')}, and tus 1.0.0`
}
