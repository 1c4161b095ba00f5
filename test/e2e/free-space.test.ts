/**
 * The free-space floor (`minFreeBytes`): creations, declarations and PATCH bodies that would
 * cross it answer 507 (bytes before kept, resumable), and running low starts an emergency sweep.
 * On a real filesystem of a known size: a small tmpfs, mounted for each test (root only: CI runs
 * as root; elsewhere these tests are skipped and say why); how often the filesystem is asked, on
 * any filesystem.
 */
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { Registry } from 'prom-client'
import { describe, expect, it, onTestFinished, vi } from 'vitest'
import { randomId, sha256Of } from '../helpers/data.js'
import { listing, pair, sha256, writeSession } from '../helpers/fs.js'
import { request } from '../helpers/http.js'
import { emergencySweepRecord, startServer } from '../helpers/server.js'
import { createUpload, head, patch, TUS } from '../helpers/tus-client.js'
import { sleep } from '../helpers/wait.js'

const MiB = 1024 * 1024
const HOUR = 3_600_000
/** statfs answers are cached this long by the store (free-space.ts). */
const CACHE_MS = 250
const isRoot = process.getuid?.() === 0

/** A tmpfs of `mib` MiB, unmounted after the test; resolves to its mount point. */
async function smallDisk(mib: number): Promise<string> {
  const mountPoint = await fs.mkdtemp(path.join(os.tmpdir(), 'fastify-tus-tmpfs-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${mib}m`, 'tmpfs', mountPoint])
  onTestFinished(async () => {
    // Lazily: the app on it closes after this; the tmpfs goes once nothing uses it.
    execFileSync('umount', ['-l', mountPoint])
    await fs.rmdir(mountPoint)
  })
  return mountPoint
}

/**
 * A PATCH of all of `data` that space stops: `507` (its body matching `reason`) with the new
 * offset, the bytes before it on disk and in HEAD; once `filler` is removed, the rest of it
 * finishes the upload whole.
 */
async function cutThenResumed(
  { url, file, data, filler }: { url: string; file: string; data: Buffer; filler: string },
  reason: RegExp,
): Promise<void> {
  const cut = await patch(url, 0, data)
  expect(cut.status, cut.body).toBe(507)
  expect(cut.body).toMatch(reason)
  const offset = Number(cut.headers['upload-offset'])
  expect(offset).toBeGreaterThan(0)
  expect(offset).toBeLessThan(data.length)
  expect(await sha256(file)).toBe(sha256Of(data.subarray(0, offset)))
  expect((await head(url)).headers['upload-offset']).toBe(String(offset))

  await fs.rm(filler)
  await sleep(CACHE_MS + 50)
  const rest = await patch(url, offset, data.subarray(offset))
  expect(rest.status, rest.body).toBe(204)
  expect(await sha256(file)).toBe(sha256Of(data))
}

describe('the free-space floor, on any filesystem', () => {
  it('asks the filesystem (statfs) a few times per second at most, not for every chunk of a body', async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    // A spy that counts the store's real calls (fs/promises' statfs, called through).
    const statfs = vi.spyOn(fs, 'statfs')
    onTestFinished(() => statfs.mockRestore())
    const data = randomBytes(16 * MiB)
    const { url } = await createUpload(server.endpoint, data.length)
    const started = performance.now()
    const chunk = 256 * 1024
    for (let offset = 0; offset < data.length; offset += chunk) {
      const res = await patch(url, offset, data.subarray(offset, offset + chunk))
      expect(res.status).toBe(204)
    }
    const seconds = (performance.now() - started) / 1000
    // 64 PATCHes of 256 KiB (and far more socket chunks): one statfs per 250 ms at most, plus one.
    expect(statfs.mock.calls.length).toBeLessThanOrEqual(Math.ceil(seconds / 0.25) + 1)
    expect(statfs.mock.calls.length).toBeLessThan(64)
    expect(statfs.mock.calls.length).toBeGreaterThan(0)
  })
})

describe.skipIf(!isRoot)('the free-space floor (tmpfs: needs root)', () => {
  it('a creation whose length would cross the floor answers 507 with a reason and creates nothing', async () => {
    const disk = await smallDisk(16)
    const directory = path.join(disk, 'uploads')
    const server = await startServer({ directory, minFreeBytes: 4 * MiB })
    // Something else holds 6 MiB of the filesystem: 6 MiB are left above the floor.
    await fs.writeFile(path.join(disk, 'filler'), Buffer.alloc(6 * MiB, 1))
    const refused = await request(server.endpoint, 'POST', {
      ...TUS,
      'Upload-Length': String(8 * MiB),
    })
    expect(refused.status).toBe(507)
    expect(refused.body).toMatch(
      new RegExp(
        `^Insufficient Storage: this upload needs ${8 * MiB} bytes, \\d+ are free and the server keeps ${4 * MiB} free`,
      ),
    )
    expect(await listing(directory)).toEqual([])
    // What fits above the floor is created as usual.
    expect((await createUpload(server.endpoint, 5 * MiB)).response.status).toBe(201)
  })

  it('a length the filesystem could never hold answers 413, as over maxSize: a retry cannot help', async () => {
    const disk = await smallDisk(16)
    const directory = path.join(disk, 'uploads')
    const server = await startServer({ directory, minFreeBytes: 4 * MiB })
    const refused = await request(server.endpoint, 'POST', {
      ...TUS,
      'Upload-Length': String(2 ** 50), // 1 PiB, as the public compliance suite sends
    })
    expect(refused.status).toBe(413)
    expect(refused.body).toMatch(
      new RegExp(
        `^Request Entity Too Large: this upload needs ${2 ** 50} bytes; the store's filesystem holds ${16 * MiB}`,
      ),
    )
    expect(await listing(directory)).toEqual([])
  })

  it('a late Upload-Length the filesystem could never hold answers 413, counting the bytes already written', async () => {
    const disk = await smallDisk(16)
    const server = await startServer({ directory: path.join(disk, 'u'), minFreeBytes: 4 * MiB })
    const { url } = await createUpload(server.endpoint, 'deferred')
    expect((await patch(url, 0, Buffer.from('x'))).status).toBe(204)
    // 12 MiB may ever be taken above the floor: the rest fits, the whole upload does not.
    const refused = await patch(url, 1, Buffer.alloc(0), { 'Upload-Length': String(12 * MiB + 1) })
    expect(refused.status).toBe(413)
    expect(refused.body).toMatch(/^Request Entity Too Large: this upload needs 12582913 bytes/)
    expect((await head(url)).headers['upload-length']).toBeUndefined()
  })

  it('a deferred length is checked when it is declared', async () => {
    const disk = await smallDisk(16)
    const server = await startServer({ directory: path.join(disk, 'u'), minFreeBytes: 4 * MiB })
    const { url } = await createUpload(server.endpoint, 'deferred')
    await fs.writeFile(path.join(disk, 'filler'), Buffer.alloc(6 * MiB, 1))
    await sleep(CACHE_MS + 50)
    const tooMuch = await patch(url, 0, Buffer.from('abc'), { 'Upload-Length': String(8 * MiB) })
    expect(tooMuch.status).toBe(507)
    expect((await head(url)).headers['upload-offset']).toBe('0')
    const fits = await patch(url, 0, Buffer.from('abc'), { 'Upload-Length': String(MiB) })
    expect(fits.status).toBe(204)
    expect((await head(url)).headers['upload-length']).toBe(String(MiB))
  })

  it('a PATCH that would cross the floor stops at it: bytes before kept, 507 with the new offset, and the upload resumes once space is freed', async () => {
    const disk = await smallDisk(16)
    const directory = path.join(disk, 'uploads')
    const server = await startServer({ directory, minFreeBytes: 4 * MiB })
    const data = randomBytes(10 * MiB)
    const { url, id } = await createUpload(server.endpoint, data.length)
    // Something else takes space on the same filesystem after the creation.
    const filler = path.join(disk, 'filler')
    await fs.writeFile(filler, Buffer.alloc(6 * MiB, 1))
    await sleep(CACHE_MS + 50)
    await cutThenResumed({ url, file: path.join(directory, id), data, filler }, /^Insufficient/)
  })

  it('concurrent finals and a PATCH never cross the floor together: writes under way claim their bytes; the rest answer 507 and leave nothing half-made', async () => {
    const disk = await smallDisk(16)
    const directory = path.join(disk, 'uploads')
    const floor = 2 * MiB
    const server = await startServer({ directory, minFreeBytes: floor, expireAfterMs: HOUR })
    const parts = [randomBytes(3 * MiB), randomBytes(3 * MiB), randomBytes(3 * MiB)]
    const partials = []
    for (const part of parts) {
      const created = await createUpload(server.endpoint, part.length, {
        'Upload-Concat': 'partial',
      })
      expect((await patch(created.url, 0, part)).status).toBe(204)
      partials.push(created)
    }
    const plain = await createUpload(server.endpoint, MiB)
    const room = (await fs.statfs(disk)).bavail * (await fs.statfs(disk)).bsize - floor
    // Each final fits above the floor alone, even beside the PATCH; the three together do not.
    expect(room).toBeGreaterThan(3 * MiB + MiB)
    expect(room).toBeLessThan(2 * 3 * MiB)
    await sleep(CACHE_MS + 50)

    let lowest = Number.POSITIVE_INFINITY
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        const stats = await fs.statfs(disk)
        lowest = Math.min(lowest, stats.bavail * stats.bsize)
      }
    })()
    const answers = await Promise.all([
      ...partials.map(({ url }) =>
        request(server.endpoint, 'POST', { ...TUS, 'Upload-Concat': `final;${url}` }),
      ),
      patch(plain.url, 0, randomBytes(MiB)),
    ])
    sampling = false
    await sampler

    const statuses = answers.map((a) => a.status)
    expect(statuses.filter((s) => s === 201).length).toBeGreaterThanOrEqual(1)
    expect(statuses.filter((s) => s === 507).length).toBeGreaterThanOrEqual(1)
    expect(
      statuses.every((s) => [201, 204, 507].includes(s)),
      String(statuses),
    ).toBe(true)
    // Records (a page each) are not claimed: the bytes of data are.
    expect(lowest).toBeGreaterThanOrEqual(floor - 64 * 1024)
    // Every data file has its record: a refused final made nothing, its partial is still whole.
    const files = await listing(directory)
    for (const file of files.filter((f) => !f.endsWith('.json'))) {
      expect(files).toContain(`${file}.json`)
    }
    for (const [i, answer] of answers.slice(0, 3).entries()) {
      const id = partials[i]?.id as string
      if (answer.status === 507)
        expect(await sha256(path.join(directory, id))).toBe(sha256Of(parts[i] as Buffer))
    }
  })

  it('the disk itself running full (another process filling it, no floor) answers 507 to a PATCH, bytes kept, and the upload resumes', async () => {
    const disk = await smallDisk(16)
    const directory = path.join(disk, 'uploads')
    const server = await startServer({ directory, minFreeBytes: 0 })
    const data = randomBytes(10 * MiB)
    const { url, id } = await createUpload(server.endpoint, data.length)
    const filler = path.join(disk, 'filler')
    await fs.writeFile(filler, Buffer.alloc(10 * MiB, 1))
    const ENOSPC = /^Insufficient Storage: the store's disk has no room left \(ENOSPC\)/
    await cutThenResumed({ url, file: path.join(directory, id), data, filler }, ENOSPC)
  })

  it('a full disk answers 507 to a creation and to an assembly, and leaves nothing behind', async () => {
    const disk = await smallDisk(16)
    const directory = path.join(disk, 'uploads')
    const server = await startServer({ directory, minFreeBytes: 0, expireAfterMs: HOUR })
    const part = randomBytes(3 * MiB)
    const partial = await createUpload(server.endpoint, part.length, { 'Upload-Concat': 'partial' })
    expect((await patch(partial.url, 0, part)).status).toBe(204)
    // Another process takes all but 1 MiB: the final's 3 MiB cannot be copied.
    const free = (await fs.statfs(disk)).bavail * (await fs.statfs(disk)).bsize
    const filler = path.join(disk, 'filler')
    await fs.writeFile(filler, Buffer.alloc(free - MiB, 1))
    const final = await request(server.endpoint, 'POST', {
      ...TUS,
      'Upload-Concat': `final;${partial.url}`,
    })
    expect(final.status, final.body).toBe(507)
    expect(final.body).toMatch(/no room left \(ENOSPC\)/)
    expect(await listing(directory)).toEqual(pair(partial.id))

    // Then all of it: not even a record fits.
    await fs.appendFile(filler, Buffer.alloc(MiB, 1)).catch(() => {})
    const created = await request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': '1' })
    expect(created.status, created.body).toBe(507)
    expect(await listing(directory)).toEqual(pair(partial.id))

    await fs.rm(filler)
    const again = await request(server.endpoint, 'POST', {
      ...TUS,
      'Upload-Concat': `final;${partial.url}`,
    })
    expect(again.status, again.body).toBe(201)
  })

  it('running low starts an emergency sweep that removes an expired upload; the retry succeeds; logged and counted', async () => {
    const disk = await smallDisk(16)
    const directory = path.join(disk, 'uploads')
    const registry = new Registry()
    const server = await startServer({
      directory,
      minFreeBytes: 4 * MiB,
      expireAfterMs: HOUR,
      cleanupOnStart: false,
      metrics: { registry },
    })
    // An abandoned upload holds 8 MiB: 12 MiB above the floor become 4.
    const abandoned = randomId()
    await writeSession(directory, abandoned, { size: 10 * MiB, bytes: 8 * MiB, ageMs: 2 * HOUR })
    await sleep(CACHE_MS + 50)

    const refused = await request(server.endpoint, 'POST', {
      ...TUS,
      'Upload-Length': String(6 * MiB),
    })
    expect(refused.status).toBe(507)
    const sweep = await emergencySweepRecord(server.logs)
    expect(sweep).toMatchObject({ removed: 1, emergency: true })
    const warning = server.logs.find((r) => /emergency sweep/.test(String(r.msg)))
    expect(warning).toMatchObject({ level: 40, minFreeBytes: 4 * MiB, neededBytes: 6 * MiB })
    expect(await listing(directory)).toEqual([])

    await sleep(CACHE_MS + 50)
    expect((await createUpload(server.endpoint, 6 * MiB)).response.status).toBe(201)
    const scrape = await registry.metrics()
    expect(scrape).toMatch(/^tus_emergency_sweeps_total\{endpoint="\/files"\} 1$/m)
    expect(scrape).toMatch(/^tus_store_free_bytes\{endpoint="\/files"\} [1-9]\d*$/m)
  })

  it('minFreeBytes 0 turns the floor off; the default keeps the smaller of 1 GiB and 5% of the filesystem', async () => {
    const off = await smallDisk(16)
    const unguarded = await startServer({ directory: path.join(off, 'u'), minFreeBytes: 0 })
    expect((await createUpload(unguarded.endpoint, 13 * MiB)).response.status).toBe(201)

    const small = await smallDisk(16)
    const guarded = await startServer({ directory: path.join(small, 'u') })
    const filler = path.join(small, 'filler')
    await fs.writeFile(filler, Buffer.alloc(2 * MiB, 1))
    // 5% of 16 MiB: 838,860 bytes kept free.
    const refused = await request(guarded.endpoint, 'POST', {
      ...TUS,
      'Upload-Length': String(14 * MiB),
    })
    expect(refused.status).toBe(507)
    expect(refused.body).toMatch(/keeps 838860 free/)
    await fs.rm(filler)
    await sleep(CACHE_MS + 50)
    expect((await createUpload(guarded.endpoint, 15 * MiB)).response.status).toBe(201)
  })
})

describe.runIf(!isRoot)('the free-space floor without root', () => {
  it.skip('needs a tmpfs of a known size, which only root can mount: run as root (as CI does)', () => {})
})
