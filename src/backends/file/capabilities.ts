/**
 * The capabilities of the built-in store, as the http layer asks for them (backend.ts): the
 * concatenation extension, the direct write path, the creation guard, checksums, and the removal
 * of what a refused creation left.
 */
import type { Upload } from '@tus/utils'
import { isFinished } from '../../expiry/policy.js'
import { refusal } from '../../refusal.js'
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
      patchStore: refusingPatchOfFinal(store),
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

/**
 * The store as the PATCH handler sees it: the same store, except that its `getUpload` (which the
 * handler calls under the upload's lock, before it looks at the offset, which would answer 409)
 * refuses a final upload with 403. The check reads the record that `getUpload` reads anyway:
 * the refusal costs no read of its own, and it is made under the lock.
 *
 * A view rather than a flag on the request: tus calls `getUpload(id)` with the id alone, and the
 * handler's other calls (the length declaration, the extensions) must reach the store itself.
 * A Proxy rather than an object that delegates a list of methods: the store's methods use its
 * private fields, so each runs on the store, and a method a later @tus/server calls is reached
 * without being listed here.
 */
function refusingPatchOfFinal(store: ExpiringFileStore): ExpiringFileStore {
  const getUpload = async (id: string): Promise<Upload> => {
    const upload = await store.getUpload(id)
    if (store.concatKindOf(upload) === 'final') {
      throw refusal(403, 'a final upload cannot be patched: its bytes come from its partials')
    }
    return upload
  }
  // Methods run on the store itself (its private fields are not the view's), bound once each.
  const bound = new WeakMap<object, unknown>()
  return new Proxy(store, {
    get(target, name) {
      if (name === 'getUpload') return getUpload
      const value: unknown = Reflect.get(target, name, target)
      if (typeof value !== 'function') return value
      let method = bound.get(value)
      if (method === undefined) {
        method = value.bind(target)
        bound.set(value, method)
      }
      return method
    },
  })
}
