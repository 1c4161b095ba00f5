/**
 * A process killed (SIGKILL) while its onUploadFinish runs: the next process on the directory
 * hands the finished upload over at startup (finish/hand-over.ts).
 */
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { exists, tempDir } from '../helpers/fs.js'
import { startServerProcess } from '../helpers/process.js'
import { createUpload, patch } from '../helpers/tus-client.js'
import { waitFor } from '../helpers/wait.js'

const INSTANCE = path.resolve('test/e2e/hand-over-instance.mjs')

function env(directory: string, hookDir: string, hook: 'hang' | 'deliver') {
  return { PATH: process.env.PATH, DIRECTORY: directory, HOOK_DIR: hookDir, HOOK: hook }
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
