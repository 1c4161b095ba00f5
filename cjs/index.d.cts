/**
 * Types of `require('fastify-tus')` (`import fastifyTus = require('fastify-tus')` in a CommonJS
 * TypeScript file): the plugin, whose namespace holds every export of the ES module's types
 * (dist/src/index.d.ts), as @fastify/* plugins type themselves.
 */
/// <reference path="./namespaces.d.mts" />
import type * as esm from '../dist/src/index.js' with { 'resolution-mode': 'import' }

type Plugin = typeof esm.fastifyTus

/** The plugin (a declared function, so that its namespace below can merge with it). */
declare function fastifyTus(...args: Parameters<Plugin>): ReturnType<Plugin>

declare namespace fastifyTus {
  export type FastifyTusOptions = esm.FastifyTusOptions
  export type FastifyTusRedisOptions = esm.FastifyTusRedisOptions
  export type FastifyTusMetricsOptions = esm.FastifyTusMetricsOptions
  export type MetricsRegistry = esm.MetricsRegistry
  export type FastifyTusNamespaced<T> = esm.FastifyTusNamespaced<T>
  export type FastifyTusNamespace = esm.FastifyTusNamespace
  export type FastifyTusDecorated<T> = esm.FastifyTusDecorated<T>
  /**
   * An app's namespaces, declared from a CommonJS file (`declare module 'fastify-tus'`), merge
   * into this interface; the ES module's `FastifyTusNamespaces`, which types the decorators,
   * extends it (namespaces.d.mts).
   */
  // biome-ignore lint/suspicious/noEmptyInterface: an interface, and empty, so that apps can merge their namespaces into it
  export interface FastifyTusNamespaces {}
  export type TusServerOptions = esm.TusServerOptions
  export type TusCleanupDecorator = esm.TusCleanupDecorator
  export type PendingFinish = esm.PendingFinish
  export type RedisClient = esm.RedisClient
  export type SweepReport = esm.SweepReport
  export type RunOptions = esm.RunOptions
  export type Upload = esm.Upload

  export const EVENTS: typeof esm.EVENTS
  export const DEFAULT_ID_PATTERN: typeof esm.DEFAULT_ID_PATTERN

  export const fastifyRequestOf: typeof esm.fastifyRequestOf

  export const AlreadyRegisteredError: typeof esm.AlreadyRegisteredError
  export const ClosedError: typeof esm.ClosedError
  export const DirectoryError: typeof esm.DirectoryError
  export const DirectoryInUseError: typeof esm.DirectoryInUseError
  export const IncompatibleTusError: typeof esm.IncompatibleTusError
  export const InvalidOptionError: typeof esm.InvalidOptionError
  export const InvalidUploadIdError: typeof esm.InvalidUploadIdError
  export const LockQueueFullError: typeof esm.LockQueueFullError
  export type LockQueueFullError = esm.LockQueueFullError
  export const LockTimeoutError: typeof esm.LockTimeoutError
  export type LockTimeoutError = esm.LockTimeoutError
  export const LockUnavailableError: typeof esm.LockUnavailableError
  export type LockUnavailableError = esm.LockUnavailableError
  export const MetricsUnavailableError: typeof esm.MetricsUnavailableError
  export const S3CacheError: typeof esm.S3CacheError

  const plugin: Plugin

  export { plugin as default, plugin as fastifyTus }
}

export = fastifyTus
