/**
 * A complete request (`Upload-Complete: ?1`) whose content had no stated length, on an upload of
 * unknown length: -03 and -05 make the upload complete with it, and "the upload MUST NOT be
 * considered complete" if "the server did not append the entire request content" (-05). tus
 * 1.0 has no such request: the length is declared once the whole content has arrived, through
 * an empty tus PATCH with `Upload-Length` set to the offset reached. tus declares it under the
 * upload's lock, and that PATCH finishes the upload as any tus PATCH does: the hand-over's
 * record before, `onUploadFinish` with this request's Fastify request (`fastifyRequestOf`),
 * POST_FINISH.
 */
import type { Server } from '@tus/server'
import type { FastifyRequest } from 'fastify'
import { TUS_VERSION } from '../protocol.js'
import { openRequestContext } from '../request-context.js'

/**
 * Declares the length of upload `url` as `offset` once `request`'s content has all arrived;
 * resolves to tus' answer to the declaration, or `undefined` when the content was cut short
 * (the upload stays incomplete, of unknown length).
 */
export async function declareLengthAtEnd(
  tus: Server,
  request: FastifyRequest,
  url: string,
  offset: number,
): Promise<Response | undefined> {
  if (!request.raw.complete) return undefined
  const declaration = new Request(new URL(url, `http://${request.headers.host ?? 'localhost'}`), {
    method: 'PATCH',
    headers: {
      'Tus-Resumable': TUS_VERSION,
      'Upload-Offset': String(offset),
      'Upload-Length': String(offset),
      'Content-Type': 'application/offset+octet-stream',
      'Content-Length': '0',
    },
    body: new Uint8Array(0),
  })
  openRequestContext(declaration, request)
  return tus.handleWeb(declaration)
}

/**
 * Deactivates upload `url`, as a client's cancellation would: a tus DELETE under the upload's
 * lock, with `request`'s context for the hooks. Interop 8 (-11, "Upload Append"): "If the length
 * is known, the server MUST prevent the offset from exceeding the upload length by rejecting the
 * request once the offset exceeds the length, marking the upload resource invalid and rejecting
 * any further interaction with it."
 */
export async function deactivate(tus: Server, request: FastifyRequest, url: string): Promise<void> {
  const cancellation = new Request(new URL(url, `http://${request.headers.host ?? 'localhost'}`), {
    method: 'DELETE',
    headers: { 'Tus-Resumable': TUS_VERSION },
  })
  openRequestContext(cancellation, request)
  const answer = await tus.handleWeb(cancellation)
  answer.body?.cancel().catch(() => {})
}
