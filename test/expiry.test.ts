/**
 * Expiry of the built-in file store, over real HTTP: it slides with activity, it is stated in
 * Upload-Expires, it answers 410 before any sweep, it never touches a finished upload, and it
 * survives a restart.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import * as tus from 'tus-js-client'
import { describe, expect, it } from 'vitest'
import { ExpiringFileStore } from '../src/backends/file/file-store.js'
import { lastActivityMs } from '../src/expiry/policy.js'
import { pattern as bytes, sha256Of } from './helpers/data.js'
import { age, exists, listing, sha256, tempDir } from './helpers/fs.js'
import { request } from './helpers/http.js'
import { startServer } from './helpers/server.js'
import { createUpload, head, patch, slowPatch, TUS, tusUpload } from './helpers/tus-client.js'
import { sleep, waitFor } from './helpers/wait.js'

const HOUR = 3_600_000
const YEAR = 365 * 24 * HOUR

/** Moves a file's mtime `ms` earlier: its last activity was that much longer ago. */
async function earlier(file: string, ms: number): Promise<void> {
  const { atime, mtimeMs } = await fs.stat(file)
  await fs.utimes(file, atime, new Date(mtimeMs - ms))
}

/** Moves the close that the server recorded in `directory` `ms` earlier: a longer downtime. */
async function closedEarlier(directory: string, ms: number): Promise<void> {
  const marker = path.join(directory, '.fastify-tus-closed')
  const { closedAt } = JSON.parse(await fs.readFile(marker, 'utf8'))
  await fs.writeFile(marker, JSON.stringify({ closedAt: closedAt - ms }))
}

function expiresMs(headers: Record<string, unknown>): number {
  const value = headers['upload-expires']
  if (typeof value !== 'string') throw new Error(`no Upload-Expires header (got ${String(value)})`)
  return Date.parse(value)
}

describe('sliding expiry', () => {
  it('never expires an upload that keeps receiving data in one long PATCH', async () => {
    // A period with room for a loaded machine between the creation and the PATCH's first bytes.
    const expireAfterMs = 500
    const server = await startServer({ expireAfterMs, cleanupIntervalMs: 50 })
    const chunks = Array.from({ length: 16 }, (_, i) => bytes(1024, i))
    const total = chunks.reduce((n, c) => n + c.length, 0)
    const { url, id } = await createUpload(server.endpoint, total)
    const started = Date.now()
    // 16 pieces, one every 100 ms: the PATCH lasts about 1.6 s, over three times the period.
    const res = await slowPatch(url, 0, chunks, 100)
    expect(Date.now() - started).toBeGreaterThan(3 * expireAfterMs)
    expect(res.status).toBe(204)
    expect(res.headers['upload-offset']).toBe(String(total))
    expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(Buffer.concat(chunks)))
    // Sweeps did run meanwhile.
    expect(
      server.logs.filter((r) => r.plugin === 'fastify-tus' && 'scanned' in r).length,
    ).toBeGreaterThan(5)
  })

  it('never expires an upload that keeps receiving data in many PATCHes', async () => {
    // 500 ms of slack per pause, for a loaded machine; 19 pauses outlast the period 3 times.
    const expireAfterMs = 600
    const server = await startServer({ expireAfterMs, cleanupIntervalMs: 50 })
    const pieces = Array.from({ length: 19 }, (_, i) => bytes(2048, i))
    const { url, id } = await createUpload(server.endpoint, 19 * 2048)
    const started = Date.now()
    let offset = 0
    for (const piece of pieces) {
      await sleep(100) // each pause is shorter than the period; all of them together are not
      const res = await patch(url, offset, piece)
      expect(res.status).toBe(204)
      offset += piece.length
    }
    expect(Date.now() - started).toBeGreaterThan(3 * expireAfterMs)
    expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(Buffer.concat(pieces)))
  })

  it('expires an unfinished upload once it has been idle for expireAfterMs', async () => {
    const server = await startServer({ expireAfterMs: 300, cleanupIntervalMs: 50 })
    const { url, id } = await createUpload(server.endpoint, 100)
    expect((await patch(url, 0, bytes(40))).status).toBe(204)
    await waitFor(async () => !(await exists(path.join(server.directory, id))), 5000, 'removal')
    expect(await exists(path.join(server.directory, `${id}.json`))).toBe(false)
    expect([404, 410]).toContain((await head(url)).status)
  })
})

