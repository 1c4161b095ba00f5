/**
 * Malformed and hostile requests against one real server holding real uploads: each is answered
 * with a 4xx that says why, the server stays up, no upload changes, no file appears or changes
 * in the upload directory or beside it.
 */
import { createHash } from 'node:crypto'
import fs from 'node:fs/promises'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fastifyTus from '../src/index.js'
import { pattern } from './helpers/data.js'
import { tempDir } from './helpers/fs.js'
import { type RawResponse, request } from './helpers/http.js'
import { type LogRecord, logCapture, startServer } from './helpers/server.js'
import { createUpload, head, patch, TUS } from './helpers/tus-client.js'

const MAX_SIZE = 10_000
const OCTETS = { 'Content-Type': 'application/offset+octet-stream' }

/** A request as sent on the wire: the path is not normalised by any URL parser. */
interface BadRequest {
  name: string
  method: string
  /** `{unfinished}`, `{finished}` and `{deferred}` stand for the ids of the uploads below. */
  path: string
  headers?: Record<string, string | string[]>
  body?: Buffer | string
  status: number
}

const upload = (id: string) => `/files/{${id}}`
const post = (headers: Record<string, string | string[]>, body?: Buffer | string) => ({
  method: 'POST',
  path: '/files',
  headers: { ...TUS, ...headers },
  body,
})
const postWithMetadata = (metadata: string) =>
  post({ 'Upload-Length': '10', 'Upload-Metadata': metadata })
/** A PATCH of the unfinished upload (300 of 1000 bytes) with these headers. */
const patchUnfinished = (
  headers: Record<string, string | string[]>,
  body: Buffer | string = 'x',
) => ({
  method: 'PATCH',
  path: upload('unfinished'),
  headers: { ...TUS, ...OCTETS, ...headers },
  body,
})
/** A PATCH of the deferred-length upload (200 bytes so far). */
const patchDeferred = (headers: Record<string, string>, body: Buffer | string = 'x') => ({
  method: 'PATCH',
  path: upload('deferred'),
  headers: { ...TUS, ...OCTETS, 'Upload-Offset': '200', ...headers },
  body,
})
const del = (path: string) => ({ method: 'DELETE', path, headers: TUS })
const withBody = (method: string, path: string) => ({
  method,
  path,
  headers: { ...TUS, ...OCTETS, 'Upload-Offset': '0' },
  body: 'evil',
})

