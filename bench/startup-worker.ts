/**
 * Time from `register` to `ready` in a process of its own: `node startup-worker.js <dir> <periodMs>`.
 * With the directory full of stale sessions, ready must not wait for the first sweep.
 */
import Fastify from 'fastify'
import fastifyTus from '../src/index.js'

const [dir, periodArg] = process.argv.slice(2)
const app = Fastify()
const started = performance.now()
await app.register(fastifyTus, { directory: dir as string, expireAfterMs: Number(periodArg) })
await app.ready()
const readyMs = performance.now() - started
process.stdout.write(`${JSON.stringify({ readyMs })}\n`)
process.exit(0)
