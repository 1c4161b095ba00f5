/**
 * The operator CLI (`fastify-tus sweep`), run as the built program against real directories:
 * stores made by the plugin through real tus uploads, foreign directories it must refuse, a
 * server writing to the same directory. (Signals, and stores of hundreds of uploads:
 * large-store.test.ts.)
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'
import { Redis } from 'ioredis'
import { describe, expect, it, onTestFinished } from 'vitest'
import { checkStore } from '../src/cli/store-check.js'
import { CLI, cli } from './helpers/cli.js'
import { pattern, randomId, sha256Of } from './helpers/data.js'
import {
  age,
  exists,
  listing,
  pair,
  sha256,
  tempDir,
  writeSession,
  writeSessions,
} from './helpers/fs.js'
import { request } from './helpers/http.js'
import { REDIS_URL } from './helpers/redis.js'
import { startServer } from './helpers/server.js'
import { createUpload, patch, slowPatch, tusUpload } from './helpers/tus-client.js'
import { signal, waitFor } from './helpers/wait.js'

const HOUR = 3_600_000
const DEFAULT = /^[0-9a-f]{32}$/

const idOf = (url: string) => url.slice(url.lastIndexOf('/') + 1)

/**
 * A store made by the plugin through real uploads, the server closed afterwards:
 * - `finished`: a whole upload with tus-js-client, last written 2 h ago;
 * - `expired`: 100 of 1000 bytes, idle 2 h; `deferred`: a deferred length, idle 2 h;
 * - `fresh`: 100 of 1000 bytes, just written;
 * - `orphanData`: a data file whose record is gone, 2 h old;
 * - `orphanMeta`: a record whose data file is gone, 2 h old.
 */
async function realStore() {
  const server = await startServer({ expireAfterMs: 3 * HOUR, cleanupOnStart: false })
  const dir = server.directory
  const body = pattern(200_000, 7)
  const finished = idOf(await tusUpload(server.endpoint, body))
  const expired = await createUpload(server.endpoint, 1000)
  expect((await patch(expired.url, 0, pattern(100))).status).toBe(204)
  const deferred = await createUpload(server.endpoint, 'deferred')
  const fresh = await createUpload(server.endpoint, 1000)
  expect((await patch(fresh.url, 0, pattern(100))).status).toBe(204)
  const orphanData = await createUpload(server.endpoint, 1000)
  const orphanMeta = await createUpload(server.endpoint, 1000)
  await server.app.close()

  await fs.rm(path.join(dir, `${orphanData.id}.json`))
  await fs.rm(path.join(dir, orphanMeta.id))
  for (const id of [finished, expired.id, deferred.id]) {
    for (const file of pair(id)) await age(path.join(dir, file), 2 * HOUR)
  }
  await age(path.join(dir, orphanData.id), 2 * HOUR)
  await age(path.join(dir, `${orphanMeta.id}.json`), 2 * HOUR)
  return {
    dir,
    body,
    finished,
    expired: expired.id,
    deferred: deferred.id,
    fresh: fresh.id,
    orphanData: orphanData.id,
    orphanMeta: orphanMeta.id,
  }
}

