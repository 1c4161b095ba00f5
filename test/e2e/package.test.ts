/**
 * The package as users get it: the tarball of `npm pack` (of the build vitest's global setup made;
 * `--ignore-scripts`, since `prepack`'s clean build would pull dist/ from under other test files),
 * installed with its dependencies into a scratch application, as an ES module app and a CommonJS
 * one would use it:
 * - what the tarball holds (and no source maps to sources it does not ship);
 * - its types type-check in a user's project with `skipLibCheck: false`, strict, `module
 *   nodenext` and `node16`, from an ES module and from a CommonJS file (`import x = require(...)`),
 *   the main entry and `fastify-tus/sweep` (RedisLocker included), with ioredis 5;
 * - `import` and `require` of the installed package serve tus, with one copy of the module, and
 *   its CLI runs with ioredis 5;
 * - @arethetypeswrong/cli finds no problem in any resolution mode of the `node16` profile;
 * - the README's links work on the npm page (absolute, or anchors of the README itself).
 */
import { execFile } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { randomId } from '../helpers/data.js'
import { REDIS_URL } from '../helpers/redis.js'

const ROOT = path.resolve('.')
const TSC = path.join(ROOT, 'node_modules/typescript/bin/tsc')
const ATTW = path.join(ROOT, 'node_modules/@arethetypeswrong/cli/dist/index.js')
const REPOSITORY = 'https://github.com/fastify-tus/fastify-tus'

interface Run {
  code: number
  stdout: string
  stderr: string
}

function run(command: string, args: string[], cwd: string, timeout = 120_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      command,
      args,
      { cwd, timeout, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, NO_COLOR: '1' } },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0
        resolve({ code, stdout, stderr })
      },
    )
  })
}

/** The installed version of a dev dependency: the scratch app gets the same, from npm's cache. */
function versionOf(name: string): string {
  return JSON.parse(readFileSync(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8'))
    .version
}

/** The srvx file docs/typescript.md tells a `skipLibCheck: false` project to add, as written there. */
function srvxShim(): string {
  const doc = readFileSync(path.join(ROOT, 'docs/typescript.md'), 'utf8')
  const section = doc.slice(doc.indexOf('\n## `skipLibCheck: false`\n'))
  const block = /```ts\n([\s\S]*?)```/.exec(section)?.[1]
  if (!block) throw new Error('no ts block under `skipLibCheck: false` in docs/typescript.md')
  return block
}

/**
 * Type-checks `files` in the scratch application as a strict project with `skipLibCheck: false`
 * (and the documented srvx file unless `shim: false`); resolves to tsc's error lines.
 */
async function typeCheck(
  module: string,
  name: string,
  files: string[],
  { shim = true } = {},
): Promise<string[]> {
  if (shim) await fs.writeFile(path.join(app, 'srvx-runtimes.d.ts'), srvxShim())
  await fs.writeFile(
    path.join(app, `tsconfig.${name}.json`),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2023',
        lib: ['ES2023'],
        module,
        moduleResolution: module,
        types: ['node'],
        strict: true,
        skipLibCheck: false,
        noEmit: true,
      },
      files: shim ? [...files, 'srvx-runtimes.d.ts'] : files,
    }),
  )
  const check = await run(process.execPath, [TSC, '-p', `tsconfig.${name}.json`], app)
  return (check.stdout + check.stderr).split('\n').filter((line) => line.trim() !== '')
}