const CASES: BadRequest[] = [
  // Upload-Length on creation
  { name: 'non-numeric Upload-Length', ...post({ 'Upload-Length': 'abc' }), status: 400 },
  { name: 'negative Upload-Length', ...post({ 'Upload-Length': '-1' }), status: 400 },
  { name: 'fractional Upload-Length', ...post({ 'Upload-Length': '1.5' }), status: 400 },
  { name: 'exponent Upload-Length', ...post({ 'Upload-Length': '1e3' }), status: 400 },
  { name: 'hexadecimal Upload-Length', ...post({ 'Upload-Length': '0x10' }), status: 400 },
  { name: 'Upload-Length with a plus sign', ...post({ 'Upload-Length': '+10' }), status: 400 },
  { name: 'empty Upload-Length', ...post({ 'Upload-Length': '' }), status: 400 },
  {
    name: 'huge Upload-Length (40 digits)',
    ...post({ 'Upload-Length': '9'.repeat(40) }),
    status: 400,
  },
  {
    name: 'Upload-Length above 2^53',
    ...post({ 'Upload-Length': '9007199254740993' }),
    status: 400,
  },
  { name: 'two Upload-Length headers', ...post({ 'Upload-Length': ['10', '20'] }), status: 400 },
  { name: 'neither Upload-Length nor Upload-Defer-Length', ...post({}), status: 400 },
  {
    name: 'Upload-Length above maxSize',
    ...post({ 'Upload-Length': String(MAX_SIZE + 1) }),
    status: 413,
  },
  {
    name: 'Upload-Length of 2^53 - 1',
    ...post({ 'Upload-Length': String(Number.MAX_SAFE_INTEGER) }),
    status: 413,
  },
  // Upload-Defer-Length
  { name: 'Upload-Defer-Length 0', ...post({ 'Upload-Defer-Length': '0' }), status: 400 },
  { name: 'Upload-Defer-Length 2', ...post({ 'Upload-Defer-Length': '2' }), status: 400 },
  { name: 'Upload-Defer-Length true', ...post({ 'Upload-Defer-Length': 'true' }), status: 400 },
  {
    name: 'Upload-Defer-Length with Upload-Length',
    ...post({ 'Upload-Defer-Length': '1', 'Upload-Length': '10' }),
    status: 400,
  },
  // Creation with upload
  {
    name: 'creation body longer than its Upload-Length',
    ...post({ 'Upload-Length': '10', ...OCTETS }, pattern(20)),
    status: 413,
  },
  {
    name: 'deferred-length creation body above maxSize',
    ...post({ 'Upload-Defer-Length': '1', ...OCTETS }, pattern(MAX_SIZE + 1)),
    status: 413,
  },
  {
    name: 'creation body of another type',
    ...post({ 'Upload-Length': '10', 'Content-Type': 'text/plain' }, 'hello'),
    status: 415,
  },
  // Upload-Metadata
  { name: 'metadata value of bad base64 length', ...postWithMetadata('name abc'), status: 400 },
  {
    name: 'metadata value with non-base64 characters',
    ...postWithMetadata('name ab!='),
    status: 400,
  },
  { name: 'duplicate metadata keys', ...postWithMetadata('a YQ==,a Yg=='), status: 400 },
  { name: 'empty metadata key', ...postWithMetadata('a YQ==, Yg=='), status: 400 },
  { name: 'metadata key that is not ASCII', ...postWithMetadata('cl\u00e9 YQ=='), status: 400 },
  { name: 'metadata pair of three tokens', ...postWithMetadata('a YQ== Yg=='), status: 400 },
  { name: 'metadata of commas only', ...postWithMetadata(',,'), status: 400 },
  { name: 'metadata key __proto__', ...postWithMetadata('__proto__ YQ=='), status: 400 },
  // HEAD answers the metadata back: past 8 KiB, Node clients could not read that answer
  {
    name: 'metadata over 8 KiB (9 KiB, within the request header limit)',
    ...postWithMetadata(`a ${'QUFB'.repeat(2304)}`),
    status: 400,
  },
  // Node's 16 KiB header limit (Fastify answers it)
  {
    name: 'huge metadata value (20 KiB)',
    ...postWithMetadata(`a ${'QUFB'.repeat(5120)}`),
    status: 431,
  },
  // Upload-Offset
  { name: 'PATCH without Upload-Offset', ...patchUnfinished({}), status: 400 },
  {
    name: 'non-numeric Upload-Offset',
    ...patchUnfinished({ 'Upload-Offset': 'abc' }),
    status: 400,
  },
  { name: 'negative Upload-Offset', ...patchUnfinished({ 'Upload-Offset': '-1' }), status: 400 },
  {
    name: 'fractional Upload-Offset',
    ...patchUnfinished({ 'Upload-Offset': '300.5' }),
    status: 400,
  },
  { name: 'exponent Upload-Offset', ...patchUnfinished({ 'Upload-Offset': '3e2' }), status: 400 },
  { name: 'empty Upload-Offset', ...patchUnfinished({ 'Upload-Offset': '' }), status: 400 },
  {
    name: 'huge Upload-Offset (40 digits)',
    ...patchUnfinished({ 'Upload-Offset': '9'.repeat(40) }),
    status: 400,
  },
  {
    name: 'two Upload-Offset headers',
    ...patchUnfinished({ 'Upload-Offset': ['300', '300'] }),
    status: 400,
  },
  {
    name: 'Upload-Offset behind the upload',
    ...patchUnfinished({ 'Upload-Offset': '0' }),
    status: 409,
  },
  {
    name: 'Upload-Offset beyond the length',
    ...patchUnfinished({ 'Upload-Offset': '2000' }),
    status: 409,
  },
  {
    name: 'Upload-Offset of 2^53 - 1',
    ...patchUnfinished({ 'Upload-Offset': String(Number.MAX_SAFE_INTEGER) }),
    status: 409,
  },
  {
    name: 'PATCH body longer than the declared length',
    ...patchUnfinished({ 'Upload-Offset': '300' }, pattern(701)),
    status: 413,
  },
  {
    name: 'PATCH of a finished upload',
    method: 'PATCH',
    path: upload('finished'),
    headers: { ...TUS, ...OCTETS, 'Upload-Offset': '500' },
    body: 'x',
    status: 413,
  },
  {
    name: 'PATCH with Upload-Length on an upload whose length is known',
    ...patchUnfinished({ 'Upload-Offset': '300', 'Upload-Length': '2000' }),
    status: 400,
  },
  {
    name: 'PATCH declaring a length below the offset',
    ...patchDeferred({ 'Upload-Length': '100' }),
    status: 400,
  },
  {
    name: 'PATCH declaring a non-numeric length',
    ...patchDeferred({ 'Upload-Length': 'abc' }),
    status: 400,
  },
  {
    name: 'PATCH declaring a length above maxSize',
    ...patchDeferred({ 'Upload-Length': String(MAX_SIZE + 1) }),
    status: 413,
  },
  {
    name: 'PATCH body beyond maxSize on a deferred length',
    ...patchDeferred({}, pattern(MAX_SIZE - 199)),
    status: 413,
  },
  {
    name: 'PATCH of another Content-Type',
    ...patchUnfinished({ 'Upload-Offset': '300', 'Content-Type': 'text/plain' }),
    status: 415,
  },
  {
    name: 'PATCH with a malformed Upload-Checksum',
    ...patchUnfinished({ 'Upload-Offset': '300', 'Upload-Checksum': 'sha1' }),
    status: 400,
  },
  {
    name: 'PATCH without Tus-Resumable',
    method: 'PATCH',
    path: upload('unfinished'),
    headers: { ...OCTETS, 'Upload-Offset': '300' },
    body: 'x',
    status: 412,
  },
  // Methods
  {
    name: 'PROPFIND on the collection',
    method: 'PROPFIND',
    path: '/files',
    headers: TUS,
    status: 404,
  },
  {
    name: 'TRACE on an upload',
    method: 'TRACE',
    path: upload('finished'),
    headers: TUS,
    status: 404,
  },
  { name: 'PUT on an upload', ...withBody('PUT', upload('finished')), status: 404 },
  {
    name: 'a method Node does not know',
    method: 'FROB',
    path: '/files',
    headers: TUS,
    status: 400,
  },
  { name: 'DELETE of the collection', ...del('/files'), status: 404 },
  // X-HTTP-Method-Override: @tus/server 2 ignores it; the plugin refuses it
  {
    name: 'POST overridden to DELETE on an upload',
    ...post({ 'X-HTTP-Method-Override': 'DELETE', 'Upload-Length': '10' }),
    path: upload('unfinished'),
    status: 400,
  },
  {
    name: 'POST overridden to DELETE on the collection',
    ...post({ 'X-HTTP-Method-Override': 'DELETE' }),
    status: 400,
  },
  {
    name: 'POST overridden to an unknown method',
    ...post({ 'X-HTTP-Method-Override': 'FROB', 'Upload-Length': '10' }),
    path: upload('finished'),
    status: 400,
  },
  {
    name: 'POST overridden to GET, with a body',
    ...post({ 'X-HTTP-Method-Override': 'GET', ...OCTETS }, 'evil'),
    path: upload('finished'),
    status: 400,
  },
  {
    name: 'POST overridden to PATCH (overridePatchMethod of tus-js-client)',
    ...post({ 'X-HTTP-Method-Override': 'PATCH', 'Upload-Offset': '300', ...OCTETS }, 'x'),
    path: upload('unfinished'),
    status: 400,
  },
  {
    name: 'DELETE overridden to GET',
    method: 'DELETE',
    path: upload('finished'),
    headers: { ...TUS, 'X-HTTP-Method-Override': 'GET' },
    status: 400,
  },
  // Ids that try to leave the directory, or name what is not an upload
  { name: 'id ..%2F..%2Fcanary', ...del('/files/..%2F..%2Fcanary'), status: 404 },
  { name: 'id ..%2Fcanary', ...del('/files/..%2Fcanary'), status: 404 },
  { name: 'id %2e%2e%2fcanary', ...del('/files/%2e%2e%2fcanary'), status: 404 },
  {
    name: 'double-encoded id %252e%252e%252fcanary',
    ...del('/files/%252e%252e%252fcanary'),
    status: 404,
  },
  { name: 'dot segment %2e%2e/canary', ...del('/files/%2e%2e/canary'), status: 404 },
  { name: 'raw dot segment ../canary', ...del('/files/../canary'), status: 404 },
  { name: 'raw .. as the id', ...del('/files/..'), status: 404 },
  { name: 'encoded backslash ..%5Ccanary', ...del('/files/..%5Ccanary'), status: 404 },
  { name: 'raw backslash ..\\canary', ...del('/files/..\\canary'), status: 404 },
  { name: 'encoded NUL a%00b', ...del('/files/a%00b'), status: 404 },
  { name: 'id of 300 bytes', ...del(`/files/${'a'.repeat(300)}`), status: 404 },
  { name: 'malformed percent-encoding', ...del('/files/%zz'), status: 400 },
  { name: 'PATCH through ..%2Fcanary', ...withBody('PATCH', '/files/..%2Fcanary'), status: 404 },
  {
    name: 'GET through ..%2F..%2Fcanary',
    method: 'GET',
    path: '/files/..%2F..%2Fcanary',
    status: 404,
  },
  { name: "DELETE of an upload's metadata file", ...del('/files/{finished}.json'), status: 404 },
  { name: 'DELETE of a foreign file in the directory', ...del('/files/notes.txt'), status: 404 },
  {
    name: "PATCH of an upload's metadata file",
    ...withBody('PATCH', '/files/{finished}.json'),
    status: 404,
  },
]

