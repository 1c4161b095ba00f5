/**
 * The one parser of milliseconds and durations behind the plugin's options, the CLI's flags and
 * the demo's environment.
 */
import { describe, expect, it } from 'vitest'
import {
  checkMilliseconds,
  MAX_TIMER_MS,
  parseDuration,
  parseWholeNumber,
} from '../src/duration.js'

describe('checkMilliseconds', () => {
  it('returns a whole number within the bounds, the bounds included', () => {
    expect(checkMilliseconds(1, { min: 1, max: MAX_TIMER_MS })).toBe(1)
    expect(checkMilliseconds(MAX_TIMER_MS, { min: 1, max: MAX_TIMER_MS })).toBe(MAX_TIMER_MS)
    expect(checkMilliseconds(0, { min: 0 })).toBe(0)
    expect(checkMilliseconds(Number.MAX_SAFE_INTEGER, { min: 0 })).toBe(Number.MAX_SAFE_INTEGER)
  })

  it('refuses fractions, non-numbers and values out of bounds with the range as reason', () => {
    const reason = `must be a whole number of milliseconds from 1 to ${MAX_TIMER_MS}`
    for (const value of [0, MAX_TIMER_MS + 1, 1.5, '30s', Number.NaN, null]) {
      expect(checkMilliseconds(value, { min: 1, max: MAX_TIMER_MS })).toBe(reason)
    }
  })

  it('says ">= min" without a max, and refuses what is not a safe integer', () => {
    expect(checkMilliseconds(-1, { min: 0 })).toBe('must be a whole number of milliseconds >= 0')
    expect(checkMilliseconds(2 ** 53, { min: 0 })).toBe(
      'must be a whole number of milliseconds >= 0',
    )
  })
})

describe('parseWholeNumber', () => {
  it('reads digits, around whitespace', () => {
    expect(parseWholeNumber('600000', { min: 0, max: Number.MAX_SAFE_INTEGER })).toBe(600_000)
    expect(parseWholeNumber(' 80 ', { min: 0, max: 65535 })).toBe(80)
  })

  it('refuses signs, units, decimals and values out of bounds, unit-free', () => {
    for (const text of ['-5', '+5', '10m', '1.5', '1e3', 'abc', '0', '65536']) {
      expect(parseWholeNumber(text, { min: 1, max: 65535 })).toBe(
        'must be a whole number from 1 to 65535',
      )
    }
  })
})

describe('parseDuration', () => {
  it('reads ms syntax with its unit', () => {
    expect(parseDuration('10m', { min: 1 })).toBe(600_000)
    expect(parseDuration('2h', { min: 1 })).toBe(7_200_000)
    expect(parseDuration('1.5d', { min: 1 })).toBe(129_600_000)
    expect(parseDuration('600000ms', { min: 1 })).toBe(600_000)
  })

  it('refuses a number without a unit, which would silently mean milliseconds', () => {
    for (const text of ['10', '600000', '1.5', ' 10 ', '.5', '-5']) {
      expect(parseDuration(text, { min: 1 })).toBe(
        'needs a unit (ms, s, m, h, d): a duration with a unit, like 10m, 2h or 600000ms',
      )
    }
  })

  it('rounds to a whole millisecond after checking the bounds', () => {
    expect(parseDuration('1.5ms', { min: 1 })).toBe(2)
    expect(parseDuration('0.6ms', { min: 1 })).toBe(
      'must be a positive duration with a unit, like 10m, 2h or 600000ms',
    )
  })

  it('refuses text that is no duration, and durations out of bounds', () => {
    for (const text of ['abc', '', '0ms', '-5m', '1e3', 'x'.repeat(101)]) {
      expect(parseDuration(text, { min: 1 })).toBe(
        'must be a positive duration with a unit, like 10m, 2h or 600000ms',
      )
    }
    expect(parseDuration('1h', { min: 100, max: 60_000 })).toBe(
      'must be a duration with a unit, like 10m, 2h or 600000ms from 100 to 60000',
    )
  })
})
