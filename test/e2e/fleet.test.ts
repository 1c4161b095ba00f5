/**
 * Three real server processes (the demo server, built) on one upload directory and one real
 * Redis (REDIS_URL, default redis://127.0.0.1:6379): uploads move between instances, one sweep
 * per interval across the fleet, and an instance killed with SIGKILL.
 */
import type { ChildProcess } from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'
import { Redis } from 'ioredis'
import { describe, expect, it, onTestFinished } from 'vitest'
import { pattern, randomId, sha256Of } from '../helpers/data.js'
import { age, exists, listingBecomes, sha256, tempDir } from '../helpers/fs.js'
import { request } from '../helpers/http.js'
import { startServerProcess } from '../helpers/process.js'
import { REDIS_URL } from '../helpers/redis.js'
import { createUpload, head, patch, slowPatch, TUS } from '../helpers/tus-client.js'
import { waitFor } from '../helpers/wait.js'

const SERVER = path.resolve('dist/demo/server.js')
const INTERVAL_MS = 100

interface LogRecord {
  msg: string
  time: number
  slot?: number
  removed?: number
  [key: string]: unknown
}

interface Instance {
  name: string
  child: ChildProcess
  origin: string
  endpoint: string
  records: LogRecord[]
  /** Sweep records (they carry the lease's slot). */
  sweeps(): LogRecord[]
  exited: Promise<unknown>
}

async function startInstance(name: string, env: Record<string, string>): Promise<Instance> {
  const started = await startServerProcess(name, SERVER, {
    PATH: process.env.PATH,
    PORT: '0',
    LOG_LEVEL: 'debug',
    ...env,
  })
  const records = started.records as unknown as LogRecord[]
  return {
    ...started,
    records,
    sweeps: () => records.filter((r) => typeof r.slot === 'number'),
  }
}

/** Three instances on one directory and one Redis prefix (unique to the test). */
async function startFleet(
  directory: string,
  env: Record<string, string> = {},
  prefix = `fleet-test:${randomId()}:`,
) {
  const shared = {
    UPLOAD_DIR: directory,
    REDIS_URL,
    REDIS_PREFIX: prefix,
    REDIS_LOCK_TTL_MS: '1000',
    CLEANUP_INTERVAL_MS: String(INTERVAL_MS),
    EXPIRE_AFTER_MS: '3000',
    ...env,
  }
  return Promise.all(['a', 'b', 'c'].map((name) => startInstance(name, shared))) as Promise<
    [Instance, Instance, Instance]
  >
}

function idOf(url: string): string {
  return url.slice(url.lastIndexOf('/') + 1)
}

/** The longest run of consecutive slots among `slots`. */
function longestRun(slots: number[]): number {
  const sorted = [...new Set(slots)].sort((a, b) => a - b)
  let longest = 0
  let run = 0
  for (const [i, slot] of sorted.entries()) {
    run = i > 0 && slot === (sorted[i - 1] as number) + 1 ? run + 1 : 1
    longest = Math.max(longest, run)
  }
  return longest
}