describe('fastify-tus sweep on a store made by the plugin', () => {
  it('lists the partial uploads of an abandoned parallel upload with their kind, and keeps the final of another', async () => {
    const server = await startServer({ expireAfterMs: 3 * HOUR, cleanupOnStart: false })
    const dir = server.directory
    const partials: string[] = []
    for (const part of ['ab', 'cd']) {
      const { url, id } = await createUpload(server.endpoint, 2, { 'Upload-Concat': 'partial' })
      expect((await patch(url, 0, Buffer.from(part))).status).toBe(204)
      partials.push(id)
    }
    const used = await createUpload(server.endpoint, 2, { 'Upload-Concat': 'partial' })
    expect((await patch(used.url, 0, Buffer.from('ef'))).status).toBe(204)
    const final = await request(server.endpoint, 'POST', {
      'Tus-Resumable': '1.0.0',
      'Upload-Concat': `final;${used.url}`,
    })
    expect(final.status).toBe(201)
    const finalId = idOf(String(final.headers.location))
    await server.app.close()
    for (const id of [...partials, finalId]) {
      for (const file of pair(id)) await age(path.join(dir, file), 4 * HOUR)
    }
    const { code, stdout, stderr } = await cli([
      'sweep',
      '--dir',
      dir,
      '--expire-after',
      '1h',
      // Finished partials wait for their final: a day by default, 3 hours here.
      '--partial-hold',
      '3h',
      '--dry-run',
    ])
    expect(code, stderr).toBe(0)
    for (const id of partials) expect(stdout).toMatch(new RegExp(`${id}\\s+partial\\s`))
    expect(stdout).not.toContain(finalId)
    expect(stdout).toMatch(/would remove 2 \(0 orphans, 2 partial uploads\)/)
    // The used partial's record stays beside the final (for a retried final creation).
    const kept = [...pair(finalId), ...partials.flatMap(pair), `${used.id}.json`]
    expect(await listing(dir)).toEqual(kept.sort())
    // Within the default hold, the finished partials are kept.
    const held = await cli(['sweep', '--dir', dir, '--expire-after', '1h', '--dry-run'])
    expect(held.stdout).toMatch(/would remove 0 /)
  })

  it('--dry-run --json lists what would be removed and removes nothing', async () => {
    const store = await realStore()
    const before = await listing(store.dir)
    const { code, stdout, stderr } = await cli([
      'sweep',
      '--dir',
      store.dir,
      '--expire-after',
      '1h',
      '--dry-run',
      '--json',
    ])
    expect(code, stderr).toBe(0)
    const result = JSON.parse(stdout) // exactly one JSON document
    expect(result.directory).toBe(store.dir)
    expect(result.expireAfterMs).toBe(HOUR)
    expect(result.report).toMatchObject({
      dryRun: true,
      scanned: 6,
      removed: 4,
      orphans: 2,
      errors: 0,
      aborted: false,
    })
    const removed = result.removed.map((r: { id: string; kind: string }) => [r.id, r.kind])
    expect(removed).toEqual(
      [
        [store.expired, 'upload'],
        [store.deferred, 'upload'],
        [store.orphanData, 'orphan-data'],
        [store.orphanMeta, 'orphan-metadata'],
      ].sort((a, b) => ((a[0] as string) < (b[0] as string) ? -1 : 1)),
    )
    const expired = result.removed.find((r: { id: string }) => r.id === store.expired)
    expect(expired.bytes).toBeGreaterThan(100) // data and record
    expect(expired.idleMs).toBeGreaterThanOrEqual(2 * HOUR)
    expect(new Date(expired.lastActivity).getTime()).toBeLessThan(Date.now() - 2 * HOUR + 60_000)
    expect(await listing(store.dir)).toEqual(before)
  })

  it('--log json writes pino records, one per removal and one for the sweep, with the fields of a server sweep record', async () => {
    const store = await realStore()
    // The same store, swept by a server: its sweep record is what the CLI's must look like.
    const copy = await tempDir()
    await fs.cp(store.dir, copy, { recursive: true, preserveTimestamps: true })
    const server = await startServer({
      directory: copy,
      expireAfterMs: HOUR,
      cleanupOnStart: false,
    })
    await server.app.tusCleanup.run()
    const serverRecord = server.logs.find((r) =>
      /^removed \d+ expired uploads$/.test(String(r.msg)),
    )
    expect(serverRecord).toBeDefined()

    const { code, stdout, stderr } = await cli([
      'sweep',
      '--dir',
      store.dir,
      '--expire-after',
      '1h',
      '--log',
      'json',
    ])
    expect(code, stderr).toBe(0)
    expect(stderr).toBe('')
    const records = stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>)
    for (const record of records) {
      expect(record).toMatchObject({ plugin: 'fastify-tus', pid: expect.any(Number) })
      expect(typeof record.time).toBe('number')
    }
    const removals = records.filter((r) => r.msg === 'fastify-tus: removed')
    expect(removals.map((r) => r.id).sort()).toEqual(
      [store.expired, store.deferred, store.orphanData, store.orphanMeta].sort(),
    )
    expect(removals.every((r) => r.level === 30 && typeof r.bytes === 'number')).toBe(true)
    const summary = records.at(-1) as Record<string, unknown>
    expect(summary).toMatchObject({
      level: 30,
      msg: 'removed 4 expired uploads',
      removed: 4,
      orphans: 2,
      errors: 0,
    })
    // Every field of the server's record but those that name the server (endpoint).
    const fields = (r: object) =>
      Object.keys(r)
        .filter((k) => !['time', 'pid', 'hostname', 'endpoint', 'reqId'].includes(k))
        .sort()
    expect(fields(summary)).toEqual(fields(serverRecord as object))
    expect(summary.removed).toBe((serverRecord as Record<string, unknown>).removed)
  })

  it('removes exactly the expired unfinished uploads and the old orphans', async () => {
    const store = await realStore()
    const { code, stdout, stderr } = await cli([
      'sweep',
      '--dir',
      store.dir,
      '--expire-after',
      '3600000ms',
      '--json',
    ])
    expect(code, stderr).toBe(0)
    const { report } = JSON.parse(stdout)
    expect(report).toMatchObject({ dryRun: false, removed: 4, orphans: 2, errors: 0 })
    expect(await listing(store.dir)).toEqual([...pair(store.finished), ...pair(store.fresh)].sort())
    expect(await sha256(path.join(store.dir, store.finished))).toBe(sha256Of(store.body))
  })

  it('prints a table of the removals and a summary line', async () => {
    const store = await realStore()
    const { code, stdout } = await cli(['sweep', '--dir', store.dir, '--expire-after', '90m'])
    expect(code).toBe(0)
    const lines = stdout.trimEnd().split('\n')
    const header = lines[0] ?? ''
    expect(header).toMatch(/^ID +KIND +SIZE +IDLE$/)
    const row = (id: string) => lines.find((l) => l.startsWith(id)) ?? ''
    // Aligned columns: kinds start under KIND, idle times under IDLE, sizes end under SIZE.
    const at = (column: string) => header.indexOf(column)
    for (const id of [store.expired, store.orphanData, store.orphanMeta]) {
      expect(row(id).slice(at('KIND'))).toMatch(/^(upload|orphan-)/)
      expect(row(id).slice(at('IDLE'))).toBe('2h')
      expect(row(id).slice(at('SIZE'), at('SIZE') + 4)).toMatch(/ B$/)
    }
    expect(row(store.expired)).toMatch(/ upload +\d+ B {2}2h$/)
    expect(row(store.deferred)).toMatch(/ upload +\d+ B {2}2h$/)
    expect(row(store.orphanData)).toMatch(/ orphan-data +0 B {2}2h$/)
    expect(row(store.orphanMeta)).toMatch(/ orphan-metadata +\d+ B {2}2h$/)
    expect(row(store.finished)).toBe('')
    expect(row(store.fresh)).toBe('')
    expect(lines.at(-1)).toMatch(
      /^scanned 6, removed 4 \(2 orphans\), freed \d+ B, errors 0, skipped busy 0, \d+ ms$/,
    )

    const again = await cli(['sweep', '--dir', store.dir, '--expire-after', '1h', '--dry-run'])
    expect(again.code).toBe(0)
    expect(again.stdout).toMatch(
      /^scanned 2, would remove 0 \(0 orphans\), would free 0 B, errors 0, skipped busy 0, \d+ ms \(dry run: nothing removed\)\n$/,
    )
  })

  it('shows sizes in binary units', async () => {
    const dir = await tempDir()
    await writeSession(dir, randomId(), {
      size: 10 * 2 ** 20,
      bytes: 1.5 * 2 ** 20,
      ageMs: 2 * HOUR,
    })
    const { stdout } = await cli(['sweep', '--dir', dir, '--expire-after', '1h', '--dry-run'])
    expect(stdout).toMatch(/ upload {2}1\.5 MiB {2}2h\n/)
    expect(stdout).toMatch(/would free 1\.5 MiB/)
  })

  it('exits 1 and names the entry when an entry fails, and still removes the others', async () => {
    const store = await realStore()
    const corrupt = randomId()
    await fs.writeFile(path.join(store.dir, corrupt), 'data')
    // JSON, but not a record the store writes: an error, never removed on a guess.
    await fs.writeFile(
      path.join(store.dir, `${corrupt}.json`),
      JSON.stringify({ id: corrupt, size: 'big' }),
    )
    await age(path.join(store.dir, corrupt), 2 * HOUR)
    const { code, stdout, stderr } = await cli([
      'sweep',
      '--dir',
      store.dir,
      '--expire-after',
      '1h',
      '--json',
    ])
    expect(code).toBe(1)
    expect(JSON.parse(stdout).report).toMatchObject({ removed: 4, errors: 1 })
    expect(stderr).toMatch(new RegExp(`sweep entry failed: ${corrupt}: .*invalid size`))
    expect(await listing(store.dir)).toEqual(
      [...pair(store.finished), ...pair(store.fresh), ...pair(corrupt)].sort(),
    )
  })

  it('sweeps an empty directory: nothing to do', async () => {
    const dir = await tempDir()
    const { code, stdout } = await cli(['sweep', '--dir', dir, '--expire-after', '10m'])
    expect(code).toBe(0)
    expect(stdout).toMatch(/^scanned 0, removed 0 /)
  })

  it('sweeps nested ids once --id-pattern names them', async () => {
    const server = await startServer({
      cleanupOnStart: false,
      tus: { namingFunction: () => `alice/${randomId()}` },
    })
    const dir = server.directory
    const old = await createUpload(server.endpoint, 1000)
    const kept = await createUpload(server.endpoint, 1000)
    await server.app.close()
    // The Location of a nested id is `/files/alice/<hex>`.
    const nestedId = (url: string) =>
      decodeURIComponent(new URL(url).pathname.slice('/files/'.length))
    const id = nestedId(old.url)
    const keptId = nestedId(kept.url)
    expect(id).toMatch(/^alice\/[0-9a-f]{32}$/)
    for (const file of pair(id)) await age(path.join(dir, file), 2 * HOUR)

    const refused = await cli(['sweep', '--dir', dir, '--expire-after', '1h'])
    expect(refused.code).toBe(2)
    expect(refused.stderr).toContain(`${id}.json`)
    expect(refused.stderr).toContain('pass --id-pattern')

    const { code, stdout } = await cli([
      'sweep',
      '--dir',
      dir,
      '--expire-after',
      '1h',
      '--id-pattern',
      '^[a-z]+/[0-9a-f]{32}$',
      '--json',
    ])
    expect(code).toBe(0)
    expect(JSON.parse(stdout).report.ids).toEqual([id])
    expect(await listing(dir)).toEqual(pair(keptId))
  })
})

