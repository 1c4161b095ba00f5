/**
 * Stores of hundreds to tens of thousands of uploads: close() during the plugin's sweep of
 * 20,000 is prompt and removes nothing more; the CLI stops between entries on SIGTERM, and does
 * not hang on a FIFO deep in a store. (e2e: thousands of files take seconds to make on a disk,
 * and the CLI's sweep of them seconds of CPU.)
 */
import { execFileSync } from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { cli, startCli } from '../helpers/cli.js'
import { randomId } from '../helpers/data.js'
import { age, listing, pair, tempDir, writeSessions } from '../helpers/fs.js'
import { startServer } from '../helpers/server.js'
import { sleep, waitFor } from '../helpers/wait.js'

const HOUR = 3_600_000

/** An upload id of the default pattern, numbered. */
const hex = (i: number) => i.toString(16).padStart(32, '0')

/**
 * `count` expired unfinished sessions in the store's layout, fast: every data file is a hard link
 * of one aged file (so they share its old mtime), every record a small JSON of its own id.
 */
async function expiredSessions(dir: string, count: number): Promise<string[]> {
  const seed = path.join(dir, '.seed')
  await fs.writeFile(seed, 'x')
  const old = new Date(Date.now() - HOUR)
  await fs.utimes(seed, old, old)
  const ids = Array.from({ length: count }, (_, i) => hex(i))
  for (let i = 0; i < ids.length; i += 500) {
    await Promise.all(
      ids.slice(i, i + 500).map(async (id) => {
        await fs.link(seed, path.join(dir, id))
        const record = { id, size: 100, offset: 0, metadata: {}, creation_date: old.toISOString() }
        await fs.writeFile(path.join(dir, `${id}.json`), JSON.stringify(record))
      }),
    )
  }
  return ids
}

describe('faults', () => {
  it('close() during a sweep over 20,000 expired uploads: prompt, and nothing deleted after', async () => {
    const dir = await tempDir()
    const ids = await expiredSessions(dir, 20_000)
    const entries = ids.length * 2 + 1 // and the seed
    const server = await startServer({
      directory: dir,
      expireAfterMs: 60_000,
      cleanupIntervalMs: HOUR,
    })
    // The startup sweep is under way: close in the middle of it.
    await waitFor(
      async () => (await fs.readdir(dir)).length < entries,
      10_000,
      'the sweep to start removing',
    )
    const started = performance.now()
    await server.app.close()
    expect(performance.now() - started).toBeLessThan(3000)

    // close() recorded its time (a dot-file the sweep leaves alone); the sessions are the rest.
    const afterClose = (await fs.readdir(dir))
      .filter((name) => name !== '.fastify-tus-closed')
      .sort()
    await sleep(500)
    expect((await fs.readdir(dir)).filter((name) => name !== '.fastify-tus-closed').sort()).toEqual(
      afterClose,
    )
    const report = server.app.tusCleanup.last
    expect(report?.aborted).toBe(true)
    expect(report?.removed).toBeLessThan(ids.length)
    expect(afterClose.length).toBe(entries - 2 * (report?.removed ?? 0))
    // Whole sessions or none: no pair half removed.
    const names = new Set(afterClose)
    for (const id of ids) expect(names.has(id)).toBe(names.has(`${id}.json`))
  }, 60_000)
})

describe('the CLI on a large store', () => {
  /** Sessions under `sub/` of `dir`, idle 2 h: abandoned unfinished uploads. */
  async function abandoned(dir: string, n: number, sub = ''): Promise<string[]> {
    const ids = Array.from({ length: n }, () => (sub ? `${sub}/${randomId()}` : randomId()))
    await writeSessions(dir, ids, { size: 10, bytes: 1, ageMs: 2 * HOUR })
    return ids
  }

  it('SIGTERM stops the sweep between entries, prints what it removed, exits 143', async () => {
    // The CLI is frozen (SIGSTOP) as soon as its first removal shows on disk, so that SIGTERM
    // arrives while most of the store is still to be swept, however fast the machine is.
    const dir = await tempDir()
    const all = await abandoned(dir, 3000)
    const { child, out, exited } = startCli([
      'sweep',
      '--dir',
      dir,
      '--expire-after',
      '1h',
      '--json',
    ])
    await waitFor(
      async () => (await fs.readdir(dir)).length < 2 * all.length,
      20_000,
      'the first removal',
    )
    child.kill('SIGSTOP')
    const left = (await fs.readdir(dir)).length / 2
    expect(left).toBeGreaterThan(all.length / 2)
    child.kill('SIGTERM')
    child.kill('SIGCONT')
    const code = await exited
    expect(code, out.stderr).toBe(143)
    expect(out.stderr).toContain('SIGTERM: stopping')

    const result = JSON.parse(out.stdout)
    expect(result.report).toMatchObject({ aborted: true, errors: 0 })
    const removed: string[] = result.removed.map((r: { id: string }) => r.id)
    expect(removed).toHaveLength(result.report.removed)
    expect(removed.length).toBeLessThan(all.length)
    // What it printed is exactly what is gone, pairs whole.
    const kept = all.filter((id) => !removed.includes(id))
    expect(await listing(dir)).toEqual(kept.flatMap(pair).sort())
  })

  it('does not hang on a FIFO named like a record: counts it as an error and sweeps the rest', async () => {
    // The store check samples the first 1000 entries (500 sessions at the top level) and
    // refuses a FIFO among them; one further down (in z/) reaches the sweep itself.
    const dir = await tempDir()
    const others = await abandoned(dir, 500)
    const fifo = `z/${randomId()}`
    await fs.mkdir(path.join(dir, 'z'))
    await fs.writeFile(path.join(dir, fifo), 'x')
    await age(path.join(dir, fifo), 2 * HOUR)
    execFileSync('mkfifo', [path.join(dir, `${fifo}.json`)])
    const { code, stdout, stderr } = await cli([
      'sweep',
      '--dir',
      dir,
      '--expire-after',
      '1h',
      '--json',
    ])
    expect(code).toBe(1)
    expect(JSON.parse(stdout).report).toMatchObject({ removed: others.length, errors: 1 })
    expect(stderr).toMatch(new RegExp(`${fifo}: .*not a regular file`))
    expect(await listing(dir)).toEqual([fifo, `${fifo}.json`])
  })
})
