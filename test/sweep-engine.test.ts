/**
 * The sweep engine on its own, over real directories: what it removes, what it leaves, how it
 * reports, how it survives failing entries, and that its work is bounded.
 */
import fsSync from 'node:fs'
import fs from 'node:fs/promises'
import path from 'node:path'
import { MemoryLocker } from '@tus/server'
import { describe, expect, it } from 'vitest'
import { tempFileOf, tempFileToken, tempNameFor } from '../src/backends/file/names.js'
import { callbackFs, SweepPort } from '../src/backends/file/sweep/fs-port.js'
import { call, drive, isPromise, type Steps } from '../src/backends/file/sweep/steps.js'
import {
  asyncDirReader,
  syncDirReader,
  TreeWalk,
  type WalkEntry,
  walkTree,
} from '../src/backends/file/walk.js'
import { ActivityLocker, type SweepFs, sweepDirectory } from '../src/sweep/index.js'
import { age, exists, tempDir, writeSession, writeSessions } from './helpers/fs.js'

const HOUR = 3_600_000
const hex = (n: number) => n.toString(16).padStart(32, '0')

function warnings() {
  const records: Array<{ obj: Record<string, unknown>; msg: string }> = []
  return {
    records,
    log: {
      warn(obj: object, msg: string) {
        records.push({ obj: obj as Record<string, unknown>, msg })
      },
    },
  }
}

async function listing(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const entry of await fs.readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isDirectory()) out.push(path.relative(dir, path.join(entry.parentPath, entry.name)))
  }
  return out.sort()
}

