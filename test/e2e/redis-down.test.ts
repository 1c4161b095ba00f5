/**
 * Redis stopped mid-request (issue 13, item 4), against a throwaway redis-server of each test's
 * own, on a free port, killed with SIGKILL and started again on the same port. The shared Redis
 * on 6379 is never touched. Each case runs with the demo's fail-fast client and with a default
 * `new Redis()` (20 reconnection attempts with an offline queue): the locker bounds its own
 * calls, so both answer in time. Where Redis must die at one step of a request (after its lock,
 * as it asks for store quota), a relay kills it as that step's command goes out.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import fs from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it, onTestFinished } from 'vitest'
import { LockUnavailableError } from '../../src/errors.js'
import { RedisCallTimeoutError } from '../../src/redis/bounded.js'
import { connectRedis, FAIL_FAST_REDIS_OPTIONS } from '../../src/redis/connect.js'
import { RedisLocker } from '../../src/redis/locker.js'
import { pattern, randomId, sha256Of } from '../helpers/data.js'
import { sha256, tempDir } from '../helpers/fs.js'
import { type RawResponse, request } from '../helpers/http.js'
import { type LogRecord, startServer } from '../helpers/server.js'
import { createUpload, head, patch, TUS, tusUpload } from '../helpers/tus-client.js'
import { signal, waitFor } from '../helpers/wait.js'

const ACQUIRE_LOCK_TIMEOUT_MS = 1500
const NEUTRAL_BODY = 'Upload locks are unavailable right now; try again\n'
const REDIS_INTERNALS = /ioredis|ECONNREFUSED|Connection is closed|Stream isn't writeable/i

/**
 * Debian's redis-server, or any on PATH (`npm test`'s pretest installs it). Without one these tests
 * skip only when REDIS_URL points the suite at another server; otherwise they fail.
 */
const REDIS_SERVER = (process.env.PATH ?? '')
  .split(path.delimiter)
  .map((dir) => path.join(dir, 'redis-server'))
  .find((file) => {
    try {
      accessSync(file, constants.X_OK)
      return true
    } catch {
      return false
    }
  })

/**
 * What the tests measured, printed at the end: how long the answers took with Redis dead. Not
 * asserted: a loaded machine stretches them. The tests check instead what the answers did not
 * wait for (see `queues` and `probe`).
 */
const timings: string[] = []
afterAll(() => {
  if (timings.length > 0) console.log(`redis-down timings:\n  ${timings.join('\n  ')}`)
})

/** A redis-server of this test's own, on a port nobody else uses; killed when the test ends. */
class ThrowawayRedis {
  #child: ChildProcess | undefined

  private constructor(
    readonly port: number,
    readonly dir: string,
  ) {}

  static async start(): Promise<ThrowawayRedis> {
    const redis = new ThrowawayRedis(await freePort(), await tempDir())
    onTestFinished(() => redis.kill())
    await redis.start()
    return redis
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`
  }

  /** Starts (again) on the same port; nothing is kept from a previous run. */
  async start(): Promise<void> {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir]
    args.push('--save', '', '--appendonly', 'no', '--loglevel', 'warning')
    if (!REDIS_SERVER) throw new Error('no redis-server on PATH: run scripts/ensure-redis.sh')
    const child = spawn(REDIS_SERVER, args, { stdio: 'ignore' })
    this.#child = child
    await waitFor(
      () =>
        child.exitCode !== null
          ? Promise.reject(new Error(`redis-server exited with ${child.exitCode}`))
          : ping(this.port),
      5000,
      'the throwaway redis-server to answer',
    )
  }

  /** Redis stopped dead (SIGKILL, by pid): connections drop, nothing is answered. */
  async kill(): Promise<void> {
    const child = this.#child
    this.#child = undefined
    if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    process.kill(child.pid, 'SIGKILL')
    await exited
  }
}

/**
 * A TCP relay between the plugin's Redis client and a throwaway redis-server, which kills that
 * server (SIGKILL) at the moment a command naming `killOn`'s text is sent, before it reaches
 * Redis; then drops the client's connections and refuses new ones, as a dead Redis does. It
 * makes Redis die at a chosen step of a request, where the request's own timing cannot.
 */
class KillingRelay {
  readonly #sockets = new Set<net.Socket>()
  #trigger: string | undefined
  #killed = signal()

  private constructor(
    readonly server: net.Server,
    readonly redis: ThrowawayRedis,
  ) {}

  static async start(redis: ThrowawayRedis): Promise<KillingRelay> {
    const server = net.createServer()
    const relay = new KillingRelay(server, redis)
    server.on('connection', (client) => relay.#relay(client))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    onTestFinished(() => relay.#close())
    return relay
  }

  get url(): string {
    return `redis://127.0.0.1:${(this.server.address() as net.AddressInfo).port}`
  }

