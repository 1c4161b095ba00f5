/**
 * `npm run soak`: the soak scenario at full size (100 uploads of 0 to 8 MiB, two restarts),
 * printed as a table; exits with 1 if a check fails. The `SOAK_*` variables below tune it. Run
 * under `node --expose-gc` (the npm script does) for the heap figures.
 *
 * `npm run soak -- --crash` (or `SOAK_MODE=crash`): the crash mode instead (50 clients of 1 to
 * 8 MiB, half with `Upload-Checksum`, the server in a child process killed with SIGKILL 10
 * times); `SOAK_UPLOADS`, `SOAK_MAX_MIB`, `SOAK_SEED` and `SOAK_CRASHES` tune it.
 *
 * `npm run soak -- --assembly` (or `SOAK_MODE=assembly`): parallel uploads whose finals are
 * assembled while the server is killed with SIGKILL (8 times, each mid-copy when it can) and
 * whose clients, half of them, go away mid-assembly and send the final again; `SOAK_UPLOADS`,
 * `SOAK_CRASHES` and `SOAK_SEED` tune it.
 *
 * `npm run soak -- --s3` (or `SOAK_MODE=s3`): the S3 mode (30 uploads of up to 16 MiB and 6
 * abandoned ones, with a stock S3Store, one restart) on the S3 server `S3_ENDPOINT` names, or
 * on a throwaway Ceph that scripts/ensure-ceph.sh starts and this stops afterwards;
 * `SOAK_UPLOADS`, `SOAK_ABANDONED`, `SOAK_MAX_MIB`, `SOAK_EXPIRE_MS`, `SOAK_PACE_MS` and
 * `SOAK_SEED` tune it.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import {
  ASSEMBLY_SOAK_DEFAULTS,
  assemblySoakOk,
  formatAssemblySoak,
  runAssemblyCrashSoak,
} from '../test/e2e/assembly-crash-scenario.js'
import { CRASH_SOAK_DEFAULTS, formatCrashSoak, runCrashSoak } from '../test/e2e/crash-scenario.js'
import {
  formatS3Soak,
  runS3Soak,
  S3_SOAK_DEFAULTS,
  s3EnvFrom,
} from '../test/e2e/s3-soak-scenario.js'
import { formatSoak, runSoak, SOAK_DEFAULTS } from '../test/e2e/soak-scenario.js'

const MiB = 1024 * 1024
const env = (name: string, fallback: number) => {
  const value = Number(process.env[name] ?? fallback)
  if (!Number.isFinite(value) || value < 0) {
    console.error(`${name} must be a number >= 0, got ${process.env[name]}`)
    process.exit(1)
  }
  return value
}

if (process.argv.includes('--s3') || process.env.SOAK_MODE === 's3') {
  let vars: Record<string, string | undefined> = process.env
  let stopCeph = false
  if (!process.env.S3_ENDPOINT) {
    const script = 'scripts/ensure-ceph.sh'
    try {
      execFileSync(script, ['status'], { stdio: 'ignore' })
    } catch {
      stopCeph = true
    }
    execFileSync(script, ['start'], { stdio: ['ignore', 'ignore', 'inherit'] })
    const file = execFileSync(script, ['env'], { encoding: 'utf8' }).trim()
    vars = Object.fromEntries(
      readFileSync(file, 'utf8')
        .split('\n')
        .filter((line) => line.includes('='))
        .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
    )
  }
  try {
    const result = await runS3Soak({
      s3: s3EnvFrom(vars),
      uploads: env('SOAK_UPLOADS', S3_SOAK_DEFAULTS.uploads),
      abandoned: env('SOAK_ABANDONED', S3_SOAK_DEFAULTS.abandoned),
      maxSize: Math.round(env('SOAK_MAX_MIB', S3_SOAK_DEFAULTS.maxSize / MiB) * MiB),
      expireAfterMs: env('SOAK_EXPIRE_MS', S3_SOAK_DEFAULTS.expireAfterMs),
      paceMs: env('SOAK_PACE_MS', S3_SOAK_DEFAULTS.paceMs),
      seed: env('SOAK_SEED', S3_SOAK_DEFAULTS.seed),
      log: (line) => console.log(line),
    })
    console.log(`\n${formatS3Soak(result)}`)
    process.exitCode = result.ok ? 0 : 1
  } finally {
    if (stopCeph) execFileSync('scripts/ensure-ceph.sh', ['stop'], { stdio: 'inherit' })
  }
} else if (process.argv.includes('--assembly') || process.env.SOAK_MODE === 'assembly') {
  const clients = env('SOAK_UPLOADS', ASSEMBLY_SOAK_DEFAULTS.clients)
  const result = await runAssemblyCrashSoak({
    ...ASSEMBLY_SOAK_DEFAULTS,
    clients,
    crashes: env('SOAK_CRASHES', ASSEMBLY_SOAK_DEFAULTS.crashes),
    seed: env('SOAK_SEED', ASSEMBLY_SOAK_DEFAULTS.seed),
    root: process.cwd(),
    log: (line) => console.log(line),
  })
  console.log(`\n${formatAssemblySoak(result)}`)
  process.exitCode = assemblySoakOk(result, clients) ? 0 : 1
} else if (process.argv.includes('--crash') || process.env.SOAK_MODE === 'crash') {
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
