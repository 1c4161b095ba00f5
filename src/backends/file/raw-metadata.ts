/**
 * `Upload-Metadata` as the client sent it. tus stores the metadata decoded and re-encodes it for
 * HEAD, which changes values that are not UTF-8 and reorders numeric keys. With the built-in
 * store, the header is kept as sent in the upload's record (one field), and HEAD answers it. When
 * the user's `onUploadCreate` hook returns metadata that only adds keys (an owner id, say), HEAD
 * answers the header as sent followed by the added keys; metadata that changes or drops a sent
 * key is answered as tus encodes it.
 */
import type { ServerOptions } from '@tus/server'
import { Metadata, type Upload } from '@tus/utils'

/** The record field that holds the header as sent. */
const RAW_METADATA = 'raw_metadata'

type OnUploadCreate = NonNullable<ServerOptions['onUploadCreate']>

/** The tus `onUploadCreate` hook: the user's `hook` first, then the header kept in the record. */
export function keepingRawMetadata(hook: OnUploadCreate | undefined): OnUploadCreate {
  return async (req, upload) => {
    // The metadata as tus parsed it from the header, before the hook can change it in place.
    const sent = { ...upload.metadata }
    const patch = hook ? await hook(req, upload) : {}
    const header = req.headers.get('upload-metadata')
    const raw =
      header === null
        ? undefined
        : patch?.metadata
          ? withAddedKeys(header, sent, patch.metadata)
          : header
    if (raw !== undefined) {
      ;(upload as Upload & Record<typeof RAW_METADATA, string>)[RAW_METADATA] = raw
    }
    return patch ?? {}
  }
}

type UploadMetadata = NonNullable<Upload['metadata']>

/**
 * The header as sent followed by the keys `replaced` adds to `sent`; `undefined` when `replaced`
 * changes or drops a sent key (then the header as sent would no longer be the upload's metadata).
 */
function withAddedKeys(
  header: string,
  sent: UploadMetadata,
  replaced: UploadMetadata,
): string | undefined {
  const added: UploadMetadata = {}
  for (const key of Object.keys(sent)) {
    if (!Object.hasOwn(replaced, key) || replaced[key] !== sent[key]) return undefined
  }
  for (const [key, value] of Object.entries(replaced)) {
    if (!Object.hasOwn(sent, key)) added[key] = value
  }
  if (Object.keys(added).length === 0) return header
  return header.trim() === '' ? Metadata.stringify(added) : `${header},${Metadata.stringify(added)}`
}

/** The header as sent, from an upload's stored record; `undefined` when none was kept. */
export function rawMetadataOf(record: object): string | undefined {
  const raw = (record as Partial<Record<typeof RAW_METADATA, unknown>>)[RAW_METADATA]
  return typeof raw === 'string' ? raw : undefined
}
