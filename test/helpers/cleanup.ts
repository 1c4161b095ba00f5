/**
 * What a test leaves behind (servers, directories), undone after it. One stack for every helper
 * module, so that the newest goes first: a server started on a directory closes (it may still
 * sweep) before that directory is removed.
 */
import { afterEach } from 'vitest'

const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.()
})

/** Runs `cleanup` after the current test, before anything pushed earlier. */
export function afterTest(cleanup: () => Promise<unknown>): void {
  cleanups.push(cleanup)
}
