/**
 * The demo app: its settings from the environment, and the Fastify app with fastify-tus.
 */
import Fastify from 'fastify'
import fastifyTus from '../src/index.js'

export interface DemoConfig {
  host: string
  port: number
  uploadDir: string
  expireAfterMs: number
  cleanupIntervalMs: number
  logLevel: string
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

export function readConfig(env: NodeJS.ProcessEnv): DemoConfig {
  return {
    host: env.HOST || '127.0.0.1',
    port: integer(env, 'PORT', 1080, 0, 65535),
    uploadDir: env.UPLOAD_DIR || './uploads',
    expireAfterMs: integer(env, 'EXPIRE_AFTER_MS', 600_000, 0, Number.MAX_SAFE_INTEGER),
    cleanupIntervalMs: integer(env, 'CLEANUP_INTERVAL_MS', 600_000, 1, 2 ** 31 - 2),
    logLevel: oneOf(env, 'LOG_LEVEL', 'info', LOG_LEVELS),
  }
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number) {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!/^\d+$/.test(raw.trim()) || value < min || value > max) {
    throw new ConfigError(`${name} must be a whole number from ${min} to ${max}, got "${raw}"`)
  }
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

export class ConfigError extends Error {}

export async function startDemo(config: DemoConfig) {
  const app = Fastify({
    logger: { level: config.logLevel },
    // Uploads are long requests: no request timeout; idle keep-alive sockets still close.
    requestTimeout: 0,
    connectionTimeout: 0,
  })
  await app.register(fastifyTus, {
    directory: config.uploadDir,
    expireAfterMs: config.expireAfterMs,
    cleanupIntervalMs: config.cleanupIntervalMs,
  })
  await app.listen({ host: config.host, port: config.port })
  return app
}
