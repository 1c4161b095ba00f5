/**
 * Real directories: temporary ones, upload sessions written in the file store's layout, and what
 * a tree holds.
 */
import { createHash } from 'node:crypto'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { afterTest } from './cleanup.js'
import { waitFor } from './wait.js'

/** A new empty directory under the OS temp dir, removed after the test. */
export async function tempDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'fastify-tus-test-'))
  afterTest(() => fs.rm(dir, { recursive: true, force: true }))
  return dir
}

export async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  )
}

export async function sha256(file: string): Promise<string> {
  return createHash('sha256')
    .update(await fs.readFile(file))
    .digest('hex')
}

/** Sets a file's mtime `ms` into the past: an upload last active that long ago. */
export async function age(file: string, ms: number): Promise<void> {
  const when = new Date(Date.now() - ms)
  await fs.utimes(file, when, when)
}

/**
 * Writes an upload session in the file store's own layout: data file `<id>` with `bytes`
 * bytes and `<id>.json`, both last touched `ageMs` ago.
 */
export async function writeSession(
  dir: string,
  id: string,
  { size, bytes, ageMs = 0 }: { size: number | undefined; bytes: number; ageMs?: number },
): Promise<void> {
  const data = path.join(dir, id)
  await fs.mkdir(path.dirname(data), { recursive: true })
  await fs.writeFile(data, Buffer.alloc(bytes, 1))
  const record = {
    id,
    size,
    offset: 0,
    metadata: {},
    creation_date: new Date(Date.now() - ageMs).toISOString(),
  }
  await fs.writeFile(`${data}.json`, JSON.stringify(record))
  if (ageMs > 0) {
    await age(data, ageMs)
    await age(`${data}.json`, ageMs)
  }
}

/**
 * Many sessions as `writeSession` writes them, fast: every data file is a hard link of one file
 * of `bytes` bytes last touched `ageMs` ago (creating a file costs far more than linking one on
 * some disks), every record a JSON of its own id. Ids may be nested (`sub/<id>`).
 */
export async function writeSessions(
  dir: string,
  ids: string[],
  { size, bytes, ageMs = 0 }: { size: number | undefined; bytes: number; ageMs?: number },
): Promise<void> {
  const seed = path.join(await tempDir(), 'seed')
  await fs.writeFile(seed, Buffer.alloc(bytes, 1))
  if (ageMs > 0) await age(seed, ageMs)
  const creation_date = new Date(Date.now() - ageMs).toISOString()
  const one = async (id: string) => {
    const data = path.join(dir, id)
    await fs.mkdir(path.dirname(data), { recursive: true })
    await fs.link(seed, data)
    const record = { id, size, offset: 0, metadata: {}, creation_date }
    await fs.writeFile(`${data}.json`, JSON.stringify(record))
    if (ageMs > 0) await age(`${data}.json`, ageMs)
  }
  for (let i = 0; i < ids.length; i += 200) await Promise.all(ids.slice(i, i + 200).map(one))
}

/**
 * Files of the tree (not directories, not the plugin's close marker nor its servers' holder
 * files), relative, sorted.
 */
export async function listing(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true })
  return entries
    .filter((e) => !e.isDirectory() && e.name !== '.fastify-tus-closed')
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .filter((file) => !file.startsWith('.fastify-tus-holders'))
    .sort()
}

/**
 * Waits until the tree's files (as `listing` reads them) are `expected`: work left running after
 * an answer (a final's used partials being removed) may still be under way. Resolves to the
 * listing; fails with the last listing seen after `timeoutMs`.
 */
export async function listingBecomes(
  dir: string,
  expected: string[],
  timeoutMs = 5000,
): Promise<string[]> {
  const want = JSON.stringify([...expected].sort())
  let last: string[] = []
  try {
    await waitFor(
      async () => {
        last = await listing(dir)
        return JSON.stringify(last) === want
      },
      timeoutMs,
      `the listing ${want}`,
    )
  } catch {
    // The assertion below says what differs.
  }
  return last
}

/** The two files of the upload session `id`. */
export const pair = (id: string) => [id, `${id}.json`]