let work: string
let tarball: string
let packed: string[]
/** The scratch application: CommonJS at its root, an ES module package in `esm/`. */
let app: string
/** The package as installed in the scratch application. */
let installed: string

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'fastify-tus-package-'))
  const pack = await run(
    'npm',
    ['pack', '--ignore-scripts', '--json', '--pack-destination', work],
    ROOT,
  )
  expect(pack.code, pack.stderr).toBe(0)
  const [info] = JSON.parse(pack.stdout) as Array<{ filename: string; files: { path: string }[] }>
  if (!info) throw new Error('npm pack reported no package')
  tarball = path.join(work, info.filename)
  packed = info.files.map((file) => file.path).sort()

  app = path.join(work, 'app')
  await fs.mkdir(path.join(app, 'esm'), { recursive: true })
  await fs.writeFile(
    path.join(app, 'package.json'),
    JSON.stringify({ name: 'scratch-app', private: true }),
  )
  await fs.writeFile(
    path.join(app, 'esm/package.json'),
    JSON.stringify({ name: 'scratch-app-esm', private: true, type: 'module' }),
  )
  // ioredis 5, the older major of the peer range; the repository's own tests use 6.
  const install = await run(
    'npm',
    [
      'install',
      '--prefer-offline',
      '--no-audit',
      '--no-fund',
      '--no-package-lock',
      tarball,
      `fastify@${versionOf('fastify')}`,
      `ioredis@${versionOf('ioredis5')}`,
      `@types/node@${versionOf('@types/node')}`,
    ],
    app,
    150_000,
  )
  expect(install.code, install.stderr).toBe(0)
  installed = path.join(app, 'node_modules/fastify-tus')
}, 180_000)

afterAll(async () => {
  if (work && !process.env.KEEP_SCRATCH) await fs.rm(work, { recursive: true, force: true })
})

