#!/usr/bin/env node
/**
 * `fastify-tus sweep`: the plugin's sweep engine run on a store directory without a server, for
 * operators (cron, a one-off cleanup). Results go to stdout (a table, or one JSON document with
 * `--json`), warnings and errors to stderr; `--log json` writes pino records to stdout instead
 * (reporter.ts).
 *
 * Exit codes: 0 done; 1 some entries failed, or the sweep failed; 2 usage error or a directory
 * that does not look like a tus store; 130/143 stopped by SIGINT/SIGTERM.
 */
import { readFileSync, realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { type DirectoryClaim, joinHolders } from '../backends/file/directory-holders.js'
import { sweepDirectory } from '../backends/file/sweep-engine.js'
import type { SweepLocker } from '../locking/activity-locker.js'
import { connectRedis } from '../redis/connect.js'
import { RedisLocker } from '../redis/locker.js'
import type { SweepReport } from '../sweep/report.js'
import { type Command, HELP, parseCommand, type SweepCommand, UsageError } from './arguments.js'
import { listPending } from './pending.js'
import { createReporter, type Reporter, type Signal } from './reporter.js'
import { checkStore } from './store-check.js'

export const EXIT = { ok: 0, failed: 1, usage: 2, SIGINT: 130, SIGTERM: 143 } as const

export interface MainDeps {
  /** A lock shared with the servers on the directory (Redis); without one, removals take none. */
  locker?: SweepLocker
  stdout?: (text: string) => void
  stderr?: (text: string) => void
}

/** Runs the CLI; resolves to the exit code. */
export async function main(argv: string[], deps: MainDeps = {}): Promise<number> {
  const out = deps.stdout ?? ((text) => process.stdout.write(text))
  const err = deps.stderr ?? ((text) => process.stderr.write(text))
  const command = commandOf(argv, err)
  if (typeof command === 'number') return command
  if (command.kind === 'list') {
    await listPending(command, out)
    return EXIT.ok
  }
  if (command.kind !== 'sweep') {
    out(`${command.kind === 'help' ? HELP : packageVersion()}\n`)
    return EXIT.ok
  }
  const reporter = createReporter(command, out, err)
  const check = await checkStore(command.directory, { idPattern: command.idPattern })
  if (!check.ok) {
    reporter.notAStore(command.directory, check.reason)
    return EXIT.usage
  }
  const claim = await claimDirectory(command, reporter)
  if (claim === 'refused') return EXIT.usage
  const lock = await openLock(command, deps, reporter)
  if (lock === 'unreachable') {
    await claim?.release()
    return EXIT.failed
  }
  const signals = catchSignals(reporter)
  let report: SweepReport
  try {
    report = await sweep(command, { claim, locker: lock.locker, signal: signals.signal, reporter })
  } catch (error) {
    reporter.failed(error)
    return EXIT.failed
  } finally {
    signals.release()
    await lock.close()
    await claim?.release()
  }
  reporter.finished(report)
  const stoppedBy = signals.stoppedBy()
  if (stoppedBy) return EXIT[stoppedBy]
  return report.errors > 0 ? EXIT.failed : EXIT.ok
}

/** The command, or the exit code of a usage error (said on stderr whatever the output form). */
function commandOf(argv: string[], err: (text: string) => void): Command | number {
  try {
    return parseCommand(argv)
  } catch (error) {
    if (!(error instanceof UsageError)) throw error
    err(`fastify-tus: ${error.message}\nRun fastify-tus --help for usage.\n`)
    return EXIT.usage
  }
}

/**
 * Holds the directory while the sweep runs (a dry run removes nothing and holds nothing), or
 * `refused` when a server serves it without sharing Redis with this sweep: neither would see
 * the other's locks (backends/file/directory-holders.ts).
 */
async function claimDirectory(
  command: SweepCommand,
  reporter: Reporter,
): Promise<DirectoryClaim | undefined | 'refused'> {
  if (command.dryRun) return undefined
  try {
    const prefix = command.redisUrl === undefined ? undefined : command.redisPrefix
    return await joinHolders(command.directory, prefix, 'fastify-tus sweep')
  } catch (error) {
    reporter.claimRefused(error)
    return 'refused'
  }
}

interface Lock {
  /** `undefined`: no server shares the directory through Redis; removals take no lock. */
  locker: SweepLocker | undefined
  close(): Promise<void>
}

/** The upload locks the servers take, in their Redis (`--redis-url`), or `unreachable`. */
async function openLock(
  command: SweepCommand,
  deps: MainDeps,
  reporter: Reporter,
): Promise<Lock | 'unreachable'> {
  if (deps.locker || !command.redisUrl) return { locker: deps.locker, close: async () => {} }
  try {
    // A Redis lost mid-sweep fails the locks fast instead of queueing them.
    const client = await connectRedis(command.redisUrl, { maxRetriesPerRequest: 2 })
    // Failures surface as failed lock attempts, counted in the report; no console noise.
    client.on('error', () => {})
    const locker = new RedisLocker({ client, prefix: command.redisPrefix })
    const close = async () => {
      await locker.close()
      await client.quit().catch(() => {})
    }
    return { locker, close }
  } catch (error) {
    reporter.redisUnreachable(error)
    return 'unreachable'
  }
}

/** SIGINT and SIGTERM stop the sweep between entries; a second one exits at once. */
function catchSignals(reporter: Reporter) {
  const controller = new AbortController()
  let stoppedBy: Signal | undefined
  const onSignal = (signal: Signal) => {
    if (stoppedBy) process.exit(EXIT[signal])
    stoppedBy = signal
    reporter.stopping(signal)
    controller.abort()
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  return {
    signal: controller.signal,
    stoppedBy: () => stoppedBy,
    release: () => {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
    },
  }
}

interface SweepContext {
  claim: DirectoryClaim | undefined
  locker: SweepLocker | undefined
  signal: AbortSignal
  reporter: Reporter
}

async function sweep(command: SweepCommand, context: SweepContext): Promise<SweepReport> {
  const { claim, locker, signal, reporter } = context
  reporter.sweeping(command)
  const at = Date.now()
  const tokens = await claim?.liveTokens()
  return await sweepDirectory({
    holders: tokens && { tokens, at },
    directory: command.directory,
    expireAfterMs: command.expireAfterMs,
    partialHoldMs: command.partialHoldMs,
    idPattern: command.idPattern,
    dryRun: command.dryRun,
    locker,
    signal,
    log: reporter.engineLog,
    onRemove: (removal) => reporter.removed(removal, command.dryRun),
  })
}

function packageVersion(): string {
  // src/cli/main.ts under the repository, dist/src/cli/main.js once built or installed.
  for (const relative of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(relative, import.meta.url), 'utf8'))
      if (pkg.name === 'fastify-tus') return String(pkg.version)
    } catch {}
  }
  return 'unknown'
}

/** True when this file is the program (npm's bin is a symlink to it), not an import. */
function isEntryPoint(): boolean {
  const entry = process.argv[1]
  if (entry === undefined) return false
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
}

if (isEntryPoint()) {
  process.exitCode = await main(process.argv.slice(2))
}
