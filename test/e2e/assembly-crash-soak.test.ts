/**
 * The crash soak of the assembly (issue 27) at 6 parallel uploads of 4 parts of 2 to 12 MiB:
 * the demo server killed with SIGKILL four times, each while a final's copy is under way, and
 * restarted; half the clients go away as soon as their final's assembly starts, and send it
 * again. The seed is random unless ASSEMBLY_SOAK_SEED is set; it is printed, so a failure can be
 * replayed. Runs the built package (vitest's global setup builds it).
 */
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { formatAssemblySoak, runAssemblyCrashSoak } from './assembly-crash-scenario.js'

const MiB = 1024 * 1024

describe('assembly crash soak', () => {
  it('every client learns its final, whole, through kills mid-copy and clients gone mid-assembly; no copy outlives its server; a sweep leaves exactly the known finals', async () => {
    const seed = Number(process.env.ASSEMBLY_SOAK_SEED ?? Math.floor(Math.random() * 2 ** 31))
    const result = await runAssemblyCrashSoak({
      clients: 6,
      partsPerClient: 4,
      minPart: 2 * MiB,
      maxPart: 12 * MiB,
      spreadMs: 1500,
      crashes: 4,
      crashWaitMs: 6000,
      seed,
      root: path.resolve('.'),
      log: () => {},
    })
    const report = formatAssemblySoak(result)
    console.log(report)
    const why = (what: string) => `${what}\n\n${report}`
    expect([result.learned, result.intact], why('finals learned, intact')).toEqual([6, 6])
    expect(result.kills, why('kills')).toBe(4)
    expect(result.midCopy, why('kills mid-copy')).toBeGreaterThanOrEqual(2)
    expect(result.grewAfterKill, why('copies that outlived their server')).toEqual([])
    expect(result.leftAfterRestart, why('assembly files the restart left')).toEqual([])
    expect([result.gone, result.retriesAnswered], why('gone, answered on a retry')).toEqual([3, 3])
    expect(result.badRecords, why('records that did not parse')).toEqual([])
    expect(result.unknownUnmarked, why('finals nobody knows, not marked')).toEqual([])
    expect(result.knownMarked, why('known finals still marked')).toEqual([])
    expect(result.serverErrors, why('5xx answers')).toBe(0)
    expect(
      [result.strayAfterSweep, result.missingAfterSweep],
      why('stray and missing after the sweep'),
    ).toEqual([[], []])
  }, 180_000)
})
