/**
 * The command line of `fastify-tus sweep`: its flags as one table, which both `parseArgs` and
 * the help text read (a flag cannot be added without its line of help), and the checks that make
 * a sweep command of them or refuse them with a usage error.
 */
import path from 'node:path'
import { parseArgs } from 'node:util'
import ms from 'ms'
import { parseDuration } from '../duration.js'
import { DEFAULT_ID_PATTERN, defaultPartialHoldMs } from '../expiry/policy.js'
import { isRedisUrl } from '../redis/connect.js'
import { REDIS_LOCKER_DEFAULTS } from '../redis/locker.js'

/** A command line the CLI refuses: printed with a pointer to --help, exit code 2. */
export class UsageError extends Error {}

interface Flag {
  type: 'string' | 'boolean'
  short?: string
  /** How the help text shows the flag. */
  usage: string
  /** Its lines in the help text, wrapped by hand. */
  help: readonly string[]
}

const FLAGS = {
  dir: {
    type: 'string',
    usage: '--dir <path>',
    help: ["the store's directory (the plugin's `directory` option)"],
  },
  'expire-after': {
    type: 'string',
    usage: '--expire-after <duration>',
    help: [
      'an unfinished upload idle this long expires: 10m, 2h, 1d,',
      '600000ms (a unit is required: a bare 10 is refused)',
    ],
  },
  'partial-hold': {
    type: 'string',
    usage: '--partial-hold <duration>',
    help: [
      'a finished partial upload of a parallel upload waits this long',
      "for its final, as the plugin's `partialHoldMs` option (default:",
      '--expire-after or 1d, whichever is longer)',
    ],
  },
  'id-pattern': {
    type: 'string',
    usage: '--id-pattern <regex>',
    help: [
      "names of uploads, as the plugin's `idPattern` option",
      `(default ${DEFAULT_ID_PATTERN.source})`,
    ],
  },
  'redis-url': {
    type: 'string',
    usage: '--redis-url <url>',
    help: [
      'the Redis of the servers on this directory (their `redis`',
      'option): each removal takes the same upload lock as they do',
    ],
  },
  'redis-prefix': {
    type: 'string',
    usage: '--redis-prefix <prefix>',
    help: [
      `their \`redis.prefix\` (default ${REDIS_LOCKER_DEFAULTS.prefix}; ${REDIS_LOCKER_DEFAULTS.prefix}<namespace>:`,
      'for a registration with a `namespace`)',
    ],
  },
  'dry-run': {
    type: 'boolean',
    usage: '--dry-run',
    help: ['list what would be removed; remove nothing'],
  },
  pending: {
    type: 'boolean',
    usage: '--pending',
    help: [
      'with list: the finished uploads whose onUploadFinish has not',
      'succeeded yet (the servers run it again until it does)',
    ],
  },
  json: {
    type: 'boolean',
    usage: '--json',
    help: ['print one JSON document: {directory, expireAfterMs, report, removed}'],
  },
  log: {
    type: 'string',
    usage: '--log json',
    help: [
      'write pino JSON records to stdout instead, one per removal and one',
      "for the sweep, with the fields of the servers' sweep records",
    ],
  },
  help: { type: 'boolean', short: 'h', usage: '-h, --help', help: ['this text'] },
  version: { type: 'boolean', usage: '--version', help: ['the package version'] },
} as const satisfies Record<string, Flag>

/** Where the help text's descriptions start. */
const HELP_COLUMN = 28

