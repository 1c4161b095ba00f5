import { configDefaults, defineConfig } from 'vitest/config'

/**
 * Two tiers, one folder each. `vitest run` (what `npm test` runs) runs both; `npm run test:fast`
 * and `npm run test:e2e` run one.
 * - fast (test/, every test file outside test/e2e/): the plugin, the sweep and the CLI over real
 *   directories, real HTTP and Redis; no browser, no soak, no fleet, no demo program. Under
 *   30 s on a 2-core machine.
 * - e2e (test/e2e/): browsers, the demo page and the demo server's processes, the soak, the
 *   fleet, socket timeouts that only show over seconds, stores of thousands of uploads, the Redis
 *   tests that wait out real TTLs (both ioredis majors too) or stop and restart a Redis server,
 *   the packed package installed into a scratch application, the free-space floor on a tmpfs
 *   mounted for it (as root), and parallel uploads of tens of MiB (a crash mid-assembly among
 *   them), and S3Store on a real S3 API (a throwaway Ceph radosgw, or the server S3_ENDPOINT
 *   names).
 * A new test file goes to the tier of its folder: nothing to list here.
 */
export default defineConfig({
  test: {
    // Both tiers run the built package in child processes (the CLI, the demo server, the
    // exit-on-close checks): it is built once per run, whichever tiers run.
    globalSetup: ['test/global-setup.ts'],
    // `npm test` runs both tiers with --coverage and fails under the floor. Only what runs in
    // vitest's own processes counts, not what tests run from dist/ in child processes (the CLI,
    // the servers of the fleets and of the crash soak).
    coverage: {
      provider: 'v8',
      include: ['src/**/*.ts'],
      reporter: ['text-summary', 'json-summary', 'html'],
      // A point under what the whole suite (both tiers) reaches: paths that depend on timing
      // (a lock's wait, a client gone mid-body) are not taken in every run. Raise it when
      // coverage rises.
      thresholds: { lines: 94 },
    },
    projects: [
      {
        test: {
          name: 'fast',
          include: ['test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, 'test/e2e/**'],
          // Real servers, sockets and sweeps, with short configured periods.
          testTimeout: 15_000,
          hookTimeout: 15_000,
          pool: 'forks',
          // The files mostly wait (on timers, disks, child processes): two at a time even on two
          // cores, where Vitest's default would be one.
          maxWorkers: 2,
          // A whole run does this tier first, then the e2e one (which keeps Vitest's default
          // number of workers: browsers, fleets and soaks do not share cores well).
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          // The S3 tests' server: the one S3_ENDPOINT names, or a throwaway Ceph (radosgw).
          globalSetup: ['test/e2e/s3-global-setup.ts'],
          // Browsers, child processes and waits of seconds.
          testTimeout: 30_000,
          hookTimeout: 30_000,
          pool: 'forks',
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
})
