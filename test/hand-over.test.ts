/**
 * The durable hand-over of finished uploads to the app's `onUploadFinish` (finish/hand-over.ts):
 * a failing hook is logged and run again until it succeeds, across restarts; a hook of the wrong
 * shape gets a clear error; one run at a time per upload, also across instances on Redis.
 */
import { readdir } from 'node:fs/promises'
import path from 'node:path'
import { FileStore } from '@tus/file-store'
import { Redis } from 'ioredis'
import { Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import type { FastifyTusOptions } from '../src/index.js'
import { afterTest } from './helpers/cleanup.js'
import { cli } from './helpers/cli.js'
import { tempDir } from './helpers/fs.js'
import { request } from './helpers/http.js'
import { REDIS_URL } from './helpers/redis.js'
import { startServer } from './helpers/server.js'
import { createUpload, head, patch, slowPatch, TUS } from './helpers/tus-client.js'
import { signal, sleep, waitFor } from './helpers/wait.js'

type Hook = NonNullable<NonNullable<FastifyTusOptions['tus']>['onUploadFinish']>

/** A hook that throws its first `failures` runs, recording each run. */
function flakyHook(failures: number, runMs = 0) {
  const runs: { id: string; at: number; retry: string | null }[] = []
  let running = 0
  let mostAtOnce = 0
  const hook: Hook = async (req, upload) => {
    running++
    mostAtOnce = Math.max(mostAtOnce, running)
    try {
      runs.push({ id: upload.id, at: Date.now(), retry: req.headers.get('x-fastify-tus-retry') })
      if (runMs) await sleep(runMs)
      if (runs.length <= failures) throw new Error(`storage down (run ${runs.length})`)
      return {}
    } finally {
      running--
    }
  }
  return { hook, runs, mostAtOnce: () => mostAtOnce }
}

async function finishedUpload(endpoint: string, body = Buffer.from('hello')) {
  const { url, id } = await createUpload(endpoint, body.length)
  const res = await patch(url, 0, body)
  return { url, id, res }
}

const finishingFolder = (directory: string) => path.join(directory, '.fastify-tus-finishing')

async function recordFiles(directory: string): Promise<string[]> {
  return readdir(finishingFolder(directory)).catch(() => [])
}

describe('a failing onUploadFinish', () => {
  it('is logged at error with the hook and the upload id, the PATCH still answers 204, and the hook runs again until it succeeds', async () => {
    const flaky = flakyHook(2)
    const server = await startServer({
      tus: { onUploadFinish: flaky.hook },
      finishRetryMs: 50,
      cleanupIntervalMs: 600_000,
    })
    const { id, res } = await finishedUpload(server.endpoint)
    expect(res.status).toBe(204)
    expect(res.body).toBe('')
    const failure = server.logs.find((r) => r.hook === 'onUploadFinish' && r.level === 50)
    expect(failure).toMatchObject({ uploadId: id, attempts: 1, retryInMs: 50 })
    expect(failure?.msg).toMatch(`onUploadFinish failed for upload ${id}`)
    await waitFor(() => flaky.runs.length === 3, 5000, 'the third run')
    await waitFor(async () => (await server.app.tusCleanup.pending()).length === 0)
    expect(flaky.runs.map((run) => run.retry)).toEqual([null, '1', '2'])
    expect(await recordFiles(server.directory)).toEqual([])
    expect(flaky.runs.every((run) => run.id === id)).toBe(true)
  })

  it('backs off, doubling from finishRetryMs up to finishRetryMaxMs', async () => {
    const flaky = flakyHook(Number.POSITIVE_INFINITY)
    const server = await startServer({
      tus: { onUploadFinish: flaky.hook },
      finishRetryMs: 40,
      finishRetryMaxMs: 160,
      cleanupIntervalMs: 600_000,
    })
    await finishedUpload(server.endpoint)
    await waitFor(() => flaky.runs.length >= 5, 5000, 'five runs')
    const gaps = flaky.runs
      .slice(1, 5)
      .map((run, i) => run.at - (flaky.runs[i] as { at: number }).at)
    // 40, 80, 160, 160 (capped): each at least its delay, and the cap holds.
    expect(gaps[0]).toBeGreaterThanOrEqual(38)
    expect(gaps[1]).toBeGreaterThanOrEqual(78)
    expect(gaps[2]).toBeGreaterThanOrEqual(158)
    expect(gaps[3]).toBeGreaterThanOrEqual(158)
    expect(gaps[3]).toBeLessThan(320)
    // The fifth failure's record lands just after its run.
    const pending = await waitFor(async () => {
      const [record] = await server.app.tusCleanup.pending()
      return record && record.attempts >= 5 ? record : undefined
    })
    expect(pending.lastError).toMatch(/^storage down/)
  })

  it('is remembered in the store: a new app on the directory hands the upload over at startup', async () => {
    const directory = await tempDir()
    const failing = flakyHook(Number.POSITIVE_INFINITY)
    const first = await startServer({
      directory,
      tus: { onUploadFinish: failing.hook },
      finishRetryMs: 600_000,
    })
    const { id } = await finishedUpload(first.endpoint)
    expect(await first.app.tusCleanup.pending()).toMatchObject([{ id, attempts: 1 }])
    await first.app.close()

    const working = flakyHook(0)
    const second = await startServer({ directory, tus: { onUploadFinish: working.hook } })
    await waitFor(() => working.runs.length === 1, 5000, 'the run at startup')
    expect(working.runs[0]).toMatchObject({ id, retry: '1' })
    await waitFor(async () => (await recordFiles(directory)).length === 0)
    expect(await second.app.tusCleanup.pending()).toEqual([])
    expect(second.logs.some((r) => r.msg === 'fastify-tus: pending hand-overs retried')).toBe(true)
  })

  it('counts in tus_finish_failures_total and tus_finish_pending', async () => {
    const registry = new Registry()
    const flaky = flakyHook(1)
    const server = await startServer({
      tus: { onUploadFinish: flaky.hook },
      metrics: { registry },
      finishRetryMs: 300,
    })
    await finishedUpload(server.endpoint)
    const scrape = await registry.metrics()
    expect(scrape).toMatch(/^tus_finish_failures_total\{endpoint="\/files"\} 1$/m)
    expect(scrape).toMatch(/^tus_finish_pending\{endpoint="\/files"\} 1$/m)
    await waitFor(() => flaky.runs.length === 2, 5000, 'the retry')
    await waitFor(async () =>
      /^tus_finish_pending\{endpoint="\/files"\} 0$/m.test(await registry.metrics()),
    )
  })

  it('is not run again for an upload deleted meanwhile: the pass forgets it', async () => {
    const flaky = flakyHook(Number.POSITIVE_INFINITY)
    const server = await startServer({
      tus: { onUploadFinish: flaky.hook },
      finishRetryMs: 150,
      cleanupIntervalMs: 600_000,
    })
    const { url } = await finishedUpload(server.endpoint)
    expect((await request(url, 'DELETE', TUS)).status).toBe(204)
    await waitFor(
      async () => (await server.app.tusCleanup.pending()).length === 0,
      5000,
      'forgotten',
    )
    await sleep(200)
    expect(flaky.runs).toHaveLength(1)
  })

  it('that refuses the upload ({ status_code, body }) answers the request and is not run again', async () => {
    let runs = 0
    const server = await startServer({
      tus: {
        async onUploadFinish() {
          runs++
          throw { status_code: 422, body: 'not a picture\n' }
        },
      },
      finishRetryMs: 20,
    })
    const { res } = await finishedUpload(server.endpoint)
    expect(res.status).toBe(422)
    expect(res.body).toBe('not a picture\n')
    await sleep(100)
    expect(runs).toBe(1)
    expect(await server.app.tusCleanup.pending()).toEqual([])
  })
})

describe('another datastore (no records of its own)', () => {
  it('keeps pending hand-overs in memory: retried with the same backoff while the process lives', async () => {
    const flaky = flakyHook(2)
    const datastore = new FileStore({ directory: await tempDir() })
    const server = await startServer({
      datastore,
      tus: { onUploadFinish: flaky.hook },
      finishRetryMs: 40,
      cleanupIntervalMs: 600_000,
    })
    const { id, res } = await finishedUpload(server.endpoint)
    expect(res.status).toBe(204)
    expect(await server.app.tusCleanup.pending()).toMatchObject([
      { id, attempts: 1, lastError: 'storage down (run 1)' },
    ])
    await waitFor(() => flaky.runs.length === 3, 5000, 'the third run')
    await waitFor(async () => (await server.app.tusCleanup.pending()).length === 0)
    const [first, second, third] = flaky.runs.map((run) => run.at)
    expect((second as number) - (first as number)).toBeGreaterThanOrEqual(38)
    expect((third as number) - (second as number)).toBeGreaterThanOrEqual(78)
  })
})

describe('fastify-tus list --pending', () => {
  it('lists the pending hand-overs of a directory, as a table and as JSON', async () => {
    const flaky = flakyHook(Number.POSITIVE_INFINITY)
    const server = await startServer({
      tus: { onUploadFinish: flaky.hook },
      finishRetryMs: 600_000,
    })
    const { id } = await finishedUpload(server.endpoint)
    const json = await cli(['list', '--pending', '--dir', server.directory, '--json'])
    expect(json.code).toBe(0)
    const listed = JSON.parse(json.stdout)
    expect(listed).toEqual({
      directory: server.directory,
      pending: [
        {
          id,
          attempts: 1,
          since: expect.any(String),
          nextAt: expect.any(String),
          lastError: 'storage down (run 1)',
        },
      ],
    })
    expect(Date.parse(listed.pending[0].nextAt) - Date.now()).toBeGreaterThan(590_000)
    const text = await cli(['list', '--pending', '--dir', server.directory])
    expect(text.stdout).toMatch(
      new RegExp(`^${id}  1 +\\S+ ago +in 1\\d?m +storage down \\(run 1\\)$`, 'm'),
    )
    expect(text.stdout).toMatch(/^1 pending hand-over in /m)
  })

  it('says so when nothing is pending, and refuses list without --pending', async () => {
    const directory = await tempDir()
    expect((await cli(['list', '--pending', '--dir', directory])).stdout).toBe(
      `No pending hand-overs in ${directory}.\n`,
    )
    const refused = await cli(['list', '--dir', directory])
    expect(refused.code).toBe(2)
    expect(refused.stderr).toMatch('list needs --pending')
  })
})

describe('what is remembered', () => {
  it('a PATCH that may finish its upload is remembered before its last byte is stored', async () => {
    const flaky = flakyHook(0)
    const server = await startServer({ tus: { onUploadFinish: flaky.hook } })
    const { url, id } = await createUpload(server.endpoint, 10)
    const rest = signal()
    const answer = slowPatch(url, 0, [Buffer.from('hello'), Buffer.from('world')], 60_000, {
      until: rest.promise,
    })
    // Half the body is in: a kill -9 from now on must not lose the hand-over.
    await waitFor(async () => (await recordFiles(server.directory)).length === 1)
    expect(await server.app.tusCleanup.pending()).toMatchObject([{ id, attempts: 0 }])
    expect(flaky.runs).toHaveLength(0)
    rest.resolve()
    expect((await answer).status).toBe(204)
    expect(flaky.runs).toHaveLength(1)
    expect(await recordFiles(server.directory)).toEqual([])
  })

  it('nothing for a PATCH that does not finish its upload, nor for an upload without a hook run pending', async () => {
    const flaky = flakyHook(0)
    const server = await startServer({ tus: { onUploadFinish: flaky.hook } })
    const { url } = await createUpload(server.endpoint, 10)
    expect((await patch(url, 0, Buffer.from('hello'))).status).toBe(204)
    expect(await recordFiles(server.directory)).toEqual([])
    expect((await patch(url, 5, Buffer.from('world'))).status).toBe(204)
    expect(flaky.runs).toHaveLength(1)
    expect(await recordFiles(server.directory)).toEqual([])
    expect((await head(url)).headers['upload-offset']).toBe('10')
  })

  it('an empty upload, finished by its creation, is handed over durably too', async () => {
    const flaky = flakyHook(1)
    const server = await startServer({ tus: { onUploadFinish: flaky.hook }, finishRetryMs: 30 })
    const { id } = await createUpload(server.endpoint, 0)
    await waitFor(() => flaky.runs.length === 2, 5000, 'the retry')
    expect(flaky.runs.map((run) => run.id)).toEqual([id, id])
    await waitFor(async () => (await recordFiles(server.directory)).length === 0)
  })
})

describe('a hook of the wrong shape', () => {
  it('onUploadFinish returning undefined: a clear error, the answer as usual, handed over once', async () => {
    let runs = 0
    const server = await startServer({
      tus: {
        // A forgotten `return {}`.
        onUploadFinish: (async () => {
          runs++
        }) as unknown as Hook,
      },
      finishRetryMs: 20,
    })
    const { id, res } = await finishedUpload(server.endpoint)
    expect(res.status).toBe(204)
    const record = server.logs.find((r) => r.hook === 'onUploadFinish')
    expect(record?.level).toBe(50)
    expect(record?.msg).toBe(
      `fastify-tus: onUploadFinish returned undefined for upload ${id}: it must return an object (\`{}\` to answer as usual); the upload counts as handed over`,
    )
    await sleep(100)
    expect(runs).toBe(1)
    expect(await server.app.tusCleanup.pending()).toEqual([])
  })

  it('onUploadCreate returning undefined: a clear error, and the upload is created', async () => {
    const server = await startServer({
      tus: {
        onUploadCreate: (async () => {}) as unknown as NonNullable<
          FastifyTusOptions['tus']
        >['onUploadCreate'],
      },
    })
    const { id, response } = await createUpload(server.endpoint, 5)
    expect(response.status).toBe(201)
    const record = server.logs.find((r) => r.hook === 'onUploadCreate')
    expect(record?.level).toBe(50)
    expect(record?.msg).toMatch(
      `onUploadCreate returned undefined for upload ${id}: it must return an object`,
    )
  })
})

describe('several instances on Redis', () => {
  it('run one upload hook once at a time, and one of them hands it over', async () => {
    const directory = await tempDir()
    const prefix = `fastify-tus-test:hand-over:${Date.now()}:`
    const flaky = flakyHook(4, 60)
    const apps = []
    for (let i = 0; i < 2; i++) {
      const client = new Redis(REDIS_URL, { lazyConnect: true })
      afterTest(() => client.quit())
      apps.push(
        await startServer({
          directory,
          redis: { client, prefix },
          tus: { onUploadFinish: flaky.hook },
          finishRetryMs: 10,
          finishRetryMaxMs: 20,
          cleanupIntervalMs: 30,
        }),
      )
    }
    const first = apps[0] as (typeof apps)[number]
    await finishedUpload(first.endpoint)
    await waitFor(() => flaky.runs.length === 5, 10_000, 'the fifth run')
    await waitFor(async () => (await recordFiles(directory)).length === 0)
    await sleep(150)
    expect(flaky.runs).toHaveLength(5)
    expect(flaky.mostAtOnce()).toBe(1)
  })
})
