/**
 * Debian's Chromium for the browser tests, driven by playwright-core (`npx playwright install`
 * does not work here). If it cannot start, the error says so: browser tests fail, never skip.
 */
import { type Browser, chromium } from 'playwright-core'

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
