/**
 * Raw requests of the IETF resumable uploads draft for the tests (test/draft.test.ts for interop
 * 5 and 6, test/draft-current.test.ts for 8): a request with the 1xx answers before its final
 * one, and a version's creation and append headers as its clients send them.
 */
import fs from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import { type Informational, type RawResponse, request } from './http.js'
import { waitFor } from './wait.js'

/** The IANA registry of the draft's problem types. */
export const PROBLEM = 'https://iana.org/assignments/http-problem-types'

export interface Sent extends RawResponse {
  /** The informational answers before the final one. */
  informational: Informational[]
}

/** One raw request, with the 1xx answers before the final one. */
export async function send(
  url: string,
  method: string,
  headers: Record<string, string | number>,
  body?: Buffer,
): Promise<Sent> {
  const informational: Sent['informational'] = []
  return { ...(await request(url, method, headers, body, { informational })), informational }
}

/** A client of interop `version`: its header, its append headers, its creation. */
export function draftClient(version: number) {
  const draft = { 'Upload-Draft-Interop-Version': version }
  /** An append's headers as the version has them (`application/partial-upload` from 6 on). */
  const appendHeaders = (offset: number, complete: boolean) => ({
    ...draft,
    'Upload-Offset': offset,
    'Upload-Complete': complete ? '?1' : '?0',
    ...(version >= 6 ? { 'Content-Type': 'application/partial-upload' } : {}),
  })
  /** A creation, complete or not, with or without content; its answer and the upload's URL. */
  const create = async (endpoint: string, complete: boolean, body?: Buffer, extra = {}) => {
    const headers = { ...draft, 'Upload-Complete': complete ? '?1' : '?0', ...extra }
    const res = await send(endpoint, 'POST', headers, body)
    return { res, url: new URL(String(res.headers.location), endpoint).href }
  }
  return { draft, appendHeaders, create }
}

/**
 * A complete creation whose content stops after `sent` bytes of `data`, the connection left
 * open: resolves once its 104 arrived and the upload's data file holds those bytes, with the 104,
 * the upload's URL and data file, and the request (destroy it to end the creation).
 */
export async function stalledCreation(
  server: { endpoint: string; directory: string },
  headers: Record<string, string | number>,
  data: Buffer,
  sent: number,
) {
  const creation = http.request(server.endpoint, { method: 'POST', agent: false, headers })
  creation.on('error', () => {})
  const informed = new Promise<http.InformationEvent>((resolve) => {
    creation.on('information', resolve)
  })
  creation.write(data.subarray(0, sent))
  const info = await informed
  const url = String(info.headers.location)
  const file = path.join(server.directory, url.slice(url.lastIndexOf('/') + 1))
  await waitFor(async () => (await fs.stat(file)).size === sent, 5000, `the first ${sent} bytes`)
  return { creation, info, url, file }
}
