/**
 * Several endpoints in one app, and in one process.
 *
 * - Decorators: without `namespace` a registration decorates `fastify.tus` and
 *   `fastify.tusCleanup`; with one, both become objects holding one entry per namespace (as
 *   @fastify/redis does). A second registration without a namespace, or one reusing a namespace,
 *   on the same Fastify context is refused, naming both endpoints. A child context may shadow its
 *   parent's decorators, as Fastify allows.
 * - Stores: a process-wide table of the stores served (a directory by its real path, or a
 *   datastore object) and their Redis prefixes. Two registrations on one store must share Redis
 *   (both `redis`, the same prefix), or their locks and sweeps would not see each other; one Redis
 *   prefix serves one store, or the sweep lease of one would skip the other's sweeps. Process-wide
 *   rather than per Fastify instance, since two apps in one process on one directory have the
 *   same problem. A registration gives its store back when its app has closed.
 */
import type { Server } from '@tus/server'
import type { FastifyInstance } from 'fastify'
import { storeIdentity } from './backends/index.js'
import { AlreadyRegisteredError, DirectoryInUseError, InvalidOptionError } from './errors.js'
import type { ResolvedOptions } from './options/index.js'

/**
 * The namespaces an app registers, which it declares by declaration merging (as with
 * @fastify/jwt's `FastifyJWT`), so that `fastify.tus` and `fastify.tusCleanup` are typed as what
 * the registrations made:
 *
 * ```ts
 * declare module 'fastify-tus' {
 *   interface FastifyTusNamespaces {
 *     videos: true
 *     avatars: true
 *   }
 * }
 * ```
 *
 * Only the keys count. Empty (the default): the app registers without `namespace`.
 */
// biome-ignore lint/suspicious/noEmptyInterface: an interface, and empty, so that apps can merge their namespaces into it
export interface FastifyTusNamespaces {}

/** A namespace declared in `FastifyTusNamespaces`; `never` when none is. */
export type FastifyTusNamespace = Extract<keyof FastifyTusNamespaces, string>

/** `fastify.tus` and `fastify.tusCleanup` with namespaces: one entry per declared namespace. */
export type FastifyTusNamespaced<T> = { readonly [N in FastifyTusNamespace]: T }

/**
 * What a decorator is: `T` itself (the `Server`, or the `TusCleanupDecorator`) when no namespace
 * is declared, one entry per namespace when some are. Not both: then a typo (`app.tus.vidoes`)
 * and the `Server`'s members on a namespace object (`app.tus.datastore`, `undefined` there) are
 * type errors, not `undefined` at run time.
 */
export type FastifyTusDecorated<T> = [FastifyTusNamespace] extends [never]
  ? T
  : FastifyTusNamespaced<T>

/** The full route path of an endpoint, parents' prefixes included (as Fastify joins them). */
export function endpointPath(instancePrefix: string, options: ResolvedOptions): string {
  let prefix = options.prefix
  if (instancePrefix.endsWith('/') && prefix.startsWith('/')) prefix = prefix.slice(1)
  return `${instancePrefix}${prefix}${options.path}`
}

/** How errors name a registration: `` the endpoint `/videos` (namespace 'videos') ``. */
export function describeEndpoint(endpoint: string, namespace: string | undefined): string {
  return `the endpoint \`${endpoint}\`${namespace === undefined ? '' : ` (namespace '${namespace}')`}`
}

// Decorators.

/** The endpoint each decorated Server and cleanup decorator belongs to. */
const endpointOf = new WeakMap<object, string>()
/** The namespace objects this module made (prototype-less, holding only namespaces). */
const namespaceObjects = new WeakSet<object>()

const DECORATORS = ['tus', 'tusCleanup'] as const

function own(fastify: FastifyInstance, name: string): unknown {
  return Object.hasOwn(fastify, name)
    ? (fastify as unknown as Record<string, unknown>)[name]
    : undefined
}

/**
 * Throws if this registration cannot decorate `fastify`; called before anything is built, and
 * again by `decorate`.
 */
