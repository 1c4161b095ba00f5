import { execFileSync } from 'node:child_process'
import { rmSync } from 'node:fs'

/**
 * Child-process tests (the demo server, exit-on-close, the packed package) run the built package:
 * build it once, from a clean `dist/` (as `npm run build` and `npm pack` do), so that nothing left
 * by an older build is tested or packed. Under `npm test`, whose script builds just before, once
 * is enough.
 */
export default function setup() {
  // `npm test` has just built it (its script runs `npm run build` before vitest).
  if (process.env.npm_lifecycle_event === 'test') return
  rmSync('dist', { recursive: true, force: true })
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], {
    stdio: 'inherit',
  })
}
