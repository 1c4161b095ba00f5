import { execFileSync } from 'node:child_process'
import { readdirSync, statSync, writeFileSync } from 'node:fs'
import path from 'node:path'

/**
 * Child-process tests (the demo server, exit-on-close, the packed package) run the built package:
 * build it once, from a clean `dist/` (as `npm run build` and `npm pack` do), so that nothing left
 * by an older build is tested or packed. Under `npm test`, whose script builds just before, once
 * is enough; and a build this setup made is reused while no source has changed since (a file
 * added, removed or renamed changes its folder's time, so that counts too).
 */
const STAMP = 'dist/.tests-built'
const SOURCES = [
  'src',
  'demo',
  'bench',
  'test',
  'tsconfig.json',
  'tsconfig.build.json',
  'package.json',
]

export default function setup() {
  // `npm test` has just built it (its script runs `npm run build` before vitest).
  if (process.env.npm_lifecycle_event === 'test') return
  if (builtSince(SOURCES)) return
  // The package's own build (a clean dist/, tsc, the CLI's run bit), as `npm pack` runs it.
  execFileSync('npm', ['run', '--silent', 'build'], { stdio: 'inherit' })
  writeFileSync(STAMP, '')
}

/** True when this setup's last build is newer than every source file and folder. */
function builtSince(sources: string[]): boolean {
  let stamp: number
  try {
    stamp = statSync(STAMP).mtimeMs
  } catch {
    return false
  }
  const newest = (entry: string): number => {
    const stats = statSync(entry)
    if (!stats.isDirectory()) return stats.mtimeMs
    let latest = stats.mtimeMs
    for (const name of readdirSync(entry)) {
      if (name === 'node_modules' || name === '.data') continue
      latest = Math.max(latest, newest(path.join(entry, name)))
    }
    return latest
  }
  return sources.every((source) => {
    try {
      return newest(source) < stamp
    } catch {
      return true // a source that does not exist has not changed
    }
  })
}