describe('the packed package', () => {
  it('holds the build, the CommonJS entry, README, LICENSE and package.json, and nothing else', async () => {
    for (const file of [
      'LICENSE',
      'README.md',
      'package.json',
      'dist/src/index.js',
      'dist/src/index.d.ts',
      'dist/src/sweep/index.js',
      'dist/src/sweep/index.d.ts',
      'dist/src/redis/locker.d.ts',
      'dist/src/cli/main.js',
      'cjs/index.cjs',
      'cjs/index.d.cts',
      'cjs/sweep.cjs',
      'cjs/sweep.d.cts',
      'cjs/namespaces.d.mts',
    ]) {
      expect(packed).toContain(file)
    }
    const strays = packed.filter(
      (file) =>
        !['LICENSE', 'README.md', 'package.json'].includes(file) &&
        !/^dist\/src\/.+\.(js|d\.ts)$/.test(file) &&
        !/^cjs\/[^/]+\.(cjs|d\.cts|d\.mts)$/.test(file),
    )
    expect(strays).toEqual([]) // no tests, bench, demo, sources or source maps

    // No file points at a source map or at sources that are not shipped.
    for (const file of packed.filter((name) => /\.(c?js|d\.c?ts)$/.test(name))) {
      const text = await fs.readFile(path.join(installed, file), 'utf8')
      expect(text, file).not.toMatch(/sourceMappingURL/)
    }

    // RedisLocker's declarations are published (no `stripInternal`, no `@internal` left).
    const locker = await fs.readFile(path.join(installed, 'dist/src/redis/locker.d.ts'), 'utf8')
    expect(locker).toMatch(/export declare class RedisLocker/)

    const pkg = JSON.parse(await fs.readFile(path.join(installed, 'package.json'), 'utf8'))
    expect(pkg).toMatchObject({
      license: 'MIT',
      repository: { url: `git+${REPOSITORY}.git` },
      homepage: expect.stringContaining(REPOSITORY),
      bugs: { url: `${REPOSITORY}/issues` },
      keywords: expect.arrayContaining(['fastify', 'fastify-plugin', 'tus', 'upload']),
      peerDependencies: { ioredis: '^5.4.1 || ^6.0.0' },
    })
    // Nothing runs at install time (no warnings about install scripts).
    for (const script of ['preinstall', 'install', 'postinstall', 'prepare']) {
      expect(pkg.scripts?.[script], script).toBeUndefined()
    }
  })

  // nodenext models Node's require of ES modules, node16 does not: the CommonJS types must not
  // depend on it.
  it.each(['nodenext', 'node16'])(
    'type-checks an ES module and a CommonJS consumer with skipLibCheck: false and the documented srvx file, module %s, without an error',
    async (module) => {
      await fs.writeFile(path.join(app, 'esm/consumer.ts'), ESM_CONSUMER)
      await fs.writeFile(path.join(app, 'consumer.cts'), CJS_CONSUMER)
      expect(await typeCheck(module, 'consumer', ['esm/consumer.ts', 'consumer.cts'])).toEqual([])
    },
  )

  it('without the documented srvx file, fails only in srvx (the types of other runtimes it names)', async () => {
    await fs.writeFile(path.join(app, 'esm/consumer.ts'), ESM_CONSUMER)
    const errors = await typeCheck('nodenext', 'no-shim', ['esm/consumer.ts'], { shim: false })
    // When this fails for want of errors, srvx no longer needs the file: drop it from the docs.
    expect(errors.length).toBeGreaterThan(0)
    expect(errors.filter((line) => !line.startsWith('node_modules/srvx/'))).toEqual([])
  })

  // A declaration of namespaces holds for its whole program: one program per consumer.
  it.each([
    ['an ES module', 'nodenext', 'esm/namespaced.ts'],
    ['an ES module', 'node16', 'esm/namespaced.ts'],
    ['a CommonJS file', 'nodenext', 'namespaced.cts'],
    ['a CommonJS file', 'node16', 'namespaced.cts'],
  ])(
    'types the decorators of an app that declares its namespaces, from %s, module %s',
    async (_kind, module, file) => {
      await fs.writeFile(path.join(app, 'esm/namespaced.ts'), NAMESPACED_CONSUMER)
      await fs.writeFile(
        path.join(app, 'namespaced.cts'),
        NAMESPACED_CONSUMER.replace(
          "import fastifyTus, { fastifyRequestOf } from 'fastify-tus'",
          "import fastifyTus = require('fastify-tus')\nconst { fastifyRequestOf } = fastifyTus",
        ).replace("import Fastify from 'fastify'", "import Fastify = require('fastify')"),
      )
      const name = `namespaced-${path.basename(file).replace('.', '-')}-${module}`
      expect(await typeCheck(module, name, [file])).toEqual([])
    },
  )

  it('serves tus when imported (ES module) and when required (CommonJS), one copy of the module', async () => {
    await fs.writeFile(path.join(app, 'esm/serve.js'), ESM_SERVE)
    await fs.writeFile(path.join(app, 'serve.cjs'), CJS_SERVE)
    const upload = path.join(work, 'uploads')
    const env = ['--', upload, REDIS_URL, `test:${randomId()}:`]

    const esm = await run(process.execPath, ['esm/serve.js', ...env], app)
    expect(esm.stderr).toBe('')
    expect(JSON.parse(esm.stdout)).toEqual({ status: 204, tusVersion: '1.0.0' })

    const cjs = await run(process.execPath, ['serve.cjs', ...env], app)
    // No ExperimentalWarning: require(esm) from node_modules is quiet on Node 20.19+.
    expect(cjs.stderr).toBe('')
    expect(JSON.parse(cjs.stdout)).toEqual({ status: 204, tusVersion: '1.0.0', locked: true })

    // The CLI, through npm's bin link, with ioredis 5 for --redis-url.
    const bin = path.join(app, 'node_modules/.bin/fastify-tus')
    const version = await run(bin, ['--version'], app)
    expect(version.stdout.trim()).toBe(JSON.parse(readFileSync('package.json', 'utf8')).version)
    await fs.mkdir(path.join(work, 'store'))
    const sweep = await run(
      bin,
      ['sweep', '--dir', path.join(work, 'store'), '--expire-after', '1h', '--json'].concat([
        '--redis-url',
        REDIS_URL,
        '--redis-prefix',
        `test:${randomId()}:`,
      ]),
      app,
    )
    expect(sweep.code, sweep.stderr).toBe(0)
    expect(JSON.parse(sweep.stdout).report).toMatchObject({ scanned: 0, removed: 0, errors: 0 })
  })

  it('asks for prom-client by name when metrics are on and it is not installed (an optional peer)', async () => {
    await fs.writeFile(path.join(app, 'esm/metrics.js'), ESM_METRICS_WITHOUT_PROM_CLIENT)
    const upload = path.join(work, 'metrics-uploads')
    const result = await run(process.execPath, ['esm/metrics.js', '--', upload], app)
    expect(result.stderr).toBe('')
    expect(JSON.parse(result.stdout)).toEqual({
      code: 'FST_TUS_METRICS_UNAVAILABLE',
      message:
        'fastify-tus: option `metrics` needs prom-client, an optional peer dependency: npm install prom-client',
      withoutMetrics: 204,
    })
  })

  it('has right types in every resolution mode of the node16 profile (@arethetypeswrong/cli)', async () => {
    // node10 (TypeScript's `moduleResolution: node`, removed in TypeScript 7) reads no exports
    // map: it cannot reach `fastify-tus/sweep`, and the profile leaves it out.
    const attw = await run(
      process.execPath,
      [ATTW, tarball, '--profile', 'node16', '--format', 'json'],
      work,
    )
    expect(attw.stderr).toBe('')
    const { problems } = JSON.parse(attw.stdout) as {
      problems: Record<string, Array<{ resolutionKind?: string }>>
    }
    const found = Object.values(problems)
      .flat()
      .filter((problem) => problem.resolutionKind !== 'node10')
    expect(found).toEqual([])
    expect(attw.code).toBe(0)
  })
})

