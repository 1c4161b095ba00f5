/**
 * The concatenation extension (parallel uploads) over real HTTP: tus-js-client's
 * `parallelUploads`, the protocol's answers for partial and final uploads, the refusals that
 * leave nothing behind, and the expiry of partials that no final used.
 */
import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { EVENTS } from '@tus/utils'
import { describe, expect, it } from 'vitest'
import { concatenateFiles } from '../src/backends/file/concatenation.js'
import { PROCESS_TOKEN } from '../src/backends/file/names.js'
import type { TusServerOptions } from '../src/options/index.js'
import { pattern as bytes, sha256Of } from './helpers/data.js'
import { age, listing, listingBecomes, pair, sha256 } from './helpers/fs.js'
import { request } from './helpers/http.js'
import { startServer } from './helpers/server.js'
import { createUpload, head, patch, TUS, tusUpload } from './helpers/tus-client.js'
import { signal, waitFor } from './helpers/wait.js'

const HOUR = 3_600_000

/** A finished partial upload of `data`; resolves to its URL and id. */
async function partial(endpoint: string, data: Buffer) {
  const created = await createUpload(endpoint, data.length, { 'Upload-Concat': 'partial' })
  if (data.length > 0) {
    const res = await patch(created.url, 0, data)
    expect(res.status).toBe(204)
  }
  return created
}

/** The partial uploads whose records say the final `id` took them over. */
async function takenBy(directory: string, id: string): Promise<string[]> {
  const taken: string[] = []
  for (const name of await listing(directory)) {
    if (!name.endsWith('.json')) continue
    const record = JSON.parse(await fs.readFile(path.join(directory, name), 'utf8'))
    if (record.taken_by === id) taken.push(record.id)
  }
  return taken.sort()
}

function final(endpoint: string, urls: string[], extra: Record<string, string> = {}) {
  return request(endpoint, 'POST', { ...TUS, 'Upload-Concat': `final;${urls.join(' ')}`, ...extra })
}

describe('parallel uploads with tus-js-client', () => {
  it.each([
    ['0 B', 0],
    ['1 B', 1],
    ['3 MiB', 3 * 1024 * 1024],
  ])(
    "delivers %s byte-identical with parallelUploads: 4, and keeps only the final upload (and its partials' records, for a retried final)",
    async (_, size) => {
      const server = await startServer({ expireAfterMs: HOUR })
      const data = bytes(size, 7)
      const creations: string[] = []
      const url = await tusUpload(server.endpoint, data, {
        parallelUploads: 4,
        chunkSize: 256 * 1024,
        metadata: { filename: 'movie.bin' },
        onBeforeRequest: (req) => {
          if (req.getMethod() === 'POST') creations.push(String(req.getHeader('Upload-Concat')))
        },
      })
      // Four partials, then the final that lists them.
      expect(creations.slice(0, 4)).toEqual(Array(4).fill('partial'))
      expect(creations[4]).toMatch(/^final;(\S+ ){3}\S+$/)
      const id = url.slice(url.lastIndexOf('/') + 1)
      expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(data))
      // The partials' bytes went once the final held them; their records stay, taken by it.
      const partialIds = await takenBy(server.directory, id)
      expect(partialIds).toHaveLength(4)
      const kept = [...pair(id), ...partialIds.map((p) => `${p}.json`)].sort()
      expect(await listingBecomes(server.directory, kept)).toEqual(kept)
      const res = await head(url)
      expect(res.status).toBe(200)
      expect(res.headers['upload-offset']).toBe(String(size))
      expect(res.headers['upload-length']).toBe(String(size))
      expect(res.headers['upload-concat']).toMatch(/^final;/)
      expect(res.headers['upload-expires']).toBeUndefined()
      const download = await fetch(url)
      expect(sha256Of(Buffer.from(await download.arrayBuffer()))).toBe(sha256Of(data))
    },
  )

  it('runs onUploadFinish and POST_FINISH once, for the final only (not its partials), with its whole length and metadata', async () => {
    const finished: Array<{ id: string; size: number | undefined; offset: number; name?: string }> =
      []
    const events: string[] = []
    const server = await startServer({
      expireAfterMs: HOUR,
      tus: {
        onUploadFinish: async (_req, upload) => {
          finished.push({
            id: upload.id,
            size: upload.size,
            offset: upload.offset,
            name: upload.metadata?.filename ?? undefined,
          })
          return { headers: { 'X-Finished': 'yes' } }
        },
      },
    })
    server.app.tus.on(EVENTS.POST_FINISH, (_req, _res, upload) => {
      events.push(upload.id)
    })
    const data = bytes(100_000, 3)
    let finalHeaders: Record<string, string> = {}
    const url = await tusUpload(server.endpoint, data, {
      parallelUploads: 3,
      metadata: { filename: 'a.txt' },
      onAfterResponse: (req, res) => {
        if (req.getMethod() === 'POST' && req.getHeader('Upload-Concat')?.startsWith('final')) {
          finalHeaders = { finished: res.getHeader('X-Finished') ?? '' }
        }
      },
    })
    const id = url.slice(url.lastIndexOf('/') + 1)
    // The partials are steps of the final: the app's hook and POST_FINISH see the final only.
    expect(finished).toEqual([{ id, size: 100_000, offset: 100_000, name: 'a.txt' }])
    expect(events).toEqual([id])
    expect(finalHeaders.finished).toBe('yes')
  })
})

