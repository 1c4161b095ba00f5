/**
 * Durations in milliseconds, checked in one place for the plugin's options, the CLI's flags and
 * the demo's environment. Each function returns the value, or the reason it is refused as the end
 * of a sentence naming the setting (`<name> <reason>, got <value>`): each caller names its
 * setting, shows the value and throws its own error type.
 */
import ms from 'ms'

/** setTimeout and setInterval (and so toad-scheduler) cannot wait longer than this. */
export const MAX_TIMER_MS = 2 ** 31 - 2

export interface Bounds {
  /** The least value accepted. */
  min: number
  /** The greatest value accepted. Default: any safe integer. */
  max?: number | undefined
}

/** `value` if it is a whole number of milliseconds within `bounds`, else why not. */
export function checkMilliseconds(value: unknown, bounds: Bounds): number | string {
  return inBounds(value, bounds) ? value : `must be a whole number of milliseconds ${range(bounds)}`
}

/**
 * A whole number written in digits (surrounding whitespace allowed) within `bounds`, else why
 * not. Unit-free: for settings whose name gives the unit, such as `CLEANUP_INTERVAL_MS`.
 */
export function parseWholeNumber(text: string, bounds: Bounds): number | string {
  const value = /^\d+$/.test(text.trim()) ? Number(text) : Number.NaN
  return inBounds(value, bounds) ? value : `must be a whole number ${range(bounds)}`
}

/**
 * A duration in `ms` syntax with its unit (`10m`, `2h`, `1.5d`, `600000ms`), rounded to a whole
 * millisecond, within `bounds` (checked before rounding), else why not. A number without a unit
 * is refused: `10` could mean 10 minutes to the one who typed it and 10 ms to `ms`.
 */
export function parseDuration(text: string, bounds: Bounds): number | string {
  const what = 'duration with a unit, like 10m, 2h or 600000ms'
  if (/^\s*[+-]?(\d+\.?\d*|\.\d+)\s*$/.test(text)) {
    return `needs a unit (ms, s, m, h, d): a ${what}`
  }
  let parsed: number | undefined
  try {
    parsed = ms(text as ms.StringValue)
  } catch {
    parsed = undefined // an empty or overlong text
  }
  const { min, max = Number.MAX_SAFE_INTEGER } = bounds
  if (typeof parsed === 'number' && parsed >= min && parsed <= max) return Math.round(parsed)
  return min === 1 && bounds.max === undefined
    ? `must be a positive ${what}`
    : `must be a ${what} ${range(bounds)}`
}

function inBounds(value: unknown, { min, max = Number.MAX_SAFE_INTEGER }: Bounds): value is number {
  return Number.isSafeInteger(value) && (value as number) >= min && (value as number) <= max
}

/** `from 1 to 2147483646`, or `>= 0` without a `max`. */
function range({ min, max }: Bounds): string {
  return max === undefined ? `>= ${min}` : `from ${min} to ${max}`
}