  /** Kills Redis when a command containing `text` is sent; resolves once it is dead. */
  killOn(text: string): Promise<void> {
    this.#trigger = text
    return this.#killed.promise
  }

  #relay(client: net.Socket): void {
    const upstream = net.connect(this.redis.port, '127.0.0.1')
    for (const socket of [client, upstream]) {
      this.#sockets.add(socket)
      socket.on('close', () => this.#sockets.delete(socket))
      socket.on('error', () => {})
    }
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
    upstream.on('data', (chunk) => client.write(chunk))
    let tail = ''
    client.on('data', (chunk: Buffer) => {
      const trigger = this.#trigger
      if (trigger !== undefined) {
        const seen = tail + chunk.toString('latin1')
        if (seen.includes(trigger)) {
          this.#trigger = undefined
          client.pause()
          void this.#die()
          return
        }
        tail = seen.slice(-trigger.length)
      }
      upstream.write(chunk)
    })
  }

  async #die(): Promise<void> {
    await this.redis.kill()
    await this.#close()
    this.#killed.resolve()
  }

  async #close(): Promise<void> {
    const closed = new Promise((resolve) => this.server.close(resolve))
    for (const socket of this.#sockets) socket.destroy()
    await closed
  }
}

async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** True when a Redis answers PING on the port. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.setTimeout(500)
    socket.once('connect', () => socket.write('PING\r\n'))
    socket.once('data', (data) => {
      socket.destroy()
      resolve(String(data).startsWith('+PONG'))
    })
    socket.once('error', () => resolve(false))
    socket.once('timeout', () => {
      socket.destroy()
      resolve(false)
    })
  })
}

type Client = Redis
/**
 * Each client, and whether it `queues` a command while Redis is down: the default one holds it
 * over 20 reconnection attempts (about 10 s), so what the locker does not wait for is still
 * pending on it; the fail-fast one rejects it at once, so nothing is left to wait for.
 */
const CLIENTS: Array<[string, (url: string) => Promise<Client>, boolean]> = [
  // The demo's connection (demo/app.ts).
  ["the demo's fail-fast client", (url) => connectRedis(url, FAIL_FAST_REDIS_OPTIONS), false],
  // ioredis' defaults: commands queue over 20 reconnection attempts.
  ['a default new Redis() client', async (url) => new Redis(url), true],
]

/** A PING sent on `client` now; `pending()` while the client still holds it. */
function probe(client: Client): { pending: () => boolean } {
  let settled = false
  const settle = () => {
    settled = true
  }
  client.ping().then(settle, settle)
  return { pending: () => !settled }
}

/**
 * The bound the locker gave up a Redis call after ("... within N ms", `RedisCallTimeoutError`),
 * or `undefined` when the call failed by itself (the client's own error).
 */
function boundOf(message: string): number | undefined {
  const match = /Redis did not answer .+ within (\d+) ms$/.exec(message)
  return match ? Number(match[1]) : undefined
}

async function clientOf(make: (url: string) => Promise<Client>, url: string): Promise<Client> {
  const client = await make(url)
  // The servers log what the plugin sees; the client's own errors are the user's to handle.
  client.on('error', () => {})
  onTestFinished(() => client.disconnect())
  return client
}