describe('the protocol for partial and final uploads', () => {
  it('advertises concatenation in Tus-Extension', async () => {
    const server = await startServer()
    const res = await request(server.endpoint, 'OPTIONS')
    expect(String(res.headers['tus-extension']).split(',')).toContain('concatenation')
  })

  it('answers HEAD with Upload-Concat, and a final whose length and offset are the sum of its partials', async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    const a = await partial(server.endpoint, Buffer.from('AAAAA'))
    const b = await partial(server.endpoint, Buffer.from('BBBBBB'))
    expect((await head(a.url)).headers['upload-concat']).toBe('partial')
    // A partial expires (its creation says when); a final is finished at once (none).
    expect(a.response.headers['upload-expires']).toBeDefined()
    // Absolute URLs and paths alike.
    const res = await final(server.endpoint, [a.url, new URL(b.url).pathname])
    expect(res.status).toBe(201)
    expect(res.headers['upload-expires']).toBeUndefined()
    const url = new URL(res.headers.location as string, server.endpoint).href
    const answer = await head(url)
    expect(answer.headers['upload-length']).toBe('11')
    expect(answer.headers['upload-offset']).toBe('11')
    expect(answer.headers['upload-concat']).toBe(`final;${a.url} ${new URL(b.url).pathname}`)
    const id = url.slice(url.lastIndexOf('/') + 1)
    expect(await fs.readFile(path.join(server.directory, id), 'utf8')).toBe('AAAAABBBBBB')
  })

  it("shows tus a final's summed Upload-Length without the Upload-Concat header, while the app's own hooks see the headers as sent", async () => {
    const seenByTus: Array<{ length: string | null; concat: string | null }> = []
    const seenByApp: Array<{ length: unknown; concat: unknown; raw: string[] }> = []
    const server = await startServer(
      {
        expireAfterMs: HOUR,
        tus: {
          onUploadCreate: async (req) => {
            seenByTus.push({
              length: req.headers.get('upload-length'),
              concat: req.headers.get('upload-concat'),
            })
            return {}
          },
        },
      },
      {
        before: async (app) => {
          app.addHook('onResponse', async (request) => {
            if (request.method !== 'POST' || request.headers['upload-concat'] === undefined) return
            const raw = request.raw.rawHeaders.filter((_, i) => i % 2 === 0)
            seenByApp.push({
              length: request.headers['upload-length'],
              concat: request.headers['upload-concat'],
              raw: raw.map((name) => name.toLowerCase()),
            })
          })
        },
      },
    )
    const a = await partial(server.endpoint, Buffer.from('AAAAA'))
    const b = await partial(server.endpoint, Buffer.from('BBB'))
    const res = await final(server.endpoint, [a.url, b.url])
    expect(res.status).toBe(201)
    // tus sees an ordinary creation of the partials' summed length...
    expect(seenByTus).toEqual([
      { length: '5', concat: null },
      { length: '3', concat: null },
      { length: '8', concat: null },
    ])
    // ...while the Node request keeps what the client sent: no length, the header in place.
    const finalSeen = seenByApp.at(-1)
    expect(finalSeen?.concat).toBe(`final;${a.url} ${b.url}`)
    expect(finalSeen?.length).toBeUndefined()
    expect(finalSeen?.raw).toContain('upload-concat')
    expect(finalSeen?.raw).not.toContain('upload-length')
  })

  it('accepts partial URLs with or without the register prefix', async () => {
    const server = await startServer({ expireAfterMs: HOUR }, { register: { prefix: '/api' } })
    const a = await partial(server.endpoint, Buffer.from('one,'))
    const b = await partial(server.endpoint, Buffer.from('two'))
    const withoutPrefix = new URL(b.url).pathname.replace(/^\/api/, '')
    const res = await final(server.endpoint, [a.url, withoutPrefix])
    expect(res.status).toBe(201)
    const id = String(res.headers.location).split('/').pop() as string
    expect(await fs.readFile(path.join(server.directory, id), 'utf8')).toBe('one,two')
  })

  it('reads the partial URLs of a user generateUrl (a proxy layout) as tus reads upload URLs', async () => {
    const server = await startServer({
      expireAfterMs: HOUR,
      tus: { generateUrl: (_req, { id }) => `https://uploads.example.com/u/${id}` },
    })
    const locations: string[] = []
    for (const part of ['via ', 'proxy']) {
      const { id, response } = await createUpload(server.endpoint, part.length, {
        'Upload-Concat': 'partial',
      })
      // The Location is the proxy's; the partial is PATCHed here at its own path.
      expect(response.headers.location).toBe(`https://uploads.example.com/u/${id}`)
      expect((await patch(`${server.endpoint}/${id}`, 0, Buffer.from(part))).status).toBe(204)
      locations.push(String(response.headers.location))
    }
    const res = await final(server.endpoint, locations)
    expect(res.status, res.body).toBe(201)
    const id = String(res.headers.location).split('/').pop() as string
    expect(await fs.readFile(path.join(server.directory, id), 'utf8')).toBe('via proxy')
    const unknown = await final(server.endpoint, [
      `https://uploads.example.com/u/${'0'.repeat(32)}`,
    ])
    expect(unknown.status).toBe(404)
  })

  it('repeats a partial listed twice, and removes its bytes once', async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    const a = await partial(server.endpoint, Buffer.from('ab'))
    const res = await final(server.endpoint, [a.url, a.url])
    expect(res.status).toBe(201)
    const id = String(res.headers.location).split('/').pop() as string
    expect(await fs.readFile(path.join(server.directory, id), 'utf8')).toBe('abab')
    const kept = [...pair(id), `${a.id}.json`].sort()
    expect(await listingBecomes(server.directory, kept)).toEqual(kept)
    expect(await takenBy(server.directory, id)).toEqual([a.id])
  })

  it('answers 403 to a PATCH on a final upload and leaves it unchanged', async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    const a = await partial(server.endpoint, Buffer.from('AAAAA'))
    const res = await final(server.endpoint, [a.url])
    const url = new URL(res.headers.location as string, server.endpoint).href
    // Whatever tus would have refused first: an offset, a body past the end, a length; and the
    // empty body at the end, which reaches the write.
    const attempts = [
      () => patch(url, 0, Buffer.from('more')),
      () => patch(url, 5, Buffer.from('more')),
      () => patch(url, 5, Buffer.alloc(0)),
      () => patch(url, 5, Buffer.alloc(0), { 'Upload-Length': '5' }),
    ]
    for (const attempt of attempts) {
      const refused = await attempt()
      expect(refused.status).toBe(403)
      expect(refused.body).toBe(
        'a final upload cannot be patched: its bytes come from its partials\n',
      )
      expect(refused.headers['tus-resumable']).toBe('1.0.0')
      expect(refused.headers['content-length']).toBe(String(refused.body.length))
      expect(refused.headers['upload-offset']).toBeUndefined()
    }
    const id = url.slice(url.lastIndexOf('/') + 1)
    expect(await fs.readFile(path.join(server.directory, id), 'utf8')).toBe('AAAAA')
  })

  it('creates a partial upload with its first bytes in the POST, and with a deferred length', async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    const withBody = await request(
      server.endpoint,
      'POST',
      {
        ...TUS,
        'Upload-Length': 4,
        'Upload-Concat': 'partial',
        'Content-Type': 'application/offset+octet-stream',
      },
      Buffer.from('1234'),
    )
    expect(withBody.status).toBe(201)
    const deferred = await createUpload(server.endpoint, 'deferred', { 'Upload-Concat': 'partial' })
    expect((await head(deferred.url)).headers['upload-concat']).toBe('partial')
    // Unfinished while its length is unknown.
    const refused = await final(server.endpoint, [deferred.url])
    expect(refused.status).toBe(400)
    expect(refused.body).toMatch(/not finished .*not declared/)
    const ok = await final(server.endpoint, [String(withBody.headers.location)])
    expect(ok.status).toBe(201)
  })
})

