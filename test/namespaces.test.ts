/**
 * Several endpoints in one app (`namespace`), several registrations on one store (refused unless
 * they share Redis), Redis prefixes per store, and @fastify/autoload.
 */
import fs from 'node:fs/promises'
import { createRequire } from 'node:module'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import autoload from '@fastify/autoload'
import { FileStore } from '@tus/file-store'
import { Server } from '@tus/server'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import { describe, expect, it, onTestFinished } from 'vitest'
import fastifyTus, { type TusCleanupDecorator } from '../src/index.js'
import { randomId } from './helpers/data.js'
import { exists, listing, tempDir, writeSession } from './helpers/fs.js'
import { REDIS_URL } from './helpers/redis.js'
import { logCapture } from './helpers/server.js'
import { TUS } from './helpers/tus-client.js'
import { waitFor } from './helpers/wait.js'

const HOUR = 3_600_000

/** An app logging at debug into `logs`, closed after the test. */
function newApp(): { app: FastifyInstance; logs: ReturnType<typeof logCapture>['records'] } {
  const { records, stream } = logCapture()
  const app = Fastify({ logger: { level: 'debug', stream } })
  onTestFinished(() => app.close())
  return { app, logs: records }
}

/*
 * An app types its decorators by declaring its namespaces (`FastifyTusNamespaces`), for its whole
 * TypeScript program; this program (every test file) has apps with and without namespaces, so
 * these tests read the entries by name.
 */
function tusOf(app: FastifyInstance | undefined): Partial<Record<string, Server>> {
  return app?.tus as unknown as Partial<Record<string, Server>>
}
function cleanupOf(app: FastifyInstance | undefined): Partial<Record<string, TusCleanupDecorator>> {
  return app?.tusCleanup as unknown as Partial<Record<string, TusCleanupDecorator>>
}

/** The error `ready()` rejects with. */
async function readyError(app: FastifyInstance) {
  return (await app.ready().then(
    () => undefined,
    (error: unknown) => error,
  )) as (Error & { code?: string }) | undefined
}

/** POST a new upload of 5 bytes through inject(); resolves to its id. */
async function createThrough(app: FastifyInstance, endpoint: string): Promise<string> {
  const res = await app.inject({
    method: 'POST',
    url: endpoint,
    headers: { ...TUS, 'Upload-Length': '5' },
  })
  expect(res.statusCode, res.body).toBe(201)
  const location = String(res.headers.location)
  return location.slice(location.lastIndexOf('/') + 1)
}

function redisClient(): Redis {
  const client = new Redis(REDIS_URL)
  onTestFinished(() => void client.disconnect())
  return client
}

