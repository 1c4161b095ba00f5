#!/usr/bin/env node
/**
 * `fastify-tus sweep`: the plugin's sweep engine run on a store directory without a server, for
 * operators (cron, a one-off cleanup). Results go to stdout (a table, or one JSON document with
 * `--json`), warnings and errors to stderr.
 *
 * Exit codes: 0 done; 1 some entries failed, or the sweep failed; 2 usage error or a directory
 * that does not look like a tus store; 130/143 stopped by SIGINT/SIGTERM.
 */
import { readFileSync, realpathSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import type { Redis } from 'ioredis'
import ms from 'ms'
import { pino } from 'pino'
import { type DirectoryClaim, joinHolders } from '../backends/file/directory-holders.js'
import { type Removal, type SweepReport, sweepDirectory } from '../backends/file/sweep-engine.js'
import * as duration from '../duration.js'
import { DEFAULT_ID_PATTERN, defaultPartialHoldMs } from '../expiry/policy.js'
import type { SweepLocker } from '../locking/activity-locker.js'
import { connectRedis, isRedisUrl } from '../redis/connect.js'
import { REDIS_LOCKER_DEFAULTS, RedisLocker } from '../redis/locker.js'
import { logReport } from '../sweep/schedule.js'
import { checkStore } from './store-check.js'

export const EXIT = { ok: 0, failed: 1, usage: 2, SIGINT: 130, SIGTERM: 143 } as const

const HELP = `Usage: fastify-tus sweep --dir <path> --expire-after <duration> [options]

Removes expired unfinished uploads and orphans from a fastify-tus file store, with the
plugin's own sweep engine, without a server. Finished uploads are never removed.

Options:
  --dir <path>              the store's directory (the plugin's \`directory\` option)
  --expire-after <duration> an unfinished upload idle this long expires: 10m, 2h, 1d,
                            600000ms (a unit is required: a bare 10 is refused)
  --partial-hold <duration> a finished partial upload of a parallel upload waits this long
                            for its final, as the plugin's \`partialHoldMs\` option (default:
                            --expire-after or 1d, whichever is longer)
  --id-pattern <regex>      names of uploads, as the plugin's \`idPattern\` option
                            (default ${DEFAULT_ID_PATTERN.source})
  --redis-url <url>         the Redis of the servers on this directory (their \`redis\`
                            option): each removal takes the same upload lock as they do
  --redis-prefix <prefix>   their \`redis.prefix\` (default ${REDIS_LOCKER_DEFAULTS.prefix})
  --dry-run                 list what would be removed; remove nothing
  --json                    print one JSON document: {directory, expireAfterMs, report, removed}
  --log json                write pino JSON records to stdout instead, one per removal and one
                            for the sweep, with the fields of the servers' sweep records
  -h, --help                this text
  --version                 the package version

Before sweeping, it checks that the directory looks like a tus file store (only <id> and
<id>.json files, subdirectories, dot-files, and at least one tus upload record) and refuses
otherwise. It also refuses a directory that a server serves without Redis (or with another
Redis prefix than --redis-prefix): their locks would not see each other. While it sweeps, such
a server refuses to start on the directory. A dry run removes nothing and is never refused.

With servers on the same directory (they must use Redis: see above), pass --redis-url (and
--redis-prefix): each removal takes the same upload lock as they do, and an upload a request
holds, on any server, is skipped (counted in "skipped busy"). The sweep removes only uploads
whose data file has not been written for --expire-after (it looks twice: when scanning, and
right before unlinking), and the servers answer 410 to an unfinished upload idle longer than
their own expireAfterMs, never resuming it. So use an --expire-after no shorter than theirs.

Exit codes: 0 done; 1 some entries failed (see stderr) or the sweep failed; 2 usage error or
refused directory; 130 or 143 stopped by SIGINT or SIGTERM (what was removed until then is
printed; a second signal exits at once).`

class UsageError extends Error {}

/** A duration flag in `ms` syntax with its unit (`10m`, `2h`, `1.5d`, `600000ms`). */
export function parseDuration(flag: string, value: string): number {
  const parsed = duration.parseDuration(value, { min: 1 })
  if (typeof parsed === 'string') {
    throw new UsageError(`${flag} ${parsed}, got ${JSON.stringify(value)}`)
  }
  return parsed
}

function parseIdPattern(value: string): RegExp {
  try {
    return new RegExp(value)
  } catch (error) {
    throw new UsageError(
      `--id-pattern is not a valid regular expression: ${(error as Error).message}`,
    )
  }
}

interface SweepCommand {
  directory: string
  expireAfterMs: number
  partialHoldMs: number
  idPattern: RegExp
  dryRun: boolean
  json: boolean
  /** `--log json`: pino records on stdout instead of the table and the summary. */
  logJson: boolean
  redisUrl: string | undefined
  redisPrefix: string
}

type Parsed = { kind: 'help' } | { kind: 'version' } | ({ kind: 'sweep' } & SweepCommand)

export function parseCommand(argv: string[]): Parsed {
  let parsed: ReturnType<typeof parse>
  try {
    parsed = parse(argv)
  } catch (error) {
    throw new UsageError((error as Error).message)
  }
  const { values, positionals } = parsed
  if (values.help) return { kind: 'help' }
  if (values.version) return { kind: 'version' }
  if (positionals.length === 0) throw new UsageError('missing command: sweep')
  if (positionals[0] !== 'sweep' || positionals.length > 1) {
    throw new UsageError(`unknown command: ${positionals.join(' ')} (the command is sweep)`)
  }
  if (values.dir === undefined || values.dir === '')
    throw new UsageError('--dir <path> is required')
  if (values['expire-after'] === undefined) {
    throw new UsageError('--expire-after <duration> is required (e.g. 10m, 2h)')
  }
  const expireAfterMs = parseDuration('--expire-after', values['expire-after'])
  const partialHoldMs =
    values['partial-hold'] === undefined
      ? defaultPartialHoldMs(expireAfterMs)
      : parseDuration('--partial-hold', values['partial-hold'])
  if (partialHoldMs < expireAfterMs) {
    throw new UsageError(
      `--partial-hold must be at least --expire-after (${ms(expireAfterMs)}), got ${JSON.stringify(values['partial-hold'])}`,
    )
  }
  return {
    kind: 'sweep',
    directory: path.resolve(values.dir),
    expireAfterMs,
    partialHoldMs,
    idPattern:
      values['id-pattern'] === undefined
        ? DEFAULT_ID_PATTERN
        : parseIdPattern(values['id-pattern']),
    dryRun: values['dry-run'] === true,
    json: values.json === true,
    logJson: parseLog(values.log, values.json === true),
    redisUrl: parseRedisUrl(values['redis-url']),
    redisPrefix: parseRedisPrefix(values['redis-prefix']),
  }
}

/** `--log json`: pino records on stdout; `--log text` (the default): the table and summary. */
function parseLog(value: string | undefined, json: boolean): boolean {
  if (value === undefined || value === 'text') return false
  if (value !== 'json') {
    throw new UsageError(`--log must be text or json, got ${JSON.stringify(value)}`)
  }
  if (json) throw new UsageError('--json and --log json both write to stdout: pass one of them')
  return true
}

function parseRedisUrl(value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  if (!isRedisUrl(value)) {
    throw new UsageError(
      `--redis-url must be a redis:// or rediss:// URL, got ${JSON.stringify(value)}`,
    )
  }
  return value
}

function parseRedisPrefix(value: string | undefined): string {
  if (value === undefined) return REDIS_LOCKER_DEFAULTS.prefix
  if (value === '') throw new UsageError('--redis-prefix must not be empty')
  return value
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      dir: { type: 'string' },
      'expire-after': { type: 'string' },
      'partial-hold': { type: 'string' },
      'id-pattern': { type: 'string' },
      'redis-url': { type: 'string' },
      'redis-prefix': { type: 'string' },
      'dry-run': { type: 'boolean' },
      json: { type: 'boolean' },
      log: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean' },
    },
  })
}

