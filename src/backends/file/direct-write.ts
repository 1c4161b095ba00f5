/**
 * What the write path (http/write-path.ts) needs of a store to write a Node stream straight into
 * its data file. A module of its own, so that the published types of the store do not load the
 * write path's srvx/node types.
 */

import type { FreeSpace } from './free-space.js'
import type { StoreQuota } from './quota.js'

/** A store that can take a Node stream directly (the built-in file store). */
export interface DirectWriteStore {
  /** The free-space floor, when one is kept (`minFreeBytes`): a body stops at it. */
  readonly space?: FreeSpace | undefined
  /** The store quota, when there is one (`maxStoreBytes`): a deferred-length body stops at it. */
  readonly quota?: StoreQuota | undefined
  dataPathOf(id: string): string
  /** Marks the bytes past `offset` as unverified until `endChecksummedWrite` (crash safety). */
  beginChecksummedWrite(id: string, offset: number): Promise<void>
  endChecksummedWrite(id: string): Promise<void>
}
