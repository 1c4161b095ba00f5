/**
 * What the plugin needs of a store, whatever holds the uploads: the one interface between the
 * wiring (plugin.ts, http/) and the backends (file/, s3/, datastore/). A backend is chosen once,
 * at register (backends/index.ts); nothing outside backends/ asks which one it is: it asks for a
 * capability, as tusd's `StoreComposer` does (`UseConcater`, `UseTerminater`...), and a capability
 * a backend does not have is `undefined`.
 */
import type { IncomingMessage } from 'node:http'
import type { Readable } from 'node:stream'
import type { ServerOptions } from '@tus/server'
import type { DataStore, Upload } from '@tus/utils'
import type { ActivityLocker } from '../locking/activity-locker.js'
import type { ResolvedOptions } from '../options/index.js'
import type { SweepReport } from '../sweep/report.js'
import type { SweepFunction } from '../sweep/schedule.js'
import type { FreeSpace } from './file/free-space.js'
import type { StoreQuota } from './file/quota.js'

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
    stats: Written['stats'],
  ): Promise<Pick<UploadFacts, 'expiresAt'> | undefined>
}

/** `Upload-Checksum` as read: a digest the body must match. */
export interface Checksum {
  algorithm: string
  digest: Buffer
}

/** The checksum extension: the backend's `writer` verifies `Upload-Checksum` as it writes. */
export interface Checksums {
  /** The algorithms it verifies, as tus names them, in order of preference. */
  readonly algorithms: readonly string[]
}

/** What a direct write wrote a body to, for the answer that follows it. */
export interface Written {
  /** The `Upload` the store handed the handler. */
  upload: Upload
  /** The data file's clock and size once the body's bytes were in it; `undefined` if unread. */
  stats: { mtimeMs: number; size: number } | undefined
}

/** How a body is to be written by the direct write path. */
export interface BodyWrite {
  /** Bytes this request may add; more is a 413, as with the stock StreamLimiter. */
  maxBytes: number
  /** The body's `Content-Length`, when it declared a usable one. */
  contentLength: number | undefined
  /** The body's expected digest (`Upload-Checksum`). */
  checksum: Checksum | undefined
  /** Aborts gracefully: what arrived so far is written and counted. */
  signal: AbortSignal
  /** Told the bytes received so far (POST_RECEIVE progress events). */
  onProgress: ((received: number) => void) | undefined
}

/**
 * The direct write path: request bytes go from the socket's Node stream into the store, with
 * the guarantees of tus' own path (see backends/file/write-path.ts).
 */
export interface BodyWriter {
  /** Writes `source` into `upload` at its offset; resolves to the new offset and what it wrote. */
  write(
    source: IncomingMessage,
    upload: Upload,
    how: BodyWrite,
  ): Promise<{ offset: number; written: Written }>
}

type OnUploadCreate = NonNullable<ServerOptions['onUploadCreate']>

/** The creation guard: what a creation must pass before anything is created. */
export interface CreationGuard {
  /** Refuses a declared length that cannot fit now (507) or ever (413): a `Refusal`. */
  reserve(bytes: number): Promise<void>
  /**
   * The user's `onUploadCreate` (if any) with what the backend records of a creation once it
   * has run (the `Upload-Metadata` header as sent, which HEAD answers).
   */
  recording?(hook: OnUploadCreate | undefined): OnUploadCreate
}

/**
 * What an `Upload-Concat` header asks for, once its URLs are read as upload ids. A final that
 * exists already (a retried creation) has its id in `existing`.
 */
export type ConcatRequest =
  | { kind: 'partial' }
  | {
      kind: 'final'
      partials: string[]
      header: string
      existing?: string
      /** Whether the client that asked for the final still waits for its answer. */
      clientWaiting?: () => boolean
    }

/** A final upload held for the answer to a retried creation. */
export interface HeldFinalUpload {
  /** Lets it go: `delivered` when the answer reached the client whole. */
  release(delivered: boolean): Promise<void>
}

/**
 * The concatenation extension (tus 1.0): partial uploads, and final uploads assembled from
 * them. Refusals are thrown as `Refusal`s.
 */