describe('what the CLI refuses', () => {
  async function refused(args: string[], env: Record<string, string> = {}) {
    const result = await cli(args, env)
    expect(result.code).toBe(2)
    expect(result.stdout).toBe('')
    return result.stderr
  }

  it('refuses a missing path, a file, and says so', async () => {
    const dir = await tempDir()
    const missing = path.join(dir, 'nope')
    expect(await refused(['sweep', '--dir', missing, '--expire-after', '10m'])).toBe(
      `fastify-tus: refusing to sweep: ${missing} does not exist\n`,
    )
    const file = path.join(dir, 'file.bin')
    await fs.writeFile(file, 'x')
    expect(await refused(['sweep', '--dir', file, '--expire-after', '10m'])).toBe(
      `fastify-tus: refusing to sweep: ${file} is not a directory\n`,
    )
  })

  it('refuses a directory of foreign files, naming them, and touches nothing', async () => {
    const dir = await tempDir()
    const old = randomId() // an upload-like pair among foreign files: still refused
    await writeSession(dir, old, { size: 10, bytes: 1, ageMs: 2 * HOUR })
    for (const name of ['notes.txt', 'photo.jpg', 'a.md', 'b.md', 'c.md', 'd.md']) {
      await fs.writeFile(path.join(dir, name), 'mine')
    }
    const before = await listing(dir)
    const stderr = await refused(['sweep', '--dir', dir, '--expire-after', '1h'])
    expect(stderr).toMatch(
      /does not look like a tus file store: 6 entries not named like an upload .* and 1 more\./,
    )
    expect(stderr).toMatch(/notes\.txt|photo\.jpg/)
    expect(await listing(dir)).toEqual(before)
  })

  it('refuses the home directory', async () => {
    const home = await tempDir()
    await fs.writeFile(path.join(home, '.bashrc'), '')
    expect(await refused(['sweep', '--dir', home, '--expire-after', '1h'], { HOME: home })).toBe(
      `fastify-tus: refusing to sweep: ${home} is the home directory\n`,
    )
  })

  it('refuses hash-named files without any tus record beside them', async () => {
    const dir = await tempDir()
    const cache = randomId()
    await fs.writeFile(path.join(dir, cache), 'cached')
    await age(path.join(dir, cache), 2 * HOUR)
    const stderr = await refused(['sweep', '--dir', dir, '--expire-after', '1h'])
    expect(stderr).toMatch(/1 file named like upload ids but no <id>\.json upload record/)
    expect(await exists(path.join(dir, cache))).toBe(true)

    // <hash>.json files that are some other program's JSON, not tus records.
    await fs.writeFile(path.join(dir, `${cache}.json`), '{"etag": "x"}')
    expect(await refused(['sweep', '--dir', dir, '--expire-after', '1h'])).toMatch(
      /none of the 1 <id>\.json files read is a tus upload record/,
    )
    expect(await listing(dir)).toEqual(pair(cache))
  })

  it.each([
    [
      ['sweep', '--dir', '.', '--expire-after', 'abc'],
      /--expire-after must be a positive duration .*got "abc"/,
    ],
    [
      ['sweep', '--dir', '.', '--expire-after', '0ms'],
      /--expire-after must be a positive duration .*got "0ms"/,
    ],
    [
      // 10 ms to the `ms` library, which would remove every live upload
      ['sweep', '--dir', '.', '--expire-after', '10'],
      /--expire-after needs a unit \(ms, s, m, h, d\).*got "10"/,
    ],
    [
      ['sweep', '--dir', '.', '--expire-after=-5m'],
      /--expire-after must be a positive duration .*got "-5m"/,
    ],
    [['sweep', '--dir', '.', '--expire-after', '-5m'], /'--expire-after' argument is ambiguous/],
    [
      ['sweep', '--dir', '.', '--expire-after', '1h', '--force'],
      /^fastify-tus: unknown flag --force\n/,
    ],
    [['sweep', '--expire-after', '1h', '--dir'], /^fastify-tus: --dir needs a value\n/],
    [['sweep', '--dir', '.', '--expire-after', '1h', '--dry-run=yes'], /--dry-run takes no value/],
    [
      ['sweep', '--dir', '.', '--expire-after', '1h', '--log', 'xml'],
      /--log must be text or json, got "xml"/,
    ],
    [
      ['sweep', '--dir', '.', '--expire-after', '1h', '--json', '--log', 'json'],
      /--json and --log json both write to stdout/,
    ],
    [['sweep', '--expire-after', '1h'], /--dir <path> is required/],
    [['sweep', '--dir', '.'], /--expire-after <duration> is required/],
    [['--dir', '.', '--expire-after', '1h'], /missing command: sweep or list/],
    [['clean', '--dir', '.', '--expire-after', '1h'], /unknown command: clean/],
    [
      ['sweep', '--dir', '.', '--expire-after', '1h', '--id-pattern', '(['],
      /--id-pattern is not a valid regular expression/,
    ],
  ])('exits 2 on a usage error: %j', async (args, message) => {
    const stderr = await refused(args)
    expect(stderr).toMatch(message)
    expect(stderr).toMatch(/Run fastify-tus --help for usage\.\n$/)
  })

  it('matches --id-pattern against whole names: a user file that contains an id is never removed', async () => {
    const dir = await tempDir()
    await writeSessions(dir, [randomId(), randomId(), randomId()], {
      size: 10,
      bytes: 1,
      ageMs: 2 * HOUR,
    })
    const userFile = path.join(dir, `report-${randomId()}.pdf`)
    await fs.writeFile(userFile, "a user's report")
    await age(userFile, 2 * HOUR)
    const { code, stderr } = await cli([
      'sweep',
      '--dir',
      dir,
      '--expire-after',
      '1h',
      '--id-pattern',
      '[0-9a-f]{32}',
    ])
    // Not named like an upload: the directory is refused, and the file stays.
    expect(code).toBe(2)
    expect(stderr).toContain(path.basename(userFile))
    expect(await fs.readFile(userFile, 'utf8')).toBe("a user's report")
  })
})

