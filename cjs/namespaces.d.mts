/**
 * Namespaces declared from a CommonJS file (`declare module 'fastify-tus'` resolves to
 * index.d.cts there) reach the interface that types the decorators, the ES module's. An ES module
 * file, since a CommonJS one cannot augment an ES module under `module: node16`; index.d.cts
 * references it, so it is in every program that loads the CommonJS types.
 */
import type * as cjs from './index.cjs'

declare module '../dist/src/endpoints.js' {
  interface FastifyTusNamespaces extends cjs.FastifyTusNamespaces {}
}