describe('what a sweep removes', () => {
  it('removes expired unfinished uploads and keeps fresh and finished ones', async () => {
    const dir = await tempDir()
    await writeSession(dir, hex(1), { size: 100, bytes: 10, ageMs: 2 * HOUR }) // abandoned
    await writeSession(dir, hex(2), { size: undefined, bytes: 10, ageMs: 2 * HOUR }) // abandoned, deferred length
    await writeSession(dir, hex(3), { size: 100, bytes: 10, ageMs: 1000 }) // fresh
    await writeSession(dir, hex(4), { size: 10, bytes: 10, ageMs: 100 * HOUR }) // finished, old
    await writeSession(dir, hex(5), { size: 0, bytes: 0, ageMs: 100 * HOUR }) // finished, empty
    const report = await sweepDirectory({ directory: dir, expireAfterMs: HOUR })
    expect(report).toMatchObject({ scanned: 5, removed: 2, orphans: 0, errors: 0 })
    expect(report.ids.sort()).toEqual([hex(1), hex(2)])
    expect(report.bytesFreed).toBeGreaterThan(20) // data and metadata
    expect(await listing(dir)).toEqual(
      [hex(3), hex(4), hex(5)].flatMap((id) => [id, `${id}.json`]).sort(),
    )
  })

  it('removes old orphans of either half, keeps fresh ones and anything foreign', async () => {
    const dir = await tempDir()
    // Orphans, old: data without metadata, metadata without data.
    await fs.writeFile(path.join(dir, hex(1)), 'data')
    await fs.writeFile(path.join(dir, `${hex(2)}.json`), JSON.stringify({ id: hex(2), size: 5 }))
    // Orphans, fresh (a POST may be between its two writes).
    await fs.writeFile(path.join(dir, hex(3)), 'data')
    await fs.writeFile(path.join(dir, `${hex(4)}.json`), '{}')
    // Foreign files, old: a note, a pair that is not a tus record, a link, a dot-file.
    await fs.writeFile(path.join(dir, 'notes.txt'), 'keep me')
    await fs.writeFile(path.join(dir, 'report'), 'keep me')
    await fs.writeFile(path.join(dir, 'report.json'), JSON.stringify({ title: 'not an upload' }))
    await fs.writeFile(path.join(dir, hex(6)), 'keep me')
    await fs.writeFile(
      path.join(dir, `${hex(6)}.json`),
      JSON.stringify({ id: 'another-id', size: 100 }),
    )
    await fs.writeFile(path.join(dir, '.hidden'), 'keep me')
    const outside = await tempDir()
    await fs.writeFile(path.join(outside, 'target'), 'keep me')
    await fs.symlink(path.join(outside, 'target'), path.join(dir, hex(7)))
    for (const name of [
      hex(1),
      `${hex(2)}.json`,
      'notes.txt',
      'report',
      'report.json',
      hex(6),
      `${hex(6)}.json`,
      '.hidden',
    ]) {
      await age(path.join(dir, name), 2 * HOUR)
    }

    const report = await sweepDirectory({ directory: dir, expireAfterMs: HOUR })
    expect(report).toMatchObject({ removed: 2, orphans: 2, errors: 0 })
    expect(report.ids.sort()).toEqual([hex(1), hex(2)])
    expect(await listing(dir)).toEqual(
      [
        '.hidden',
        hex(3),
        `${hex(4)}.json`,
        hex(6),
        `${hex(6)}.json`,
        hex(7),
        'notes.txt',
        'report',
        'report.json',
      ].sort(),
    )
    expect(await fs.readFile(path.join(outside, 'target'), 'utf8')).toBe('keep me')
  })

  it('sweeps nested ids; nested orphans only with a matching idPattern', async () => {
    const dir = await tempDir()
    await writeSession(dir, `alice/${hex(1)}`, { size: 100, bytes: 1, ageMs: 2 * HOUR }) // abandoned
    await writeSession(dir, `alice/${hex(2)}`, { size: 1, bytes: 1, ageMs: 2 * HOUR }) // finished
    await writeSession(dir, `bob/deep/${hex(3)}`, { size: 100, bytes: 1, ageMs: 2 * HOUR }) // abandoned
    await fs.writeFile(path.join(dir, 'alice', hex(4)), 'orphan')
    await age(path.join(dir, 'alice', hex(4)), 2 * HOUR)

    const first = await sweepDirectory({ directory: dir, expireAfterMs: HOUR })
    expect(first.ids.sort()).toEqual([`alice/${hex(1)}`, `bob/deep/${hex(3)}`])
    expect(await exists(path.join(dir, 'alice', hex(4)))).toBe(true) // the default pattern is flat

    const second = await sweepDirectory({
      directory: dir,
      expireAfterMs: HOUR,
      idPattern: /^[a-z]+\/[0-9a-f]{32}$/,
    })
    expect(second.ids).toEqual([`alice/${hex(4)}`])
    expect(await listing(dir)).toEqual([`alice/${hex(2)}`, `alice/${hex(2)}.json`])
  })

  it('removes nothing when expireAfterMs is 0', async () => {
    const dir = await tempDir()
    await writeSession(dir, hex(1), { size: 100, bytes: 1, ageMs: 100 * HOUR })
    const report = await sweepDirectory({ directory: dir, expireAfterMs: 0 })
    expect(report).toMatchObject({ scanned: 0, removed: 0 })
    expect(await exists(path.join(dir, hex(1)))).toBe(true)
  })
})

describe('report', () => {
  it('lists what a dry run would remove and removes nothing', async () => {
    const dir = await tempDir()
    for (let i = 0; i < 5; i++)
      await writeSession(dir, hex(i), { size: 9, bytes: 1, ageMs: 2 * HOUR })
    const before = await listing(dir)
    const seen: string[] = []
    const dry = await sweepDirectory({
      directory: dir,
      expireAfterMs: HOUR,
      dryRun: true,
      onRemove: (r) => seen.push(r.id),
    })
    expect(dry).toMatchObject({ dryRun: true, removed: 5 })
    expect(seen.sort()).toEqual(dry.ids.sort())
    expect(await listing(dir)).toEqual(before)
    const real = await sweepDirectory({ directory: dir, expireAfterMs: HOUR })
    expect(real.ids.sort()).toEqual(dry.ids.sort())
    expect(real.bytesFreed).toBe(dry.bytesFreed)
  })

  it('caps the listed ids', async () => {
    const dir = await tempDir()
    for (let i = 0; i < 5; i++)
      await writeSession(dir, hex(i), { size: 9, bytes: 1, ageMs: 2 * HOUR })
    const report = await sweepDirectory({ directory: dir, expireAfterMs: HOUR, maxReportedIds: 2 })
    expect(report).toMatchObject({ removed: 5, idsTruncated: true })
    expect(report.ids).toHaveLength(2)
  })
})

