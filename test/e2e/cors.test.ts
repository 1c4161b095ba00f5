/**
 * CORS as a browser enforces it: Debian's Chromium on two page origins uploads with tus-js-client
 * to a server on a third. The origin the app's CORS allows uploads; the one it refuses fails on
 * the preflight (a CORS error, status 0), its POST is never sent, and the server holds nothing
 * of it. The app's CORS is @fastify/cors (registered before the plugin, or after it) or
 * `tus.allowedOrigins`. And a header the app adds to a tus answer is readable by the page only
 * once listed in `tus.exposedHeaders`.
 */
import path from 'node:path'
import cors from '@fastify/cors'
import type { FastifyInstance } from 'fastify'
import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { FastifyTusOptions } from '../../src/index.js'
import { pattern, sha256Of } from '../helpers/data.js'
import { listing, sha256 } from '../helpers/fs.js'
import { startServer, type TestServer } from '../helpers/server.js'
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
  /** The HTTP status tus-js-client saw on the failing request (0: no answer it could read). */
  status?: number
  /** What Chromium logged on the page's console (its CORS errors). */
  console: string[]
}

/** In the page at `pageUrl`: upload `size` pattern bytes (seed 9) to `endpoint`. */
async function uploadFrom(pageUrl: string, endpoint: string, size: number): Promise<Outcome> {
  const page = await browser.newPage()
  const console: string[] = []
  page.on('console', (message) => console.push(message.text()))
  try {
    await page.goto(pageUrl)
    const outcome = await page.evaluate(
      ({ endpoint, size }) =>
        new Promise<Omit<Outcome, 'console'>>((resolve) => {
          const bytes = new Uint8Array(size)
          for (let i = 0; i < size; i++) bytes[i] = (i * 31 + 9) % 256
          // biome-ignore lint/suspicious/noExplicitAny: the page's global from tus.min.js
          const tus = (globalThis as any).tus
          const upload = new tus.Upload(new Blob([bytes]), {
            endpoint,
            chunkSize: 64 * 1024,
            retryDelays: [],
            metadata: { filename: 'cors.bin' },
            onSuccess: () => resolve({ url: upload.url }),
            // biome-ignore lint/suspicious/noExplicitAny: tus-js-client's DetailedError
            onError: (error: any) =>
              resolve({ status: error.originalResponse ? error.originalResponse.getStatus() : 0 }),
          })
          upload.start()
        }),
      { endpoint, size },
    )
    return { ...outcome, console }
  } finally {
    await page.close()
  }
}

/** Records `METHOD origin` of every request that reaches the app. */
function recordRequests(app: FastifyInstance, seen: string[]): void {
  app.addHook('onRequest', async (request) => {
    seen.push(`${request.method} ${request.headers.origin ?? '-'}`)
  })
}

type Setup = (allowed: string, seen: string[]) => Promise<TestServer>

const setups: Record<string, Setup> = {
  '@fastify/cors registered before the plugin': (allowed, seen) =>
    startServer(
      {},
      {
        before: async (app) => {
          recordRequests(app, seen)
          await app.register(cors, { origin: [allowed] })
        },
      },
    ),
  '@fastify/cors registered after the plugin': async (allowed, seen) => {
    const server = await startServer(
      {},
      { listen: false, before: (app) => recordRequests(app, seen) },
    )
    await server.app.register(cors, { origin: (origin, done) => done(null, origin === allowed) })
    const origin = await server.app.listen({ host: '127.0.0.1', port: 0 })
    return { ...server, origin, endpoint: `${origin}/files` }
  },
  'tus.allowedOrigins': (allowed, seen) =>
    startServer({ tus: { allowedOrigins: [allowed] } } satisfies FastifyTusOptions, {
      before: (app) => recordRequests(app, seen),
    }),
}

describe('Chromium on an origin the app’s CORS allows, and on one it refuses', () => {
  for (const [name, setup] of Object.entries(setups)) {
    it(`with ${name}: the allowed page uploads, the refused one fails its preflight and creates nothing`, async () => {
      const allowedPage = await servePage(PAGE, [TUS_JS])
      const refusedPage = await servePage(PAGE, [TUS_JS])
      const allowed = new URL(allowedPage).origin
      const refused = new URL(refusedPage).origin
      const seen: string[] = []
      const server = await setup(allowed, seen)

      const failed = await uploadFrom(refusedPage, server.endpoint, 1000)
      expect(failed.url).toBeUndefined()
      expect(failed.status).toBe(0)
      expect(failed.console.join('\n')).toMatch(/blocked by CORS policy.*preflight/)
      // Only the preflight reached the server: the POST was never sent.
      expect(seen).toEqual([`OPTIONS ${refused}`])
      expect(await listing(server.directory)).toEqual([])

      const size = 150 * 1024
      const done = await uploadFrom(allowedPage, server.endpoint, size)
      expect(done.status).toBeUndefined()
      const id = String(done.url).slice(String(done.url).lastIndexOf('/') + 1)
      expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(pattern(size, 9)))
      expect(await listing(server.directory)).toEqual([id, `${id}.json`])
      expect(seen.filter((entry) => entry.startsWith('PATCH')).length).toBe(3)
    })
  }
})

/** In the page: upload 10 bytes and read `header` of the last PATCH's answer, as a script can. */
async function headerSeenByPage(pageUrl: string, endpoint: string, header: string) {
  const page = await browser.newPage()
  try {
    await page.goto(pageUrl)
    return await page.evaluate(
      ({ endpoint, header }) =>
        new Promise<string | null>((resolve, reject) => {
          // biome-ignore lint/suspicious/noExplicitAny: the page's global from tus.min.js
          const tus = (globalThis as any).tus
          let seen: string | null = null
          const upload = new tus.Upload(new Blob([new Uint8Array(10)]), {
            endpoint,
            retryDelays: [],
            // biome-ignore lint/suspicious/noExplicitAny: tus-js-client's HttpRequest and HttpResponse
            onAfterResponse: (req: any, res: any) => {
              if (req.getMethod() === 'PATCH') seen = res.getHeader(header) ?? null
            },
            onSuccess: () => resolve(seen),
            onError: reject,
          })
          upload.start()
        }),
      { endpoint, header },
    )
  } finally {
    await page.close()
  }
}

describe('a header the app sets in onUploadFinish', () => {
  it('is readable by the page once listed in tus.exposedHeaders, and only then', async () => {
    const page = await servePage(PAGE, [TUS_JS])
    const finished = async () => ({ headers: { 'X-File-Url': '/done/1' } })
    const hidden = await startServer({ tus: { onUploadFinish: finished } })
    const listed = await startServer({
      tus: { onUploadFinish: finished, exposedHeaders: ['X-File-Url'] },
    })
    expect(await headerSeenByPage(page, hidden.endpoint, 'X-File-Url')).toBeNull()
    expect(await headerSeenByPage(page, listed.endpoint, 'X-File-Url')).toBe('/done/1')
  })
})
