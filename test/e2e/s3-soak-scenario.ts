/**
 * The S3 soak, shared by `npm run soak -- --s3` and test/e2e/s3-soak.test.ts: concurrent
 * tus-js-client uploads against the plugin with a stock S3Store on a real S3 API, paced so that
 * they outlive expireAfterMs while sweeps run, some abandoned midway, while the server is closed
 * and restarted on the same bucket and port. Then: every finished upload is byte-identical in
 * the bucket, every abandoned one is gone (multipart upload, `.info`, `.part`), nothing else
 * was removed, and no sweep reported an error.
 */
import { createHash, randomBytes } from 'node:crypto'
import { S3 } from '@aws-sdk/client-s3'
import { S3Store } from '@tus/s3-store'
import Fastify, { type FastifyInstance } from 'fastify'
import * as tus from 'tus-js-client'
import fastifyTus from '../../src/index.js'
import type { SweepReport } from '../../src/sweep/report.js'

const MiB = 1024 * 1024

export interface S3Env {
  endpoint: string
  accessKeyId: string
  secretAccessKey: string
  region: string
  forcePathStyle: boolean
}

export interface S3SoakOptions {
  s3: S3Env
  /** Uploads that run to the end. */
  uploads: number
  /** Uploads abandoned after their first PATCH. */
  abandoned: number
  /** Sizes are drawn from 0 to this many bytes. */
  maxSize: number
  expireAfterMs: number
  cleanupIntervalMs: number
  /** A pause of up to this long before each PATCH (below expireAfterMs). */
  paceMs: number
  restarts: number
  seed: number
  log: (line: string) => void
}

export const S3_SOAK_DEFAULTS: Omit<S3SoakOptions, 's3'> = {
  uploads: 30,
  abandoned: 6,
  maxSize: 16 * MiB,
  // Well above a restart's downtime (2 to 5 s here under load, with tus-js-client's retries:
  // on S3 it is not given back) plus the pace, slow S3 requests, and S3's object dates, which
  // HEAD gives to the second. With 4 and 6 s, uploads whose first PATCH a restart cut off were
  // (rightly, by the rule) expired before their client came back.
  expireAfterMs: 10_000,
  cleanupIntervalMs: 300,
  paceMs: 1500,
  restarts: 1,
  seed: 1,
  log: () => {},
}

export interface S3SoakResult {
  ok: boolean
  finished: number
  intact: number
  failed: string[]
  abandonedGone: number
  leftovers: string[]
  sweeps: number
  sweepErrors: number
  removed: number
  longestUploadMs: number
  durationMs: number
}

/** The env file of scripts/ensure-ceph.sh, or S3_* variables, as an S3Env. */
export function s3EnvFrom(vars: Record<string, string | undefined>): S3Env {
  return {
    endpoint: vars.S3_ENDPOINT as string,
    accessKeyId: vars.S3_ACCESS_KEY_ID ?? '',
    secretAccessKey: vars.S3_SECRET_ACCESS_KEY ?? '',
    region: vars.S3_REGION ?? 'us-east-1',
    forcePathStyle: vars.S3_FORCE_PATH_STYLE !== 'false',
  }
}

function clientConfig(env: S3Env) {
  return {
    endpoint: env.endpoint,
    region: env.region,
    forcePathStyle: env.forcePathStyle,
    credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED' as const,
    responseChecksumValidation: 'WHEN_REQUIRED' as const,
  }
}