describe('several endpoints in one app', () => {
  it('serves each namespace at its path from its directory, as fastify.tus.<ns> and fastify.tusCleanup.<ns>', async () => {
    const [avatars, videos] = [await tempDir(), await tempDir()]
    const { app } = newApp()
    await app.register(fastifyTus, { namespace: 'avatars', path: '/avatars', directory: avatars })
    await app.register(fastifyTus, { namespace: 'videos', path: '/videos', directory: videos })
    await app.ready()

    expect(Object.keys(app.tus).sort()).toEqual(['avatars', 'videos'])
    expect(tusOf(app).avatars).toBeInstanceOf(Server)
    expect(tusOf(app).videos).toBeInstanceOf(Server)
    expect(tusOf(app).avatars).not.toBe(tusOf(app).videos)
    const avatar = await createThrough(app, '/avatars')
    const video = await createThrough(app, '/videos')
    expect((await listing(avatars)).sort()).toEqual([avatar, `${avatar}.json`])
    expect((await listing(videos)).sort()).toEqual([video, `${video}.json`])
    // Each Server knows only its own uploads.
    const head = (url: string) => app.inject({ method: 'HEAD', url, headers: TUS })
    expect((await head(`/videos/${video}`)).statusCode).toBe(200)
    expect((await head(`/videos/${avatar}`)).statusCode).toBe(404)

    expect(await cleanupOf(app).videos?.run()).toMatchObject({ removed: 0, scanned: 1 })
    expect(cleanupOf(app).videos?.last).toMatchObject({ scanned: 1 })
  })

  it('each endpoint sweeps its own directory by its own settings, and its logs name it', async () => {
    const [avatars, videos] = [await tempDir(), await tempDir()]
    const [avatar, video] = [randomId(), randomId()]
    await writeSession(avatars, avatar, { size: 100, bytes: 10, ageMs: HOUR })
    await writeSession(videos, video, { size: 100, bytes: 10, ageMs: HOUR })
    const { app, logs } = newApp()
    await app.register(fastifyTus, {
      namespace: 'avatars',
      path: '/avatars',
      directory: avatars,
      expireAfterMs: 2 * HOUR,
    })
    await app.register(fastifyTus, {
      namespace: 'videos',
      path: '/videos',
      directory: videos,
      expireAfterMs: 60_000,
    })
    await app.ready()
    await waitFor(() => cleanupOf(app).avatars?.last && cleanupOf(app).videos?.last)

    expect(await exists(path.join(avatars, avatar))).toBe(true) // idle 1 h of its 2 h
    expect(await exists(path.join(videos, video))).toBe(false)
    expect(cleanupOf(app).avatars?.last).toMatchObject({ removed: 0, scanned: 1 })
    expect(cleanupOf(app).videos?.last).toMatchObject({ removed: 1, scanned: 1 })
    const removed = logs.filter((r) => r.msg === 'removed 1 expired uploads')
    expect(removed).toEqual([
      expect.objectContaining({ plugin: 'fastify-tus', namespace: 'videos', endpoint: '/videos' }),
    ])
    const none = logs.filter((r) => r.msg === 'no expired uploads to remove')
    expect(none).toEqual([
      expect.objectContaining({
        plugin: 'fastify-tus',
        namespace: 'avatars',
        endpoint: '/avatars',
      }),
    ])
  })

  it('logs carry the endpoint with its prefixes, and no namespace without one', async () => {
    const dir = await tempDir()
    await writeSession(dir, randomId(), { size: 100, bytes: 10, ageMs: HOUR })
    const { app, logs } = newApp()
    await app.register(
      async (v1) => {
        await v1.register(fastifyTus, { directory: dir, prefix: '/api', expireAfterMs: 60_000 })
      },
      { prefix: '/v1' },
    )
    await app.ready()
    const record = await waitFor(() => logs.find((r) => r.msg === 'removed 1 expired uploads'))
    expect(record).toMatchObject({ plugin: 'fastify-tus', endpoint: '/v1/api/files' })
    expect(record).not.toHaveProperty('namespace')
  })

  it('refuses a second registration without a namespace, naming the first endpoint (FST_TUS_ALREADY_REGISTERED)', async () => {
    const { app } = newApp()
    app.register(fastifyTus, { directory: await tempDir(), prefix: '/api' })
    app.register(fastifyTus, { directory: await tempDir(), path: '/videos' })
    const error = await readyError(app)
    expect(error?.code).toBe('FST_TUS_ALREADY_REGISTERED')
    expect(error?.message).toMatch(
      /already registered on this Fastify instance for the endpoint `\/api\/files`; give the endpoint `\/videos` a `namespace` option/,
    )
  })

  it('refuses a namespace already registered, naming its endpoint (FST_TUS_ALREADY_REGISTERED)', async () => {
    const { app } = newApp()
    app.register(fastifyTus, { namespace: 'videos', path: '/videos', directory: await tempDir() })
    app.register(fastifyTus, { namespace: 'videos', path: '/clips', directory: await tempDir() })
    const error = await readyError(app)
    expect(error?.code).toBe('FST_TUS_ALREADY_REGISTERED')
    expect(error?.message).toMatch(
      /namespace 'videos' is already registered on this Fastify instance, for the endpoint `\/videos` \(namespace 'videos'\); the endpoint `\/clips` \(namespace 'videos'\) needs another `namespace`/,
    )
  })

  it('refuses a registration without a namespace after namespaced ones, naming them', async () => {
    const { app } = newApp()
    app.register(fastifyTus, { namespace: 'videos', path: '/videos', directory: await tempDir() })
    app.register(fastifyTus, { directory: await tempDir() })
    const error = await readyError(app)
    expect(error?.code).toBe('FST_TUS_ALREADY_REGISTERED')
    expect(error?.message).toMatch(
      /with a namespace \('videos' at the endpoint `\/videos` \(namespace 'videos'\)\); a registration without `namespace` can only come first: give the endpoint `\/files` a `namespace` too/,
    )
  })

  it('after a registration without a namespace, a namespaced one is added to fastify.tus, which stays the first Server', async () => {
    const { app } = newApp()
    await app.register(fastifyTus, { directory: await tempDir() })
    await app.register(fastifyTus, {
      namespace: 'videos',
      path: '/videos',
      directory: await tempDir(),
    })
    await app.ready()
    expect(app.tus).toBeInstanceOf(Server)
    expect(tusOf(app).videos).toBeInstanceOf(Server)
    expect(tusOf(app).videos).not.toBe(app.tus)
    expect(await app.tusCleanup.run()).toMatchObject({ scanned: 0 })
    expect(await cleanupOf(app).videos?.run()).toMatchObject({ scanned: 0 })
    expect(await createThrough(app, '/videos')).toMatch(/^[0-9a-f]{32}$/)
  })

  it("refuses a namespace that is a property of the Server registered without one ('handle')", async () => {
    const { app } = newApp()
    app.register(fastifyTus, { directory: await tempDir() })
    app.register(fastifyTus, { namespace: 'handle', path: '/h', directory: await tempDir() })
    const error = await readyError(app)
    expect(error?.code).toBe('FST_TUS_INVALID_OPTION')
    expect(error?.message).toMatch(/option `namespace` 'handle' is a property of `fastify.tus`/)
    expect(typeof app.tus.handle).toBe('function')
  })

  it('lets sibling contexts each register without a namespace, as Fastify scopes decorators', async () => {
    const { app } = newApp()
    for (const name of ['a', 'b']) {
      const directory = await tempDir()
      app.register(async (child) => {
        await child.register(fastifyTus, { directory, path: `/${name}` })
      })
    }
    await app.ready()
    expect(app.hasDecorator('tus')).toBe(false)
    for (const url of ['/a', '/b']) {
      expect((await app.inject({ method: 'OPTIONS', url })).statusCode).toBe(204)
    }
  })

  it("a child context sees its parent's namespaces and adds its own without changing the parent's", async () => {
    const { app } = newApp()
    await app.register(fastifyTus, {
      namespace: 'videos',
      path: '/videos',
      directory: await tempDir(),
    })
    let child: FastifyInstance | undefined
    const directory = await tempDir()
    await app.register(async (instance) => {
      child = instance
      await instance.register(fastifyTus, { namespace: 'avatars', path: '/avatars', directory })
    })
    await app.ready()
    expect(Object.keys(app.tus)).toEqual(['videos'])
    expect(tusOf(child).videos).toBe(tusOf(app).videos)
    expect(tusOf(child).avatars).toBeInstanceOf(Server)
    expect(cleanupOf(child).videos).toBe(cleanupOf(app).videos)
  })
})

