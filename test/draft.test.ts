/**
 * The IETF resumable uploads draft (interop versions 5 and 6) on the tus routes: raw node:http
 * requests, each shape per version, the 104 seen through the client's `'information'` event and
 * curl's `-v`, both protocols on one upload, and the plugin's guarantees for draft uploads.
 */
import { execFile } from 'node:child_process'
import fs from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { promisify } from 'node:util'
import { Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { EVENTS, fastifyRequestOf, type Upload } from '../src/index.js'
import { cli } from './helpers/cli.js'
import { pattern } from './helpers/data.js'
import { draftClient, PROBLEM, type Sent, send, stalledCreation } from './helpers/draft.js'
import { exists } from './helpers/fs.js'
import { startServer } from './helpers/server.js'
import { createUpload, head, patch, TUS } from './helpers/tus-client.js'
import { sleep, waitFor } from './helpers/wait.js'

describe.each([5, 6] as const)('interop version %i', (version) => {
  const { draft, appendHeaders, create } = draftClient(version)

  it('creates an upload without content: 201 with Location, Upload-Offset 0, Upload-Complete ?0', async () => {
    const server = await startServer({ tus: { maxSize: 1000 } })
    const { res, url } = await create(server.endpoint, false)
    expect(res.status).toBe(201)
    expect(url).toMatch(/\/files\/[0-9a-f]{32}$/)
    expect(res.headers['upload-offset']).toBe('0')
    expect(res.headers['upload-complete']).toBe('?0')
    expect(res.headers['upload-draft-interop-version']).toBe(String(version))
    expect(res.headers['tus-resumable']).toBeUndefined()
    // Upload-Limit is interop 6's (-04).
    if (version === 6) expect(res.headers['upload-limit']).toMatch(/^max-size=1000, expires=\d+$/)
    else expect(res.headers['upload-limit']).toBeUndefined()
  })

  it('sends 104 Upload Resumption Supported with Location and the interop version before storing the content', async () => {
    const server = await startServer()
    const data = pattern(10_000)
    const { res, url } = await create(server.endpoint, false, data)
    expect(res.status).toBe(201)
    expect(res.informational).toHaveLength(1)
    const [info] = res.informational
    expect(info?.status).toBe(104)
    expect(info?.headers.location).toBe(url)
    expect(info?.headers['upload-draft-interop-version']).toBe(String(version))
    expect(res.headers['upload-offset']).toBe(String(data.length))
    expect(res.headers['upload-complete']).toBe('?0')
    const id = url.slice(url.lastIndexOf('/') + 1)
    expect(await fs.readFile(path.join(server.directory, id))).toEqual(data)
  })

  it('finishes an upload created complete in one request (Upload-Complete: ?1 with Content-Length)', async () => {
    const finished: Upload[] = []
    const server = await startServer({
      tus: {
        onUploadFinish: async (_req, upload) => {
          finished.push(upload)
          return {}
        },
      },
    })
    const data = pattern(4096, 3)
    const { res, url } = await create(server.endpoint, true, data)
    expect(res.status).toBe(201)
    expect(res.headers['upload-complete']).toBe('?1')
    expect(res.headers['upload-offset']).toBe('4096')
    expect(finished.map((u) => u.size)).toEqual([4096])
    const offset = await send(url, 'HEAD', draft)
    expect(offset.headers['upload-complete']).toBe('?1')
    expect(offset.headers['upload-length']).toBe('4096')
  })

  it('resumes an interrupted creation from the content it stored, at the URL of its 104', async () => {
    const server = await startServer({ tus: { lockDrainTimeout: 100 } })
    const data = pattern(3000, 19)
    const headers = {
      ...draft,
      'Upload-Complete': '?1',
      'Content-Length': data.length,
      'Content-Type': 'application/octet-stream',
    }
    const { creation, url, file } = await stalledCreation(server, headers, data, 1200)
    // The connection is given up for lost; the client asks where the upload stands.
    const offset = await send(url, 'HEAD', draft)
    expect(offset.headers['upload-offset']).toBe('1200')
    expect(offset.headers['upload-length']).toBe('3000')
    creation.destroy()
    const rest = await send(url, 'PATCH', appendHeaders(1200, true), data.subarray(1200))
    expect(rest.status).toBe(201)
    expect(rest.headers['upload-complete']).toBe('?1')
    expect(await fs.readFile(file)).toEqual(data)
  })

  it('answers offset retrieval with 204, Upload-Offset, Upload-Complete, Upload-Length when known and Cache-Control: no-store', async () => {
    const server = await startServer()
    const known = await create(server.endpoint, false, pattern(10), { 'Upload-Length': 30 })
    const res = await send(known.url, 'HEAD', draft)
    expect(res.status).toBe(204)
    expect(res.headers).toMatchObject({
      'upload-offset': '10',
      'upload-complete': '?0',
      'upload-length': '30',
      'cache-control': 'no-store',
      'upload-draft-interop-version': String(version),
    })
    expect(res.headers['upload-defer-length']).toBeUndefined()
    const unknown = await create(server.endpoint, false, pattern(7))
    const deferred = await send(unknown.url, 'HEAD', draft)
    expect(deferred.headers['upload-offset']).toBe('7')
    expect(deferred.headers['upload-length']).toBeUndefined()
    expect(deferred.headers['upload-complete']).toBe('?0')
  })

  it('appends, and a complete append declares the length of an upload of unknown length', async () => {
    const server = await startServer()
    const data = pattern(300, 5)
    const { url } = await create(server.endpoint, false, data.subarray(0, 100))
    const middle = await send(url, 'PATCH', appendHeaders(100, false), data.subarray(100, 200))
    expect(middle.status).toBe(201)
    expect(middle.headers['upload-offset']).toBe('200')
    expect(middle.headers['upload-complete']).toBe('?0')
    const last = await send(url, 'PATCH', appendHeaders(200, true), data.subarray(200))
    expect(last.status).toBe(201)
    expect(last.headers['upload-complete']).toBe('?1')
    expect(last.headers['upload-offset']).toBe('300')
    const id = url.slice(url.lastIndexOf('/') + 1)
    expect(await fs.readFile(path.join(server.directory, id))).toEqual(data)
    expect((await send(url, 'HEAD', draft)).headers['upload-length']).toBe('300')
  })

  it('answers an append at the wrong offset 409 with the upload offset (problem details on interop 6)', async () => {
    const server = await startServer()
    const { url } = await create(server.endpoint, false, pattern(50))
    const res = await send(url, 'PATCH', appendHeaders(20, false), pattern(5))
    expect(res.status).toBe(409)
    expect(res.headers['upload-offset']).toBe('50')
    if (version === 6) {
      expect(res.headers['content-type']).toBe('application/problem+json')
      expect(JSON.parse(res.body)).toMatchObject({
        type: `${PROBLEM}#mismatching-upload-offset`,
        'expected-offset': 50,
        'provided-offset': 20,
      })
    } else {
      expect(res.headers['content-type']).toBe('text/plain; charset=utf-8')
      expect(res.body).toMatch(/the upload is at 50, the request sent 20/)
    }
    expect((await send(url, 'HEAD', draft)).headers['upload-offset']).toBe('50')
  })

  it('refuses an append to a complete upload with 400 (completed-upload on interop 6), unchanged', async () => {
    const server = await startServer()
    const { url } = await create(server.endpoint, true, pattern(20))
    const res = await send(url, 'PATCH', appendHeaders(20, true), pattern(3))
    expect(res.status).toBe(400)
    if (version === 6) {
      expect(JSON.parse(res.body).type).toBe(`${PROBLEM}#completed-upload`)
    } else {
      expect(res.body).toBe('upload is already completed\n')
    }
    expect((await send(url, 'HEAD', draft)).headers['upload-offset']).toBe('20')
  })

  it('enforces the length rules with 400', async () => {
    const server = await startServer()
    const mismatch = await send(
      server.endpoint,
      'POST',
      { ...draft, 'Upload-Complete': '?1', 'Upload-Length': 9 },
      pattern(5),
    )
    expect(mismatch.status).toBe(400)
    expect(mismatch.body).toBe("Upload-Length 9 and the complete content's length 5 differ\n")
    const { url } = await create(server.endpoint, false, pattern(4), { 'Upload-Length': 10 })
    const short = await send(url, 'PATCH', appendHeaders(4, true), pattern(3))
    expect(short.status).toBe(400)
    expect(short.body).toBe("the upload's length is 10; this append makes it 7\n")
    const past = await send(url, 'PATCH', appendHeaders(4, false), pattern(9))
    expect(past.status).toBe(400)
    expect(past.body).toBe("the append ends at 13, past the upload's length 10\n")
    const noComplete = await send(server.endpoint, 'POST', draft, pattern(3))
    expect(noComplete.status).toBe(400)
    expect(noComplete.body).toMatch(/needs Upload-Complete/)
    const bad = await send(server.endpoint, 'POST', { ...draft, 'Upload-Complete': 'yes' })
    expect(bad.status).toBe(400)
    expect((await send(url, 'HEAD', draft)).headers['upload-offset']).toBe('4')
  })

  it('completes an upload of unknown length with a complete request whose content has no stated length (chunked)', async () => {
    const finished: Array<number | undefined> = []
    const server = await startServer({
      tus: {
        onUploadFinish: async (req, upload) => {
          expect(fastifyRequestOf(req)?.headers['upload-complete']).toBe('?1')
          finished.push(upload.size)
          return {}
        },
      },
    })
    const data = pattern(5000, 13)
    const headers = { ...draft, 'Upload-Complete': '?1', 'Transfer-Encoding': 'chunked' }
    const created = await send(server.endpoint, 'POST', headers, data)
    expect(created.status).toBe(201)
    expect(created.headers['upload-complete']).toBe('?1')
    expect(created.headers['upload-offset']).toBe('5000')
    const url = new URL(String(created.headers.location), server.endpoint).href
    expect((await send(url, 'HEAD', draft)).headers['upload-length']).toBe('5000')

    const { url: second } = await create(server.endpoint, false, data.subarray(0, 1000))
    const chunked = { ...appendHeaders(1000, true), 'Transfer-Encoding': 'chunked' }
    const appended = await send(second, 'PATCH', chunked, data.subarray(1000))
    expect(appended.status).toBe(201)
    expect(appended.headers['upload-complete']).toBe('?1')
    const offset = await send(second, 'HEAD', draft)
    expect(offset.headers['upload-length']).toBe('5000')
    expect(offset.headers['upload-complete']).toBe('?1')
    expect(finished).toEqual([5000, 5000])
    const id = second.slice(second.lastIndexOf('/') + 1)
    expect(await fs.readFile(path.join(server.directory, id))).toEqual(data)
  })

  it('leaves an upload incomplete when a complete request of unknown length is ended by a newer request', async () => {
    const server = await startServer({ tus: { lockDrainTimeout: 100 } })
    const { url } = await create(server.endpoint, false, pattern(100))
    const req = http.request(url, {
      method: 'PATCH',
      agent: false,
      headers: { ...appendHeaders(100, true), 'Transfer-Encoding': 'chunked' },
    })
    req.on('error', () => {})
    const oldAnswer = new Promise<number>((resolve) => {
      req.on('response', (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
    })
    req.write(pattern(300))
    const id = url.slice(url.lastIndexOf('/') + 1)
    const file = path.join(server.directory, id)
    await waitFor(async () => (await fs.stat(file)).size === 400, 5000, 'the 300 bytes')
    // The client reconnects: its HEAD ends the append still in flight, whose content never ended.
    expect((await send(url, 'HEAD', draft)).headers['upload-offset']).toBe('400')
    await oldAnswer
    const offset = await send(url, 'HEAD', draft)
    expect(offset.headers['upload-complete']).toBe('?0')
    expect(offset.headers['upload-length']).toBeUndefined()
    req.destroy()
  })

  it('refuses Upload-Offset or Upload-Complete on offset retrieval and cancellation with 400', async () => {
    const server = await startServer()
    const { url } = await create(server.endpoint, false)
    for (const method of ['HEAD', 'DELETE']) {
      const res = await send(url, method, { ...draft, 'Upload-Offset': 0 })
      expect(res.status).toBe(400)
    }
    expect((await send(url, 'HEAD', { ...draft, 'Upload-Complete': '?0' })).status).toBe(400)
    expect((await send(url, 'HEAD', draft)).status).toBe(204)
  })

  it('cancels an upload: DELETE answers 204, then the upload answers 404', async () => {
    const server = await startServer()
    const { url } = await create(server.endpoint, false, pattern(10))
    const id = url.slice(url.lastIndexOf('/') + 1)
    expect((await send(url, 'DELETE', draft)).status).toBe(204)
    expect((await send(url, 'HEAD', draft)).status).toBe(404)
    expect(await exists(path.join(server.directory, id))).toBe(false)
  })

  it('serves one upload to both protocols: tus 1.0 resumes a draft upload and the draft a tus one', async () => {
    const server = await startServer()
    const data = pattern(90, 9)
    const drafted = await create(server.endpoint, false, data.subarray(0, 30), {
      'Upload-Length': 90,
    })
    expect((await head(drafted.url)).headers['upload-offset']).toBe('30')
    expect((await patch(drafted.url, 30, data.subarray(30, 60))).status).toBe(204)
    const end = await send(drafted.url, 'PATCH', appendHeaders(60, true), data.subarray(60))
    expect(end.headers['upload-complete']).toBe('?1')
    const id = drafted.url.slice(drafted.url.lastIndexOf('/') + 1)
    expect(await fs.readFile(path.join(server.directory, id))).toEqual(data)

    const tus = await createUpload(server.endpoint, 'deferred')
    expect((await patch(tus.url, 0, data.subarray(0, 40))).status).toBe(204)
    const offset = await send(tus.url, 'HEAD', draft)
    expect(offset.headers['upload-offset']).toBe('40')
    expect((await send(tus.url, 'PATCH', appendHeaders(40, true), data.subarray(40))).status).toBe(
      201,
    )
    const tusHead = await head(tus.url)
    expect(tusHead.headers['upload-length']).toBe('90')
    expect(await fs.readFile(path.join(server.directory, tus.id))).toEqual(data)
  })

  it('answers 404 to a draft request on an upload that expired', async () => {
    const server = await startServer({
      expireAfterMs: 300,
      cleanupIntervalMs: 60_000,
      cleanupOnStart: false,
    })
    const { url } = await create(server.endpoint, false, pattern(10))
    await sleep(450)
    const res = await send(url, 'HEAD', draft)
    expect(res.status).toBe(404)
    expect((await head(url)).status).toBe(410)
  })

  it('ends an append still in flight when the client reconnects, and resumes from what it stored', async () => {
    const server = await startServer({ tus: { lockDrainTimeout: 100 } })
    const data = pattern(2000, 11)
    const { url } = await create(server.endpoint, false, undefined, { 'Upload-Length': 2000 })
    // The old append: its headers and 700 bytes, then silence (a connection the client gave up on).
    const old = http.request(url, {
      method: 'PATCH',
      agent: false,
      headers: { ...appendHeaders(0, true), 'Content-Length': 2000 },
    })
    old.on('error', () => {})
    const oldAnswer = new Promise<number>((resolve) => {
      old.on('response', (res) => resolve(res.statusCode ?? 0))
      old.on('close', () => resolve(0))
    })
    old.write(data.subarray(0, 700))
    const id = url.slice(url.lastIndexOf('/') + 1)
    const file = path.join(server.directory, id)
    await waitFor(async () => (await fs.stat(file)).size === 700, 5000, 'the first 700 bytes')
    const started = Date.now()
    const offset = await send(url, 'HEAD', draft)
    expect(Date.now() - started).toBeLessThan(3000)
    expect(offset.headers['upload-offset']).toBe('700')
    const rest = await send(url, 'PATCH', appendHeaders(700, true), data.subarray(700))
    expect(rest.status).toBe(201)
    expect(rest.headers['upload-complete']).toBe('?1')
    expect(await fs.readFile(file)).toEqual(data)
    old.destroy()
    await oldAnswer
  })

  it('runs the hooks for draft uploads as for tus, with the Fastify request, and emits POST_CREATE and POST_FINISH', async () => {
    const seen: string[] = []
    const server = await startServer({
      tus: {
        onUploadCreate: async (req, upload) => {
          seen.push(`create ${upload.size} ${fastifyRequestOf(req)?.headers['x-user']}`)
          return {}
        },
        onUploadFinish: async (req, upload) => {
          seen.push(`finish ${upload.size} ${fastifyRequestOf(req)?.headers['x-user']}`)
          return {}
        },
      },
    })
    const events: string[] = []
    server.app.tus.on(EVENTS.POST_CREATE, () => events.push('created'))
    server.app.tus.on(EVENTS.POST_FINISH, () => events.push('finished'))
    const { url } = await create(server.endpoint, false, pattern(5), { 'X-User': 'ann' })
    await send(url, 'PATCH', { ...appendHeaders(5, true), 'X-User': 'bob' }, pattern(5))
    expect(seen).toEqual(['create undefined ann', 'finish 10 bob'])
    expect(events).toEqual(['created', 'finished'])
  })
})

describe('the draft on the tus routes', () => {
  it('hands a finished draft upload over durably: a failing onUploadFinish runs again until it succeeds', async () => {
    let failures = 2
    const runs: string[] = []
    const server = await startServer({
      tus: {
        onUploadFinish: async (_req, upload) => {
          runs.push(upload.id)
          if (failures-- > 0) throw new Error('the app is down')
          return {}
        },
      },
      finishRetryMs: 50,
      cleanupIntervalMs: 600_000,
    })
    // Complete in a chunked request of unknown length: the length is declared at its end.
    const res = await send(
      server.endpoint,
      'POST',
      {
        'Upload-Draft-Interop-Version': 6,
        'Upload-Complete': '?1',
        'Transfer-Encoding': 'chunked',
      },
      pattern(700),
    )
    expect(res.status).toBe(201)
    expect(res.headers['upload-complete']).toBe('?1')
    const id = String(res.headers.location).split('/').pop()
    await waitFor(() => runs.length === 3, 5000, 'the third run')
    await waitFor(async () => (await server.app.tusCleanup.pending()).length === 0)
    expect(runs).toEqual([id, id, id])
  })

  it('sends no 104 to an HTTP/1.0 client', async () => {
    const server = await startServer()
    const { port } = new URL(server.endpoint)
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(port), '127.0.0.1', () => {
        socket.write(
          'POST /files HTTP/1.0\r\nHost: 127.0.0.1\r\nUpload-Draft-Interop-Version: 6\r\n' +
            'Upload-Complete: ?1\r\nContent-Length: 3\r\n\r\nabc',
        )
      })
      const chunks: Buffer[] = []
      socket.on('data', (chunk) => chunks.push(chunk))
      socket.on('end', () => resolve(Buffer.concat(chunks).toString('latin1')))
      socket.on('error', reject)
    })
    expect(answer).toMatch(/^HTTP\/1\.1 201 Created\r\n/)
    expect(answer).not.toMatch(/ 104 /)
  })

  it('refuses an interop version it does not serve with 400, naming those it serves, and sends no 104', async () => {
    const server = await startServer()
    for (const version of ['4', '7', 'x']) {
      const res = await send(
        server.endpoint,
        'POST',
        { 'Upload-Draft-Interop-Version': version, 'Upload-Complete': '?1' },
        pattern(3),
      )
      expect(res.status).toBe(400)
      expect(res.body).toBe(
        `Upload-Draft-Interop-Version "${version}" is not served: this server speaks the resumable upload draft's interop versions 5, 6 and 8, and tus 1.0.0\n`,
      )
      expect(res.informational).toEqual([])
    }
    expect((await fs.readdir(server.directory)).filter((f) => !f.startsWith('.'))).toEqual([])
  })

  it('sends no 104 to a tus 1.0 creation', async () => {
    const server = await startServer()
    const res = await send(
      server.endpoint,
      'POST',
      { ...TUS, 'Upload-Length': 3, 'Content-Type': 'application/offset+octet-stream' },
      pattern(3),
    )
    expect(res.status).toBe(201)
    expect(res.informational).toEqual([])
  })

  it('shows the 104 to curl -v', async () => {
    const server = await startServer()
    const { stderr } = await promisify(execFile)('curl', [
      '-sv',
      '-X',
      'POST',
      '-H',
      'Upload-Draft-Interop-Version: 6',
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
    expect(lines.slice(info, final)).toContain('< Upload-Draft-Interop-Version: 6')
    expect(
      lines.slice(info, final).some((l) => l.startsWith('< Location: http://127.0.0.1:')),
    ).toBe(true)
  })

  it('answers OPTIONS of an interop 6 client with Upload-Limit', async () => {
    const server = await startServer({ tus: { maxSize: 5000 } })
    const res = await send(server.endpoint, 'OPTIONS', { 'Upload-Draft-Interop-Version': 6 })
    expect(res.status).toBeLessThan(300)
    expect(res.headers['upload-limit']).toBe('max-size=5000')
  })

  it('counts draft answers under their protocol label, and a draft 404 for an expired upload as expired', async () => {
    const registry = new Registry()
    const server = await startServer({
      metrics: { registry },
      expireAfterMs: 300,
      cleanupOnStart: false,
      cleanupIntervalMs: 60_000,
    })
    const created = await send(server.endpoint, 'POST', {
      'Upload-Draft-Interop-Version': 6,
      'Upload-Complete': '?0',
    })
    await createUpload(server.endpoint, 5)
    await sleep(450)
    const url = new URL(String(created.headers.location), server.endpoint).href
    expect((await send(url, 'HEAD', { 'Upload-Draft-Interop-Version': 6 })).status).toBe(404)
    const text = await registry.metrics()
    expect(text).toMatch(
      /tus_requests_total\{endpoint="\/files",method="POST",status="201",protocol="ietf-draft-6"\} 1/,
    )
    expect(text).toMatch(
      /tus_requests_total\{endpoint="\/files",method="POST",status="201",protocol="tus"\} 1/,
    )
    expect(text).toMatch(
      /tus_requests_total\{endpoint="\/files",method="HEAD",status="404",protocol="ietf-draft-6"\} 1/,
    )
    expect(text).toMatch(/tus_uploads_expired_total\{endpoint="\/files"\} 1/)
  })

  it('keeps a draft upload within the store quota (507) and the sweep removes it once expired, never a finished one', async () => {
    const server = await startServer({
      maxStoreBytes: 1000,
      minFreeBytes: 0,
      expireAfterMs: 300,
      cleanupIntervalMs: 60_000,
      cleanupOnStart: false,
    })
    const draft = { 'Upload-Draft-Interop-Version': 6 }
    const over = await send(
      server.endpoint,
      'POST',
      { ...draft, 'Upload-Complete': '?1' },
      pattern(2000),
    )
    expect(over.status).toBe(413)
    const open = await send(
      server.endpoint,
      'POST',
      { ...draft, 'Upload-Complete': '?0' },
      pattern(600),
    )
    expect(open.status).toBe(201)
    const full = await send(
      server.endpoint,
      'POST',
      { ...draft, 'Upload-Complete': '?1' },
      pattern(300),
    )
    expect(full.status).toBe(201)
    const third = await send(
      server.endpoint,
      'POST',
      { ...draft, 'Upload-Complete': '?1' },
      pattern(200),
    )
    expect(third.status).toBe(507)
    await sleep(450)
    const idOf = (res: Sent) => String(res.headers.location).split('/').pop() as string
    const dry = await server.app.tusCleanup.run({ dryRun: true })
    expect(dry.ids).toEqual([idOf(open)])
    const report = await server.app.tusCleanup.run()
    expect(report.removed).toBe(1)
    expect(await exists(path.join(server.directory, idOf(open)))).toBe(false)
    expect(await exists(path.join(server.directory, idOf(full)))).toBe(true)
  })
  it('leaves draft uploads to the operator CLI like any other: listed by a dry run, removed by a sweep', async () => {
    const server = await startServer({ expireAfterMs: 60_000, cleanupOnStart: false })
    const draft = { 'Upload-Draft-Interop-Version': 5 }
    const open = await send(
      server.endpoint,
      'POST',
      { ...draft, 'Upload-Complete': '?0' },
      pattern(10),
    )
    const done = await send(
      server.endpoint,
      'POST',
      { ...draft, 'Upload-Complete': '?1' },
      pattern(10),
    )
    expect([open.status, done.status]).toEqual([201, 201])
    const idOf = (res: Sent) => String(res.headers.location).split('/').pop() as string
    await server.app.close()
    const args = ['sweep', '--dir', server.directory, '--expire-after', '1ms', '--json']
    const dry = await cli([...args, '--dry-run'])
    expect(dry.code).toBe(0)
    expect(JSON.parse(dry.stdout).removed.map((r: { id: string }) => r.id)).toEqual([idOf(open)])
    const swept = await cli(args)
    expect(JSON.parse(swept.stdout).report.removed).toBe(1)
    expect(await exists(path.join(server.directory, idOf(open)))).toBe(false)
    expect(await exists(path.join(server.directory, idOf(done)))).toBe(true)
  })
})