/** Sends the path exactly as given (http.request(url) would normalise it through URL). */
function send(origin: string, req: BadRequest, ids: Record<string, string>): Promise<RawResponse> {
  const rawPath = req.path.replace(/\{(\w+)\}/g, (_, key: string) => ids[key] as string)
  const headers: Record<string, string | string[] | number> = { ...req.headers }
  if (req.body !== undefined) headers['Content-Length'] = Buffer.byteLength(req.body)
  return request(origin, req.method, headers, req.body, { rawPath })
}

/** Every file under `root`: size, mtime and content hash. */
async function snapshot(root: string): Promise<Record<string, string>> {
  const files: Record<string, string> = {}
  for (const entry of await fs.readdir(root, { recursive: true, withFileTypes: true })) {
    const file = path.join(entry.parentPath, entry.name)
    const stat = await fs.lstat(file)
    if (!stat.isFile()) {
      files[path.relative(root, file)] = stat.isDirectory() ? 'dir' : 'other'
      continue
    }
    const hash = createHash('sha256')
      .update(await fs.readFile(file))
      .digest('hex')
    files[path.relative(root, file)] = `${stat.size} ${stat.mtimeMs} ${hash}`
  }
  return files
}

describe('bad input', () => {
  let parent: string
  let app: FastifyInstance
  let origin: string
  let logs: LogRecord[]
  const ids: Record<string, string> = {}
  const offsets: Record<string, string> = {}
  let before: Record<string, string>

  // One server for the whole table, so not startServer() (whose server closes after each test).
  beforeAll(async () => {
    // The upload directory sits in a directory of its own, beside a canary file.
    parent = await fs.mkdtemp(path.join(os.tmpdir(), 'fastify-tus-bad-input-'))
    const directory = path.join(parent, 'uploads')
    await fs.mkdir(directory)
    await fs.writeFile(path.join(parent, 'canary'), 'must stay\n')
    await fs.writeFile(path.join(directory, 'notes.txt'), "a user's own file\n")
    const capture = logCapture()
    logs = capture.records
    app = Fastify({ logger: { level: 'info', stream: capture.stream } })
    await app.register(fastifyTus, {
      directory,
      cleanupOnStart: false,
      tus: { maxSize: MAX_SIZE },
    })
    origin = await app.listen({ host: '127.0.0.1', port: 0 })
    const endpoint = `${origin}/files`

    const unfinished = await createUpload(endpoint, 1000, { 'Upload-Metadata': 'name YS5iaW4=' })
    expect((await patch(unfinished.url, 0, pattern(300))).status).toBe(204)
    const finished = await createUpload(endpoint, 500)
    expect((await patch(finished.url, 0, pattern(500, 1))).status).toBe(204)
    const deferred = await createUpload(endpoint, 'deferred')
    expect((await patch(deferred.url, 0, pattern(200, 2))).status).toBe(204)
    Object.assign(ids, { unfinished: unfinished.id, finished: finished.id, deferred: deferred.id })
    Object.assign(offsets, { unfinished: '300', finished: '500', deferred: '200' })
    before = await snapshot(parent)
  })

  afterAll(async () => {
    await app?.close()
    if (parent) await fs.rm(parent, { recursive: true, force: true })
  })

  it('holds enough cases', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(40)
    expect(new Set(CASES.map((c) => c.name)).size).toBe(CASES.length)
  })

  it.each(CASES)('$name: $status', async (req) => {
    const logsBefore = logs.length
    const answer = await send(origin, req, ids)
    expect(answer.status).toBe(req.status)
    // The reason, for a person: the body's text (every refusal here has one).
    expect(answer.body).toMatch(/[A-Za-z]{3,}/)

    // The server still answers.
    expect((await request(`${origin}/files`, 'OPTIONS')).status).toBe(204)
    // No upload changed, no file appeared, changed or went, inside or beside the directory.
    for (const [name, id] of Object.entries(ids)) {
      const status = await head(`${origin}/files/${id}`)
      expect(status.status, name).toBe(200)
      expect(status.headers['upload-offset'], name).toBe(offsets[name])
    }
    expect(await snapshot(parent)).toEqual(before)
    // Nothing failed inside: a refusal is not an error.
    expect(logs.slice(logsBefore).filter((r) => r.level >= 50)).toEqual([])
  })
})