describe('--log json for everything it says', () => {
  const records = (stdout: string) =>
    stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>)

  it('writes a refusal, an unreachable Redis and a failing entry as pino records on stdout, nothing on stderr', async () => {
    const dir = await tempDir()
    const missing = path.join(dir, 'nope')
    const refused = await cli(['sweep', '--dir', missing, '--expire-after', '1h', '--log', 'json'])
    expect(refused).toMatchObject({ code: 2, stderr: '' })
    expect(records(refused.stdout)).toMatchObject([
      {
        level: 50,
        plugin: 'fastify-tus',
        msg: 'fastify-tus: refusing to sweep',
        directory: missing,
        reason: `${missing} does not exist`,
      },
    ])

    const unreachable = await cli([
      'sweep',
      '--dir',
      dir,
      '--expire-after',
      '1h',
      '--redis-url',
      'redis://127.0.0.1:1',
      '--log',
      'json',
    ])
    expect(unreachable).toMatchObject({ code: 1, stderr: '' })
    expect(records(unreachable.stdout)).toMatchObject([
      {
        level: 50,
        msg: 'fastify-tus: cannot reach Redis',
        err: {
          message: expect.stringMatching(/^cannot reach Redis at redis:\/\/127\.0\.0\.1:1: /),
        },
      },
    ])

    await writeSession(dir, randomId(), { size: 10, bytes: 1 })
    const corrupt = randomId()
    await fs.writeFile(path.join(dir, corrupt), 'data')
    await fs.writeFile(
      path.join(dir, `${corrupt}.json`),
      JSON.stringify({ id: corrupt, size: 'big' }),
    )
    await age(path.join(dir, corrupt), 2 * HOUR)
    const failing = await cli(['sweep', '--dir', dir, '--expire-after', '1h', '--log', 'json'])
    expect(failing).toMatchObject({ code: 1, stderr: '' })
    const lines = records(failing.stdout)
    expect(lines[0]).toMatchObject({ level: 30, msg: 'fastify-tus: sweeping', directory: dir })
    expect(lines.filter((r) => r.level === 40)).toMatchObject([
      {
        id: corrupt,
        msg: 'fastify-tus sweep: sweep entry failed',
        err: { message: expect.stringMatching(/invalid size/) },
      },
    ])
    expect(lines.at(-1)).toMatchObject({ msg: 'no expired uploads to remove', errors: 1 })
  })
})