describe('tally (the store quota count)', () => {
  it('counts what the sweep leaves: declared lengths of unfinished uploads, bytes of deferred ones and of orphans; not what it removes', async () => {
    const dir = await tempDir()
    await writeSession(dir, hex(1), { size: 300, bytes: 300 }) // finished
    await writeSession(dir, hex(2), { size: 400, bytes: 100 }) // unfinished: its length counts
    await writeSession(dir, hex(3), { size: undefined, bytes: 50 }) // deferred: its bytes
    await writeSession(dir, hex(4), { size: 9000, bytes: 10, ageMs: 2 * HOUR }) // expired
    await writeSession(dir, hex(5), { size: 600, bytes: 600, ageMs: 2 * HOUR }) // finished, old
    await fs.writeFile(path.join(dir, hex(6)), Buffer.alloc(7)) // a fresh orphan
    await fs.writeFile(path.join(dir, `${hex(7)}.json`), '{not json') // a torn record
    await fs.writeFile(path.join(dir, hex(7)), Buffer.alloc(20)) // ... its data counts

    const count = await sweepDirectory({ directory: dir, expireAfterMs: 0, tally: true })
    expect(count).toMatchObject({ removed: 0, storeBytes: 300 + 400 + 50 + 9000 + 600 + 7 + 20 })
    const sweep = await sweepDirectory({ directory: dir, expireAfterMs: HOUR, tally: true })
    expect(sweep).toMatchObject({
      removed: 1,
      ids: [hex(4)],
      storeBytes: 300 + 400 + 50 + 600 + 7 + 20,
    })
    // Without tally, nothing is counted and fresh uploads cost one lstat, as before.
    expect(
      (await sweepDirectory({ directory: dir, expireAfterMs: HOUR })).storeBytes,
    ).toBeUndefined()
  })
})