describe('a final upload that cannot be made', () => {
  it('answers 400, 404 or 410 with a reason and leaves the store as it was', async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    const other = await startServer({ expireAfterMs: HOUR, path: '/other' })
    const done = await partial(server.endpoint, Buffer.from('done'))
    const unfinished = await createUpload(server.endpoint, 10, { 'Upload-Concat': 'partial' })
    await patch(unfinished.url, 0, Buffer.from('half'))
    const plain = await createUpload(server.endpoint, 0)
    const expired = await partial(server.endpoint, Buffer.from('old'))
    // Past the hold of a finished partial (partialHoldMs: a day by default).
    await age(path.join(server.directory, expired.id), 25 * HOUR)
    const foreign = await partial(other.endpoint, Buffer.from('elsewhere'))
    const before = await listing(server.directory)

    const cases: Array<[string[], number, RegExp]> = [
      [[done.url, `${server.endpoint}/${'0'.repeat(32)}`], 404, /was not found/],
      [[done.url, expired.url], 410, /has expired/],
      [[unfinished.url, done.url], 400, /is not finished \(4 of 10 bytes\)/],
      [[plain.url], 400, /is not a partial upload/],
      [[done.url, foreign.url], 400, /is not an upload URL of this endpoint/],
      [[`${server.endpoint}/../secret`], 400, /not an upload URL|not found/],
      [[], 400, /lists no partial upload/],
    ]
    for (const [urls, status, reason] of cases) {
      const res = await final(server.endpoint, urls)
      expect({ urls, status: res.status }).toEqual({ urls, status })
      expect(res.body).toMatch(reason)
      expect(res.headers['tus-resumable']).toBe('1.0.0')
    }
    const withLength = await final(server.endpoint, [done.url], { 'Upload-Length': '4' })
    expect(withLength.status).toBe(400)
    expect(withLength.body).toMatch(/send no Upload-Length/)
    const bad = await request(server.endpoint, 'POST', { ...TUS, 'Upload-Concat': 'whole' })
    expect(bad.status).toBe(400)
    expect(await listing(server.directory)).toEqual(before)
    // The partial that was fine is still there for a correct final.
    expect((await final(server.endpoint, [done.url])).status).toBe(201)
  })

  it('answers 413 when the partials together pass maxSize, and creates nothing', async () => {
    const server = await startServer({ expireAfterMs: HOUR, tus: { maxSize: 8 } })
    const a = await partial(server.endpoint, Buffer.from('12345'))
    const b = await partial(server.endpoint, Buffer.from('67890'))
    const before = await listing(server.directory)
    const res = await final(server.endpoint, [a.url, b.url])
    expect(res.status).toBe(413)
    expect(await listing(server.directory)).toEqual(before)
  })

  it('is refused (501) with a datastore of the user, as before', async () => {
    const { FileStore } = await import('@tus/file-store')
    const server = await startServer({
      datastore: new FileStore({ directory: await fs.mkdtemp('/tmp/fastify-tus-concat-') }),
    })
    const res = await createUpload(server.endpoint, 4, { 'Upload-Concat': 'partial' }).catch(
      (error: Error) => error.message,
    )
    expect(res).toMatch(/501/)
  })
})

