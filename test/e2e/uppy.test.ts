/**
 * The Uppy Dashboard with @uppy/tus (the `uppy` package's browser bundle, served from
 * node_modules: the browser reaches no network) in Debian's Chromium, on another origin than the
 * tus server, uploading with a bearer token through the app's auth hook and the README's owner
 * check: the file lands byte for byte, and Uppy reports it complete.
 */
import path from 'node:path'
import type { FastifyInstance } from 'fastify'
import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { bearer, bearerAuth, ownerCheck } from '../auth-app.js'
import { pattern, sha256Of } from '../helpers/data.js'
import { sha256 } from '../helpers/fs.js'
import { request } from '../helpers/http.js'
import { startServer } from '../helpers/server.js'
import { TUS } from '../helpers/tus-client.js'
import { launchChromium, servePage } from './chromium.js'

let browser: Browser
beforeAll(async () => {
  browser = await launchChromium()
})
afterAll(async () => {
  await browser?.close()
})

const UPPY_DIST = path.resolve('node_modules/uppy/dist')
const PAGE = `<!doctype html>
<title>Uppy</title>
<link rel="stylesheet" href="/uppy.min.css">
<div id="dashboard"></div>
<script type="module">
  import { Dashboard, Tus, Uppy } from '/uppy.min.mjs'
  globalThis.uppyModules = { Dashboard, Tus, Uppy }
</script>`

interface UppyResult {
  successful: Array<{ name: string; uploadURL: string | undefined; progress: number }>
  failed: number
}

describe('Uppy (Dashboard and @uppy/tus) on another origin', () => {
  it('uploads a file of a few MiB with a bearer token, byte for byte, and reports it complete', async () => {
    const pageUrl = await servePage(PAGE, [
      {
        path: '/uppy.min.mjs',
        file: path.join(UPPY_DIST, 'uppy.min.mjs'),
        type: 'text/javascript',
      },
      { path: '/uppy.min.css', file: path.join(UPPY_DIST, 'uppy.min.css'), type: 'text/css' },
    ])
    let app: FastifyInstance | undefined
    const server = await startServer(
      {
        tus: {
          allowedOrigins: [new URL(pageUrl).origin],
          ...ownerCheck(() => app as FastifyInstance),
        },
      },
      {
        before: (a) => {
          app = a
          bearerAuth(a)
        },
      },
    )
    const size = 3 * 1024 * 1024 + 17
    const page = await browser.newPage()
    try {
      await page.goto(pageUrl)
      await page.waitForFunction(() => 'uppyModules' in globalThis)
      const result = await page.evaluate(
        async ({ endpoint, size }) => {
          // biome-ignore lint/suspicious/noExplicitAny: the page's module exports
          const { Dashboard, Tus, Uppy } = (globalThis as any).uppyModules
          const bytes = new Uint8Array(size)
          for (let i = 0; i < size; i++) bytes[i] = (i * 31 + 11) % 256
          const uppy = new Uppy().use(Dashboard, { inline: true, target: '#dashboard' }).use(Tus, {
            endpoint,
            chunkSize: 1024 * 1024,
            retryDelays: [],
            headers: { Authorization: 'Bearer good' },
          })
          // biome-ignore lint/suspicious/noExplicitAny: Uppy's result of an upload
          const complete = new Promise<any>((resolve) => uppy.on('complete', resolve))
          uppy.addFile({
            name: 'uppy.bin',
            type: 'application/octet-stream',
            data: new Blob([bytes], { type: 'application/octet-stream' }),
          })
          uppy.upload()
          const done = await complete
          return {
            // biome-ignore lint/suspicious/noExplicitAny: Uppy's file objects
            successful: done.successful.map((file: any) => ({
              name: file.name,
              uploadURL: file.uploadURL ?? file.response?.uploadURL,
              progress: file.progress.percentage,
            })),
            failed: done.failed.length,
          }
        },
        { endpoint: server.endpoint, size },
      )
      const uploaded = (result as UppyResult).successful
      expect(result.failed).toBe(0)
      expect(uploaded).toHaveLength(1)
      expect(uploaded[0]).toMatchObject({ name: 'uppy.bin', progress: 100 })
      // The Dashboard tells the user, too.
      await expect
        .poll(() => page.locator('.uppy-Dashboard .uppy-StatusBar').textContent())
        .toContain('Complete')

      const url = String(uploaded[0]?.uploadURL)
      const id = url.slice(url.lastIndexOf('/') + 1)
      expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(pattern(size, 11)))
      // Uppy's metadata as sent, with the owner the server added; nobody else may look.
      const status = await request(url, 'HEAD', { ...TUS, ...bearer('good') })
      expect(status.headers['upload-metadata']).toContain(
        `filename ${Buffer.from('uppy.bin').toString('base64')}`,
      )
      expect(status.headers['upload-metadata']).toMatch(
        new RegExp(`,owner ${Buffer.from('good').toString('base64')}$`),
      )
      expect((await request(url, 'HEAD', { ...TUS, ...bearer('alice') })).status).toBe(403)
    } finally {
      await page.close()
    }
  })
})
