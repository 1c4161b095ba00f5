/**
 * Any other tus `DataStore` the user passes (GCSStore, a store of their own): served as it is;
 * the schedule runs its own `deleteExpired()` when it has the expiration extension.
 */
import type { DataStore } from '@tus/utils'
import type { StoreIdentity, UploadBackend } from '../backend.js'
import { datastoreSweepOffReason, sweepDatastore } from './sweep.js'

export function datastoreBackend(datastore: DataStore): UploadBackend {
  const off = datastoreSweepOffReason(datastore)
  return {
    description: datastoreIdentity(datastore).name,
    datastore,
    sweep: off ? { off } : { run: ({ dryRun }) => sweepDatastore(datastore, dryRun) },
    close: async () => {},
  }
}

/** A datastore object is its own identity: two objects are two stores. */
export function datastoreIdentity(datastore: DataStore): StoreIdentity {
  const name = `the datastore object (${datastore.constructor?.name ?? 'DataStore'})`
  return { key: datastore, name, noun: 'datastore' }
}
