import { execFileSync } from 'node:child_process'

/** Child-process tests (the demo server, exit-on-close) run the built package: build it once. */
export default function setup() {
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], {
    stdio: 'inherit',
  })
}