describe('failing entries', () => {
  it('removes an old upload whose record a crash left torn, as an orphan; a record of the wrong shape is an error, kept', async () => {
    const dir = await tempDir()
    await writeSession(dir, hex(1), { size: 100, bytes: 1, ageMs: 2 * HOUR })
    // Torn: what @tus/utils' truncate-then-write leaves when the process dies in between.
    await fs.writeFile(path.join(dir, hex(2)), 'x')
    await fs.writeFile(path.join(dir, `${hex(2)}.json`), '{"id": "trunc')
    await fs.writeFile(path.join(dir, hex(5)), 'x')
    await fs.writeFile(path.join(dir, `${hex(5)}.json`), '')
    await fs.writeFile(path.join(dir, hex(3)), 'x')
    await fs.writeFile(
      path.join(dir, `${hex(3)}.json`),
      JSON.stringify({ id: hex(3), size: 'big' }),
    )
    for (const f of [hex(2), hex(3), hex(5)]) await age(path.join(dir, f), 2 * HOUR)
    await writeSession(dir, hex(4), { size: 100, bytes: 1, ageMs: 2 * HOUR })
    const { records, log } = warnings()
    const report = await sweepDirectory({ directory: dir, expireAfterMs: HOUR, log })
    expect(report).toMatchObject({ removed: 4, orphans: 2, errors: 1 })
    expect(records.map((r) => r.obj.id)).toEqual([hex(3)])
    expect(await listing(dir)).toEqual([hex(3), `${hex(3)}.json`]) // never removed on a guess
  })

  it('keeps a fresh upload whose record is torn until it is older than the period', async () => {
    const dir = await tempDir()
    await fs.writeFile(path.join(dir, hex(1)), 'x')
    await fs.writeFile(path.join(dir, `${hex(1)}.json`), '')
    const report = await sweepDirectory({ directory: dir, expireAfterMs: HOUR })
    expect(report).toMatchObject({ removed: 0, errors: 0 })
    expect(await listing(dir)).toEqual([hex(1), `${hex(1)}.json`])
  })

  it('counts a failed unlink as an error and goes on (fault injected at the fs boundary)', async () => {
    const dir = await tempDir()
    for (let i = 1; i <= 4; i++)
      await writeSession(dir, hex(i), { size: 100, bytes: 1, ageMs: 2 * HOUR })
    const faulty: SweepFs = {
      ...fs,
      unlink: async (file) => {
        if (String(file).endsWith(hex(2)))
          throw Object.assign(new Error('EIO: i/o error, unlink'), { code: 'EIO' })
        return fs.unlink(file)
      },
    }
    const { records, log } = warnings()
    const report = await sweepDirectory({ directory: dir, expireAfterMs: HOUR, fs: faulty, log })
    expect(report).toMatchObject({ removed: 3, errors: 1 })
    expect(records).toHaveLength(1)
    expect(records[0]?.obj).toMatchObject({ id: hex(2), err: { code: 'EIO' } })
    expect(await listing(dir)).toEqual([hex(2), `${hex(2)}.json`])
  })

  it('does not count an entry that vanished before it was examined (a DELETE, another sweeper)', async () => {
    const dir = await tempDir()
    for (let i = 1; i <= 3; i++)
      await writeSession(dir, hex(i), { size: 100, bytes: 1, ageMs: 2 * HOUR })
    const vanishing: SweepFs = {
      ...fs,
      lstat: (async (file: string) => {
        // A client's DELETE between the listing and the look: both halves go.
        if (file.endsWith(hex(1)))
          await Promise.all([fs.rm(file), fs.rm(`${file}.json`)]).catch(() => {})
        return fs.lstat(file)
      }) as SweepFs['lstat'],
    }
    const { records, log } = warnings()
    const report = await sweepDirectory({ directory: dir, expireAfterMs: HOUR, fs: vanishing, log })
    expect(report).toMatchObject({ removed: 2, errors: 0 })
    expect(report.ids.sort()).toEqual([hex(2), hex(3)])
    expect(records).toEqual([])
  })

  it('counts only what it removed itself when another sweeper removes the same uploads', async () => {
    const dir = await tempDir()
    for (let i = 1; i <= 40; i++)
      await writeSession(dir, hex(i), { size: 100, bytes: 1, ageMs: 2 * HOUR })
    const { records, log } = warnings()
    const [a, b] = await Promise.all(
      [1, 2].map(() => sweepDirectory({ directory: dir, expireAfterMs: HOUR, log })),
    )
    expect([a?.errors, b?.errors]).toEqual([0, 0])
    expect((a?.removed ?? 0) + (b?.removed ?? 0)).toBe(40)
    expect(new Set([...(a?.ids ?? []), ...(b?.ids ?? [])]).size).toBe(40)
    expect(records).toEqual([])
    expect(await listing(dir)).toEqual([])
  })

  it('rejects when the directory itself is missing', async () => {
    const dir = await tempDir()
    await expect(
      sweepDirectory({ directory: path.join(dir, 'gone'), expireAfterMs: HOUR }),
    ).rejects.toMatchObject({
      code: 'ENOENT',
    })
  })
})

/**
 * The clock the engine times its synchronous calls with (its `clock` option), moved only by the
 * test: a call during which `pass(ms)` runs took `ms` on it, and every other call took 0. A
 * stall made by holding the thread would also make calls around it slow (or slower) whenever
 * the OS gives the CPU to someone else, and the counts below are exact.
 */
function testClock() {
  let now = 0
  return {
    clock: () => now,
    pass: (ms: number) => {
      now += ms
    },
  }
}

/**
 * A `SweepFs` whose looks are counted, synchronous and through the pool, and the clock to sweep
 * with: `beforeLook(n, pass)` runs before the n-th synchronous look (from 1), and `pass(ms)`
 * makes that look last `ms`; `poolLookMs` delays every look through the pool.
 */
function countingLooks(
  beforeLook: (n: number, pass: (ms: number) => void) => void,
  poolLookMs = 0,
) {
  const { clock, pass } = testClock()
  const calls = { sync: 0, async: 0 }
  const sweepFs: SweepFs = {
    opendir: fs.opendir,
    lstat: (async (file: string) => {
      calls.async++
      if (poolLookMs > 0) await new Promise((resolve) => setTimeout(resolve, poolLookMs))
      return fs.lstat(file)
    }) as SweepFs['lstat'],
    readFile: fs.readFile,
    unlink: fs.unlink,
    opendirSync: fsSync.opendirSync,
    lstatSync: (file) => {
      calls.sync++
      beforeLook(calls.sync, pass)
      return fsSync.lstatSync(file, { throwIfNoEntry: false })
    },
  }
  return { calls, fs: sweepFs, clock }
}

