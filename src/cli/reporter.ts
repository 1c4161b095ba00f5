/**
 * What the CLI tells the operator, in one of three forms chosen once from the flags:
 * - text: a table and a summary line on stdout, messages on stderr;
 * - `--json`: the same messages on stderr, and one JSON document on stdout;
 * - `--log json`: everything as pino records on stdout, with the fields and messages of a
 *   server's sweep records, so that cron runs land in the same log pipeline.
 */
import ms from 'ms'
import { pino } from 'pino'
import type { Removal } from '../backends/file/sweep-engine.js'
import type { SweepReport } from '../sweep/report.js'
import { logReport, type ScheduleLogger } from '../sweep/schedule.js'
import type { SweepCommand } from './arguments.js'
import { byId, type Row, rowOf, summary, table } from './format.js'

export type Signal = 'SIGINT' | 'SIGTERM'

export interface Reporter {
  /** The directory does not look like a tus file store (why: from checkStore). */
  notAStore(directory: string, reason: string): void
  /** A server serves the directory without sharing Redis with this sweep. */
  claimRefused(error: unknown): void
  redisUnreachable(error: unknown): void
  /** The first signal: the sweep stops after the entries under way. */
  stopping(signal: Signal): void
  sweeping(command: SweepCommand): void
  /** Where the sweep engine logs an entry that failed. */
  readonly engineLog: Pick<ScheduleLogger, 'warn'>
  removed(removal: Removal, dryRun: boolean): void
  failed(error: unknown): void
  /** The sweep ended, whole or interrupted. */
  finished(report: SweepReport): void
}

export function createReporter(
  command: SweepCommand,
  out: (text: string) => void,
  err: (text: string) => void,
): Reporter {
  if (command.logJson) return new LogReporter(out)
  return command.json ? new JsonReporter(out, err, command) : new TextReporter(out, err)
}

class TextReporter implements Reporter {
  protected readonly rows: Row[] = []

  constructor(
    protected readonly out: (text: string) => void,
    protected readonly err: (text: string) => void,
  ) {}

  notAStore(_directory: string, reason: string): void {
    this.err(`fastify-tus: refusing to sweep: ${reason}\n`)
  }

  claimRefused(error: unknown): void {
    this.err(`fastify-tus: refusing to sweep: ${describe(error).replace(/^fastify-tus: /, '')}\n`)
  }

  redisUnreachable(error: unknown): void {
    this.err(`fastify-tus: ${describe(error)}\n`)
  }

  stopping(signal: Signal): void {
    this.err(`fastify-tus: ${signal}: stopping after the entries under way (again to exit now)\n`)
  }

  sweeping({ directory, expireAfterMs, dryRun }: SweepCommand): void {
    const mode = dryRun ? ', dry run' : ''
    this.err(`fastify-tus: sweeping ${directory} (expire after ${ms(expireAfterMs)}${mode})\n`)
  }

  readonly engineLog = {
    warn: (obj: object, msg: string) => {
      const { id, err: cause } = obj as { id?: string; err?: unknown }
      this.err(`fastify-tus: ${msg.replace(/^fastify-tus /, '')}: ${id}: ${describe(cause)}\n`)
    },
  }

  removed(removal: Removal): void {
    this.rows.push(rowOf(removal))
  }

  failed(error: unknown): void {
    this.err(`fastify-tus: sweep failed: ${describe(error)}\n`)
  }

  finished(report: SweepReport): void {
    this.out(table(byId(this.rows)) + summary(report))
  }
}

/** `--json`: the text reporter's messages, and one document instead of the table. */
class JsonReporter extends TextReporter {
  constructor(
    out: (text: string) => void,
    err: (text: string) => void,
    private readonly command: SweepCommand,
  ) {
    super(out, err)
  }

  override finished(report: SweepReport): void {
    const { directory, expireAfterMs } = this.command
    const document = { directory, expireAfterMs, report, removed: byId(this.rows) }
    this.out(`${JSON.stringify(document, null, 2)}\n`)
  }
}

/** `--log json`: pino records on stdout. */
class LogReporter implements Reporter {
  readonly #log: ScheduleLogger

  constructor(out: (text: string) => void) {
    // Level debug: a sweep that removed nothing leaves its record too (a server logs it at debug).
    this.#log = pino({ level: 'debug' }, { write: (line: string) => out(line) }).child({
      plugin: 'fastify-tus',
    })
  }

  notAStore(directory: string, reason: string): void {
    this.#log.error({ directory, reason }, 'fastify-tus: refusing to sweep')
  }

  claimRefused(error: unknown): void {
    this.#log.error({ err: error }, 'fastify-tus: refusing to sweep')
  }

  redisUnreachable(error: unknown): void {
    this.#log.error({ err: error }, 'fastify-tus: cannot reach Redis')
  }

  stopping(signal: Signal): void {
    this.#log.warn({ signal }, 'fastify-tus: stopping after the entries under way')
  }

  sweeping({ directory, expireAfterMs, dryRun }: SweepCommand): void {
    this.#log.info({ directory, expireAfterMs, dryRun }, 'fastify-tus: sweeping')
  }

  get engineLog(): ScheduleLogger {
    return this.#log
  }

  removed(removal: Removal, dryRun: boolean): void {
    const { id, kind, bytes } = removal
    const lastActivity = removal.lastActivity.toISOString()
    const msg = dryRun ? 'fastify-tus: would remove' : 'fastify-tus: removed'
    this.#log.info({ id, kind, bytes, lastActivity, dryRun }, msg)
  }

  failed(error: unknown): void {
    this.#log.error({ err: error }, 'fastify-tus sweep failed')
  }

  finished(report: SweepReport): void {
    logReport(this.#log, report)
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