describe('a period that looks like seconds', () => {
  const SHORT = /expireAfterMs is 120 ms: an upload idle that long expires/

  it('warns at register when expireAfterMs is under 5 s (120 meant as two minutes), and not for 10 minutes', async () => {
    const short = await startServer({ expireAfterMs: 120, cleanupOnStart: false })
    expect(short.logs.filter((r) => r.level === 40 && SHORT.test(String(r.msg)))).toHaveLength(1)
    const usual = await startServer({ expireAfterMs: 600_000, cleanupOnStart: false })
    expect(usual.logs.filter((r) => /expireAfterMs is/.test(String(r.msg)))).toEqual([])
  })
})

describe('Upload-Expires', () => {
  it('states the expiry on POST, PATCH and HEAD and moves it forward with activity', async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    const before = Date.now()
    const { url, response } = await createUpload(server.endpoint, 100)
    const onPost = expiresMs(response.headers)
    // RFC 9110 IMF-fixdate, second precision.
    expect(response.headers['upload-expires']).toMatch(
      /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/,
    )
    expect(onPost).toBeGreaterThanOrEqual(Math.floor((before + HOUR) / 1000) * 1000)
    expect(onPost).toBeLessThanOrEqual(Date.now() + HOUR)

    expect(expiresMs((await head(url)).headers)).toBe(onPost) // HEAD is not activity

    // Upload-Expires counts whole seconds: let the clock pass into the next one.
    await sleep(1000 - (Date.now() % 1000) + 50)
    const patched = await patch(url, 0, bytes(10))
    expect(patched.status).toBe(204)
    const onPatch = expiresMs(patched.headers)
    expect(onPatch).toBeGreaterThan(onPost)
    expect(expiresMs((await head(url)).headers)).toBe(onPatch)
  })

  it('sends none for a finished upload', async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    // Empty: finished as it is created.
    expect(
      (await createUpload(server.endpoint, 0)).response.headers['upload-expires'],
    ).toBeUndefined()
    const { url, response } = await createUpload(server.endpoint, 10)
    expect(response.headers['upload-expires']).toBeDefined()
    const done = await patch(url, 0, bytes(10))
    expect(done.status).toBe(204)
    expect(done.headers['upload-expires']).toBeUndefined()
    expect((await head(url)).headers['upload-expires']).toBeUndefined()

    const empty = await createUpload(server.endpoint, 0) // finished the moment it exists
    expect(empty.response.headers['upload-expires']).toBeUndefined()
  })

  it('states it for a deferred-length upload, which counts as unfinished', async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    const { url, response } = await createUpload(server.endpoint, 'deferred')
    expect(response.headers['upload-expires']).toBeDefined()
    const res = await patch(url, 0, bytes(10))
    expect(res.status).toBe(204)
    expect(res.headers['upload-expires']).toBeDefined()
    const status = await head(url)
    expect(status.headers['upload-defer-length']).toBe('1')
    expect(status.headers['upload-expires']).toBeDefined()
  })
})

describe('410 before the sweep', () => {
  it('answers 410 to HEAD and PATCH past the expiry although nothing removed the upload yet', async () => {
    const server = await startServer({
      expireAfterMs: 250,
      cleanupOnStart: false,
      cleanupIntervalMs: HOUR,
    })
    const { url, id } = await createUpload(server.endpoint, 100)
    expect((await patch(url, 0, bytes(10))).status).toBe(204)
    await age(path.join(server.directory, id), 400) // idle for 400 ms
    expect((await head(url)).status).toBe(410)
    expect((await patch(url, 10, bytes(10))).status).toBe(410)
    expect(await exists(path.join(server.directory, id))).toBe(true) // no sweep ran
    const report = await server.app.tusCleanup.run()
    expect(report).toMatchObject({ removed: 1, errors: 0 })
    expect([404, 410]).toContain((await head(url)).status)
    expect([404, 410]).toContain((await patch(url, 10, bytes(10))).status)
  })

  it('expires a deferred-length upload like any unfinished one', async () => {
    const server = await startServer({
      expireAfterMs: 250,
      cleanupOnStart: false,
      cleanupIntervalMs: HOUR,
    })
    const { url, id } = await createUpload(server.endpoint, 'deferred')
    expect((await patch(url, 0, bytes(10))).status).toBe(204)
    await age(path.join(server.directory, id), 400) // idle for 400 ms
    expect((await head(url)).status).toBe(410)
    expect((await server.app.tusCleanup.run()).removed).toBe(1)
  })
})

