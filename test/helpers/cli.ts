/** The operator CLI, run from the built package in a child process. */
import { type ChildProcess, spawn } from 'node:child_process'
import path from 'node:path'
import { onTestFinished } from 'vitest'

/** The operator CLI as built by the global setup (`fastify-tus`, what npm links the bin to). */
export const CLI = path.resolve('dist/src/cli/main.js')

export interface CliRun {
  child: ChildProcess
  out: { stdout: string; stderr: string }
  exited: Promise<number | null>
}

/** Starts the built CLI with only PATH, HOME and `env` in its environment; killed after the test. */
export function startCli(args: string[], env: Record<string, string> = {}): CliRun {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const out = { stdout: '', stderr: '' }
  child.stdout?.on('data', (c) => {
    out.stdout += c
  })
  child.stderr?.on('data', (c) => {
    out.stderr += c
  })
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve))
  onTestFinished(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  return { child, out, exited }
}

/** Runs the built CLI to its end: its exit code and output. */
export async function cli(args: string[], env: Record<string, string> = {}) {
  const { out, exited } = startCli(args, env)
  const code = await exited
  return { code, ...out }
}
