#!/usr/bin/env node
// The house rules on size, as CONTRIBUTING.md states them: no file in src/ over 500 lines, no
// function over 80, counted as an editor shows them (comments and blank lines included), which is
// stricter than Biome's noExcessiveLines* rules (they count code only). Exits 1 naming each one.
import fs from 'node:fs'
import path from 'node:path'
// Vite's own parser (oxc, through rolldown), already installed for vitest: TypeScript 7 has no JS API.
import { parseAst } from 'rolldown/parseAst'

const MAX_FILE_LINES = 500
const MAX_FUNCTION_LINES = 80
const root = process.argv[2] ?? 'src'

function* sources(dir) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name)
    if (entry.isDirectory()) yield* sources(file)
    else if (/\.(ts|mts|cts)$/.test(entry.name) && !entry.name.endsWith('.d.ts')) yield file
  }
}

const FUNCTIONS = new Set(['FunctionDeclaration', 'FunctionExpression', 'ArrowFunctionExpression'])

/** Line numbers (1-based) of each offset, from the text's line starts. */
function lineOf(starts, offset) {
  let low = 0
  let high = starts.length - 1
  while (low < high) {
    const mid = (low + high + 1) >> 1
    if (starts[mid] <= offset) low = mid
    else high = mid - 1
  }
  return low + 1
}

function nameOf(node, parent) {
  if (node.id?.name) return node.id.name
  const key = parent?.key ?? parent?.id
  return key?.name ?? key?.value ?? '(anonymous)'
}

const problems = []
for (const file of sources(root)) {
  const text = fs.readFileSync(file, 'utf8')
  const lines = text.split('\n').length - (text.endsWith('\n') ? 1 : 0)
  if (lines > MAX_FILE_LINES) problems.push(`${file}: ${lines} lines (at most ${MAX_FILE_LINES})`)
  const starts = [0]
  for (let i = 0; i < text.length; i++) if (text[i] === '\n') starts.push(i + 1)
  const visit = (node, parent) => {
    if (node === null || typeof node !== 'object') return
    if (Array.isArray(node)) {
      for (const child of node) visit(child, parent)
      return
    }
    if (FUNCTIONS.has(node.type) && node.body) {
      // A method's function starts at its key, as an editor shows it.
      const from = parent?.type === 'MethodDefinition' ? parent.start : node.start
      const span = lineOf(starts, node.end) - lineOf(starts, from) + 1
      if (span > MAX_FUNCTION_LINES) {
        const at = lineOf(starts, from)
        problems.push(
          `${file}:${at}: ${nameOf(node, parent)} is ${span} lines (at most ${MAX_FUNCTION_LINES})`,
        )
      }
    }
    for (const [key, child] of Object.entries(node)) {
      if (key !== 'type' && child && typeof child === 'object') visit(child, node)
    }
  }
  visit(parseAst(text, { lang: 'ts' }, file), undefined)
}
for (const problem of problems) console.error(problem)
process.exit(problems.length > 0 ? 1 : 0)
