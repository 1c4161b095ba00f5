/**
 * The names of the built-in store's files, built and parsed here only: an upload `<id>` is a
 * data file `<id>` and a record `<id>.json` beside it (nested ids are relative paths with `/`);
 * a file the store is writing is a dot-file `.fastify-tus-tmp.<token><counter>.<name>` beside
 * the file it will replace, `<token>` naming the process that made it; the store's other
 * dot-files and folders are named below too.
 */
import { randomBytes } from 'node:crypto'
import path from 'node:path'
import { METADATA_SUFFIX } from '../../expiry/policy.js'

export { METADATA_SUFFIX }

/** The folder of the processes serving the directory (directory-holders.ts). */
export const HOLDERS_DIRECTORY = '.fastify-tus-holders'

/** The folder of the finished uploads whose hand-over is pending (finish-records.ts). */
export const FINISHING_DIRECTORY = '.fastify-tus-finishing'

/** What the last close of a server on the directory left (downtime.ts). */
export const CLOSED_MARKER = '.fastify-tus-closed'

/** The prefix of the directory made and removed to check that the store can write. */
export const PROBE_PREFIX = '.fastify-tus-probe-'

/** The prefix of a file being written; such files are the store's own, not the user's. */
export const TEMP_PREFIX = '.fastify-tus-tmp.'

/** This process' token: the start of its temporary files' random part (12 hex digits). */
export const PROCESS_TOKEN = randomBytes(6).toString('hex')
const TOKEN_LENGTH = 12

/** The record of the upload `id` (a path relative to the store, or absolute). */
export function recordNameOf(id: string): string {
  return `${id}${METADATA_SUFFIX}`
}

/** Whether `name` (a path or a base name) is named as a record. */
export function isRecordName(name: string): boolean {
  return name.endsWith(METADATA_SUFFIX)
}

/** The upload whose record is `name` (`isRecordName`): its data file. */
export function dataNameOfRecord(name: string): string {
  return name.slice(0, -METADATA_SUFFIX.length)
}

/** Whether the base name `name` is a temporary file's (`tempNameFor`). */
export function isTempName(name: string): boolean {
  return name.startsWith(TEMP_PREFIX)
}

let tempCounter = 0

/**
 * A name for a temporary file beside `file`: unique across processes (the process' token,
 * drawn once) and within one (a counter), without drawing random bytes for every record written.
 */
export function tempNameFor(file: string): string {
  tempCounter++
  return path.join(
    path.dirname(file),
    `${TEMP_PREFIX}${PROCESS_TOKEN}${tempCounter.toString(16)}.${path.basename(file)}`,
  )
}

/**
 * The token of the process that made a temporary file (`tempNameFor`), from its name;
 * `undefined` for a name of another form.
 */
export function tempFileToken(name: string): string | undefined {
  const base = name.slice(name.lastIndexOf('/') + 1)
  if (!isTempName(base)) return undefined
  const token = base.slice(TEMP_PREFIX.length, TEMP_PREFIX.length + TOKEN_LENGTH)
  return /^[0-9a-f]{12}$/.test(token) ? token : undefined
}

/**
 * What a temporary file (`dir/.fastify-tus-tmp.<hex>.<name>`, `/`-separated) is half of: the
 * record of `dir/<id>` when `<name>` is `<id>.json`, else the data file `dir/<name>` (a final
 * upload's, being assembled: store/concatenation.ts).
 */
export function tempFileOf(file: string): { id: string; half: 'record' | 'data' } {
  const slash = file.lastIndexOf('/')
  const name = file.slice(slash + 1 + TEMP_PREFIX.length).replace(/^[0-9a-f]+\./, '')
  const dir = file.slice(0, slash + 1)
  return isRecordName(name)
    ? { id: `${dir}${dataNameOfRecord(name)}`, half: 'record' }
    : { id: `${dir}${name}`, half: 'data' }
}
