import { execFileSync } from 'node:child_process'
import { rmSync } from 'node:fs'

/**
 * Child-process tests (the demo server, exit-on-close, the packed package) run the built package:
 * build it once, from a clean `dist/` (as `npm run build` and `npm pack` do), so that nothing left
 * by an older build is tested or packed.
 */
export default function setup() {
  rmSync('dist', { recursive: true, force: true })
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], {
    stdio: 'inherit',
  })
}