describe('several registrations on one directory', () => {
  it('are refused without Redis, naming the directory and both endpoints (FST_TUS_DIRECTORY_IN_USE)', async () => {
    const directory = await tempDir()
    const { app } = newApp()
    app.register(fastifyTus, { namespace: 'a', path: '/a', directory })
    app.register(fastifyTus, { namespace: 'b', path: '/b', directory })
    const error = await readyError(app)
    expect(error?.code).toBe('FST_TUS_DIRECTORY_IN_USE')
    expect(error?.message).toContain(
      `directory ${await fs.realpath(directory)} is already the store of the endpoint \`/a\` (namespace 'a'); the endpoint \`/b\` (namespace 'b') cannot serve it too: neither uses \`redis\``,
    )
  })

  it('are refused across two apps of one process, through a symlink too, until the first app closes', async () => {
    const directory = await tempDir()
    const link = path.join(await tempDir(), 'link')
    await fs.symlink(directory, link)
    const first = newApp().app
    await first.register(fastifyTus, { directory })
    await first.ready()

    const second = newApp().app
    second.register(fastifyTus, { directory: path.join(link, '.') })
    expect(await readyError(second)).toMatchObject({ code: 'FST_TUS_DIRECTORY_IN_USE' })

    await first.close()
    const third = newApp().app
    await third.register(fastifyTus, { directory: link })
    await third.ready()
    expect(await createThrough(third, '/files')).toMatch(/^[0-9a-f]{32}$/)
  })

  it('a refused registration holds nothing: its directory is free for the next app', async () => {
    const directory = await tempDir()
    const first = newApp().app
    first.register(fastifyTus, { directory: await tempDir() })
    first.register(fastifyTus, { directory }) // no namespace: refused before taking its directory
    expect(await readyError(first)).toMatchObject({ code: 'FST_TUS_ALREADY_REGISTERED' })
    const second = newApp().app
    await second.register(fastifyTus, { directory })
    await second.ready()
  })

  it('are allowed when both share Redis (same prefix), and serve the same uploads', async () => {
    const directory = await tempDir()
    const client = redisClient()
    const prefix = `ns-test:${randomId()}:`
    const { app } = newApp()
    await app.register(fastifyTus, {
      namespace: 'a',
      path: '/a',
      directory,
      redis: { client, prefix },
    })
    await app.register(fastifyTus, {
      namespace: 'b',
      path: '/b',
      directory,
      redis: { client, prefix },
    })
    await app.ready()
    const id = await createThrough(app, '/a')
    expect((await app.inject({ method: 'HEAD', url: `/b/${id}`, headers: TUS })).statusCode).toBe(
      200,
    )
  })

  it('are refused when their Redis prefixes differ, naming both prefixes', async () => {
    const directory = await tempDir()
    const client = redisClient()
    const { app } = newApp()
    app.register(fastifyTus, { namespace: 'a', path: '/a', directory, redis: { client } })
    app.register(fastifyTus, { namespace: 'b', path: '/b', directory, redis: { client } })
    const error = await readyError(app)
    expect(error?.code).toBe('FST_TUS_DIRECTORY_IN_USE')
    expect(error?.message).toContain(
      'their `redis.prefix` differ ("fastify-tus:a:" and "fastify-tus:b:")',
    )
  })

  it('are refused for one datastore object too', async () => {
    const datastore = new FileStore({ directory: await tempDir() })
    const { app } = newApp()
    app.register(fastifyTus, { namespace: 'a', path: '/a', datastore })
    app.register(fastifyTus, { namespace: 'b', path: '/b', datastore })
    const error = await readyError(app)
    expect(error?.code).toBe('FST_TUS_DIRECTORY_IN_USE')
    expect(error?.message).toMatch(/the datastore object \(FileStore\) is already the store of/)
  })
})