/**
 * `countingLooks` whose tenth synchronous look stalls 20 ms, as a disk (or a network filesystem)
 * would; `syncAfterStall()` counts the synchronous looks after it.
 */
function stallingTenthLook(poolLookMs = 0) {
  let stalled = false
  let after = 0
  const looks = countingLooks((n, pass) => {
    if (stalled) after++
    if (n === 10) {
      pass(20)
      stalled = true
    }
  }, poolLookMs)
  return { ...looks, syncAfterStall: () => after }
}

/** `n` unfinished sessions, every third abandoned (two hours idle), the others fresh. */
async function writeThirdAbandoned(dir: string, n: number): Promise<void> {
  const ids = Array.from({ length: n }, (_, i) => hex(i))
  await writeSessions(
    dir,
    ids.filter((_, i) => i % 3 === 0),
    { size: 100, bytes: 1, ageMs: 2 * HOUR },
  )
  await writeSessions(
    dir,
    ids.filter((_, i) => i % 3 !== 0),
    { size: 100, bytes: 1 },
  )
}

describe('bounded work', () => {
  it('never has more than `concurrency` file operations under way, however large the directory', async () => {
    const dir = await tempDir()
    // Hundreds of entries: a sweep that did not bound its work would have hundreds under way.
    const n = 600
    await writeThirdAbandoned(dir, n)
    let inFlight = 0
    let peak = 0
    const counted =
      <A extends unknown[], R>(fn: (...args: A) => Promise<R>) =>
      async (...args: A): Promise<R> => {
        inFlight++
        peak = Math.max(peak, inFlight)
        try {
          return await fn(...args)
        } finally {
          inFlight--
        }
      }
    const countingFs: SweepFs = {
      opendir: fs.opendir,
      lstat: counted(fs.lstat) as SweepFs['lstat'],
      readFile: counted(fs.readFile) as SweepFs['readFile'],
      unlink: counted(fs.unlink),
    }
    const report = await sweepDirectory({
      directory: dir,
      expireAfterMs: HOUR,
      fs: countingFs,
      concurrency: 4,
    })
    expect(report).toMatchObject({ scanned: n, removed: n / 3, errors: 0 })
    expect(peak).toBeGreaterThan(1) // it does work in parallel...
    expect(peak).toBeLessThanOrEqual(4) // ...within the bound
  })

  it('gives up synchronous calls for a while after one that held the event loop', async () => {
    const dir = await tempDir()
    await writeThirdAbandoned(dir, 60)
    const { calls, fs: slowFs, clock, syncAfterStall } = stallingTenthLook()
    const report = await sweepDirectory({ directory: dir, expireAfterMs: HOUR, fs: slowFs, clock })
    expect(report).toMatchObject({ removed: 20, errors: 0 })
    expect(calls.sync).toBe(10)
    expect(syncAfterStall()).toBe(0)
    expect(calls.async).toBeGreaterThan(50)
    expect((await listing(dir)).length).toBe(80)
  })

  it('takes synchronous looks up again a while after it gave them up', async () => {
    const dir = await tempDir()
    await writeThirdAbandoned(dir, 120)
    // Looks through the pool take 100 ms here: 120 of them, 8 at a time, last about 1.5 s.
    const { calls, fs: slowFs, clock, syncAfterStall } = stallingTenthLook(100)
    const report = await sweepDirectory({ directory: dir, expireAfterMs: HOUR, fs: slowFs, clock })
    expect(report).toMatchObject({ removed: 40, errors: 0 })
    expect(calls.async).toBeGreaterThan(0)
    // A second later, the looks were synchronous again.
    expect(syncAfterStall()).toBeGreaterThan(0)
    expect((await listing(dir)).length).toBe(160)
  })

  it('keeps synchronous looks through one slow call (a busy machine), gives them up after slow call upon slow call (a cold disk)', async () => {
    const sweepWithSlowLooks = async (slow: (n: number) => boolean) => {
      const dir = await tempDir()
      await writeThirdAbandoned(dir, 60)
      // Slow, not stalled: 8 ms, over 5 ms and under 15 ms.
      const {
        calls,
        fs: slowFs,
        clock,
      } = countingLooks((n, pass) => {
        if (slow(n)) pass(8)
      })
      const report = await sweepDirectory({
        directory: dir,
        expireAfterMs: HOUR,
        fs: slowFs,
        clock,
      })
      expect(report).toMatchObject({ removed: 20, errors: 0 })
      expect((await listing(dir)).length).toBe(80)
      return calls
    }
    const once = await sweepWithSlowLooks((n) => n === 10)
    expect(once.async).toBe(0)
    expect(once.sync).toBeGreaterThan(60)
    const again = await sweepWithSlowLooks((n) => n >= 10)
    expect(again.sync).toBe(12)
    expect(again.async).toBeGreaterThan(50)
  })

  it('after a slow record read, reads records on the pool and keeps its looks synchronous', async () => {
    const dir = await tempDir()
    await writeThirdAbandoned(dir, 60)
    const calls = { lstatSync: 0, readSync: 0, readAsync: 0, lstatAsync: 0 }
    const { clock, pass } = testClock()
    const slowReadFs: SweepFs = {
      opendir: fs.opendir,
      lstat: ((file: string) => {
        calls.lstatAsync++
        return fs.lstat(file)
      }) as SweepFs['lstat'],
      readFile: ((file: string) => {
        calls.readAsync++
        return fs.readFile(file, 'utf8')
      }) as SweepFs['readFile'],
      unlink: fs.unlink,
      opendirSync: fsSync.opendirSync,
      lstatSync: (file) => {
        calls.lstatSync++
        return fsSync.lstatSync(file, { throwIfNoEntry: false })
      },
      readFileSync: (file) => {
        calls.readSync++
        // The first synchronous read stalls as a cold disk would: 20 ms.
        if (calls.readSync === 1) pass(20)
        return fsSync.readFileSync(file, 'utf8')
      },
      unlinkSync: fsSync.unlinkSync,
    }
    const report = await sweepDirectory({
      directory: dir,
      expireAfterMs: HOUR,
      fs: slowReadFs,
      clock,
    })
    expect(report).toMatchObject({ removed: 20, errors: 0 })
    // One read was synchronous, the slow one; every later read went to the pool (the first looks
    // at 19 expired uploads, the looks under their locks at all 20).
    expect(calls.readSync).toBe(1)
    expect(calls.readAsync).toBe(19 + 20)
    // The looks stayed synchronous.
    expect(calls.lstatAsync).toBe(0)
    expect(calls.lstatSync).toBeGreaterThanOrEqual(60)
    expect((await listing(dir)).length).toBe(80)
  })

  it("removes uploads of an in-process locker without entries in MemoryLocker's table, and skips one held there", async () => {
    const dir = await tempDir()
    await writeThirdAbandoned(dir, 30)
    const memory = new MemoryLocker()
    const locker = new ActivityLocker(memory)
    // Someone holds the lock of one abandoned upload through the MemoryLocker itself.
    const heldId = hex(3)
    let askedToRelease = false
    const held = memory.newLock(heldId)
    await held.lock(new AbortController().signal, () => {
      askedToRelease = true
    })
    const tableDuringRemovals: number[] = []
    const report = await sweepDirectory({
      directory: dir,
      expireAfterMs: HOUR,
      locker,
      onRemove: () => tableDuringRemovals.push(memory.locks.size),
    })
    expect(report).toMatchObject({ removed: 9, skippedBusy: 1, errors: 0 })
    expect(report.ids).not.toContain(heldId)
    expect(askedToRelease).toBe(false)
    // Every removal ran with only the other holder's entry in the table.
    expect(tableDuringRemovals).toEqual(Array(9).fill(1))
    expect(await exists(path.join(dir, heldId))).toBe(true)
    await held.unlock()
    expect(memory.locks.size).toBe(0)
  })

  it('stops between entries when its signal aborts', async () => {
    const dir = await tempDir()
    const ids = Array.from({ length: 200 }, (_, i) => hex(i))
    await writeSessions(dir, ids, { size: 100, bytes: 1, ageMs: 2 * HOUR })
    const controller = new AbortController()
    const report = await sweepDirectory({
      directory: dir,
      expireAfterMs: HOUR,
      signal: controller.signal,
      concurrency: 2,
      onRemove: () => controller.abort(),
    })
    expect(report.aborted).toBe(true)
    expect(report.removed).toBeLessThanOrEqual(2)
    expect((await listing(dir)).length).toBe(400 - 2 * report.removed)
  })
})