export interface MainDeps {
  /** A lock shared with the servers on the directory (Redis); without one, removals take none. */
  locker?: SweepLocker
  stdout?: (text: string) => void
  stderr?: (text: string) => void
}

interface Row {
  id: string
  kind: Removal['kind']
  bytes: number
  lastActivity: string
  idleMs: number
}

/** Runs the CLI; resolves to the exit code. */
export async function main(argv: string[], deps: MainDeps = {}): Promise<number> {
  const out = deps.stdout ?? ((text) => process.stdout.write(text))
  const err = deps.stderr ?? ((text) => process.stderr.write(text))
  let command: Parsed
  try {
    command = parseCommand(argv)
  } catch (error) {
    if (!(error instanceof UsageError)) throw error
    err(`fastify-tus: ${error.message}\nRun fastify-tus --help for usage.\n`)
    return EXIT.usage
  }
  if (command.kind === 'help') {
    out(`${HELP}\n`)
    return EXIT.ok
  }
  if (command.kind === 'version') {
    out(`${packageVersion()}\n`)
    return EXIT.ok
  }

  // `--log json`: the records a server's sweep writes, through pino, on stdout. Level debug:
  // a sweep that removed nothing leaves its record too (a server logs it at debug).
  const log = command.logJson
    ? pino({ level: 'debug' }, { write: (line: string) => out(line) }).child({
        plugin: 'fastify-tus',
      })
    : undefined

  const check = await checkStore(command.directory, { idPattern: command.idPattern })
  if (!check.ok) {
    if (log)
      log.error(
        { directory: command.directory, reason: check.reason },
        'fastify-tus: refusing to sweep',
      )
    else err(`fastify-tus: refusing to sweep: ${check.reason}\n`)
    return EXIT.usage
  }

  const claim = await claimDirectory(command, (error) => {
    if (log) log.error({ err: error }, 'fastify-tus: refusing to sweep')
    else err(`fastify-tus: refusing to sweep: ${describe(error).replace(/^fastify-tus: /, '')}\n`)
  })
  if (claim === 'refused') return EXIT.usage

  let redis: { locker: RedisLocker; client: Redis } | undefined
  if (command.redisUrl && !deps.locker) {
    try {
      // A Redis lost mid-sweep fails the locks fast instead of queueing them.
      const client = await connectRedis(command.redisUrl, { maxRetriesPerRequest: 2 })
      // Failures surface as failed lock attempts, counted in the report; no console noise.
      client.on('error', () => {})
      redis = { client, locker: new RedisLocker({ client, prefix: command.redisPrefix }) }
    } catch (error) {
      if (log) log.error({ err: error }, 'fastify-tus: cannot reach Redis')
      else err(`fastify-tus: ${describe(error)}\n`)
      await claim?.release()
      return EXIT.failed
    }
  }
  const locker = deps.locker ?? redis?.locker

  const controller = new AbortController()
  let stoppedBy: 'SIGINT' | 'SIGTERM' | undefined
  const onSignal = (signal: 'SIGINT' | 'SIGTERM') => {
    if (stoppedBy) process.exit(EXIT[signal]) // a second signal: now
    stoppedBy = signal
    if (log) log.warn({ signal }, 'fastify-tus: stopping after the entries under way')
    else err(`fastify-tus: ${signal}: stopping after the entries under way (again to exit now)\n`)
    controller.abort()
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)

  const rows: Row[] = []
  let report: SweepReport
  try {
    const { directory, expireAfterMs, dryRun } = command
    if (log) log.info({ directory, expireAfterMs, dryRun }, 'fastify-tus: sweeping')
    else {
      err(
        `fastify-tus: sweeping ${directory} (expire after ${ms(expireAfterMs)}` +
          `${dryRun ? ', dry run' : ''})\n`,
      )
    }
    const at = Date.now()
    const tokens = await claim?.liveTokens()
    report = await sweepDirectory({
      holders: tokens && { tokens, at },
      directory: command.directory,
      expireAfterMs: command.expireAfterMs,
      partialHoldMs: command.partialHoldMs,
      idPattern: command.idPattern,
      dryRun: command.dryRun,
      locker,
      signal: controller.signal,
      log: log ?? {
        warn: (obj, msg) => {
          const { id, err: cause } = obj as { id?: string; err?: unknown }
          err(`fastify-tus: ${msg.replace(/^fastify-tus /, '')}: ${id}: ${describe(cause)}\n`)
        },
      },
      onRemove: (removal) => {
        log?.info(
          {
            id: removal.id,
            kind: removal.kind,
            bytes: removal.bytes,
            lastActivity: removal.lastActivity.toISOString(),
            dryRun: command.dryRun,
          },
          command.dryRun ? 'fastify-tus: would remove' : 'fastify-tus: removed',
        )
        rows.push({
          id: removal.id,
          kind: removal.kind,
          bytes: removal.bytes,
          lastActivity: removal.lastActivity.toISOString(),
          idleMs: Date.now() - removal.lastActivity.getTime(),
        })
      },
    })
  } catch (error) {
    if (log) log.error({ err: error }, 'fastify-tus sweep failed')
    else err(`fastify-tus: sweep failed: ${describe(error)}\n`)
    return EXIT.failed
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await redis?.locker.close()
    await redis?.client.quit().catch(() => {})
    await claim?.release()
  }

  rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  if (log) {
    logReport(log, report)
  } else if (command.json) {
    const { directory, expireAfterMs } = command
    out(`${JSON.stringify({ directory, expireAfterMs, report, removed: rows }, null, 2)}\n`)
  } else {
    out(table(rows) + summary(report))
  }
  if (stoppedBy) return EXIT[stoppedBy]
  return report.errors > 0 ? EXIT.failed : EXIT.ok
}

