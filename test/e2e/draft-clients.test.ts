/**
 * tus-js-client 4.x in Node speaking the IETF resumable uploads draft to the plugin:
 * `protocol: 'ietf-draft-03'` (interop 5) and `'ietf-draft-05'` (interop 6). Uploads of every
 * size arrive byte-identical, an interrupted one resumes from a fresh client given its URL, and an
 * abandoned one is swept.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import * as tus from 'tus-js-client'
import { describe, expect, it } from 'vitest'
import { pattern, sha256Of } from '../helpers/data.js'
import { exists } from '../helpers/fs.js'
import { request } from '../helpers/http.js'
import { startServer } from '../helpers/server.js'
import { tusUpload } from '../helpers/tus-client.js'
import { sleep } from '../helpers/wait.js'

const MiB = 1024 * 1024

const PROTOCOLS = [
  ['ietf-draft-03', 5],
  ['ietf-draft-05', 6],
] as const

const idOf = (url: string) => url.slice(url.lastIndexOf('/') + 1)

/** Options with `protocol`, which tus-js-client 4.3's type declarations do not list yet. */
function speaking(protocol: string, options: Partial<tus.UploadOptions> = {}) {
  return { ...options, protocol } as Partial<tus.UploadOptions>
}

/** `n` repeatable bytes, made without helpers/data.ts' array (64 MiB of numbers is too much). */
function bytes(n: number, seed: number): Buffer {
  const data = Buffer.allocUnsafe(n)
  for (let i = 0; i < n; i++) data[i] = (i * 31 + seed + (i >> 16)) & 0xff
  return data
}

/** Starts an upload and aborts it once `atLeast` bytes are acknowledged; resolves to its URL. */
function interruptedUpload(
  endpoint: string,
  data: Buffer,
  options: Partial<tus.UploadOptions>,
  atLeast: number,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      endpoint,
      retryDelays: [],
      ...options,
      onChunkComplete: (_chunk, accepted) => {
        if (accepted < atLeast) return
        upload.abort().then(() => resolve(upload.url as string), reject)
      },
      onSuccess: () => reject(new Error('the upload finished before it was interrupted')),
      onError: reject,
    })
    upload.start()
  })
}

describe.each(PROTOCOLS)('tus-js-client with protocol %s (interop %i)', (protocol, version) => {
  it.each([
    ['0 B', 0, 64 * 1024],
    ['1 B', 1, 64 * 1024],
    ['3 MiB + 7 B', 3 * MiB + 7, 1 * MiB],
    ['64 MiB', 64 * MiB, 16 * MiB],
  ])(
    'uploads %s byte-identical',
    async (_name, size, chunkSize) => {
      const finished: number[] = []
      const server = await startServer({
        tus: {
          onUploadFinish: async (_req, upload) => {
            finished.push(upload.size ?? -1)
            return {}
          },
        },
      })
      const data = bytes(size, size % 251)
      const url = await tusUpload(server.endpoint, data, speaking(protocol, { chunkSize }))
      const stored = await fs.readFile(path.join(server.directory, idOf(url)))
      expect(stored.length).toBe(size)
      expect(sha256Of(stored)).toBe(sha256Of(data))
      expect(finished).toEqual([size])
      const offset = await request(url, 'HEAD', { 'Upload-Draft-Interop-Version': version })
      expect(offset.headers['upload-complete']).toBe('?1')
    },
    60_000,
  )

  it('resumes an interrupted upload from a fresh client given its URL', async () => {
    const server = await startServer()
    const data = pattern(3 * MiB + 7, 17)
    const options = speaking(protocol, { chunkSize: 512 * 1024 })
    const url = await interruptedUpload(server.endpoint, data, options, 1 * MiB)
    const offset = await request(url, 'HEAD', { 'Upload-Draft-Interop-Version': version })
    const stored = Number(offset.headers['upload-offset'])
    expect(stored).toBeGreaterThanOrEqual(1 * MiB)
    expect(stored).toBeLessThan(data.length)
    expect(offset.headers['upload-complete']).toBe('?0')

    // A fresh client: no fingerprint store, only the URL.
    const firstOffsets: number[] = []
    const resumed = await tusUpload(server.endpoint, data, {
      ...options,
      uploadUrl: url,
      onChunkComplete: (chunk, accepted) => firstOffsets.push(accepted - chunk),
    })
    expect(resumed).toBe(url)
    expect(firstOffsets[0]).toBe(stored)
    const file = await fs.readFile(path.join(server.directory, idOf(url)))
    expect(sha256Of(file)).toBe(sha256Of(data))
  }, 60_000)

  it('leaves an abandoned upload to the sweep, and keeps a finished one', async () => {
    const server = await startServer({
      expireAfterMs: 400,
      cleanupIntervalMs: 60_000,
      cleanupOnStart: false,
    })
    const options = speaking(protocol, { chunkSize: 64 * 1024 })
    const abandoned = await interruptedUpload(server.endpoint, pattern(256 * 1024), options, 1)
    const done = await tusUpload(server.endpoint, pattern(1000), speaking(protocol))
    await sleep(600)
    const report = await server.app.tusCleanup.run()
    expect(report.removed).toBe(1)
    expect(await exists(path.join(server.directory, idOf(abandoned)))).toBe(false)
    expect(await exists(path.join(server.directory, idOf(done)))).toBe(true)
    const gone = await request(abandoned, 'HEAD', { 'Upload-Draft-Interop-Version': version })
    expect(gone.status).toBe(404)
  }, 30_000)
})
