/**
 * One sweep in a process of its own, measured: `node sweep-worker.js <contender> <dir> <periodMs>`.
 * Prints one JSON line: time, CPU time, peak RSS, event-loop delay (1 ms resolution) and what it removed.
 *
 * Contenders: `plugin` (fastify.tusCleanup.run() in a Fastify app), `engine` (sweepDirectory
 * alone) and `stock` (@tus/file-store's FileStore.deleteExpired()).
 */
import { FileStore } from '@tus/file-store'
import Fastify from 'fastify'
import fastifyTus from '../src/index.js'
import { sweepDirectory } from '../src/sweep/index.js'
import { peakRssMB, withLoopDelay } from './measure.js'

const [contender, dir, periodArg] = process.argv.slice(2)
const period = Number(periodArg)
if (!contender || !dir || !(period > 0))
  throw new Error('usage: sweep-worker <plugin|engine|stock> <dir> <periodMs>')

async function prepare(): Promise<() => Promise<number>> {
  switch (contender) {
    case 'plugin': {
      const app = Fastify()
      await app.register(fastifyTus, {
        directory: dir,
        expireAfterMs: period,
        cleanupOnStart: false,
      })
      await app.ready()
      return async () => (await app.tusCleanup.run()).removed
    }
    case 'engine':
      return async () =>
        (await sweepDirectory({ directory: dir as string, expireAfterMs: period })).removed
    case 'stock': {
      const store = new FileStore({
        directory: dir as string,
        expirationPeriodInMilliseconds: period,
      })
      return () => store.deleteExpired()
    }
    default:
      throw new Error(`unknown contender ${contender}`)
  }
}

const sweep = await prepare()
// The measured sweep starts from a collected heap, as a long-running server's sweep would: without
// this, the first full collection of what loading the worker's modules left behind landed in the
// engine's first half second (a 4-8 ms pause on a quiet machine, 23-36 ms on a busy one), where
// the plugin's app.ready() had already made it.
;(globalThis as { gc?: () => void }).gc?.()
const cpuBefore = process.cpuUsage()
const { result: removed, timeMs, loopP99Ms, loopMaxMs } = await withLoopDelay(sweep)
// CPU time (user + system) of the sweep: steadier than wall time on a shared, noisy disk.
const cpu = process.cpuUsage(cpuBefore)
const cpuMs = (cpu.user + cpu.system) / 1000
const peak = peakRssMB()
// What the sweep left alive: started with --expose-gc, a full collection shows retained memory.
;(globalThis as { gc?: () => void }).gc?.()
const heapAfterGcMB = process.memoryUsage().heapUsed / 1048576
process.stdout.write(
  `${JSON.stringify({ contender, timeMs, cpuMs, removed, peakRssMB: peak, heapAfterGcMB, loopP99Ms, loopMaxMs })}\n`,
)
process.exit(0)
