/**
 * One directory, several processes: without Redis (or with another Redis prefix) a second
 * process refuses to start on a directory a live process serves, since neither would see the
 * other's upload locks; a crashed holder does not stop a restart; processes that share Redis
 * serve the directory together. Real processes: the built demo server.
 */
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import {
  createUpload,
  head,
  patch,
  REDIS_URL,
  randomId,
  startServer,
  startServerProcess,
  tempDir,
} from './helpers.js'

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