/**
 * A final POST whose client goes away before the answer: the user's onUploadCreate hook (a real
 * hook of the app) waits until the server has seen the client's socket close (the request's
 * signal), so the assembly runs after the client is gone.
 */
async function finalWithClientGone(tus: TusServerOptions = {}) {
  const entered = signal()
  const server = await startServer({
    expireAfterMs: HOUR,
    tus: {
      ...tus,
      onUploadCreate: async (req) => {
        if (req.headers.get('x-test') === 'abandoned final') {
          const gone = req.signal
          entered.resolve()
          if (!gone.aborted) {
            await new Promise((resolve) => gone.addEventListener('abort', resolve, { once: true }))
          }
        }
        return {}
      },
    },
  })
  return { server, entered }
}

/** Sends a final POST on a raw socket and closes it once the server's hook has it. */
async function abandonFinal(
  server: { endpoint: string },
  urls: string[],
  hook: { entered: { promise: Promise<void> } },
) {
  const target = new URL(server.endpoint)
  const socket = net.connect(Number(target.port), target.hostname)
  socket.on('error', () => {})
  socket.write(
    `POST ${target.pathname} HTTP/1.1\r\nHost: ${target.host}\r\nTus-Resumable: 1.0.0\r\n` +
      `Upload-Concat: final;${urls.join(' ')}\r\nX-Test: abandoned final\r\nContent-Length: 0\r\n\r\n`,
  )
  await hook.entered.promise
  socket.destroy()
}

