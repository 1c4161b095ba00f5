/**
 * The demo page speaking the IETF resumable uploads draft (interop 5 and 6, tus-js-client's
 * `protocol` option, chosen in the page's select) to the built demo server, in Debian's Chromium:
 * uploads of every size arrive byte-identical, an upload cut by closing its page resumes from a
 * fresh page where the server stopped (tus 1.0 too: the resume is the page's own), and an
 * abandoned one is swept. The rest of tus 1.0 through the page is in demo-page.test.ts. If
 * Chromium cannot start, this fails with that message.
 */
import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'
import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { sha256Of } from '../helpers/data.js'
import { exists, sha256, tempDir } from '../helpers/fs.js'
import { request } from '../helpers/http.js'
import { startServerProcess } from '../helpers/process.js'
import { sleep, waitFor } from '../helpers/wait.js'
import { launchChromium, throttleUploads } from './chromium.js'

const SERVER = path.resolve('dist/demo/server.js')
const MiB = 1024 * 1024

/** A protocol of the page's select: its label there, the header each of its requests carries. */
interface Protocol {
  protocol: string
  label: string
  headers: Record<string, string>
  /** The other protocol's header, which none of its requests may carry. */
  not: string
}

const DRAFTS: Protocol[] = [
  {
    protocol: 'ietf-draft-03',
    label: 'IETF draft, interop 5',
    headers: { 'upload-draft-interop-version': '5' },
    not: 'tus-resumable',
  },
  {
    protocol: 'ietf-draft-05',
    label: 'IETF draft, interop 6',
    headers: { 'upload-draft-interop-version': '6' },
    not: 'tus-resumable',
  },
]
const TUS_V1: Protocol = {
  protocol: 'tus-v1',
  label: 'tus 1.0',
  headers: { 'tus-resumable': '1.0.0' },
  not: 'upload-draft-interop-version',
}

let browser: Browser
beforeAll(async () => {
  browser = await launchChromium()
})
afterAll(async () => {
  await browser?.close()
})

/** The built demo server on a free port and a temp upload directory, with `env` on top. */
async function demo(env: Record<string, string> = {}) {
  const uploadDir = await tempDir()
  const server = await startServerProcess('demo', SERVER, {
    PATH: process.env.PATH,
    PORT: '0',
    UPLOAD_DIR: uploadDir,
    LOG_LEVEL: 'info',
    ...env,
  })
  return { ...server, uploadDir }
}

/**
 * A page of the demo in a browser context of its own (its localStorage is the context's: a
 * second page of the same context sees what the first kept), with the protocol chosen.
 */
async function demoPage(
  origin: string,
  protocol: string,
  context?: Awaited<ReturnType<Browser['newContext']>>,
) {
  const ctx = context ?? (await browser.newContext())
  if (!context) onTestFinished(() => ctx.close())
  const page = await ctx.newPage()
  page.setDefaultTimeout(5_000)
  const pageErrors: string[] = []
  page.on('pageerror', (error) => pageErrors.push(error.message))
  // What the page sends to the tus endpoint, to check the protocol it speaks.
  // (Read as each is sent: a closed page answers no more questions about its requests.)
  const sent: Sent[] = []
  page.on('request', (req) => {
    if (!new URL(req.url()).pathname.startsWith('/files')) return
    sent.push({ method: req.method(), url: req.url(), headers: req.headers() })
  })
  await page.goto(`${origin}/`)
  if (!context) await page.getByTestId('protocol').selectOption(protocol)
  return { page, context: ctx, sent, pageErrors }
}

/** A request the page sent to the tus endpoint. */
interface Sent {
  method: string
  url: string
  headers: Record<string, string>
}

/** Every request to the endpoint spoke `spoken` only: its header, never the other one. */
function expectSpoken(sent: Sent[], spoken: Protocol): Sent[] {
  expect(sent.length).toBeGreaterThan(0)
  for (const { method, headers } of sent) {
    expect(headers, method).toMatchObject(spoken.headers)
    expect(headers[spoken.not], method).toBeUndefined()
  }
  return sent
}

/** Upload ids (data files) in the upload directory. */
async function uploadIds(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).filter((name) => /^[0-9a-f]{32}$/.test(name))
}

const idOf = (url: string) => url.slice(url.lastIndexOf('/') + 1)

/** The demo's `tus_bytes_received_total`: bytes its PATCHes stored (METRICS=1). */
async function bytesReceived(origin: string): Promise<number> {
  const { body } = await request(`${origin}/metrics`, 'GET')
  const line = /^tus_bytes_received_total(?:\{[^}]*\})? (\d+)$/m.exec(body)
  if (!line) throw new Error(`no tus_bytes_received_total in:\n${body}`)
  return Number(line[1])
}

/** The upload's offset once it holds still (an aborted PATCH's last bytes have landed). */
async function settledOffset(url: string, spoken: Protocol): Promise<number> {
  const offsetOf = async () =>
    Number((await request(url, 'HEAD', spoken.headers)).headers['upload-offset'])
  let last = await offsetOf()
  for (;;) {
    await sleep(300)
    const now = await offsetOf()
    if (now === last) return now
    last = now
  }
}