describe('links and special files in the upload directory', () => {
  /** A server on `<parent>/uploads`, an outside file beside it, and one upload. */
  async function store(length: number | 'deferred' = 10) {
    const parent = await tempDir()
    const directory = path.join(parent, 'uploads')
    const outside = path.join(parent, 'outside')
    await fs.writeFile(outside, 'outside, never to be read or written\n')
    const server = await startServer({ directory, cleanupOnStart: false })
    const upload = await createUpload(server.endpoint, length)
    const untouched = async () => {
      expect(await fs.readFile(outside, 'utf8')).toBe('outside, never to be read or written\n')
    }
    return { directory, outside, server, upload, untouched }
  }

  it('a symbolic link in place of a data file: PATCH, GET and HEAD answer 404, the target is untouched', async () => {
    const { directory, outside, upload, untouched } = await store()
    await fs.rm(path.join(directory, upload.id))
    await fs.symlink(outside, path.join(directory, upload.id))
    expect((await patch(upload.url, 0, Buffer.from('evil'))).status).toBe(404)
    expect((await head(upload.url)).status).toBe(404)
    const get = await request(upload.url, 'GET', TUS)
    expect(get.status).toBe(404)
    expect(get.body).not.toContain('outside')
    await untouched()
  })

  it('a hard link in place of a data file: PATCH, GET and HEAD answer 404, the other name is untouched', async () => {
    const { directory, outside, upload, untouched } = await store()
    await fs.rm(path.join(directory, upload.id))
    await fs.link(outside, path.join(directory, upload.id))
    expect((await patch(upload.url, 0, Buffer.from('evil'))).status).toBe(404)
    expect((await head(upload.url)).status).toBe(404)
    expect((await request(upload.url, 'GET', TUS)).status).toBe(404)
    await untouched()
  })

  it('a symbolic link in place of a record: 404, and declaring the length does not write through it', async () => {
    const { directory, outside, upload } = await store('deferred')
    const record = path.join(directory, `${upload.id}.json`)
    // The outside file is a valid record of the upload: a store that followed the link would use it.
    const text = await fs.readFile(record, 'utf8')
    await fs.writeFile(outside, text)
    await fs.rm(record)
    await fs.symlink(outside, record)
    expect((await head(upload.url)).status).toBe(404)
    const declared = await patch(upload.url, 0, Buffer.from('abc'), { 'Upload-Length': '3' })
    expect(declared.status).toBe(404)
    expect(await fs.readFile(outside, 'utf8')).toBe(text)
  })

  it('a record that is /dev/zero, or larger than a record can be, answers 404 at once', async () => {
    const { directory, server, untouched } = await store()
    const zero = await createUpload(server.endpoint, 10)
    await fs.rm(path.join(directory, `${zero.id}.json`))
    await fs.symlink('/dev/zero', path.join(directory, `${zero.id}.json`))
    const huge = await createUpload(server.endpoint, 10)
    await fs.writeFile(path.join(directory, `${huge.id}.json`), ' '.repeat(100 * 1024))
    const started = performance.now()
    expect((await head(zero.url)).status).toBe(404)
    expect((await head(huge.url)).status).toBe(404)
    // Reading /dev/zero whole took seconds and hundreds of MB per HEAD.
    expect(performance.now() - started).toBeLessThan(1000)
    await untouched()
  })
})

describe('answers', () => {
  it('carry the standard reason phrase', async () => {
    const server = await startServer({ cleanupOnStart: false })
    const phrase = (method: string, url: string, headers: Record<string, string | number>) =>
      new Promise<string>((resolve, reject) => {
        const req = http.request(url, { method, headers, agent: false }, (res) => {
          res.resume()
          resolve(`${res.statusCode} ${res.statusMessage}`)
        })
        req.on('error', reject)
        req.end()
      })
    expect(await phrase('POST', server.endpoint, { ...TUS, 'Upload-Length': 3 })).toBe(
      '201 Created',
    )
    expect(await phrase('OPTIONS', server.endpoint, {})).toBe('204 No Content')
    expect(await phrase('HEAD', `${server.endpoint}/${'0'.repeat(32)}`, TUS)).toBe('404 Not Found')
    expect(await phrase('POST', server.endpoint, {})).toBe('412 Precondition Failed')
  })
})
