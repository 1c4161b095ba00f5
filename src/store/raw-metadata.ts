/**
 * `Upload-Metadata` as the client sent it. tus stores the metadata decoded and re-encodes it for
 * HEAD, which changes values that are not UTF-8 and reorders numeric keys. With the built-in
 * store, the header is kept as sent in the upload's record (one field), and HEAD answers it,
 * unless the user's `onUploadCreate` hook replaced the metadata.
 */
import type { ServerOptions } from '@tus/server'
import type { Upload } from '@tus/utils'

/** The record field that holds the header as sent. */
const RAW_METADATA = 'raw_metadata'

type OnUploadCreate = NonNullable<ServerOptions['onUploadCreate']>

/** The tus `onUploadCreate` hook: the user's `hook` first, then the header kept in the record. */
export function keepingRawMetadata(hook: OnUploadCreate | undefined): OnUploadCreate {
  return async (req, upload) => {
    const patch = hook ? await hook(req, upload) : {}
    const header = req.headers.get('upload-metadata')
    if (!patch?.metadata && header !== null) {
      ;(upload as Upload & Record<typeof RAW_METADATA, string>)[RAW_METADATA] = header
    }
    return patch ?? {}
  }
}

/** The header as sent, from an upload's stored record; `undefined` when none was kept. */
export function rawMetadataOf(record: object): string | undefined {
  const raw = (record as Partial<Record<typeof RAW_METADATA, unknown>>)[RAW_METADATA]
  return typeof raw === 'string' ? raw : undefined
}

/** A HEAD answer carries the header as sent, when one was kept. */
export function answerRawMetadata(response: Response, raw: string | undefined): void {
  if (raw !== undefined) response.headers.set('Upload-Metadata', raw)
}