export const HELP = `Usage: fastify-tus sweep --dir <path> --expire-after <duration> [options]
       fastify-tus list --pending --dir <path> [--json]

Removes expired unfinished uploads and orphans from a fastify-tus file store, with the
plugin's own sweep engine, without a server. Finished uploads are never removed.

Options:
${Object.values(FLAGS).map(helpLines).join('\n')}

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

function helpLines({ usage, help }: Flag): string {
  const [first = '', ...more] = help
  const indent = ' '.repeat(HELP_COLUMN)
  return [`  ${usage.padEnd(HELP_COLUMN - 2)}${first}`, ...more.map((line) => indent + line)].join(
    '\n',
  )
}

export interface SweepCommand {
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

/** `list --pending`: the store's pending hand-overs. */
export interface ListCommand {
  kind: 'list'
  directory: string
  json: boolean
}

export type Command =
  | { kind: 'help' }
  | { kind: 'version' }
  | ({ kind: 'sweep' } & SweepCommand)
  | ListCommand

/** The command `argv` asks for; a `UsageError` when it asks for none, or wrongly. */
export function parseCommand(argv: string[]): Command {
  const { values, positionals } = parse(argv)
  if (values.help) return { kind: 'help' }
  if (values.version) return { kind: 'version' }
  if (positionals.length === 0) throw new UsageError('missing command: sweep or list')
  if (positionals.length === 1 && positionals[0] === 'list') return listCommand(values)
  if (positionals[0] !== 'sweep' || positionals.length > 1) {
    throw new UsageError(`unknown command: ${positionals.join(' ')} (the commands are sweep, list)`)
  }
  if (values.pending) throw new UsageError('--pending goes with list, not sweep')
  return { kind: 'sweep', ...sweepCommand(values) }
}

/** `list --pending --dir <path> [--json]`: the one listing there is. */
function listCommand(values: Values): ListCommand {
  if (!values.pending) throw new UsageError('list needs --pending (what to list)')
  if (values.dir === undefined || values.dir === '') {
    throw new UsageError('--dir <path> is required')
  }
  return { kind: 'list', directory: path.resolve(values.dir), json: values.json === true }
}

type Values = ReturnType<typeof parse>['values']

/** The flags of `sweep`, checked one after the other: the first problem is the one reported. */
function sweepCommand(values: Values): SweepCommand {
  if (values.dir === undefined || values.dir === '') {
    throw new UsageError('--dir <path> is required')
  }
  if (values['expire-after'] === undefined) {
    throw new UsageError('--expire-after <duration> is required (e.g. 10m, 2h)')
  }
  const expireAfterMs = durationFlag('--expire-after', values['expire-after'])
  const partialHoldMs =
    values['partial-hold'] === undefined
      ? defaultPartialHoldMs(expireAfterMs)
      : durationFlag('--partial-hold', values['partial-hold'])
  if (partialHoldMs < expireAfterMs) {
    throw new UsageError(
      `--partial-hold must be at least --expire-after (${ms(expireAfterMs)}), got ${JSON.stringify(values['partial-hold'])}`,
    )
  }
  return {
    directory: path.resolve(values.dir),
    expireAfterMs,
    partialHoldMs,
    idPattern:
      values['id-pattern'] === undefined ? DEFAULT_ID_PATTERN : idPattern(values['id-pattern']),
    dryRun: values['dry-run'] === true,
    json: values.json === true,
    logJson: logJson(values.log, values.json === true),
    redisUrl: redisUrl(values['redis-url']),
    redisPrefix: redisPrefix(values['redis-prefix']),
  }
}

function parse(argv: string[]) {
  const options = Object.fromEntries(
    Object.entries(FLAGS).map(([name, flag]) => [
      name,
      'short' in flag ? { type: flag.type, short: flag.short } : { type: flag.type },
    ]),
  ) as { [Name in keyof typeof FLAGS]: { type: (typeof FLAGS)[Name]['type']; short?: string } }
  try {
    return parseArgs({ args: argv, strict: true, allowPositionals: true, options })
  } catch (error) {
    throw new UsageError(parseArgsProblem(error as NodeJS.ErrnoException))
  }
}

/**
 * parseArgs' refusals in the CLI's words: its text for an unknown flag tells how to pass a
 * positional argument that starts with `-`, which this CLI never takes.
 */
function parseArgsProblem(error: NodeJS.ErrnoException): string {
  const flag = /'(-[^' ]+)/.exec(error.message)?.[1]
  if (flag === undefined) return error.message
  if (error.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown flag ${flag}`
  if (/argument missing/.test(error.message)) return `${flag} needs a value`
  if (/does not take an argument/.test(error.message)) return `${flag} takes no value`
  return error.message
}

/** A duration flag in `ms` syntax with its unit (`10m`, `2h`, `1.5d`, `600000ms`). */
function durationFlag(flag: string, value: string): number {
  const parsed = parseDuration(value, { min: 1 })
  if (typeof parsed === 'string') {
    throw new UsageError(`${flag} ${parsed}, got ${JSON.stringify(value)}`)
  }
  return parsed
}

function idPattern(value: string): RegExp {
  try {
    return new RegExp(value)
  } catch (error) {
    throw new UsageError(
      `--id-pattern is not a valid regular expression: ${(error as Error).message}`,
    )
  }
}

/** `--log json`: pino records on stdout; `--log text` (the default): the table and summary. */
function logJson(value: string | undefined, json: boolean): boolean {
  if (value === undefined || value === 'text') return false
  if (value !== 'json') {
    throw new UsageError(`--log must be text or json, got ${JSON.stringify(value)}`)
  }
  if (json) throw new UsageError('--json and --log json both write to stdout: pass one of them')
  return true
}

function redisUrl(value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  if (!isRedisUrl(value)) {
    throw new UsageError(
      `--redis-url must be a redis:// or rediss:// URL, got ${JSON.stringify(value)}`,
    )
  }
  return value
}

function redisPrefix(value: string | undefined): string {
  if (value === undefined) return REDIS_LOCKER_DEFAULTS.prefix
  if (value === '') throw new UsageError('--redis-prefix must not be empty')
  return value
}
