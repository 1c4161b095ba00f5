/**
 * `npm run bench [-- <section> ...]`: runs the benchmark sections (sweep, growth, startup, latency,
 * upload, draft, settle, many, metrics, parallel, small, lockwait; all by default), each contender in a process of its own, contenders alternating
 * round by round, and writes BENCHMARKS.md with medians and ratios against the baselines
 * measured in the same run. Not a test: nothing here asserts, CI does not run it.
 */
import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {
  copyOf,
  countFiles,
  DATA_ROOT,
  type Dataset,
  ensureDataset,
  expiryCutoffMs,
  periodFor,
  removeCopy,
} from './dataset.js'
import { median } from './measure.js'

const HERE = path.dirname(new URL(import.meta.url).pathname)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const SESSIONS = Number(process.env.BENCH_SESSIONS ?? 100_000)
/** Upload sizes in MiB, each measured every round: `BENCH_UPLOAD_MIB=512,1024`. */
const UPLOAD_SIZES = (process.env.BENCH_UPLOAD_MIB ?? '512,1024').split(',').map(Number)
const CHUNK_MIB = 64
/** Disk throughput on a VM varies from run to run: the upload section takes more rounds. */
const UPLOAD_ROUNDS = Number(process.env.BENCH_UPLOAD_ROUNDS ?? 7)

type Row = Record<string, string | number>
interface Section {
  title: string
  intro: string
  rows: Row[]
  goals: Array<{ goal: string; value: string; met: boolean }>
  notes?: string[]
}

function worker(
  script: string,
  args: Array<string | number>,
  flags: string[] = [],
): Record<string, unknown> {
  const out = execFileSync(
    process.execPath,
    [...flags, path.join(HERE, script), ...args.map(String)],
    {
      maxBuffer: 16 * 1024 * 1024,
    },
  )
  return JSON.parse(out.toString().trim().split('\n').pop() as string)
}

/** Starts a long-running worker that prints `{"port": N}`; resolves to its origin and process. */
async function server(
  script: string,
  args: Array<string | number>,
  flags: string[] = [],
  env: Record<string, string> = {},
) {
  const child = spawn(process.execPath, [...flags, path.join(HERE, script), ...args.map(String)], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  })
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.once('data', (chunk) => resolve(JSON.parse(String(chunk)).port))
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}`)))
  })
  return {
    origin: `http://127.0.0.1:${port}`,
    stop: async () => {
      child.kill('SIGKILL')
      await new Promise((resolve) => child.once('exit', resolve))
    },
  }
}

/**
 * `run` against an upload server (`upload-server.js <variant> <dir>`) on an empty `dir`, which
 * goes again afterwards. With `sync`, what earlier runs left is flushed and its removal committed
 * first: otherwise that work lands in this run (the disk here is mounted with `discard`).
 */
async function onUploadServer<T>(
  variant: string,
  dir: string,
  run: (origin: string) => T | Promise<T>,
  {
    sync = false,
    flags = [],
    env = {},
  }: { sync?: boolean; flags?: string[]; env?: Record<string, string> } = {},
): Promise<T> {
  await fs.rm(dir, { recursive: true, force: true })
  await fs.mkdir(dir, { recursive: true })
  if (sync) execFileSync('sync')
  const srv = await server('upload-server.js', [variant, dir], flags, env)
  try {
    return await run(srv.origin)
  } finally {
    await srv.stop()
    await fs.rm(dir, { recursive: true, force: true })
  }
}

/** The same contenders every round, their order rotated: A B C, B C A, C A B, ... */
function rotations<T>(items: T[], rounds: number): T[][] {
  return Array.from({ length: rounds }, (_, r) =>
    items.map((_, i) => items[(i + r) % items.length] as T),
  )
}

function append<T>(groups: Record<string, T[]>, key: string, value: T): void {
  groups[key] = [...(groups[key] ?? []), value]
}

const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a')

/**
 * The floor a sweep is held against, on a working copy of `dataset`: `find -printf` over every
 * entry (name, size, mtime: what a sweep must learn of each), then removing the files older than
 * the period with `find | xargs rm` (exactly the abandoned sessions' data and metadata files).
 */
function floorRun(dir: string, dataset: Dataset): { timeMs: number; cpuMs: number } {
  const cutoffSec = Math.floor(expiryCutoffMs(dataset) / 1000)
  // `times` prints the shell's CPU time, then its children's: user and system, as `1m2.345s`.
  const script =
    `find "$1" -printf '%p %s %T@\\n' >/dev/null && ` +
    `find "$1" -type f ! -newermt "@$2" -print0 | xargs -0 -r rm -- && times`
  const started = performance.now()
  const out = execFileSync('bash', ['-c', script, 'floor', dir, String(cutoffSec)])
  const timeMs = performance.now() - started
  const children = out.toString().trim().split('\n').pop() ?? ''
  const cpuMs = [...children.matchAll(/(\d+)m([\d.]+)s/g)].reduce(
    (sum, [, min, sec]) => sum + (Number(min) * 60 + Number(sec)) * 1000,
    0,
  )
  return { timeMs, cpuMs }
}

type SweepRun = {
  timeMs: number
  /** User + system CPU time of the sweep (of the floor: of its processes). */
  cpuMs: number
  peakRssMB: number
  heapAfterGcMB: number
  loopP99Ms: number
  loopMaxMs: number
  removed: number
  /** Data files left. */
  left: number
  /** Metadata files left. */
  leftMetadata: number
}

/** One contender (stock, engine, plugin, or `floor`) on a fresh hard-linked copy of `dataset`. */
async function sweepRun(contender: string, dataset: Dataset): Promise<SweepRun> {
  const dir = await copyOf(dataset, `sweep-${contender}`)
  let result: SweepRun
  if (contender === 'floor') {
    const { timeMs, cpuMs } = floorRun(dir, dataset)
    result = {
      timeMs,
      cpuMs,
      peakRssMB: Number.NaN,
      heapAfterGcMB: Number.NaN,
      loopP99Ms: Number.NaN,
      loopMaxMs: Number.NaN,
      removed: Number.NaN,
      left: 0,
      leftMetadata: 0,
    }
  } else {
    result = worker(
      'sweep-worker.js',
      [contender, dir, periodFor(dataset)],
      ['--expose-gc'],
    ) as unknown as SweepRun
  }
  const left = await countFiles(dir)
  result.left = left.data
  result.leftMetadata = left.metadata
  // The floor removed files, not sessions: what it removed is what went from the template.
  if (contender === 'floor') result.removed = dataset.sessions - left.data
  removeCopy(dir)
  return result
}