describe('help and version', () => {
  it('--help explains the options and what the operator must ensure without a shared lock', async () => {
    const { code, stdout } = await cli(['--help'])
    expect(code).toBe(0)
    for (const flag of ['--dir', '--expire-after', '--id-pattern', '--dry-run', '--json']) {
      expect(stdout).toContain(flag)
    }
    expect(stdout).toContain('no shorter than theirs')
    expect(stdout).toContain('refuses a directory that a server serves without Redis')
    // A namespaced registration's prefix, which the sweep must be given to share its locks.
    expect(stdout).toContain('fastify-tus:<namespace>:')
    expect((await cli(['sweep', '-h'])).stdout).toBe(stdout)
  })

  it('--version prints the package version', async () => {
    const pkg = JSON.parse(await fs.readFile('package.json', 'utf8'))
    expect(await cli(['--version'])).toMatchObject({ code: 0, stdout: `${pkg.version}\n` })
    // The built program, as npm's bin runs it.
    const built = await cli(['--version'], {}, { process: true })
    expect(built).toMatchObject({ code: 0, stdout: `${pkg.version}\n` })
  })

  it('the built file runs as a program (npm links the bin to it; npx runs it in a checkout)', async () => {
    expect((await fs.readFile(CLI, 'utf8')).startsWith('#!/usr/bin/env node\n')).toBe(true)
    const pkg = JSON.parse(await fs.readFile('package.json', 'utf8'))
    expect(path.resolve(pkg.bin['fastify-tus'])).toBe(CLI)
    // Executable as built, not only once npm installs it: `npm run build` sets its run bit.
    const ran = await new Promise<{ code: number | null; stdout: string }>((resolve, reject) => {
      const child = spawn(CLI, ['--version'], { stdio: ['ignore', 'pipe', 'inherit'] })
      let stdout = ''
      child.stdout.on('data', (c) => {
        stdout += c
      })
      child.on('error', reject)
      child.on('close', (code) => resolve({ code, stdout }))
    })
    expect(ran).toEqual({ code: 0, stdout: `${pkg.version}\n` })
  })
})

