/**
 * The soak scenario of `npm run soak`, at 20 uploads of up to 1 MiB: concurrent tus-js-client
 * uploads, 30% abandoned midway, 20% interrupted and resumed, expireAfterMs 1 s and a sweep every
 * 100 ms, the server closed and restarted twice on the same directory and port meanwhile.
 */
import { describe, expect, it } from 'vitest'
import { formatSoak, runSoak } from './soak-scenario.js'

const KiB = 1024

describe('soak', () => {
  it('keeps finished uploads intact and sweeps abandoned ones through two restarts, leaking nothing', async () => {
    const result = await runSoak({
      uploads: 20,
      maxSize: 1024 * KiB,
      // Small chunks and a pause of up to 100 ms before each PATCH: uploads live longer than
      // expireAfterMs, so sweeps run while they are active, and a restart does not wait long
      // for the PATCHes in flight.
      minChunk: 16 * KiB,
      maxChunk: 128 * KiB,
      paceMs: 100,
      startSpreadMs: 500,
    })
    const report = formatSoak(result)
    // The whole table on failure: which check, and the figures around it.
    const why = (what: string) => `${what}\n\n${report}`

    expect(result.started, why('started')).toBe(20)
    expect(result.abandoned, why('abandoned')).toBe(6)
    expect(result.resumed, why('resumed')).toBe(4)
    // Every upload not abandoned finished, with the bytes sent, and resumed ones continued.
    expect(result.failed, why('failed uploads')).toBe(0)
    expect(result.finished, why('finished uploads')).toBe(14)
    expect(result.intact, why('intact finished uploads')).toBe(14)
    expect(result.resumedFromOffset, why('resumed from an offset')).toBe(4)
    expect(result.recreated, why('uploads re-created')).toBe(0)
    // Some of them were active for longer than expireAfterMs: sweeps ran meanwhile.
    expect(result.longestUploadMs, why('longest upload')).toBeGreaterThan(1000)
    // Every abandoned upload went, within expireAfterMs + cleanupIntervalMs + 1.5 s.
    expect([result.abandonedWatched, result.abandonedGone], why('abandoned uploads gone')).toEqual([
      6, 6,
    ])
    expect(result.maxAbandonedSurvivalMs, why('abandoned upload life')).toBeLessThanOrEqual(2600)
    expect(result.strayFiles, why('stray files')).toBe(0)
    // Restarts happened while uploads were in flight.
    expect(
      result.restarts.map((r) => r.inFlight > 0),
      why('restarts'),
    ).toEqual([true, true])
    expect([result.server5xx, result.client5xx], why('5xx answers')).toEqual([0, 0])
    expect(
      [result.unhandledRejections, result.uncaughtExceptions, result.errorLogs],
      why('unhandled rejections, uncaught exceptions, error logs'),
    ).toEqual([0, 0, 0])
    expect(result.fdAfter, why('open file descriptors')).toBeLessThanOrEqual(result.fdBefore + 5)
    expect(result.gcExposed, why('gc')).toBe(true)
    expect(result.heapAfterMiB, why('heap')).toBeLessThanOrEqual(result.heapBeforeMiB + 20)
    // The script's verdict agrees.
    expect(
      result.checks.filter((c) => !c.ok),
      why('failed checks'),
    ).toEqual([])
  }, 60_000)
})
