/**
 * One directory, several processes: without Redis (or with another Redis prefix) a second
 * process refuses to start on a directory a live process serves, since neither would see the
 * other's upload locks; a crashed holder does not stop a restart; processes that share Redis
 * serve the directory together. Real processes: the built demo server.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it, onTestFinished } from 'vitest'
import {
  HOLDERS_DIRECTORY,
  type Holder,
  joinHolders,
} from '../../src/backends/file/directory-holders.js'
import { randomId } from '../helpers/data.js'
import { age, exists, tempDir } from '../helpers/fs.js'
import { startServerProcess } from '../helpers/process.js'
import { REDIS_URL } from '../helpers/redis.js'
import { startServer } from '../helpers/server.js'
import { createUpload, head, patch } from '../helpers/tus-client.js'

const SERVER = path.resolve('dist/demo/server.js')

function demoEnv(directory: string, extra: Record<string, string> = {}) {
  return {
    PATH: process.env.PATH,
    PORT: '0',
    UPLOAD_DIR: directory,
    EXPIRE_AFTER_MS: '3600000',
    ...extra,
  }
}

describe('several processes on one directory', () => {
  it('a second process without Redis refuses to start (FST_TUS_DIRECTORY_IN_USE, naming the first), and the first serves on', async () => {
    const directory = await tempDir()
    const first = await startServerProcess('first', SERVER, demoEnv(directory))
    const { url } = await createUpload(first.endpoint, 3)

    const second = startServerProcess('second', SERVER, demoEnv(directory))
    await expect(second).rejects.toThrow(
      new RegExp(
        `second exited: fastify-tus demo: cannot start: fastify-tus: directory \\S+ is served by the endpoint \`/files\` in process ${first.child.pid} .*neither uses \`redis\``,
      ),
    )
    // In a process of its own making too (a registration), with its code.
    const refused = await startServer({ directory }).catch((error: unknown) => error)
    expect(refused).toMatchObject({ code: 'FST_TUS_DIRECTORY_IN_USE' })

    expect((await patch(url, 0, Buffer.from('abc'))).status).toBe(204)
    expect((await head(url)).headers['upload-offset']).toBe('3')
  })

  it('a process killed with SIGKILL does not stop the next one from starting at once', async () => {
    const directory = await tempDir()
    const first = await startServerProcess('first', SERVER, demoEnv(directory))
    const { url, id } = await createUpload(first.endpoint, 3)
    first.child.kill('SIGKILL')
    await first.exited
    const next = await startServerProcess('next', SERVER, demoEnv(directory))
    expect((await head(`${next.endpoint}/${id}`)).status).toBe(200)
    expect(url).toContain(id)
  })

  it('processes sharing Redis (one prefix) serve the directory together; one with another prefix is refused', async () => {
    const directory = await tempDir()
    const prefix = `fleet-test:${randomId()}:`
    const redis = { REDIS_URL, REDIS_PREFIX: prefix }
    const a = await startServerProcess('a', SERVER, demoEnv(directory, redis))
    const b = await startServerProcess('b', SERVER, demoEnv(directory, redis))
    const { id } = await createUpload(a.endpoint, 3)
    expect((await patch(`${b.endpoint}/${id}`, 0, Buffer.from('abc'))).status).toBe(204)

    const other = { REDIS_URL, REDIS_PREFIX: `fleet-test:${randomId()}:` }
    await expect(startServerProcess('other', SERVER, demoEnv(directory, other))).rejects.toThrow(
      /their `redis.prefix` differ/,
    )
    await expect(startServerProcess('alone', SERVER, demoEnv(directory))).rejects.toThrow(
      /only one of them uses `redis`/,
    )
  })
})

describe('who counts as a live holder (holder files and real processes)', () => {
  /** The holder file of a process other than this one, as `joinHolders` writes it. */
  async function holderFile(directory: string, holder: Partial<Holder>, ageMs = 0) {
    const folder = path.join(directory, HOLDERS_DIRECTORY)
    await fs.mkdir(folder, { recursive: true })
    const file = path.join(folder, `${randomId()}.json`)
    const bootId = (await fs.readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim()
    await fs.writeFile(
      file,
      JSON.stringify({
        pid: 1,
        hostname: os.hostname(),
        bootId,
        startTicks: undefined,
        since: Date.now() - 1000,
        processToken: 'a1b2c3d4e5f6',
        redisPrefix: undefined,
        description: 'the endpoint `/elsewhere`',
        ...holder,
      }),
    )
    if (ageMs > 0) await age(file, ageMs)
    return file
  }

  /** A process that runs until the test ends: a holder's pid that is alive. */
  function liveProcess(): ChildProcess {
    const child = spawn('sleep', ['60'], { stdio: 'ignore' })
    onTestFinished(() => {
      child.kill('SIGKILL')
    })
    return child
  }

  async function startTicks(pid: number): Promise<number> {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8')
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19])
  }

  it('a live process of this machine holds the directory; one whose pid was reused (another start time) does not', async () => {
    const directory = await tempDir()
    const child = liveProcess()
    const pid = child.pid as number
    const file = await holderFile(directory, { pid, startTicks: await startTicks(pid) })
    await expect(joinHolders(directory, undefined, 'a test')).rejects.toMatchObject({
      code: 'FST_TUS_DIRECTORY_IN_USE',
    })
    await fs.rm(file)
    // The same pid, but not the process that wrote the file: it died, and its pid was reused.
    await holderFile(directory, { pid, startTicks: (await startTicks(pid)) - 1 })
    const claim = await joinHolders(directory, undefined, 'a test')
    await claim.release()
    // Its file is gone with it, and so is the folder once the last holder left.
    expect(await exists(path.join(directory, HOLDERS_DIRECTORY))).toBe(false)
  })

  it('a holder of another machine counts while it touches its file, and is forgotten a minute after', async () => {
    const directory = await tempDir()
    const file = await holderFile(directory, { hostname: 'another-machine', pid: process.pid })
    await expect(joinHolders(directory, undefined, 'a test')).rejects.toThrow(
      /served by the endpoint `\/elsewhere` in process \d+ on another-machine/,
    )
    await age(file, 61_000)
    const claim = await joinHolders(directory, undefined, 'a test')
    await claim.release()
  })

  it('of two that cannot share, the later one refuses: a holder that joined after this one does not stop it', async () => {
    const directory = await tempDir()
    const child = liveProcess()
    const pid = child.pid as number
    const ticks = await startTicks(pid)
    await holderFile(directory, { pid, startTicks: ticks, since: Date.now() + 60_000 })
    const claim = await joinHolders(directory, undefined, 'a test')
    await claim.release()
    await holderFile(directory, { pid, startTicks: ticks, since: Date.now() - 60_000 })
    await expect(joinHolders(directory, undefined, 'a test')).rejects.toMatchObject({
      code: 'FST_TUS_DIRECTORY_IN_USE',
    })
  })

  it('a holder of an earlier boot, or a dead pid, is no holder, and its file is removed', async () => {
    const directory = await tempDir()
    const child = liveProcess()
    const earlier = await holderFile(directory, { pid: child.pid, bootId: 'an-earlier-boot' })
    const dead = spawn('true')
    await new Promise((resolve) => dead.once('exit', resolve))
    const gone = await holderFile(directory, { pid: dead.pid })
    const claim = await joinHolders(directory, undefined, 'a test')
    expect(await exists(earlier)).toBe(false)
    expect(await exists(gone)).toBe(false)
    await claim.release()
  })
})
