/**
 * The one place that asks which store a registration has: the built-in directory, a user's
 * S3Store (adopted: the plugin's expiry instead of its own), or any other tus DataStore. The rest
 * of the plugin sees an `UploadBackend` and its capabilities.
 */
import type { ResolvedOptions } from '../options/index.js'
import type { BackendSetup, StoreIdentity, UploadBackend } from './backend.js'
import { datastoreBackend, datastoreIdentity } from './datastore/index.js'
import { directoryIdentity, openFileBackend } from './file/index.js'
import { asS3Store, s3Backend, s3Identity } from './s3/index.js'

export type { BackendLogger, BackendSetup, StoreIdentity, UploadBackend } from './backend.js'

/** Opens the registration's backend; its `close()` gives back what it took. */
export async function openBackend(setup: BackendSetup): Promise<UploadBackend> {
  const { datastore } = setup.options
  if (!datastore) return openFileBackend(setup)
  const s3 = asS3Store(datastore)
  if (s3) {
    const { expireAfterMs, idPattern, redis } = setup.options
    return s3Backend({ store: s3, expireAfterMs, idPattern, locker: setup.locker, redis: !!redis })
  }
  return datastoreBackend(datastore)
}

/** How endpoints.ts tells stores apart: each backend names its own. */
export async function storeIdentity(options: ResolvedOptions): Promise<StoreIdentity> {
  const { datastore } = options
  if (!datastore) return directoryIdentity(options)
  const s3 = asS3Store(datastore)
  return s3 ? s3Identity(s3) : datastoreIdentity(datastore)
}
