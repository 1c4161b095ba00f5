import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import type { TestProject } from 'vitest/node'

/** Where the S3 tests find their server: `S3_*` from the environment, or the Ceph we start. */
export interface S3Env {
  endpoint: string
  accessKeyId: string
  secretAccessKey: string
  region: string
  forcePathStyle: boolean
}

declare module 'vitest' {
  export interface ProvidedContext {
    s3: S3Env
  }
}

/**
 * The e2e tier's S3 server. With `S3_ENDPOINT` set (MinIO, AWS, a Ceph of your own), that one,
 * and nothing is started. Otherwise scripts/ensure-ceph.sh: it reuses a cluster it started
 * before (`.ci/run` starts one first) or starts one, which this setup then stops (by its pids)
 * after the run.
 */
export default function setup(project: TestProject) {
  if (process.env.S3_ENDPOINT) {
    project.provide('s3', fromEnv(process.env))
    return
  }
  const script = 'scripts/ensure-ceph.sh'
  const wasRunning = run(script, 'status') !== undefined
  execFileSync(script, ['start'], { stdio: ['ignore', 'ignore', 'inherit'] })
  const file = execFileSync(script, ['env'], { encoding: 'utf8' }).trim()
  const vars = Object.fromEntries(
    readFileSync(file, 'utf8')
      .split('\n')
      .filter((line) => line.includes('='))
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  )
  project.provide('s3', fromEnv(vars))
  return () => {
    if (!wasRunning) execFileSync(script, ['stop'], { stdio: 'inherit' })
  }
}

function fromEnv(env: Record<string, string | undefined>): S3Env {
  return {
    endpoint: env.S3_ENDPOINT as string,
    accessKeyId: env.S3_ACCESS_KEY_ID ?? '',
    secretAccessKey: env.S3_SECRET_ACCESS_KEY ?? '',
    region: env.S3_REGION ?? 'us-east-1',
    forcePathStyle: env.S3_FORCE_PATH_STYLE !== 'false',
  }
}

function run(file: string, arg: string): string | undefined {
  try {
    return execFileSync(file, [arg], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
  } catch {
    return undefined
  }
}