describe('several instances on one directory and one Redis', () => {
  it('completes an upload whose PATCH requests alternate between the three instances', async () => {
    const dir = await tempDir()
    const fleet = await startFleet(dir)
    const data = pattern(9 * 64 * 1024, 7)
    const metadata = 'filename d29ybGQuanBn,is_confidential'
    const { url } = await createUpload(fleet[0].endpoint, data.length, {
      'Upload-Metadata': metadata,
    })
    const id = idOf(url)
    const chunk = 64 * 1024
    for (let offset = 0, i = 0; offset < data.length; offset += chunk, i++) {
      const instance = fleet[i % 3] as Instance
      const res = await patch(
        `${instance.endpoint}/${id}`,
        offset,
        data.subarray(offset, offset + chunk),
      )
      expect(res.status, `PATCH ${i} on ${instance.name}: ${res.body}`).toBe(204)
      expect(Number(res.headers['upload-offset'])).toBe(offset + chunk)
    }
    // Every instance describes it the same: offset, length and metadata as sent, from the disk.
    for (const instance of fleet) {
      const res = await head(`${instance.endpoint}/${id}`)
      expect(res.headers['upload-offset']).toBe(String(data.length))
      expect(res.headers['upload-length']).toBe(String(data.length))
      expect(res.headers['upload-metadata']).toBe(metadata)
    }
    expect(await sha256(path.join(dir, id))).toBe(sha256Of(data))
  })

  it('assembles a parallel upload whose partials were written on two instances and whose final is created on the third', async () => {
    const dir = await tempDir()
    const fleet = await startFleet(dir, { EXPIRE_AFTER_MS: '60000' })
    const parts = [pattern(300_000, 1), pattern(200_001, 2), pattern(1, 3), pattern(0, 4)]
    const urls: string[] = []
    for (const [i, part] of parts.entries()) {
      // Created on one instance, written in two PATCHes on the other two.
      const { url } = await createUpload((fleet[i % 3] as Instance).endpoint, part.length, {
        'Upload-Concat': 'partial',
      })
      const id = idOf(url)
      const half = Math.floor(part.length / 2)
      const halves: Array<[number, number]> = [
        [0, half],
        [half, part.length],
      ]
      for (const [n, [from, to]] of halves.entries()) {
        if (to === from) continue
        const instance = fleet[(i + n + 1) % 3] as Instance
        const res = await patch(`${instance.endpoint}/${id}`, from, part.subarray(from, to))
        expect(res.status, `PATCH of partial ${i} on ${instance.name}: ${res.body}`).toBe(204)
      }
      urls.push(url)
    }
    const res = await request(fleet[2].endpoint, 'POST', {
      ...TUS,
      'Upload-Concat': `final;${urls.join(' ')}`,
    })
    expect(res.status, res.body).toBe(201)
    const id = idOf(String(res.headers.location))
    const whole = Buffer.concat(parts)
    expect(await sha256(path.join(dir, id))).toBe(sha256Of(whole))
    for (const instance of fleet) {
      const answer = await head(`${instance.endpoint}/${id}`)
      expect(answer.headers['upload-offset']).toBe(String(whole.length))
      expect(answer.headers['upload-concat']).toMatch(/^final;/)
    }
    // The partials' bytes are gone from the shared directory; their records stay, taken by the
    // final, and every instance answers a retried creation of it with the same final.
    const kept = [id, `${id}.json`, ...urls.map((url) => `${idOf(url)}.json`)].sort()
    expect(await listingBecomes(dir, kept)).toEqual(kept)
    const retry = await request(fleet[0].endpoint, 'POST', {
      ...TUS,
      'Upload-Concat': `final;${urls.join(' ')}`,
    })
    expect(retry.status, retry.body).toBe(201)
    expect(idOf(String(retry.headers.location))).toBe(id)
  })

  it('never interleaves the writes of two clients racing on one upload from different instances', async () => {
    const dir = await tempDir()
    const fleet = await startFleet(dir)
    const size = 40 * 16 * 1024
    const { url } = await createUpload(fleet[0].endpoint, size)
    const id = idOf(url)
    const bodies = [pattern(size, 1), pattern(size, 2)]
    // The first bytes come 400 ms after the headers, so both requests get past the offset check.
    const slices = (body: Buffer) => [
      ...Array.from({ length: 16 }, () => Buffer.alloc(0)),
      ...Array.from({ length: 40 }, (_, i) => body.subarray(i * 16 * 1024, (i + 1) * 16 * 1024)),
    ]
    // Both start at offset 0 at the same moment, on two instances, and trickle in for a second:
    // without a shared lock both pass the offset check and write over each other.
    const answers = await Promise.all([
      slowPatch(`${fleet[1].endpoint}/${id}`, 0, slices(bodies[0] as Buffer), 25),
      slowPatch(`${fleet[2].endpoint}/${id}`, 0, slices(bodies[1] as Buffer), 25),
    ])

    const written = await fs.readFile(path.join(dir, id))
    const offset = Number((await head(`${fleet[0].endpoint}/${id}`)).headers['upload-offset'])
    expect(written.length).toBe(offset)
    expect(offset).toBeGreaterThan(0)
    // What is on disk is the start of one client's body, never a mix of both.
    const fromFirst = bodies[0]?.subarray(0, offset).equals(written)
    const fromSecond = bodies[1]?.subarray(0, offset).equals(written)
    expect(fromFirst || fromSecond, 'the data file mixes both bodies').toBe(true)
    // The second waits for the lock and asks the first to let go; the first ends its write
    // (within @tus/server's lockDrainTimeout), then the second finds the offset moved: 409.
    expect(answers.map((a) => a.status)).toContain(409)
  })

  it('sweeps once per interval across the fleet, removing the abandoned uploads only', async () => {
    const dir = await tempDir()
    // The uploads exist before the fleet starts: one instance creates them, then stops.
    const creator = await startInstance('creator', { UPLOAD_DIR: dir, EXPIRE_AFTER_MS: '0' })
    const finished: string[] = []
    const abandoned: string[] = []
    for (let i = 0; i < 5; i++) {
      const data = pattern(1000 + i, i)
      const { url } = await createUpload(creator.endpoint, data.length)
      expect((await patch(url, 0, data)).status).toBe(204)
      finished.push(idOf(url))
      const half = await createUpload(creator.endpoint, 2000)
      expect((await patch(half.url, 0, pattern(500))).status).toBe(204)
      abandoned.push(idOf(half.url))
    }
    creator.child.kill('SIGTERM')
    await creator.exited
    // Finished and abandoned uploads last touched an hour ago; the active one is fresh.
    for (const id of [...finished, ...abandoned]) {
      await age(path.join(dir, id), 3_600_000)
      await age(path.join(dir, `${id}.json`), 3_600_000)
    }

    const fleet = await startFleet(dir)
    const sweeps = () => fleet.flatMap((instance) => instance.sweeps())
    // The active upload trickles in on one instance for 1.5 s, a write every 50 ms.
    const active = await createUpload(fleet[0].endpoint, 30 * 1024)
    const activeChunks = Array.from({ length: 30 }, (_, i) => pattern(1024, i))
    const sweptBefore = sweeps().length
    const answer = await slowPatch(`${fleet[1].endpoint}/${active.id}`, 0, activeChunks, 50)
    // The fleet swept while the upload was written.
    expect(sweeps().length).toBeGreaterThan(sweptBefore)
    // At least one sweep per interval: eight intervals in a row, each swept by one of the three
    // (each tries every interval; a loaded machine may delay all three past one now and then).
    await waitFor(
      () => longestRun(sweeps().map((r) => r.slot as number)) >= 8,
      15_000,
      'eight intervals in a row swept',
    )

    expect(answer.status, answer.body).toBe(204)
    expect(await sha256(path.join(dir, active.id))).toBe(sha256Of(Buffer.concat(activeChunks)))
    for (const id of finished) expect(await exists(path.join(dir, id)), id).toBe(true)
    for (const id of abandoned) {
      expect(await exists(path.join(dir, id)), id).toBe(false)
      expect(await exists(path.join(dir, `${id}.json`)), id).toBe(false)
    }

    const all = sweeps()
    const slots = all.map((r) => r.slot as number)
    // At most one sweep per interval: no slot was swept twice, by one instance or two.
    expect(new Set(slots).size).toBe(slots.length)
    // Each abandoned upload was removed once, by whichever instance swept.
    expect(all.reduce((n, r) => n + (r.removed ?? 0), 0)).toBe(abandoned.length)
  })

  it('carries on after kill -9 of the sweeping instance: another takes over the sweeps, its upload lock lapses in Redis and the upload resumes', async () => {
    const dir = await tempDir()
    const prefix = `fleet-test:${randomId()}:`
    // Expiry well beyond the lock's TTL: the upload must not expire while its lock lapses.
    const fleet = await startFleet(dir, { EXPIRE_AFTER_MS: '10000' }, prefix)
    const data = pattern(64 * 1024, 3)
    const { url } = await createUpload(fleet[0].endpoint, data.length)
    const id = idOf(url)

    // Wait for a sweep, then pick its instance as the victim, writing an upload when it dies.
    const lastSweep = await waitFor(
      () => {
        const all = fleet.flatMap((instance) => instance.sweeps().map((r) => ({ instance, r })))
        return all.sort((x, y) => x.r.time - y.r.time).at(-1)
      },
      5000,
      'a sweep',
    )
    const victim = lastSweep.instance
    const others = fleet.filter((instance) => instance !== victim)
    const chunks = Array.from({ length: 16 }, (_, i) => data.subarray(i * 4096, (i + 1) * 4096))
    const dying = slowPatch(`${victim.endpoint}/${id}`, 0, chunks, 100).catch((e: Error) => e)
    // A few chunks in: the victim writes, so it holds the upload's lock in Redis.
    await waitFor(
      async () => (await fs.stat(path.join(dir, id))).size >= 3 * 4096,
      5000,
      'the first chunks on disk',
    )

    const sweptBefore = new Set(others.flatMap((o) => o.sweeps()))
    const lastSlot = Math.max(...fleet.flatMap((i) => i.sweeps().map((r) => r.slot as number)))
    victim.child.kill('SIGKILL')
    const killedAt = Date.now()
    await victim.exited
    await dying
    // Its lock is still in Redis, with at most the TTL to live (REDIS_LOCK_TTL_MS, 1 s): nobody
    // takes it before it lapses.
    const redis = new Redis(REDIS_URL)
    onTestFinished(() => redis.disconnect())
    const lockTtl = await redis.pttl(`${prefix}lock:${id}`)
    expect(lockTtl).toBeGreaterThan(0)
    expect(lockTtl).toBeLessThanOrEqual(1000)

    // Another instance sweeps the intervals after it: the next interval, or, when the kill
    // caught the victim mid-sweep holding the fleet's sweep lease, the first once that lease
    // lapsed (REDIS_LOCK_TTL_MS, 1 s).
    await waitFor(
      () =>
        others
          .flatMap((o) => o.sweeps())
          .find((r) => !sweptBefore.has(r) && (r.slot as number) > lastSlot),
      5000,
      'another instance to sweep',
    )

    // The dead instance's lock lapses after REDIS_LOCK_TTL_MS (1 s); then the upload resumes.
    const survivor = others[0] as Instance
    const state = await head(`${survivor.endpoint}/${id}`)
    expect(state.status).toBe(200)
    const offset = Number(state.headers['upload-offset'])
    expect(offset).toBeGreaterThan(0)
    expect(offset).toBeLessThan(data.length)
    // The victim refreshed its lock every third of the TTL: it lapsed 667 to 1000 ms after the
    // kill, and the HEAD waited for that.
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(600)
    const rest = await patch(`${survivor.endpoint}/${id}`, offset, data.subarray(offset))
    expect(rest.status, rest.body).toBe(204)
    expect(await sha256(path.join(dir, id))).toBe(sha256Of(data))
  })
})
