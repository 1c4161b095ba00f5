/**
 * The one seam to the non-public parts of @tus/server and @tus/file-store. Every other module
 * uses their public API only; what the plugin needs beyond it is reached through this file, and
 * `assertTusInternals()` checks at `register` that the installed versions still have each part,
 * so that an upgrade that drops or renames one fails loudly (`FST_TUS_INCOMPATIBLE`) instead of
 * answering wrongly at run time.
 *
 * The parts, and why the plugin needs them:
 * - the PATCH and POST handlers' `writeToStore(body, upload, maxFileSize, context)`: the direct
 *   write path (hooked in by http/write-path.ts, written by backends/file/write-path.ts) routes
 *   request bytes straight into the data file. @tus/server exports neither its handler classes
 *   nor `BaseHandler`, so the instance method is wrapped. The wrapper also refuses (403) a
 *   PATCH of a final upload of the concatenation extension there, under the upload's lock.
 * - the same handlers' `emit`: a partial upload of the concatenation extension that finishes is
 *   a step of its final, whose POST_FINISH the app's listeners get instead (http/tus-server.ts).
 * - `MemoryLocker.locks`, its lock table, and `MemoryLocker.timeout`: the sweep, and a request
 *   whose upload's lock is free, take an uncontended lock with one entry in it, instead of arming
 *   a 30 s timer per removal or request; a request whose upload's lock is held waits to be woken
 *   by its release, up to the locker's timeout, instead of MemoryLocker's retry loop, whose
 *   memory grows while it waits (sweep/activity-locker.ts).
 * - `FileStore.prototype.checkOrCreateDirectory`: the stock constructor creates the directory in
 *   a callback that throws, which ends the process on an unusable directory; the built-in store
 *   turns it off and creates the directory in `init()`, which rejects instead.
 * - `Server.prototype.getCorsOrigin`: tus' rule for `Access-Control-Allow-Origin`, which the
 *   answers the plugin writes itself (protocol refusals) must follow too.
 * - the POST handler's `generateUrl(req, id)`: an upload's URL as tus builds its `Location`
 *   (`path`, `relativeLocation`, `respectForwardedHeaders`, the user's `generateUrl`), for the
 *   answer to a retried final creation, which the plugin writes itself (store/finals.ts).
 *
 * And of a user's @tus/s3-store `S3Store` (an optional peer: never imported here; the store
 * object the user passed is probed), checked by `s3StoreInternals()` when `datastore` is one:
 * its protected `bucket`, `client` (the S3 calls the sweep and downloads make), `cache`, `getMetadata`,
 * `clearCache`, its object names (`infoKey`, `partKey`) and `Tus-Completed` tag
 * (`useCompleteTag`), and its own `getUpload`, `getExpiration` and `deleteExpired`, which the
 * plugin replaces while it serves (backends/s3/).
 */
import { createRequire } from 'node:module'
import path from 'node:path'
import { FileStore } from '@tus/file-store'
import { MemoryLocker, Server } from '@tus/server'
import { type CancellationContext, DataStore, HEADERS, type Upload } from '@tus/utils'
import { IncompatibleTusError } from './errors.js'

/** The handlers whose `writeToStore` the direct write path replaces. */
export const WRITING_METHODS = ['PATCH', 'POST'] as const

/** What a @tus/server handler (PATCH, POST) offers the direct write path. */
export interface WritingHandler {
  options: { postReceiveInterval?: number }
  listenerCount(event: string): number
  emit(event: string, ...args: unknown[]): boolean
  writeToStore(
    body: ReadableStream | null,
    upload: Upload,
    maxFileSize: number,
    context: CancellationContext,
  ): Promise<number>
}

export type WriteToStore = WritingHandler['writeToStore']

/**
 * Replaces `writeToStore` of the server's PATCH and POST handlers with `wrap(handler, stock)`,
 * where `stock` is the handler's own method.
 */
export function wrapWriteToStore(
  server: Server,
  wrap: (handler: WritingHandler, stock: WriteToStore) => WriteToStore,
): void {
  for (const method of WRITING_METHODS) {
    const handler = server.handlers[method] as unknown as WritingHandler
    handler.writeToStore = wrap(handler, handler.writeToStore.bind(handler))
  }
}

