/**
 * The demo server (`npm start`), run as the built program: settings from the environment,
 * a clear message and exit code 1 for bad ones, pino logs on stdout, a graceful SIGTERM.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'
import { describe, expect, it, onTestFinished } from 'vitest'
import { tempDir } from '../helpers/fs.js'
import { tusUpload } from '../helpers/tus-client.js'
import { waitFor } from '../helpers/wait.js'

const SERVER = path.resolve('dist/demo/server.js')

function run(env: Record<string, string>) {
  const child = spawn(process.execPath, [SERVER], {
    env: { PATH: process.env.PATH, PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const out = { stdout: '', stderr: '' }
  child.stdout.on('data', (c) => {
    out.stdout += c
  })
  child.stderr.on('data', (c) => {
    out.stderr += c
  })
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
  onTestFinished(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  return { child, out, exited }
}

async function listening(out: { stdout: string }, child: ChildProcess): Promise<string> {
  const match = await waitFor(
    () => /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(out.stdout),
    10_000,
    `the demo to listen (exit code ${child.exitCode})`,
  )
  return match[1] as string
}

describe('demo server', () => {
  it.each([
    ['PORT', 'abc', /PORT must be a whole number from 0 to 65535, got "abc"/],
    ['EXPIRE_AFTER_MS', '-5', /EXPIRE_AFTER_MS must be a whole number/],
    ['CLEANUP_INTERVAL_MS', '0', /CLEANUP_INTERVAL_MS must be a whole number from 1/],
    ['REDIS_URL', 'http://127.0.0.1:6379', /REDIS_URL must be a redis:\/\/ or rediss:\/\/ URL/],
    [
      'REDIS_URL',
      'redis://127.0.0.1:1',
      /cannot reach Redis at redis:\/\/127\.0\.0\.1:1: .*ECONNREFUSED/,
    ],
    [
      'LOG_LEVEL',
      'loud',
      /LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "loud"/,
    ],
  ])('exits 1 with a clear message for a bad %s', async (name, value, message) => {
    const dir = await tempDir()
    const { out, exited } = run({ [name]: value, UPLOAD_DIR: dir })
    expect(await exited).toBe(1)
    expect(out.stderr).toMatch(message)
    expect(out.stderr.split('\n').filter(Boolean)).toHaveLength(1) // one line, no stack trace
  })

  it('exits 1 naming an unusable upload directory', async () => {
    const dir = await tempDir()
    await fs.writeFile(path.join(dir, 'file'), '')
    const { out, exited } = run({ UPLOAD_DIR: path.join(dir, 'file', 'uploads') })
    expect(await exited).toBe(1)
    expect(out.stderr).toMatch(
      /cannot start: .*option `directory`: .*file\/uploads is not a writable directory/,
    )
  })

  it('serves uploads into UPLOAD_DIR, logs JSON to stdout and closes on SIGTERM', async () => {
    const dir = await tempDir()
    const { child, out, exited } = run({
      UPLOAD_DIR: dir,
      LOG_LEVEL: 'debug',
      CLEANUP_INTERVAL_MS: '50',
    })
    const origin = await listening(out, child)
    const url = await tusUpload(`${origin}/files`, Buffer.from('hello demo'))
    const id = url.slice(url.lastIndexOf('/') + 1)
    expect(await fs.readFile(path.join(dir, id), 'utf8')).toBe('hello demo')
    await waitFor(() => out.stdout.includes('no expired uploads to remove'))
    const records = out.stdout
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { msg: string; plugin?: string })
    expect(records.some((r) => r.plugin === 'fastify-tus')).toBe(true)

    child.kill('SIGTERM')
    expect(await exited).toBe(0)
    expect(out.stdout).toContain('"signal":"SIGTERM"')
  })

  it('with METRICS=1, serves the Prometheus metrics of the plugin on GET /metrics', async () => {
    const dir = await tempDir()
    const { child, out, exited } = run({ UPLOAD_DIR: dir, METRICS: '1' })
    const origin = await listening(out, child)
    await tusUpload(`${origin}/files`, Buffer.from('hello metrics'))
    const res = await fetch(`${origin}/metrics`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/)
    const text = await res.text()
    expect(text).toMatch(/^tus_uploads_finished_total\{endpoint="\/files"\} 1$/m)
    expect(text).toMatch(/^tus_bytes_received_total\{endpoint="\/files"\} 13$/m)
    child.kill('SIGTERM')
    expect(await exited).toBe(0)
  })

  it('without METRICS, has no /metrics route', async () => {
    const dir = await tempDir()
    const { child, out } = run({ UPLOAD_DIR: dir })
    const origin = await listening(out, child)
    expect((await fetch(`${origin}/metrics`)).status).toBe(404)
  })
})