describe('the fs port, the walk and the steps under the engine', () => {
  /** Every entry of a `TreeWalk`, and whether every `next()` answered synchronously. */
  async function walkAll(walk: TreeWalk) {
    const entries: WalkEntry[] = []
    let allSync = true
    for (;;) {
      const next = walk.next()
      if (isPromise(next)) allSync = false
      const entry = await next
      if (entry === undefined) return { entries, allSync }
      entries.push(entry)
    }
  }

  it('walks a tree the same through synchronous and asynchronous directory reads', async () => {
    const dir = await tempDir()
    await fs.mkdir(path.join(dir, 'a/b'), { recursive: true })
    for (const name of ['one', 'two.json', 'a/three', 'a/b/four', '.hidden']) {
      await fs.writeFile(path.join(dir, name), 'x')
    }
    await fs.writeFile(tempNameFor(path.join(dir, 'a/three.json')), '{}')
    await fs.symlink(path.join(dir, 'one'), path.join(dir, 'link'))
    const sync = await walkAll(new TreeWalk(dir, syncDirReader()))
    const viaPool = await walkAll(new TreeWalk(dir, asyncDirReader()))
    expect(sync.allSync).toBe(true)
    expect(viaPool.allSync).toBe(false)
    const sorted = (entries: WalkEntry[]) => entries.map((e) => `${e.kind} ${e.path}`).sort()
    expect(sorted(sync.entries)).toEqual(sorted(viaPool.entries))
    expect(sorted(sync.entries)).toEqual([
      'file a/b/four',
      'file a/three',
      'file one',
      'file two.json',
      'link link',
      expect.stringMatching(/^temp a\/\.fastify-tus-tmp\.[0-9a-f]+\.three\.json$/),
    ])
  })

  it('reports an unreadable subdirectory and goes on, but fails on the root, either way', async () => {
    const dir = await tempDir()
    await fs.mkdir(path.join(dir, 'sub'))
    await fs.writeFile(path.join(dir, 'sub/inside'), 'x')
    await fs.writeFile(path.join(dir, 'top'), 'x')
    const refusing = (opendir: typeof fs.opendir) =>
      ((file: string, options?: fsSync.OpenDirOptions) =>
        file.endsWith('/sub')
          ? Promise.reject(Object.assign(new Error('EACCES'), { code: 'EACCES' }))
          : opendir(file, options)) as typeof fs.opendir
    const refusingSync = ((file: string, options?: fsSync.OpenDirOptions) => {
      if (file.endsWith('/sub')) throw Object.assign(new Error('EACCES'), { code: 'EACCES' })
      return fsSync.opendirSync(file, options)
    }) as typeof fsSync.opendirSync
    for (const reader of [asyncDirReader(refusing(fs.opendir)), syncDirReader(refusingSync)]) {
      const { entries } = await walkAll(new TreeWalk(dir, reader))
      expect(entries.map((e) => `${e.kind} ${e.path}`).sort()).toEqual([
        'file top',
        'unreadable-directory sub',
      ])
      const gone = new TreeWalk(path.join(dir, 'gone'), reader)
      await expect(Promise.resolve().then(() => gone.next())).rejects.toMatchObject({
        code: 'ENOENT',
        message: expect.stringContaining(path.join(dir, 'gone')),
      })
    }
  })

  it('walkTree stops after maxEntries and closes the directory it leaves', async () => {
    const dir = await tempDir()
    for (let i = 0; i < 10; i++) await fs.writeFile(path.join(dir, `f${i}`), 'x')
    const kinds: string[] = []
    for await (const entry of walkTree(dir, { maxEntries: 4 })) kinds.push(entry.kind)
    expect(kinds).toEqual(['file', 'file', 'file', 'file', 'truncated'])
    let closed = 0
    const counting = (async (file: string, options?: fsSync.OpenDirOptions) => {
      const handle = await fs.opendir(file, options)
      const close = handle.close.bind(handle)
      handle.close = (() => {
        closed++
        return close()
      }) as typeof handle.close
      return handle
    }) as typeof fs.opendir
    for await (const _ of walkTree(dir, { opendir: counting })) break
    expect(closed).toBe(1)
  })

  it('answers on the spot while a kind of call is on, through the pool once it is off; a pinned port always on the spot', async () => {
    const dir = await tempDir()
    await writeSession(dir, hex(1), { size: 100, bytes: 1 })
    const file = path.join(dir, hex(1))
    let now = 0
    const slowLooks: SweepFs = {
      ...callbackFs,
      lstatSync: (f) => {
        now += 20 // every synchronous look stalls: the first turns looks off
        return fsSync.lstatSync(f, { throwIfNoEntry: false })
      },
    }
    const port = SweepPort.of(slowLooks, () => now)
    const pinned = port.pinned() as SweepPort
    expect(pinned).toBeInstanceOf(SweepPort)
    const first = port.stat(file)
    expect(isPromise(first)).toBe(false)
    expect((first as fsSync.Stats).size).toBe(1)
    expect(port.allOn()).toBe(false)
    expect(port.pinned()).toBeUndefined()
    const second = port.stat(file)
    expect(isPromise(second)).toBe(true)
    expect((await second)?.size).toBe(1)
    // Records and unlinks have breakers of their own: still on.
    expect(isPromise(port.readRecord(`${file}.json`))).toBe(false)
    // The pinned view keeps looking synchronously (a removal's section under way).
    expect(isPromise(pinned.stat(file))).toBe(false)
    expect(isPromise(pinned.exists(file))).toBe(false)
  })

  it('answers a missing file with undefined or false, on the spot and through the pool alike', async () => {
    const dir = await tempDir()
    const missing = path.join(dir, 'missing')
    const underFile = path.join(dir, 'file', 'below') // ENOTDIR
    await fs.writeFile(path.join(dir, 'file'), 'x')
    const ports = [SweepPort.of(callbackFs, () => 0), SweepPort.of({ ...fs }, () => 0)]
    for (const port of ports) {
      for (const file of [missing, underFile]) {
        expect(await port.stat(file)).toBeUndefined()
        expect(await port.exists(file)).toBe(false)
        expect(await port.readRecord(file)).toBeUndefined()
        expect(await port.unlink(file, 1)).toBe(false)
      }
    }
    // A file over 1 MiB is unlinked through the pool, a smaller one on the spot.
    const port = SweepPort.of(callbackFs, () => 0)
    await fs.writeFile(path.join(dir, 'big'), Buffer.alloc(1024 * 1024 + 1))
    const big = port.unlink(path.join(dir, 'big'), 1024 * 1024 + 1)
    expect(isPromise(big)).toBe(true)
    expect(await big).toBe(true)
    const small = port.unlink(path.join(dir, 'file'), 1)
    expect(small).toBe(true)
    expect(await exists(path.join(dir, 'big'))).toBe(false)
    expect(await exists(path.join(dir, 'file'))).toBe(false)
  })

  it('runs steps synchronously until one waits, and throws a rejection into the steps', async () => {
    const order: string[] = []
    function* steps(wait: boolean): Steps<string> {
      const a = yield* call(wait ? Promise.resolve('a') : 'a')
      order.push(a)
      try {
        yield* call(Promise.reject(new Error('refused')))
      } catch (error) {
        order.push((error as Error).message)
      }
      return 'done'
    }
    const now = drive(steps(false))
    expect(isPromise(now)).toBe(true) // the rejection is awaited
    expect(order).toEqual(['a']) // ran synchronously up to it
    expect(await now).toBe('done')
    expect(order).toEqual(['a', 'refused'])
    function* quick(): Steps<number> {
      return (yield* call(1)) + (yield* call(2))
    }
    expect(drive(quick())).toBe(3)
  })

  it('builds and parses the temporary files of the store in one place', () => {
    const temp = tempNameFor('/store/nested/abc.json')
    expect(path.dirname(temp)).toBe('/store/nested')
    expect(tempFileToken(temp)).toMatch(/^[0-9a-f]{12}$/)
    expect(tempFileOf(temp)).toEqual({ id: '/store/nested/abc', half: 'record' })
    expect(tempFileOf(tempNameFor('/store/final'))).toEqual({ id: '/store/final', half: 'data' })
    expect(tempFileToken('/store/abc.json')).toBeUndefined()
    expect(tempFileToken('/store/.fastify-tus-tmp.xyz.abc')).toBeUndefined()
  })
})