/**
 * Holds the directory while the sweep runs (a dry run removes nothing and holds nothing), or
 * `refused` when a server serves it without sharing Redis with this sweep: neither would see
 * the other's locks (store/directory-holders.ts).
 */
async function claimDirectory(
  command: SweepCommand,
  onRefusal: (error: unknown) => void,
): Promise<DirectoryClaim | undefined | 'refused'> {
  if (command.dryRun) return undefined
  try {
    const prefix = command.redisUrl === undefined ? undefined : command.redisPrefix
    return await joinHolders(command.directory, prefix, 'fastify-tus sweep')
  } catch (error) {
    onRefusal(error)
    return 'refused'
  }
}

function table(rows: Row[]): string {
  if (rows.length === 0) return ''
  const cells = rows.map((r) => [r.id, r.kind, formatBytes(r.bytes), formatIdle(r.idleMs)])
  const all = [['ID', 'KIND', 'SIZE', 'IDLE'], ...cells]
  const widths = [0, 1, 2].map((i) => Math.max(...all.map((row) => (row[i] as string).length)))
  const line = (row: string[]) =>
    [
      (row[0] as string).padEnd(widths[0] as number),
      (row[1] as string).padEnd(widths[1] as number),
      (row[2] as string).padStart(widths[2] as number),
      row[3],
    ].join('  ')
  return `${all.map(line).join('\n')}\n\n`
}