async function sweepSection(): Promise<Section> {
  const big = await ensureDataset(SESSIONS)
  const small = await ensureDataset(SESSIONS / 10)
  const contenders = ['stock', 'engine', 'plugin', 'floor'] as const
  const runs: Record<string, SweepRun[]> = {}
  const runOne = async (contender: string, dataset: Dataset, key: string) => {
    const result = await sweepRun(contender, dataset)
    append(runs, key, result)
    console.log(
      `sweep ${key}: ${fmt(result.timeMs, 0)} ms, ${fmt(result.peakRssMB)} MiB, loop max ${fmt(result.loopMaxMs)} ms, ` +
        `left ${result.left}/${result.leftMetadata}`,
    )
  }
  for (const order of rotations([...contenders], ROUNDS)) {
    for (const contender of order) await runOne(contender, big, contender)
  }
  for (const order of rotations(['engine', 'plugin'], ROUNDS)) {
    for (const contender of order) await runOne(contender, small, `${contender}-small`)
  }
  const m = (key: string, field: keyof SweepRun) => median((runs[key] ?? []).map((r) => r[field]))
  const stockTime = m('stock', 'timeMs')
  const floorTime = m('floor', 'timeMs')
  const stockRss = m('stock', 'peakRssMB')
  const rows = contenders.map((c) => ({
    contender: {
      stock: 'stock FileStore.deleteExpired()',
      engine: 'sweep engine alone',
      plugin: 'plugin: tusCleanup.run()',
      floor: 'floor: find -printf + find | xargs rm',
    }[c],
    'time (ms)': fmt(m(c, 'timeMs'), 0),
    'CPU (ms)': fmt(m(c, 'cpuMs'), 0),
    'vs floor': fmt(m(c, 'timeMs') / floorTime, 2),
    'vs stock': fmt(m(c, 'timeMs') / stockTime, 2),
    '× faster than stock': fmt(stockTime / m(c, 'timeMs'), 1),
    'peak RSS (MiB)': fmt(m(c, 'peakRssMB')),
    'heap after GC (MiB)': fmt(m(c, 'heapAfterGcMB')),
    'loop p99 (ms)': fmt(m(c, 'loopP99Ms')),
    'loop max (ms)': fmt(m(c, 'loopMaxMs')),
    removed: m(c, 'removed'),
    left: m(c, 'left'),
  }))
  const growth = (c: string) => m(c, 'peakRssMB') / m(`${c}-small`, 'peakRssMB') - 1
  const worstLoopMax = Math.max(
    ...['engine', 'plugin'].flatMap((c) => (runs[c] ?? []).map((r) => r.loopMaxMs)),
  )
  const kept = SESSIONS - big.abandoned
  return {
    title: `Sweep of ${SESSIONS.toLocaleString('en')} sessions`,
    intro:
      `${SESSIONS.toLocaleString('en')} sessions in the file store's layout (default ids, data + metadata file), ` +
      `${big.abandoned.toLocaleString('en')} abandoned (unfinished, last active an hour before the others), the rest fresh. ` +
      `Each run sweeps its own hard-linked copy in a process of its own; ${ROUNDS} rounds, contenders rotated; medians. ` +
      'The floor is what any sweep must do, measured on its own copy in the same rounds: ' +
      "`find <dir> -printf '%p %s %T@\\n'` over every entry, then `find <dir> -type f ! -newermt <cutoff> -print0 | xargs -0 rm` " +
      "removing the abandoned sessions' data and metadata files. " +
      'Every worker (stock included) collects its heap once loaded, before the measured sweep, as a server that has been up a while has. ' +
      'Peak RSS is VmHWM (see bench/measure.ts for why not maxRSS); loop figures are monitorEventLoopDelay at 1 ms resolution.',
    rows,
    goals: [
      {
        // A sweep that removed nothing (every entry an error) would be fast and prove nothing.
        goal: `every run removed the ${big.abandoned.toLocaleString('en')} abandoned sessions (data and metadata) and nothing else`,
        value: contenders
          .map((c) => `${c} ${(runs[c] ?? []).map((r) => r.removed).join('/')}`)
          .join(', '),
        met: contenders.every((c) =>
          (runs[c] ?? []).every(
            (r) => r.removed === big.abandoned && r.left === kept && r.leftMetadata === kept,
          ),
        ),
      },
      ...(['plugin', 'engine'] as const).map((c) => ({
        goal: `time ≤ 2.5× the floor (${c})`,
        value: `${fmt(m(c, 'timeMs') / floorTime, 2)}× (${fmt(m(c, 'timeMs'), 0)} vs ${fmt(floorTime, 0)} ms)`,
        met: m(c, 'timeMs') <= 2.5 * floorTime,
      })),
      ...(['plugin', 'engine'] as const).map((c) => ({
        goal: `≥ 4× faster than stock (${c})`,
        value: `${fmt(stockTime / m(c, 'timeMs'), 1)}× (${fmt(m(c, 'timeMs') / stockTime, 2)} of stock's time)`,
        met: m(c, 'timeMs') * 4 <= stockTime,
      })),
      {
        goal: 'peak RSS ≤ stock (plugin)',
        value: `${fmt(m('plugin', 'peakRssMB'))} vs ${fmt(stockRss)} MiB`,
        met: m('plugin', 'peakRssMB') <= stockRss,
      },
      {
        goal: `RSS growth ${(SESSIONS / 10).toLocaleString('en')} → ${SESSIONS.toLocaleString('en')} sessions ≤ 10%`,
        value: `engine ${fmt(growth('engine') * 100)}%, plugin ${fmt(growth('plugin') * 100)}%`,
        met: growth('engine') <= 0.1 && growth('plugin') <= 0.1,
      },
      {
        goal: 'event-loop max ≤ 20 ms (worst run of engine and plugin)',
        value: `${fmt(worstLoopMax)} ms`,
        met: worstLoopMax <= 20,
      },
    ],
    notes: [
      `${(SESSIONS / 10).toLocaleString('en')} sessions: engine ${fmt(m('engine-small', 'timeMs'), 0)} ms, ` +
        `peak ${fmt(m('engine-small', 'peakRssMB'))} MiB, heap after GC ${fmt(m('engine-small', 'heapAfterGcMB'))} MiB; ` +
        `plugin ${fmt(m('plugin-small', 'timeMs'), 0)} ms, peak ${fmt(m('plugin-small', 'peakRssMB'))} MiB, ` +
        `heap after GC ${fmt(m('plugin-small', 'heapAfterGcMB'))} MiB.`,
      'Time / CPU time of every run, in ms: ' +
        contenders
          .map(
            (c) =>
              `${c} ${(runs[c] ?? []).map((r) => `${fmt(r.timeMs, 0)}/${fmt(r.cpuMs, 0)}`).join(', ')}`,
          )
          .join('; ') +
        '.',
      'Event-loop max of every run, in ms (a single late tick counts, so one run can stand out): ' +
        ['engine', 'plugin', 'engine-small', 'plugin-small']
          .map((c) => `${c} ${(runs[c] ?? []).map((r) => fmt(r.loopMaxMs)).join(', ')}`)
          .join('; ') +
        '.',
      'About the RSS growth: the sweep keeps nothing per session (the heap after a full GC is the same at every size). ' +
        "Peak RSS follows V8's young generation, which grows once enough has survived its collections since it last " +
        "grew; loading the worker (Fastify, @tus/server) already grows it before the sweep starts. The sweep's looks " +
        '(lstat, record reads), its walk and its unlinks of small files are synchronous, in slices of at most 5 ms, ' +
        'so a removal runs within one turn of the event loop and little stays alive across a collection. Before that, ' +
        "every look went through libuv's pool (about 13 µs of CPU per lstat against 3 µs) and 8 visits were always " +
        'in flight. What helped earlier: taking the MemoryLocker lock without arming its 30 s timer per removal; ' +
        "then no Map or Set of the old generation changed per removal (MemoryLocker's table, the sweep's claims): " +
        'V8 replaces their hash tables on such changes, and the dead tables, each linked to the next, were promoted ' +
        'until a full collection (the growth section).',
    ],
  }
}

/** Sessions of the growth section's large store; its small one is `SESSIONS`. */
const GROWTH_SESSIONS = Number(process.env.BENCH_GROWTH_SESSIONS ?? 10 * SESSIONS)
const GROWTH_ROUNDS = Number(process.env.BENCH_GROWTH_ROUNDS ?? ROUNDS)

/** Engine and plugin on `SESSIONS` and ten times as many sessions: time, peak RSS and heap. */
async function growthSection(): Promise<Section> {
  const base = await ensureDataset(SESSIONS)
  const large = await ensureDataset(GROWTH_SESSIONS)
  const factor = GROWTH_SESSIONS / SESSIONS
  const runs: Record<string, SweepRun[]> = {}
  // The floor at both sizes too: it tells what of the growth the filesystem itself costs.
  const keys = ['engine', 'plugin', 'floor', 'engine-large', 'plugin-large', 'floor-large']
  for (const order of rotations(keys, GROWTH_ROUNDS)) {
    for (const key of order) {
      const [contender, size] = key.split('-') as [string, string | undefined]
      const result = await sweepRun(contender, size ? large : base)
      append(runs, key, result)
      console.log(
        `growth ${key}: ${fmt(result.timeMs, 0)} ms, ${fmt(result.peakRssMB)} MiB, heap ${fmt(result.heapAfterGcMB)} MiB, ` +
          `loop max ${fmt(result.loopMaxMs)} ms, left ${result.left}/${result.leftMetadata}`,
      )
    }
  }
  const m = (key: string, field: keyof SweepRun) => median((runs[key] ?? []).map((r) => r[field]))
  const ratio = (c: string, field: keyof SweepRun) => m(`${c}-large`, field) / m(c, field)
  const rows = keys.map((key) => ({
    run: key.replace('-large', ''),
    sessions: (key.endsWith('-large') ? GROWTH_SESSIONS : SESSIONS).toLocaleString('en'),
    'time (ms)': fmt(m(key, 'timeMs'), 0),
    'CPU (ms)': fmt(m(key, 'cpuMs'), 0),
    'peak RSS (MiB)': fmt(m(key, 'peakRssMB')),
    'heap after GC (MiB)': fmt(m(key, 'heapAfterGcMB')),
    'loop max (ms)': fmt(m(key, 'loopMaxMs')),
    removed: m(key, 'removed'),
    left: m(key, 'left'),
  }))
  return {
    title: `Growth: ${SESSIONS.toLocaleString('en')} → ${GROWTH_SESSIONS.toLocaleString('en')} sessions`,
    intro:
      `The sweep section's layout at ${SESSIONS.toLocaleString('en')} and ${GROWTH_SESSIONS.toLocaleString('en')} sessions ` +
      `(10% abandoned), engine, plugin and the sweep section's floor, each run on its own hard-linked copy ` +
      '(engine and plugin in a process of their own); ' +
      `${GROWTH_ROUNDS} rounds, runs rotated; medians. Heap after GC is taken after the sweep with --expose-gc.`,
    rows,
    goals: [
      {
        goal: 'every run removed the abandoned sessions and nothing else',
        value: keys
          .map((k) => `${k} ${(runs[k] ?? []).map((r) => r.removed).join('/')}`)
          .join(', '),
        met: keys.every((k) => {
          const d = k.endsWith('-large') ? large : base
          return (runs[k] ?? []).every(
            (r) =>
              r.removed === d.abandoned &&
              r.left === d.sessions - d.abandoned &&
              r.leftMetadata === d.sessions - d.abandoned,
          )
        }),
      },
      ...(['engine', 'plugin'] as const).map((c) => ({
        goal: `time ≤ ${fmt(1.1 * factor, 0)}× the ${SESSIONS.toLocaleString('en')} figure (${c})`,
        value: `${fmt(ratio(c, 'timeMs'), 2)}× (the floor: ${fmt(ratio('floor', 'timeMs'), 2)}×)`,
        met: ratio(c, 'timeMs') <= 1.1 * factor,
      })),
      ...(['engine', 'plugin'] as const).map((c) => ({
        goal: `peak RSS within 10% of the ${SESSIONS.toLocaleString('en')} run (${c})`,
        value: `${fmt((ratio(c, 'peakRssMB') - 1) * 100)}% (${fmt(m(`${c}-large`, 'peakRssMB'))} vs ${fmt(m(c, 'peakRssMB'))} MiB)`,
        met: Math.abs(ratio(c, 'peakRssMB') - 1) <= 0.1,
      })),
      ...(['engine', 'plugin'] as const).map((c) => ({
        goal: `heap after GC within 10% of the ${SESSIONS.toLocaleString('en')} run (${c})`,
        value: `${fmt((ratio(c, 'heapAfterGcMB') - 1) * 100)}% (${fmt(m(`${c}-large`, 'heapAfterGcMB'))} vs ${fmt(m(c, 'heapAfterGcMB'))} MiB)`,
        met: Math.abs(ratio(c, 'heapAfterGcMB') - 1) <= 0.1,
      })),
    ],
    notes: [
      'Every run, time in ms / peak RSS in MiB / loop max in ms: ' +
        keys
          .map(
            (k) =>
              `${k} ${(runs[k] ?? []).map((r) => `${fmt(r.timeMs, 0)}/${fmt(r.peakRssMB)}/${fmt(r.loopMaxMs)}`).join(', ')}`,
          )
          .join('; ') +
        '.',
    ],
  }
}

