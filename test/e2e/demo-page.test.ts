/**
 * The demo page (`GET /` of the demo app) in a real browser (Debian's Chromium, driven by
 * playwright-core): a file picked on the page uploads with tus-js-client's browser build served
 * from node_modules, pauses and resumes, and lands byte for byte on the server; the sweep panel
 * shows the last sweep report. Ends with a screenshot in test-output/. If Chromium cannot
 * start, this fails with that message: it is never skipped.
 */
import fs from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { type DemoConfig, startDemo } from '../../demo/app.js'
import { pattern, randomId, sha256Of } from '../helpers/data.js'
import { sha256, tempDir, writeSession } from '../helpers/fs.js'
import { request } from '../helpers/http.js'
import { head } from '../helpers/tus-client.js'
import { sleep, waitFor } from '../helpers/wait.js'
import { launchChromium, throttleUploads } from './chromium.js'

const SCREENSHOT = path.resolve('test-output/demo-page.png')
const MiB = 1024 * 1024
const EXPIRE_AFTER_MS = 60_000

let browser: Browser
beforeAll(async () => {
  browser = await launchChromium()
})
afterAll(async () => {
  await browser?.close()
})

/** The demo app on a free port with a temp upload dir; no scheduled sweep but the one at start. */
async function demo(config: Partial<DemoConfig> = {}) {
  const uploadDir = await tempDir()
  const app = await startDemo({
    host: '127.0.0.1',
    port: 0,
    uploadDir,
    expireAfterMs: EXPIRE_AFTER_MS,
    cleanupIntervalMs: 600_000,
    logLevel: 'silent',
    ...config,
  })
  onTestFinished(() => app.close())
  const { port } = app.server.address() as AddressInfo
  return { app, uploadDir, origin: `http://127.0.0.1:${port}` }
}

/** Upload ids (data files) in the upload directory. */
async function uploadIds(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).filter((name) => /^[0-9a-f]{32}$/.test(name))
}

