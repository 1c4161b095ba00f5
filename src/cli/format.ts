/**
 * The text the CLI prints for a sweep: a table of the removals and a summary line.
 */
import type { Removal } from '../backends/file/sweep-engine.js'
import type { SweepReport } from '../sweep/report.js'

/** A removal as the table and the JSON document show it. */
export interface Row {
  id: string
  kind: Removal['kind']
  bytes: number
  lastActivity: string
  idleMs: number
}

/** The row of a removal, its idle time counted now. */
export function rowOf(removal: Removal): Row {
  return {
    id: removal.id,
    kind: removal.kind,
    bytes: removal.bytes,
    lastActivity: removal.lastActivity.toISOString(),
    idleMs: Date.now() - removal.lastActivity.getTime(),
  }
}

/** Sorted by id: the engine reports removals as they finish, in no stable order. */
export function byId(rows: Row[]): Row[] {
  return rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
}
/** The removals, one line each in aligned columns (sizes to the right); nothing without any. */
export function table(rows: Row[]): string {
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

/** One line of counts, with notes for a dry run and for an interrupted sweep. */
export function summary(report: SweepReport): string {
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
