/**
 * The import rules of src/ (`npm run lint:deps`): imports run one way, down the layers below, and
 * never in a circle. Type-only imports count too (`tsPreCompilationDeps`): a type that reaches
 * back up ties the layers together as much as a value does.
 *
 * A module may import its own layer and any layer under it, never one above.
 */
const LAYERS = [
  {
    name: 'entry',
    path: [
      '^src/plugin[.]ts$',
      '^src/endpoints[.]ts$',
      '^src/index[.]ts$',
      '^src/sweep/index[.]ts$',
      '^src/cli/',
    ],
  },
  { name: 'http', path: ['^src/http/', '^src/metrics[.]ts$'] },
  { name: 'finish', path: ['^src/finish/'] },
  { name: 'backends', path: ['^src/backends/'] },
  {
    name: 'services',
    path: [
      '^src/expiry/',
      '^src/locking/',
      '^src/redis/',
      '^src/sweep/schedule[.]ts$',
      '^src/sweep/report[.]ts$',
      '^src/options/',
    ],
  },
  { name: 'tus-internals', path: ['^src/tus-internals[.]ts$'] },
  { name: 'base', path: ['^src/errors[.]ts$', '^src/refusal[.]ts$', '^src/duration[.]ts$'] },
]

const layerRules = LAYERS.slice(1).map((layer, i) => {
  const above = LAYERS.slice(0, i + 1)
  return {
    name: `no-import-above-${layer.name}`,
    comment: `${layer.name} imports only its own layer and those under it, not ${above.map((l) => l.name).join(', ')}`,
    severity: 'error',
    from: { path: layer.path },
    to: { path: above.flatMap((l) => l.path) },
  }
})

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'A cycle, type-only imports included, ties its modules into one.',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'no-unlayered',
      comment: 'Every module of src/ belongs to a layer: add a new folder to LAYERS.',
      severity: 'error',
      from: {},
      to: { path: '^src/', pathNot: LAYERS.flatMap((l) => l.path) },
    },
    ...layerRules,
  ],
  options: {
    includeOnly: '^src/',
    doNotFollow: { path: 'node_modules' },
    // TypeScript 7 has no compiler API for dependency-cruiser: swc parses the sources, and it
    // reports every import declaration, type-only ones included.
    parser: 'swc',
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.js'],
    },
  },
}
