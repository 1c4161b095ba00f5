/**
 * The one place that asks which store a registration has: the built-in directory, a user's
 * S3Store (adopted: the plugin's expiry instead of its own), or any other tus DataStore. The rest
 * of the plugin sees an `UploadBackend` and its capabilities.
 */
import type { DataStore } from '@tus/utils'
import type { ResolvedOptions } from '../options.js'
import type { BackendSetup, StoreIdentity, UploadBackend } from './backend.js'
import { datastoreBackend, datastoreIdentity } from './datastore/index.js'
import { directoryIdentity, openFileBackend } from './file/index.js'
import {
  adoptS3Store,
  asS3Store,
  assertSharedCache,
  type S3StoreLike,
  s3Sweep,
} from './s3/store.js'

export type { BackendLogger, BackendSetup, StoreIdentity, UploadBackend } from './backend.js'

/** Opens the registration's backend; its `close()` gives back what it took. */
export async function openBackend(setup: BackendSetup): Promise<UploadBackend> {
  const { datastore } = setup.options
  if (!datastore) return openFileBackend(setup)
  const s3 = asS3Store(datastore)
  if (s3) return s3Backend(s3, setup)
  return datastoreBackend(datastore)
}

/** Checks that need no I/O, run before anything is built (an S3Store's cache with Redis). */
export function checkBackendOptions(options: ResolvedOptions): void {
  const s3 = options.datastore && asS3Store(options.datastore)
  if (s3 && options.redis) assertSharedCache(s3)
}

/** How endpoints.ts tells stores apart: S3Store objects on one bucket are one store. */
export async function storeIdentity(options: ResolvedOptions): Promise<StoreIdentity> {
  const { datastore } = options
  if (!datastore) return directoryIdentity(options)
  const bucket = asS3Store(datastore)?.bucket
  if (bucket !== undefined) {
    return { key: `s3://${bucket}`, name: `the S3 bucket ${bucket}`, noun: 'datastore' }
  }
  return datastoreIdentity(datastore as DataStore)
}

function s3Backend(s3: S3StoreLike, { options, locker }: BackendSetup): UploadBackend {
  let expiry: ReturnType<typeof adoptS3Store> | undefined
  return {
    description: `the S3 bucket ${s3.bucket}`,
    datastore: s3,
    sweep: { run: s3Sweep(s3, { ...options, locker }) },
    answers: { describe: (id, how) => expiry?.describe(id, how) ?? Promise.resolve(undefined) },
    async start(sweepNow) {
      expiry = adoptS3Store(s3, options.expireAfterMs, () =>
        sweepNow().then((report) => report.removed),
      )
      return undefined
    },
    async close() {
      expiry?.restore()
    },
  }
}
