/**
 * The S3 mode of `npm run soak`, smaller: 8 uploads of up to 12 MiB and 3 abandoned after their
 * first PATCH, against a stock S3Store on a real S3 API, sweeps every 300 ms with expireAfterMs
 * 10 s, PATCHes paced up to 1.5 s apart, one restart on the same bucket and port.
 */
import { describe, expect, inject, it } from 'vitest'
import { formatS3Soak, runS3Soak } from './s3-soak-scenario.js'

const MiB = 1024 * 1024

describe('S3 soak', () => {
  it('keeps every finished upload byte-identical and sweeps every abandoned one through a restart', async () => {
    const result = await runS3Soak({
      s3: inject('s3'),
      uploads: 8,
      abandoned: 3,
      maxSize: 12 * MiB,
    })
    const report = formatS3Soak(result)
    expect(result.failed, report).toEqual([])
    expect(result.intact, report).toBe(8)
    expect(result.leftovers, report).toEqual([])
    expect(result.removed, report).toBeGreaterThanOrEqual(3)
    expect(result.sweepErrors, report).toBe(0)
    // Sweeps ran (every 300 ms) while uploads were under way for seconds.
    expect(result.sweeps, report).toBeGreaterThan(10)
    expect(result.longestUploadMs, report).toBeGreaterThan(4000)
    expect(result.ok, report).toBe(true)
  }, 120_000)
})
