/**
 * The IETF resumable uploads draft's interop version 8 (drafts -09 to -11, and the editor's copy
 * after -11, which still names 8) on the tus routes: raw node:http requests for each shape, the
 * 104 through the client's `'information'` event and curl's `-v`, and both protocols on one
 * upload. No client sends interop 8 yet (tus-js-client sends 5 and 6): these are its proof.
 * Interop 5 and 6 are test/draft.test.ts'.
 */
import { execFile } from 'node:child_process'
import fs from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import { promisify } from 'node:util'
import { Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import type { Upload } from '../src/index.js'
import { pattern } from './helpers/data.js'
import { draftClient, PROBLEM, type Sent, send, stalledCreation } from './helpers/draft.js'
import { exists } from './helpers/fs.js'
import { startServer } from './helpers/server.js'
import { createUpload, head, patch } from './helpers/tus-client.js'

const { draft: DRAFT, appendHeaders, create } = draftClient(8)
const HOUR = 3_600_000

const idOf = (url: string) => url.slice(url.lastIndexOf('/') + 1)

/** `max-size=<n>, max-age=<about an hour>`: the expiry counts down from the answer. */
const LIMIT_WITH_AGE = (maxSize: number) =>
  new RegExp(`^max-size=${maxSize}, max-age=(359\\d|3600)$`)

describe('interop version 8', () => {
  it('creates an upload without content: 201 with Location, Upload-Complete ?0 and Upload-Limit (max-size, max-age)', async () => {
    const server = await startServer({ tus: { maxSize: 1000 }, expireAfterMs: HOUR })
    const { res, url } = await create(server.endpoint, false)
    expect(res.status).toBe(201)
    expect(url).toMatch(/\/files\/[0-9a-f]{32}$/)
    expect(res.headers['upload-complete']).toBe('?0')
    expect(res.headers['upload-limit']).toMatch(LIMIT_WITH_AGE(1000))
    expect(res.headers['upload-draft-interop-version']).toBe('8')
    expect(res.headers['tus-resumable']).toBeUndefined()
  })

  it('sends 104 with Location, Upload-Draft-Interop-Version: 8 and Upload-Limit with max-age before storing the content', async () => {
    const server = await startServer({ tus: { maxSize: 50_000 }, expireAfterMs: HOUR })
    const data = pattern(10_000)
    const { res, url } = await create(server.endpoint, false, data)
    expect(res.status).toBe(201)
    expect(res.informational).toHaveLength(1)
    const [info] = res.informational
    expect(info?.status).toBe(104)
    expect(info?.headers.location).toBe(url)
    expect(info?.headers['upload-draft-interop-version']).toBe('8')
    expect(info?.headers['upload-limit']).toMatch(LIMIT_WITH_AGE(50_000))
    expect(res.headers['upload-complete']).toBe('?0')
    expect(await fs.readFile(path.join(server.directory, idOf(url)))).toEqual(data)
  })

  it('sends the 104 while the content still arrives, and an interrupted creation resumes at its URL', async () => {
    const server = await startServer({ tus: { lockDrainTimeout: 100 }, expireAfterMs: HOUR })
    const data = pattern(3000, 19)
    const headers = { ...DRAFT, 'Upload-Complete': '?1', 'Content-Length': data.length }
    const { creation, info, url, file } = await stalledCreation(server, headers, data, 1200)
    expect(info.statusCode).toBe(104)
    expect(info.headers['upload-limit']).toMatch(/^max-age=(359\d|3600)$/)
    const offset = await send(url, 'HEAD', DRAFT)
    expect(offset.headers['upload-offset']).toBe('1200')
    expect(offset.headers['upload-complete']).toBe('?0')
    creation.destroy()
    const rest = await send(url, 'PATCH', appendHeaders(1200, true), data.subarray(1200))
    expect(rest.status).toBe(204)
    expect(rest.headers['upload-complete']).toBe('?1')
    expect(await fs.readFile(file)).toEqual(data)
  })

  it('finishes an upload created complete in one request: 201 with Upload-Complete ?1, then HEAD says complete', async () => {
    const finished: Upload[] = []
    const server = await startServer({
      tus: {
        onUploadFinish: async (_req, upload) => {
          finished.push(upload)
          return {}
        },
      },
    })
    const { res, url } = await create(server.endpoint, true, pattern(4096, 3))
    expect(res.status).toBe(201)
    expect(res.headers['upload-complete']).toBe('?1')
    expect(finished.map((u) => u.size)).toEqual([4096])
    const offset = await send(url, 'HEAD', DRAFT)
    expect(offset.headers).toMatchObject({
      'upload-complete': '?1',
      'upload-offset': '4096',
      'upload-length': '4096',
    })
  })

  it('answers offset retrieval (HEAD) with 204, Upload-Offset, Upload-Complete, Upload-Length when known, Upload-Limit with max-age and Cache-Control: no-store', async () => {
    const server = await startServer({ tus: { maxSize: 900 }, expireAfterMs: HOUR })
    const known = await create(server.endpoint, false, pattern(10), { 'Upload-Length': 30 })
    const res = await send(known.url, 'HEAD', DRAFT)
    expect(res.status).toBe(204)
    expect(res.headers).toMatchObject({
      'upload-offset': '10',
      'upload-complete': '?0',
      'upload-length': '30',
      'cache-control': 'no-store',
      'upload-draft-interop-version': '8',
    })
    expect(res.headers['upload-limit']).toMatch(LIMIT_WITH_AGE(900))
    const unknown = await create(server.endpoint, false, pattern(7))
    const deferred = await send(unknown.url, 'HEAD', DRAFT)
    expect(deferred.headers['upload-offset']).toBe('7')
    expect(deferred.headers['upload-length']).toBeUndefined()
    // Interop 8 has no rule against these fields on a HEAD (-03 to -05 refused them).
    const fields = { ...DRAFT, 'Upload-Offset': 3, 'Upload-Complete': '?0', 'Upload-Length': 5 }
    expect((await send(known.url, 'HEAD', fields)).status).toBe(204)
  })

  it('answers offset retrieval by GET as by HEAD: 204 with the offset fields, no content', async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    const { url } = await create(server.endpoint, false, pattern(12), { 'Upload-Length': 40 })
    const res = await send(url, 'GET', DRAFT)
    expect(res.status).toBe(204)
    expect(res.body).toBe('')
    expect(res.headers).toMatchObject({
      'upload-offset': '12',
      'upload-complete': '?0',
      'upload-length': '40',
      'cache-control': 'no-store',
    })
    expect(res.headers['upload-limit']).toMatch(/^max-age=(359\d|3600)$/)
    // A tus 1.0 GET of the same upload is still the plugin's download answer.
    expect((await send(url, 'GET', {})).status).not.toBe(204)
  })

  it('appends with application/partial-upload: 204 with Upload-Complete ?0, then ?1 on the completing append', async () => {
    const server = await startServer()
    const data = pattern(300, 5)
    const { url } = await create(server.endpoint, false, data.subarray(0, 100))
    const middle = await send(url, 'PATCH', appendHeaders(100, false), data.subarray(100, 200))
    expect(middle.status).toBe(204)
    expect(middle.headers['upload-complete']).toBe('?0')
    expect(middle.headers['upload-offset']).toBe('200')
    const last = await send(url, 'PATCH', appendHeaders(200, true), data.subarray(200))
    expect(last.status).toBe(204)
    expect(last.headers['upload-complete']).toBe('?1')
    expect(await fs.readFile(path.join(server.directory, idOf(url)))).toEqual(data)
    expect((await send(url, 'HEAD', DRAFT)).headers['upload-length']).toBe('300')
  })

  it('refuses an append without Content-Type: application/partial-upload with 415 and Upload-Complete ?0', async () => {
    const server = await startServer()
    const { url } = await create(server.endpoint, false, pattern(10))
    const headers = { ...appendHeaders(10, false), 'Content-Type': 'application/octet-stream' }
    const res = await send(url, 'PATCH', headers, pattern(5))
    expect(res.status).toBe(415)
    expect(res.headers['upload-complete']).toBe('?0')
    expect((await send(url, 'HEAD', DRAFT)).headers['upload-offset']).toBe('10')
  })

  it('answers an append at the wrong offset 409 with Upload-Offset, Upload-Complete ?0 and mismatching-upload-offset', async () => {
    const server = await startServer()
    const { url } = await create(server.endpoint, false, pattern(50))
    const res = await send(url, 'PATCH', appendHeaders(20, false), pattern(5))
    expect(res.status).toBe(409)
    expect(res.headers['upload-offset']).toBe('50')
    expect(res.headers['upload-complete']).toBe('?0')
    expect(res.headers['content-type']).toBe('application/problem+json')
    expect(JSON.parse(res.body)).toMatchObject({
      type: `${PROBLEM}#mismatching-upload-offset`,
      'expected-offset': 50,
      'provided-offset': 20,
    })
  })

  it('refuses an append to a complete upload with 400: inconsistent-upload-length when it has content, unchanged', async () => {
    const server = await startServer()
    const { url } = await create(server.endpoint, true, pattern(20))
    const more = await send(url, 'PATCH', appendHeaders(20, true), pattern(3))
    expect(more.status).toBe(400)
    expect(more.headers['upload-complete']).toBe('?0')
    expect(JSON.parse(more.body).type).toBe(`${PROBLEM}#inconsistent-upload-length`)
    const empty = await send(url, 'PATCH', appendHeaders(20, true))
    expect(empty.status).toBe(400)
    expect(empty.body).toBe('upload is already completed\n')
    const offset = await send(url, 'HEAD', DRAFT)
    expect(offset.headers['upload-offset']).toBe('20')
    expect(offset.headers['upload-complete']).toBe('?1')
  })

  it('refuses lengths that disagree with 400 and the problem type inconsistent-upload-length', async () => {
    const server = await startServer()
    const problem = (res: Sent) => {
      expect(res.status).toBe(400)
      expect(res.headers['upload-complete']).toBe('?0')
      expect(res.headers['content-type']).toBe('application/problem+json')
      const body = JSON.parse(res.body)
      expect(body.type).toBe(`${PROBLEM}#inconsistent-upload-length`)
      return body.title as string
    }
    const headers = { ...DRAFT, 'Upload-Complete': '?1', 'Upload-Length': 9 }
    expect(problem(await send(server.endpoint, 'POST', headers, pattern(5)))).toBe(
      "Upload-Length 9 and the complete content's length 5 differ",
    )
    const { url } = await create(server.endpoint, false, pattern(4), { 'Upload-Length': 10 })
    expect(problem(await send(url, 'PATCH', appendHeaders(4, true), pattern(3)))).toBe(
      "the upload's length is 10; this append makes it 7",
    )
    expect(problem(await send(url, 'PATCH', appendHeaders(4, false), pattern(9)))).toBe(
      "the append ends at 13, past the upload's length 10",
    )
    const noComplete = await send(server.endpoint, 'POST', DRAFT, pattern(3))
    expect(noComplete.status).toBe(400)
    expect(noComplete.headers['upload-complete']).toBe('?0')
    expect((await send(url, 'HEAD', DRAFT)).headers['upload-offset']).toBe('4')
  })

  it('completes uploads of unknown length with complete chunked requests (creation 201, append 204)', async () => {
    const server = await startServer()
    const data = pattern(5000, 13)
    const chunked = { 'Upload-Complete': '?1', 'Transfer-Encoding': 'chunked' }
    const created = await send(server.endpoint, 'POST', { ...DRAFT, ...chunked }, data)
    expect(created.status).toBe(201)
    expect(created.headers['upload-complete']).toBe('?1')
    const url = new URL(String(created.headers.location), server.endpoint).href
    expect((await send(url, 'HEAD', DRAFT)).headers['upload-length']).toBe('5000')
    const { url: second } = await create(server.endpoint, false, data.subarray(0, 1000))
    const append = { ...appendHeaders(1000, true), 'Transfer-Encoding': 'chunked' }
    const appended = await send(second, 'PATCH', append, data.subarray(1000))
    expect(appended.status).toBe(204)
    expect(appended.headers['upload-complete']).toBe('?1')
    expect(await fs.readFile(path.join(server.directory, idOf(second)))).toEqual(data)
  })

  it('deactivates an upload whose chunked content runs past its length: 413, then 404', async () => {
    const finished: Upload[] = []
    const server = await startServer({
      tus: {
        onUploadFinish: async (_req, upload) => {
          finished.push(upload)
          return {}
        },
      },
    })
    const { url } = await create(server.endpoint, false, pattern(4), { 'Upload-Length': 10 })
    const chunked = { ...appendHeaders(4, false), 'Transfer-Encoding': 'chunked' }
    const past = await send(url, 'PATCH', chunked, pattern(20))
    expect(past.status).toBe(413)
    expect(past.headers['upload-complete']).toBe('?0')
    expect((await send(url, 'HEAD', DRAFT)).status).toBe(404)
    expect(await exists(path.join(server.directory, idOf(url)))).toBe(false)

    const headers = { ...DRAFT, 'Upload-Complete': '?0', 'Upload-Length': 10 }
    const creation = await send(
      server.endpoint,
      'POST',
      { ...headers, 'Transfer-Encoding': 'chunked' },
      pattern(25),
    )
    expect(creation.status).toBe(413)
    const location = String(creation.informational[0]?.headers.location)
    expect((await send(location, 'HEAD', DRAFT)).status).toBe(404)
    expect(finished).toEqual([])
  })

  it('ignores a malformed Upload-Length, as a structured field of another type', async () => {
    const server = await startServer()
    const headers = { 'Upload-Complete': '?0', 'Upload-Length': '-5' }
    const { res, url } = await create(server.endpoint, false, pattern(6), headers)
    expect(res.status).toBe(201)
    const offset = await send(url, 'HEAD', DRAFT)
    expect(offset.headers['upload-offset']).toBe('6')
    expect(offset.headers['upload-length']).toBeUndefined()
    const append = { ...appendHeaders(6, true), 'Upload-Length': 'many' }
    const last = await send(url, 'PATCH', append, pattern(4))
    expect(last.status).toBe(204)
    expect(last.headers['upload-complete']).toBe('?1')
    expect((await send(url, 'HEAD', DRAFT)).headers['upload-length']).toBe('10')
  })

  it('answers Expect: 100-continue with 100 Continue, then the 104', async () => {
    const server = await startServer()
    const data = pattern(2000)
    const statuses: number[] = []
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.request(server.endpoint, {
        method: 'POST',
        agent: false,
        headers: {
          ...DRAFT,
          'Upload-Complete': '?1',
          'Content-Length': data.length,
          Expect: '100-continue',
        },
      })
      req.on('information', (info) => statuses.push(info.statusCode))
      req.on('continue', () => req.end(data))
      req.on('response', resolve)
      req.on('error', reject)
    })
    res.resume()
    expect(res.statusCode).toBe(201)
    expect(statuses).toEqual([100, 104])
  })

  it('answers a creation over maxSize 413 with Upload-Limit and Upload-Complete ?0', async () => {
    const server = await startServer({ tus: { maxSize: 100 } })
    const res = await send(server.endpoint, 'POST', {
      ...DRAFT,
      'Upload-Complete': '?0',
      'Upload-Length': 500,
    })
    expect(res.status).toBe(413)
    expect(res.headers['upload-limit']).toBe('max-size=100')
    expect(res.headers['upload-complete']).toBe('?0')
  })

  it('cancels an upload: DELETE answers 204 (Upload-Offset in it is not refused), then 404', async () => {
    const server = await startServer()
    const { url } = await create(server.endpoint, false, pattern(10))
    expect((await send(url, 'DELETE', { ...DRAFT, 'Upload-Offset': 10 })).status).toBe(204)
    expect((await send(url, 'HEAD', DRAFT)).status).toBe(404)
    expect(await exists(path.join(server.directory, idOf(url)))).toBe(false)
  })

  it('answers OPTIONS with Upload-Limit (min-size=0 without limits) and Accept-Patch: application/partial-upload', async () => {
    const limited = await startServer({ tus: { maxSize: 5000 } })
    const res = await send(limited.endpoint, 'OPTIONS', DRAFT)
    expect(res.status).toBeLessThan(300)
    expect(res.headers['upload-limit']).toBe('max-size=5000')
    expect(res.headers['accept-patch']).toBe('application/partial-upload')
    const open = await startServer()
    expect((await send(open.endpoint, 'OPTIONS', DRAFT)).headers['upload-limit']).toBe('min-size=0')
  })

  it('serves one upload to both protocols: tus 1.0 resumes an interop 8 upload and interop 8 a tus one', async () => {
    const server = await startServer()
    const data = pattern(90, 9)
    const drafted = await create(server.endpoint, false, data.subarray(0, 30), {
      'Upload-Length': 90,
    })
    expect((await head(drafted.url)).headers['upload-offset']).toBe('30')
    expect((await patch(drafted.url, 30, data.subarray(30, 60))).status).toBe(204)
    const end = await send(drafted.url, 'PATCH', appendHeaders(60, true), data.subarray(60))
    expect(end.headers['upload-complete']).toBe('?1')
    expect(await fs.readFile(path.join(server.directory, idOf(drafted.url)))).toEqual(data)

    const tus = await createUpload(server.endpoint, 'deferred')
    expect((await patch(tus.url, 0, data.subarray(0, 40))).status).toBe(204)
    expect((await send(tus.url, 'HEAD', DRAFT)).headers['upload-offset']).toBe('40')
    const last = await send(tus.url, 'PATCH', appendHeaders(40, true), data.subarray(40))
    expect(last.status).toBe(204)
    expect(last.headers['upload-complete']).toBe('?1')
    expect((await head(tus.url)).headers['upload-length']).toBe('90')
    expect(await fs.readFile(path.join(server.directory, tus.id))).toEqual(data)
  })

  it('shows the 104 with the interop version and Upload-Limit to curl -v', async () => {
    const server = await startServer({ tus: { maxSize: 10_000 }, expireAfterMs: HOUR })
    const { stderr } = await promisify(execFile)('curl', [
      '-sv',
      '-X',
      'POST',
      '-H',
      'Upload-Draft-Interop-Version: 8',
      '-H',
      'Upload-Complete: ?1',
      '--data-binary',
      'hello',
      server.endpoint,
    ])
    const lines = stderr.split('\n').map((line) => line.trim())
    const info = lines.indexOf('< HTTP/1.1 104 Upload Resumption Supported')
    const final = lines.indexOf('< HTTP/1.1 201 Created')
    expect(info).toBeGreaterThan(-1)
    expect(final).toBeGreaterThan(info)
    const informational = lines.slice(info, final)
    expect(informational).toContain('< Upload-Draft-Interop-Version: 8')
    expect(
      informational.some((l) => /^< Upload-Limit: max-size=10000, max-age=(359\d|3600)$/.test(l)),
    ).toBe(true)
    expect(informational.some((l) => l.startsWith('< Location: http://127.0.0.1:'))).toBe(true)
    expect(lines).toContain('< upload-complete: ?1')
  })

  it('counts interop 8 answers under protocol="ietf-draft-8", a GET as a GET', async () => {
    const registry = new Registry()
    const server = await startServer({ metrics: { registry } })
    const { url } = await create(server.endpoint, false)
    await send(url, 'GET', DRAFT)
    const text = await registry.metrics()
    expect(text).toMatch(
      /tus_requests_total\{endpoint="\/files",method="POST",status="201",protocol="ietf-draft-8"\} 1/,
    )
    expect(text).toMatch(
      /tus_requests_total\{endpoint="\/files",method="GET",status="204",protocol="ietf-draft-8"\} 1/,
    )
  })
})
