/**
 * The server's downtime, remembered across a graceful restart: `close()` leaves a marker with
 * its time in the upload directory, and the next start reads it (and removes it) to learn how
 * long clients could not write, and removes it once it serves. The expiry policy does not count
 * that time against idle uploads (expiry/policy.ts `lastActivityMs`).
 *
 * A crash leaves no marker: then no downtime is known and none is given back. The marker is a
 * dot-file, which the sweep and the CLI leave alone.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import type { Downtime } from '../../expiry/policy.js'
import { CLOSED_MARKER } from './names.js'

/** Records that the server stopped serving at `closedAt` (when its close began). */
export async function recordClose(directory: string, closedAt = Date.now()): Promise<void> {
  await fs.writeFile(path.join(directory, CLOSED_MARKER), `${JSON.stringify({ closedAt })}\n`)
}

/**
 * The downtime since the last recorded close, or `undefined` without a usable marker. The marker
 * stays until `forgetClose()`, which the plugin calls once the server serves (it listens, or it
 * answers its first request): a start that fails before that (EADDRINUSE) keeps it for the next.
 */
export async function readDowntime(
  directory: string,
  now = Date.now(),
): Promise<Downtime | undefined> {
  let closedAt: unknown
  try {
    closedAt = JSON.parse(await fs.readFile(path.join(directory, CLOSED_MARKER), 'utf8'))?.closedAt
  } catch {
    return undefined // none (first start, or after a crash), or unreadable
  }
  if (typeof closedAt !== 'number' || !Number.isFinite(closedAt) || closedAt > now) return undefined
  return { fromMs: closedAt, toMs: now }
}

/** Removes the marker, so that a later crash is not mistaken for a long downtime. */
export async function forgetClose(directory: string): Promise<void> {
  await fs.rm(path.join(directory, CLOSED_MARKER), { force: true })
}

/**
 * The close marker's life in a server: the last close's marker is removed
 * once this server serves (it listens, or answers its first request), and a new one is left when
 * it closes, unless it never served: then the last close's marker stays, for the next start.
 */
export class CloseMarker {
  #served = false
  #forgotten: Promise<void> | undefined

  /** `directory`: the store's, or `undefined` when no downtime is tracked (then it does nothing). */
  constructor(
    readonly directory: string | undefined,
    readonly log: { warn(obj: object, msg: string): void },
  ) {}

  /** The server serves: the last close's marker has done its job. */
  serving(): void {
    if (this.#served || this.directory === undefined) return
    this.#served = true
    this.#forgotten = forgetClose(this.directory).catch((err: unknown) => {
      this.log.warn({ err }, 'fastify-tus could not remove its close marker')
    })
  }

  async closed(closedAt: number): Promise<void> {
    if (this.directory === undefined) return
    await this.#forgotten
    // A start that never served (a failed listen) keeps the marker of the close before it.
    if (!this.#served && (await readDowntime(this.directory)) !== undefined) return
    await recordClose(this.directory, closedAt).catch((err: unknown) => {
      this.log.warn(
        { err },
        'fastify-tus could not record its close; a restart will not give idle uploads their downtime back',
      )
    })
  }
}
