/**
 * Parallel uploads at full size and through failures: tus-js-client's `parallelUploads: 4` with
 * 64 MiB, an interrupted parallel upload resumed from its URL storage, an abandoned one removed
 * whole by the sweep, and a server killed (SIGKILL) in the middle of an assembly.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import * as tus from 'tus-js-client'
import { describe, expect, it, onTestFinished } from 'vitest'
import { sha256Of } from '../helpers/data.js'
import { age, exists, listing, listingBecomes, pair, sha256, tempDir } from '../helpers/fs.js'
import { request } from '../helpers/http.js'
import { closedByAll } from '../helpers/proc.js'
import { startServer } from '../helpers/server.js'
import { createUpload, head, patch, TUS, tusUpload } from '../helpers/tus-client.js'
import { sleep, waitFor } from '../helpers/wait.js'

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
    // Only the final's bytes are left (its partials' records stay a while, for a retried final).
    const files = await waitFor(async () => {
      const now = await listing(server.directory)
      return now.filter((f) => !f.endsWith('.json')).length === 1 ? now : undefined
    })
    expect(files.filter((f) => !f.endsWith('.json'))).toEqual([idOf(url)])
    expect(files.filter((f) => f.endsWith('.json'))).toHaveLength(5)
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
    // The final, and its partials' records (kept for a retried final creation).
    const kept = [...pair(idOf(url)), ...partials.map((id) => `${id}.json`)].sort()
    expect(await listingBecomes(server.directory, kept)).toEqual(kept)
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

describe('a client that goes away in the middle of an assembly', () => {
  it('learns the final from its retried creation: the build in progress, then the final built; one final, whole', {
    timeout: 120_000,
  }, async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    const part = bytes(16 * MiB, 4)
    const { url: partUrl } = await createUpload(server.endpoint, part.length, {
      'Upload-Concat': 'partial',
    })
    expect((await patch(partUrl, 0, part)).status).toBe(204)
    // One partial listed 24 times: a 384 MiB final, seconds of copying on this disk.
    const header = `final;${Array(24).fill(partUrl).join(' ')}`
    const target = new URL(server.endpoint)
    const socket = net.connect(Number(target.port), target.hostname)
    socket.on('error', () => {})
    socket.write(
      `POST ${target.pathname} HTTP/1.1\r\nHost: ${target.host}\r\nTus-Resumable: 1.0.0\r\n` +
        `Upload-Concat: ${header}\r\nContent-Length: 0\r\n\r\n`,
    )
    await waitFor(
      async () =>
        (await fs.readdir(server.directory)).some((n) => n.startsWith('.fastify-tus-tmp.')),
      10_000,
      'the assembly to start',
    )
    socket.destroy()

    // Sent again while the copy goes on: answered once it ends, with the same final.
    const retry = await request(server.endpoint, 'POST', { ...TUS, 'Upload-Concat': header })
    expect(retry.status, retry.body).toBe(201)
    const id = idOf(String(retry.headers.location))
    // And again once built: the same answer.
    const later = await request(server.endpoint, 'POST', { ...TUS, 'Upload-Concat': header })
    expect(idOf(String(later.headers.location))).toBe(id)
    const files = await waitFor(async () => {
      const now = await listing(server.directory)
      return now.filter((f) => !f.endsWith('.json')).length === 1 ? now : undefined
    })
    expect(files.filter((f) => !f.endsWith('.json'))).toEqual([id])
    expect(await sha256(path.join(server.directory, id))).toBe(
      sha256Of(Buffer.concat(Array(24).fill(part))),
    )
    const record = JSON.parse(await fs.readFile(path.join(server.directory, `${id}.json`), 'utf8'))
    expect(record.answer_pending).toBeUndefined()
  })
})

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

    // No record of a final upload; only the partials and the temporary file, which nothing
    // writes to any more: the copy died with the server.
    const names = await fs.readdir(dir)
    const records = names.filter((n) => n.endsWith('.json'))
    expect(records.sort()).toEqual(urls.map((u) => `${idOf(u)}.json`).sort())
    const temps = names.filter((n) => n.startsWith('.fastify-tus-tmp.'))
    expect(temps).toHaveLength(1)
    const temp = path.join(dir, temps[0] as string)
    // The copy dies with its server (the call it is in ends first): nothing holds the file open.
    await closedByAll(temp)
    const sizeAtKill = (await fs.stat(temp)).size
    await sleep(500)
    expect((await fs.stat(temp)).size).toBe(sizeAtKill)
    expect(sizeAtKill).toBeLessThan(3 * 48 * MiB)

    // The restart's first sweep removes the dead assembly's file at once, not after the period.
    const second = await startDemo(dir)
    expect(await waitFor(async () => !(await exists(temp)), 5000, 'the temporary file to go')).toBe(
      true,
    )
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
