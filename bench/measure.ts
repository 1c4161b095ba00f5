/** Measuring helpers shared by the benchmark workers. */
import { readFileSync } from 'node:fs'
import { monitorEventLoopDelay } from 'node:perf_hooks'

/**
 * Peak RSS of this process in MiB: VmHWM from /proc (Linux), else `resourceUsage().maxRSS`.
 * maxRSS is not used on Linux because the kernel folds the RSS of the image a child was forked
 * from into it at exec: a worker spawned by a 200 MB parent would report at least 200 MB.
 */
export function peakRssMB(): number {
  try {
    const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))
    if (match) return Number(match[1]) / 1024
  } catch {}
  return process.resourceUsage().maxRSS / 1024
}

/** Event-loop delay at 1 ms resolution while `work` runs; max is reported, percentiles hide stalls. */
export async function withLoopDelay<T>(work: () => Promise<T>) {
  const delay = monitorEventLoopDelay({ resolution: 1 })
  delay.enable()
  const started = performance.now()
  const result = await work()
  const timeMs = performance.now() - started
  delay.disable()
  return { result, timeMs, loopP99Ms: delay.percentile(99) / 1e6, loopMaxMs: delay.max / 1e6 }
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN
}
