/**
 * The plugin's options: their types (options/types.ts) and `resolveOptions`, which applies the
 * defaults and checks every value against the option tables (options/resolve.ts), naming the
 * option at fault.
 */
export { DEFAULTS, resolveOptions } from './resolve.js'
export type {
  FastifyTusMetricsOptions,
  FastifyTusOptions,
  FastifyTusRedisOptions,
  MetricsRegistry,
  ResolvedMetricsOptions,
  ResolvedOptions,
  ResolvedRedisOptions,
  TusServerOptions,
} from './types.js'