async function startupSection(): Promise<Section> {
  const dataset = await ensureDataset(SESSIONS)
  const stale = await copyOf(dataset, 'startup-stale')
  const empty = path.join(DATA_ROOT, 'runs', 'startup-empty')
  await fs.rm(empty, { recursive: true, force: true })
  await fs.mkdir(empty, { recursive: true })
  // A stale directory: every session past its period, so the startup sweep has all to do.
  const period = 1000
  const times: Record<string, number[]> = { empty: [], stale: [] }
  for (const order of rotations(['empty', 'stale'], ROUNDS * 2)) {
    for (const which of order) {
      const r = worker('startup-worker.js', [which === 'empty' ? empty : stale, period])
      times[which]?.push(r.readyMs as number)
    }
  }
  await fs.rm(stale, { recursive: true, force: true })
  const e = median(times.empty ?? [])
  const s = median(times.stale ?? [])
  return {
    title: 'Startup',
    intro: `Time from \`register\` to \`ready\`, ${ROUNDS * 2} runs each, alternating; medians. The stale directory holds ${SESSIONS.toLocaleString('en')} sessions, all expired.`,
    rows: [
      { directory: 'empty', 'register → ready (ms)': fmt(e) },
      {
        directory: `${SESSIONS.toLocaleString('en')} stale sessions`,
        'register → ready (ms)': fmt(s),
      },
    ],
    goals: [{ goal: 'stale ≤ 1.1× empty', value: `${fmt(s / e, 2)}×`, met: s <= 1.1 * e }],
  }
}

async function latencySection(): Promise<Section> {
  const dataset = await ensureDataset(SESSIONS)
  const results: Array<
    Record<string, { p50: number; p99: number; max: number; n: number } | number>
  > = []
  for (let round = 0; round < ROUNDS; round++) {
    const dir = await copyOf(dataset, 'latency')
    const srv = await server('latency-server.js', [dir, periodFor(dataset)])
    try {
      const r = worker('latency-client.js', [srv.origin, 3000]) as (typeof results)[number]
      results.push(r)
      const idle = r.idle as { p99: number }
      const sweep = r.sweep as { p99: number }
      console.log(
        `latency round ${round + 1}: idle p99 ${fmt(idle.p99, 2)} ms, during sweep p99 ${fmt(sweep.p99, 2)} ms`,
      )
    } finally {
      await srv.stop()
      await fs.rm(dir, { recursive: true, force: true })
    }
  }
  const pick = (phase: 'idle' | 'sweep', field: 'p50' | 'p99' | 'max' | 'n') =>
    median(results.map((r) => (r[phase] as Record<string, number>)[field] as number))
  const ratio = pick('sweep', 'p99') / pick('idle', 'p99')
  return {
    title: 'Requests during a sweep',
    intro:
      'A separate process keeps 4 requests in flight (OPTIONS, and POST + 1 KiB PATCH) against the plugin: 3 s idle, then ' +
      `while a sweep of ${SESSIONS.toLocaleString('en')} sessions runs. ${ROUNDS} rounds, each on a fresh copy; medians of the per-round figures.`,
    rows: (['idle', 'sweep'] as const).map((phase) => ({
      phase: phase === 'idle' ? 'idle' : 'during the sweep',
      requests: pick(phase, 'n'),
      'p50 (ms)': fmt(pick(phase, 'p50'), 2),
      'p99 (ms)': fmt(pick(phase, 'p99'), 2),
      'max (ms)': fmt(pick(phase, 'max'), 1),
    })),
    goals: [
      { goal: 'p99 during the sweep ≤ 1.5× idle', value: `${fmt(ratio, 2)}×`, met: ratio <= 1.5 },
    ],
    notes: [
      `Sweep duration under load: ${fmt(median(results.map((r) => r.sweepMs as number)), 0)} ms (median), against ` +
        'about 4 s without load: the sweep yields to requests.',
      'The server warms the directory into the kernel caches (a dry run) before the idle phase, so that both phases ' +
        'see warm caches. On this VM requests have been faster during the sweep than idle (p50) in every run so far, ' +
        'which flatters the ratio; the p99 and max columns are the ones to watch.',
    ],
  }
}

async function uploadSection(): Promise<Section> {
  const dir = path.join(DATA_ROOT, 'runs', 'upload')
  const variants = ['plugin', 'plugin-metrics', 'tus', 'raw'] as const
  // Per size, state and variant (`512 fresh plugin`): MiB/s, server CPU s/GiB, of which user,
  // full collections per GiB.
  const speeds: Record<string, number[]> = {}
  const cpu: Record<string, number[]> = {}
  const userCpu: Record<string, number[]> = {}
  const majors: Record<string, number[]> = {}
  let round = 0
  for (const order of rotations([...variants], UPLOAD_ROUNDS)) {
    round++
    // Both sizes every round, which one first alternating.
    const sizes = round % 2 === 1 ? UPLOAD_SIZES : [...UPLOAD_SIZES].reverse()
    for (const sizeMiB of sizes) {
      for (const variant of order) {
        // One process: a warm-up, an upload fresh, a full collection, an upload settled (the
        // draft section's two ways of collecting, which a process keeps).
        const run = async (origin: string) => {
          worker('upload-client.js', [origin, 128, CHUNK_MIB])
          await emptyStore(dir)
          for (const state of GC_STATES) {
            if (state === 'settled') await fetch(`${origin}/__heap`)
            const r = worker('upload-client.js', [origin, sizeMiB, CHUNK_MIB])
            const key = `${sizeMiB} ${state} ${variant}`
            append(speeds, key, r.mibPerSecond as number)
            append(cpu, key, r.cpuSecondsPerGiB as number)
            append(userCpu, key, r.userCpuSecondsPerGiB as number)
            append(majors, key, r.majorGcsPerGiB as number)
            console.log(
              `upload ${sizeMiB} MiB ${state} ${variant}: ${fmt(r.mibPerSecond as number)} MiB/s, server CPU ${fmt(r.cpuSecondsPerGiB as number, 2)} s/GiB (user ${fmt(r.userCpuSecondsPerGiB as number, 2)}), ${fmt(r.majorGcsPerGiB as number, 0)} full GCs per GiB`,
            )
            await emptyStore(dir)
          }
        }
        await onUploadServer(variant, dir, run, { flags: ['--expose-gc'] })
      }
    }
  }
  const m = (key: string) => median(speeds[key] ?? [])
  const c = (key: string) => median(cpu[key] ?? [])
  const u = (key: string) => median(userCpu[key] ?? [])
  const label = (sizeMiB: number) =>
    sizeMiB % 1024 === 0 ? `${sizeMiB / 1024} GiB` : `${sizeMiB} MiB`
  const names: Record<(typeof variants)[number], string> = {
    plugin: '(a) fastify-tus in Fastify',
    'plugin-metrics': '(d) (a) with `metrics: true`',
    tus: '(b) bare @tus/server + FileStore on node:http',
    raw: '(c) node:http piping to fs.createWriteStream',
  }
  const each = <T>(make: (sizeMiB: number, state: GcState) => T[]): T[] =>
    UPLOAD_SIZES.flatMap((sizeMiB) => GC_STATES.flatMap((state) => make(sizeMiB, state)))
  const rows = each((sizeMiB, state) =>
    (['plugin', 'plugin-metrics', 'tus', 'raw'] as const).map((v) => {
      const key = `${sizeMiB} ${state} ${v}`
      const raw = `${sizeMiB} ${state} raw`
      return {
        upload: label(sizeMiB),
        state,
        server: names[v],
        'MiB/s': fmt(m(key)),
        'vs (b)': fmt(m(key) / m(`${sizeMiB} ${state} tus`), 2),
        'vs (c)': fmt(m(key) / m(raw), 2),
        'server CPU s/GiB': fmt(c(key), 2),
        'CPU vs (c)': fmt(c(key) / c(raw), 2),
        'of which user': fmt(u(key), 2),
        'user CPU vs (c)': fmt(u(key) / u(raw), 2),
        'full GCs per GiB': fmt(median(majors[key] ?? []), 0),
      }
    }),
  )
  const goals = each((sizeMiB, state) => {
    const at = (v: string) => `${sizeMiB} ${state} ${v}`
    const cpuRatio = c(at('plugin')) / c(at('raw'))
    const speedRatio = m(at('plugin')) / m(at('raw'))
    const where = `${label(sizeMiB)}, ${state}`
    return [
      {
        goal: `${where}: server CPU per GiB of (a) ≤ 1.1× (c)`,
        value: `${fmt(cpuRatio, 2)}×`,
        met: cpuRatio <= 1.1,
      },
      {
        goal: `${where}: throughput of (a) ≥ 0.95× (c)`,
        value: `${fmt(speedRatio, 2)}×`,
        met: speedRatio >= 0.95,
      },
      {
        goal: `${where}: (a) ≥ 1.0× (b)`,
        value: `${fmt(m(at('plugin')) / m(at('tus')), 2)}×`,
        met: m(at('plugin')) >= m(at('tus')),
      },
      {
        goal: `${where}: metrics cost nothing measurable: user CPU per GiB of (d) ≤ 1.05× (a)`,
        value: `${fmt(u(at('plugin-metrics')) / u(at('plugin')), 3)}×`,
        met: u(at('plugin-metrics')) <= 1.05 * u(at('plugin')),
      },
    ]
  })
  const perRound = (table: Record<string, number[]>, digits: number) =>
    Object.entries(table)
      .map(([key, values]) => `${key} ${values.map((x) => fmt(x, digits)).join(', ')}`)
      .join('; ')
  return {
    title: 'Upload throughput',
    intro: `One upload of ${UPLOAD_SIZES.map(label).join(' and of ')} in ${CHUNK_MIB} MiB PATCHes from a client process, same disk for all; ${UPLOAD_ROUNDS} rounds, each with every size (which size first alternates) and the contenders rotated; medians. Per size, round and contender one server process: an unmeasured upload of 128 MiB, the upload while the process is *fresh*, a full collection (\`gc()\`), and the upload again *settled*, the way a long-running server collects ("Long-running servers: the collector settles"); the directory emptied and \`sync\`ed after each upload. Server CPU is the server process's \`process.cpuUsage()\` from the first PATCH to the last answer, per GiB received. Both parts follow the disk on this VM (they rise and fall with throughput from round to round), so the per-request cost of counting is measured apart, in the metrics section.`,
    rows,
    goals,
    notes: [
      'Per round, in MiB/s (disk throughput on this VM varies by a third from one upload to the next, which is why ' +
        `this section takes ${UPLOAD_ROUNDS} rounds): ${perRound(speeds, 0)}. ` +
        `Server CPU s/GiB per round, user + system: ${perRound(cpu, 2)}; user: ${perRound(userCpu, 2)}. ` +
        `Full collections per GiB per round: ${perRound(majors, 0)}.`,
    ],
  }
}

