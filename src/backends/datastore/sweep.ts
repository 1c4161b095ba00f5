/**
 * The sweep for a datastore the user passed (S3Store, GCSStore, ...): that store's own
 * `deleteExpired()`, contained so that a store that throws, synchronously or not, only fails
 * this sweep. Such stores expire by their own rules; see the README.
 */
import type { DataStore } from '@tus/utils'
import { InvalidOptionError } from '../../errors.js'
import { newReport, type SweepReport } from '../../sweep/report.js'

export async function sweepDatastore(store: DataStore, dryRun: boolean): Promise<SweepReport> {
  if (dryRun) {
    throw new InvalidOptionError(
      'dryRun',
      'is only supported by the built-in file store; this datastore can only delete',
    )
  }
  const report = newReport(false)
  const started = performance.now()
  // Called inside an async function, a synchronous throw becomes a rejection.
  const removed = await store.deleteExpired()
  report.removed = Number.isFinite(removed) ? removed : 0
  report.durationMs = Math.round(performance.now() - started)
  return report
}

/** Why the sweep cannot run on `store`, or `undefined` when it can. */
export function datastoreSweepOffReason(store: DataStore): string | undefined {
  if (!store.hasExtension('expiration')) {
    return 'the datastore does not implement the tus expiration extension'
  }
  if (!(store.getExpiration() > 0)) {
    return 'the datastore has no expiration period (getExpiration() is 0)'
  }
  return undefined
}
