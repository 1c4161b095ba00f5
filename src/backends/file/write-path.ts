/**
 * Where a PATCH is written (and the body of a creation-with-upload POST), in the built-in store.
 *
 * @tus/server's handlers check the request and take the upload's lock; their `writeToStore` is
 * routed here by http/write-path.ts, with the Node request whose body is still unread. Read top
 * to bottom, `FileWriter.write` is the whole path:
 *
 * 1. claim space: of the free-space floor (writes under way count), and of the store quota when
 *    the upload's length is deferred (`claimRoom`; a declared length took its bytes at creation);
 * 2. mark: with `Upload-Checksum`, the record says the bytes past the offset are unverified
 *    until the digest matched, so that a crash mid-body leaves bytes that are rolled back
 *    (store-writes.ts);
 * 3. pump: the bytes from the socket into the data file, the digest computed as they go, the
 *    body stopped exactly where the room ends (pump.ts);
 * 4. checksum: a digest that does not match truncates the file back (460);
 * 5. settle or roll back: the mark is cleared, the claims keep what the body added to the file
 *    and give back the rest; a body the room stopped answers 507, its bytes so far kept.
 *
 * The stock path sends every chunk through srvx's web `Request`, a web `ReadableStream`,
 * `Readable.fromWeb`, a PassThrough, tus' StreamLimiter and the store's counting Transform: two
 * promise-based queues and three Node transforms per chunk. This one has none of them.
 */
import fsp from 'node:fs/promises'
import type { IncomingMessage } from 'node:http'
import type { Upload } from '@tus/utils'
import type { BodyWrite, BodyWriter, Written } from '../backend.js'
import { diskFull, type FreeSpace, insufficientStorage, type SpaceClaim } from './free-space.js'
import { BodyStopped, pumpToFile } from './pump.js'
import { QUOTA_UNAVAILABLE, type QuotaClaim, quotaExceeded, type StoreQuota } from './quota.js'
import type { StoreWrites } from './store-writes.js'

/** What the write path needs of the store. */
export interface WriteTarget {
  readonly space: FreeSpace | undefined
  readonly quota: StoreQuota | undefined
  readonly writes: StoreWrites
  dataPathOf(id: string): string
}

/** The direct write path of the built-in store. */
export class FileWriter implements BodyWriter {
  readonly #store: WriteTarget

  constructor(store: WriteTarget) {
    this.#store = store
  }

  async write(
    source: IncomingMessage,
    upload: Upload,
    how: BodyWrite,
  ): Promise<{ offset: number; written: Written }> {
    const store = this.#store
    const { checksum, contentLength, maxBytes } = how
    // 1. Claim space.
    const room = await claimRoom(store, upload, Math.min(contentLength ?? maxBytes, maxBytes))
    try {
      // 2. Mark the bytes to come unverified.
      if (checksum) await store.writes.beginChecksummedWrite(upload.id, upload.offset)
      try {
        // 3. and 4. Pump, and check the digest (a mismatch rolls the file back).
        const { bytes, stats } = await pumpToFile(source, store.dataPathOf(upload.id), {
          checksum,
          offset: upload.offset,
          maxBytes,
          spaceLeft: Number.isFinite(room.left) ? room.left : undefined,
          signal: how.signal,
          onProgress: how.onProgress,
          onWritten: room.space && ((written) => room.space?.wrote(written)),
        }).catch((error: unknown) => room.refused(error, contentLength))
        return { offset: upload.offset + bytes, written: { upload, stats } }
      } finally {
        // 5. Settle: the bytes are verified (or rolled back), the claims keep what was written.
        if (checksum) await store.writes.endChecksummedWrite(upload.id)
      }
    } finally {
      await room.settle()
    }
  }
}

/** The room a body may take: what the free-space floor and the store quota grant it. */
interface Room {
  /** Bytes the body may write before one of them stops it. */
  left: number
  /** The floor's claim, told the bytes written as they are. */
  space: SpaceClaim | undefined
  /** The error of a body that stopped: a 507 when it was the room that stopped it. */
  refused(error: unknown, neededBytes: number | undefined): Promise<never>
  /** The body ended: the claims keep what it added to the file, the rest goes back. */
  settle(): Promise<void>
}

/**
 * Step 1: claims room for a body of at most `wanted` bytes: of the free-space floor (writes
 * under way count), and of the quota when the upload's length is deferred (a declared length
 * took all of its bytes at creation or declaration; a deferred one grows with its bytes, up to
 * what is left).
 */
async function claimRoom(store: WriteTarget, upload: Upload, wanted: number): Promise<Room> {
  const { space, quota } = store
  const rest = upload.size === undefined ? wanted : Math.min(wanted, upload.size - upload.offset)
  const claimed = space ? await space.claim(Math.max(0, rest), { partial: true }) : undefined
  let quotaClaim: QuotaClaim | undefined
  try {
    quotaClaim =
      quota && upload.size === undefined
        ? await quota
            .claim(Math.min(wanted, Number.MAX_SAFE_INTEGER), {
              partial: true,
              grows: { id: upload.id, from: upload.offset },
            })
            .catch(() => {
              throw QUOTA_UNAVAILABLE
            })
        : undefined
  } catch (error) {
    claimed?.release(0)
    throw error
  }
  const freeLeft = claimed?.granted ?? Number.POSITIVE_INFINITY
  const quotaLeft = quotaClaim?.granted ?? Number.POSITIVE_INFINITY
  return {
    left: Math.min(freeLeft, quotaLeft),
    space: claimed,
    refused: (error, length) =>
      refusedBody(store, error, length ?? Math.min(freeLeft, quotaLeft) + 1, quotaLeft <= freeLeft),
    settle: async () => {
      claimed?.release()
      if (!quotaClaim) return
      // What the body left in the file stays counted; the rest of the claim goes back.
      const size = await fsp.lstat(store.dataPathOf(upload.id)).then(
        (stats) => stats.size,
        () => upload.offset,
      )
      await quotaClaim.settle(size - upload.offset)
    },
  }
}

/**
 * Step 5, for a body that stopped short: the room ran out (507, the bytes so far kept, and the
 * answer says where they end), or another error, as it is. `quotaFirst`: the quota's room was
 * the smaller (the claim told the quota's listeners already).
 */
async function refusedBody(
  store: WriteTarget,
  error: unknown,
  neededBytes: number,
  quotaFirst: boolean,
): Promise<never> {
  if (!(error instanceof BodyStopped)) throw error
  const { space, quota } = store
  if (error.by === 'room' && quota && quotaFirst) {
    const storeBytes = quota.lastSeen ?? 0
    throw quotaExceeded({ storeBytes, maxStoreBytes: quota.maxStoreBytes, neededBytes })
  }
  // The floor, or the disk itself, is reached.
  const low = {
    freeBytes: space ? await space.freeBytes().catch(() => 0) : 0,
    minFreeBytes: space?.minFreeBytes ?? 0,
    neededBytes,
  }
  space?.reportLow(low)
  throw error.by === 'disk' ? diskFull({ code: 'ENOSPC' }) : insufficientStorage(low)
}
