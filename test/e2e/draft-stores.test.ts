/**
 * The IETF resumable uploads draft beyond one process and the built-in store: a stock S3Store on
 * a real S3 API (radosgw, or `S3_ENDPOINT`), and two instances on one directory whose locks are in
 * Redis, where a reconnecting client's request on one instance ends the append still in flight on
 * the other.
 */
import fs from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import { Redis } from 'ioredis'
import type * as tus from 'tus-js-client'
import { afterEach, describe, expect, it } from 'vitest'
import { pattern, randomId, sha256Of } from '../helpers/data.js'
import { tempDir } from '../helpers/fs.js'
import { request } from '../helpers/http.js'
import { REDIS_URL } from '../helpers/redis.js'
import { readObject, s3Store, testBucket } from '../helpers/s3.js'
import { startServer } from '../helpers/server.js'
import { tusUpload } from '../helpers/tus-client.js'
import { waitFor } from '../helpers/wait.js'

const MiB = 1024 * 1024

/** Options with `protocol`, which tus-js-client 4.3's type declarations do not list yet. */
function speaking(protocol: string, options: Partial<tus.UploadOptions> = {}) {
  return { ...options, protocol } as Partial<tus.UploadOptions>
}

describe('S3Store on a real S3 API', () => {
  it.each([
    ['ietf-draft-03', 5],
    ['ietf-draft-05', 6],
  ] as const)(
    'takes a tus-js-client upload with protocol %s (interop %i) byte-identical',
    async (protocol, version) => {
      const { client, bucket } = await testBucket()
      const { endpoint } = await startServer({ datastore: s3Store(bucket), cleanupOnStart: false })
      const data = pattern(6 * MiB + 3, 7)
      const url = await tusUpload(endpoint, data, speaking(protocol, { chunkSize: 2 * MiB }))
      const id = url.slice(url.lastIndexOf('/') + 1)
      expect(sha256Of(await readObject(client, bucket, id))).toBe(sha256Of(data))
      const offset = await request(url, 'HEAD', { 'Upload-Draft-Interop-Version': version })
      expect(offset.status).toBe(204)
      expect(offset.headers['upload-complete']).toBe('?1')
      expect(offset.headers['upload-offset']).toBe(String(data.length))
    },
    60_000,
  )
})

describe('two instances with their locks in Redis', () => {
  const clients: Redis[] = []
  afterEach(async () => {
    for (const client of clients.splice(0)) await client.quit().catch(() => {})
  })

  it('ends an append in flight on one instance when the client reconnects to the other, which resumes from what was stored', async () => {
    const prefix = `test:${randomId()}:`
    const directory = await tempDir()
    const instance = async () => {
      const client = new Redis(REDIS_URL)
      clients.push(client)
      return startServer({
        directory,
        cleanupOnStart: false,
        redis: { client, prefix },
        tus: { lockDrainTimeout: 100 },
      })
    }
    const [first, second] = [await instance(), await instance()]
    const draft = { 'Upload-Draft-Interop-Version': 6 }
    const append = (offset: number) => ({
      ...draft,
      'Upload-Offset': offset,
      'Upload-Complete': '?1',
      'Content-Type': 'application/partial-upload',
    })
    const data = pattern(4000, 21)
    const created = await request(first.endpoint, 'POST', {
      ...draft,
      'Upload-Complete': '?0',
      'Upload-Length': data.length,
    })
    const id = String(created.headers.location).split('/').pop() as string
    const file = path.join(directory, id)

    // The old append on the first instance: 1500 bytes, then silence.
    const old = http.request(`${first.endpoint}/${id}`, {
      method: 'PATCH',
      agent: false,
      headers: { ...append(0), 'Content-Length': data.length },
    })
    old.on('error', () => {})
    const oldEnded = new Promise<void>((resolve) => {
      old.on('response', (res) => res.resume().on('end', resolve))
      old.on('close', resolve)
    })
    old.write(data.subarray(0, 1500))
    await waitFor(async () => (await fs.stat(file)).size === 1500, 5000, 'the first 1500 bytes')

    // The client reconnects to the second instance: its HEAD asks the holder to let go.
    const started = Date.now()
    const offset = await request(`${second.endpoint}/${id}`, 'HEAD', draft)
    expect(Date.now() - started).toBeLessThan(5000)
    expect(offset.headers['upload-offset']).toBe('1500')
    const rest = await request(
      `${second.endpoint}/${id}`,
      'PATCH',
      append(1500),
      data.subarray(1500),
    )
    expect(rest.status).toBe(201)
    expect(rest.headers['upload-complete']).toBe('?1')
    expect(sha256Of(await fs.readFile(file))).toBe(sha256Of(data))
    old.destroy()
    await oldEnded
  }, 30_000)
})