/**
 * Many uploads at once: 64 uploads of 8 MiB side by side, each a POST and 1 MiB PATCHes, against
 * the plugin, bare tus and the raw pipe receiving the same requests.
 */
async function manySection(): Promise<Section> {
  const rounds = Number(process.env.BENCH_MANY_ROUNDS ?? 7)
  const uploads = Number(process.env.BENCH_MANY_UPLOADS ?? 64)
  const sizeMiB = 8
  const chunkMiB = 1
  const dir = path.join(DATA_ROOT, 'runs', 'many')
  const variants = ['plugin', 'tus', 'raw'] as const
  type Run = {
    mibPerSecond: number
    cpuSecondsPerGiB: number
    userCpuSecondsPerGiB: number
    p50Ms: number
    p99Ms: number
    maxMs: number
    requests: number
  }
  const runs: Record<string, Run[]> = {}
  for (const order of rotations([...variants], rounds)) {
    for (const variant of order) {
      await onUploadServer(variant, dir, async (origin) => {
        // The same uploads twice in one server process: first cold (its JIT compiling as it
        // serves), then warm, the measure. The cold round's files go before the warm one.
        const args = [origin, uploads, sizeMiB, chunkMiB]
        const cold = worker('many-client.js', args) as unknown as Run
        append(runs, `${variant} cold`, cold)
        for (const name of await fs.readdir(dir)) {
          await fs.rm(path.join(dir, name), { recursive: true, force: true })
        }
        const r = worker('many-client.js', args) as unknown as Run
        append(runs, variant, r)
        console.log(
          `many ${variant}: ${fmt(r.mibPerSecond)} MiB/s, server CPU ${fmt(r.cpuSecondsPerGiB, 2)} s/GiB (user ${fmt(r.userCpuSecondsPerGiB, 2)}), p99 ${fmt(r.p99Ms, 0)} ms, max ${fmt(r.maxMs, 0)} ms; cold ${fmt(cold.mibPerSecond)} MiB/s, ${fmt(cold.cpuSecondsPerGiB, 2)} s/GiB, max ${fmt(cold.maxMs, 0)} ms`,
        )
      })
    }
  }
  const m = (v: string, field: keyof Run) => median((runs[v] ?? []).map((r) => r[field]))
  // The 1 s goal holds for every request, the cold rounds' too.
  const worst = (v: string) =>
    Math.max(...[...(runs[v] ?? []), ...(runs[`${v} cold`] ?? [])].map((r) => r.maxMs))
  const names: Record<(typeof variants)[number], string> = {
    plugin: '(a) fastify-tus in Fastify',
    tus: '(b) bare @tus/server + FileStore on node:http',
    raw: '(c) node:http piping to fs.createWriteStream',
  }
  const ratio = m('plugin', 'mibPerSecond') / m('raw', 'mibPerSecond')
  return {
    title: 'Many uploads at once',
    intro:
      `${uploads} uploads of ${sizeMiB} MiB side by side from a client process (a keep-alive agent with a socket for each): ` +
      `each a POST, then its ${sizeMiB / chunkMiB} PATCHes of ${chunkMiB} MiB one after the other. The raw pipe (c) gets the same ` +
      'requests: its POST creates an empty file, each PATCH opens the file and pipes the body into it at `Upload-Offset` ' +
      '(no lock, no record, no offset check). Aggregate throughput is all the bytes over the time from the first POST to ' +
      `the last answer; server CPU is the server process's \`process.cpuUsage()\` over that span, per GiB; latency is of every request (POSTs and PATCHes), from sending it to the end of its answer. ` +
      'Each server process serves the same uploads twice: first cold, its JIT compiling as it goes (the "cold" columns), then, once those files are removed, warm: the measure, as a server that has been up for a while sees it. ' +
      `${rounds} rounds, rotated; medians, but the worst max of all rounds, cold ones included.`,
    rows: variants.map((v) => ({
      server: names[v],
      'MiB/s': fmt(m(v, 'mibPerSecond')),
      'vs (c)': fmt(m(v, 'mibPerSecond') / m('raw', 'mibPerSecond'), 2),
      'server CPU s/GiB': fmt(m(v, 'cpuSecondsPerGiB'), 2),
      'CPU vs (c)': fmt(m(v, 'cpuSecondsPerGiB') / m('raw', 'cpuSecondsPerGiB'), 2),
      'p50 (ms)': fmt(m(v, 'p50Ms'), 0),
      'p99 (ms)': fmt(m(v, 'p99Ms'), 0),
      'max (ms)': fmt(m(v, 'maxMs'), 0),
      'worst max (ms)': fmt(worst(v), 0),
      'cold MiB/s': fmt(m(`${v} cold`, 'mibPerSecond')),
      'cold vs (c) cold': fmt(m(`${v} cold`, 'mibPerSecond') / m('raw cold', 'mibPerSecond'), 2),
    })),
    goals: [
      {
        goal: 'aggregate throughput of (a) ≥ 0.9× (c)',
        value: `${fmt(ratio, 2)}×`,
        met: ratio >= 0.9,
      },
      {
        goal: 'no request of (a) over 1 s (worst of all rounds, cold included)',
        value: `${fmt(worst('plugin'), 0)} ms`,
        met: worst('plugin') <= 1000,
      },
    ],
    notes: [
      'Per round: ' +
        variants
          .map(
            (v) =>
              `${v} ${(runs[v] ?? []).map((r, i) => `${fmt(r.mibPerSecond, 0)} MiB/s ${fmt(r.cpuSecondsPerGiB, 2)} s/GiB max ${fmt(r.maxMs, 0)} ms (cold ${fmt(runs[`${v} cold`]?.[i]?.mibPerSecond ?? Number.NaN, 0)} MiB/s)`).join(', ')}`,
          )
          .join('; ') +
        '.',
    ],
  }
}

/**
 * Parallel uploads (the concatenation extension): one upload over 1 or 4 connections, each held
 * to the same rate on the client side, and the assembly's own time against `cp` of its bytes.
 */