describe.each(DRAFTS.map((p) => [p.label, p] as const))('the demo page in %s', (_, spoken) => {
  it('uploads files of 0 B, 1 B, 3 MiB + 7 B and 64 MiB byte-identical, speaking the draft only', async () => {
    const { origin, uploadDir } = await demo()
    const dir = await tempDir()
    const files = [
      ['zero.bin', 0],
      ['one.bin', 1],
      ['odd.bin', 3 * MiB + 7],
      ['large.bin', 64 * MiB],
    ] as const
    const digests = new Map<string, string>()
    for (const [name, size] of files) {
      const data = randomBytes(size)
      digests.set(name, sha256Of(data))
      await fs.writeFile(path.join(dir, name), data)
    }
    const { page, sent, pageErrors } = await demoPage(origin, spoken.protocol)
    // Parallel parts are tus' concatenation, which the draft does not have.
    expect(await page.getByTestId('parallel-uploads').isDisabled()).toBe(true)
    // All four at once, from disk: Chromium reads them itself.
    await page.getByTestId('file-input').setInputFiles(files.map(([name]) => path.join(dir, name)))

    const rows = page.getByTestId('upload')
    await expect.poll(() => rows.count()).toBe(files.length)
    await expect
      .poll(() => rows.evaluateAll((all) => all.map((row) => row.getAttribute('data-state'))), {
        timeout: 45_000,
        interval: 200,
      })
      .toEqual(files.map(() => 'done'))

    for (const [name, size] of files) {
      const row = rows.filter({ hasText: name })
      expect(await row.getByTestId('upload-protocol').textContent()).toBe(spoken.label)
      const url = (await row.getByTestId('upload-url').getAttribute('href')) as string
      expect(url).toMatch(new RegExp(`^${origin}/files/[0-9a-f]{32}$`))
      const data = path.join(uploadDir, idOf(url))
      expect((await fs.stat(data)).size, name).toBe(size)
      expect(await sha256(data), name).toBe(digests.get(name))
      const status = await request(url, 'HEAD', spoken.headers)
      expect(status.headers['upload-complete'], name).toBe('?1')
      expect(status.headers['upload-offset'], name).toBe(String(size))
    }
    expect((await uploadIds(uploadDir)).length).toBe(files.length)
    const requests = expectSpoken(sent, spoken)
    expect(requests.filter((r) => r.method === 'POST')).toHaveLength(files.length)
    // 64 + 4 + 1 PATCHes of at most 1 MiB (the empty file has none).
    expect(requests.filter((r) => r.method === 'PATCH').length).toBeGreaterThanOrEqual(69)
    expect(pageErrors).toEqual([])
  }, 60_000)

  it('leaves an upload abandoned mid-way to the sweep once it has been idle past the expiry, and keeps a finished one', async () => {
    const EXPIRE_AFTER_MS = 1500
    const server = await demo({
      EXPIRE_AFTER_MS: String(EXPIRE_AFTER_MS),
      CLEANUP_INTERVAL_MS: '200',
    })
    const { origin, uploadDir } = server
    const dir = await tempDir()
    await fs.writeFile(path.join(dir, 'kept.bin'), randomBytes(1000))
    await fs.writeFile(path.join(dir, 'abandoned.bin'), randomBytes(4 * MiB))

    const { page, sent } = await demoPage(origin, spoken.protocol)
    await throttleUploads(page, MiB)
    await page.getByTestId('file-input').setInputFiles(path.join(dir, 'kept.bin'))
    const kept = page.getByTestId('upload').filter({ hasText: 'kept.bin' })
    await expect.poll(() => kept.getAttribute('data-state'), { timeout: 10_000 }).toBe('done')
    const keptId = idOf((await kept.getByTestId('upload-url').getAttribute('href')) as string)

    await page.getByTestId('file-input').setInputFiles(path.join(dir, 'abandoned.bin'))
    const progress = page
      .getByTestId('upload')
      .filter({ hasText: 'abandoned.bin' })
      .getByTestId('upload-progress')
    await expect
      .poll(async () => Number(await progress.getAttribute('value')), {
        interval: 20,
        timeout: 10_000,
      })
      .toBeGreaterThan(1.2 * MiB)
    // Written for over a second by then, with the sweep running every 200 ms: an active upload
    // is never swept.
    const abandonedId = (await uploadIds(uploadDir)).find((id) => id !== keptId) as string
    const data = path.join(uploadDir, abandonedId)
    expect(await exists(data)).toBe(true)
    await page.close()
    expectSpoken(sent, spoken)
    const url = `${origin}/files/${abandonedId}`
    await settledOffset(url, spoken)
    const lastWrite = (await fs.stat(data)).mtimeMs

    await waitFor(
      async () => !(await exists(data)) && !(await exists(`${data}.json`)),
      EXPIRE_AFTER_MS + 5000,
      'the abandoned upload to be swept',
    )
    // Not before it had been idle for the expiry.
    expect(Date.now() - lastWrite).toBeGreaterThanOrEqual(EXPIRE_AFTER_MS)
    // The sweep logs its report once it is done: one removal.
    const removal = (r: { msg: string }) => /^removed \d+ expired uploads$/.test(r.msg)
    await waitFor(() => server.records.some(removal), 2000, 'the sweep to log its removal')
    expect(server.records.filter(removal).map((r) => r.removed)).toEqual([1])
    const gone = await request(url, 'HEAD', spoken.headers)
    expect(gone.status).toBe(404)
    expect(await sha256(path.join(uploadDir, keptId))).toBe(
      sha256Of(await fs.readFile(path.join(dir, 'kept.bin'))),
    )
  }, 30_000)
})

