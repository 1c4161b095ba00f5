/**
 * Benchmark input: a directory of upload sessions in @tus/file-store's own layout (`<id>` data
 * file + `<id>.json` record, default 32-hex ids). A share of them is abandoned (created and last
 * written an hour before the rest, unfinished); the others are fresh and unfinished.
 *
 * Generated once per size under bench/.data and reused; each contender gets a hard-linked copy
 * (`cp -al`), which is cheap and leaves the template untouched by removals.
 */
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'

export const DATA_ROOT = path.resolve('bench/.data')
const ABANDONED_AGE_MS = 3_600_000

export interface Dataset {
  dir: string
  sessions: number
  abandoned: number
  /** When the fresh sessions were last active; abandoned ones an hour before. */
  generatedAt: number
}

/**
 * An expiry period that keeps every fresh session and expires every abandoned one, however long
 * ago the template was generated.
 */
export function periodFor(dataset: Dataset, now = Date.now()): number {
  return now - dataset.generatedAt + ABANDONED_AGE_MS / 2
}

/**
 * The moment that splits the template's sessions: the abandoned ones were last active before it,
 * the fresh ones after it; `periodFor` expires exactly what is older (epoch ms).
 */
export function expiryCutoffMs(dataset: Dataset): number {
  return dataset.generatedAt - ABANDONED_AGE_MS / 2
}

export async function ensureDataset(sessions: number, abandonedShare = 0.1): Promise<Dataset> {
  const dir = path.join(DATA_ROOT, `template-${sessions}`)
  const manifest = path.join(dir, '.manifest')
  try {
    return JSON.parse(await fs.readFile(manifest, 'utf8')) as Dataset
  } catch {}
  await fs.rm(dir, { recursive: true, force: true })
  await fs.mkdir(dir, { recursive: true })
  const generatedAt = Date.now()
  const abandoned = Math.round(sessions * abandonedShare)
  const data = Buffer.alloc(512, 7)
  let next = 0
  const worker = async () => {
    for (let i = next++; i < sessions; i = next++) {
      const id = randomBytes(16).toString('hex')
      const isAbandoned =
        i % Math.round(1 / abandonedShare) === 0 && i / Math.round(1 / abandonedShare) < abandoned
      const at = new Date(isAbandoned ? generatedAt - ABANDONED_AGE_MS : generatedAt)
      const record = {
        id,
        size: 1_048_576,
        offset: 0,
        metadata: { filename: `file-${i}.bin` },
        creation_date: at.toISOString(),
      }
      const file = path.join(dir, id)
      await fs.writeFile(file, data)
      await fs.writeFile(`${file}.json`, JSON.stringify(record))
      await fs.utimes(file, at, at)
      await fs.utimes(`${file}.json`, at, at)
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker))
  const dataset: Dataset = { dir, sessions, abandoned, generatedAt }
  await fs.writeFile(manifest, JSON.stringify(dataset))
  return dataset
}

/** A hard-linked working copy of a template, without its manifest. */
export async function copyOf(dataset: Dataset, name: string): Promise<string> {
  const target = path.join(DATA_ROOT, 'runs', name)
  await fs.rm(target, { recursive: true, force: true })
  await fs.mkdir(path.dirname(target), { recursive: true })
  execFileSync('cp', ['-al', dataset.dir, target])
  await fs.rm(path.join(target, '.manifest'))
  return target
}

/** Data files and metadata files (`.json`) in `dir`, dot-files aside. */
export async function countFiles(dir: string): Promise<{ data: number; metadata: number }> {
  const counts = { data: 0, metadata: 0 }
  for await (const entry of await fs.opendir(dir, { bufferSize: 1024 })) {
    if (entry.name.startsWith('.')) continue
    if (entry.name.endsWith('.json')) counts.metadata++
    else counts.data++
  }
  return counts
}

/** Removes a working copy; `rm -rf` is quicker than Node's recursive rm on millions of entries. */
export function removeCopy(dir: string): void {
  execFileSync('rm', ['-rf', '--', dir])
}

export async function countSessions(dir: string): Promise<number> {
  let n = 0
  for await (const entry of await fs.opendir(dir))
    if (!entry.name.endsWith('.json') && !entry.name.startsWith('.')) n++
  return n
}