/** The one final upload (a record of kind final) in `directory`, once it is there. */
async function theFinal(directory: string): Promise<Record<string, unknown>> {
  return waitFor(async () => {
    for (const name of await listing(directory)) {
      // Records only, not the store's temporary files (renamed away as they are read).
      if (!name.endsWith('.json') || name.startsWith('.')) continue
      const text = await fs.readFile(path.join(directory, name), 'utf8').catch(() => '{}')
      const record = JSON.parse(text)
      if (record.concat === 'final') return record
    }
    return undefined
  })
}

describe('a final upload whose client went away before the answer', () => {
  it('is answered to the retried creation (same partials, same order): its URL, and no second final', async () => {
    const hook = await finalWithClientGone()
    const { server } = hook
    const a = await partial(server.endpoint, Buffer.from('first '))
    const b = await partial(server.endpoint, Buffer.from('second'))
    await abandonFinal(server, [a.url, b.url], hook)
    const built = await theFinal(server.directory)
    // Nobody knows of it yet.
    expect(built.answer_pending).toBe(true)

    // tus-js-client asks each partial's offset again before it sends the final again.
    const again = await head(a.url)
    expect(again.status).toBe(200)
    expect(again.headers['upload-offset']).toBe('6')
    expect(again.headers['upload-concat']).toBe('partial')
    // Its bytes are the final's now: nothing to download there.
    expect((await request(a.url, 'GET')).status).toBe(404)
    const retry = await final(server.endpoint, [a.url, b.url])
    expect(retry.status, retry.body).toBe(201)
    const url = new URL(String(retry.headers.location), server.endpoint).href
    expect(url).toBe(`${server.endpoint}/${built.id}`)
    expect((await head(url)).headers['upload-offset']).toBe('12')
    expect(await fs.readFile(path.join(server.directory, String(built.id)), 'utf8')).toBe(
      'first second',
    )
    // Known now: it never expires, however old.
    expect((await theFinal(server.directory)).answer_pending).toBeUndefined()
    const finals = (await listing(server.directory)).filter((n) => !n.endsWith('.json'))
    expect(finals).toEqual([built.id])
    // Another list of the same partials is not this final: the partials are used up.
    const other = await final(server.endpoint, [b.url, a.url])
    expect(other.status).toBe(410)
    expect(other.body).toMatch(/already assembled into another final upload/)
  })

  it("is removed with its partials' records once expireAfterMs has passed without a retry, never before", async () => {
    const hook = await finalWithClientGone()
    const { server } = hook
    const a = await partial(server.endpoint, Buffer.from('lost'))
    await abandonFinal(server, [a.url], hook)
    const built = await theFinal(server.directory)
    expect(built.answer_pending).toBe(true)
    const id = String(built.id)
    await listingBecomes(server.directory, [...pair(id), `${a.id}.json`].sort())
    expect((await server.app.tusCleanup.run()).removed).toBe(0)

    for (const file of [...pair(id), `${a.id}.json`]) {
      await age(path.join(server.directory, file), 2 * HOUR)
    }
    const report = await server.app.tusCleanup.run()
    expect(report).toMatchObject({ removed: 2, partials: 1, orphans: 0 })
    expect(report.ids.sort()).toEqual([id, a.id].sort())
    expect(await listing(server.directory)).toEqual([])
  })

  it("is kept for good once the app's onUploadFinish has taken it", async () => {
    const taken: string[] = []
    const hook = await finalWithClientGone({
      onUploadFinish: async (_req, upload) => {
        taken.push(upload.id)
        return {}
      },
    })
    const { server } = hook
    const a = await partial(server.endpoint, Buffer.from('the app has it'))
    await abandonFinal(server, [a.url], hook)
    const built = await waitFor(async () => {
      const record = await theFinal(server.directory)
      return record.answer_pending === undefined && taken.includes(String(record.id))
        ? record
        : undefined
    })
    await age(path.join(server.directory, String(built.id)), 1000 * HOUR)
    const report = await server.app.tusCleanup.run()
    expect(report.ids).not.toContain(built.id)
    expect((await head(`${server.endpoint}/${built.id}`)).status).toBe(200)
  })
})

