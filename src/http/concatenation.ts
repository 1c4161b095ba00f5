/**
 * The concatenation extension at the HTTP layer (tus 1.0, "Concatenation"). @tus/server has none
 * (it answers 501 to any `Upload-Concat`), so a creation that carries the header is read here
 * before the hand-off, and tus sees an ordinary creation: a partial upload as it is, a final
 * upload with the `Upload-Length` of its partials. The built-in store does the rest
 * (store/concatenation.ts): it marks partials, assembles finals, removes used partials.
 *
 * The spec's rules, where they are implemented:
 * - "The Client MUST NOT include the Upload-Length header in the final upload creation": 400.
 * - "If the Server does not support unfinished partial uploads, the Server MUST respond with the
 *   400 Bad Request status if one or more of the partial uploads are not finished": 400, and an
 *   unknown partial 404, an expired one 410, an upload that is not partial 400.
 * - "The Server MUST respond with the 403 Forbidden status to PATCH requests against a final
 *   upload URL and MUST NOT modify the final or its partial uploads": `refusingPatchOfFinal`.
 * - "The Upload-Concat header MUST be set in HEAD responses for partial and final uploads": the
 *   answer fixes (answer.ts) from the store's record.
 * - The final's length is the sum of its partials', and it is finished once it exists: the
 *   user's `onUploadFinish` and tus' POST_FINISH event run for it as for any upload that
 *   finishes (`finishFinal`).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Server } from '@tus/server'
import { EVENTS, TUS_RESUMABLE, type Upload } from '@tus/utils'
import { type Concat, markConcat, type TusError, tusError } from '../backends/file/concatenation.js'
import type { ExpiringFileStore } from '../backends/file/file-store.js'
import type { HeldFinal } from '../backends/file/finals.js'
import type { TusServerOptions } from '../options/index.js'
import { tusCorsHeaders, uploadUrlFor } from '../tus-internals.js'
import type { Refusal } from './protocol.js'

/** At most this many partial uploads in one final (tus-js-client makes `parallelUploads` of them). */
export const MAX_PARTIALS = 1000

export interface ConcatRouting {
  /** The full route path, register prefixes included (`/api/files`). */
  fullPath: string
  /** The route path without the register prefixes (`/files`): clients may send either. */
  path: string
  /** The id in an upload URL, as tus reads it (the plugin's `getFileIdFromRequest`). */
  fileIdOf: (request: Request) => string | undefined
  /**
   * The user's `tus.generateUrl` makes the upload URLs (a proxy's layout, another host): a URL of
   * any path is then read as tus reads it, and an id that is not a partial of this store is
   * refused by the lookup (404, 400) instead of by its path.
   */
  anyPath: boolean
}

const requests = new WeakMap<Request, Concat>()
const created = new WeakMap<Request, Upload>()

/** Links what `readConcat` found to the web request that tus will handle. */
export function markConcatRequest(request: Request, concat: Concat): void {
  requests.set(request, concat)
}

/**
 * Reads the `Upload-Concat` of a POST before tus sees it. `undefined`: none, nothing to do.
 * Otherwise the request's headers are rewritten for tus (the header removed; a final's
 * `Upload-Length` set to the sum of its partials'), or the refusal it deserves is returned.
 */
export async function readConcat(
  raw: IncomingMessage,
  store: ExpiringFileStore,
  routing: ConcatRouting,
): Promise<Concat | Refusal | undefined> {
  const header = raw.headers['upload-concat']
  if (header === undefined) return undefined
  const value = String(header).trim()
  let concat: Concat
  if (value === 'partial') {
    concat = { kind: 'partial' }
  } else if (value.startsWith('final;')) {
    const final = await readFinal(raw, store, routing, value.slice('final;'.length))
    if ('status' in final) return final
    // A retried creation is answered here, without tus: its headers are left as sent.
    if (final.concat.existing !== undefined) return final.concat
    concat = final.concat
    setHeader(raw, 'upload-length', String(final.length))
  } else {
    return refusal(400, 'Upload-Concat must be "partial" or "final;<url> <url> ..."')
  }
  removeHeader(raw, 'upload-concat')
  return concat
}

