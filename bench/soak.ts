/**
 * `npm run soak`: the soak scenario at full size (100 uploads of 0 to 8 MiB, two restarts),
 * printed as a table; exits with 1 if a check fails. The `SOAK_*` variables below tune it. Run
 * under `node --expose-gc` (the npm script does) for the heap figures.
 *
 * `npm run soak -- --crash` (or `SOAK_MODE=crash`): the crash mode instead (50 clients of 1 to
 * 8 MiB, half with `Upload-Checksum`, the server in a child process killed with SIGKILL 10
 * times); `SOAK_UPLOADS`, `SOAK_MAX_MIB`, `SOAK_SEED` and `SOAK_CRASHES` tune it.
 */
import { CRASH_SOAK_DEFAULTS, formatCrashSoak, runCrashSoak } from '../test/crash-scenario.js'
import { formatSoak, runSoak, SOAK_DEFAULTS } from '../test/soak-scenario.js'

const MiB = 1024 * 1024
const env = (name: string, fallback: number) => {
  const value = Number(process.env[name] ?? fallback)
  if (!Number.isFinite(value) || value < 0) {
    console.error(`${name} must be a number >= 0, got ${process.env[name]}`)
    process.exit(1)
  }
  return value
}

if (process.argv.includes('--crash') || process.env.SOAK_MODE === 'crash') {
  const result = await runCrashSoak({
    clients: env('SOAK_UPLOADS', CRASH_SOAK_DEFAULTS.clients),
    maxSize: Math.round(env('SOAK_MAX_MIB', CRASH_SOAK_DEFAULTS.maxSize / MiB) * MiB),
    seed: env('SOAK_SEED', CRASH_SOAK_DEFAULTS.seed),
    crashes: env('SOAK_CRASHES', CRASH_SOAK_DEFAULTS.crashes),
    log: (line) => console.log(line),
  })
  console.log(`\n${formatCrashSoak(result)}`)
  process.exitCode = result.ok ? 0 : 1
} else {
  const result = await runSoak({
    uploads: env('SOAK_UPLOADS', SOAK_DEFAULTS.uploads),
    maxSize: Math.round(env('SOAK_MAX_MIB', SOAK_DEFAULTS.maxSize / MiB) * MiB),
    seed: env('SOAK_SEED', SOAK_DEFAULTS.seed),
    expireAfterMs: env('SOAK_EXPIRE_MS', SOAK_DEFAULTS.expireAfterMs),
    minChunk: Math.round(env('SOAK_MIN_CHUNK_KIB', SOAK_DEFAULTS.minChunk / 1024) * 1024),
    maxChunk: Math.round(env('SOAK_MAX_CHUNK_KIB', SOAK_DEFAULTS.maxChunk / 1024) * 1024),
    paceMs: env('SOAK_PACE_MS', SOAK_DEFAULTS.paceMs),
    startSpreadMs: env('SOAK_SPREAD_MS', SOAK_DEFAULTS.startSpreadMs),
    log: (line) => console.log(line),
  })
  console.log(`\n${formatSoak(result)}`)
  process.exitCode = result.ok ? 0 : 1
}