describe('finished uploads', () => {
  it('survive many sweeps past their expiry and are still served', async () => {
    const server = await startServer({ expireAfterMs: 100, cleanupIntervalMs: 20 })
    const data = bytes(50_000)
    // The bytes go with the creation: no pause between requests for the 100 ms period to pass
    // in on a loaded machine.
    const url = await tusUpload(server.endpoint, data, { uploadDataDuringCreation: true })
    const empty = await createUpload(server.endpoint, 0)
    const id = url.slice(url.lastIndexOf('/') + 1)
    // "However old": a year without activity, through every sweep that follows.
    await age(path.join(server.directory, id), YEAR)
    await age(path.join(server.directory, `${id}.json`), YEAR)
    await age(path.join(server.directory, empty.id), YEAR)
    const sweeps = () => server.logs.filter((r) => 'scanned' in r).length
    const sweepsBefore = sweeps()
    await waitFor(() => sweeps() - sweepsBefore > 10, 5000, 'eleven sweeps')
    expect(sweeps() - sweepsBefore).toBeGreaterThan(10)
    expect((await server.app.tusCleanup.run()).removed).toBe(0)

    const status = await head(url)
    expect(status.status).toBe(200)
    expect(status.headers['upload-offset']).toBe(String(data.length))
    expect(status.headers['upload-expires']).toBeUndefined()
    expect((await head(empty.url)).status).toBe(200)
    const download = await fetch(url)
    expect(download.status).toBe(200)
    expect(sha256Of(Buffer.from(await download.arrayBuffer()))).toBe(sha256Of(data))
  })
})

describe('dry run', () => {
  it('reports what would be removed, with the ids, and removes nothing', async () => {
    const server = await startServer({ expireAfterMs: HOUR, cleanupOnStart: false })
    const stale = await createUpload(server.endpoint, 100)
    const fresh = await createUpload(server.endpoint, 100)
    await age(path.join(server.directory, stale.id), 2 * HOUR)
    const dry = await server.app.tusCleanup.run({ dryRun: true })
    expect(dry).toMatchObject({ dryRun: true, removed: 1, ids: [stale.id] })
    expect(await listing(server.directory)).toHaveLength(4)
    expect(server.logs.some((r) => r.msg === 'dry run: would remove 1 expired uploads')).toBe(true)

    const real = await server.app.tusCleanup.run()
    expect(real).toMatchObject({ dryRun: false, removed: 1, ids: [stale.id] })
    expect((await listing(server.directory)).sort()).toEqual([fresh.id, `${fresh.id}.json`].sort())
  })
})

