/**
 * The built-in store's pending hand-overs (`FinishRecords`): one small JSON file per upload in
 * the folder `.fastify-tus-finishing` of the store, so that a finished upload whose hook has not
 * succeeded is found again after a restart or a kill -9, by this process or another one on the
 * directory. The sweep and the quota skip the store's dot-folders (walk.ts), so these files are
 * neither uploads nor counted.
 */
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import type { FinishRecords, PendingFinish } from '../backend.js'
import { FINISHING_DIRECTORY, isTempName, tempNameFor } from './names.js'

export class FileFinishRecords implements FinishRecords {
  readonly folder: string

  constructor(directory: string) {
    this.folder = path.join(directory, FINISHING_DIRECTORY)
  }

  /**
   * Written synchronously, as `forget` unlinks: every finished upload takes this path, and a
   * tiny file's open-write-close through libuv's pool cost the process several times the calls
   * themselves (BENCHMARKS.md, "Figures behind choices").
   */
  async remember(id: string): Promise<boolean> {
    const record: PendingFinish = { id, since: Date.now(), attempts: 0 }
    try {
      // `wx`: a record there already (a failed run's) keeps its attempts.
      this.#writeNow(this.#fileOf(id), JSON.stringify(record))
      return true
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
      return false
    }
  }

  async update(record: PendingFinish): Promise<void> {
    // Written beside and renamed over: a reader never sees half a record.
    const file = this.#fileOf(record.id)
    const temp = tempNameFor(file)
    await this.#write(temp, record, 'w')
    await fsp.rename(temp, file)
  }

  async read(id: string): Promise<PendingFinish | undefined> {
    return readRecord(this.#fileOf(id), id)
  }

  async forget(id: string): Promise<void> {
    try {
      fs.unlinkSync(this.#fileOf(id))
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
    }
  }

  async list(): Promise<PendingFinish[]> {
    let names: string[]
    try {
      names = await fsp.readdir(this.folder)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw error
    }
    const records = await Promise.all(
      names
        .filter((name) => name.endsWith(RECORD_SUFFIX) && !isTempName(name))
        .map((name) => readRecord(path.join(this.folder, name), idOfName(name))),
    )
    return records
      .filter((record): record is PendingFinish => record !== undefined)
      .sort((a, b) => a.since - b.since)
  }

  #fileOf(id: string): string {
    // Nested ids (`a/b`) are one name here: the folder stays flat.
    return path.join(this.folder, `${encodeURIComponent(id)}${RECORD_SUFFIX}`)
  }

  /** Creates `file` (never over an existing one) with `text`, and the folder when missing. */
  #writeNow(file: string, text: string): void {
    try {
      fs.writeFileSync(file, text, { flag: 'wx' })
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
      fs.mkdirSync(this.folder, { recursive: true })
      fs.writeFileSync(file, text, { flag: 'wx' })
    }
  }

  async #write(file: string, record: PendingFinish, flag: 'w' | 'wx'): Promise<void> {
    const text = JSON.stringify(record)
    try {
      await fsp.writeFile(file, text, { flag })
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
      await fsp.mkdir(this.folder, { recursive: true })
      await fsp.writeFile(file, text, { flag })
    }
  }
}

const RECORD_SUFFIX = '.json'

function idOfName(name: string): string {
  return decodeURIComponent(name.slice(0, -RECORD_SUFFIX.length))
}

/**
 * A record as written; one cut short by a crash while it was first written is still a pending
 * hand-over (its upload may have finished), dated by its file.
 */
async function readRecord(file: string, id: string): Promise<PendingFinish | undefined> {
  let text: string
  try {
    text = await fsp.readFile(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
  try {
    const parsed = JSON.parse(text) as Partial<PendingFinish>
    if (typeof parsed.since === 'number' && typeof parsed.attempts === 'number') {
      return { ...parsed, id } as PendingFinish
    }
  } catch {}
  const stats = await fsp.stat(file).catch(() => undefined)
  return { id, since: stats?.mtimeMs ?? Date.now(), attempts: 0 }
}