describe('expiry of partial uploads', () => {
  it('keeps a finished partial that no final used for partialHoldMs (its siblings may still upload), then removes it and counts it', async () => {
    const server = await startServer({ expireAfterMs: HOUR, partialHoldMs: 5 * HOUR })
    const held = await partial(server.endpoint, Buffer.from('sibling still uploading'))
    const stale = await partial(server.endpoint, Buffer.from('abandoned'))
    const unfinished = await createUpload(server.endpoint, 10, { 'Upload-Concat': 'partial' })
    const plain = await createUpload(server.endpoint, 4)
    await patch(plain.url, 0, Buffer.from('done'))
    // Past expireAfterMs, within the hold: a finished partial waits; an unfinished one expires.
    await age(path.join(server.directory, held.id), 2 * HOUR)
    await age(path.join(server.directory, unfinished.id), 2 * HOUR)
    for (const id of [stale.id, plain.id]) await age(path.join(server.directory, id), 6 * HOUR)
    const waiting = await head(held.url)
    expect(waiting.status).toBe(200)
    // Its Upload-Expires says the hold: about 3 hours from now.
    const left = Date.parse(String(waiting.headers['upload-expires'])) - Date.now()
    expect(left).toBeGreaterThan(2.9 * HOUR)
    expect(left).toBeLessThan(3.1 * HOUR)
    // Past the hold: 410, as any expired upload.
    expect((await head(stale.url)).status).toBe(410)
    expect((await head(unfinished.url)).status).toBe(410)

    const report = await server.app.tusCleanup.run()
    expect(report).toMatchObject({ removed: 2, partials: 2, orphans: 0 })
    expect(report.ids.sort()).toEqual([stale.id, unfinished.id].sort())
    // The held partial, and the finished plain upload however old, stay.
    expect(await listing(server.directory)).toEqual([...pair(held.id), ...pair(plain.id)].sort())
    expect(server.logs.find((r) => r.msg.startsWith('removed 2'))).toMatchObject({ partials: 2 })
    // The final can still be made from the held partial.
    expect((await final(server.endpoint, [held.url])).status).toBe(201)
  })

  it('never removes a finished final upload, however old', async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    const a = await partial(server.endpoint, Buffer.from('keep me'))
    const res = await final(server.endpoint, [a.url])
    const id = String(res.headers.location).split('/').pop() as string
    await age(path.join(server.directory, id), 1000 * HOUR)
    const report = await server.app.tusCleanup.run()
    expect(report.removed).toBe(0)
    expect(await listing(server.directory)).toEqual([...pair(id), `${a.id}.json`].sort())
    expect((await head(`${server.endpoint}/${id}`)).status).toBe(200)
  })

  it("removes at once what a gone process left of an assembly (a temporary data file), and a live one's once older than the period", async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    const a = await partial(server.endpoint, Buffer.from('survives'))
    // What a crash mid-copy leaves: the temporary file beside the final's, nothing else. Its
    // name starts with the token of the process that made it: one that serves nothing now...
    const gone = path.join(server.directory, `.fastify-tus-tmp.0a1b2c3d4e5f.${'f'.repeat(32)}`)
    await fs.writeFile(gone, 'surv')
    // ...and this one, which serves the directory (an assembly under way, as far as it shows).
    const live = `.fastify-tus-tmp.${PROCESS_TOKEN}ff.${'e'.repeat(32)}`
    await fs.writeFile(path.join(server.directory, live), 'surv')
    const first = await server.app.tusCleanup.run()
    expect(first).toMatchObject({ removed: 1, orphans: 1, ids: ['f'.repeat(32)] })
    expect(await listing(server.directory)).toEqual([live, ...pair(a.id)].sort())
    await age(path.join(server.directory, live), 2 * HOUR)
    const report = await server.app.tusCleanup.run()
    expect(report).toMatchObject({ removed: 1, orphans: 1, ids: ['e'.repeat(32)] })
    // The partial is untouched: the client can send its final again.
    expect(await listing(server.directory)).toEqual(pair(a.id))
    expect((await final(server.endpoint, [a.url])).status).toBe(201)
  })
})

