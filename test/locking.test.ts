/**
 * Nothing is removed mid-request: the sweep works under the tus server's own locker, skips
 * uploads that a request holds or waits for, and races client DELETEs harmlessly.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import { MemoryLocker } from '@tus/server'
import type { Lock, Locker, RequestRelease } from '@tus/utils'
import { describe, expect, it } from 'vitest'
import { MAX_LOCK_WAITERS, type SweepLocker } from '../src/locking/activity-locker.js'
import { sha256Of } from './helpers/data.js'
import { age, exists, listing, sha256, tempDir } from './helpers/fs.js'
import { request } from './helpers/http.js'
import { startServer } from './helpers/server.js'
import { createUpload, slowPatch, TUS } from './helpers/tus-client.js'
import { waitFor } from './helpers/wait.js'

const HOUR = 3_600_000

/** The real MemoryLocker, noting for each lock event whether the upload's data file exists. */
class RecordingLocker implements Locker {
  readonly memory = new MemoryLocker()
  events: Array<{ id: string; event: 'lock' | 'unlock'; dataExists: boolean }> = []
  constructor(readonly directory: string) {}
  newLock(id: string): Lock {
    const inner = this.memory.newLock(id)
    const note = async (event: 'lock' | 'unlock') => {
      this.events.push({ id, event, dataExists: await exists(path.join(this.directory, id)) })
    }
    return {
      lock: async (signal: AbortSignal, release: RequestRelease) => {
        await inner.lock(signal, release)
        await note('lock')
      },
      unlock: async () => {
        await note('unlock')
        await inner.unlock()
      },
    }
  }
}

describe('locks', () => {
  it('never removes an upload whose PATCH is under way, even one stalled past the period', async () => {
    const server = await startServer({
      expireAfterMs: 300,
      cleanupIntervalMs: 50,
      // Were the sweep to ask for the lock, the PATCH would be cancelled after this long.
      tus: { lockDrainTimeout: 50 },
    })
    const chunks = [Buffer.alloc(1000, 1), Buffer.alloc(1000, 2), Buffer.alloc(1000, 3)]
    const { url, id } = await createUpload(server.endpoint, 3000)
    const dataFile = path.join(server.directory, id)
    const skippedBusy = () =>
      server.logs.filter((r) => typeof r.skippedBusy === 'number' && (r.skippedBusy as number) > 0)
    // After its first 1000 bytes the PATCH stalls (until sweeps have skipped the upload, or 5 s
    // at most): its data file is backdated past the period, so that by its mtime the upload
    // looks abandoned, but its lock is held.
    const stalled = (async () => {
      await waitFor(async () => (await fs.stat(dataFile)).size === 1000, 5000, 'the first bytes')
      await age(dataFile, 2 * HOUR)
      await waitFor(() => skippedBusy().length >= 3, 5000, 'sweeps to skip the upload')
    })()
    const res = await slowPatch(url, 0, chunks, 5000, { until: stalled })
    await stalled
    expect(res.status).toBe(204)
    expect(res.headers['upload-offset']).toBe('3000')
    expect(await sha256(path.join(server.directory, id))).toBe(sha256Of(Buffer.concat(chunks)))
    const skipped = skippedBusy()
    expect(skipped.length).toBeGreaterThan(0)
  })

  it('a HEAD on an upload whose PATCH stalled asks the PATCH to let go, then answers the bytes it kept', async () => {
    // tus-js-client's resume after a stalled connection: the new request's lock asks the
    // holder to let go (its requestRelease), which ends the PATCH after lockDrainTimeout.
    const server = await startServer({ tus: { lockDrainTimeout: 50 } })
    const { url, id } = await createUpload(server.endpoint, 3000)
    const dataFile = path.join(server.directory, id)
    let release: () => void = () => {}
    const never = new Promise<void>((resolve) => {
      release = resolve
    })
    const patching = slowPatch(url, 0, [Buffer.alloc(1000, 1), Buffer.alloc(2000, 2)], 60_000, {
      until: never,
    }).catch((error: Error) => error)
    try {
      await waitFor(async () => (await fs.stat(dataFile)).size === 1000, 5000, 'the first bytes')
      const started = performance.now()
      const status = await request(url, 'HEAD', TUS)
      expect(status.status).toBe(200)
      expect(status.headers['upload-offset']).toBe('1000')
      expect(performance.now() - started).toBeLessThan(10_000)
      // The server ended the PATCH before its body did: it answers the bytes it kept.
      const patched = await patching
      if (patched instanceof Error) throw patched
      expect(patched.status).toBe(204)
      expect(patched.headers['upload-offset']).toBe('1000')
      // And the upload takes the rest from where the HEAD said.
      const rest = await request(
        url,
        'PATCH',
        {
          ...TUS,
          'Upload-Offset': '1000',
          'Content-Type': 'application/offset+octet-stream',
        },
        Buffer.alloc(2000, 2),
      )
      expect(rest.status).toBe(204)
      expect(await sha256(dataFile)).toBe(
        sha256Of(Buffer.concat([Buffer.alloc(1000, 1), Buffer.alloc(2000, 2)])),
      )
    } finally {
      release()
    }
  })

  it('takes the configured locker lock before removing and releases it after', async () => {
    const directory = await tempDir()
    const locker = new RecordingLocker(directory)
    const server = await startServer({
      directory,
      expireAfterMs: HOUR,
      cleanupOnStart: false,
      tus: { locker },
    })
    const { id } = await createUpload(server.endpoint, 100)
    await age(path.join(directory, id), 2 * HOUR)
    locker.events = []
    expect((await server.app.tusCleanup.run()).removed).toBe(1)
    expect(locker.events).toEqual([
      { id, event: 'lock', dataExists: true },
      { id, event: 'unlock', dataExists: false },
    ])
    expect(locker.memory.locks.size).toBe(0)
  })

  it('races client DELETEs without errors: each upload is removed once, by the sweep or a DELETE', async () => {
    const server = await startServer({ expireAfterMs: HOUR, cleanupOnStart: false })
    const uploads = await Promise.all(
      Array.from({ length: 60 }, () => createUpload(server.endpoint, 100)),
    )
    await Promise.all(uploads.map(({ id }) => age(path.join(server.directory, id), 2 * HOUR)))

    const [report, ...answers] = await Promise.all([
      server.app.tusCleanup.run(),
      ...uploads.map(({ url }) => request(url, 'DELETE', TUS)),
    ])
    for (const answer of answers) expect([204, 404, 410]).toContain(answer.status)
    const deleted = answers.filter((a) => a.status === 204).length
    expect(deleted).toBeGreaterThan(0)
    // An upload a DELETE took away under the sweep (or held: skipped busy) is neither an error
    // nor counted as removed.
    expect(report?.errors).toBe(0)
    expect((report?.removed ?? 0) + deleted).toBe(uploads.length)
    expect(server.logs.filter((r) => r.level >= 40)).toEqual([])
    expect(await listing(server.directory)).toEqual([])
  })
})

