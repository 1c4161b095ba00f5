/**
 * The demo app: its settings from the environment, and the Fastify app with fastify-tus and a
 * small upload page (demo/public) with the last sweep report.
 */
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import { MAX_TIMER_MS, parseWholeNumber } from '../src/duration.js'
import fastifyTus from '../src/index.js'
import { connectRedis, FAIL_FAST_REDIS_OPTIONS, isRedisUrl } from '../src/redis/connect.js'

export interface DemoConfig {
  host: string
  port: number
  uploadDir: string
  expireAfterMs: number
  cleanupIntervalMs: number
  logLevel: string
  /** Several instances on one directory: Redis for locks and the sweep's lease. */
  redisUrl?: string | undefined
  redisPrefix?: string | undefined
  redisLockTtlMs?: number | undefined
  /** `METRICS=1`: Prometheus metrics on `GET /metrics`. */
  metrics?: boolean | undefined
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

export function readConfig(env: NodeJS.ProcessEnv): DemoConfig {
  return {
    host: env.HOST || '127.0.0.1',
    port: integer(env, 'PORT', 1080, 0, 65535),
    uploadDir: env.UPLOAD_DIR || './uploads',
    expireAfterMs: integer(env, 'EXPIRE_AFTER_MS', 600_000, 0, Number.MAX_SAFE_INTEGER),
    cleanupIntervalMs: integer(env, 'CLEANUP_INTERVAL_MS', 600_000, 1, MAX_TIMER_MS),
    logLevel: oneOf(env, 'LOG_LEVEL', 'info', LOG_LEVELS),
    redisUrl: redisUrl(env),
    redisPrefix: env.REDIS_PREFIX || undefined,
    redisLockTtlMs: env.REDIS_LOCK_TTL_MS
      ? integer(env, 'REDIS_LOCK_TTL_MS', 10_000, 100, MAX_TIMER_MS)
      : undefined,
    metrics: oneOf(env, 'METRICS', '0', ['0', '1']) === '1',
  }
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number) {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  const value = parseWholeNumber(raw, { min, max })
  if (typeof value === 'string') throw new ConfigError(`${name} ${value}, got "${raw}"`)
  return value
}

function oneOf(env: NodeJS.ProcessEnv, name: string, fallback: string, allowed: string[]) {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  if (!allowed.includes(raw)) {
    throw new ConfigError(`${name} must be one of ${allowed.join(', ')}, got "${raw}"`)
  }
  return raw
}

function redisUrl(env: NodeJS.ProcessEnv): string | undefined {
  const raw = env.REDIS_URL
  if (raw === undefined || raw === '') return undefined
  if (!isRedisUrl(raw)) {
    throw new ConfigError(`REDIS_URL must be a redis:// or rediss:// URL, got "${raw}"`)
  }
  return raw
}

export class ConfigError extends Error {}

export async function startDemo(config: DemoConfig) {
  const app = Fastify({
    logger: { level: config.logLevel },
    // Uploads are long requests: no request timeout; idle keep-alive sockets still close.
    requestTimeout: 0,
    connectionTimeout: 0,
  })
  // Fail fast while Redis is down: requests then answer 503 at once (docs/redis.md).
  const redis = config.redisUrl
    ? await connectRedis(config.redisUrl, FAIL_FAST_REDIS_OPTIONS)
    : undefined
  if (redis) {
    redis.on('error', (err) => app.log.warn({ err }, 'redis connection error'))
    app.addHook('onClose', async () => void (await redis.quit()))
  }
  await app.register(fastifyTus, {
    directory: config.uploadDir,
    expireAfterMs: config.expireAfterMs,
    cleanupIntervalMs: config.cleanupIntervalMs,
    ...(redis && {
      redis: {
        client: redis,
        ...(config.redisPrefix && { prefix: config.redisPrefix }),
        ...(config.redisLockTtlMs && { lockTtlMs: config.redisLockTtlMs }),
      },
    }),
    metrics: config.metrics ?? false,
  })
  if (config.metrics) {
    // prom-client's default registry, where `metrics: true` registers the plugin's metrics.
    const { register } = await import('prom-client')
    app.get('/metrics', async (_request, reply) =>
      reply.type(register.contentType).send(await register.metrics()),
    )
  }
  demoPage(app, config)
  await app.listen({ host: config.host, port: config.port })
  return app
}

const here = path.dirname(fileURLToPath(import.meta.url))
// The page is not compiled: from demo/ (TS source) it sits next to this file, from dist/demo
// (`npm start`) it is the source tree's demo/public.
const PUBLIC_DIR =
  [path.join(here, 'public'), path.join(here, '../../demo/public')].find((dir) =>
    existsSync(path.join(dir, 'index.html')),
  ) ?? path.join(here, 'public')

// tus-js-client's browser build, from the npm package: the page works offline.
const TUS_BUNDLE = createRequire(import.meta.url).resolve('tus-js-client/dist/tus.min.js')

const ASSETS: Record<string, { file: string; type: string }> = {
  '/': { file: path.join(PUBLIC_DIR, 'index.html'), type: 'text/html; charset=utf-8' },
  '/app.js': { file: path.join(PUBLIC_DIR, 'app.js'), type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: path.join(PUBLIC_DIR, 'style.css'), type: 'text/css; charset=utf-8' },
  '/tus.min.js': { file: TUS_BUNDLE, type: 'text/javascript; charset=utf-8' },
}

/** The upload page, its assets, and `GET /api/sweep`: the last sweep report and the settings. */
function demoPage(app: FastifyInstance, config: DemoConfig) {
  for (const [url, asset] of Object.entries(ASSETS)) {
    // Read on each request: a demo, and edits to the page show without a restart.
    app.get(url, async (_request, reply) =>
      reply
        .type(asset.type)
        .header('Cache-Control', 'no-cache')
        .send(await readFile(asset.file)),
    )
  }
  app.get('/api/sweep', async (_request, reply) =>
    reply.header('Cache-Control', 'no-cache').send({
      last: app.tusCleanup.last ?? null,
      expireAfterMs: config.expireAfterMs,
      cleanupIntervalMs: config.cleanupIntervalMs,
    }),
  )
}
