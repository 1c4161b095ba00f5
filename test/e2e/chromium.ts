/**
 * Debian's Chromium for the browser tests, driven by playwright-core (`npx playwright install`
 * does not work here). If it cannot start, the error says so: browser tests fail, never skip.
 */
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import Fastify from 'fastify'
import { type Browser, chromium, type Page } from 'playwright-core'
import { onTestFinished } from 'vitest'

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
// Without the background-networking flags Chromium keeps calling out to a network it cannot reach.
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

export async function launchChromium(): Promise<Browser> {
  try {
    return await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
  } catch (error) {
    throw new Error(
      `Chromium did not start from ${CHROMIUM} (.ci/run installs Debian's chromium): ${(error as Error).message}`,
    )
  }
}

/** A file a page origin serves: its URL path, where it is on disk, its content type. */
export interface PageFile {
  path: string
  file: string
  type: string
}

/**
 * A page on its own origin (another port: another origin than the tus server's), serving `html`
 * at `/` and `files` from disk (node_modules: the browser reaches no network). Resolves to its
 * URL; closed after the test.
 */
export async function servePage(html: string, files: PageFile[]): Promise<string> {
  const app = Fastify()
  onTestFinished(() => app.close())
  for (const { path, file, type } of files) {
    const body = await readFile(file)
    app.get(path, async (_req, reply) => reply.type(type).send(body))
  }
  app.get('/', async (_req, reply) => reply.type('text/html').send(html))
  return app.listen({ host: '127.0.0.1', port: 0 })
}

/** tus-js-client's browser build, for `servePage`. */
export const TUS_JS: PageFile = {
  path: '/tus.min.js',
  file: path.resolve('node_modules/tus-js-client/dist/tus.min.js'),
  type: 'text/javascript',
}

/** A page that loads tus-js-client (`TUS_JS`) and nothing else: the tests drive it. */
export const TUS_PAGE = '<!doctype html><title>uploader</title><script src="/tus.min.js"></script>'

/** Holds the page's upstream to `bytesPerSecond` (Chromium's network emulation). */
export async function throttleUploads(page: Page, bytesPerSecond: number): Promise<void> {
  const cdp = await page.context().newCDPSession(page)
  await cdp.send('Network.enable')
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: 0,
    downloadThroughput: -1,
    uploadThroughput: bytesPerSecond,
  })
}