/** A PATCH whose body the test sends in two parts; `end()` resolves to the answer. */
function openPatch(url: string, length: number) {
  let answered: (res: RawResponse) => void = () => {}
  let failed: (error: Error) => void = () => {}
  const response = new Promise<RawResponse>((resolve, reject) => {
    answered = resolve
    failed = reject
  })
  const req = http.request(
    url,
    {
      method: 'PATCH',
      agent: false,
      headers: {
        ...TUS,
        'Upload-Offset': 0,
        'Content-Type': 'application/offset+octet-stream',
        'Content-Length': length,
      },
    },
    (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () =>
        answered({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      )
    },
  )
  req.on('error', failed)
  return {
    write: (data: Buffer) => req.write(data),
    end: (data: Buffer) => {
      req.end(data)
      return response
    },
  }
}

/** Upload files, without the hidden files of the store (markers). */
async function uploadFiles(directory: string): Promise<string[]> {
  return (await fs.readdir(directory)).filter((name) => !name.startsWith('.')).sort()
}

/** The log record of the failed release of upload `id`'s lock. */
function releaseReport(logs: LogRecord[], id: string): LogRecord | undefined {
  return logs.find((record) =>
    String((record.err as { message?: unknown } | undefined)?.message).includes(
      `could not release the lock of upload ${id}`,
    ),
  )
}

describe.skipIf(!REDIS_SERVER && process.env.REDIS_URL !== undefined)(
  'Redis stopped mid-request (throwaway redis-server)',
  () => {
    describe.each(CLIENTS)('with %s', (clientName, makeClient, queues) => {
      it('a PATCH that completes the upload while Redis dies answers 204 without waiting for the failed release, runs onUploadFinish once and keeps every byte', async () => {
        const redis = await ThrowawayRedis.start()
        const client = await clientOf(makeClient, redis.url)
        const finished: string[] = []
        const server = await startServer({
          redis: {
            client,
            prefix: `test:${randomId()}:`,
            acquireLockTimeoutMs: ACQUIRE_LOCK_TIMEOUT_MS,
          },
          tus: {
            onUploadFinish: async (_req, upload) => {
              finished.push(upload.id)
              return {}
            },
          },
        })
        const data = pattern(300_000, 7)
        const { url, id } = await createUpload(server.endpoint, data.length)
        const file = path.join(server.directory, id)

        const patching = openPatch(url, data.length)
        patching.write(data.subarray(0, 1000))
        // Bytes on disk: the PATCH holds its lock (tus writes only under it). Then Redis dies.
        await waitFor(async () => (await fs.stat(file)).size === 1000, 5000, 'the first bytes')
        await redis.kill()
        const started = Date.now()
        const res = await patching.end(data.subarray(1000))
        const reportedBeforeAnswer = releaseReport(server.logs, id) !== undefined
        const tookMs = Date.now() - started
        timings.push(
          `${clientName}: PATCH completing the upload, Redis dead: ${res.status} in ${tookMs} ms`,
        )

        expect(res.status).toBe(204)
        expect(res.headers['upload-offset']).toBe(String(data.length))
        expect(finished).toEqual([id])
        expect(await sha256(file)).toBe(sha256Of(data))
        // The failed release is reported (the plugin logs it at warn); the key's TTL frees the lock.
        const record = await waitFor(
          () => releaseReport(server.logs, id),
          5000,
          'the failed release in the log',
        )
        expect(record.level).toBe(40) // warn
        const releaseBound = boundOf(String((record.err as { message?: unknown }).message))
        if (queues) {
          // The release waited in the client's queue until the locker gave it up (2 s); the
          // answer had left before: it did not wait for the release.
          expect(releaseBound).toBeGreaterThan(0)
          expect(reportedBeforeAnswer).toBe(false)
        } else {
          // The release failed at once: there was nothing to wait for.
          expect(releaseBound).toBeUndefined()
        }
        expect(finished).toEqual([id])
      })

      it("with Redis down, HEAD, POST, PATCH and DELETE answer 503 with a neutral body, giving up on Redis within acquireLockTimeoutMs, not after the client's retries", async () => {
        const redis = await ThrowawayRedis.start()
        const client = await clientOf(makeClient, redis.url)
        const prefix = `test:${randomId()}:`
        const redisOption = { client, prefix, acquireLockTimeoutMs: ACQUIRE_LOCK_TIMEOUT_MS }
        const server = await startServer({ redis: redisOption })
        const { url, id } = await createUpload(server.endpoint, 10)
        await redis.kill()

        const requests: Array<[string, () => Promise<RawResponse>]> = [
          ['HEAD', () => head(url)],
          ['POST', () => request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': '10' })],
          ['PATCH', () => patch(url, 0, pattern(10))],
          ['DELETE', () => request(url, 'DELETE', TUS)],
        ]
        // A second instance on the same directory that never reached Redis (no subscription yet).
        const fresh = await startServer({ directory: server.directory, redis: redisOption })
        requests.push(['HEAD, first request of an instance', () => head(`${fresh.endpoint}/${id}`)])

        // A command the client holds as long as it would hold the locker's, had it no bound.
        const sentBefore = probe(client)
        // All at once: each one is timed on its own.
        const answers = await Promise.all(
          requests.map(async ([name, send]) => {
            const started = Date.now()
            const res = await send()
            return { name, res, tookMs: Date.now() - started }
          }),
        )
        const clientStillWaiting = sentBefore.pending()
        for (const { name, res, tookMs } of answers) {
          timings.push(`${clientName}: ${name}, Redis down: ${res.status} in ${tookMs} ms`)
          expect(res.status, name).toBe(503)
          expect(res.headers['tus-resumable'], name).toBe('1.0.0')
          if (!name.startsWith('HEAD')) expect(res.body, name).toBe(NEUTRAL_BODY)
          expect(res.body, name).not.toMatch(REDIS_INTERNALS)
        }
        // Nothing changed: no new upload, no byte written, nothing deleted.
        expect(await uploadFiles(server.directory)).toEqual([id, `${id}.json`].sort())
        expect((await fs.stat(path.join(server.directory, id))).size).toBe(0)
        // The cause is in the log, for the operator: one record per answer.
        const causes = [...server.logs, ...fresh.logs]
          .map((r) => r.err as { type?: string; message?: string } | undefined)
          .filter((err) => err?.type === 'LockUnavailableError')
          .map((err) => boundOf(String(err?.message)))
        expect(causes).toHaveLength(requests.length)
        if (queues) {
          // Each answer came from the locker's own bound, at most acquireLockTimeoutMs, while the
          // client still held a command sent before them all (it holds one about 10 s).
          for (const bound of causes) expect(bound).toBeLessThanOrEqual(ACQUIRE_LOCK_TIMEOUT_MS)
          expect(clientStillWaiting).toBe(true)
        } else {
          // The client failed each call at once, and the locker answered on that failure.
          expect(causes).toEqual(requests.map(() => undefined))
          expect(clientStillWaiting).toBe(false)
        }
      })

      /** A server with a store quota, on a throwaway Redis reached through a relay that kills it. */
      async function quotaServerOnDyingRedis(make: typeof makeClient) {
        const redis = await ThrowawayRedis.start()
        const relay = await KillingRelay.start(redis)
        const client = await clientOf(make, relay.url)
        const prefix = `test:${randomId()}:`
        const server = await startServer({
          maxStoreBytes: 1024 * 1024,
          minFreeBytes: 0,
          cleanupOnStart: false,
          redis: { client, prefix, acquireLockTimeoutMs: ACQUIRE_LOCK_TIMEOUT_MS },
        })
        return { relay, prefix, server }
      }

      it('Redis dying as a deferred-length PATCH (its lock taken) asks for store quota: 503 "The store quota cannot be checked", no byte written', async () => {
        const { relay, prefix, server } = await quotaServerOnDyingRedis(makeClient)
        const { url, id } = await createUpload(server.endpoint, 'deferred')
        const record = await fs.readFile(path.join(server.directory, `${id}.json`), 'utf8')

        // The PATCH's quota claim is the first command to name the claims in flight: Redis dies
        // as it goes out, after the PATCH took its upload's lock (in the same Redis).
        const died = relay.killOn(`${prefix}{quota}:inflight`)
        const res = await patch(url, 0, pattern(10_000))
        await died

        expect(res.status).toBe(503)
        expect(res.body).toBe('The store quota cannot be checked right now; try again\n')
        expect(res.headers['tus-resumable']).toBe('1.0.0')
        // Nothing was written: the data file is empty, the record as it was, nothing else.
        expect(await uploadFiles(server.directory)).toEqual([id, `${id}.json`].sort())
        expect((await fs.stat(path.join(server.directory, id))).size).toBe(0)
        expect(await fs.readFile(path.join(server.directory, `${id}.json`), 'utf8')).toBe(record)
      })

      it('Redis dying as a creation (its lock taken) asks for store quota: 503 "The store quota cannot be checked", nothing created', async () => {
        const { relay, prefix, server } = await quotaServerOnDyingRedis(makeClient)

        // The creation takes its declared length from the quota after its lock: Redis dies then.
        const died = relay.killOn(`${prefix}{quota}:inflight`)
        const res = await request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': '10000' })
        await died

        expect(res.status).toBe(503)
        expect(res.body).toBe('The store quota cannot be checked right now; try again\n')
        expect(res.headers.location).toBeUndefined()
        expect(await uploadFiles(server.directory)).toEqual([])
      })

      it('once Redis is back on the same port, the same uploads and new ones work again', async () => {
        const redis = await ThrowawayRedis.start()
        const client = await clientOf(makeClient, redis.url)
        const prefix = `test:${randomId()}:`
        const server = await startServer({
          redis: { client, prefix, acquireLockTimeoutMs: ACQUIRE_LOCK_TIMEOUT_MS },
        })
        const { url } = await createUpload(server.endpoint, 10)
        await redis.kill()
        const down = await Promise.all([head(url), patch(url, 0, pattern(10))])
        expect(down.map((res) => res.status)).toEqual([503, 503])

        await redis.start()
        // The client reconnects by itself (ioredis backs off up to 2 s between attempts).
        const statuses: number[] = []
        await waitFor(
          async () => {
            const status = (await head(url)).status
            statuses.push(status)
            return status === 200
          },
          10_000,
          'HEAD to answer 200 again',
        )
        // Only 503s before: no lock left behind by a call given up on while Redis was down.
        expect(statuses.filter((status) => status !== 503 && status !== 200)).toEqual([])
        const res = await patch(url, 0, pattern(10))
        expect(res.status).toBe(204)
        expect(res.headers['upload-offset']).toBe('10')

        const data = pattern(200_000, 3)
        const upload = await tusUpload(server.endpoint, data)
        const uploadId = upload.slice(upload.lastIndexOf('/') + 1)
        expect(await sha256(path.join(server.directory, uploadId))).toBe(sha256Of(data))
        // Every lock went back: none is left in Redis.
        await waitFor(
          async () => (await client.keys(`${prefix}lock:*`)).length === 0,
          3000,
          'no lock',
        )
      })
    })

    it("a lock whose Redis died: unlock() resolves while the release still waits, and reports it; lock() rejects with LockUnavailableError on the locker's own bound", async () => {
      const redis = await ThrowawayRedis.start()
      const client = await clientOf(async (url) => new Redis(url), redis.url)
      const errors: Error[] = []
      const locker = new RedisLocker({
        client,
        prefix: `test:${randomId()}:`,
        acquireLockTimeoutMs: ACQUIRE_LOCK_TIMEOUT_MS,
        onError: (error) => errors.push(error),
      })
      onTestFinished(() => locker.close())
      const never = new AbortController().signal
      const lock = locker.newLock('u1')
      await lock.lock(never, () => {})
      await redis.kill()

      await expect(lock.unlock()).resolves.toBeUndefined()
      // The release is still in the client's queue: it is given up (and reported) after 2 s.
      const released = (e: Error) => /could not release the lock of upload u1/.test(e.message)
      expect(errors.filter(released)).toEqual([])
      const report = await waitFor(
        () => errors.find(released),
        5000,
        'the failed release to be reported',
      )
      expect(boundOf(String((report.cause as Error).message))).toBeGreaterThan(0)

      const sentBefore = probe(client)
      const started = Date.now()
      const error = await locker
        .newLock('u2')
        .lock(never, () => {})
        .catch((e: unknown) => e)
      const tookMs = Date.now() - started
      timings.push(
        `a default new Redis() client: RedisLocker.lock(), Redis down: rejected in ${tookMs} ms`,
      )
      expect(error).toBeInstanceOf(LockUnavailableError)
      expect(error).toMatchObject({
        code: 'FST_TUS_LOCK_UNAVAILABLE',
        status_code: 503,
        body: NEUTRAL_BODY,
      })
      // Given up on the locker's own bound, at most acquireLockTimeoutMs, while the client still
      // held a command sent before (it holds one about 10 s).
      const cause = (error as Error).cause
      expect(cause).toBeInstanceOf(RedisCallTimeoutError)
      expect(boundOf((cause as Error).message)).toBeLessThanOrEqual(ACQUIRE_LOCK_TIMEOUT_MS)
      expect(sentBefore.pending()).toBe(true)
      expect(errors).toContain(error)
    })
  },
)
