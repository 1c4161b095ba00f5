/**
 * Which processes serve a store directory. Two processes on one directory must share Redis (the
 * same prefix): otherwise neither sees the other's upload locks, and one's sweep removes an
 * upload the other is writing. In one process the plugin refuses that itself (endpoints.ts);
 * across processes each holder leaves a file in `<directory>/.fastify-tus-holders/` while it
 * serves (a dot-directory: the sweep and the CLI's check leave it alone), and a newcomer that
 * finds a live holder it cannot share with refuses to start (`FST_TUS_DIRECTORY_IN_USE`).
 *
 * A holder is alive while, on this machine, its process runs (the pid, checked against the
 * process' start time and the machine's boot where /proc tells them: a pid reused after a crash
 * or a reboot is not the holder; elsewhere, a pid whose file was touched lately), and, on
 * another machine (a shared filesystem), while it touches its file every `TOUCH_MS`. So a
 * crashed holder does not stop a restart here, and is forgotten elsewhere after `STALE_MS`.
 * Each process only ever writes and removes its own file: no lock file to take over. Two that
 * start at once and cannot share both see each other; the later one (by `since`, then token)
 * refuses, the earlier one goes on.
 */
import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { DirectoryInUseError } from '../../errors.js'
import { HOLDERS_DIRECTORY, PROCESS_TOKEN } from './names.js'

export { HOLDERS_DIRECTORY }

/** A holder on another machine touches its file this often... */
const TOUCH_MS = 10_000
/** ...and is forgotten once its file is this old. */
const STALE_MS = 60_000

/** What a holder's file says. */
export interface Holder {
  pid: number
  hostname: string
  /** The boot of its machine (Linux), so that a pid of an earlier boot is never taken for live. */
  bootId: string | undefined
  /** Its process' start time in clock ticks since boot (Linux), against pid reuse. */
  startTicks: number | undefined
  /** When it joined (epoch ms). */
  since: number
  /** The process' token, which names its temporary files (record-file.ts `tempNameFor`). */
  processToken: string
  /** Its Redis prefix; `undefined`: it does not share the directory. */
  redisPrefix: string | undefined
  /** What it is, for messages: `the endpoint /files`, `fastify-tus sweep`. */
  description: string
}

/** This process' claim on a directory, from `joinHolders`. */
export interface DirectoryClaim {
  /** The tokens of the processes serving the directory now, this one included. */
  liveTokens(): Promise<Set<string>>
  /** Gives the directory up (the holder's file goes). */
  release(): Promise<void>
}

/** Files of this process' live claims: a file of this pid that is none of them is a past life's. */
const ownFiles = new Set<string>()

/**
 * Joins the holders of `directory`, or throws `DirectoryInUseError` naming a live holder this
 * one cannot share it with. `redisPrefix`: the Redis prefix of this holder (`undefined`: none).
 */
export async function joinHolders(
  directory: string,
  redisPrefix: string | undefined,
  description: string,
): Promise<DirectoryClaim> {
  const folder = path.join(directory, HOLDERS_DIRECTORY)
  const me = await describeSelf(redisPrefix, description)
  const file = path.join(folder, `${randomBytes(8).toString('hex')}.json`)
  await writeHolder(folder, file, me)
  ownFiles.add(file)
  const release = async () => {
    clearInterval(toucher)
    ownFiles.delete(file)
    await fs.rm(file, { force: true })
    // The last holder to leave takes the folder along (not while another one is in it).
    await fs.rmdir(folder).catch(() => {})
  }
  const toucher = setInterval(() => {
    const now = new Date()
    fs.utimes(file, now, now).catch(() => fs.writeFile(file, JSON.stringify(me)).catch(() => {}))
  }, TOUCH_MS)
  toucher.unref()
  try {
    for (const other of await liveHolders(folder, file)) {
      const holder = other.holder
      if (shareable(me, holder) || joinedBefore(me, file, holder, other.file)) continue
      throw new DirectoryInUseError(
        `directory ${directory} is served by ${describeHolder(holder)}; ${description} cannot serve it too: ${whyNot(me, holder)}, so their upload locks and sweeps would not see each other. Stop the other process, or give both \`redis\` with the same Redis and the same \`redis.prefix\``,
      )
    }
  } catch (error) {
    await release()
    throw error
  }
  return {
    liveTokens: async () => {
      const live = await liveHolders(folder, file).catch(() => [])
      return new Set([PROCESS_TOKEN, ...live.map(({ holder }) => holder.processToken)])
    },
    release,
  }
}

