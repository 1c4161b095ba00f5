/**
 * A real listening Fastify server with the plugin, whose pino records are captured.
 */
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import fastifyTus, { type FastifyTusOptions } from '../../src/index.js'
import { afterTest } from './cleanup.js'
import { tempDir } from './fs.js'
import { waitFor } from './wait.js'

export interface LogRecord {
  level: number
  msg: string
  [key: string]: unknown
}

/** A pino destination that keeps every record. */
export function logCapture() {
  const records: LogRecord[] = []
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line) records.push(JSON.parse(line))
      done()
    },
  })
  return { records, stream }
}

export interface TestServer {
  app: FastifyInstance
  /** `http://127.0.0.1:<port>` */
  origin: string
  /** The tus endpoint, e.g. `http://127.0.0.1:<port>/files`. */
  endpoint: string
  logs: LogRecord[]
  directory: string
}

export interface ServerSetup {
  fastify?: FastifyServerOptions
  /** Register extra routes or hooks before the plugin. */
  before?: (app: FastifyInstance) => void | Promise<void>
  register?: { prefix?: string }
  listen?: boolean
}

/** A listening Fastify app with the plugin, closed after the test. */
export async function startServer(
  options: FastifyTusOptions = {},
  setup: ServerSetup = {},
): Promise<TestServer> {
  const directory = options.datastore ? '' : (options.directory ?? (await tempDir()))
  const { records, stream } = logCapture()
  const app = Fastify({ logger: { level: 'debug', stream }, ...setup.fastify })
  afterTest(() => app.close())
  await setup.before?.(app)
  const pluginOptions = options.datastore ? options : { ...options, directory }
  await app.register(fastifyTus, { ...pluginOptions, ...setup.register })
  let origin = ''
  if (setup.listen !== false) {
    origin = await app.listen({ host: '127.0.0.1', port: 0 })
  }
  const prefix = setup.register?.prefix ?? ''
  return {
    app,
    origin,
    endpoint: `${origin}${prefix}${options.path ?? '/files'}`,
    logs: records,
    directory,
  }
}

/** Waits for the record of an emergency sweep that removed one expired upload (free space or quota). */
export function emergencySweepRecord(logs: LogRecord[]): Promise<LogRecord> {
  return waitFor(
    () => logs.find((r) => r.emergency === true && /removed 1 expired/.test(String(r.msg))),
    5000,
    'the emergency sweep',
  )
}
