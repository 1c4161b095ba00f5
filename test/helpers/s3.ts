/**
 * S3 test tools: a bucket of its own for each test (removed afterwards, with everything in it),
 * an S3Store on it, and listings of what the bucket holds.
 */
import { randomBytes } from 'node:crypto'
import { S3 } from '@aws-sdk/client-s3'
import { S3Store } from '@tus/s3-store'
import { inject, onTestFinished } from 'vitest'

export function s3Client(): S3 {
  const env = inject('s3')
  return new S3({
    endpoint: env.endpoint,
    region: env.region,
    forcePathStyle: env.forcePathStyle,
    credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey },
    // radosgw (Ceph 16) answers 411 to the SDK's default streamed checksums; AWS and MinIO take
    // either setting.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  })
}

/** A new bucket with a unique name, emptied and removed after the test. */
export async function testBucket(): Promise<{ client: S3; bucket: string }> {
  const client = s3Client()
  const bucket = `fastify-tus-test-${randomBytes(6).toString('hex')}`
  await client.createBucket({ Bucket: bucket })
  onTestFinished(async () => {
    await emptyBucket(client, bucket)
    await client.deleteBucket({ Bucket: bucket })
    client.destroy()
  })
  return { client, bucket }
}

/** An S3Store on the bucket, configured as docs/s3.md says. */
export function s3Store(
  bucket: string,
  options: Partial<ConstructorParameters<typeof S3Store>[0]> = {},
): S3Store {
  const env = inject('s3')
  return new S3Store({
    partSize: 5 * 1024 * 1024,
    // Any period turns on the `Tus-Completed` tags; the plugin's expireAfterMs decides expiry.
    expirationPeriodInMilliseconds: 60_000,
    ...options,
    s3ClientConfig: {
      bucket,
      endpoint: env.endpoint,
      region: env.region,
      forcePathStyle: env.forcePathStyle,
      credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    },
  })
}

/** The bucket's object keys and multipart upload keys, sorted. */
export async function bucketContents(client: S3, bucket: string) {
  const objects = (await client.listObjectsV2({ Bucket: bucket })).Contents ?? []
  const uploads = (await client.listMultipartUploads({ Bucket: bucket })).Uploads ?? []
  return {
    objects: objects.map((o) => o.Key as string).sort(),
    multipart: uploads.map((u) => u.Key as string).sort(),
  }
}

export async function readObject(client: S3, bucket: string, key: string): Promise<Buffer> {
  const { Body } = await client.getObject({ Bucket: bucket, Key: key })
  return Buffer.from(
    await (Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray(),
  )
}

async function emptyBucket(client: S3, bucket: string): Promise<void> {
  for (;;) {
    const { Uploads = [] } = await client.listMultipartUploads({ Bucket: bucket })
    if (Uploads.length === 0) break
    for (const u of Uploads) {
      await client
        .abortMultipartUpload({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId })
        .catch(() => {})
    }
  }
  for (;;) {
    const { Contents = [] } = await client.listObjectsV2({ Bucket: bucket })
    if (Contents.length === 0) break
    for (const o of Contents) await client.deleteObject({ Bucket: bucket, Key: o.Key })
  }
}
