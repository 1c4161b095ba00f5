/**
 * A real browser (Debian's Chromium, driven by playwright-core) on another origin creates,
 * PATCHes, HEADs and DELETEs uploads with tus-js-client's browser build, with and without
 * @fastify/cors on the app. If Chromium cannot start, this fails with that message: it is never
 * skipped.
 */
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import cors from '@fastify/cors'
import Fastify from 'fastify'
import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { sha256Of } from '../helpers/data.js'
import { sha256 } from '../helpers/fs.js'
import { startServer } from '../helpers/server.js'
import { launchChromium } from './chromium.js'

let browser: Browser
beforeAll(async () => {
  browser = await launchChromium()
})
afterAll(async () => {
  await browser?.close()
})

/** A page on its own origin that loads tus-js-client's browser build from node_modules. */
async function pageOrigin(): Promise<string> {
  const app = Fastify()
  onTestFinished(() => app.close())
  const bundle = await readFile(path.resolve('node_modules/tus-js-client/dist/tus.min.js'))
  app.get('/tus.min.js', async (_req, reply) => reply.type('text/javascript').send(bundle))
  app.get('/', async (_req, reply) =>
    reply
      .type('text/html')
      .send('<!doctype html><title>uploader</title><script src="/tus.min.js"></script>'),
  )
  return app.listen({ host: '127.0.0.1', port: 0 })
}

interface BrowserRun {
  url: string
  offset: string | null
  length: string | null
}

/** In the page: upload `size` pattern bytes, read the offset with HEAD, then DELETE. */
async function uploadFromBrowser(
  pageUrl: string,
  endpoint: string,
  size: number,
): Promise<BrowserRun> {
  const page = await browser.newPage()
  try {
    await page.goto(pageUrl)
    return await page.evaluate(
      async ({ endpoint, size }) => {
        const bytes = new Uint8Array(size)
        for (let i = 0; i < size; i++) bytes[i] = (i * 31 + 7) % 256
        // biome-ignore lint/suspicious/noExplicitAny: the page's global from tus.min.js
        const tus = (globalThis as any).tus
        const url: string = await new Promise((resolve, reject) => {
          const upload = new tus.Upload(new Blob([bytes]), {
            endpoint,
            chunkSize: 256 * 1024,
            retryDelays: [],
            metadata: { filename: 'browser.bin' },
            onSuccess: () => resolve(upload.url),
            onError: reject,
          })
          upload.start()
        })
        const status = await fetch(url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } })
        // Readable only because the answer exposes them to the page's origin.
        return {
          url,
          offset: status.headers.get('Upload-Offset'),
          length: status.headers.get('Upload-Length'),
        }
      },
      { endpoint, size },
    )
  } finally {
    await page.close()
  }
}

async function deleteFromBrowser(pageUrl: string, url: string): Promise<number> {
  const page = await browser.newPage()
  try {
    await page.goto(pageUrl)
    return await page.evaluate(
      async (url) =>
        (await fetch(url, { method: 'DELETE', headers: { 'Tus-Resumable': '1.0.0' } })).status,
      url,
    )
  } finally {
    await page.close()
  }
}

function expectedBytes(size: number): Buffer {
  return Buffer.from(Array.from({ length: size }, (_, i) => (i * 31 + 7) % 256))
}

describe('a browser on another origin', () => {
  it('uploads in several PATCHes, reads the offset with HEAD and deletes', async () => {
    const server = await startServer()
    const page = await pageOrigin()
    const size = 700 * 1024
    const run = await uploadFromBrowser(page, server.endpoint, size)
    const id = run.url.slice(run.url.lastIndexOf('/') + 1)
    expect(run.offset).toBe(String(size))
    expect(run.length).toBe(String(size))
    expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(expectedBytes(size)))

    expect(await deleteFromBrowser(page, run.url)).toBe(204)
    await expect(readFile(path.join(server.directory, id))).rejects.toMatchObject({
      code: 'ENOENT',
    })
  })

  it('uploads when the app also registers @fastify/cors', async () => {
    const page = await pageOrigin()
    const pageOriginUrl = new URL(page).origin
    const server = await startServer(
      { tus: { allowedOrigins: [pageOriginUrl] } },
      {
        before: async (app) => {
          await app.register(cors, { origin: [pageOriginUrl] })
        },
      },
    )
    const size = 300 * 1024
    const run = await uploadFromBrowser(page, server.endpoint, size)
    const id = run.url.slice(run.url.lastIndexOf('/') + 1)
    expect(run.offset).toBe(String(size))
    expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(expectedBytes(size)))
    expect(await deleteFromBrowser(page, run.url)).toBe(204)
  })
})