function summary(report: SweepReport): string {
  const removed = report.dryRun ? 'would remove' : 'removed'
  const parts = [
    `scanned ${report.scanned}`,
    `${removed} ${report.removed} (${report.orphans} orphans${report.partials > 0 ? `, ${report.partials} partial uploads` : ''})`,
    `${report.dryRun ? 'would free' : 'freed'} ${formatBytes(report.bytesFreed)}`,
    `errors ${report.errors}`,
    `skipped busy ${report.skippedBusy}`,
    `${report.durationMs} ms`,
  ]
  const notes = [
    report.dryRun ? ' (dry run: nothing removed)' : '',
    report.aborted ? ' (interrupted: not every entry was examined)' : '',
  ]
  return `${parts.join(', ')}${notes.join('')}\n`
}

/** 1023 B, 1.2 KiB, 3.4 MiB, ... */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`
}

/** The two largest units: 45s, 3h 12m, 2d 5h. */
export function formatIdle(idleMs: number): string {
  const units: Array<[string, number]> = [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ]
  const first = units.findIndex(([, size]) => idleMs >= size)
  if (first === -1) return `${Math.max(0, Math.round(idleMs))}ms`
  const [bigName, bigSize] = units[first] as [string, number]
  const big = Math.floor(idleMs / bigSize)
  const next = units[first + 1]
  const small = next ? Math.floor((idleMs - big * bigSize) / next[1]) : 0
  return next && small > 0 ? `${big}${bigName} ${small}${next[0]}` : `${big}${bigName}`
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
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
