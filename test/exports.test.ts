/**
 * The package's public surface as a user imports it (by name, through the exports map, from the
 * built package): what each entry exports, and nothing more.
 */
import { spawnSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'

describe('the package exports', () => {
  it('the plugin, its errors and what hooks need from the main entry, and nothing else', async () => {
    const main = await import('fastify-tus')
    expect(Object.keys(main).sort()).toEqual([
      'AlreadyRegisteredError',
      'ClosedError',
      'DEFAULT_ID_PATTERN',
      'DirectoryError',
      'DirectoryInUseError',
      'EVENTS',
      'IncompatibleTusError',
      'InvalidOptionError',
      'InvalidUploadIdError',
      'LockQueueFullError',
      'LockTimeoutError',
      'LockUnavailableError',
      'MetricsUnavailableError',
      'S3CacheError',
      'default',
      'fastifyRequestOf',
      'fastifyTus',
    ])
    expect(main.default).toBe(main.fastifyTus)
    expect(main.EVENTS.POST_FINISH).toBe('POST_FINISH')
  })

  it('the building blocks from fastify-tus/sweep', async () => {
    const sweep = await import('fastify-tus/sweep')
    expect(Object.keys(sweep).sort()).toEqual([
      'ActivityLocker',
      'ExpiringFileStore',
      'RedisLocker',
      'RedisSweepLease',
      'sweepDirectory',
      'sweepS3Bucket',
    ])
  })

  it('require() gives the plugin itself with every export on it, the same objects as import', () => {
    // A child process: Node's own loaders, one module instance for both (no dual-package copy).
    const script = `
      import assert from 'node:assert/strict'
      import { createRequire } from 'node:module'
      const require = createRequire(import.meta.url)
      const cjs = require('fastify-tus')
      const esm = await import('fastify-tus')
      assert.equal(typeof cjs, 'function')
      assert.equal(cjs, esm.default)
      for (const name of Object.keys(esm)) assert.equal(cjs[name], esm[name], name)
      const sweep = require('fastify-tus/sweep')
      const esmSweep = await import('fastify-tus/sweep')
      assert.deepEqual(Object.keys(sweep).sort(), Object.keys(esmSweep).sort())
      for (const name of Object.keys(esmSweep)) assert.equal(sweep[name], esmSweep[name], name)
    `
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
    })
    expect(run.stderr.replace(/.*ExperimentalWarning.*\n|.*--trace-warnings.*\n/g, '')).toBe('')
    expect(run.status).toBe(0)
  })

  it('no deep imports: Node refuses files outside the exports map', () => {
    const run = spawnSync(
      process.execPath,
      ['--input-type=module', '-e', "await import('fastify-tus/dist/src/plugin.js')"],
      { encoding: 'utf8' },
    )
    expect(run.status).not.toBe(0)
    expect(run.stderr).toContain('ERR_PACKAGE_PATH_NOT_EXPORTED')
  })
})