/**
 * Writes the holder's file whole (a temporary name, renamed: another process never reads it
 * half-written), in a folder that a holder leaving at that moment may remove.
 */
async function writeHolder(folder: string, file: string, me: Holder): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    await fs.mkdir(folder, { recursive: true })
    try {
      await fs.writeFile(`${file}.tmp`, JSON.stringify(me), { flag: 'wx' })
      await fs.rename(`${file}.tmp`, file)
      return
    } catch (error) {
      await fs.rm(`${file}.tmp`, { force: true })
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 3) throw error
    }
  }
}

/** The live holders of `folder` other than `mine`; the files of dead ones are removed. */
async function liveHolders(
  folder: string,
  mine: string,
): Promise<Array<{ file: string; holder: Holder }>> {
  const live: Array<{ file: string; holder: Holder }> = []
  const here = await machine()
  for (const name of await fs.readdir(folder)) {
    const file = path.join(folder, name)
    if (file === mine || !name.endsWith('.json')) continue
    const found = await readHolder(file)
    if (!found) continue
    if (await isAlive(file, found.holder, found.mtimeMs, here))
      live.push({ file, holder: found.holder })
    else await fs.rm(file, { force: true })
  }
  return live
}

async function readHolder(file: string): Promise<{ holder: Holder; mtimeMs: number } | undefined> {
  try {
    const [text, stats] = await Promise.all([fs.readFile(file, 'utf8'), fs.lstat(file)])
    return { holder: JSON.parse(text) as Holder, mtimeMs: stats.mtimeMs }
  } catch {
    return undefined // gone meanwhile, or being written: judged at the next look
  }
}

async function isAlive(
  file: string,
  holder: Holder,
  mtimeMs: number,
  here: { hostname: string; bootId: string | undefined },
): Promise<boolean> {
  const touched = Date.now() - mtimeMs < STALE_MS
  if (holder.hostname !== here.hostname) return touched
  if (holder.pid === process.pid) return ownFiles.has(file)
  // Without boot ids (not Linux): its pid runs, and it touched its file lately (not a pid of
  // before a reboot).
  if (holder.bootId === undefined || here.bootId === undefined) {
    return touched && pidRuns(holder.pid)
  }
  if (holder.bootId !== here.bootId) return false // written before this machine's last boot
  if (!pidRuns(holder.pid)) return false
  const ticks = await startTicksOf(holder.pid)
  return holder.startTicks === undefined || ticks === undefined || ticks === holder.startTicks
}

function pidRuns(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Field 22 of /proc/<pid>/stat, after the command name (which may hold spaces and parentheses). */
async function startTicksOf(pid: number): Promise<number | undefined> {
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = Number(fields[19])
    return Number.isSafeInteger(ticks) ? ticks : undefined
  } catch {
    return undefined
  }
}

let machineFound: Promise<{ hostname: string; bootId: string | undefined }> | undefined

function machine(): Promise<{ hostname: string; bootId: string | undefined }> {
  machineFound ??= fs.readFile('/proc/sys/kernel/random/boot_id', 'utf8').then(
    (id) => ({ hostname: os.hostname(), bootId: id.trim() }),
    () => ({ hostname: os.hostname(), bootId: undefined }),
  )
  return machineFound
}

async function describeSelf(redisPrefix: string | undefined, description: string): Promise<Holder> {
  const { hostname, bootId } = await machine()
  return {
    pid: process.pid,
    hostname,
    bootId,
    startTicks: await startTicksOf(process.pid),
    since: Date.now(),
    processToken: PROCESS_TOKEN,
    redisPrefix,
    description,
  }
}

/** Both coordinate through the same Redis prefix. */
function shareable(me: Holder, other: Holder): boolean {
  return me.redisPrefix !== undefined && me.redisPrefix === other.redisPrefix
}

/** Of two that cannot share, the later one refuses: the earlier one is not this one's to stop. */
function joinedBefore(me: Holder, mine: string, other: Holder, theirs: string): boolean {
  return me.since < other.since || (me.since === other.since && mine < theirs)
}

function whyNot(me: Holder, other: Holder): string {
  if (me.redisPrefix === undefined && other.redisPrefix === undefined) return 'neither uses `redis`'
  if (me.redisPrefix === undefined || other.redisPrefix === undefined) {
    return 'only one of them uses `redis`'
  }
  return `their \`redis.prefix\` differ (${JSON.stringify(me.redisPrefix)} and ${JSON.stringify(other.redisPrefix)})`
}

function describeHolder(holder: Holder): string {
  return `${holder.description} in process ${holder.pid} on ${holder.hostname} (since ${new Date(holder.since).toISOString()})`
}