function prng(seed: number): () => number {
  let state = seed >>> 0 || 1
  return () => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return (state >>> 0) / 2 ** 32
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const sha = (data: Uint8Array) => createHash('sha256').update(data).digest('hex')

export async function runS3Soak(
  partial: Partial<S3SoakOptions> & { s3: S3Env },
): Promise<S3SoakResult> {
  const o: S3SoakOptions = { ...S3_SOAK_DEFAULTS, ...partial }
  const started = performance.now()
  const random = prng(o.seed)
  const client = new S3(clientConfig(o.s3))
  const bucket = `fastify-tus-soak-${randomBytes(6).toString('hex')}`
  await client.createBucket({ Bucket: bucket })
  const reports: SweepReport[] = []
  let app: FastifyInstance | undefined
  let port = 0

  const startApp = async () => {
    const next = Fastify()
    await next.register(fastifyTus, {
      datastore: new S3Store({
        partSize: 5 * MiB,
        expirationPeriodInMilliseconds: 3_600_000,
        s3ClientConfig: { bucket, ...clientConfig(o.s3) },
      }),
      expireAfterMs: o.expireAfterMs,
      cleanupIntervalMs: o.cleanupIntervalMs,
    })
    // Every sweep's report, on the schedule or not.
    const schedule = next.tusCleanup
    const record = () => {
      const last = schedule.last
      if (last && reports.at(-1) !== last) reports.push(last)
    }
    const timer = setInterval(record, 50)
    next.addHook('onClose', async () => {
      clearInterval(timer)
      record()
    })
    const address = await next.listen({ host: '127.0.0.1', port })
    port = Number(new URL(address).port)
    app = next
  }

  try {
    await startApp()
    const endpoint = () => `http://127.0.0.1:${port}/files`
    const failed: string[] = []
    const finished: Array<{ id: string; digest: string; size: number }> = []
    let longestUploadMs = 0

    const upload = (data: Buffer, chunkSize: number, abandon: boolean) =>
      new Promise<string | undefined>((resolve) => {
        const began = performance.now()
        const events: string[] = []
        const at = () => Math.round(performance.now() - began)
        const u: tus.Upload = new tus.Upload(data, {
          endpoint: endpoint(),
          chunkSize,
          retryDelays: [200, 500, 1000, 2000, 3000],
          onBeforeRequest: async (req) => {
            if (req.getMethod() === 'PATCH') await sleep(random() * o.paceMs)
            events.push(`${req.getMethod()}@${at()}`)
          },
          onAfterResponse: (_req, res) => {
            events.push(`${res.getStatus()}@${at()}`)
          },
          onChunkComplete: () => {
            if (!abandon) return
            // Abandoned after its first PATCH: the client goes away for good.
            u.abort().catch(() => {})
            resolve(undefined)
          },
          onSuccess: () => {
            longestUploadMs = Math.max(longestUploadMs, performance.now() - began)
            resolve(u.url?.slice(u.url.lastIndexOf('/') + 1))
          },
          onError: (error) => {
            const removedBy = reports.filter((r) => r.ids.some((id) => u.url?.endsWith(id)))
            failed.push(
              `${String(error).slice(0, 300)} [size ${data.length}, chunk ${chunkSize}, after ${Math.round(performance.now() - began)} ms${removedBy.length ? `, removed by the sweep of ${removedBy.map((r) => r.startedAt).join(', ')}` : ''}; events: ${events.join(' ')}]`,
            )
            resolve(undefined)
          },
        })
        u.start()
      })

    const runs: Array<Promise<unknown>> = []
    for (let i = 0; i < o.uploads + o.abandoned; i++) {
      const abandon = i >= o.uploads
      // Abandoned ones stop after one chunk: some leave a part, some only a `.part`.
      const chunkSize = MiB * (1 + Math.floor(random() * 6))
      const size = abandon
        ? chunkSize + MiB + Math.floor(random() * 4 * MiB)
        : i === 0
          ? 0
          : Math.floor(random() * o.maxSize)
      const data = randomBytes(size)
      runs.push(
        sleep(random() * 1000)
          .then(() => upload(data, chunkSize, abandon))
          .then((id) => {
            if (id !== undefined && !abandon) finished.push({ id, digest: sha(data), size })
          }),
      )
    }
    // Restarts at even intervals while uploads run: close (PATCHes in flight finish), start again.
    const all = Promise.all(runs)
    for (let r = 0; r < o.restarts; r++) {
      await Promise.race([all, sleep((o.paceMs * 4) / (o.restarts + 1))])
      o.log(`restart ${r + 1}`)
      await app?.close()
      await startApp()
    }
    await all
    o.log(`${finished.length} uploads finished, ${failed.length} failed`)

    // The abandoned ones go within expireAfterMs + a few intervals; the finished ones stay.
    // A 0-byte upload has no object: tus never completes its multipart upload, which stays.
    const keep = new Set(
      finished.flatMap(({ id, size }) =>
        size === 0 ? [`${id}.info`, `multipart ${id}`] : [id, `${id}.info`],
      ),
    )
    const deadline = Date.now() + o.expireAfterMs + 10 * o.cleanupIntervalMs + 5000
    let leftovers: string[] = []
    for (;;) {
      const objects = (await client.listObjectsV2({ Bucket: bucket })).Contents ?? []
      const uploads = (await client.listMultipartUploads({ Bucket: bucket })).Uploads ?? []
      leftovers = [
        ...objects.map((x) => x.Key as string).filter((k) => !keep.has(k)),
        ...uploads.map((u) => `multipart ${u.Key}`).filter((k) => !keep.has(k)),
      ]
      if (leftovers.length === 0 || Date.now() > deadline) break
      await sleep(200)
    }
    let intact = 0
    for (const { id, digest, size } of finished) {
      if (size === 0) {
        intact++ // its `.info` and multipart upload were checked above
        continue
      }
      try {
        const { Body } = await client.getObject({ Bucket: bucket, Key: id })
        if (Body && sha(await Body.transformToByteArray()) === digest) intact++
        else failed.push(`${id} (${size} bytes): not byte-identical`)
      } catch (error) {
        failed.push(`${id} (${size} bytes): ${(error as Error).name}`)
      }
    }
    await app?.close()
    app = undefined
    const sweepErrors = reports.reduce((n, r) => n + r.errors, 0)
    const result: S3SoakResult = {
      finished: finished.length,
      intact,
      failed,
      abandonedGone: leftovers.length === 0 ? o.abandoned : 0,
      leftovers,
      sweeps: reports.length,
      sweepErrors,
      removed: reports.reduce((n, r) => n + r.removed, 0),
      longestUploadMs: Math.round(longestUploadMs),
      durationMs: Math.round(performance.now() - started),
      ok: false,
    }
    result.ok =
      failed.length === 0 &&
      intact === o.uploads &&
      leftovers.length === 0 &&
      sweepErrors === 0 &&
      result.removed >= o.abandoned
    return result
  } finally {
    await app?.close()
    await emptyAndRemove(client, bucket)
    client.destroy()
  }
}

async function emptyAndRemove(client: S3, bucket: string): Promise<void> {
  for (const u of (await client.listMultipartUploads({ Bucket: bucket })).Uploads ?? []) {
    await client
      .abortMultipartUpload({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId })
      .catch(() => {})
  }
  for (;;) {
    const { Contents = [] } = await client.listObjectsV2({ Bucket: bucket })
    if (Contents.length === 0) break
    for (const x of Contents) await client.deleteObject({ Bucket: bucket, Key: x.Key })
  }
  await client.deleteBucket({ Bucket: bucket })
}

export function formatS3Soak(r: S3SoakResult): string {
  const rows: Array<[string, string | number]> = [
    ['result', r.ok ? 'ok' : 'FAILED'],
    ['finished uploads', r.finished],
    ['byte-identical', r.intact],
    ['failed', r.failed.length ? r.failed.join('; ') : 0],
    ['abandoned uploads left', r.leftovers.length ? r.leftovers.join(', ') : 0],
    ['sweeps seen', r.sweeps],
    ['removed by sweeps', r.removed],
    ['sweep errors', r.sweepErrors],
    ['longest upload (ms)', r.longestUploadMs],
    ['duration (ms)', r.durationMs],
  ]
  return rows.map(([k, v]) => `${k.padEnd(24)} ${v}`).join('\n')
}
