/**
 * Parallel uploads at full size and through failures: tus-js-client's `parallelUploads: 4` with
 * 64 MiB, an interrupted parallel upload resumed from its URL storage, an abandoned one removed
 * whole by the sweep, and a server killed (SIGKILL) in the middle of an assembly.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'
import * as tus from 'tus-js-client'
import { describe, expect, it, onTestFinished } from 'vitest'
import {
  age,
  createUpload,
  head,
  listing,
  listingBecomes,
  pair,
  patch,
  request,
  sha256,
  sha256Of,
  startServer,
  TUS,
  tempDir,
  tusUpload,
  waitFor,
} from './helpers.js'

const HOUR = 3_600_000
const MiB = 1024 * 1024

/** tus-js-client's Node build exports FileUrlStorage; its type declarations do not. */
const { FileUrlStorage } = tus as unknown as {
  FileUrlStorage: new (file: string) => NonNullable<tus.UploadOptions['urlStorage']>
}

/** `n` random bytes: quick to make at tens of MiB, and no two parts alike. */
function bytes(n: number, _seed: number): Buffer {
  return randomBytes(n)
}

function idOf(url: string): string {
  return url.slice(url.lastIndexOf('/') + 1)
}

/** Starts a parallel upload and aborts it once `atBytes` have been sent; resolves when stopped. */
function interrupted(
  endpoint: string,
  data: Buffer,
  atBytes: number,
  options: Partial<tus.UploadOptions>,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let stopping = false
    const upload = new tus.Upload(data, {
      endpoint,
      parallelUploads: 4,
      chunkSize: 256 * 1024,
      retryDelays: [],
      ...options,
      onProgress: (sent) => {
        if (sent >= atBytes && !stopping) {
          stopping = true
          upload.abort().then(resolve, reject)
        }
      },
      onSuccess: () => reject(new Error('finished before the abort')),
      onError: reject,
    })
    upload.start()
  })
}

describe('parallel uploads at full size', () => {
  it('delivers 64 MiB byte-identical with parallelUploads: 4', async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    const data = bytes(64 * MiB, 11)
    const url = await tusUpload(server.endpoint, data, { parallelUploads: 4, chunkSize: 8 * MiB })
    expect(await sha256(path.join(server.directory, idOf(url)))).toBe(sha256Of(data))
    expect(await listingBecomes(server.directory, pair(idOf(url)))).toEqual(pair(idOf(url)))
  })

  it('resumes an interrupted parallel upload from its URL storage and finishes it', async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    const data = bytes(8 * MiB, 5)
    const storage = new FileUrlStorage(path.join(await tempDir(), 'urls.json'))
    const resumable = { urlStorage: storage, fingerprint: async () => 'parallel-resume' }
    await interrupted(server.endpoint, data, 3 * MiB, resumable)
    // Four partials with part of their bytes, no final yet.
    const partials = (await listing(server.directory)).filter((f) => !f.endsWith('.json'))
    expect(partials).toHaveLength(4)

    const held = await Promise.all(
      partials.map(async (id) =>
        Number((await head(`${server.endpoint}/${id}`)).headers['upload-offset']),
      ),
    )
    const creations: string[] = []
    const previous = await new tus.Upload(data, {
      endpoint: server.endpoint,
      ...resumable,
    }).findPreviousUploads()
    expect(previous).toHaveLength(1)
    const url = await new Promise<string>((resolve, reject) => {
      const upload = new tus.Upload(data, {
        endpoint: server.endpoint,
        parallelUploads: 4,
        chunkSize: 256 * 1024,
        retryDelays: [],
        ...resumable,
        onBeforeRequest: (req) => {
          if (req.getMethod() === 'POST') creations.push(String(req.getHeader('Upload-Concat')))
        },
        onSuccess: () => resolve(upload.url as string),
        onError: reject,
      })
      upload.resumeFromPreviousUpload(previous[0] as tus.PreviousUpload)
      upload.start()
    })
    // The partials held bytes, and it went on with them: no partial was created again.
    expect(held.reduce((a, b) => a + b, 0)).toBeGreaterThan(MiB)
    expect(creations).toHaveLength(1)
    expect(creations[0]).toMatch(/^final;/)
    expect(await sha256(path.join(server.directory, idOf(url)))).toBe(sha256Of(data))
    expect(await listingBecomes(server.directory, pair(idOf(url)))).toEqual(pair(idOf(url)))
  })

  it('removes every partial of an abandoned parallel upload once its period has passed', async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    await interrupted(server.endpoint, bytes(4 * MiB, 2), MiB, {})
    const files = await listing(server.directory)
    const ids = files.filter((f) => !f.endsWith('.json'))
    expect(ids).toHaveLength(4)
    // The PATCHes the abort cut end on the server too (a HEAD waits for each one's lock).
    for (const id of ids) expect((await head(`${server.endpoint}/${id}`)).status).toBe(200)
    // Still within the period: kept.
    expect((await server.app.tusCleanup.run()).removed).toBe(0)
    for (const id of ids) await age(path.join(server.directory, id), 2 * HOUR)
    const report = await server.app.tusCleanup.run()
    expect(report, JSON.stringify(report)).toMatchObject({ removed: 4, partials: 4, orphans: 0 })
    expect(report.bytesFreed).toBeGreaterThanOrEqual(MiB)
    expect(await listing(server.directory)).toEqual([])
  })
})