/**
 * Drops the events of the server's PATCH and POST handlers for which `drop(event, args)` is true
 * (tus registers the listeners of `server.on` on each handler, which emits them itself).
 */
export function dropHandlerEvents(
  server: Server,
  drop: (event: string, args: unknown[]) => boolean,
): void {
  for (const method of WRITING_METHODS) {
    const handler = server.handlers[method] as unknown as WritingHandler
    const emit = handler.emit.bind(handler)
    handler.emit = (event, ...args) => (drop(event, args) ? false : emit(event, ...args))
  }
}

/** An entry of `MemoryLocker`'s lock table. */
export interface MemoryLockEntry {
  requestRelease: () => void
}

/** `MemoryLocker`'s lock table: upload id → its holder. A request's lock waits while an entry is there. */
export function memoryLockTable(locker: MemoryLocker): Map<string, MemoryLockEntry> {
  return locker.locks as Map<string, MemoryLockEntry>
}

/** Turns off the stock `FileStore` constructor's directory check for `StoreClass` (its subclass). */
export function skipStockDirectoryCheck(StoreClass: typeof FileStore): void {
  ;(StoreClass.prototype as unknown as { checkOrCreateDirectory(): void }).checkOrCreateDirectory =
    () => {}
}

/**
 * The CORS headers @tus/server puts on its own answers, for an answer the plugin writes itself:
 * `Access-Control-Allow-Origin` by tus' own rule, `-Expose-Headers`, `-Allow-Credentials`.
 */
export function tusCorsHeaders(server: Server, origin: string | undefined): Headers {
  const headers = new Headers({ 'Access-Control-Expose-Headers': exposedHeaders(server) })
  const allowed = (server as unknown as TusCorsRule).getCorsOrigin(origin ?? null)
  if (allowed) headers.set('Access-Control-Allow-Origin', allowed)
  if (server.options.allowedCredentials === true) {
    headers.set('Access-Control-Allow-Credentials', 'true')
  }
  return headers
}

function exposedHeaders(server: Server): string {
  return [...HEADERS, ...(server.options.exposedHeaders ?? [])].join(', ')
}

interface TusCorsRule {
  getCorsOrigin(origin: string | null): string | null
}

interface UrlMaker {
  generateUrl(req: Request, id: string): string
}

/** The URL of upload `id`, as tus' POST handler builds a creation's `Location` for `request`. */
export function uploadUrlFor(server: Server, request: Request, id: string): string {
  return (server.handlers.POST as unknown as UrlMaker).generateUrl(request, id)
}

/** One part of the seam: its name as the error states it, and how to tell that it is there. */
interface Seam {
  name: string
  present(probe: Server): boolean
}

const SEAMS: Seam[] = [
  ...WRITING_METHODS.map((method) => ({
    name: `Server.handlers.${method}.writeToStore(body, upload, maxFileSize, context)`,
    present: (probe: Server) => {
      const handler = probe.handlers[method] as unknown as Partial<WritingHandler> | undefined
      return (
        typeof handler?.writeToStore === 'function' &&
        handler.writeToStore.length === 4 &&
        typeof handler.emit === 'function' &&
        typeof handler.listenerCount === 'function' &&
        typeof handler.options === 'object'
      )
    },
  })),
  {
    name: 'Server.handlers.POST.generateUrl(req, id)',
    present: (probe) => {
      const request = new Request('http://a.example/fastify-tus-probe', {
        method: 'POST',
        headers: { host: 'a.example' },
      })
      return uploadUrlFor(probe, request, 'x') === 'http://a.example/fastify-tus-probe/x'
    },
  },
  {
    name: 'MemoryLocker.locks (its lock table, a Map) and MemoryLocker.timeout',
    present: () => {
      const locker = new MemoryLocker({ acquireLockTimeout: 1234 }) as Partial<MemoryLocker>
      return locker.locks instanceof Map && locker.timeout === 1234
    },
  },
  {
    name: 'FileStore.prototype.checkOrCreateDirectory',
    present: () =>
      typeof (FileStore.prototype as unknown as Partial<Record<string, unknown>>)
        .checkOrCreateDirectory === 'function',
  },
  {
    name: 'Server.prototype.getCorsOrigin(origin)',
    present: (probe) => {
      const rule = probe as unknown as Partial<TusCorsRule>
      return (
        typeof rule.getCorsOrigin === 'function' &&
        // The rule as the plugin relies on it: an allowed origin is echoed, another is not.
        rule.getCorsOrigin('https://a.example') === 'https://a.example' &&
        rule.getCorsOrigin('https://b.example') !== 'https://b.example'
      )
    },
  },
]

