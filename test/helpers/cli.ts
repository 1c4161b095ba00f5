/**
 * The operator CLI: its `main` in the test process (what the bin runs, and what coverage sees), or
 * the built program in a child process where a process matters (signals, the bin, an environment).
 */
import { type ChildProcess, spawn } from 'node:child_process'
import path from 'node:path'
import { onTestFinished } from 'vitest'
import { main } from '../../src/cli/main.js'

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

/**
 * Runs the CLI to its end: its exit code and output. Without `env`, its `main` runs in this
 * process with the output captured; with `env`, or `{ process: true }`, the built program runs in
 * a child process with only that environment.
 */
export async function cli(
  args: string[],
  env: Record<string, string> = {},
  { process: inChild = false }: { process?: boolean } = {},
) {
  if (inChild || Object.keys(env).length > 0) {
    const { out, exited } = startCli(args, env)
    const code = await exited
    return { code, ...out }
  }
  const out = { stdout: '', stderr: '' }
  const code = await main(args, {
    stdout: (text) => {
      out.stdout += text
    },
    stderr: (text) => {
      out.stderr += text
    },
  })
  return { code, ...out }
}