async function parallelSection(): Promise<Section> {
  const rounds = Number(process.env.BENCH_PARALLEL_ROUNDS ?? 3)
  const sizeMiB = Number(process.env.BENCH_PARALLEL_MIB ?? 256)
  const rateMiB = 16
  const dir = path.join(DATA_ROOT, 'runs', 'parallel')
  const seconds: Record<string, number[]> = {}
  const assembly: number[] = []
  const loopMax: number[] = []
  const cp: number[] = []
  let round = 0
  for (const order of rotations(['1', '4'], rounds)) {
    round++
    for (const parallel of order) {
      await onUploadServer('plugin', dir, (origin) => {
        const copyOrder = round % 2 === 1 ? 'cp-first' : 'cp-after'
        const r = worker('parallel-client.js', [origin, sizeMiB, parallel, rateMiB, dir, copyOrder])
        append(seconds, parallel, r.seconds as number)
        let line = `parallel ${parallel}: ${fmt(r.seconds as number, 2)} s`
        if (parallel !== '1') {
          assembly.push(r.assemblyMs as number)
          loopMax.push(r.loopMaxMs as number)
          cp.push(r.cpMs as number)
          line += `, assembly ${fmt(r.assemblyMs as number, 0)} ms (event loop max ${fmt(r.loopMaxMs as number, 1)} ms), cp ${fmt(r.cpMs as number, 0)} ms (${copyOrder})`
        }
        console.log(line)
      })
    }
  }
  // The copy alone, without HTTP, locks or checks: the store's concatenateFiles against cat.
  await fs.mkdir(dir, { recursive: true })
  const alone = worker('concat-worker.js', [dir, sizeMiB / 4, 4, 6]) as Record<string, number[]>
  await fs.rm(dir, { recursive: true, force: true })
  const perRound = (key: string) => (alone[key] ?? []).map((x) => fmt(x, 0)).join(', ')
  console.log(
    `copy alone: concatenateFiles ${perRound('assembly')} ms; in Node ${perRound('node')} ms; cat ${perRound('cat')} ms`,
  )
  const copyAlone = median(alone.assembly ?? [])
  const nodeAlone = median(alone.node ?? [])
  const catAlone = median(alone.cat ?? [])
  const single = median(seconds['1'] ?? [])
  const four = median(seconds['4'] ?? [])
  const asm = median(assembly)
  const copy = median(cp)
  return {
    title: 'Parallel uploads',
    intro: `One ${sizeMiB} MiB upload to fastify-tus from a client process, over one connection or over four (\`parallelUploads: 4\` as tus-js-client does it: four partial uploads side by side, then the final), every connection held to ${rateMiB} MiB/s on the client side, as a long fat network holds each TCP stream; ${rounds} rounds, alternated; medians. The assembly is the time of the final's POST, to its 201; it is sent once the partials' bytes are flushed (\`sync\`, not counted). \`cp\` copies the same bytes in the same directory from the same state (cached and flushed): the partials joined with \`cat\` before the final's POST in odd rounds, the final copied after it in even ones (the first large write after a sync is sometimes the slower on this VM).`,
    rows: [
      { upload: 'one connection', seconds: fmt(single, 2), 'vs one': '1.00' },
      { upload: '`parallelUploads: 4`', seconds: fmt(four, 2), 'vs one': fmt(single / four, 2) },
      { upload: 'of which the assembly', seconds: fmt(asm / 1000, 3), 'vs one': '' },
      { upload: '`cp` of the same bytes', seconds: fmt(copy / 1000, 3), 'vs one': '' },
      {
        upload: "the assembly's copy alone (`concatenateFiles`, by `cat`, 6 rounds)",
        seconds: fmt(copyAlone / 1000, 3),
        'vs one': '',
      },
      {
        upload: 'the same copy in Node, where no `cat` is found (6 rounds)',
        seconds: fmt(nodeAlone / 1000, 3),
        'vs one': '',
      },
      {
        upload: '`cat` of the same files (6 rounds)',
        seconds: fmt(catAlone / 1000, 3),
        'vs one': '',
      },
    ],
    goals: [
      {
        goal: 'parallel ≥ 3× one connection',
        value: `${fmt(single / four, 2)}×`,
        met: single / four >= 3,
      },
      {
        goal: 'assembly ≤ 1.2× cp',
        value: `${fmt(asm / copy, 2)}×`,
        met: asm <= 1.2 * copy,
      },
      {
        goal: "the copy alone ≤ 1.2× cat (not a goal of the issue: where the assembly's time goes)",
        value: `${fmt(copyAlone / catAlone, 2)}×`,
        met: copyAlone <= 1.2 * catAlone,
      },
      {
        goal: 'the assembly does not block the event loop: longest delay ≤ 20 ms',
        value: `${fmt(Math.max(...loopMax), 1)} ms`,
        met: Math.max(...loopMax) <= 20,
      },
    ],
    notes: [
      `The copy alone, per round (ms): concatenateFiles ${perRound('assembly')}; in Node ${perRound('node')}; cat ${perRound('cat')}.`,
      `Per round: one connection ${(seconds['1'] ?? []).map((x) => fmt(x, 2)).join(', ')} s; four ${(seconds['4'] ?? []).map((x) => fmt(x, 2)).join(', ')} s; assembly ${assembly.map((x) => fmt(x, 0)).join(', ')} ms; event loop max during it ${loopMax.map((x) => fmt(x, 1)).join(', ')} ms; cp ${cp.map((x) => fmt(x, 0)).join(', ')} ms.`,
    ],
  }
}

/** Upload sizes of the draft section in MiB: `BENCH_DRAFT_MIB=512,1024`. */
const DRAFT_SIZES = (process.env.BENCH_DRAFT_MIB ?? '512,1024').split(',').map(Number)
/** The draft section's rounds (a multiple of 4: each protocol first as often): its goal is a 5% margin. */
const DRAFT_ROUNDS = Number(process.env.BENCH_DRAFT_ROUNDS ?? 20)
/** The draft section's PATCH size in MiB: 64 as in the upload section; smaller ones weigh the per-request work. */
const DRAFT_CHUNK_MIB = Number(process.env.BENCH_DRAFT_CHUNK_MIB ?? CHUNK_MIB)
/** The draft section's warm-up upload per protocol in MiB, in each server, not measured. */
const DRAFT_WARMUP_MIB = Number(process.env.BENCH_DRAFT_WARMUP_MIB ?? 128)
/** Full collections per GiB from which an upload counts as run the collector's expensive way. */
const HIGH_GC = 10

const DRAFT_PROTOCOLS = ['tus', '5', '6', '8'] as const
type DraftProtocol = (typeof DRAFT_PROTOCOLS)[number]
const DRAFT_NAMES: Record<DraftProtocol, string> = {
  tus: 'tus 1.0',
  '5': 'draft, interop 5 (`ietf-draft-03`)',
  '6': 'draft, interop 6 (`ietf-draft-05`)',
  '8': 'draft, interop 8 (-11; no client yet)',
}
/**
 * The two ways a server process collects while it receives uploads (BENCHMARKS.md, "Draft
 * uploads against tus 1.0"): `fresh`, as a new process does, and `settled`, the way a process
 * keeps once it went there (after a few GiB received, or any full collection between uploads).
 */
const GC_STATES = ['fresh', 'settled'] as const
type GcState = (typeof GC_STATES)[number]

/** Removes the uploads in a running server's `dir` (its dot-folders stay), then `sync`s. */
async function emptyStore(dir: string): Promise<void> {
  for (const name of await fs.readdir(dir)) {
    if (!name.startsWith('.')) await fs.rm(path.join(dir, name), { recursive: true, force: true })
  }
  execFileSync('sync')
}

/** The draft section's measures, per `${sizeMiB} ${state} ${protocol}`. */
interface DraftRuns {
  speeds: Record<string, number[]>
  cpu: Record<string, number[]>
  userCpu: Record<string, number[]>
  wholeCpu: Record<string, number[]>
  majors: Record<string, number[]>
}

/**
 * Every round, for each size, one server process: a warm-up upload per protocol, then one upload
 * per protocol `fresh`, then a full collection (`GET /__heap` under `--expose-gc`), which sends
 * the process the `settled` way, and one upload per protocol again. The protocols compared in a
 * state meet the same process, code as warm, and the same way of collecting.
 */
async function draftRuns(): Promise<DraftRuns> {
  const dir = path.join(DATA_ROOT, 'runs', 'draft')
  const runs: DraftRuns = { speeds: {}, cpu: {}, userCpu: {}, wholeCpu: {}, majors: {} }
  let round = 0
  for (const order of rotations([...DRAFT_PROTOCOLS], DRAFT_ROUNDS)) {
    round++
    const sizes = round % 2 === 1 ? DRAFT_SIZES : [...DRAFT_SIZES].reverse()
    for (const sizeMiB of sizes) {
      // Synced: a run's writeback must not land in the next.
      await onUploadServer(
        'plugin',
        dir,
        async (origin) => {
          for (const protocol of order) {
            worker('upload-client.js', [origin, DRAFT_WARMUP_MIB, DRAFT_CHUNK_MIB, protocol])
            await emptyStore(dir)
          }
          for (const state of GC_STATES) {
            if (state === 'settled') await fetch(`${origin}/__heap`)
            for (const protocol of order) {
              const r = worker('upload-client.js', [origin, sizeMiB, DRAFT_CHUNK_MIB, protocol])
              recordDraftRun(runs, `${sizeMiB} ${state} ${protocol}`, r)
              console.log(
                `draft round ${round} ${sizeMiB} MiB ${state} ${protocol}: ${fmt(r.mibPerSecond as number)} MiB/s, server CPU ${fmt(1000 * (r.cpuSecondsPerGiB as number), 0)} ms/GiB (user ${fmt(1000 * (r.userCpuSecondsPerGiB as number), 0)}), ${fmt(r.majorGcsPerGiB as number, 0)} full GCs per GiB`,
              )
              await emptyStore(dir)
            }
          }
        },
        { sync: true, flags: ['--expose-gc'] },
      )
    }
  }
  return runs
}

