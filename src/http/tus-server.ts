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
import { describeValue, type HandOver, isHookAnswer } from '../finish/hand-over.js'
import type { TusServerOptions } from '../options/index.js'
import { dropHandlerEvents, wrapWriteToStore } from '../tus-internals.js'
import { markingConcat } from './concatenation.js'
import { uploadIdFromPath } from './protocol.js'
import { contextOf } from './request-context.js'
import { installDirectWrite, NodeBody } from './write-path.js'

/** The IETF draft's request and answer fields, for browsers on another origin. */
const DRAFT_REQUEST = ['Upload-Draft-Interop-Version', 'Upload-Complete', 'Content-Disposition']
const DRAFT_ANSWER = ['Upload-Draft-Interop-Version', 'Upload-Complete', 'Upload-Limit']

export interface TusServerSetup {
  /** The user's @tus/server options (`tus`). */
  tus: TusServerOptions
  /** The full route path, register prefixes included: tus builds `Location` from it. */
  path: string
  /** The store behind the routes and what it can do. */
  backend: Pick<UploadBackend, 'datastore' | 'creation' | 'concatenation' | 'writer' | 'checksums'>
  locker: Locker
  /** The durable hand-over of finished uploads, when the user has an `onUploadFinish`. */
  handOver?: HandOver | undefined
  log: { error(obj: object, msg: string): void }
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
  handOver,
  log,
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
    onUploadCreate: onUploadCreate(
      backend,
      checkedCreateHook(userOptions.onUploadCreate, log),
      handOver,
    ),
    onUploadFinish: onUploadFinish(backend, userOptions.onUploadFinish, handOver),
    // Browsers may send and read the headers of the checksum and expiration extensions, and
    // the IETF draft's (draft/exchange.ts).
    allowedHeaders: [...(userOptions.allowedHeaders ?? []), 'Upload-Checksum', ...DRAFT_REQUEST],
    exposedHeaders: [
      ...(userOptions.exposedHeaders ?? []),
      'Upload-Expires',
      'Tus-Checksum-Algorithm',
      ...DRAFT_ANSWER,
    ],
  })
  // tus names the upload a POST created (the naming function) and tells it only in this event,
  // also when the answer then is a refusal without `Location`.
  tus.on(EVENTS.POST_CREATE, (req, upload) => {
    const context = contextOf(req)
    if (context) context.created = upload
    // A creation that finished its upload (empty, or a final): its hook comes next.
    handOver?.settle(upload.id, true, false)
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
  if (handOver) {
    const isPartial = (upload: Upload) => concatenation?.kindOf(upload) === 'partial'
    expectingFinish(tus, handOver, isPartial)
  }
  return { tus, fileIdOf }
}

type OnUploadFinish = NonNullable<TusServerOptions['onUploadFinish']>

/**
 * The user's `onUploadFinish`, for the uploads the app receives: with concatenation, not for a
 * partial upload of a parallel upload (its final gets the hook, http/concatenation.ts).
 */
function onUploadFinish(
  backend: TusServerSetup['backend'],
  user: OnUploadFinish | undefined,
  handOver: HandOver | undefined,
): OnUploadFinish | undefined {
  if (!user) return undefined
  const { concatenation } = backend
  const run: OnUploadFinish = handOver ? (req, upload) => handOver.deliver(req, upload) : user
  if (!concatenation) return run
  return async (req, upload) => (concatenation.kindOf(upload) === 'partial' ? {} : run(req, upload))
}

/**
 * Before a write that may store an upload's last byte, the hand-over remembers the upload; after
 * it, forgets it again if it did not finish. A write that failed leaves the record to the next
 * pass, which reads whether the upload finished after all.
 */
function expectingFinish(
  tus: Server,
  handOver: HandOver,
  isPartial: (upload: Upload) => boolean,
): void {
  wrapWriteToStore(tus, (_handler, write) => async (body, upload, maxFileSize, context) => {
    if (!mayFinish(body, upload) || isPartial(upload)) {
      return write(body, upload, maxFileSize, context)
    }
    const made = await handOver.expect(upload.id, { untilSettled: true })
    let offset: number | undefined
    try {
      offset = await write(body, upload, maxFileSize, context)
      return offset
    } finally {
      const finished = offset === upload.size
      await handOver.settle(upload.id, finished, made && offset !== undefined)
    }
  })
}

/** Whether a write may finish `upload`: its length is known and the body may reach it. */
function mayFinish(body: unknown, upload: Upload): boolean {
  if (upload.size === undefined) return false
  const declared = body instanceof NodeBody ? Number(body.source.headers['content-length']) : NaN
  return !Number.isSafeInteger(declared) || upload.offset + declared >= upload.size
}

/** The user's `onUploadCreate`, with a clear error for an answer of the wrong shape. */
function checkedCreateHook(
  user: OnUploadCreate | undefined,
  log: TusServerSetup['log'],
): OnUploadCreate | undefined {
  if (!user) return undefined
  return async (req, upload) => {
    const answer: unknown = await user(req, upload)
    if (isHookAnswer(answer)) return answer as Awaited<ReturnType<OnUploadCreate>>
    log.error(
      { hook: 'onUploadCreate', uploadId: upload.id, returned: describeValue(answer) },
      `fastify-tus: onUploadCreate returned ${describeValue(answer)} for upload ${upload.id}: it must return an object (\`{}\` to keep the upload as it is); taken as \`{}\``,
    )
    return {}
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
  handOver: HandOver | undefined,
): OnUploadCreate | undefined {
  const { creation, concatenation } = backend
  let hook = creation?.recording ? creation.recording(user) : user
  if (creation) hook = checkingSpace(creation.reserve, hook)
  if (concatenation) hook = markingConcat(concatenation, hook)
  if (handOver) hook = expectingCreation(handOver, hook)
  return hook
}

/**
 * An empty upload, or a final one (assembled as it is created), is finished by its creation:
 * remembered once every check has passed, before the store creates it.
 */
function expectingCreation(handOver: HandOver, next: OnUploadCreate | undefined): OnUploadCreate {
  return async (req, upload) => {
    const answer = next ? await next(req, upload) : {}
    if (upload.size === 0 || contextOf(req)?.concat?.kind === 'final') {
      await handOver.expect(upload.id)
    }
    return answer
  }
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
