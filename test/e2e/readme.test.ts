/**
 * The README's examples, run as written (only the port changed): the Quick start serves
 * uploads, refuses one over its `maxSize`, and closes gracefully on SIGTERM; the
 * `onUploadFinish` example moves a finished upload out of the store and leaves nothing behind.
 * They run as scripts inside the package, so `import 'fastify-tus'` is the built package.
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'
import { describe, expect, it, onTestFinished } from 'vitest'
import { pattern, sha256Of } from '../helpers/data.js'
import { exists, listing, sha256, tempDir } from '../helpers/fs.js'
import { request } from '../helpers/http.js'
import { head, TUS, tusUpload } from '../helpers/tus-client.js'
import { waitFor } from '../helpers/wait.js'

const README = await fs.readFile('README.md', 'utf8')

/** The first ```js block after the heading `heading`. */
function example(heading: string): string {
  const section = README.slice(README.indexOf(`\n## ${heading}\n`))
  const match = /```js\n([\s\S]*?)```/.exec(section)
  if (!match) throw new Error(`no js example under ## ${heading}`)
  return match[1] as string
}

/** Runs `code` as an ES module inside the package, with `cwd` as its working directory. */
async function runScript(code: string, cwd: string) {
  // Inside the package's folder, so that `fastify-tus` resolves to the package itself.
  const dir = await fs.mkdtemp(path.resolve('test-output/readme-'))
  onTestFinished(() => fs.rm(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'example.mjs')
  await fs.writeFile(file, code)
  const child = spawn(process.execPath, [file], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  const out = { text: '' }
  child.stdout.on('data', (c) => {
    out.text += c
  })
  child.stderr.on('data', (c) => {
    out.text += c
  })
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
  onTestFinished(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  const match = await waitFor(
    () => /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(out.text),
    10_000,
    'the example to listen',
  ).catch((error) => {
    throw new Error(`${(error as Error).message}\n${out.text}`)
  })
  return { child, exited, out, origin: match[1] as string }
}

describe('the README examples', () => {
  it('Quick start: serves uploads, refuses one over maxSize, closes on SIGTERM and exits 0', async () => {
    await fs.mkdir('test-output', { recursive: true })
    const cwd = await tempDir()
    const code = example('Quick start').replace('port: 1080', "port: 0, host: '127.0.0.1'")
    expect(code).toContain("port: 0, host: '127.0.0.1'")
    const app = await runScript(code, cwd)
    const endpoint = `${app.origin}/files`

    const data = pattern(3 * 1024 * 1024, 4)
    const url = await tusUpload(endpoint, data)
    const id = url.split('/').pop() as string
    expect(await sha256(path.join(cwd, 'uploads', id))).toBe(sha256Of(data))

    const tooBig = await request(endpoint, 'POST', {
      ...TUS,
      'Upload-Length': String(2 * 1024 ** 3),
    })
    expect(tooBig.status).toBe(413)

    app.child.kill('SIGTERM')
    expect(await app.exited).toBe(0)
    // close() ran: the plugin wrote its close marker (the downtime given back at the next start).
    expect(await exists(path.join(cwd, 'uploads', '.fastify-tus-closed'))).toBe(true)
  })

  it('onUploadFinish moves a finished upload out of the store: byte-identical, HEAD 404, nothing left to sweep; with parallelUploads too', async () => {
    await fs.mkdir('test-output', { recursive: true })
    const cwd = await tempDir()
    await fs.mkdir(path.join(cwd, 'files'))
    const code = [
      "import Fastify from 'fastify'",
      "import fastifyTus from 'fastify-tus'",
      'const app = Fastify({ logger: true })',
      example('Finished uploads are yours'),
      "await app.listen({ port: 0, host: '127.0.0.1' })",
      "process.on('SIGTERM', () => app.close().then(() => process.exit(0)))",
    ].join('\n')
    const app = await runScript(code, cwd)
    const endpoint = `${app.origin}/files`

    const data = pattern(2 * 1024 * 1024 + 5, 9)
    const url = await tusUpload(endpoint, data, { chunkSize: 512 * 1024 })
    const id = url.split('/').pop() as string
    expect(await sha256(path.join(cwd, 'files', id))).toBe(sha256Of(data))
    expect((await head(url)).status).toBe(404)
    expect(await listing(path.join(cwd, 'uploads'))).toEqual([])

    // With parallelUploads the hook sees the final only (its partials are steps of it), so the
    // recipe moves the whole upload and the final's creation finds its partials.
    const parallel = pattern(3 * 1024 * 1024 + 7, 4)
    const finalUrl = await tusUpload(endpoint, parallel, { parallelUploads: 4 })
    const finalId = finalUrl.split('/').pop() as string
    expect(await sha256(path.join(cwd, 'files', finalId))).toBe(sha256Of(parallel))
    expect((await fs.readdir(path.join(cwd, 'files'))).sort()).toEqual([id, finalId].sort())
    expect((await head(finalUrl)).status).toBe(404)
    // What stays a while: the partials' records, marked taken, for a retried final creation.
    const left = await listing(path.join(cwd, 'uploads'))
    expect(left).toHaveLength(4)
    expect(left.every((name) => name.endsWith('.json'))).toBe(true)

    app.child.kill('SIGTERM')
    expect(await app.exited).toBe(0)
  })
})
