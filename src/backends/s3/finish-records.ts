/**
 * An S3Store's pending hand-overs (`FinishRecords`): one small JSON object per upload under
 * `.fastify-tus-finishing/` in the store's bucket, so that they survive the instance, as the
 * built-in store's files do. The bucket's sweep looks only at S3Store's own names (`<id>`,
 * `<id>.info`, `<id>.part`), so these objects are never taken for uploads or orphans.
 */
import type { FinishRecords, PendingFinish } from '../backend.js'
import { isNotFound, type S3SweepClient } from './client.js'

const PREFIX = '.fastify-tus-finishing/'
const SUFFIX = '.json'

export class S3FinishRecords implements FinishRecords {
  constructor(
    readonly client: S3SweepClient,
    readonly bucket: string,
  ) {}

  async remember(id: string): Promise<boolean> {
    // Two runs for one id never race here: the finish lock is taken first (hand-over.ts).
    if (await this.read(id)) return false
    await this.update({ id, since: Date.now(), attempts: 0 })
    return true
  }

  async update(record: PendingFinish): Promise<void> {
    await this.client.putObject({
      Bucket: this.bucket,
      Key: keyOf(record.id),
      Body: JSON.stringify(record),
      ContentType: 'application/json',
    })
  }

  async read(id: string): Promise<PendingFinish | undefined> {
    let text: string | undefined
    try {
      const { Body } = await this.client.getObject({ Bucket: this.bucket, Key: keyOf(id) })
      text = await Body?.transformToString()
    } catch (error) {
      if (isNotFound(error)) return undefined
      throw error
    }
    try {
      const parsed = JSON.parse(text ?? '') as Partial<PendingFinish>
      if (typeof parsed.since === 'number' && typeof parsed.attempts === 'number') {
        return { ...parsed, id } as PendingFinish
      }
    } catch {}
    return { id, since: Date.now(), attempts: 0 }
  }

  async forget(id: string): Promise<void> {
    await this.client.deleteObject({ Bucket: this.bucket, Key: keyOf(id) })
  }

  async list(): Promise<PendingFinish[]> {
    const ids: string[] = []
    let ContinuationToken: string | undefined
    do {
      const page = await this.client.listObjectsV2({
        Bucket: this.bucket,
        Prefix: PREFIX,
        ContinuationToken,
      })
      for (const { Key } of page.Contents ?? []) {
        if (Key?.endsWith(SUFFIX))
          ids.push(decodeURIComponent(Key.slice(PREFIX.length, -SUFFIX.length)))
      }
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined
    } while (ContinuationToken !== undefined)
    const records = await Promise.all(ids.map((id) => this.read(id)))
    return records
      .filter((record): record is PendingFinish => record !== undefined)
      .sort((a, b) => a.since - b.since)
  }
}

function keyOf(id: string): string {
  return `${PREFIX}${encodeURIComponent(id)}${SUFFIX}`
}