/** The seam's parts that the installed @tus/server or @tus/file-store lacks (none: `[]`). */
export function missingTusInternals(): string[] {
  let probe: Server
  try {
    probe = new Server({
      path: '/fastify-tus-probe',
      datastore: new DataStore(),
      allowedOrigins: ['https://a.example'],
    })
  } catch (error) {
    return [`new Server(options): ${(error as Error).message}`]
  }
  return SEAMS.filter((seam) => {
    try {
      return !seam.present(probe)
    } catch {
      return true
    }
  }).map((seam) => seam.name)
}

/** Rejects an installed @tus/server that lacks a part of the seam, naming every missing part. */
export function assertTusInternals(): void {
  const missing = missingTusInternals()
  if (missing.length > 0) {
    throw new IncompatibleTusError(installedVersion('@tus/server'), missing.join('; '))
  }
}

// @tus/s3-store: a user's S3Store, reached past its public API.

/** The calls the plugin makes on S3Store's `client` (the aggregated `S3` of @aws-sdk/client-s3). */
export const S3_CLIENT_METHODS = [
  'listMultipartUploads',
  'listParts',
  'listObjectsV2',
  'getObject',
  'headObject',
  'getObjectTagging',
  'abortMultipartUpload',
  'deleteObject',
  'putObject',
] as const

export type S3ClientMethod = (typeof S3_CLIENT_METHODS)[number]

/**
 * A user's S3Store as the plugin uses it beyond `DataStore`: each member checked at register.
 * `Client` is how the caller types S3Store's S3 client (the calls of `S3_CLIENT_METHODS`).
 */
export interface S3StoreInternals<Client extends object = object> {
  /** The store itself, as tus' handlers use it. */
  readonly store: DataStore
  readonly bucket: string
  readonly client: Client
  /** Where S3Store caches upload records (`cache`): a `KvStore`. */
  readonly cache: unknown
  /** `getMetadata(id)`: the upload's record (`.info`, or S3Store's cached copy of it). */
  record(id: string): Promise<{ uploadId: string; upload: Upload }>
  /** `clearCache(id)`: drops S3Store's cached record, once the upload's objects are gone. */
  forget(id: string): Promise<void>
}

/** S3Store's members the plugin reaches, as @tus/s3-store 2.x declares them (all protected). */
interface S3StoreMembers {
  bucket: string
  client: Record<string, unknown>
  cache: Record<string, unknown>
  getMetadata(id: string): Promise<{ 'upload-id': string; file: Upload }>
  clearCache(id: string): Promise<void>
  infoKey(id: string): string
  partKey(id: string, isIncomplete?: boolean): string
  useCompleteTag(value: 'true' | 'false'): string | undefined
}

/** Where the parts are probed: the user's store object, its members possibly missing. */
type S3Probe = Partial<Record<keyof S3StoreMembers | keyof DataStore, unknown>> & DataStore

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null
}

/** The methods the plugin replaces while it serves: S3Store's own, not DataStore's defaults. */
const REPLACED = ['getUpload', 'getExpiration', 'deleteExpired'] as const

