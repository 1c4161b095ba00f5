/**
 * Does a directory look like a tus file store? The CLI asks before it sweeps, so that a wrong
 * `--dir` (a home directory, a cache of hash-named files, a loose `--id-pattern`) is refused
 * instead of swept.
 *
 * A store made by the plugin holds only `<id>` data files, `<id>.json` records of @tus/utils'
 * `Upload` (`{"id", "offset", "creation_date", ...}`), subdirectories for nested ids, and
 * dot-files (the plugin's write probe). So, over a bounded walk of the tree (dot-entries skipped,
 * links never followed):
 * - every other entry (a foreign file, a symbolic link, a FIFO) is a reason to refuse;
 * - files named like uploads must come with at least one readable tus record among the sampled
 *   `<id>.json`: names alone prove nothing (think of a cache of md5-named files);
 * - a tree without any file (an empty store) is fine: there is nothing to do;
 * - the home directory is refused outright: it often holds nothing but dot-files.
 */
import fsp from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { dataNameOfRecord, isRecordName } from '../backends/file/names.js'
import { readRecordFile } from '../backends/file/record-file.js'
import { walkTree } from '../backends/file/walk.js'
import { recordSize, wholeName } from '../expiry/policy.js'

export interface StoreCheckOptions {
  /** Names of uploads, relative paths with `/` for nested ids. */
  idPattern: RegExp
  /** Directory entries read at most, over the whole tree. */
  maxEntries?: number
  /** Metadata files read at most. */
  maxRecords?: number
}

export type StoreCheck = { ok: true } | { ok: false; reason: string }

const MAX_LISTED = 5

export async function checkStore(
  directory: string,
  { idPattern, maxEntries = 1000, maxRecords = 10 }: StoreCheckOptions,
): Promise<StoreCheck> {
  const root = path.resolve(directory)
  const rootProblem = await checkRoot(root)
  if (rootProblem) return refuse(rootProblem)
  const scan = await scanTree(root, { idPattern, maxEntries, maxRecords })
  if (typeof scan === 'string') return refuse(scan)
  const namesProblem = checkNames(scan, idPattern, maxEntries)
  if (namesProblem) return refuse(`${root} does not look like a tus file store: ${namesProblem}`)
  if (scan.records.length === 0) return { ok: true } // no files at all: an empty store
  const recordsProblem = await checkRecords(root, scan.records)
  if (recordsProblem)
    return refuse(`${root} does not look like a tus file store: ${recordsProblem}`)
  return { ok: true }
}

function refuse(reason: string): StoreCheck {
  return { ok: false, reason }
}

/** Why the root is no directory to sweep; `undefined` when it may be one. */
async function checkRoot(root: string): Promise<string | undefined> {
  if (root === path.resolve(os.homedir())) return `${root} is the home directory`
  try {
    if (!(await fsp.stat(root)).isDirectory()) return `${root} is not a directory`
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return `${root} does not exist`
    return `cannot read ${root}: ${(error as Error).message}`
  }
  return undefined
}

/** What a bounded walk of the tree found. */
interface Scan {
  /** Entries that a store does not hold, as the refusal lists them. */
  foreign: string[]
  /** The first `<id>.json` names, to read. */
  records: string[]
  /** Files named like upload data. */
  uploads: number
  /** The walk saw every entry (it stops at `maxEntries`). */
  complete: boolean
}

/** The tree's entries sorted by what they look like, or why the root cannot be read. */
async function scanTree(
  root: string,
  { idPattern, maxEntries, maxRecords }: Required<StoreCheckOptions>,
): Promise<Scan | string> {
  const isId = wholeName(idPattern)
  const scan: Scan = { foreign: [], records: [], uploads: 0, complete: true }
  // The root failing to open is a refusal (not a store we can read); an I/O error once it is
  // open, while reading entries, rejects instead.
  let rootOpened = false
  const opendir: typeof fsp.opendir = async (dir, options) => {
    const handle = await fsp.opendir(dir, options)
    rootOpened = true
    return handle
  }
  try {
    const kinds = ['file', 'link', 'special', 'unreadable-directory', 'truncated'] as const
    for await (const entry of walkTree(root, { maxEntries, opendir, kinds })) {
      const name = entry.path
      if (entry.kind === 'truncated') scan.complete = false
      else if (entry.kind === 'unreadable-directory') scan.foreign.push(`${name}/ (unreadable)`)
      else if (entry.kind === 'link') scan.foreign.push(`${name} (link)`)
      else if (entry.kind === 'special') scan.foreign.push(`${name} (special file)`)
      else if (isRecordName(name) && isId.test(dataNameOfRecord(name))) {
        if (scan.records.length < maxRecords) scan.records.push(name)
      } else if (isId.test(name)) scan.uploads++
      else scan.foreign.push(name)
    }
  } catch (error) {
    if (rootOpened) throw error
    return `cannot read ${root}: ${(error as Error).message}`
  }
  return scan
}

/** Why the names found are not a store's; `undefined` when they may be. */
function checkNames(scan: Scan, idPattern: RegExp, maxEntries: number): string | undefined {
  const { foreign, records, uploads, complete } = scan
  if (foreign.length > 0) {
    const listed = foreign.slice(0, MAX_LISTED).join(', ')
    const more = foreign.length > MAX_LISTED ? ` and ${foreign.length - MAX_LISTED} more` : ''
    const count = complete
      ? `${foreign.length} ${plural(foreign.length, 'entry', 'entries')}`
      : `${foreign.length} of its first ${maxEntries} entries`
    return (
      `${count} not named like an upload (<id> or <id>.json, id matching ${idPattern}): ` +
      `${listed}${more}. If the uploads have other ids (a custom namingFunction), pass --id-pattern.`
    )
  }
  if (records.length > 0) return undefined
  if (uploads > 0) {
    return (
      `${uploads} ${plural(uploads, 'file', 'files')} named like upload ids but no <id>.json ` +
      'upload record beside them.'
    )
  }
  if (!complete) return `no upload among its first ${maxEntries} entries.`
  return undefined
}

/** Why none of the records read is a tus upload record; `undefined` when one is. */
async function checkRecords(root: string, records: string[]): Promise<string | undefined> {
  let firstProblem = ''
  for (const name of records) {
    const problem = await recordProblem(root, name)
    if (problem === undefined) return undefined
    firstProblem ||= `${name}: ${problem}`
  }
  return (
    `none of the ${records.length} <id>.json files read is a tus upload record ` +
    `(${firstProblem}).`
  )
}

/** Why `<root>/<name>` is not a record the file store wrote; `undefined` when it is one. */
async function recordProblem(root: string, name: string): Promise<string | undefined> {
  let text: string | undefined
  try {
    // Never through a link, never blocking on a FIFO, never more than a record's size.
    text = await readRecordFile(path.join(root, name))
  } catch (error) {
    return (error as Error).message
  }
  if (text === undefined) return 'it vanished'
  let record: unknown
  try {
    record = JSON.parse(text)
    recordSize(record)
  } catch (error) {
    return (error as Error).message
  }
  const { id, offset } = record as { id?: unknown; offset?: unknown }
  const expected = dataNameOfRecord(name)
  if (id !== expected) return `its "id" is ${JSON.stringify(id)}, not "${expected}"`
  if (typeof offset !== 'number') return 'it has no numeric "offset"'
  return undefined
}

function plural(n: number, one: string, many: string): string {
  return n === 1 ? one : many
}