export interface Concatenation {
  /** Checks that partial `id` can go into a final now; resolves to its length. */
  checkPartial(id: string): Promise<number>
  /** The final being assembled from `partials` right now, if any. */
  beingBuilt(partials: readonly string[]): Promise<string | undefined> | undefined
  /** The final already made of `partials`, if any (a retried creation's answer). */
  recordedFinalOf(partials: readonly string[]): Promise<string | undefined>
  /** Holds final `id` until the answer naming it has gone; `undefined` once it is gone. */
  hold(id: string): Promise<HeldFinalUpload | undefined>
  /** Someone knows of final `id` now (its finish hook returned). */
  claim(id: string): Promise<void>
  /** Nobody knows of final `id` after all (its answer did not arrive whole). */
  unclaim(id: string): Promise<void>
  /** Tells the store's coming `create(upload)` which concatenation the creation asked for. */
  mark(upload: Upload, concat: ConcatRequest): void
  /**
   * `partial` or `final` for an `Upload` the backend handed out (`getUpload`) or created, without
   * a read; `undefined` for an upload of neither kind.
   */
  kindOf(upload: Upload): 'partial' | 'final' | undefined
}

/**
 * A finished upload whose hand-over to the app (the user's `onUploadFinish`) has not succeeded
 * yet: remembered from before its last byte was stored until its hook returned.
 */
export interface PendingFinish {
  id: string
  /** When it was first remembered (ms since the epoch). */
  since: number
  /** Runs of the hook that failed so far. */
  attempts: number
  /** The last failure's message. */
  lastError?: string | undefined
  /** When the next run is due (ms since the epoch); absent: at the next pass. */
  nextAt?: number | undefined
}

/**
 * Where a store remembers pending hand-overs, so that they survive a restart or a kill -9 of the
 * process that was finishing them (the built-in store: a file per upload in the store).
 */
export interface FinishRecords {
  /** Remembers `id` (attempts 0); a record there already is kept as it is (`false`). */
  remember(id: string): Promise<boolean>
  /** Replaces the record of `id` (a failed run). */
  update(record: PendingFinish): Promise<void>
  /** The record of `id`, if any. */
  read(id: string): Promise<PendingFinish | undefined>
  /** Forgets `id` (handed over, never finished, or gone); no record is fine. */
  forget(id: string): Promise<void>
  /** Every record, oldest first. */
  list(): Promise<PendingFinish[]>
}

/** Bytes `start` to `end` of an upload, both included (RFC 9110, 14.1.2). */
export interface ByteRange {
  start: number
  end: number
}

/** What validates a finished upload's bytes as they are now (`ETag`, `Last-Modified`). */
export interface DownloadFacts {
  /** A strong entity tag, quoted (`"..."`): it changes whenever the bytes could have. */
  etag: string
  /** When the bytes last changed, in ms since the epoch. */
  modifiedMs: number
}

/**
 * Downloads the plugin answers itself (http/download.ts): ranges, validators, conditional GET.
 * Absent: tus' own GET (the whole file, no validators).
 */
export interface Downloads {
  /** The validators of finished upload `upload`'s bytes; throws tus' 404 when they are gone. */
  describe(upload: Upload): Promise<DownloadFacts>
  /**
   * A stream of `range` of the bytes `facts` describe (all of them: `undefined`); throws tus' 404
   * when they are gone, and rejects when they are no longer what `facts` describe.
   */
  read(upload: Upload, facts: DownloadFacts, range: ByteRange | undefined): Promise<Readable>
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
  /** Partial and final uploads (`Upload-Concat`); absent: tus answers 501 to them. */
  readonly concatenation?: Concatenation | undefined
  /** The direct write path for PATCH and creation bodies; absent: tus' own path. */
  readonly writer?: BodyWriter | undefined
  /** Checks a creation passes before anything is created (the free-space floor). */
  readonly creation?: CreationGuard | undefined
  /** `Upload-Checksum` is verified (the checksum extension). */
  readonly checksums?: Checksums | undefined
  /** Pending hand-overs remembered in the store; absent: in this process' memory only. */
  readonly finishes?: FinishRecords | undefined
  /** Ranged and conditional downloads (GET); absent: tus' own GET. */
  readonly downloads?: Downloads | undefined
  /**
   * Removes what a refused creation left (a POST whose body failed after tus had created the
   * upload: its client never learned the URL), unless it is finished.
   */
  discardRefused?(id: string): Promise<void>
  /**
   * The app has moved or removed upload `id`'s data out of the store (its `onUploadFinish`, or
   * later): what is left of it (its record) is removed and its counted bytes leave the quota now.
   * Resolves to the bytes released: 0 when it still has its data, or was not counted. Never
   * removes data, nor anything outside the store; a second call releases 0.
   */
  released?(id: string): Promise<number>
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