async function readFinal(
  raw: IncomingMessage,
  store: ExpiringFileStore,
  routing: ConcatRouting,
  list: string,
): Promise<{ concat: Extract<Concat, { kind: 'final' }>; length: number } | Refusal> {
  const headers = raw.headers
  if (headers['upload-length'] !== undefined) {
    return refusal(
      400,
      'a final upload takes its length from its partial uploads: send no Upload-Length',
    )
  }
  if (headers['upload-defer-length'] !== undefined) {
    return refusal(400, 'a final upload takes no Upload-Defer-Length')
  }
  const length = headers['content-length']
  if (headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')) {
    return refusal(400, 'a final upload takes no body: its bytes come from its partial uploads')
  }
  const urls = list.split(/[ \t]+/).filter((url) => url !== '')
  if (urls.length === 0) return refusal(400, 'Upload-Concat: final; lists no partial upload')
  if (urls.length > MAX_PARTIALS) {
    return refusal(
      400,
      `Upload-Concat lists ${urls.length} partial uploads; at most ${MAX_PARTIALS} are accepted`,
    )
  }
  const partials: string[] = []
  for (const url of urls) {
    const id = partialIdOf(url, routing)
    if (id === undefined) {
      return refusal(400, `${url} is not an upload URL of this endpoint (${routing.fullPath}/<id>)`)
    }
    partials.push(id)
  }
  const header = `final;${urls.join(' ')}`
  const retried = (existing: string) => ({
    concat: { kind: 'final' as const, partials, header, existing },
    length: 0,
  })
  // A retry of a creation whose answer was lost, while the final is assembled here: its answer.
  const building = await store.finals.beingBuilt(partials)
  if (building !== undefined) return retried(building)
  // Checked here to answer before anything is created; the store checks again under the locks.
  let total = 0
  for (const id of partials) {
    try {
      total += await store.checkPartial(id)
    } catch (error) {
      const { status_code, body } = error as Partial<TusError>
      if (typeof status_code !== 'number' || typeof body !== 'string') throw error
      // A partial gone (410): used by a final already made of these partials, a retry's answer.
      const existing = status_code === 410 && (await store.finals.recordedFinalOf(partials))
      return existing ? retried(existing) : { status: status_code, body }
    }
  }
  return { concat: { kind: 'final', partials, header }, length: total }
}

/**
 * The upload id in a partial upload's URL (absolute, or a path; with or without the register
 * prefix), read as tus reads the id of a request's URL; `undefined` for a URL of another path.
 */
function partialIdOf(url: string, routing: ConcatRouting): string | undefined {
  let parsed: URL
  try {
    parsed = new URL(url, 'http://localhost')
  } catch {
    return undefined
  }
  const pathname = parsed.pathname.replace(/\/$/, '')
  const slash = pathname.lastIndexOf('/')
  const collection = pathname.slice(0, slash)
  if (routing.anyPath) return routing.fileIdOf(new Request(new URL(pathname, 'http://localhost')))
  if (collection !== routing.fullPath && collection !== routing.path) return undefined
  const own = new URL(`${routing.fullPath}${pathname.slice(slash)}`, 'http://localhost')
  return routing.fileIdOf(new Request(own))
}

type OnUploadCreate = NonNullable<TusServerOptions['onUploadCreate']>

/** Hands what `readConcat` found to the store's `create`, through the upload tus creates. */
export function markingConcat(next: OnUploadCreate): OnUploadCreate {
  return async (req, upload) => {
    const concat = requests.get(req)
    if (concat) {
      markConcat(upload, concat)
      if (concat.kind === 'final') created.set(req, upload)
    }
    return next(req, upload)
  }
}

/**
 * The store as the PATCH handler sees it: the same store, except that its `getUpload` (which the
 * handler calls under the upload's lock, before it looks at the offset, which would answer 409)
 * refuses a final upload with 403. The check reads the record that `getUpload` reads anyway:
 * the refusal costs no read of its own, and it is made under the lock.
 */
export function refusingPatchOfFinal(store: ExpiringFileStore): ExpiringFileStore {
  const getUpload = async (id: string): Promise<Upload> => {
    const upload = await store.getUpload(id)
    if (store.concatKindOf(upload) === 'final') {
      throw tusError(403, 'a final upload cannot be patched: its bytes come from its partials')
    }
    return upload
  }
  // Methods run on the store itself (its private fields are not the view's), bound once each.
  const bound = new WeakMap<object, unknown>()
  return new Proxy(store, {
    get(target, name) {
      if (name === 'getUpload') return getUpload
      const value: unknown = Reflect.get(target, name, target)
      if (typeof value !== 'function') return value
      let method = bound.get(value)
      if (method === undefined) {
        method = value.bind(target)
        bound.set(value, method)
      }
      return method
    },
  })
}