describe('the assembly copy (concatenateFiles)', () => {
  /** Random bytes, drawn once per size and part (pattern() is slow at 17 MiB). */
  const drawn = new Map<string, Buffer>()
  const content = (size: number, i: number) => {
    const key = `${size}/${i}`
    if (!drawn.has(key)) drawn.set(key, randomBytes(size))
    return drawn.get(key) as Buffer
  }
  async function sources(dir: string, sizes: number[]) {
    const files: Array<{ file: string; bytes: number }> = []
    for (const [i, size] of sizes.entries()) {
      const file = path.join(dir, `part-${i}`)
      await fs.writeFile(file, content(size, i))
      files.push({ file, bytes: size })
    }
    return files
  }
  const expected = (sizes: number[]) => Buffer.concat(sizes.map((size, i) => content(size, i)))

  it.each(['kernel', 'node'] as const)(
    'writes the partials in order, byte for byte, with the %s copy',
    async (copier) => {
      const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'concat-copy-'))
      try {
        const sizes = [0, 1, 3 * 1024 * 1024 + 7, 17 * 1024 * 1024, 5]
        const target = path.join(dir, 'final')
        const written = await concatenateFiles(await sources(dir, sizes), target, copier)
        expect(written).toBe(sizes.reduce((a, b) => a + b, 0))
        expect(await sha256(target)).toBe(sha256Of(expected(sizes)))
        // Nothing is left beside the final: the temporary file was linked in and removed.
        expect((await fs.readdir(dir)).sort()).toEqual(
          [...sizes.keys()]
            .map((i) => `part-${i}`)
            .concat('final')
            .sort(),
        )
      } finally {
        await fs.rm(dir, { recursive: true, force: true })
      }
    },
  )

  it('copies only the bytes a partial counts when its file holds more', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'concat-copy-'))
    try {
      const parts = await sources(dir, [1000, 2000])
      await fs.appendFile((parts[0] as { file: string }).file, 'not counted')
      const target = path.join(dir, 'final')
      await concatenateFiles(parts, target)
      expect(await sha256(target)).toBe(sha256Of(expected([1000, 2000])))
      await expect(concatenateFiles(parts, path.join(dir, 'other'), 'kernel')).rejects.toThrow(
        /more than its bytes/,
      )
    } finally {
      await fs.rm(dir, { recursive: true, force: true })
    }
  })

  it('refuses a partial that is a symbolic link, and creates no final', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'concat-copy-'))
    try {
      const parts = await sources(dir, [10, 10])
      const outside = path.join(dir, 'outside')
      await fs.writeFile(outside, 'secret....')
      await fs.rm((parts[1] as { file: string }).file)
      await fs.symlink(outside, (parts[1] as { file: string }).file)
      const target = path.join(dir, 'final')
      await expect(concatenateFiles(parts, target)).rejects.toThrow(/symbolic link/)
      await expect(fs.access(target)).rejects.toThrow()
      expect((await fs.readdir(dir)).filter((name) => name.startsWith('.'))).toEqual([])
    } finally {
      await fs.rm(dir, { recursive: true, force: true })
    }
  })
})
