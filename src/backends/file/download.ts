/**
 * Downloads of the built-in store (backend.ts `Downloads`): a finished upload's data file, whole
 * or a range of it, opened as the store opens its files (record-file.ts: no link out of the
 * directory, a regular file with one link).
 *
 * The ETag is strong, made of the data file's size and modification time (to the microsecond):
 * the store writes a data file only while its upload is unfinished, so a finished upload's bytes
 * change only when the file is replaced, which gives it another time; a range (`If-Range`) needs
 * a strong tag. Every instance on the directory computes the same tag.
 */
import { createReadStream, type Stats } from 'node:fs'
import { Readable } from 'node:stream'
import { ERRORS, type Upload } from '@tus/utils'
import { refusal } from '../../refusal.js'
import type { ByteRange, DownloadFacts, Downloads } from '../backend.js'
import { closeFd, openStoreFd } from './record-file.js'
import { lstat } from './upload-files.js'

/** Where the store keeps an upload's bytes. */
export interface DataFiles {
  dataPathOf(id: string): string
}

export function fileDownloads(store: DataFiles): Downloads {
  return {
    async describe(upload) {
      const stats = await lstat(store.dataPathOf(upload.id)).catch(() => undefined)
      if (!stats?.isFile() || stats.nlink > 1) throw ERRORS.FILE_NOT_FOUND
      return factsOf(stats)
    },
    read: (upload, facts, range) => readDataFile(store, upload, facts, range),
  }
}

async function readDataFile(
  store: DataFiles,
  upload: Upload,
  facts: DownloadFacts,
  range: ByteRange | undefined,
): Promise<Readable> {
  const opened = await openStoreFd(store.dataPathOf(upload.id), 'read').catch(() => undefined)
  if (!opened) throw ERRORS.FILE_NOT_FOUND
  const { fd, stats } = opened
  if (factsOf(stats).etag !== facts.etag) {
    await closeFd(fd)
    throw refusal(503, 'The upload changed while its download began; ask again')
  }
  const size = upload.offset
  // The upload's bytes, not more: the answer's length is the upload's.
  const { start, end } = range ?? { start: 0, end: size - 1 }
  if (end < start) {
    // No bytes (an empty upload): nothing to read.
    await closeFd(fd)
    return Readable.from([])
  }
  return createReadStream('', { fd, start, end })
}

function factsOf(stats: Stats): DownloadFacts {
  const micros = Math.round(stats.mtimeMs * 1000)
  return { etag: `"${stats.size.toString(16)}-${micros.toString(16)}"`, modifiedMs: stats.mtimeMs }
}
