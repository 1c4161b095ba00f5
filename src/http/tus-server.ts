/**
 * The @tus/server `Server` behind the routes, configured from the plugin's options: the user's
 * tus options, plus what the plugin's layer needs (the path under the register prefix, the store
 * and locker, ids without query strings, metadata kept as sent, the headers browsers may use, the
 * direct write path for the built-in store).
 */
import { Server } from '@tus/server'
import type { DataStore, Locker } from '@tus/utils'
import type { ExpiringFileStore } from '../backends/file/file-store.js'
import { keepingRawMetadata } from '../backends/file/raw-metadata.js'
import type { TusServerOptions } from '../options/index.js'
import { setHandlerStore } from '../tus-internals.js'
import { markingConcat, refusingPatchOfFinal } from './concatenation.js'
import { uploadIdFromPath } from './protocol.js'
import { installDirectWrite } from './write-path.js'

export interface TusServerSetup {
  /** The user's @tus/server options (`tus`). */
  tus: TusServerOptions
  /** The full route path, register prefixes included: tus builds `Location` from it. */
  path: string
  datastore: DataStore
  /** The built-in store, when it is the datastore. */
  store: ExpiringFileStore | undefined
  locker: Locker
}

export interface CreatedTusServer {
  tus: Server
  /** The id in an upload URL, exactly as tus reads it. */
  fileIdOf: (request: Request) => string | undefined
}

export function createTusServer({
  tus: userOptions,
  path,
  datastore,
  store,
  locker,
}: TusServerSetup): CreatedTusServer {
  const userIdOf = userOptions.getFileIdFromRequest
  // The id of an upload URL ignores its query string (`/files/<id>?token=...`).
  const fileIdOf = (req: Request) => {
    const id = uploadIdFromPath(new URL(req.url).pathname, path)
    return userIdOf ? userIdOf(req, id) : id
  }
  const tus = new Server({
    ...userOptions,
    path,
    datastore,
    locker,
    getFileIdFromRequest: fileIdOf,
    // HEAD answers Upload-Metadata as sent, unless the user's hook replaced the metadata; a
    // declared length above the free-space floor is refused (507) before anything is created;
    // the store learns which creations are partial or final uploads (concatenation).
    onUploadCreate: store
      ? markingConcat(checkingSpace(store, keepingRawMetadata(userOptions.onUploadCreate)))
      : userOptions.onUploadCreate,
    // Browsers may send and read the headers of the checksum and expiration extensions.
    allowedHeaders: [...(userOptions.allowedHeaders ?? []), 'Upload-Checksum'],
    exposedHeaders: [
      ...(userOptions.exposedHeaders ?? []),
      'Upload-Expires',
      'Tus-Checksum-Algorithm',
    ],
  })
  if (store) {
    // A PATCH on a final upload of the concatenation extension answers 403.
    setHandlerStore(tus, 'PATCH', refusingPatchOfFinal(store))
    // The direct write path: request bytes go straight into the built-in store's data file.
    installDirectWrite(tus)
  }
  return { tus, fileIdOf }
}

type OnUploadCreate = NonNullable<TusServerOptions['onUploadCreate']>

/**
 * Runs after tus has checked the creation (its 400s, its 413 for `maxSize`) and before it creates
 * anything: a declared length that would cross the store's free-space floor answers 507.
 */
function checkingSpace(store: ExpiringFileStore, next: OnUploadCreate | undefined): OnUploadCreate {
  return async (req, upload) => {
    if (upload.size !== undefined) await store.reserve(upload.size)
    return next ? next(req, upload) : {}
  }
}
