/**
 * The assembly's copy alone, against `cat` of the same files: `node concat-worker.js <dir>
 * <partMiB> <parts> <rounds>`. Writes <parts> files of <partMiB> MiB into <dir>, then each round
 * joins them into a new file with the store's `concatenateFiles` as the store calls it
 * (`assembly`: `cat` in the kernel here), with its copy through buffers in Node (`node`, where no
 * `cat` is found) and with a shell's `cat` (contenders rotated, each after a `sync`), removing the
 * result. Prints every round's times in ms.
 */
import { execFileSync } from 'node:child_process'
import { randomFillSync } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { concatenateFiles } from '../src/backends/file/concatenation.js'

const [dir, partArg, partsArg, roundsArg] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
]
const bytes = Number(partArg) * 1024 * 1024
const data = randomFillSync(Buffer.alloc(bytes))
const files = Array.from({ length: Number(partsArg) }, (_, i) => path.join(dir, `part-${i}`))
for (const file of files) fs.writeFileSync(file, data)

const contenders: Record<string, (target: string) => Promise<unknown> | unknown> = {
  assembly: (target) =>
    concatenateFiles(
      files.map((file) => ({ file, bytes })),
      target,
    ),
  node: (target) =>
    concatenateFiles(
      files.map((file) => ({ file, bytes })),
      target,
      'node',
    ),
  cat: (target) => execFileSync('sh', ['-c', 'cat "$@" > "$0"', target, ...files]),
}
const times: Record<string, number[]> = { assembly: [], node: [], cat: [] }
for (let round = 0; round < Number(roundsArg); round++) {
  const names = Object.keys(times)
  const order = names.map((_, i) => names[(i + round) % names.length] as string)
  for (const name of order) {
    execFileSync('sync')
    const target = path.join(dir, `joined-${name}`)
    const started = performance.now()
    await contenders[name]?.(target)
    times[name]?.push(performance.now() - started)
    fs.unlinkSync(target)
  }
}
for (const file of files) fs.unlinkSync(file)
process.stdout.write(`${JSON.stringify(times)}\n`)