/**
 * After tus created a final upload: it is finished, so the user's `onUploadFinish` runs and tus'
 * POST_FINISH event is emitted, as after the PATCH that finishes an upload (tus does both itself
 * only for an empty upload). The hook may change the answer as it may on a PATCH. A hook that
 * returned has taken the final; otherwise the final is known once its answer arrives: the store
 * claimed it if its client was still there once it was assembled (finals.ts), and if the answer
 * does not arrive whole after all, the final is marked unknown again.
 */
export async function finishFinal(
  tus: Server,
  store: ExpiringFileStore,
  request: Request,
  response: Response,
  res: ServerResponse,
): Promise<Response> {
  const upload = created.get(request)
  if (!upload || response.status !== 201) return response
  const { answer, taken } =
    upload.size === 0
      ? { answer: response, taken: false }
      : await runFinishHook(tus, request, upload, response)
  if (taken) await store.finals.claim(upload.id)
  else if (answer.status < 300) {
    const unclaim = () => store.finals.unclaim(upload.id).catch(() => {})
    if (res.destroyed) await unclaim()
    else res.once('close', () => res.writableFinished || unclaim())
  }
  return answer
}

/** The user's `onUploadFinish` for a final, and tus' POST_FINISH; `taken` when the hook returned. */
async function runFinishHook(
  tus: Server,
  request: Request,
  upload: Upload,
  response: Response,
): Promise<{ answer: Response; taken: boolean }> {
  upload.offset = upload.size ?? 0
  let answer = response
  let taken = false
  const onUploadFinish = tus.options.onUploadFinish
  if (onUploadFinish) {
    try {
      const patch = await onUploadFinish(request, upload)
      taken = true
      if (patch.status_code || patch.body || patch.headers) {
        const headers = new Headers(response.headers)
        for (const [name, value] of Object.entries(patch.headers ?? {})) {
          headers.set(name, String(value))
        }
        answer = new Response(patch.body ?? null, {
          status: patch.status_code ?? response.status,
          headers,
        })
      }
    } catch (error) {
      const { status_code, body } = error as Partial<TusError>
      if (typeof status_code !== 'number') throw error
      answer = new Response(body ?? null, { status: status_code, headers: response.headers })
    }
  }
  // tus types `emit` as if it took a listener; the handlers call it with the event's arguments.
  ;(tus.emit as (event: string, ...args: unknown[]) => boolean)(
    EVENTS.POST_FINISH,
    request,
    answer,
    upload,
  )
  return { answer, taken }
}

/**
 * The answer to a retried creation of a final upload that exists (or was being assembled): 201
 * with its `Location`, as tus would answer the creation. The final is held (locked, claimed)
 * until the answer has gone, and marked unknown again if it did not arrive whole (finals.ts).
 */
export async function answerExistingFinal(
  tus: Server,
  store: ExpiringFileStore,
  request: Request,
  res: ServerResponse,
  finalId: string,
): Promise<Response> {
  // The headers tus puts on its own answers, refusals included.
  const headers = tusCorsHeaders(tus, request.headers.get('origin') ?? undefined)
  headers.set('Tus-Resumable', TUS_RESUMABLE)
  let held: HeldFinal | undefined
  try {
    held = await store.finals.hold(finalId)
  } catch (error) {
    const { status_code, body } = error as Partial<TusError>
    if (typeof status_code !== 'number') throw error
    return new Response(body ?? null, { status: status_code, headers })
  }
  if (!held) {
    const gone = 'the final upload assembled from these partial uploads is gone\n'
    return new Response(gone, { status: 410, headers })
  }
  const release = held.release
  if (res.destroyed) await release(false)
  else res.once('close', () => release(res.writableFinished).catch(() => {}))
  headers.set('Location', uploadUrlFor(tus, request, finalId))
  headers.set('Content-Length', '0')
  return new Response('', { status: 201, headers })
}

function refusal(status: number, reason: string): Refusal {
  return { status, body: `${reason}\n` }
}

/** Sets a request header for tus, which reads the raw list too (srvx builds its Headers from it). */
function setHeader(raw: IncomingMessage, name: string, value: string): void {
  removeHeader(raw, name)
  raw.headers[name] = value
  raw.rawHeaders.push(name, value)
}

function removeHeader(raw: IncomingMessage, name: string): void {
  delete raw.headers[name]
  const list = raw.rawHeaders
  for (let i = list.length - 2; i >= 0; i -= 2) {
    if (list[i]?.toLowerCase() === name) list.splice(i, 2)
  }
}