function recordDraftRun(runs: DraftRuns, key: string, r: Record<string, unknown>): void {
  append(runs.speeds, key, r.mibPerSecond as number)
  append(runs.cpu, key, r.cpuSecondsPerGiB as number)
  append(runs.userCpu, key, r.userCpuSecondsPerGiB as number)
  append(runs.wholeCpu, key, r.wholeCpuSecondsPerGiB as number)
  append(runs.majors, key, r.majorGcsPerGiB as number)
}

/**
 * The same upload to the plugin by tus 1.0 and by the IETF draft at interop versions 5, 6 and 8
 * (the draft's requests are rewritten into tus' and answered by the same handlers): the server's
 * CPU per GiB of each, against tus 1.0's in the same processes, in either way of collecting.
 */
async function draftSection(): Promise<Section> {
  const { speeds, cpu, userCpu, wholeCpu, majors } = await draftRuns()
  const med = (table: Record<string, number[]>, key: string) => median(table[key] ?? [])
  const label = (sizeMiB: number) =>
    sizeMiB % 1024 === 0 ? `${sizeMiB / 1024} GiB` : `${sizeMiB} MiB`
  const ms = (seconds: number) => fmt(1000 * seconds, 0)
  const each = <T>(make: (sizeMiB: number, state: GcState) => T[]): T[] =>
    DRAFT_SIZES.flatMap((sizeMiB) => GC_STATES.flatMap((state) => make(sizeMiB, state)))
  const rows = each((sizeMiB, state) =>
    DRAFT_PROTOCOLS.map((p) => {
      const key = `${sizeMiB} ${state} ${p}`
      const base = `${sizeMiB} ${state} tus`
      return {
        upload: label(sizeMiB),
        server: state,
        client: DRAFT_NAMES[p],
        'server CPU ms/GiB': ms(med(cpu, key)),
        'vs tus 1.0': fmt(med(cpu, key) / med(cpu, base), 3),
        'of which user': ms(med(userCpu, key)),
        'user vs tus 1.0': fmt(med(userCpu, key) / med(userCpu, base), 3),
        'with the creation': ms(med(wholeCpu, key)),
        'full GCs per GiB': fmt(med(majors, key), 0),
        'MiB/s': fmt(med(speeds, key)),
      }
    }),
  )
  const drafts = DRAFT_PROTOCOLS.filter((p) => p !== 'tus')
  const goals = each((sizeMiB, state) =>
    drafts.map((p) => {
      const mine = `${sizeMiB} ${state} ${p}`
      const base = `${sizeMiB} ${state} tus`
      const ratio = med(cpu, mine) / med(cpu, base)
      return {
        goal: `${label(sizeMiB)}, ${state}: draft (interop ${p}) server CPU per GiB ≤ 1.05× tus 1.0's`,
        value: `${fmt(ratio, 3)}× (${ms(med(cpu, mine))} vs ${ms(med(cpu, base))} ms)`,
        met: ratio <= 1.05,
      }
    }),
  )
  // Within a process the contenders met the same disk and the same collector: the ratio of each
  // draft upload to the tus upload of its process and state.
  const paired = (key: string, base: string) =>
    median((cpu[key] ?? []).map((x, i) => x / ((cpu[base] ?? [])[i] as number)))
  const perRound = (table: Record<string, number[]>, scale: number, digits: number) =>
    Object.entries(table)
      .map(([key, values]) => `${key} ${values.map((x) => fmt(x * scale, digits)).join(', ')}`)
      .join('; ')
  // Uploads whose collector did not go the way of their state (few full GCs when settled, many
  // when fresh): a fresh process can settle by itself after a few GiB.
  const strays = each((sizeMiB, state) =>
    DRAFT_PROTOCOLS.map((p) => {
      const counts = majors[`${sizeMiB} ${state} ${p}`] ?? []
      return counts.filter((x) => x >= HIGH_GC !== (state === 'settled')).length
    }),
  ).reduce((sum, n) => sum + n, 0)
  const uploads = Object.values(majors).reduce((sum, list) => sum + list.length, 0)
  return {
    title: 'Draft uploads against tus 1.0',
    intro: `One upload of ${DRAFT_SIZES.map(label).join(' and of ')} to fastify-tus (the README setup, as in the upload section) in ${DRAFT_CHUNK_MIB} MiB PATCHes from a client process, by tus 1.0 and by the IETF resumable uploads draft at interop versions 5, 6 and 8 (the draft's requests are rewritten into the tus requests they amount to and answered by the same handlers: src/http/draft/). The client is raw node:http sending, per protocol, the headers tus-js-client 4.3 sends (bench/http.ts: the creation a POST with \`Upload-Length\`, for the draft \`Upload-Draft-Interop-Version\` and \`Upload-Complete: ?0\`; each PATCH \`Upload-Offset\`, for the draft \`Upload-Complete\` \`?0\` then \`?1\` on the last, and from interop 6 \`Content-Type: application/partial-upload\`), and for interop 8, which no client sends yet, the same requests as for 6 (the shapes -11 describes); the same buffer from the same code for all four, so that only the protocol differs. ${DRAFT_ROUNDS} rounds; in each, per size (which size first alternates), one server process on an empty directory: an unmeasured upload of ${DRAFT_WARMUP_MIB} MiB per protocol, then one upload per protocol with the process *fresh*, then a full collection (\`gc()\`), after which the process collects the *settled* way (see the notes), and one upload per protocol again; the protocols' order rotates round by round, the directory is emptied and \`sync\`ed after each upload; medians. Server CPU is the server process's \`process.cpuUsage()\` (user + system) from the first PATCH to the last answer, per GiB received; "with the creation" counts from before the POST.`,
    rows,
    goals,
    notes: [
      `The ratio within each process (a draft upload's server CPU over the tus upload's of the same process and state), median: ${each(
        (sizeMiB, state) =>
          drafts.map(
            (p) =>
              `${label(sizeMiB)} ${state} interop ${p} ${fmt(paired(`${sizeMiB} ${state} ${p}`, `${sizeMiB} ${state} tus`), 3)}×`,
          ),
      ).join(', ')}.`,
      `Uploads whose collector went the other way than their state (${HIGH_GC} or more full collections per GiB when fresh, fewer when settled): ${strays} of ${uploads}.`,
      `Full collections per GiB per upload: ${perRound(majors, 1, 0)}.`,
      `Server CPU ms/GiB per upload, user + system: ${perRound(cpu, 1000, 0)}; user: ${perRound(userCpu, 1000, 0)}. MiB/s per upload: ${perRound(speeds, 1, 0)}.`,
    ],
  }
}

/** The settle section's rounds, its upload size in MiB, and the application heap of two servers. */
const SETTLE_ROUNDS = Number(process.env.BENCH_SETTLE_ROUNDS ?? 6)
const SETTLE_MIB = Number(process.env.BENCH_SETTLE_MIB ?? 512)
const SETTLE_BALLAST_MB = Number(process.env.BENCH_SETTLE_BALLAST_MB ?? 40)
/** The Node flag that keeps a server fresh: room in the old generation from the start. */
const ROOMY = '--initial-old-space-size=128'
/** At most this many uploads to a fresh server while waiting for it to settle by itself. */
const SETTLE_WAIT_UPLOADS = 24

interface SettleServer {
  name: string
  variant: 'plugin' | 'tus'
  ballastMB: number
  /** Node flags besides `--expose-gc`. */
  flags?: string[]
}

type SettleRuns = Record<
  string,
  { cpu: number[]; user: number[]; majors: number[]; speed: number[] }
>

/**
 * Per round and server, one process: a warm-up upload, two uploads fresh, a full collection,
 * two uploads settled (the draft section's two ways, for the plugin and bare @tus/server).
 */
async function settleRuns(servers: SettleServer[], dir: string): Promise<SettleRuns> {
  const runs: SettleRuns = {}
  for (const order of rotations(servers, SETTLE_ROUNDS)) {
    for (const srv of order) {
      const run = async (origin: string) => {
        worker('upload-client.js', [origin, 128, CHUNK_MIB, 'tus'])
        await emptyStore(dir)
        for (const state of GC_STATES) {
          if (state === 'settled') await fetch(`${origin}/__heap`)
          for (let i = 0; i < 2; i++) {
            const r = worker('upload-client.js', [origin, SETTLE_MIB, CHUNK_MIB, 'tus'])
            const key = `${srv.name} ${state}`
            runs[key] ??= { cpu: [], user: [], majors: [], speed: [] }
            runs[key].cpu.push(r.cpuSecondsPerGiB as number)
            runs[key].user.push(r.userCpuSecondsPerGiB as number)
            runs[key].majors.push(r.majorGcsPerGiB as number)
            runs[key].speed.push(r.mibPerSecond as number)
            console.log(
              `settle ${key}: server CPU ${fmt(1000 * (r.cpuSecondsPerGiB as number), 0)} ms/GiB, ${fmt(r.majorGcsPerGiB as number, 0)} full GCs per GiB`,
            )
            await emptyStore(dir)
          }
        }
      }
      await onUploadServer(srv.variant, dir, run, {
        sync: true,
        flags: ['--expose-gc', ...(srv.flags ?? [])],
        env: { BENCH_BALLAST_MB: String(srv.ballastMB) },
      })
    }
  }
  return runs
}

