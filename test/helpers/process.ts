/** Servers in child processes of their own (the demo server, a test's own script). */
import { type ChildProcess, spawn } from 'node:child_process'
import { onTestFinished } from 'vitest'
import type { LogRecord } from './server.js'
import { waitFor } from './wait.js'

/** A server in a child process of its own, as `startServerProcess` started it. */
export interface ServerProcess {
  name: string
  child: ChildProcess
  /** `http://127.0.0.1:<port>` */
  origin: string
  /** `<origin>/files` */
  endpoint: string
  /** Its pino records, parsed from stdout as they come. */
  records: LogRecord[]
  exited: Promise<unknown>
}

/**
 * Starts `node <script>` with exactly `env` (a server that logs pino JSON on stdout, the demo
 * server or a test's own); resolves once it logs that it listens. Stopped (SIGTERM, then awaited)
 * after the test; rejects with its stderr if it exits before listening.
 */
export async function startServerProcess(
  name: string,
  script: string,
  env: Record<string, string | undefined>,
): Promise<ServerProcess> {
  const child = spawn(process.execPath, [script], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  const records: LogRecord[] = []
  let buffered = ''
  let stderr = ''
  child.stdout?.on('data', (chunk) => {
    buffered += chunk
    const lines = buffered.split('\n')
    buffered = lines.pop() ?? ''
    for (const line of lines) if (line.startsWith('{')) records.push(JSON.parse(line))
  })
  child.stderr?.on('data', (chunk) => {
    stderr += chunk
  })
  const exited = new Promise((resolve) => child.on('exit', resolve))
  onTestFinished(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      await exited
    }
  })
  const listening = await waitFor(
    () =>
      records.find((r) => /^Server listening at http:\/\/127\.0\.0\.1:\d+$/.test(r.msg)) ??
      (child.exitCode !== null
        ? Promise.reject(new Error(`${name} exited: ${stderr}`))
        : undefined),
    15_000,
    `${name} to listen`,
  )
  const origin = listening.msg.slice('Server listening at '.length)
  return { name, child, origin, endpoint: `${origin}/files`, records, exited }
}
