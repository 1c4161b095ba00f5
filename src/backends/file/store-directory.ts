/**
 * Opening and closing the built-in store's directory: created when missing and proven writable
 * (`prepareDirectory`), where the stock constructor creates it with a callback that throws and so
 * ends the process on an unusable directory; then what `ExpiringFileStore.open` sets up around it
 * (the free-space floor, the quota, this process' claim on the directory).
 */
import fsp from 'node:fs/promises'
import path from 'node:path'
import { DirectoryError } from '../../errors.js'
import { type DirectoryClaim, joinHolders } from './directory-holders.js'
import type { ExpiringFileStoreOptions } from './file-store-options.js'
import { FreeSpace } from './free-space.js'
import { PROBE_PREFIX } from './names.js'
import { LocalQuotaCounter, StoreQuota } from './quota.js'

/** Creates `directory` if needed and proves it writable; rejects with `FST_TUS_DIRECTORY`. */
export async function prepareDirectory(directory: string): Promise<void> {
  try {
    await makeDirectory(directory)
    // A probe, because `access(W_OK)` says yes to root even on a read-only mount.
    await fsp.rmdir(await fsp.mkdtemp(path.join(directory, PROBE_PREFIX)))
  } catch (error) {
    throw new DirectoryError(directory, (error as Error).message, { cause: error })
  }
}

/**
 * `mkdir -p`, which gives up where Node's recursive mkdir loops forever on a thread of the pool:
 * a parent that exists but answers ENOENT for any child (procfs: `/proc/self/uploads`).
 */
async function makeDirectory(directory: string): Promise<void> {
  try {
    await fsp.mkdir(directory)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'EEXIST') return // a file there fails the probe, with ENOTDIR
    const parent = path.dirname(directory)
    if (code !== 'ENOENT' || parent === directory) throw error
    await makeDirectory(parent)
    // A second ENOENT, now that the parent exists, is final.
    await fsp.mkdir(directory).catch((again: NodeJS.ErrnoException) => {
      if (again.code !== 'EEXIST') throw again
    })
  }
}

/** What an opened store keeps beside its directory; each `undefined` when the options ask none. */
export interface DirectoryServices {
  /** The free-space floor (`minFreeBytes`). */
  space: FreeSpace | undefined
  /** The store quota (`maxStoreBytes`). */
  quota: StoreQuota | undefined
  /** This process' claim on the directory (`holder`). */
  claim: DirectoryClaim | undefined
}

/**
 * Sets up what the options ask beside the prepared `directory` (an absolute path). The quota's
 * total is not counted here: `count` counts it when the plugin asks (`quota.ensureCounted()`).
 * The claim comes last, so that a failure before it leaves the directory unclaimed.
 */
export async function openServices(
  directory: string,
  options: ExpiringFileStoreOptions,
  count: () => Promise<number>,
): Promise<DirectoryServices> {
  const space =
    options.minFreeBytes === 0 ? undefined : await FreeSpace.open(directory, options.minFreeBytes)
  const quota =
    options.maxStoreBytes === undefined
      ? undefined
      : new StoreQuota(
          options.maxStoreBytes,
          options.quotaCounter ?? new LocalQuotaCounter(),
          count,
        )
  const claim = options.holder
    ? await joinHolders(directory, options.holder.redisPrefix, options.holder.description)
    : undefined
  return { space, quota, claim }
}
