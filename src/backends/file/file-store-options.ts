/**
 * The options of the built-in store (`ExpiringFileStore`, file-store.ts). A module of its own so
 * that the store's parts (store-directory.ts) read them without importing the store they make up.
 */
import type { Downtime } from '../../expiry/policy.js'
import type { SweepLocker } from '../../locking/activity-locker.js'
import type { QuotaCounter } from './quota.js'

export interface ExpiringFileStoreOptions {
  directory: string
  /** 0 turns expiry off; the store then does not advertise the `expiration` extension. */
  expireAfterMs: number
  /** How long a finished partial upload waits for its final (expiry/policy.ts `IdlePeriods`). */
  partialHoldMs?: number | undefined
  /** The tus server's locker, so that the sweep never removes an upload a request is using. */
  locker?: SweepLocker
  /** Names of orphans the sweep may remove. */
  idPattern?: RegExp
  /** The server's last downtime, which does not count against idle uploads (see expiry/policy.ts). */
  downtime?: Downtime | undefined
  /**
   * Whether a request of this process holds the lock of an upload (the plugin's ActivityLocker):
   * only then is a checksummed body that a crash cut short rolled back. Default: never.
   */
  holdsLock?: (id: string) => boolean
  /**
   * Free space the filesystem must keep: creations and PATCH bodies that would cross it answer
   * 507. `0` turns it off; `undefined`: the smaller of 1 GiB and 5% of the filesystem.
   */
  minFreeBytes?: number | undefined
  /**
   * Bytes the store may hold, finished uploads and unfinished uploads' declared lengths
   * included (quota.ts); `undefined`: no quota. The total is not counted by `open()`: the
   * plugin counts it (`quota.ensureCounted()`, or a sweep) before serving.
   */
  maxStoreBytes?: number | undefined
  /** Where the quota's running total lives. Default: in memory. */
  quotaCounter?: QuotaCounter | undefined
  /**
   * Serve the directory as one of its holders (directory-holders.ts): `open()` refuses a
   * directory that another live process serves without sharing Redis (`redisPrefix`) with this
   * one, and the sweep removes at once the temporary files of processes that are gone. Without
   * it (a tool, a test), nothing is claimed.
   */
  holder?: { description: string; redisPrefix: string | undefined } | undefined
}