describe('the README on the npm page', () => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8')
  // Inline links and reference definitions.
  const links = [
    ...readme.matchAll(/\]\(([^)\s]+)\)/g),
    ...readme.matchAll(/^\[[^\]]+\]:\s*(\S+)/gm),
  ].map((match) => match[1] ?? '')

  it('links to absolute URLs or to its own headings only', () => {
    expect(links.length).toBeGreaterThan(10)
    const relative = links.filter((link) => !/^(https?:\/\/|#)/.test(link))
    expect(relative).toEqual([])
  })

  it("its anchors and its links to the repository's files exist", () => {
    const slugs = new Set([...readme.matchAll(/^#+ (.+)$/gm)].map((match) => slug(match[1] ?? '')))
    for (const link of links.filter((l) => l.startsWith('#'))) {
      expect(slugs, link).toContain(link.slice(1))
    }
    const blob = `${REPOSITORY}/blob/main/`
    for (const link of links.filter((l) => l.startsWith(blob))) {
      const [file = '', anchor] = link.slice(blob.length).split('#')
      expect(existsSync(path.join(ROOT, file)), link).toBe(true)
      if (anchor) {
        const text = readFileSync(path.join(ROOT, file), 'utf8')
        const anchors = [...text.matchAll(/^#+ (.+)$/gm)].map((match) => slug(match[1] ?? ''))
        expect(anchors, link).toContain(anchor)
      }
    }
  })
})

/** GitHub's (and npm's) anchor of a heading. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-')
}

const ESM_CONSUMER = `
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import fastifyTus, {
  DEFAULT_ID_PATTERN,
  EVENTS,
  type FastifyTusOptions,
  fastifyTus as named,
  LockTimeoutError,
  type RedisClient,
  type SweepReport,
  type TusCleanupDecorator,
  type Upload,
} from 'fastify-tus'
import {
  ActivityLocker,
  ExpiringFileStore,
  RedisLocker,
  type RedisLockerOptions,
  RedisSweepLease,
  type SweepOptions,
  sweepDirectory,
} from 'fastify-tus/sweep'

const client: RedisClient = new Redis({ lazyConnect: true })
const app = Fastify()
const options: FastifyTusOptions = { directory: './uploads', expireAfterMs: 60_000, idPattern: DEFAULT_ID_PATTERN }
await app.register(fastifyTus, options)
await app.register(named, { prefix: '/b', redis: { client: new Redis({ lazyConnect: true }) } })
// @ts-expect-error a string is not a number of milliseconds
await app.register(fastifyTus, { expireAfterMs: '10m' })
const cleanup: TusCleanupDecorator = app.tusCleanup
const report: SweepReport = await cleanup.run({ dryRun: true })
app.tus.on(EVENTS.POST_FINISH, (_req, _res, upload: Upload) => upload.id)
const timeout: LockTimeoutError = new LockTimeoutError('id', 1000)

const lockerOptions: RedisLockerOptions = { client, prefix: 'uploads:', lockTtlMs: 5000 }
const locker: RedisLocker = new RedisLocker(lockerOptions)
await locker.newLock('id').lock(new AbortController().signal, () => {})
const held = await locker.tryLock('id')
await held?.unlock()
await locker.close()
const lease = new RedisSweepLease({ client, prefix: 'uploads:', intervalMs: 1000, ttlMs: 1000 })
await (await lease.acquire())?.release()
const sweep: SweepOptions = { directory: './uploads', expireAfterMs: 1000, locker: new ActivityLocker(locker) }
const swept: SweepReport = await sweepDirectory(sweep)
const store = await ExpiringFileStore.open({ directory: './uploads', expireAfterMs: 1000 })
export { report, timeout, swept, store }
`

const CJS_CONSUMER = `
import Fastify = require('fastify')
import fastifyTus = require('fastify-tus')
import sweep = require('fastify-tus/sweep')
import { Redis } from 'ioredis'

const app = Fastify()
app.register(fastifyTus, { directory: './uploads', redis: { client: new Redis({ lazyConnect: true }) } })
app.register(fastifyTus.default, { path: '/a' })
app.register(fastifyTus.fastifyTus, { path: '/b' })
// @ts-expect-error a string is not a number of milliseconds
app.register(fastifyTus, { expireAfterMs: '10m' })
const options: fastifyTus.FastifyTusOptions = { expireAfterMs: 1000 }
const run: Promise<fastifyTus.SweepReport> = app.tusCleanup.run()
const error: fastifyTus.LockTimeoutError = new fastifyTus.LockTimeoutError('id', 1000)
const closed = new fastifyTus.ClosedError()
const pattern: RegExp = fastifyTus.DEFAULT_ID_PATTERN
const event: string = fastifyTus.EVENTS.POST_FINISH

const locker: sweep.RedisLocker = new sweep.RedisLocker({ client: new Redis({ lazyConnect: true }) })
const report: Promise<sweep.SweepReport> = sweep.sweepDirectory({ directory: '.', expireAfterMs: 1 })

// The CommonJS types hold every value the ES module's types export, with the same types.
type Esm = typeof import('fastify-tus', { with: { 'resolution-mode': 'import' } })
const same: Esm = fastifyTus
type EsmSweep = typeof import('fastify-tus/sweep', { with: { 'resolution-mode': 'import' } })
const sameSweep: EsmSweep = sweep
export = { options, run, error, closed, pattern, event, locker, report, same, sameSweep }
`

/**
 * An app that declares its namespaces: each is a Server (and a cleanup decorator), a typo and the
 * Server's members on the object of namespaces are errors, the README's owner check reads its
 * namespace's Server. Also written as a CommonJS file (the imports replaced).
 */
const NAMESPACED_CONSUMER = `
import Fastify from 'fastify'
import fastifyTus, { fastifyRequestOf } from 'fastify-tus'

declare module 'fastify-tus' {
  interface FastifyTusNamespaces {
    videos: true
    avatars: true
  }
}

const app = Fastify()
app.register(fastifyTus, {
  namespace: 'videos',
  path: '/videos',
  tus: {
    onIncomingRequest: async (req, id) => {
      const { metadata } = await app.tus.videos.datastore.getUpload(id)
      if (metadata?.owner !== fastifyRequestOf(req)?.id) throw { status_code: 403 }
    },
  },
})
app.register(fastifyTus, { namespace: 'avatars', path: '/avatars' })
const run: Promise<{ removed: number }> = app.tusCleanup.avatars.run()
const handle: (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => Promise<void> = app.tus.avatars.handle
// @ts-expect-error a namespace not declared
app.tus.vidoes
// @ts-expect-error the object of namespaces is not a Server
app.tus.datastore
// @ts-expect-error nor a cleanup decorator
app.tusCleanup.run()
export { run, handle }
`

/** `node esm/serve.js -- <directory> <redis url> <key prefix>`: prints what an OPTIONS on the route answers. */
const ESM_SERVE = `
import Fastify from 'fastify'
import fastifyTus from 'fastify-tus'
import { RedisLocker } from 'fastify-tus/sweep'
import { Redis } from 'ioredis'

const [directory, redisUrl, prefix] = process.argv.slice(process.argv.indexOf('--') + 1)
const client = new Redis(redisUrl)
const app = Fastify()
await app.register(fastifyTus, { directory, redis: { client, prefix } })
const origin = await app.listen({ host: '127.0.0.1', port: 0 })
const res = await fetch(origin + '/files', { method: 'OPTIONS' })
await app.close()
client.disconnect()
if (typeof RedisLocker !== 'function') throw new Error('no RedisLocker')
console.log(JSON.stringify({ status: res.status, tusVersion: res.headers.get('tus-version') }))
`

/** `node esm/metrics.js -- <directory>`: `metrics: true` without prom-client, then without metrics. */
const ESM_METRICS_WITHOUT_PROM_CLIENT = `
import Fastify from 'fastify'
import fastifyTus from 'fastify-tus'

const [directory] = process.argv.slice(process.argv.indexOf('--') + 1)
let refused
const broken = Fastify()
try {
  await broken.register(fastifyTus, { directory, metrics: true })
} catch (error) {
  refused = error
}
await broken.close()
const app = Fastify()
await app.register(fastifyTus, { directory })
const origin = await app.listen({ host: '127.0.0.1', port: 0 })
const res = await fetch(origin + '/files', { method: 'OPTIONS' })
await app.close()
console.log(JSON.stringify({ code: refused?.code, message: refused?.message, withoutMetrics: res.status }))
`

const CJS_SERVE = `
const assert = require('node:assert/strict')
const Fastify = require('fastify')
const { Redis } = require('ioredis')
const fastifyTus = require('fastify-tus')
const sweep = require('fastify-tus/sweep')

async function main() {
  const [directory, redisUrl, prefix] = process.argv.slice(process.argv.indexOf('--') + 1)
  // The plugin itself, with every export of the ES module on it, the very same objects.
  assert.equal(typeof fastifyTus, 'function')
  assert.equal(fastifyTus.default, fastifyTus)
  assert.equal(fastifyTus.fastifyTus, fastifyTus)
  const esm = await import('fastify-tus')
  for (const [name, value] of Object.entries(esm)) assert.equal(fastifyTus[name], value, name)
  const esmSweep = await import('fastify-tus/sweep')
  for (const [name, value] of Object.entries(esmSweep)) assert.equal(sweep[name], value, name)

  const client = new Redis(redisUrl)
  const locker = new sweep.RedisLocker({ client, prefix })
  const held = await locker.tryLock('upload-' + process.pid)
  await held.unlock()
  await locker.close()

  const app = Fastify()
  await app.register(fastifyTus, { directory })
  const origin = await app.listen({ host: '127.0.0.1', port: 0 })
  const res = await fetch(origin + '/files', { method: 'OPTIONS' })
  await app.close()
  client.disconnect()
  const tusVersion = res.headers.get('tus-version')
  console.log(JSON.stringify({ status: res.status, tusVersion, locked: held !== undefined }))
}
main().catch((error) => {
  console.error(error)
  process.exit(1)
})
`