describe('with a server on the same directory', () => {
  it("refuses to sweep a directory that a server without Redis serves (neither would see the other's locks), and sweeps it once the server is gone", async () => {
    const server = await startServer({ expireAfterMs: 3 * HOUR, cleanupOnStart: false })
    const dir = server.directory
    const abandoned = await createUpload(server.endpoint, 1000)
    for (const file of pair(abandoned.id)) await age(path.join(dir, file), 2 * HOUR)

    const refused = await cli(['sweep', '--dir', dir, '--expire-after', '1h'])
    expect(refused.code).toBe(2)
    expect(refused.stderr).toMatch(
      /refusing to sweep: directory \S+ is served by the endpoint `\/files` in process \d+ .*neither uses `redis`/,
    )
    expect(await listing(dir)).toEqual(pair(abandoned.id))
    // A dry run removes nothing, and is never refused.
    const dry = await cli(['sweep', '--dir', dir, '--expire-after', '1h', '--dry-run', '--json'])
    expect(dry.code, dry.stderr).toBe(0)
    expect(JSON.parse(dry.stdout).report.ids).toEqual([abandoned.id])

    await server.app.close()
    const swept = await cli(['sweep', '--dir', dir, '--expire-after', '1h', '--json'])
    expect(swept.code, swept.stderr).toBe(0)
    expect(JSON.parse(swept.stdout).report.ids).toEqual([abandoned.id])
    expect(await listing(dir)).toEqual([])
  })

  it('with --redis-url, skips an upload whose lock a server holds, even through a stalled PATCH', async () => {
    const prefix = `cli-test:${randomId()}:`
    const client = new Redis(REDIS_URL)
    onTestFinished(() => void client.disconnect())
    const server = await startServer({
      expireAfterMs: 3 * HOUR,
      cleanupOnStart: false,
      redis: { client, prefix },
    })
    const dir = server.directory
    const abandoned = await createUpload(server.endpoint, 1000)
    const stalled = await createUpload(server.endpoint, 1000)
    for (const id of [abandoned.id, stalled.id]) {
      for (const file of pair(id)) await age(path.join(dir, file), 2 * HOUR)
    }
    // A PATCH that holds the upload's lock but sends its first byte only once the CLI is done
    // (or after 2 s): the data file stays 2 h old, so the CLI alone would take it for abandoned.
    const silence = Array.from({ length: 20 }, () => Buffer.alloc(0))
    const body = pattern(1000, 9)
    const swept = signal()
    onTestFinished(() => swept.resolve())
    const writing = slowPatch(stalled.url, 0, [...silence, body], 100, { until: swept.promise })
    await waitFor(() => client.exists(`${prefix}lock:${stalled.id}`), 2000, 'the lock')

    const { code, stdout, stderr } = await cli([
      'sweep',
      '--dir',
      dir,
      '--expire-after',
      '1s',
      '--redis-url',
      REDIS_URL,
      '--redis-prefix',
      prefix,
      '--json',
    ])
    expect(code, stderr).toBe(0)
    const { report } = JSON.parse(stdout)
    expect(report.ids).toEqual([abandoned.id])
    expect(report.skippedBusy).toBe(1)
    expect(await exists(path.join(dir, stalled.id))).toBe(true)
    swept.resolve()
    expect((await writing).status).toBe(204)
    expect(await sha256(path.join(dir, stalled.id))).toBe(sha256Of(body))
  })

  it('exits 1 naming the Redis it cannot reach', async () => {
    const dir = await tempDir()
    const { code, stderr } = await cli([
      'sweep',
      '--dir',
      dir,
      '--expire-after',
      '1h',
      '--redis-url',
      'redis://127.0.0.1:1',
    ])
    expect(code).toBe(1)
    expect(stderr).toMatch(/cannot reach Redis at redis:\/\/127\.0\.0\.1:1: .*ECONNREFUSED/)
  })
})