/** The upload URLs the page keeps in localStorage (tus-js-client's keys: `tus::<fingerprint>::<n>`). */
const KEPT_URLS = "Object.keys(localStorage).filter((key) => key.startsWith('tus::'))"

/**
 * Starts uploading a file of 4 MiB + 3 B in `begun` at 1 MiB/s and closes the page past its first
 * MiB; then picks the same file on a fresh page of the same browser, in `then`, and checks that it
 * resumed where the server stopped: no creation, the first PATCH at the stored offset, only the
 * missing bytes stored (the demo's `tus_bytes_received_total`), one upload, byte-identical.
 */
async function cutAndResume(begun: Protocol, then: Protocol) {
  const { origin, uploadDir } = await demo({ METRICS: '1' })
  const size = 4 * MiB + 3
  const data = randomBytes(size)
  const file = path.join(await tempDir(), 'cut.bin')
  await fs.writeFile(file, data)

  const first = await demoPage(origin, begun.protocol)
  // 1 MiB/s upstream: the upload takes seconds, so the close lands in the middle of it.
  await throttleUploads(first.page, MiB)
  await first.page.getByTestId('file-input').setInputFiles(file)
  const progress = first.page.getByTestId('upload').getByTestId('upload-progress')
  // Past the first 1 MiB chunk: the server holds part of the upload.
  await expect
    .poll(async () => Number(await progress.getAttribute('value')), {
      interval: 20,
      timeout: 10_000,
    })
    .toBeGreaterThan(1.2 * MiB)
  await first.page.close()
  expectSpoken(first.sent, begun)

  const [id] = await uploadIds(uploadDir)
  expect(id).toBeDefined()
  const url = `${origin}/files/${id}`
  const stored = await settledOffset(url, begun)
  expect(stored).toBeGreaterThanOrEqual(MiB)
  expect(stored).toBeLessThan(size)
  const receivedBefore = await bytesReceived(origin)

  // A fresh page of the same browser (same localStorage), unthrottled: the same file again.
  const second = await demoPage(origin, then.protocol, first.context)
  expect(await second.page.getByTestId('protocol').inputValue()).toBe(begun.protocol)
  expect(await second.page.evaluate(KEPT_URLS)).toHaveLength(1)
  if (then !== begun) await second.page.getByTestId('protocol').selectOption(then.protocol)
  await second.page.getByTestId('file-input').setInputFiles(file)
  const row = second.page.getByTestId('upload')
  await expect.poll(() => row.getAttribute('data-state'), { timeout: 20_000 }).toBe('done')
  expect(await row.getAttribute('data-resumed')).toBe('true')
  expect(await row.getByTestId('upload-url').getAttribute('href')).toBe(url)

  // Resumed, not restarted: no creation, a HEAD for the offset, the first PATCH from there,
  // and the server stored only what it lacked.
  const requests = expectSpoken(second.sent, then)
  expect(requests.filter((r) => r.method === 'POST')).toEqual([])
  expect(requests[0]).toMatchObject({ method: 'HEAD', url })
  const patches = requests.filter((r) => r.method === 'PATCH')
  expect(patches[0]?.url).toBe(url)
  expect(patches[0]?.headers['upload-offset']).toBe(String(stored))
  expect((await bytesReceived(origin)) - receivedBefore).toBe(size - stored)
  expect(await uploadIds(uploadDir)).toEqual([id])
  expect(await sha256(path.join(uploadDir, id as string))).toBe(sha256Of(data))
  // Finished, it is forgotten: the same file picked once more would be a new upload.
  expect(await second.page.evaluate(KEPT_URLS)).toEqual([])
  expect([...first.pageErrors, ...second.pageErrors]).toEqual([])
}

// The page keeps an unfinished upload's URL in localStorage (tus-js-client's URL storage) and the
// protocol chosen: the same file picked again on a fresh page resumes it. In every protocol, tus
// 1.0 too, since that path is the page's own.
describe('an upload cut by closing its page resumes from a fresh page, where the server stopped', () => {
  it.each([...DRAFTS, TUS_V1].map((p) => [p.label, p] as const))(
    'in %s, the protocol the page remembered',
    (_, protocol) => cutAndResume(protocol, protocol),
    60_000,
  )

  it(
    'in tus 1.0 when it was begun in the IETF draft (interop 6): one upload, either protocol',
    () => cutAndResume(DRAFTS[1] as Protocol, TUS_V1),
    60_000,
  )
})
