/**
 * Downloads of an S3Store's finished uploads (backend.ts `Downloads`): the object S3Store
 * completed under the upload's id, described by a HeadObject (S3's own ETag, strong, and its
 * LastModified) and read by a GetObject of the range asked for (`Range: bytes=a-b`), on
 * condition that it is still the object described (`If-Match`).
 */
import { Readable } from 'node:stream'
import { ERRORS, type Upload } from '@tus/utils'
import { refusal } from '../../refusal.js'
import type { ByteRange, DownloadFacts, Downloads } from '../backend.js'
import { headIfPresent, isNotFound, type S3Body, type S3SweepClient } from './client.js'

export interface S3Objects {
  client: S3SweepClient
  bucket: string
}

export function s3Downloads({ client, bucket }: S3Objects): Downloads {
  return {
    async describe(upload) {
      const head = await headIfPresent(client, bucket, upload.id)
      if (!head) throw ERRORS.FILE_NOT_FOUND
      const modifiedMs = head.LastModified?.getTime() ?? 0
      // S3 gives every object an ETag; a server that did not is given one of size and time.
      const etag = head.ETag ?? `"${(head.ContentLength ?? 0).toString(16)}-${modifiedMs}"`
      return { etag, modifiedMs }
    },
    read: (upload, facts, range) => readObject({ client, bucket }, upload, facts, range),
  }
}

async function readObject(
  { client, bucket }: S3Objects,
  upload: Upload,
  facts: DownloadFacts,
  range: ByteRange | undefined,
): Promise<Readable> {
  if (range === undefined && upload.offset === 0) return Readable.from([])
  const { start, end } = range ?? { start: 0, end: upload.offset - 1 }
  let body: S3Body | undefined
  try {
    ;({ Body: body } = await client.getObject({
      Bucket: bucket,
      Key: upload.id,
      Range: `bytes=${start}-${end}`,
      IfMatch: facts.etag,
    }))
  } catch (error) {
    if (isNotFound(error)) throw ERRORS.FILE_NOT_FOUND
    if (isPreconditionFailed(error)) {
      throw refusal(503, 'The upload changed while its download began; ask again')
    }
    throw error
  }
  if (body instanceof Readable) return body
  if (body?.transformToWebStream) return Readable.fromWeb(body.transformToWebStream() as never)
  throw new Error(`GetObject of ${upload.id} in bucket ${bucket} answered without a body stream`)
}

function isPreconditionFailed(error: unknown): boolean {
  const { name, $metadata } = (error ?? {}) as {
    name?: unknown
    $metadata?: { httpStatusCode?: unknown }
  }
  return name === 'PreconditionFailed' || $metadata?.httpStatusCode === 412
}