describe('checkStore', () => {
  it('accepts a store of unfinished uploads only, and one with orphans among uploads', async () => {
    const dir = await tempDir()
    await writeSession(dir, randomId(), { size: 10, bytes: 1 })
    expect(await checkStore(dir, { idPattern: DEFAULT })).toEqual({ ok: true })
    await fs.writeFile(path.join(dir, randomId()), 'orphan')
    await fs.writeFile(path.join(dir, `${randomId()}.json`), 'broken')
    await fs.mkdir(path.join(dir, '.fastify-tus-probe-x'))
    expect(await checkStore(dir, { idPattern: DEFAULT })).toEqual({ ok: true })
  })

  it('refuses symbolic links and records of another id', async () => {
    const dir = await tempDir()
    const id = randomId()
    await fs.writeFile(path.join(dir, `${id}.json`), JSON.stringify({ id: 'other', offset: 0 }))
    expect(await checkStore(dir, { idPattern: DEFAULT })).toMatchObject({
      ok: false,
      reason: expect.stringContaining(`its "id" is "other", not "${id}"`),
    })
    await writeSession(dir, randomId(), { size: 10, bytes: 1 })
    expect(await checkStore(dir, { idPattern: DEFAULT })).toEqual({ ok: true })
    await fs.symlink('/etc', path.join(dir, 'etc'))
    expect(await checkStore(dir, { idPattern: DEFAULT })).toMatchObject({
      ok: false,
      reason: expect.stringContaining('etc (link)'),
    })
  })

  it('reads a bounded number of entries and says when it saw no upload among them', async () => {
    const dir = await tempDir()
    for (let i = 0; i < 20; i++) await fs.mkdir(path.join(dir, `d${i}`))
    expect(await checkStore(dir, { idPattern: DEFAULT, maxEntries: 10 })).toEqual({
      ok: false,
      reason: `${dir} does not look like a tus file store: no upload among its first 10 entries.`,
    })
    expect(await checkStore(dir, { idPattern: DEFAULT })).toEqual({ ok: true }) // empty dirs
  })
})
