/**
 * The concatenation extension at the HTTP layer (tus 1.0, "Concatenation"). @tus/server has none
 * (it answers 501 to any `Upload-Concat`), so a creation that carries the header is read here
 * before the hand-off, and tus sees an ordinary creation: a partial upload as it is, a final
 * upload with the `Upload-Length` of its partials. The backend's `concatenation` does the rest
 * (for the built-in store, backends/file/concatenation.ts): it marks partials, assembles finals,
 * removes used partials.
 *
 * The spec's rules, where they are implemented:
 * - "The Client MUST NOT include the Upload-Length header in the final upload creation": 400.
 * - "If the Server does not support unfinished partial uploads, the Server MUST respond with the
 *   400 Bad Request status if one or more of the partial uploads are not finished": 400, and an
 *   unknown partial 404, an expired one 410, an upload that is not partial 400.
 * - "The Server MUST respond with the 403 Forbidden status to PATCH requests against a final
 *   upload URL and MUST NOT modify the final or its partial uploads": refused where tus hands the
 *   body to the backend, under the lock (write-path.ts `FINAL_PATCHED`), and, when tus refused
 *   the PATCH before that (an offset, a length), its refusal turned into that 403
 *   (`refusingPatchOfFinal`).
 * - "The Upload-Concat header MUST be set in HEAD responses for partial and final uploads": the
 *   answer fixes (answer.ts) from the store's record.
 * - The final's length is the sum of its partials', and it is finished once it exists: the
 *   user's `onUploadFinish` and tus' POST_FINISH event run for it as for any upload that
 *   finishes (`finishFinal`).
 */
import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import type { Server } from '@tus/server'
import { EVENTS, TUS_RESUMABLE, type Upload } from '@tus/utils'
import type { Concatenation, ConcatRequest, HeldFinalUpload } from '../backends/backend.js'
import type { TusServerOptions } from '../options/index.js'
import { asRefusal, Refusal, refusal } from '../refusal.js'
import { tusCorsHeaders, uploadUrlFor } from '../tus-internals.js'
import { refusalAnswer } from './refusals.js'
import { contextOf } from './request-context.js'
import { FINAL_PATCHED } from './write-path.js'

type FinalRequest = Extract<ConcatRequest, { kind: 'final' }>

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

/**
 * Reads the `Upload-Concat` of a POST (its `headers` as sent) before tus sees it. `undefined`:
 * none, nothing to do. Otherwise the headers of `web`, the request tus will handle, are
 * rewritten for tus (the header removed; a final's `Upload-Length` set to the sum of its
 * partials'), or the refusal it deserves is returned.
 */
export async function readConcat(
  headers: IncomingHttpHeaders,
  web: Request,
  concatenation: Concatenation,
  routing: ConcatRouting,
): Promise<ConcatRequest | Refusal | undefined> {
  const header = headers['upload-concat']
  if (header === undefined) return undefined
  const value = String(header).trim()
  let concat: ConcatRequest
  if (value === 'partial') {
    concat = { kind: 'partial' }
  } else if (value.startsWith('final;')) {
    const list = value.slice('final;'.length)
    const final = await readFinal(headers, concatenation, routing, list)
    if (final instanceof Refusal) return final
    // A retried creation is answered here, without tus: its headers are left as sent.
    if (final.concat.existing !== undefined) return final.concat
    concat = final.concat
    web.headers.set('upload-length', String(final.length))
  } else {
    return refusal(400, 'Upload-Concat must be "partial" or "final;<url> <url> ..."')
  }
  web.headers.delete('upload-concat')
  return concat
}

async function readFinal(
  headers: IncomingHttpHeaders,
  concatenation: Concatenation,
  routing: ConcatRouting,
  list: string,
): Promise<{ concat: FinalRequest; length: number } | Refusal> {
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
  const building = await concatenation.beingBuilt(partials)
  if (building !== undefined) return retried(building)
  // Checked here to answer before anything is created; the store checks again under the locks.
  let total = 0
  for (const id of partials) {
    try {
      total += await concatenation.checkPartial(id)
    } catch (error) {
      const refused = asRefusal(error)
      if (!refused) throw error
      // A partial gone (410): used by a final already made of these partials, a retry's answer.
      const existing = refused.status === 410 && (await concatenation.recordedFinalOf(partials))
      return existing ? retried(existing) : refused
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

/** Hands what `readConcat` found to the backend's `create`, with the upload tus creates. */
export function markingConcat(
  concatenation: Concatenation,
  next: OnUploadCreate | undefined,
): OnUploadCreate {
  return async (req, upload) => {
    const concat = contextOf(req)?.concat
    if (concat) concatenation.mark(upload, concat)
    return next ? next(req, upload) : {}
  }
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
  concatenation: Concatenation,
  request: Request,
  response: Response,
  res: ServerResponse,
): Promise<Response> {
  const upload = contextOf(request)?.created
  if (!upload || response.status !== 201) return response
  const { answer, taken } =
    upload.size === 0
      ? { answer: response, taken: false }
      : await runFinishHook(tus, request, upload, response)
  if (taken) await concatenation.claim(upload.id)
  else if (answer.status < 300) {
    const unclaim = () => concatenation.unclaim(upload.id).catch(() => {})
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
      const { status_code, body } = error as { status_code?: unknown; body?: string }
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
  concatenation: Concatenation,
  request: Request,
  res: ServerResponse,
  finalId: string,
): Promise<Response> {
  // The headers tus puts on its own answers, refusals included.
  const headers = tusCorsHeaders(tus, request.headers.get('origin') ?? undefined)
  headers.set('Tus-Resumable', TUS_RESUMABLE)
  let held: HeldFinalUpload | undefined
  try {
    held = await concatenation.hold(finalId)
  } catch (error) {
    const refused = asRefusal(error)
    if (!refused) throw error
    return refusalAnswer(refused, headers, { streamed: true })
  }
  if (!held) {
    const gone = refusal(410, 'the final upload assembled from these partial uploads is gone')
    return refusalAnswer(gone, headers, { streamed: true })
  }
  const release = held.release
  if (res.destroyed) await release(false)
  else res.once('close', () => release(res.writableFinished).catch(() => {}))
  headers.set('Location', uploadUrlFor(tus, request, finalId))
  headers.set('Content-Length', '0')
  return new Response('', { status: 201, headers })
}

/** What tus answers a PATCH it refuses before the write, after reading the upload. */
const REFUSED_BEFORE_WRITE = new Set([400, 409, 413])

/**
 * tus' answer to a PATCH, or the 403 of a PATCH of a final upload when tus refused it before the
 * write (a wrong offset, an `Upload-Length`, a body past the end): the upload is read again only
 * then, and the 403 is the one tus gives the refusal thrown at the write, on the same headers.
 */
export async function refusingPatchOfFinal(
  tus: Server,
  concatenation: Pick<Concatenation, 'kindOf'>,
  id: string | undefined,
  response: Response,
): Promise<Response> {
  if (!REFUSED_BEFORE_WRITE.has(response.status) || id === undefined) return response
  const upload = await tus.datastore.getUpload(id).catch(() => undefined)
  if (!upload || concatenation.kindOf(upload) !== 'final') return response
  response.body?.cancel().catch(() => {})
  const headers = new Headers(response.headers)
  headers.set('Content-Length', String(Buffer.byteLength(FINAL_PATCHED.body)))
  return new Response(FINAL_PATCHED.body, { status: FINAL_PATCHED.status_code, headers })
}