/**
 * Uploads to one fresh server, without any forced collection, until two in a row ran the
 * settled way: the GiB it had received before, and each upload's CPU and full collections.
 */
async function settlingPoint(
  variant: 'plugin' | 'tus',
  dir: string,
  flags: string[] = [],
): Promise<string> {
  return onUploadServer(
    variant,
    dir,
    async (origin) => {
      const seen: string[] = []
      let streak = 0
      for (let i = 0; i < SETTLE_WAIT_UPLOADS && streak < 2; i++) {
        const r = worker('upload-client.js', [origin, SETTLE_MIB, CHUNK_MIB, 'tus'])
        streak = (r.majorGcsPerGiB as number) >= HIGH_GC ? streak + 1 : 0
        seen.push(
          `${fmt(1000 * (r.cpuSecondsPerGiB as number), 0)}/${fmt(r.majorGcsPerGiB as number, 0)}`,
        )
        await emptyStore(dir)
      }
      const gib = ((seen.length - streak) * SETTLE_MIB) / 1024
      const when =
        streak === 2 ? `settled after ${fmt(gib, 1)} GiB` : `still fresh after ${fmt(gib, 1)} GiB`
      const name = `${variant === 'plugin' ? 'fastify-tus' : 'bare @tus/server'}${flags.map((f) => ` with \`${f}\``).join('')}`
      return `${name} ${when} (ms/GiB / full GCs per GiB, upload by upload: ${seen.join(', ')})`
    },
    { sync: true, flags },
  )
}

/**
 * How a long-running server collects while it receives uploads: fresh, as every other section
 * measures, and settled, the way a process keeps once it went there; for the plugin and bare
 * @tus/server, with and without an application's heap.
 */
async function settleSection(): Promise<Section> {
  const dir = path.join(DATA_ROOT, 'runs', 'settle')
  const servers: SettleServer[] = [
    { name: 'fastify-tus', variant: 'plugin', ballastMB: 0 },
    { name: 'bare @tus/server', variant: 'tus', ballastMB: 0 },
    {
      name: `fastify-tus, ${SETTLE_BALLAST_MB} MB app heap`,
      variant: 'plugin',
      ballastMB: SETTLE_BALLAST_MB,
    },
    {
      name: `bare @tus/server, ${SETTLE_BALLAST_MB} MB app heap`,
      variant: 'tus',
      ballastMB: SETTLE_BALLAST_MB,
    },
    { name: `fastify-tus, ${ROOMY}`, variant: 'plugin', ballastMB: 0, flags: [ROOMY] },
    {
      name: `fastify-tus, ${SETTLE_BALLAST_MB} MB app heap, ${ROOMY}`,
      variant: 'plugin',
      ballastMB: SETTLE_BALLAST_MB,
      flags: [ROOMY],
    },
  ]
  const runs = await settleRuns(servers, dir)
  const points = [
    await settlingPoint('plugin', dir),
    await settlingPoint('tus', dir),
    await settlingPoint('plugin', dir, [ROOMY]),
  ]
  const m = (key: string, what: 'cpu' | 'user' | 'majors' | 'speed') =>
    median(runs[key]?.[what] ?? [])
  const rows = servers.map(({ name }) => ({
    server: name,
    'fresh: CPU ms/GiB': fmt(1000 * m(`${name} fresh`, 'cpu'), 0),
    'full GCs per GiB': fmt(m(`${name} fresh`, 'majors'), 0),
    'settled: CPU ms/GiB': fmt(1000 * m(`${name} settled`, 'cpu'), 0),
    'full GCs per GiB ': fmt(m(`${name} settled`, 'majors'), 0),
    'settled vs fresh': fmt(m(`${name} settled`, 'cpu') / m(`${name} fresh`, 'cpu'), 2),
    'MiB/s fresh': fmt(m(`${name} fresh`, 'speed'), 0),
    'MiB/s settled': fmt(m(`${name} settled`, 'speed'), 0),
  }))
  const [plugin, bare] = servers as [SettleServer, SettleServer]
  const vsBare = GC_STATES.map(
    (state) =>
      `${state} ${fmt(m(`${plugin.name} ${state}`, 'cpu') / m(`${bare.name} ${state}`, 'cpu'), 2)}×`,
  ).join(', ')
  return {
    title: 'Long-running servers: the collector settles',
    intro: `Uploads of ${SETTLE_MIB} MiB in ${CHUNK_MIB} MiB PATCHes by tus 1.0 (bench/upload-client.ts) to fastify-tus (the README setup) and to bare @tus/server with its FileStore, each also with ${SETTLE_BALLAST_MB} MB of an application's own live objects in the server's heap (\`BENCH_BALLAST_MB\`). ${SETTLE_ROUNDS} rounds; in each, per server, one process: an unmeasured upload of 128 MiB, two uploads while the process is fresh, a full collection (\`gc()\`), two uploads settled; the servers' order rotates; medians. Then one fresh process per server receiving uploads until two in a row ran the settled way (${HIGH_GC} or more full collections per GiB), at most ${SETTLE_WAIT_UPLOADS}.`,
    rows,
    goals: [],
    notes: [
      `fastify-tus against bare @tus/server, server CPU per GiB: ${vsBare}.`,
      `Settling by itself: ${points.join('; ')}.`,
    ],
  }
}

/**
 * Small requests (creations and HEADs) per second and their p99 with autocannon, the plugin
 * against bare @tus/server with its FileStore on node:http.
 */
async function smallSection(): Promise<Section> {
  const rounds = Number(process.env.BENCH_SMALL_ROUNDS ?? 7)
  const seconds = 5
  const variants = ['plugin', 'tus'] as const
  const methods = ['POST', 'HEAD'] as const
  const rps: Record<string, number[]> = {}
  const p99: Record<string, number[]> = {}
  const cpu: Record<string, number[]> = {}
  const promoted: Record<string, number[]> = {}
  const scavengeMs: Record<string, number[]> = {}
  const dir = path.join(DATA_ROOT, 'runs', 'small')
  for (const order of rotations([...variants], rounds)) {
    for (const variant of order) {
      for (const method of methods) {
        // Synced: the thousands of creations of the run before must not land in this one.
        await onUploadServer(
          variant,
          dir,
          (origin) => {
            const r = worker('small-client.js', [origin, method, seconds])
            const key = `${variant} ${method}`
            append(rps, key, r.requestsPerSecond as number)
            append(p99, key, r.p99Ms as number)
            append(cpu, key, r.cpuMicrosPerRequest as number)
            append(promoted, key, r.promotedBytesPerRequest as number)
            append(scavengeMs, key, r.scavengeMsPer1000 as number)
            console.log(
              `small ${key}: ${fmt(r.requestsPerSecond as number, 0)} req/s, p99 ${fmt(r.p99Ms as number)} ms, server CPU ${fmt(r.cpuMicrosPerRequest as number)} µs per request, ` +
                `promoted ${fmt(r.promotedBytesPerRequest as number, 0)} B per request, scavenges ${fmt(r.scavengeMsPer1000 as number)} ms per 1000 (${fmt(r.scavengeMeanMs as number, 2)} ms each)`,
            )
          },
          { sync: true },
        )
      }
    }
  }
  const m = (table: Record<string, number[]>, key: string) => median(table[key] ?? [])
  const perRound = (what: string, table: Record<string, number[]>) =>
    `Per round, ${what}: ${Object.entries(table)
      .map(([key, values]) => `${key} ${values.map((x) => fmt(x, 0)).join(', ')}`)
      .join('; ')}.`
  const rows = methods.flatMap((method) =>
    variants.map((variant) => {
      const key = `${variant} ${method}`
      return {
        request: method,
        server: variant === 'plugin' ? 'fastify-tus in Fastify' : 'bare @tus/server + FileStore',
        'req/s': fmt(m(rps, key), 0),
        'p99 ms': fmt(m(p99, key)),
        'server CPU µs/request': fmt(m(cpu, key)),
        'promoted B/request': fmt(m(promoted, key), 0),
        'scavenge ms per 1000': fmt(m(scavengeMs, key)),
      }
    }),
  )
  const goals = methods.flatMap((method) => {
    const ratio = m(rps, `plugin ${method}`) / m(rps, `tus ${method}`)
    const p99Ratio = m(p99, `plugin ${method}`) / m(p99, `tus ${method}`)
    return [
      { goal: `${method} req/s ≥ 1.0× bare`, value: `${fmt(ratio, 2)}×`, met: ratio >= 1 },
      { goal: `${method} p99 ≤ 1.0× bare`, value: `${fmt(p99Ratio, 2)}×`, met: p99Ratio <= 1 },
    ]
  })
  return {
    title: 'Small requests',
    intro: `Creations (POST of a 1-byte upload) and HEADs of 256 uploads in turn, ${seconds} s each with autocannon (16 keep-alive connections, after 1 s of warm-up) from a client process, against each server in a process of its own, on an empty directory after \`sync\` (the run before it flushed and its files' removal committed); ${rounds} rounds, alternated; medians. Server CPU is the server process's \`process.cpuUsage()\` per request. The collector's share, from V8's \`GCProfiler\` in the server over the measured run: the bytes its scavenges moved to the old generation per request (objects that outlived two of them), and the time they stopped the server for, per 1000 requests.`,
    rows,
    goals,
    notes: [perRound('req/s', rps), perRound('p99 (ms)', p99)],
  }
}

