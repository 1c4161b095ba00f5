/**
 * Downloads of finished uploads from a stock @tus/s3-store `S3Store` on a real S3 API (Ceph
 * radosgw, or the server `S3_ENDPOINT` names): ranges read by ranged GetObject, S3's ETag and
 * LastModified as validators, conditional answers. Each test has a bucket of its own.
 */
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { request } from '../helpers/http.js'
import { s3Store, testBucket } from '../helpers/s3.js'
import { startServer } from '../helpers/server.js'
import { createUpload, patch } from '../helpers/tus-client.js'

const MiB = 1024 * 1024

/** A GET with `headers`; the body as bytes. */
async function get(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers })
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) }
}

/** A server on a bucket of its own, and a finished upload of `data` (PATCHed in 5 MiB parts). */
async function finishedOnS3(data: Buffer) {
  const { client, bucket } = await testBucket()
  const { endpoint } = await startServer({ datastore: s3Store(bucket), expireAfterMs: 60_000 })
  const { url, id } = await createUpload(endpoint, data.length, {
    'Upload-Metadata': `filetype ${Buffer.from('video/mp4').toString('base64')}`,
  })
  for (let offset = 0; offset < data.length; offset += 5 * MiB) {
    const res = await patch(url, offset, data.subarray(offset, offset + 5 * MiB))
    expect(res.status).toBe(204)
  }
  return { client, bucket, endpoint, url, id }
}

describe('S3Store downloads', () => {
  it('answers ranges with 206 and exactly those bytes, across a part boundary; 416 past the end', async () => {
    const data = randomBytes(6 * MiB + 123)
    const { url } = await finishedOnS3(data)
    const size = data.length
    const cases: Array<[string, number, number]> = [
      [`bytes=${5 * MiB - 10}-${5 * MiB + 9}`, 5 * MiB - 10, 5 * MiB + 9],
      [`bytes=${size - 100}-`, size - 100, size - 1],
      ['bytes=-50', size - 50, size - 1],
      ['bytes=0-0', 0, 0],
    ]
    for (const [range, start, end] of cases) {
      const res = await get(url, { Range: range })
      expect(res.status, range).toBe(206)
      expect(res.headers.get('content-range'), range).toBe(`bytes ${start}-${end}/${size}`)
      expect(res.body.equals(data.subarray(start, end + 1)), range).toBe(true)
      expect(res.headers.get('content-type')).toBe('video/mp4')
    }
    const whole = await get(url)
    expect(whole.status).toBe(200)
    expect(whole.body.equals(data)).toBe(true)
    const past = await request(url, 'GET', { Range: `bytes=${size}-` })
    expect(past.status).toBe(416)
    expect(past.headers['content-range']).toBe(`bytes */${size}`)
  }, 60_000)

  it('validates with the object’s own ETag and LastModified: 304, and If-Range only while they are current', async () => {
    const data = randomBytes(1000)
    const { client, bucket, id, url } = await finishedOnS3(data)
    const object = await client.headObject({ Bucket: bucket, Key: id })
    const first = await request(url, 'GET')
    expect(first.headers.etag).toBe(object.ETag)
    expect(first.headers['last-modified']).toBe(object.LastModified?.toUTCString())
    const etag = String(first.headers.etag)
    expect((await request(url, 'GET', { 'If-None-Match': etag })).status).toBe(304)
    const since = { 'If-Modified-Since': String(first.headers['last-modified']) }
    expect((await request(url, 'GET', since)).status).toBe(304)
    const ranged = await get(url, { Range: 'bytes=10-19', 'If-Range': etag })
    expect(ranged.status).toBe(206)
    expect(ranged.body.equals(data.subarray(10, 20))).toBe(true)
    // The app replaces the object: the old tag gets the new bytes whole.
    const replaced = randomBytes(1000)
    await client.putObject({ Bucket: bucket, Key: id, Body: replaced })
    const stale = await get(url, { Range: 'bytes=10-19', 'If-Range': etag })
    expect(stale.status).toBe(200)
    expect(stale.body.equals(replaced)).toBe(true)
    expect(stale.headers.get('etag')).not.toBe(etag)
  }, 60_000)

  it('answers 404 to GET of an unfinished upload, and of an empty one (S3Store makes it no object)', async () => {
    const { bucket } = await testBucket()
    const { endpoint } = await startServer({ datastore: s3Store(bucket), expireAfterMs: 60_000 })
    const { url } = await createUpload(endpoint, 100)
    expect((await patch(url, 0, Buffer.alloc(10))).status).toBe(204)
    const res = await request(url, 'GET', { Range: 'bytes=0-1' })
    expect(res.status).toBe(404)
    const empty = await createUpload(endpoint, 0)
    expect((await request(empty.url, 'GET')).status).toBe(404)
  }, 60_000)
})
