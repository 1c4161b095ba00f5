/**
 * A video uploaded through the demo page plays from its download URL in Chromium and seeks: the
 * player asks for ranges, and the plugin answers them (206).
 *
 * test/fixtures/clip.mp4 (24 919 bytes): 10 s of ffmpeg's test pattern, 160x120 at 10 fps,
 * H.264 Constrained Baseline, a keyframe a second, no audio, index first; made once with Debian's
 * ffmpeg 5.1 (`apt-get install ffmpeg`):
 *
 *   ffmpeg -f lavfi -i testsrc=size=160x120:rate=10 -t 10 -c:v libx264 -profile:v baseline \
 *     -pix_fmt yuv420p -g 10 -crf 38 -an -movflags +faststart -map_metadata -1 \
 *     -fflags +bitexact clip.mp4
 *
 * Debian's Chromium plays H.264 (the test checks `canPlayType` first, and says so if not).
 */
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { startDemo } from '../../demo/app.js'
import { tempDir } from '../helpers/fs.js'
import { launchChromium } from './chromium.js'

const CLIP = path.resolve('test/fixtures/clip.mp4')

let browser: Browser
beforeAll(async () => {
  browser = await launchChromium()
})
afterAll(async () => {
  await browser?.close()
})

/** What the test uses of the page's `HTMLVideoElement` (the tests compile without the DOM's types). */
interface VideoElement {
  readonly readyState: number
  readonly duration: number
  readonly seekable: { readonly length: number; end(index: number): number }
  readonly error: { readonly message: string } | null
  currentTime: number
  canPlayType(type: string): string
  addEventListener(event: string, listener: () => void, options: { once: boolean }): void
}

async function demo() {
  const app = await startDemo({
    host: '127.0.0.1',
    port: 0,
    uploadDir: await tempDir(),
    expireAfterMs: 60_000,
    cleanupIntervalMs: 600_000,
    logLevel: 'silent',
  })
  onTestFinished(() => app.close())
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
}

describe('a video uploaded through the demo page', () => {
  it('plays from its download URL and seeks to a later point, over 206 answers', async () => {
    const origin = await demo()
    const page = await browser.newPage()
    onTestFinished(() => page.close())
    page.setDefaultTimeout(10_000)
    const downloads: Array<{ range: string | undefined; status: number }> = []
    page.on('response', async (response) => {
      const request = response.request()
      if (request.method() !== 'GET' || !request.url().startsWith(`${origin}/files/`)) return
      downloads.push({ range: (await request.allHeaders()).range, status: response.status() })
    })
    await page.goto(`${origin}/`)
    await page.getByTestId('file-input').setInputFiles(CLIP)
    const row = page.getByTestId('upload')
    await expect.poll(() => row.getAttribute('data-state'), { timeout: 20_000 }).toBe('done')
    const player = row.getByTestId('upload-player')
    expect(await player.getAttribute('src')).toBe(await row.getByTestId('upload-url').textContent())
    const h264 = await player.evaluate((element) =>
      (element as unknown as VideoElement).canPlayType('video/mp4; codecs="avc1.42E01E"'),
    )
    expect(h264, 'this Chromium plays no H.264').not.toBe('')

    const seeked = await player.evaluate(async (element) => {
      const video = element as unknown as VideoElement
      const once = (event: string) =>
        new Promise<void>((resolve, reject) => {
          video.addEventListener(event, () => resolve(), { once: true })
          video.addEventListener('error', () => reject(new Error(String(video.error?.message))), {
            once: true,
          })
        })
      if (video.readyState < 1) await once('loadedmetadata')
      const duration = video.duration
      const seekable = video.seekable.length > 0 ? video.seekable.end(0) : 0
      video.currentTime = 7.5
      await once('seeked')
      if (video.readyState < 2) await once('loadeddata')
      return { duration, seekable, currentTime: video.currentTime, readyState: video.readyState }
    })
    expect(seeked.duration).toBeCloseTo(10, 0)
    expect(seeked.seekable).toBeCloseTo(10, 0)
    expect(seeked.currentTime).toBeCloseTo(7.5, 1)
    expect(seeked.readyState).toBeGreaterThanOrEqual(2)
    // Chromium asked for ranges, and got them.
    expect(downloads.length).toBeGreaterThan(0)
    expect(downloads.every((d) => d.range !== undefined && d.status === 206)).toBe(true)
  }, 60_000)
})
