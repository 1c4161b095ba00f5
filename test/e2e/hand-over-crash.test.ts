/**
 * A process killed (SIGKILL) while its onUploadFinish runs: the next process on the directory
 * hands the finished upload over at startup (finish/hand-over.ts).
 */
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { exists, tempDir } from '../helpers/fs.js'
import { startServerProcess } from '../helpers/process.js'
import { REDIS_URL } from '../helpers/redis.js'
import { createUpload, patch } from '../helpers/tus-client.js'
import { sleep, waitFor } from '../helpers/wait.js'

const INSTANCE = path.resolve('test/e2e/hand-over-instance.mjs')

function env(
  directory: string,
  hookDir: string,
  hook: 'hang' | 'deliver',
  fleet: Record<string, string> = {},
) {
  return { PATH: process.env.PATH, DIRECTORY: directory, HOOK_DIR: hookDir, HOOK: hook, ...fleet }
}

describe('a kill -9 between the last byte and the end of onUploadFinish', () => {
  it('leaves the upload to the next process on the directory, which hands it over at startup', async () => {
    const directory = await tempDir()
    const hookDir = await tempDir()
    const first = await startServerProcess('first', INSTANCE, env(directory, hookDir, 'hang'))
    const { url, id } = await createUpload(first.endpoint, 11)
    // The PATCH never gets its answer: its hook hangs until the kill.
    patch(url, 0, Buffer.from('hello world')).catch(() => {})
    await waitFor(() => exists(path.join(hookDir, `started-${id}`)), 10_000, 'the hook to start')
    first.child.kill('SIGKILL')
    await first.exited
    expect(await exists(path.join(hookDir, `delivered-${id}`))).toBe(false)

    const next = await startServerProcess('next', INSTANCE, env(directory, hookDir, 'deliver'))
    const delivered = path.join(hookDir, `delivered-${id}`)
    await waitFor(() => exists(delivered), 10_000, 'the hand-over at startup')
    expect(await readFile(delivered, 'utf8')).toBe(String(next.child.pid))
    // The retry's request says which run it is: the first run never recorded a failure.
    expect(await readFile(path.join(hookDir, `started-${id}`), 'utf8')).toBe('0')
    expect(await readFile(path.join(directory, id), 'utf8')).toBe('hello world')
  })
})

describe('a kill -9 of one instance of a fleet on Redis while its onUploadFinish runs', () => {
  it('leaves the upload to another instance, which hands it over once the lock of the dead one expires', async () => {
    const directory = await tempDir()
    const hookDir = await tempDir()
    const fleet = { REDIS_URL, REDIS_PREFIX: `fastify-tus-test:hand-over-fleet:${Date.now()}:` }
    const dying = await startServerProcess(
      'dying',
      INSTANCE,
      env(directory, hookDir, 'hang', fleet),
    )
    const other = await startServerProcess(
      'other',
      INSTANCE,
      env(directory, hookDir, 'deliver', fleet),
    )
    const { url, id } = await createUpload(dying.endpoint, 11)
    patch(url, 0, Buffer.from('hello world')).catch(() => {})
    await waitFor(() => exists(path.join(hookDir, `started-${id}`)), 10_000, 'the hook to start')
    // While the dying instance runs the hook, the other one's passes (every 200 ms) skip it.
    await sleep(600)
    expect(await exists(path.join(hookDir, `delivered-${id}`))).toBe(false)
    dying.child.kill('SIGKILL')
    await dying.exited
    const delivered = path.join(hookDir, `delivered-${id}`)
    await waitFor(() => exists(delivered), 10_000, 'the other instance to hand it over')
    expect(await readFile(delivered, 'utf8')).toBe(String(other.child.pid))
  })
})
