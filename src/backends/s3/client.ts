/**
 * The S3 calls of the plugin's S3 code (the sweep, and the activity clock of answers): the
 * client's interface, and the reads both make. No import of the AWS SDK: the client is S3Store's
 * own (the aggregated `S3` of @aws-sdk/client-s3), or any object with these methods.
 */

/** The S3 calls the sweep makes: a subset of @aws-sdk/client-s3's aggregated `S3` client. */
export interface S3SweepClient {
  listMultipartUploads(input: {
    Bucket: string
    KeyMarker?: string | undefined
    UploadIdMarker?: string | undefined
    MaxUploads?: number
  }): Promise<{
    Uploads?: Array<{ Key?: string; UploadId?: string; Initiated?: Date }> | undefined
    IsTruncated?: boolean | undefined
    NextKeyMarker?: string | undefined
    NextUploadIdMarker?: string | undefined
  }>
  listParts(input: {
    Bucket: string
    Key: string
    UploadId: string
    PartNumberMarker?: string | undefined
    MaxParts?: number
  }): Promise<{
    Parts?: Array<{ Size?: number; LastModified?: Date }> | undefined
    IsTruncated?: boolean | undefined
    NextPartNumberMarker?: string | undefined
  }>
  listObjectsV2(input: {
    Bucket: string
    ContinuationToken?: string | undefined
    MaxKeys?: number
    Prefix?: string
  }): Promise<{
    Contents?: Array<{ Key?: string; LastModified?: Date; Size?: number }> | undefined
    IsTruncated?: boolean | undefined
    NextContinuationToken?: string | undefined
  }>
  getObject(input: { Bucket: string; Key: string; Range?: string; IfMatch?: string }): Promise<{
    Body?: S3Body | undefined
  }>
  headObject(input: { Bucket: string; Key: string }): Promise<S3Head>
  getObjectTagging(input: { Bucket: string; Key: string }): Promise<{
    TagSet?: Array<{ Key?: string; Value?: string }> | undefined
  }>
  abortMultipartUpload(input: { Bucket: string; Key: string; UploadId: string }): Promise<unknown>
  deleteObject(input: { Bucket: string; Key: string }): Promise<unknown>
  putObject(input: {
    Bucket: string
    Key: string
    Body: string
    ContentType?: string
  }): Promise<unknown>
}

/** An object's bytes as GetObject gives them (in Node, also a `Readable`). */
export interface S3Body {
  transformToString(): Promise<string>
  transformToWebStream?(): ReadableStream
}

/** What a HEAD of an object tells. */
export interface S3Head {
  ETag?: string | undefined
  LastModified?: Date | undefined
  ContentLength?: number | undefined
  Metadata?: Record<string, string> | undefined
}

/** S3Store's names for an upload's record and for its bytes short of a part. */
export const INFO = '.info'
export const PART = '.part'

/** The object's HEAD, or `undefined` when there is no such object. */
export async function headIfPresent(
  client: S3SweepClient,
  bucket: string,
  key: string,
): Promise<S3Head | undefined> {
  try {
    return await client.headObject({ Bucket: bucket, Key: key })
  } catch (error) {
    if (isNotFound(error)) return undefined
    throw error
  }
}

/**
 * The sum of a multipart upload's parts' sizes and its latest part's time, over every page of
 * ListParts; `undefined` when the upload is gone (finished, or aborted).
 */
export async function partsOf(
  client: S3SweepClient,
  bucket: string,
  id: string,
  uploadId: string,
): Promise<{ bytes: number; lastModifiedMs: number } | undefined> {
  let bytes = 0
  let lastModifiedMs = 0
  let PartNumberMarker: string | undefined
  do {
    let page: Awaited<ReturnType<S3SweepClient['listParts']>>
    try {
      page = await client.listParts({
        Bucket: bucket,
        Key: id,
        UploadId: uploadId,
        PartNumberMarker,
      })
    } catch (error) {
      // AWS answers NoSuchUpload for an aborted or completed upload, radosgw NoSuchKey.
      if (isNotFound(error)) return undefined
      throw error
    }
    for (const part of page.Parts ?? []) {
      bytes += part.Size ?? 0
      lastModifiedMs = Math.max(lastModifiedMs, part.LastModified?.getTime() ?? 0)
    }
    PartNumberMarker = page.IsTruncated ? page.NextPartNumberMarker : undefined
  } while (PartNumberMarker !== undefined)
  return { bytes, lastModifiedMs }
}

/** S3's "no such thing": NoSuchKey, NoSuchUpload, NotFound (a HEAD's 404), or any 404. */
export function isNotFound(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false
  const { name, Code, $metadata } = error as {
    name?: unknown
    Code?: unknown
    $metadata?: { httpStatusCode?: unknown }
  }
  const codes = ['NoSuchKey', 'NoSuchUpload', 'NotFound']
  return (
    codes.includes(name as string) ||
    codes.includes(Code as string) ||
    $metadata?.httpStatusCode === 404
  )
}
