/**
 * `fastify-tus list --pending`: the finished uploads of a store directory whose `onUploadFinish`
 * has not succeeded yet, as the servers on it remember them (backends/file/finish-records.ts).
 * Reading only: the servers run the hooks again themselves.
 */
import ms from 'ms'
import type { PendingFinish } from '../backends/backend.js'
import { FileFinishRecords } from '../backends/file/finish-records.js'
import type { ListCommand } from './arguments.js'

export async function listPending(
  command: ListCommand,
  out: (text: string) => void,
): Promise<void> {
  const pending = await new FileFinishRecords(command.directory).list()
  if (command.json) {
    out(`${JSON.stringify({ directory: command.directory, pending: pending.map(asJson) })}\n`)
    return
  }
  if (pending.length === 0) {
    out(`No pending hand-overs in ${command.directory}.\n`)
    return
  }
  const now = Date.now()
  const rows = pending.map((record) => [
    record.id,
    String(record.attempts),
    `${ms(Math.max(0, now - record.since))} ago`,
    record.nextAt === undefined ? 'next pass' : when(record.nextAt - now),
    record.lastError ?? '',
  ])
  out(`${table([['id', 'failed runs', 'finished', 'next run', 'last error'], ...rows])}\n`)
  out(
    `${pending.length} pending hand-over${pending.length === 1 ? '' : 's'} in ${command.directory}.\n`,
  )
}

function asJson(record: PendingFinish) {
  return {
    id: record.id,
    attempts: record.attempts,
    since: new Date(record.since).toISOString(),
    nextAt: record.nextAt === undefined ? null : new Date(record.nextAt).toISOString(),
    lastError: record.lastError ?? null,
  }
}

function when(inMs: number): string {
  return inMs <= 0 ? 'due' : `in ${ms(inMs)}`
}

function table(rows: string[][]): string {
  const widths = (rows[0] ?? []).map((_, column) =>
    Math.max(...rows.map((row) => (row[column] ?? '').length)),
  )
  return rows
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
}
