/**
 * What the plugin needs of a store, whatever holds the uploads: the one interface between the
 * wiring (plugin.ts, http/) and the backends (file/, s3/, datastore/). A backend is chosen once,
 * at register (backends/index.ts); nothing outside backends/ asks which one it is: it asks for a
 * capability, as tusd's `StoreComposer` does (`UseConcater`, `UseTerminater`...), and a capability
 * a backend does not have is `undefined`.
 */
import type { DataStore, Upload } from '@tus/utils'
import type { ActivityLocker } from '../locking/activity-locker.js'
import type { ResolvedOptions } from '../options/index.js'
import type { SweepFunction } from '../sweep/schedule.js'
import type { FreeSpace } from './file/free-space.js'
import type { StoreQuota } from './file/quota.js'
import type { SweepReport } from './file/sweep-engine.js'

/** What the answers state about an upload beyond tus' own headers. */
export interface UploadFacts {
  expiresAt: Date | undefined
  rawMetadata: string | undefined
  /** `Upload-Concat` as HEAD answers it, for partial and final uploads. */
  concat?: string | undefined
}

/** `Upload-Expires` (and the metadata as sent) for the answers, from the backend's expiry clock. */
export interface UploadDescriber {
  /** The facts of an existing upload; `afterRead`: a `getUpload` of this request just read it. */
  describe(id: string, options?: { afterRead?: boolean }): Promise<UploadFacts | undefined>
  /** The facts of an upload this request just created, without reading it again. */
  factsOfCreation?(upload: Upload): Promise<Pick<UploadFacts, 'expiresAt'> | undefined>
  /** The facts after this request's write, from what the write path saw. */
  factsAfterWrite?(
    upload: Upload,
    stats: { mtimeMs: number } | undefined,
  ): Promise<Pick<UploadFacts, 'expiresAt'> | undefined>
}

/** The sweep the plugin's schedule runs, or why there is none (logged once at start). */
export type BackendSweep = { run: SweepFunction } | { off: string }

/**
 * A store behind the plugin. Capabilities are optional members: present when the backend has
 * them. The members are filled in by each backend's module; see CONTRIBUTING.md, "a new backend".
 */
export interface UploadBackend {
  /** For logs and errors only: `directory /srv/uploads`, `the S3 bucket b`, `the datastore`. */
  readonly description: string
  /** What tus' handlers read and write. */
  readonly datastore: DataStore
  /** The expiry sweep for the schedule. */
  readonly sweep: BackendSweep
  /** Expiry facts for the answers (`Upload-Expires`); absent: tus' own headers only. */
  readonly answers?: UploadDescriber | undefined
  /** The free-space floor (`minFreeBytes`): bodies that would cross it answer 507. */
  readonly space?: FreeSpace | undefined
  /** The store quota (`maxStoreBytes`). */
  readonly quota?: StoreQuota | undefined
  /**
   * Runs at register, before the routes serve (the S3Store's methods taken over, the quota
   * counted). `sweepNow` runs one sweep through the schedule; `swept: true` when the backend ran
   * the startup sweep itself (the quota's first count), so the schedule does not run it again.
   */
  start?(sweepNow: () => Promise<SweepReport>): Promise<{ swept: boolean } | undefined>
  /** The app is ready (onReady): from now on the store is served. */
  ready?(): void
  /** The server serves (it listens, or answers a request). */
  serving?(): void
  /** The filesystem's free bytes, for the logs of an emergency sweep. */
  freeBytes?(): Promise<number>
  /** Waits for work the backend started after an answer (partials' removal, say). */
  settled?(): Promise<void>
  /**
   * Gives back what the backend took at register (the directory, the store's own methods);
   * `closedAt`: when the app's close began (the downtime a restart gives back counts from it);
   * `undefined` when the registration failed before serving.
   */
  close(closedAt: number | undefined): Promise<void>
}

/** How a store is told apart from the others of the process (endpoints.ts' table of stores). */
export interface StoreIdentity {
  /** The directory's real path, the bucket's URL, or the datastore object. */
  key: string | object
  /** `directory /srv/uploads`, `the S3 bucket b`, `the datastore object (GCSStore)`. */
  name: string
  /** What to give each registration instead: `directory` or `datastore`. */
  noun: 'directory' | 'datastore'
}

/** What a backend is opened with: the resolved options and what the plugin built before it. */
export interface BackendSetup {
  options: ResolvedOptions
  /** The tus server's locker, which the sweep asks before it removes an upload. */
  locker: ActivityLocker
  log: BackendLogger
  /** How errors name the registration (`` the endpoint `/files` ``). */
  holder: string
}

export interface BackendLogger {
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
}
