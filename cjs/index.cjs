'use strict'
/**
 * `require('fastify-tus')`: the plugin function itself, carrying every export of the ES module
 * (`.default`, `.fastifyTus`, the errors, ...), as @fastify/* plugins export themselves.
 *
 * Node 20.19+ loads the ES module with require(esm): this is the very module instance that
 * `import 'fastify-tus'` gets (one copy of the plugin, its state and its error classes, whichever
 * way an application and its dependencies load it), not a second build.
 */
const esm = require('../dist/src/index.js')

const plugin = esm.default
for (const name of Object.keys(esm)) {
  // `__esModule` is Node's mark on the namespace of an ES module with a default export.
  if (name !== '__esModule' && !(name in plugin)) plugin[name] = esm[name]
}
module.exports = plugin