const SERVER = path.resolve('dist/demo/server.js')

/** The built demo server on `directory`; resolves once it listens. */
async function startDemo(directory: string): Promise<{ child: ChildProcess; endpoint: string }> {
  const child = spawn(process.execPath, [SERVER], {
    env: { PATH: process.env.PATH, PORT: '0', UPLOAD_DIR: directory, EXPIRE_AFTER_MS: '3600000' },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  onTestFinished(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  let out = ''
  child.stdout?.on('data', (chunk) => {
    out += chunk
  })
  const match = await waitFor(
    () => /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(out),
    15_000,
    'the demo server to listen',
  )
  return { child, endpoint: `${match[1]}/files` }
}

describe('a crash in the middle of an assembly', () => {
  it('leaves no final upload, keeps the partials, and the final sent again is whole', {
    timeout: 120_000,
  }, async () => {
    const dir = await tempDir()
    const first = await startDemo(dir)
    const parts = [bytes(48 * MiB, 1), bytes(48 * MiB, 2), bytes(48 * MiB, 3)]
    const urls: string[] = []
    for (const part of parts) {
      const { url } = await createUpload(first.endpoint, part.length, {
        'Upload-Concat': 'partial',
      })
      expect((await patch(url, 0, part)).status).toBe(204)
      urls.push(url)
    }
    const header = { ...TUS, 'Upload-Concat': `final;${urls.join(' ')}` }
    const answer = request(first.endpoint, 'POST', header).catch(() => undefined)
    // The assembly is under way once its temporary file exists: the process dies right there.
    await waitFor(
      async () => (await fs.readdir(dir)).some((name) => name.startsWith('.fastify-tus-tmp.')),
      10_000,
      'the assembly to start',
    )
    first.child.kill('SIGKILL')
    await answer

    // No record of a final upload; only the partials and the temporary file.
    const names = await fs.readdir(dir)
    const records = names.filter((n) => n.endsWith('.json'))
    expect(records.sort()).toEqual(urls.map((u) => `${idOf(u)}.json`).sort())
    expect(names.filter((n) => n.startsWith('.fastify-tus-tmp.'))).toHaveLength(1)

    const second = await startDemo(dir)
    for (const url of urls) {
      const res = await head(`${second.endpoint}/${idOf(url)}`)
      expect(res.headers['upload-offset']).toBe(String(48 * MiB))
    }
    const again = await request(second.endpoint, 'POST', {
      ...TUS,
      'Upload-Concat': `final;${urls.map((u) => `${second.endpoint}/${idOf(u)}`).join(' ')}`,
    })
    expect(again.status, again.body).toBe(201)
    const id = idOf(String(again.headers.location))
    expect(await sha256(path.join(dir, id))).toBe(sha256Of(Buffer.concat(parts)))
  })
})
