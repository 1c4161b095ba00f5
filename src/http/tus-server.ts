/**
 * The @tus/server `Server` behind the routes, configured from the plugin's options: the user's
 * tus options, plus what the plugin's layer needs (the path under the register prefix, the
 * backend's datastore and the locker, ids without query strings, metadata kept as sent, the
 * headers browsers may use), and the backend's capabilities hooked into tus' handlers (the
 * creation guard, concatenation, the direct write path).
 */
import { Server } from '@tus/server'
import { EVENTS, type Locker, type Upload } from '@tus/utils'
import type { UploadBackend } from '../backends/backend.js'
import type { TusServerOptions } from '../options/index.js'
import { dropHandlerEvents } from '../tus-internals.js'
import { markingConcat } from './concatenation.js'
import { uploadIdFromPath } from './protocol.js'
import { contextOf } from './request-context.js'
import { installDirectWrite } from './write-path.js'

export interface TusServerSetup {
  /** The user's @tus/server options (`tus`). */
  tus: TusServerOptions
  /** The full route path, register prefixes included: tus builds `Location` from it. */
  path: string
  /** The store behind the routes and what it can do. */
  backend: Pick<
    UploadBackend,
    'datastore' | 'creation' | 'concatenation' | 'writer' | 'checksums' | 'released'
  >
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
  backend,
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
    datastore: backend.datastore,
    locker,
    getFileIdFromRequest: fileIdOf,
    onUploadCreate: onUploadCreate(backend, userOptions.onUploadCreate),
    onUploadFinish: onUploadFinish(backend, userOptions.onUploadFinish),
    // Browsers may send and read the headers of the checksum and expiration extensions.
    allowedHeaders: [...(userOptions.allowedHeaders ?? []), 'Upload-Checksum'],
    exposedHeaders: [
      ...(userOptions.exposedHeaders ?? []),
      'Upload-Expires',
      'Tus-Checksum-Algorithm',
    ],
  })
  // tus names the upload a POST created (the naming function) and tells it only in this event,
  // also when the answer then is a refusal without `Location`.
  tus.on(EVENTS.POST_CREATE, (req, upload) => {
    const context = contextOf(req)
    if (context) context.created = upload
  })
  // The direct write path: request bytes go straight from the socket into the backend; a PATCH
  // of a final upload (concatenation) is refused there, under the lock, before a byte is written.
  const { writer, concatenation } = backend
  if (writer) {
    installDirectWrite(tus, writer, {
      checksums: backend.checksums ?? { algorithms: [] },
      isFinal: concatenation && ((upload) => concatenation.kindOf(upload) === 'final'),
    })
  }
  // A partial upload finishing is a step of its final, not an upload the app receives.
  if (concatenation) {
    const isPartial = (upload: unknown) =>
      typeof upload === 'object' &&
      upload !== null &&
      concatenation.kindOf(upload as Upload) === 'partial'
    dropHandlerEvents(tus, (event, args) => event === EVENTS.POST_FINISH && isPartial(args[2]))
  }
  return { tus, fileIdOf }
}

type OnUploadFinish = NonNullable<TusServerOptions['onUploadFinish']>

/**
 * The user's `onUploadFinish`, for the uploads the app receives: with concatenation, not for a
 * partial upload of a parallel upload (its final gets the hook, http/concatenation.ts). Once it
 * returned, an upload whose data it moved out of the store is released (its record, its bytes
 * of the quota).
 */
function onUploadFinish(
  backend: TusServerSetup['backend'],
  user: OnUploadFinish | undefined,
): OnUploadFinish | undefined {
  const { concatenation } = backend
  if (!user) return user
  return async (req, upload) => {
    if (concatenation?.kindOf(upload) === 'partial') return {}
    const answer = await user(req, upload)
    // A failure leaves the bytes counted until the next sweep's recount; the answer stands.
    await backend.released?.(upload.id).catch(() => 0)
    return answer
  }
}

type OnUploadCreate = NonNullable<TusServerOptions['onUploadCreate']>

/**
 * The user's `onUploadCreate`, after what the backend checks of a creation. HEAD answers
 * Upload-Metadata as sent, unless the user's hook replaced the metadata; a declared length above
 * the free-space floor is refused (507) before anything is created; the backend learns which
 * creations are partial or final uploads (concatenation).
 */
function onUploadCreate(
  backend: TusServerSetup['backend'],
  user: OnUploadCreate | undefined,
): OnUploadCreate | undefined {
  const { creation, concatenation } = backend
  if (!creation && !concatenation) return user
  let hook = creation?.recording ? creation.recording(user) : user
  if (creation) hook = checkingSpace(creation.reserve, hook)
  if (concatenation) hook = markingConcat(concatenation, hook)
  return hook
}

/**
 * Runs after tus has checked the creation (its 400s, its 413 for `maxSize`) and before it creates
 * anything: a declared length that would cross the store's free-space floor answers 507.
 */
function checkingSpace(
  reserve: (bytes: number) => Promise<void>,
  next: OnUploadCreate | undefined,
): OnUploadCreate {
  return async (req, upload) => {
    if (upload.size !== undefined) await reserve(upload.size)
    return next ? next(req, upload) : {}
  }
}
