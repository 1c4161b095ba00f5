/**
 * The server's downtime, remembered across a graceful restart: `close()` leaves a marker with
 * its time in the upload directory, and the next start reads it (and removes it) to learn how
 * long clients could not write. The expiry policy does not count that time against idle
 * uploads (expiry-policy.ts `lastActivityMs`).
 *
 * A crash leaves no marker: then no downtime is known and none is given back. The marker is a
 * dot-file, which the sweep and the CLI leave alone.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import type { Downtime } from './expiry-policy.js'

export const CLOSED_MARKER = '.fastify-tus-closed'

/** Records that the server stopped serving at `closedAt` (when its close began). */
export async function recordClose(directory: string, closedAt = Date.now()): Promise<void> {
  await fs.writeFile(path.join(directory, CLOSED_MARKER), `${JSON.stringify({ closedAt })}\n`)
}

/**
 * The downtime since the last recorded close, or `undefined` without a usable marker; the
 * marker is removed, so that a later crash is not mistaken for a long downtime.
 */
export async function takeDowntime(
  directory: string,
  now = Date.now(),
): Promise<Downtime | undefined> {
  const marker = path.join(directory, CLOSED_MARKER)
  let closedAt: unknown
  try {
    closedAt = JSON.parse(await fs.readFile(marker, 'utf8'))?.closedAt
  } catch {
    return undefined // none (first start, or after a crash), or unreadable
  } finally {
    await fs.rm(marker, { force: true }).catch(() => {})
  }
  if (typeof closedAt !== 'number' || !Number.isFinite(closedAt) || closedAt > now) return undefined
  return { fromMs: closedAt, toMs: now }
}