describe('the demo page', () => {
  it('serves the page, its scripts, tus-js-client and the sweep report, uncached', async () => {
    const { origin } = await demo()
    const expected: Array<[string, RegExp]> = [
      ['/', /^text\/html/],
      ['/app.js', /^text\/javascript/],
      ['/style.css', /^text\/css/],
      ['/tus.min.js', /^text\/javascript/],
      ['/api/sweep', /^application\/json/],
    ]
    for (const [url, type] of expected) {
      const res = await request(`${origin}${url}`, 'GET')
      expect(res.status, url).toBe(200)
      expect(res.headers['content-type'], url).toMatch(type)
      expect(res.headers['cache-control'], url).toBe('no-cache')
    }
    const bundle = await fs.readFile('node_modules/tus-js-client/dist/tus.min.js', 'utf8')
    expect((await request(`${origin}/tus.min.js`, 'GET')).body).toBe(bundle)
    const sweep = JSON.parse((await request(`${origin}/api/sweep`, 'GET')).body)
    expect(sweep).toMatchObject({ expireAfterMs: EXPIRE_AFTER_MS, cleanupIntervalMs: 600_000 })
    expect(sweep).toHaveProperty('last')
  })

  it('uploads a picked file, pauses and resumes it, and shows the last sweep', async () => {
    const { app, uploadDir, origin } = await demo()
    const size = 4 * MiB
    const data = pattern(size, 11)

    const page = await browser.newPage({ viewport: { width: 900, height: 900 } })
    onTestFinished(() => page.close())
    // Locators wait for elements: a missing one fails the test in seconds, with its name.
    page.setDefaultTimeout(5_000)
    // The page must work offline: every request it makes goes to the demo app.
    const elsewhere: string[] = []
    page.on('request', (req) => {
      if (new URL(req.url()).origin !== origin) elsewhere.push(req.url())
    })
    const pageErrors: string[] = []
    page.on('pageerror', (error) => pageErrors.push(error.message))
    // 1 MiB/s upstream: the upload takes seconds, so Pause lands in the middle of it.
    await throttleUploads(page, MiB)

    await page.goto(`${origin}/`)
    // tus 1.0 unless the page is told otherwise (the draft's uploads: draft-browser.test.ts).
    expect(await page.getByTestId('protocol').inputValue()).toBe('tus-v1')
    // From a file on disk: Chromium reads it itself (a buffer would cross the protocol slowly).
    const file = path.join(await tempDir(), 'demo.bin')
    await fs.writeFile(file, data)
    await page.getByTestId('file-input').setInputFiles(file)

    const row = page.getByTestId('upload')
    const progress = row.getByTestId('upload-progress')
    // <progress> reflects its value and max as attributes.
    const sent = async () => Number(await progress.getAttribute('value'))
    // Past the first 1 MiB chunk: the server holds part of the upload.
    await expect.poll(sent, { interval: 20, timeout: 10_000 }).toBeGreaterThan(1.2 * MiB)
    expect(await sent()).toBeLessThan(size)
    await row.getByTestId('upload-pause').click()
    await expect.poll(() => row.getAttribute('data-state')).toBe('paused')
    expect(await row.getByTestId('upload-status').textContent()).toBe('Paused')
    expect(await row.getByTestId('upload-protocol').textContent()).toBe('tus 1.0')

    const [id] = await uploadIds(uploadDir)
    expect(id).toBeDefined()
    const url = `${origin}/files/${id}`
    await sleep(100) // the aborted PATCH's last bytes reach the file
    const pausedAt = Number((await head(url)).headers['upload-offset'])
    const barAtPause = await sent()
    await sleep(400)
    expect(Number((await head(url)).headers['upload-offset'])).toBe(pausedAt)
    expect(await sent()).toBe(barAtPause)
    expect(pausedAt).toBeGreaterThanOrEqual(MiB)
    expect(pausedAt).toBeLessThan(size)

    await row.getByTestId('upload-resume').click()
    await expect.poll(() => row.getAttribute('data-state'), { timeout: 20_000 }).toBe('done')
    expect(await row.getByTestId('upload-status').textContent()).toBe('Done')
    expect(await sent()).toBe(size)

    // Resumed, not restarted: the link is the same upload, the only one on the server.
    const link = row.getByTestId('upload-url')
    expect(await link.isVisible()).toBe(true)
    expect(await link.getAttribute('href')).toBe(url)
    expect(await link.textContent()).toBe(url)
    expect(await uploadIds(uploadDir)).toEqual([id])
    expect(await sha256(path.join(uploadDir, id as string))).toBe(sha256Of(data))
    const status = await head(url)
    expect(status.headers['upload-offset']).toBe(String(size))
    expect(status.headers['upload-length']).toBe(String(size))

    // An expired, unfinished upload for the sweep to remove; the panel shows that report.
    await writeSession(uploadDir, randomId(), {
      size: 1000,
      bytes: 500,
      ageMs: 2 * EXPIRE_AFTER_MS,
    })
    const report = await app.tusCleanup.run()
    expect(report.removed).toBe(1)
    await page.getByTestId('sweep-refresh').click()
    const panel = page.getByTestId('sweep-report')
    await expect
      .poll(() => panel.getByTestId('sweep-started-at').textContent(), { timeout: 5_000 })
      .toBe(report.startedAt)
    expect(await panel.getByTestId('sweep-removed').textContent()).toBe('1')
    expect(await panel.getByTestId('sweep-scanned').textContent()).toBe(String(report.scanned))
    expect(await panel.getByTestId('sweep-errors').textContent()).toBe('0')
    expect(await panel.getByTestId('sweep-skipped-busy').textContent()).toBe('0')
    expect(await panel.getByTestId('sweep-duration').textContent()).toBe(`${report.durationMs} ms`)
    expect(await page.getByTestId('sweep-settings').textContent()).toContain('1 min')

    expect(elsewhere).toEqual([])
    expect(pageErrors).toEqual([])
    await fs.mkdir(path.dirname(SCREENSHOT), { recursive: true })
    await page.screenshot({ path: SCREENSHOT, fullPage: true })
    console.log(`demo page screenshot: ${SCREENSHOT}`)
  }, 60_000)

  it('uploads a file as 4 parallel parts when asked, pauses and resumes them, and joins them on the server', async () => {
    const { uploadDir, origin } = await demo()
    const size = 4 * MiB
    const data = pattern(size, 5)
    const page = await browser.newPage()
    onTestFinished(() => page.close())
    page.setDefaultTimeout(5_000)
    const pageErrors: string[] = []
    page.on('pageerror', (error) => pageErrors.push(error.message))
    await throttleUploads(page, MiB)
    await page.goto(`${origin}/`)
    await page.getByTestId('parallel-uploads').selectOption('4')
    const file = path.join(await tempDir(), 'parallel.bin')
    await fs.writeFile(file, data)
    await page.getByTestId('file-input').setInputFiles(file)

    const row = page.getByTestId('upload')
    const progress = row.getByTestId('upload-progress')
    const sent = async () => Number(await progress.getAttribute('value'))
    await expect.poll(sent, { interval: 20, timeout: 10_000 }).toBeGreaterThan(1.2 * MiB)
    await row.getByTestId('upload-pause').click()
    await expect.poll(() => row.getAttribute('data-state')).toBe('paused')

    // Four partial uploads on the server, each with part of the file, and no final yet.
    await sleep(100)
    const partials = await uploadIds(uploadDir)
    expect(partials).toHaveLength(4)
    let held = 0
    for (const id of partials) {
      const res = await head(`${origin}/files/${id}`)
      expect(res.headers['upload-concat']).toBe('partial')
      held += Number(res.headers['upload-offset'])
    }
    expect(held).toBeGreaterThan(0)
    expect(held).toBeLessThan(size)

    await row.getByTestId('upload-resume').click()
    await expect.poll(() => row.getAttribute('data-state'), { timeout: 30_000 }).toBe('done')
    expect(await sent()).toBe(size)
    // One upload left: the final, whole; its link is the final's URL. (The partials go right
    // after the final's answer.)
    const ids = await waitFor(
      async () => {
        const now = await uploadIds(uploadDir)
        return now.length === 1 ? now : undefined
      },
      5000,
      'one upload left',
    )
    const [id] = ids
    expect(partials).not.toContain(id)
    expect(await sha256(path.join(uploadDir, id as string))).toBe(sha256Of(data))
    const url = `${origin}/files/${id}`
    expect(await row.getByTestId('upload-url').getAttribute('href')).toBe(url)
    const status = await head(url)
    expect(status.headers['upload-concat']).toMatch(/^final;/)
    expect(status.headers['upload-offset']).toBe(String(size))
    expect(pageErrors).toEqual([])
  }, 60_000)

  it('says "No sweep yet." while no sweep has run (expiry off)', async () => {
    const { app, origin } = await demo({ expireAfterMs: 0 })
    const page = await browser.newPage()
    onTestFinished(() => page.close())
    page.setDefaultTimeout(5_000)
    await page.goto(`${origin}/`)
    await expect
      .poll(() => page.getByTestId('sweep-none').textContent(), { timeout: 5_000 })
      .toBe('No sweep yet.')
    expect(await page.getByTestId('sweep-settings').textContent()).toBe(
      'Expiry is off: nothing is swept.',
    )
    expect(app.tusCleanup.last).toBeUndefined()
  })
})
