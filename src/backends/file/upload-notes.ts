/**
 * What the store knows of an `Upload` object, on the object: tus hands the store the `Upload`
 * alone (to `create`, to the write path, to the answers), so what was learned when the object was
 * made travels with it. One property under a symbol rather than a WeakMap keyed by the object: a
 * scavenge treats a WeakMap's values as strong (CONTRIBUTING.md, "Garbage on the request path"),
 * and a symbol stays out of the record tus writes and out of the user's hooks' view.
 */
import type { Upload } from '@tus/utils'
import type { ConcatRequest } from '../backend.js'

export interface UploadNotes {
  /** The concatenation its creation asked for: set by the creation hook, read by `create`. */
  asked?: ConcatRequest | undefined
  /** The store handed the object out (`getUpload`) or created it (`create`), and so knows: */
  known?: {
    concat: 'partial' | 'final' | undefined
    /** For an upload `create` made: its data file's mtime then (`undefined` if unread). */
    created?: number | undefined
  }
}

const NOTES = Symbol('fastify-tus.uploadNotes')

type Noted = Upload & { [NOTES]?: UploadNotes }

export function notesOf(upload: Upload): UploadNotes | undefined {
  return (upload as Noted)[NOTES]
}

/** Adds `notes` to what the object carries. */
export function note(upload: Upload, notes: UploadNotes): void {
  const noted = upload as Noted
  noted[NOTES] = { ...noted[NOTES], ...notes }
}
