/**
 * How the parts of the built-in store find an upload's two files: its data file (`<id>`) and its
 * record (`<id>.json`, record-store.ts). The store (file-store.ts) is what provides them; its
 * parts receive it as this interface, so that none of them imports the store they make up.
 */
import fs from 'node:fs'
import { promisify } from 'node:util'
import type { RecordStore } from './record-store.js'

export interface UploadFiles {
  /** The records (`<id>.json`). */
  readonly configstore: RecordStore
  /** The data file of `id`; throws tus' 404 for an id that leaves the directory. */
  dataPathOf(id: string): string
}

/**
 * `lstat` of the request path: the callback API promisified, which is cheaper per call than
 * `fs/promises` (CONTRIBUTING.md, "File calls on the request path").
 */
export const lstat = promisify(fs.lstat)
