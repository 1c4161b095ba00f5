/**
 * The "last read" cache shared by the backends (src/backends/last-read.ts): what a read saw, kept
 * for the answer that follows it, taken once, within its age limit, in a bounded map.
 */
import { describe, expect, it } from 'vitest'
import { LastRead } from '../src/backends/last-read.js'
import { sleep } from './helpers/wait.js'

describe('LastRead', () => {
  it('gives what a read kept once, and the latest read of an upload only', () => {
    const last = new LastRead<number>()
    last.keep('a', 1)
    last.keep('a', 2)
    last.keep('b', 3)
    expect(last.take('a')).toBe(2)
    expect(last.take('a')).toBeUndefined()
    expect(last.take('b')).toBe(3)
    expect(last.size).toBe(0)
  })

  it('gives nothing for a read older than its age limit, and drops it', async () => {
    const last = new LastRead<string>(200)
    last.keep('old', 'seen')
    await sleep(300)
    last.keep('new', 'seen')
    expect(last.take('old')).toBeUndefined()
    expect(last.size).toBe(1)
    expect(last.take('new')).toBe('seen')
  })

  it('when full, drops the stale entries first, and every entry if none is stale', async () => {
    const last = new LastRead<number>(200, 3)
    last.keep('a', 1)
    last.keep('b', 2)
    await sleep(300)
    last.keep('c', 3)
    // Full: a and b are stale, c stays.
    last.keep('d', 4)
    expect(last.size).toBe(2)
    expect(last.take('c')).toBe(3)
    last.keep('e', 5)
    last.keep('f', 6)
    // Full of fresh entries: all go, the newcomer is kept.
    last.keep('g', 7)
    expect(last.size).toBe(1)
    expect(last.take('d')).toBeUndefined()
    expect(last.take('g')).toBe(7)
  })

  it('keeps a newer read of an upload it holds without dropping the others when full', () => {
    const last = new LastRead<number>(1000, 2)
    last.keep('a', 1)
    last.keep('b', 2)
    last.keep('a', 3)
    expect(last.size).toBe(2)
    expect(last.take('a')).toBe(3)
    expect(last.take('b')).toBe(2)
  })
})