/** Counting costs per request: HEADs through `inject`, with and without `metrics`. */
async function metricsSection(): Promise<Section> {
  const rounds = 7
  const requests = 20_000
  const variants = ['plugin', 'plugin-metrics'] as const
  const perRequest: Record<string, number[]> = {}
  const dir = path.join(DATA_ROOT, 'runs', 'metrics')
  for (const order of rotations([...variants], rounds)) {
    for (const variant of order) {
      await fs.rm(dir, { recursive: true, force: true })
      await fs.mkdir(dir, { recursive: true })
      const r = worker('metrics-worker.js', [variant, dir, requests])
      append(perRequest, variant, r.cpuMicrosPerRequest as number)
      console.log(`metrics ${variant}: ${fmt(r.cpuMicrosPerRequest as number)} µs CPU per HEAD`)
    }
  }
  await fs.rm(dir, { recursive: true, force: true })
  const m = (v: string) => median(perRequest[v] ?? [])
  return {
    title: 'The cost of metrics per request',
    intro: `${requests} HEAD requests through \`app.inject()\` (no sockets: the plugin's own work per request), with and without \`metrics: true\`, each in a process of its own after 2000 warm-up requests; ${rounds} rounds, alternated; medians of the process's CPU time per request.`,
    rows: [
      { app: 'without metrics', 'CPU µs per HEAD': fmt(m('plugin')) },
      {
        app: '`metrics: true`',
        'CPU µs per HEAD': fmt(m('plugin-metrics')),
      },
    ],
    goals: [
      {
        goal: 'counting costs at most 5% of a request',
        value: `${fmt(m('plugin-metrics') / m('plugin'), 3)}×`,
        met: m('plugin-metrics') <= 1.05 * m('plugin'),
      },
    ],
    notes: [
      'Per round, µs: ' +
        variants
          .map((v) => `${v} ${(perRequest[v] ?? []).map((x) => fmt(x)).join(', ')}`)
          .join('; ') +
        '.',
    ],
  }
}

/**
 * Many requests waiting on one upload (its lock) against as many waiting on as many uploads
 * (each its body), and bare @tus/server's MemoryLocker under the first load: the server's heap
 * after a full collection, a third of the way in and at the end. A queue on one lock must cost no
 * more than the requests themselves, and stay flat.
 */
async function lockWaitSection(): Promise<Section> {
  const rounds = Number(process.env.BENCH_LOCKWAIT_ROUNDS ?? 3)
  const connections = Number(process.env.BENCH_LOCKWAIT_CONNECTIONS ?? 3000)
  const seconds = 24
  const contenders = [
    { name: 'plugin, one upload', variant: 'plugin', mode: 'one' },
    { name: `plugin, ${connections} uploads`, variant: 'plugin', mode: 'many' },
    { name: 'bare @tus/server, one upload', variant: 'tus', mode: 'one' },
  ] as const
  const atThird: Record<string, number[]> = {}
  const atEnd: Record<string, number[]> = {}
  const answered: Record<string, string[]> = {}
  const dir = path.join(DATA_ROOT, 'runs', 'lockwait')
  const mib = (bytes: number) => bytes / 2 ** 20
  for (const order of rotations([...contenders], rounds)) {
    for (const { name, variant, mode } of order) {
      await fs.rm(dir, { recursive: true, force: true })
      await fs.mkdir(dir, { recursive: true })
      const srv = await server('upload-server.js', [variant, dir], ['--expose-gc'])
      try {
        const r = worker('lockwait-client.js', [srv.origin, mode, connections, seconds]) as {
          before: { heapUsed: number }
          third: { heapUsed: number }
          end: { heapUsed: number }
          statuses: Record<string, number>
        }
        append(atThird, name, mib(r.third.heapUsed - r.before.heapUsed))
        append(atEnd, name, mib(r.end.heapUsed - r.before.heapUsed))
        append(answered, name, JSON.stringify(r.statuses))
        console.log(
          `lockwait ${name}: heap +${fmt(mib(r.third.heapUsed - r.before.heapUsed))} MiB at 8 s, +${fmt(mib(r.end.heapUsed - r.before.heapUsed))} MiB at ${seconds} s; answers ${JSON.stringify(r.statuses)}`,
        )
      } finally {
        await srv.stop()
      }
    }
  }
  await fs.rm(dir, { recursive: true, force: true })
  const m = (groups: Record<string, number[]>, name: string) => median(groups[name] ?? [])
  const [one, many] = [contenders[0].name, contenders[1].name]
  return {
    title: 'Requests waiting on one upload',
    intro: `${connections} connections each send a PATCH's headers and never its body, for ${seconds} s: all to one upload (they wait for its lock; with the plugin at most 8 queue and the others are answered \`423\` at once) or each to its own upload (each waits for its body), against a server in a process of its own with \`--expose-gc\`; the server's heap after a full collection, above what it held before, at 8 s and at the end; ${rounds} rounds, alternated; medians.`,
    rows: contenders.map(({ name }) => ({
      server: name,
      'heap at 8 s (MiB)': fmt(m(atThird, name)),
      [`heap at ${seconds} s (MiB)`]: fmt(m(atEnd, name)),
    })),
    goals: [
      {
        goal: `one upload holds no more heap than ${connections} uploads (≤ 1.1×, at 8 s and at the end)`,
        value: `${fmt(m(atThird, one) / m(atThird, many), 2)}×, ${fmt(m(atEnd, one) / m(atEnd, many), 2)}×`,
        met: m(atThird, one) <= 1.1 * m(atThird, many) && m(atEnd, one) <= 1.1 * m(atEnd, many),
      },
      {
        goal: 'flat: the heap grows by at most 2 MiB from 8 s to the end',
        value: `${fmt(m(atEnd, one) - m(atThird, one))} MiB`,
        met: m(atEnd, one) - m(atThird, one) <= 2,
      },
    ],
    notes: [
      `Answers per round: ${contenders.map(({ name }) => `${name} ${(answered[name] ?? []).join(', ')}`).join('; ')}.`,
    ],
  }
}

function table(rows: Row[]): string {
  const first = rows[0]
  if (!first) return ''
  const keys = Object.keys(first)
  const line = (cells: Array<string | number>) => `| ${cells.join(' | ')} |`
  return [
    line(keys),
    line(keys.map(() => '---')),
    ...rows.map((r) => line(keys.map((k) => r[k] ?? ''))),
  ].join('\n')
}

const SECTIONS: Record<string, () => Promise<Section>> = {
  sweep: sweepSection,
  growth: growthSection,
  startup: startupSection,
  latency: latencySection,
  upload: uploadSection,
  draft: draftSection,
  settle: settleSection,
  many: manySection,
  metrics: metricsSection,
  parallel: parallelSection,
  small: smallSection,
  lockwait: lockWaitSection,
}

const wanted = process.argv.slice(2)
const names = wanted.length > 0 ? wanted : Object.keys(SECTIONS)
const results: Section[] = []
for (const name of names) {
  const section = SECTIONS[name]
  if (!section)
    throw new Error(`unknown section ${name}; sections: ${Object.keys(SECTIONS).join(', ')}`)
  console.log(`== ${name}`)
  results.push(await section())
}
await fs.rm(path.join(DATA_ROOT, 'runs'), { recursive: true, force: true })

const cpu = os.cpus()[0]?.model ?? 'unknown CPU'
let disk = ''
try {
  disk = execFileSync('df', ['-h', DATA_ROOT]).toString().trim().split('\n').pop() ?? ''
} catch {}
const md = [
  '# Benchmarks',
  '',
  `Written by \`npm run bench${wanted.length ? ` -- ${wanted.join(' ')}` : ''}\` on ${new Date().toISOString().slice(0, 10)}.`,
  `Machine: ${os.cpus().length} × ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, ${os.type()} ${os.release()}; ` +
    `Node ${process.version}; data on \`${disk.replace(/\s+/g, ' ')}\`.`,
  '',
  'Every figure is a median over rounds in which the contenders alternate, each in a process of its own',
  '(the upload, draft and settle sections: one process per contender and round, measured fresh, then settled);',
  'ratios are against a baseline measured in the same run. These are not tests: nothing here runs in CI.',
  '',
  ...results.flatMap((s) => [
    `## ${s.title}`,
    '',
    s.intro,
    '',
    table(s.rows),
    '',
    ...(s.goals.length === 0
      ? []
      : [
          '| goal | measured | met |',
          '| --- | --- | --- |',
          ...s.goals.map((g) => `| ${g.goal} | ${g.value} | ${g.met ? 'yes' : '**no**'} |`),
          '',
        ]),
    ...(s.notes ?? []).flatMap((n) => [n, '']),
  ]),
].join('\n')
const outFile = wanted.length > 0 ? `BENCHMARKS.${wanted.join('-')}.md` : 'BENCHMARKS.md'
await fs.writeFile(outFile, md)
console.log(`\nwrote ${outFile}\n`)
console.log(md)