const S3_SEAMS: Array<{ name: string; present(store: S3Probe): boolean }> = [
  { name: 'S3Store.bucket (a string)', present: (s) => typeof s.bucket === 'string' },
  { name: 'S3Store.client (an S3 client)', present: (s) => isObject(s.client) },
  // A missing client is named once, above.
  ...S3_CLIENT_METHODS.map((method) => ({
    name: `S3Store.client.${method}(input)`,
    present: (s: S3Probe) => !isObject(s.client) || typeof s.client[method] === 'function',
  })),
  {
    name: 'S3Store.cache (a KvStore: get, set, delete)',
    present: (s) =>
      isObject(s.cache) &&
      ['get', 'set', 'delete'].every(
        (m) => typeof (s.cache as Record<string, unknown>)[m] === 'function',
      ),
  },
  { name: 'S3Store.getMetadata(id)', present: (s) => typeof s.getMetadata === 'function' },
  { name: 'S3Store.clearCache(id)', present: (s) => typeof s.clearCache === 'function' },
  {
    // The sweep lists and removes objects by these names.
    name: 'S3Store.infoKey(id), naming `<id>.info`',
    present: (s) => (s as unknown as S3StoreMembers).infoKey('x') === 'x.info',
  },
  {
    name: 'S3Store.partKey(id, true), naming `<id>.part`',
    present: (s) => (s as unknown as S3StoreMembers).partKey('x', true) === 'x.part',
  },
  {
    // The tag tells the sweep an abandoned record from a finished upload's; probed with tags on.
    name: 'S3Store.useCompleteTag(value), tagging `.info` `Tus-Completed=<value>`',
    present: (s) => {
      const tagsOn = Object.create(s, { shouldUseExpirationTags: { value: () => true } })
      return (tagsOn as S3StoreMembers).useCompleteTag('false') === 'Tus-Completed=false'
    },
  },
  {
    name: "S3Store's own getUpload(id), getExpiration() and deleteExpired() (replaced while serving)",
    present: (s) =>
      REPLACED.every(
        (m) => typeof s[m] === 'function' && s[m] !== (DataStore.prototype as S3Probe)[m],
      ),
  },
]

/**
 * Whether `store` is an @tus/s3-store S3Store: a class of its prototype chain is named
 * `S3Store` (a subclass, or another copy of the package), or it has S3Store's protected members
 * under their names (a bundle that renamed the class). @tus/s3-store itself is not imported: it
 * is an optional peer, and `instanceof` would miss another copy of it.
 */
export function isS3Store(store: DataStore): boolean {
  for (let proto = Object.getPrototypeOf(store); proto; proto = Object.getPrototypeOf(proto)) {
    const ctor = Object.hasOwn(proto, 'constructor') ? proto.constructor : undefined
    if (typeof ctor === 'function' && ctor.name === 'S3Store') return true
  }
  const s = store as S3Probe
  return (
    typeof s.bucket === 'string' &&
    isObject(s.client) &&
    typeof s.getMetadata === 'function' &&
    typeof s.clearCache === 'function' &&
    typeof s.infoKey === 'function' &&
    typeof s.partKey === 'function'
  )
}

/** The parts of the seam that the S3Store `store` lacks (none: `[]`). */
export function missingS3StoreInternals(store: DataStore): string[] {
  return S3_SEAMS.filter((seam) => {
    try {
      return !seam.present(store as S3Probe)
    } catch {
      return true
    }
  }).map((seam) => seam.name)
}

/**
 * The user's store as the plugin reaches it, if it is an S3Store (`isS3Store`); `undefined`
 * for any other datastore. Rejects an S3Store that lacks a part, naming every missing one,
 * rather than let it keep its own creation-based `deleteExpired()`.
 */
export function s3StoreInternals<Client extends object>(
  store: DataStore,
): S3StoreInternals<Client> | undefined {
  if (!isS3Store(store)) return undefined
  const missing = missingS3StoreInternals(store)
  if (missing.length > 0) {
    throw new IncompatibleTusError(installedVersion('@tus/s3-store'), missing.join('; '))
  }
  const members = store as unknown as S3StoreMembers
  return {
    store,
    bucket: members.bucket,
    client: members.client as Client,
    cache: members.cache,
    record: async (id) => {
      const { 'upload-id': uploadId, file } = await members.getMetadata(id)
      return { uploadId, upload: file }
    },
    forget: (id) => members.clearCache(id),
  }
}

/** The installed version of `name` (its package.json is not in its exports map). */
function installedVersion(name: string): string {
  const require = createRequire(import.meta.url)
  try {
    let dir = path.dirname(require.resolve(name))
    for (let i = 0; i < 4; i++) {
      try {
        const pkg = require(path.join(dir, 'package.json')) as { name?: string; version?: string }
        if (pkg.name === name) return `${name}@${pkg.version}`
      } catch {}
      dir = path.dirname(dir)
    }
  } catch {}
  return name
}