describe('requests waiting for one upload', () => {
  /** The plugin's locker, as the sweep and an assembly take it: a holder that never lets go early. */
  function lockerOf(server: { app: { tus: { options: { locker?: unknown } } } }): SweepLocker {
    return server.app.tus.options.locker as SweepLocker
  }

  it(`queue at most ${MAX_LOCK_WAITERS} deep: the rest are answered 423 at once with a reason, the queue ends as the lock is released`, async () => {
    const server = await startServer({ expireAfterMs: HOUR })
    const { url, id } = await createUpload(server.endpoint, 10)
    const held = await lockerOf(server).tryLock(id)
    expect(held).toBeDefined()
    const answers: Array<{ status: number; body: string; at: number }> = []
    const started = performance.now()
    const heads = Array.from({ length: 20 }, () =>
      request(url, 'HEAD', TUS).then((res) => {
        answers.push({ status: res.status, body: res.body, at: performance.now() - started })
        return res
      }),
    )
    // Those past the queue are answered while the lock is still held.
    await waitFor(() => {
      const locked = answers.filter((a) => a.status === 423)
      return locked.length === 20 - MAX_LOCK_WAITERS ? locked : undefined
    })
    expect(answers.every((a) => a.status === 423)).toBe(true)
    const reason = await request(url, 'PATCH', {
      ...TUS,
      'Upload-Offset': 0,
      'Content-Type': 'application/offset+octet-stream',
      'Content-Length': 0,
    })
    expect(reason.status).toBe(423)
    expect(reason.body).toMatch(`upload ${id} already has ${MAX_LOCK_WAITERS} requests waiting`)
    await held?.unlock()
    const all = await Promise.all(heads)
    expect(all.filter((res) => res.status === 200)).toHaveLength(MAX_LOCK_WAITERS)
    expect(all.filter((res) => res.status === 423)).toHaveLength(20 - MAX_LOCK_WAITERS)
    // Nothing waits any more: a request now gets the lock at once.
    expect((await request(url, 'HEAD', TUS)).status).toBe(200)
  })

  it("give up after MemoryLocker's acquireLockTimeout, as with the stock locker", async () => {
    const server = await startServer({
      expireAfterMs: HOUR,
      tus: { locker: new MemoryLocker({ acquireLockTimeout: 300 }) },
    })
    const { url, id } = await createUpload(server.endpoint, 10)
    const held = await lockerOf(server).tryLock(id)
    const started = performance.now()
    const res = await request(url, 'HEAD', TUS)
    expect(res.status).toBe(500)
    expect(performance.now() - started).toBeGreaterThanOrEqual(290)
    await held?.unlock()
    expect((await request(url, 'HEAD', TUS)).status).toBe(200)
  })
})