export function checkDecorators(
  fastify: FastifyInstance,
  namespace: string | undefined,
  endpoint: string,
): void {
  const me = describeEndpoint(endpoint, namespace)
  for (const name of DECORATORS) {
    const current = own(fastify, name)
    if (current === undefined) continue
    if (!endpointOf.has(current as object) && !namespaceObjects.has(current as object)) {
      throw new AlreadyRegisteredError(
        `\`fastify.${name}\` is already decorated by something other than fastify-tus; ${me} cannot decorate it`,
      )
    }
    if (namespace === undefined) {
      throw new AlreadyRegisteredError(
        namespaceObjects.has(current as object)
          ? `already registered on this Fastify instance with a namespace (${registered(current as object)}); a registration without \`namespace\` can only come first: give ${me} a \`namespace\` too`
          : `already registered on this Fastify instance for ${endpointOf.get(current as object)}; give ${me} a \`namespace\` option (e.g. { namespace: 'videos' }) to serve several endpoints`,
      )
    }
    const entry = Object.hasOwn(current as object, namespace)
      ? (current as Record<string, unknown>)[namespace]
      : undefined
    if (entry !== undefined && endpointOf.has(entry as object)) {
      throw new AlreadyRegisteredError(
        `namespace '${namespace}' is already registered on this Fastify instance, for ${endpointOf.get(entry as object)}; ${me} needs another \`namespace\``,
      )
    }
    // Beside a registration without a namespace, the names of its Server's (or its
    // `tusCleanup`'s) own properties are taken.
    if (!namespaceObjects.has(current as object) && namespace in (current as object)) {
      throw new InvalidOptionError(
        'namespace',
        `'${namespace}' is a property of \`fastify.${name}\` (of ${endpointOf.get(current as object)}, registered without a namespace): choose another name`,
      )
    }
  }
}

/** The namespaces in a namespace object and their endpoints, for messages. */
function registered(namespaces: object): string {
  return Object.entries(namespaces)
    .map(([name, value]) => `'${name}' at ${endpointOf.get(value) ?? '?'}`)
    .join(', ')
}

/** Decorates `fastify.tus` and `fastify.tusCleanup`, or their entries for `namespace`. */
export function decorate(
  fastify: FastifyInstance,
  namespace: string | undefined,
  endpoint: string,
  values: { tus: Server; tusCleanup: object },
): void {
  checkDecorators(fastify, namespace, endpoint)
  const me = describeEndpoint(endpoint, namespace)
  for (const name of DECORATORS) {
    const value = values[name]
    endpointOf.set(value, me)
    if (namespace === undefined) {
      fastify.decorate(name, value as never)
      continue
    }
    let namespaces = own(fastify, name) as Record<string, unknown> | undefined
    if (namespaces === undefined) {
      // In a child context, the parent's endpoints stay visible without being changed.
      const inherited = (fastify as unknown as Record<string, unknown>)[name]
      const parent =
        typeof inherited === 'object' && inherited !== null && namespaceObjects.has(inherited)
          ? inherited
          : null
      namespaces = Object.create(parent) as Record<string, unknown>
      namespaceObjects.add(namespaces)
      fastify.decorate(name, namespaces as never)
    }
    namespaces[namespace] = value
  }
}

// Stores.

interface Claim {
  /** The real path of the directory, or the datastore object. */
  store: string | object
  /** `directory /srv/uploads`, or `the datastore (S3Store)`. */
  storeName: string
  /** Which registration holds it. */
  holder: string
  redisPrefix: string | undefined
}

const claims = new Set<Claim>()

/**
 * Takes this registration's store (and Redis prefix) for the process, or throws naming the
 * registration that has it. Resolves to the function that gives it back.
 */
export async function claimStore(options: ResolvedOptions, holder: string): Promise<() => void> {
  const { key: store, name: storeName, noun } = await storeIdentity(options)
  const redisPrefix = options.redis?.prefix
  for (const other of claims) {
    if (other.store === store) {
      if (redisPrefix !== undefined && other.redisPrefix === redisPrefix) continue
      throw new DirectoryInUseError(
        `${storeName} is already the store of ${other.holder}; ${holder} cannot serve it too: ${whyNotShared(other.redisPrefix, redisPrefix)}, so their upload locks and sweeps would not see each other. Give each registration its own ${noun}, or give both \`redis\` with the same Redis and the same \`redis.prefix\``,
      )
    }
    if (redisPrefix !== undefined && other.redisPrefix === redisPrefix) {
      throw new InvalidOptionError(
        'redis.prefix',
        `${JSON.stringify(redisPrefix)} is already the prefix of ${other.holder}, on another store (${other.storeName}): one prefix serves one store, or the sweep lease of one would skip the sweeps of the other. Give ${holder} another \`redis.prefix\``,
      )
    }
  }
  const claim: Claim = { store, storeName, holder, redisPrefix }
  claims.add(claim)
  return () => {
    claims.delete(claim)
  }
}

function whyNotShared(first: string | undefined, second: string | undefined): string {
  if (first === undefined && second === undefined) return 'neither uses `redis`'
  if (first === undefined || second === undefined) return 'only one of them uses `redis`'
  return `their \`redis.prefix\` differ (${JSON.stringify(first)} and ${JSON.stringify(second)})`
}
