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
      'ClosedError',
      'DEFAULT_ID_PATTERN',
      'DirectoryError',
      'EVENTS',
      'IncompatibleTusError',
      'InvalidOptionError',
      'LockTimeoutError',
      'LockUnavailableError',
      'MetricsUnavailableError',
      'default',
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
    ])
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
