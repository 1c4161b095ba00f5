/**
 * The capabilities of the built-in store, as the http layer asks for them (backend.ts): the
 * concatenation extension, the direct write path, the creation guard, checksums, and the removal
 * of what a refused creation left.
 */
import { isFinished } from '../../expiry/policy.js'
import type { UploadBackend } from '../backend.js'
import { markConcat } from './concatenation.js'
import type { ExpiringFileStore } from './file-store.js'
import { keepingRawMetadata } from './raw-metadata.js'
import { FileWriter } from './write-path.js'

/** Checksum algorithms of the built-in store, as tus names them, in order of preference. */
export const CHECKSUM_ALGORITHMS = ['sha1', 'md5', 'sha256'] as const

export type FileCapabilities = Required<
  Pick<UploadBackend, 'concatenation' | 'writer' | 'creation' | 'checksums' | 'discardRefused'>
>

export function fileCapabilities(store: ExpiringFileStore): FileCapabilities {
  return {
    concatenation: {
      checkPartial: (id) => store.checkPartial(id),
      beingBuilt: (partials) => store.finals.beingBuilt(partials),
      recordedFinalOf: (partials) => store.finals.recordedFinalOf(partials),
      hold: (id) => store.finals.hold(id),
      claim: (id) => store.finals.claim(id),
      unclaim: (id) => store.finals.unclaim(id),
      mark: markConcat,
      kindOf: (upload) => store.concatKindOf(upload),
    },
    writer: new FileWriter(store),
    creation: { reserve: (bytes) => store.writes.reserve(bytes), recording: keepingRawMetadata },
    checksums: { algorithms: CHECKSUM_ALGORITHMS },
    discardRefused: async (id) => {
      try {
        const upload = await store.getUpload(id)
        if (!isFinished(upload.size, upload.offset)) await store.remove(id)
      } catch {
        // Already gone, or unreadable: the sweep deals with what is left.
      }
    },
  }
}
