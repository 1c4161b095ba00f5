'use strict'
/**
 * `require('fastify-tus/sweep')`: the ES module's namespace (Node 20.19+ require(esm)), the same
 * module instance that `import 'fastify-tus/sweep'` gets.
 */
module.exports = require('../dist/src/sweep/index.js')