describe('restart', () => {
  it('keeps an upload and its expiry across a restart, and the upload resumes', async () => {
    const directory = await tempDir()
    const data = bytes(200_000)
    const first = await startServer({ directory, expireAfterMs: HOUR })
    const { url, id } = await createUpload(first.endpoint, data.length)
    const half = await patch(url, 0, data.subarray(0, 100_000))
    expect(half.status).toBe(204)
    const expiryBefore = expiresMs(half.headers)
    // The restart gives the upload its downtime back, a few ms, which moves Upload-Expires into
    // the next second when its last activity was late in one: make it the start of its second.
    const dataFile = path.join(directory, id)
    const { atime, mtimeMs } = await fs.stat(dataFile)
    await fs.utimes(dataFile, atime, new Date(Math.floor(mtimeMs / 1000) * 1000))
    expect(expiresMs((await head(url)).headers)).toBe(expiryBefore)
    await first.app.close()

    const second = await startServer({ directory, expireAfterMs: HOUR })
    const newUrl = `${second.endpoint}/${id}`
    const status = await head(newUrl)
    expect(status.status).toBe(200)
    expect(status.headers['upload-offset']).toBe('100000')
    expect(expiresMs(status.headers)).toBe(expiryBefore)

    await new Promise<void>((resolve, reject) => {
      const upload = new tus.Upload(data, {
        uploadUrl: newUrl,
        chunkSize: 50_000,
        retryDelays: [],
        onSuccess: () => resolve(),
        onError: reject,
      })
      upload.start()
    })
    expect(await sha256(path.join(directory, id))).toBe(sha256Of(data))
  })

  describe('across a restart', () => {
    it('counts activity before the downtime later by its length, and during it as at its end', () => {
      const downtime = { fromMs: 10_000, toMs: 13_000 }
      expect(lastActivityMs(4_000, downtime)).toBe(7_000)
      expect(lastActivityMs(11_000, downtime)).toBe(13_000) // a PATCH that ended while closing
      expect(lastActivityMs(15_000, downtime)).toBe(15_000)
      expect(lastActivityMs(4_000)).toBe(4_000)
    })

    const settings = { expireAfterMs: 600, cleanupOnStart: false, cleanupIntervalMs: HOUR }

    it('gives idle uploads back the time the server was down', async () => {
      const directory = await tempDir()
      const first = await startServer({ directory, ...settings })
      const { id } = await createUpload(first.endpoint, 100)
      await first.app.close()
      // A downtime of 800 ms (longer than expireAfterMs) without waiting for it: the recorded
      // close and the upload's last activity before it are moved 800 ms into the past.
      await closedEarlier(directory, 800)
      await earlier(path.join(directory, id), 800)
      await earlier(path.join(directory, `${id}.json`), 800)
      const second = await startServer({ directory, ...settings })
      const url = `${second.endpoint}/${id}`
      const alive = await head(url)
      expect(alive.status).toBe(200)
      expect(second.logs.some((r) => typeof r.downtimeMs === 'number' && r.downtimeMs >= 800)).toBe(
        true,
      )
      // The clock still runs once the server is back: 900 ms more without activity.
      await earlier(path.join(directory, id), 900)
      expect((await head(url)).status).toBe(410)
    })

    it('does not revive an upload that had expired before the close', async () => {
      const directory = await tempDir()
      const first = await startServer({ directory, ...settings })
      const { id } = await createUpload(first.endpoint, 100)
      await age(path.join(directory, id), 5000)
      await first.app.close()
      await closedEarlier(directory, 300) // 300 ms down
      const second = await startServer({ directory, ...settings })
      expect((await head(`${second.endpoint}/${id}`)).status).toBe(410)
      expect(await second.app.tusCleanup.run()).toMatchObject({ removed: 1 })
    })

    it('gives nothing back for an unreadable close record, and removes it', async () => {
      const directory = await tempDir()
      const first = await startServer({ directory, ...settings })
      const { id } = await createUpload(first.endpoint, 100)
      await first.app.close()
      const marker = path.join(directory, '.fastify-tus-closed')
      await fs.writeFile(marker, '{"closedAt": "yesterday"}')
      await earlier(path.join(directory, id), 800) // 800 ms down, no activity since
      const second = await startServer({ directory, ...settings })
      expect((await head(`${second.endpoint}/${id}`)).status).toBe(410)
      // Serving removes the marker in the background (the listen does not wait for it).
      await waitFor(async () => !(await exists(marker)), 5000, 'the unreadable marker removed')
    })

    it('gives nothing back after a crash (no close recorded)', async () => {
      const directory = await tempDir()
      const first = await startServer({ directory, ...settings })
      const { id } = await createUpload(first.endpoint, 100)
      await first.app.close()
      // A process killed does not run its onClose hook: no marker.
      await fs.rm(path.join(directory, '.fastify-tus-closed'))
      await earlier(path.join(directory, id), 800) // 800 ms down, no activity since
      const second = await startServer({ directory, ...settings })
      expect((await head(`${second.endpoint}/${id}`)).status).toBe(410)
    })
  })
})

describe('requests for other paths', () => {
  it('does not add Upload-Expires to OPTIONS or error answers', async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    expect((await request(server.endpoint, 'OPTIONS')).headers['upload-expires']).toBeUndefined()
    const missing = await request(`${server.endpoint}/${'f'.repeat(32)}`, 'HEAD', TUS)
    expect(missing.status).toBe(404)
    expect(missing.headers['upload-expires']).toBeUndefined()
  })
})