describe('Redis prefixes of several endpoints', () => {
  it('refuses one prefix for two directories, naming the prefix and the other endpoint', async () => {
    const client = redisClient()
    const prefix = `ns-test:${randomId()}:`
    const { app } = newApp()
    app.register(fastifyTus, {
      namespace: 'a',
      path: '/a',
      directory: await tempDir(),
      redis: { client, prefix },
    })
    app.register(fastifyTus, {
      namespace: 'b',
      path: '/b',
      directory: await tempDir(),
      redis: { client, prefix },
    })
    const error = await readyError(app)
    expect(error?.code).toBe('FST_TUS_INVALID_OPTION')
    expect(error?.message).toContain(
      `option \`redis.prefix\` "${prefix}" is already the prefix of the endpoint \`/a\` (namespace 'a'), on another store`,
    )
  })

  it('gives each namespace its own default prefix, so each endpoint wins its own sweep lease', async () => {
    const client = redisClient()
    // Namespaces of their own: a slot taken in Redis by an earlier run does not matter.
    const namespaces = [`a${randomId().slice(0, 8)}`, `b${randomId().slice(0, 8)}`]
    onTestFinished(async () => {
      const keys = await client.keys('fastify-tus:[ab]*')
      const ours = keys.filter((key) =>
        namespaces.some((ns) => key.startsWith(`fastify-tus:${ns}:`)),
      )
      if (ours.length > 0) await client.del(...ours)
    })
    const { app, logs } = newApp()
    const directories: string[] = []
    for (const namespace of namespaces) {
      const directory = await tempDir()
      directories.push(directory)
      await writeSession(directory, 'f'.repeat(32), { size: 100, bytes: 10, ageMs: HOUR })
      await app.register(fastifyTus, {
        namespace,
        path: `/${namespace}`,
        directory,
        expireAfterMs: 60_000,
        redis: { client },
      })
    }
    await app.ready()

    // Both swept on start: with one lease between them, one would have skipped this interval.
    for (const [i, namespace] of namespaces.entries()) {
      await waitFor(() => cleanupOf(app)[namespace]?.last, 5000, `the sweep of ${namespace}`)
      expect(cleanupOf(app)[namespace]?.last).toMatchObject({ removed: 1 })
      expect(await exists(path.join(directories[i] as string, 'f'.repeat(32)))).toBe(false)
      const record = logs.find(
        (r) => r.msg === 'removed 1 expired uploads' && r.namespace === namespace,
      )
      expect(record?.slot).toBeTypeOf('number')
      expect(await client.exists(`fastify-tus:${namespace}:{sweep}:slot`)).toBe(1)
    }
  })
})

