/** Test data: repeatable bytes, their digests, random ids. */
import { createHash } from 'node:crypto'

/** `n` bytes of a repeatable pattern; `seed` varies it. */
export function pattern(n: number, seed = 0): Buffer {
  return Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) % 256))
}

export function sha256Of(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

export function randomId(): string {
  return createHash('md5').update(String(Math.random())).digest('hex')
}