describe('one read per HEAD', () => {
  it('a HEAD answers Upload-Expires and Upload-Metadata from the read tus made, once; other answers read afresh', async () => {
    const directory = await tempDir()
    const store = await ExpiringFileStore.open({ directory, expireAfterMs: 60_000 })
    const id = 'a'.repeat(32)
    await fs.writeFile(path.join(directory, id), 'abc')
    // `raw_metadata`: the Upload-Metadata header as the client sent it, kept for HEAD.
    const record = {
      id,
      size: 10,
      offset: 0,
      metadata: { name: 'old' },
      raw_metadata: 'name b2xk',
      creation_date: new Date().toISOString(),
    }
    await fs.writeFile(path.join(directory, `${id}.json`), JSON.stringify(record))
    await age(path.join(directory, id), 10_000)

    await store.getUpload(id) // what tus' HEAD handler does first
    // The upload changes on disk between that read and the answer.
    await fs.writeFile(
      path.join(directory, `${id}.json`),
      JSON.stringify({ ...record, metadata: { name: 'new' }, raw_metadata: 'name bmV3' }),
    )
    await fs.appendFile(path.join(directory, id), 'd')

    const fromRead = await store.describe(id, { afterRead: true })
    expect(fromRead?.rawMetadata).toBe('name b2xk') // "old": what the HEAD's offset was read with
    expect(fromRead?.expiresAt?.getTime()).toBeLessThan(Date.now() + 55_000)
    // Taken once: the next answer reads the upload as it is now.
    const again = await store.describe(id, { afterRead: true })
    expect(again?.rawMetadata).toBe('name bmV3')
    expect(again?.expiresAt?.getTime()).toBeGreaterThan(Date.now() + 55_000)
    await store.getUpload(id)
    // A PATCH or a POST answer (not afterRead) always reads afresh.
    expect((await store.describe(id))?.rawMetadata).toBe('name bmV3')
  })
})

describe('a record that marks bytes unverified (a checksummed body a crash cut short)', () => {
  /** An upload of `size` bytes holding `onDisk`, its record marked unverified from `from`. */
  async function marked(directory: string, size: number, onDisk: string, from: number) {
    const id = 'b'.repeat(32)
    await fs.writeFile(path.join(directory, id), onDisk)
    const record = { id, size, offset: 0, metadata: {}, creation_date: new Date().toISOString() }
    await fs.writeFile(
      path.join(directory, `${id}.json`),
      JSON.stringify({ ...record, unverified_from: from }),
    )
    const recordOf = async () =>
      JSON.parse(await fs.readFile(path.join(directory, `${id}.json`), 'utf8'))
    return { id, data: path.join(directory, id), recordOf }
  }

  it('without the upload lock: the bytes past the mark do not count and stay; the upload is unfinished and expires', async () => {
    const directory = await tempDir()
    const store = await ExpiringFileStore.open({ directory, expireAfterMs: HOUR })
    const { id, data, recordOf } = await marked(directory, 5, 'abcde', 3)
    expect((await store.getUpload(id)).offset).toBe(3)
    expect((await fs.stat(data)).size).toBe(5)
    expect(await recordOf()).toHaveProperty('unverified_from', 3)
    expect((await store.describe(id))?.expiresAt).toBeInstanceOf(Date)
  })

  it('under the upload lock: the read rolls the bytes past the mark back and clears the mark', async () => {
    const directory = await tempDir()
    const store = await ExpiringFileStore.open({
      directory,
      expireAfterMs: HOUR,
      holdsLock: () => true,
    })
    const { id, data, recordOf } = await marked(directory, 5, 'abcde', 3)
    expect((await store.getUpload(id)).offset).toBe(3)
    expect(await fs.readFile(data, 'utf8')).toBe('abc')
    expect(await recordOf()).not.toHaveProperty('unverified_from')
  })

  it('under the upload lock: a mark with no byte past it is cleared, and the upload is finished', async () => {
    const directory = await tempDir()
    const store = await ExpiringFileStore.open({
      directory,
      expireAfterMs: HOUR,
      holdsLock: () => true,
    })
    const { id, data, recordOf } = await marked(directory, 3, 'abc', 3)
    expect((await store.getUpload(id)).offset).toBe(3)
    expect(await fs.readFile(data, 'utf8')).toBe('abc')
    expect(await recordOf()).not.toHaveProperty('unverified_from')
    expect((await store.describe(id))?.expiresAt).toBeUndefined()
  })
})
