/**
 * Long uploads against Fastify's and Node's timeouts, over real sockets: a PATCH that lasts
 * seconds, or pauses for one, is cut only by a request or connection timeout shorter than it,
 * and then resumes from the kept bytes. (e2e: each PATCH has to outlast a timeout.)
 */
import fs from 'node:fs/promises'
import type http from 'node:http'
import path from 'node:path'
import type { FastifyHttpOptions, FastifyInstance } from 'fastify'
import { describe, expect, it } from 'vitest'
import { startDemo } from '../../demo/app.js'
import { pattern as bytes, sha256Of } from '../helpers/data.js'
import { sha256, tempDir } from '../helpers/fs.js'
import type { RawResponse } from '../helpers/http.js'
import { startServer } from '../helpers/server.js'
import { createUpload, head, patch, slowPatch } from '../helpers/tus-client.js'

/** A slow PATCH that may be cut: its answer, or `undefined` when the connection was dropped. */
function slowPatchOrCut(...args: Parameters<typeof slowPatch>): Promise<RawResponse | undefined> {
  return slowPatch(...args).catch(() => undefined)
}

/** The upload goes on from the offset the server kept, to the end, with the right bytes. */
async function expectResumable(url: string, dataFile: string, data: Buffer): Promise<void> {
  const status = await head(url)
  expect(status.status).toBe(200)
  const offset = Number(status.headers['upload-offset'])
  expect((await fs.stat(dataFile)).size).toBe(offset)
  if (offset < data.length) {
    expect((await patch(url, offset, data.subarray(offset))).status).toBe(204)
  }
  expect(await sha256(dataFile)).toBe(sha256Of(data))
}

describe('faults', () => {
  describe("long uploads and Fastify's timeouts", () => {
    // A PATCH that lasts 2.5 s with data every 250 ms, and one that pauses 1.5 s mid-body.
    const STEADY = Array.from({ length: 10 }, (_, i) => bytes(1000, i))
    const PAUSING = [bytes(1000), bytes(1000, 1)]
    const steadyPatch = (url: string) => slowPatchOrCut(url, 0, STEADY, 250)
    const pausingPatch = (url: string) => slowPatchOrCut(url, 0, PAUSING, 1500)

    async function serverWith(fastify: FastifyHttpOptions<http.Server>) {
      const server = await startServer({}, { fastify })
      const upload = async (data: Buffer[]) => {
        const { url, id } = await createUpload(server.endpoint, data.length * 1000)
        return { url, dataFile: path.join(server.directory, id), data: Buffer.concat(data) }
      }
      return { server, upload }
    }

    it('the demo server sets no request or connection timeout; slow and pausing PATCHes complete', async () => {
      const uploadDir = await tempDir()
      const app: FastifyInstance = await startDemo({
        host: '127.0.0.1',
        port: 0,
        uploadDir,
        expireAfterMs: 600_000,
        cleanupIntervalMs: 600_000,
        logLevel: 'silent',
      })
      try {
        expect(app.server.requestTimeout).toBe(0)
        expect(app.server.timeout).toBe(0) // connectionTimeout
        const { port } = app.server.address() as { port: number }
        const endpoint = `http://127.0.0.1:${port}/files`
        const steady = await createUpload(endpoint, 10_000)
        const pausing = await createUpload(endpoint, 2000)
        const [a, b] = await Promise.all([steadyPatch(steady.url), pausingPatch(pausing.url)])
        expect(a?.status).toBe(204)
        expect(b?.status).toBe(204)
      } finally {
        await app.close()
      }
    })

    it('keep-alive, header and handler timeouts shorter than a PATCH do not cut it', async () => {
      const { upload } = await serverWith({
        requestTimeout: 0,
        connectionTimeout: 0,
        keepAliveTimeout: 500,
        handlerTimeout: 500,
        // Node checks the header and request timeouts on this interval (30 s by default).
        http: { headersTimeout: 500, connectionsCheckingInterval: 50 },
      })
      const steady = await upload(STEADY)
      const pausing = await upload(PAUSING)
      const [a, b] = await Promise.all([steadyPatch(steady.url), pausingPatch(pausing.url)])
      expect(a?.status).toBe(204)
      expect(b?.status).toBe(204)
      await expectResumable(steady.url, steady.dataFile, steady.data)
      await expectResumable(pausing.url, pausing.dataFile, pausing.data)
    })

    it('a requestTimeout shorter than a PATCH cuts it; the upload resumes from the kept bytes', async () => {
      const { upload } = await serverWith({
        requestTimeout: 1000,
        // Node cuts a request at the larger of the two, and looks every 30 s by default.
        http: { headersTimeout: 1000, connectionsCheckingInterval: 50 },
      })
      const steady = await upload(STEADY)
      const answer = await steadyPatch(steady.url)
      // 408, or a reset when the client was still writing.
      expect(answer === undefined || answer.status === 408).toBe(true)
      expect((await fs.stat(steady.dataFile)).size).toBeLessThan(steady.data.length)
      await expectResumable(steady.url, steady.dataFile, steady.data)
    })

    it('a connectionTimeout shorter than a pause cuts the PATCH; the upload resumes', async () => {
      const { upload } = await serverWith({ connectionTimeout: 1000 })
      const pausing = await upload(PAUSING)
      expect(await pausingPatch(pausing.url)).toBeUndefined()
      expect((await fs.stat(pausing.dataFile)).size).toBeLessThan(pausing.data.length)
      await expectResumable(pausing.url, pausing.dataFile, pausing.data)
    })
  })
})
