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
import {
  createUpload,
  emergencySweepRecord,
  head,
  listing,
  patch,
  randomId,
  request,
  sha256,
  sha256Of,
  sleep,
  startServer,
  TUS,
  writeSession,
} from './helpers.js'

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

    const cut = await patch(url, 0, data)
    expect(cut.status).toBe(507)
    const offset = Number(cut.headers['upload-offset'])
    expect(offset).toBeGreaterThan(0)
    expect(offset).toBeLessThanOrEqual(6 * MiB)
    expect((await fs.stat(path.join(directory, id))).size).toBe(offset)
    expect((await head(url)).headers['upload-offset']).toBe(String(offset))

    await fs.rm(filler)
    await sleep(CACHE_MS + 50)
    const rest = await patch(url, offset, data.subarray(offset))
    expect(rest.status, rest.body).toBe(204)
    expect(await sha256(path.join(directory, id))).toBe(sha256Of(data))
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
