/**
 * The built-in store's guards around its writes, the first and last steps of the write path
 * (write-path.ts): claiming space before bytes are written (the free-space floor, the quota),
 * turning the filesystem's own "no space left" into a 507, and the crash safety of a
 * checksummed body (its bytes are marked unverified in the record until the digest matched, and
 * rolled back by the next access under the lock when a crash left the mark).
 *
 * The store (file-store.ts) calls these for its own writes (a creation, a length declaration,
 * the assembly of a final upload, the roll-back in `getUpload`); the direct write path calls
 * them for a PATCH's body.
 */
import type { Upload } from '@tus/utils'
import { ERRORS } from '@tus/utils'
import { UNVERIFIED_FROM } from '../../expiry/policy.js'
import {
  diskFull,
  type FreeSpace,
  insufficientStorage,
  isDiskFull,
  type SpaceClaim,
  tooLargeForStore,
} from './free-space.js'
import {
  type GrowingUpload,
  QUOTA_UNAVAILABLE,
  quotaExceeded,
  type StoreQuota,
  tooLargeForQuota,
} from './quota.js'
import { openStoreFile } from './record-file.js'
import type { RecordStore } from './record-store.js'

/** What the guards need of the store: its floor, its quota, its records and data files. */
export interface WritableStore {
  readonly space: FreeSpace | undefined
  readonly quota: StoreQuota | undefined
  readonly configstore: RecordStore
  dataPathOf(id: string): string
}

export class StoreWrites {
  readonly #store: WritableStore
  readonly #holdsLock: (id: string) => boolean
  /** Uploads a checksummed body is being written to, here. */
  readonly #writing = new Set<string>()

  /** `holdsLock`: whether a request of this process holds an upload's lock (roll-backs need it). */
  constructor(store: WritableStore, holdsLock: (id: string) => boolean) {
    this.#store = store
    this.#holdsLock = holdsLock
  }

  /**
   * Refuses bytes that would cross the free-space floor: a creation's declared length, or the
   * rest of a deferred length when it is declared. 507 when removing files could make room, 413
   * when even an empty filesystem could not hold the upload's `wholeBytes` (its whole length: the
   * bytes it already holds take room too). Does nothing without a floor.
   */
  async reserve(bytes: number, wholeBytes = bytes): Promise<void> {
    const space = this.#store.space
    if (!space || bytes <= 0) return
    // Larger than the filesystem could ever hold: 413, not a 507 that invites a retry.
    const total = await space.totalBytes()
    if (wholeBytes > total - space.minFreeBytes) {
      throw tooLargeForStore(wholeBytes, total, space.minFreeBytes)
    }
    if (await space.fits(bytes)) return
    throw insufficientStorage({
      freeBytes: await space.freeBytes(),
      minFreeBytes: space.minFreeBytes,
      neededBytes: bytes,
    })
  }

  /**
   * Runs `write` (a creation, a length declaration, an assembly) once `bytes` of the store quota
   * are taken for it: 507 when they do not fit now, 413 when the upload's `wholeBytes` never
   * could. The bytes go back if `write` fails.
   */
  async withQuota<T>(
    bytes: number,
    write: () => Promise<T>,
    { wholeBytes = bytes, grows }: { wholeBytes?: number; grows?: GrowingUpload } = {},
  ): Promise<T> {
    const quota = this.#store.quota
    if (!quota || bytes <= 0) return write()
    if (wholeBytes > quota.maxStoreBytes) throw tooLargeForQuota(wholeBytes, quota.maxStoreBytes)
    const claim = await quota.claim(bytes, { grows }).catch(() => {
      throw QUOTA_UNAVAILABLE
    })
    if (claim.granted < bytes) {
      await claim.settle(0)
      throw quotaExceeded({
        storeBytes: quota.lastSeen ?? 0,
        maxStoreBytes: quota.maxStoreBytes,
        neededBytes: bytes,
      })
    }
    let kept = 0
    try {
      const result = await write()
      kept = bytes
      return result
    } finally {
      await claim.settle(kept)
    }
  }

  /**
   * Takes `bytes` of the free-space floor for a write that needs them all (an assembly): 413 when
   * the filesystem could never hold them, 507 when it cannot now. `undefined` without a floor.
   */
  async claimSpace(bytes: number): Promise<SpaceClaim | undefined> {
    const space = this.#store.space
    if (!space || bytes <= 0) return undefined
    const total = await space.totalBytes()
    if (bytes > total - space.minFreeBytes) throw tooLargeForStore(bytes, total, space.minFreeBytes)
    const claim = await space.claim(bytes)
    if (claim.granted === bytes) return claim
    throw insufficientStorage({
      freeBytes: await space.freeBytes(),
      minFreeBytes: space.minFreeBytes,
      neededBytes: bytes,
    })
  }

  /**
   * Runs a write of the store's files; the filesystem's own refusal for want of space (ENOSPC,
   * EDQUOT) becomes a 507 that the client retries, and is reported low (an emergency sweep).
   */
  async onDisk<T>(write: () => Promise<T>): Promise<T> {
    try {
      return await write()
    } catch (error) {
      if (!isDiskFull(error)) throw error
      const space = this.#store.space
      space?.reportLow({
        freeBytes: await space.freeBytes().catch(() => 0),
        minFreeBytes: space.minFreeBytes,
        neededBytes: 0,
      })
      throw diskFull(error)
    }
  }

  /**
   * Before a checksummed body is written at `offset`: the record says so, durably, so that a
   * crash mid-body leaves bytes the next access rolls back instead of keeping them.
   */
  async beginChecksummedWrite(id: string, offset: number): Promise<void> {
    const records = this.#store.configstore
    const record = await records.get(id)
    if (!record) throw ERRORS.FILE_NOT_FOUND
    this.#writing.add(id)
    try {
      const marked = { ...record, [UNVERIFIED_FROM]: offset } as unknown as Upload
      await this.onDisk(() => records.set(id, marked, { durable: true }))
    } catch (error) {
      this.#writing.delete(id)
      throw error
    }
  }

  /** After the body was written and checked (or rolled back): its bytes are the upload's. */
  async endChecksummedWrite(id: string): Promise<void> {
    try {
      const record = await this.#store.configstore.get(id)
      if (record) await this.clearUnverified(id, record)
    } finally {
      this.#writing.delete(id)
    }
  }

  /**
   * Only a caller that holds the upload's lock may roll back, and only when no body is being
   * written here: then the body that left the mark has ended for good (its process crashed, or
   * it failed to clear the mark). Without the lock, the answer just counts the verified bytes.
   */
  mayRollBack(id: string): boolean {
    return !this.#writing.has(id) && this.#holdsLock(id)
  }

  /** Truncates the data file back to its verified `offset` and clears the record's mark. */
  async rollBack(id: string, record: Upload, offset: number): Promise<void> {
    const { handle } = await openStoreFile(this.#store.dataPathOf(id), 'write')
    try {
      await handle.truncate(offset)
    } finally {
      await handle.close()
    }
    await this.clearUnverified(id, record)
  }

  async clearUnverified(id: string, record: Upload): Promise<void> {
    const { [UNVERIFIED_FROM]: _, ...rest } = record as Upload & Record<string, unknown>
    await this.#store.configstore.set(id, rest as unknown as Upload)
  }
}
