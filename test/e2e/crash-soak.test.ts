/**
 * The soak's crash mode (issue 13) at 12 clients of up to 512 KiB: the built plugin in a child
 * process, killed with SIGKILL five times while clients upload (half with `Upload-Checksum`),
 * restarted on the same directory and port. The seed is random unless CRASH_SOAK_SEED is set;
 * it is in the table, so a failure can be replayed (`CRASH_SOAK_SEED=<seed> npx vitest run
 * test/e2e/crash-soak.test.ts`). The scenario runs the built package: `npm run build` (vitest's
 * global setup does it).
 */
import { describe, expect, it } from 'vitest'
import { formatCrashSoak, runCrashSoak } from './crash-scenario.js'

const KiB = 1024

describe('crash soak', () => {
  it('keeps every finished upload byte-identical and every record whole through five kill -9, rolls back the checksummed bodies they cut (one at least), leaving nothing a sweep cannot remove', async () => {
    const seed = Number(process.env.CRASH_SOAK_SEED ?? Math.floor(Math.random() * 2 ** 31))
    const result = await runCrashSoak({
      clients: 12,
      maxSize: 512 * KiB,
      minChunk: 16 * KiB,
      maxChunk: 128 * KiB,
      // Slow clients (about 1 to 4 s per upload): PATCHes are mid-body most of the time.
      minRate: 128 * KiB,
      maxRate: 384 * KiB,
      sliceBytes: 8 * KiB,
      crashes: 5,
      minDownMs: 50,
      maxDownMs: 250,
      minUpMs: 300,
      startSpreadMs: 300,
      timeoutMs: 40_000,
      seed,
    })
    const report = formatCrashSoak(result)
    // The seed is random: one line to replay any run, and its figures.
    console.log(
      `crash soak: seed ${seed}, ${result.crashes.length} crashes, ${result.checksummedCuts} ` +
        `checksummed PATCHes cut mid-body (${result.cutBodiesRolledBack}/${result.cutBodies} with ` +
        `bytes past their mark rolled back, ${result.rollbacksSeen}/${result.rollbacksExpected} ` +
        `marks in all), ${result.plainCuts} plain ` +
        `cut, ${result.leftovers.tempFiles} temp records swept, ` +
        `${(result.durations.totalMs / 1000).toFixed(1)} s`,
    )
    // The whole table on failure: which check, and the figures around it.
    const why = (what: string) => `${what}\n\n${report}`

    expect(result.checksummedClients, why('checksummed clients')).toBe(6)
    expect([result.finished, result.failed], why('finished, failed')).toEqual([12, 0])
    expect(result.intact, why('byte-identical uploads')).toBe(12)
    expect(result.badRecords, why('records that did not parse')).toEqual([])
    expect(result.recordsRead, why('records read')).toBeGreaterThan(0)
    expect(result.unverifiedLeft, why('records still marked unverified')).toEqual([])
    expect(result.offsetViolations, why('offsets outside what was sent')).toBe(0)
    expect(result.rollbacksSeen, why('marked records rolled back')).toBe(result.rollbacksExpected)
    // A run that rolled nothing back proves nothing of it: the first kill holds a checksummed
    // body mid-way, its bytes past the mark on disk, so that every run has one to roll back.
    expect(result.crashes[0]?.held, why('the body held at the first kill')).toBeDefined()
    expect(result.cutBodies, why('bodies cut with bytes past their mark')).toBeGreaterThan(0)
    expect(result.cutBodiesRolledBack, why('of them, rolled back')).toBe(result.cutBodies)
    expect(
      result.crashes.map((c) => c.patchesInFlight > 0),
      why('crashes with PATCHes in flight'),
    ).toEqual([true, true, true, true, true])
    expect(result.checksummedCuts, why('checksummed PATCHes cut mid-body')).toBeGreaterThan(0)
    expect([result.client5xx, result.checksumMismatches], why('5xx, 460 answers')).toEqual([0, 0])
    expect(
      [result.unexpectedExits, result.serverErrorLogs, result.serverSweepErrors],
      why('server exits, error logs, sweep errors'),
    ).toEqual([0, 0, 0])
    expect(result.serverSweeps, why('server sweeps')).toBeGreaterThan(0)
    expect(
      [result.finalSweep.exitCode, result.finalSweep.errors],
      why('final sweep exit code, errors'),
    ).toEqual([0, 0])
    expect(
      [result.strayAfterSweep, result.missingAfterSweep],
      why('stray and missing entries after the sweep'),
    ).toEqual([[], []])
    // The script's verdict agrees.
    expect(
      result.checks.filter((c) => !c.ok),
      why('failed checks'),
    ).toEqual([])
  }, 60_000)
})
