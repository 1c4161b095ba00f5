/**
 * A real browser (Debian's Chromium) on another origin uploads with tus-js-client's browser build
 * and a bearer token, to a server whose app checks the token in an `onRequest` hook: the upload
 * goes through with the right token, and a wrong one reaches tus-js-client as a 401, not as a
 * network error (status 0).
 */
import path from 'node:path'
import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { bearerAuth } from '../auth-app.js'
import { pattern, sha256Of } from '../helpers/data.js'
import { listing, sha256 } from '../helpers/fs.js'
import { startServer } from '../helpers/server.js'
import { launchChromium, TUS_PAGE as PAGE, servePage, TUS_JS } from './chromium.js'

let browser: Browser
beforeAll(async () => {
  browser = await launchChromium()
})
afterAll(async () => {
  await browser?.close()
})

interface Outcome {
  url?: string
  /** The HTTP status tus-js-client saw on the failing request (0: a network error). */
  status?: number
  message?: string
}

/** In the page: upload `size` pattern bytes (seed 5) with `token`; what tus-js-client reports. */
async function uploadWithToken(
  pageUrl: string,
  endpoint: string,
  size: number,
  token: string,
): Promise<Outcome> {
  const page = await browser.newPage()
  try {
    await page.goto(pageUrl)
    return await page.evaluate(
      ({ endpoint, size, token }) =>
        new Promise<Outcome>((resolve) => {
          const bytes = new Uint8Array(size)
          for (let i = 0; i < size; i++) bytes[i] = (i * 31 + 5) % 256
          // biome-ignore lint/suspicious/noExplicitAny: the page's global from tus.min.js
          const tus = (globalThis as any).tus
          const upload = new tus.Upload(new Blob([bytes]), {
            endpoint,
            chunkSize: 256 * 1024,
            retryDelays: [],
            headers: { Authorization: `Bearer ${token}` },
            metadata: { filename: 'token.bin' },
            onSuccess: () => resolve({ url: upload.url }),
            // biome-ignore lint/suspicious/noExplicitAny: tus-js-client's DetailedError
            onError: (error: any) =>
              resolve({
                status: error.originalResponse ? error.originalResponse.getStatus() : 0,
                message: String(error.message),
              }),
          })
          upload.start()
        }),
      { endpoint, size, token },
    )
  } finally {
    await page.close()
  }
}

describe('a browser on another origin with a bearer token', () => {
  it('uploads in several PATCHes when the app’s auth hook accepts the token', async () => {
    const page = await servePage(PAGE, [TUS_JS])
    const server = await startServer(
      { tus: { allowedOrigins: [new URL(page).origin] } },
      { before: bearerAuth },
    )
    const size = 600 * 1024
    const outcome = await uploadWithToken(page, server.endpoint, size, 'good')
    expect(outcome.message).toBeUndefined()
    const id = String(outcome.url).slice(String(outcome.url).lastIndexOf('/') + 1)
    expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(pattern(size, 5)))
  })

  it('gets a clean 401 in onError, not a network error, when the token is wrong', async () => {
    const page = await servePage(PAGE, [TUS_JS])
    const server = await startServer(
      { tus: { allowedOrigins: [new URL(page).origin] } },
      { before: bearerAuth },
    )
    const outcome = await uploadWithToken(page, server.endpoint, 1024, 'wrong')
    expect(outcome.url).toBeUndefined()
    expect(outcome.status).toBe(401)
    expect(outcome.message).toContain('response code: 401')
    expect(await listing(server.directory)).toEqual([])
  })
})