describe('@fastify/autoload', () => {
  const FASTIFY_PLUGIN = pathToFileURL(
    createRequire(import.meta.url).resolve('fastify-plugin'),
  ).href
  // The built package (the global setup builds it): autoload imports these files natively.
  const FASTIFY_TUS = pathToFileURL(path.resolve('dist/src/index.js')).href

  async function pluginDir(files: Record<string, string>): Promise<string> {
    const dir = await tempDir()
    for (const [name, text] of Object.entries(files)) await fs.writeFile(path.join(dir, name), text)
    return dir
  }

  it('loads one endpoint per file when each file exports its own fastify-plugin wrapper', async () => {
    const uploads = { avatars: await tempDir(), videos: await tempDir() }
    const file = (namespace: keyof typeof uploads) => `
      import fp from '${FASTIFY_PLUGIN}'
      import fastifyTus from '${FASTIFY_TUS}'

      export default fp(async (app, opts) => {
        await app.register(fastifyTus, opts)
      }, { name: 'tus-${namespace}' })

      export const autoConfig = ${JSON.stringify({ namespace, path: `/${namespace}`, directory: uploads[namespace] })}
    `
    const dir = await pluginDir({ 'avatars.mjs': file('avatars'), 'videos.mjs': file('videos') })
    const { app } = newApp()
    await app.register(autoload, { dir })
    await app.ready()

    expect(Object.keys(app.tus).sort()).toEqual(['avatars', 'videos'])
    const avatar = await createThrough(app, '/avatars')
    const video = await createThrough(app, '/videos')
    expect(await exists(path.join(uploads.avatars, avatar))).toBe(true)
    expect(await exists(path.join(uploads.videos, video))).toBe(true)
    expect(await cleanupOf(app).videos?.run()).toMatchObject({ scanned: 1 })
  })

  it('keeps one plugin per name: two files exporting fastifyTus itself load one endpoint', async () => {
    const file = async (namespace: string) => `
      export { default } from '${FASTIFY_TUS}'
      export const autoConfig = ${JSON.stringify({ namespace, path: `/${namespace}`, directory: await tempDir() })}
    `
    const dir = await pluginDir({
      'avatars.mjs': await file('avatars'),
      'videos.mjs': await file('videos'),
    })
    const { app } = newApp()
    await app.register(autoload, { dir })
    await app.ready()
    // Both files export the same function, named 'fastify-tus' by fastify-plugin: autoload keys
    // the plugins it found by that name, so the second one found replaces the first.
    expect(Object.keys(app.tus)).toHaveLength(1)
  })
})
