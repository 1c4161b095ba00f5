/**
 * Options as tables: each group of options (the top level, `redis`, `metrics`) is a table of
 * rows, one per key, each with its default and its check, and one resolver runs any table. So
 * the unknown-key refusal, the order of the checks and the naming of the option at fault are
 * written once, and adding an option is adding a row.
 */
import { type Bounds, checkMilliseconds } from '../duration.js'

/**
 * Why a value is refused: the end of the sentence `option \`<option>\` <text>`. `option` is the
 * full name (`redis.prefix`); without it, the resolver names the row that refused.
 */
export class Problem {
  constructor(
    readonly text: string,
    readonly option?: string,
  ) {}
}

/** What a row's check sees besides its value. */
export interface RowContext<Out> {
  /** The rows above this one, resolved: a check or default may depend on them. */
  resolved: Readonly<Partial<Out>>
  /** The group's options as given, before any default. */
  given: Readonly<Record<string, unknown>>
}

export interface Row<V, Out> {
  /**
   * The value of an option left out (or `null`), from the rows above. Without one, a left-out
   * option resolves to `undefined` unchecked, and `null` is checked (and refused).
   */
  default?: (resolved: Readonly<Partial<Out>>) => V
  /** Checked even when left out (its check refuses `undefined`). */
  required?: true
  /** The value to keep (the default included), or why it is refused. */
  check: (value: unknown, context: RowContext<Out>) => V | Problem
}

/** One row per key of the resolved group: a key without a row does not compile. */
export type Table<Out> = { [K in keyof Out]-?: Row<Out[K], Out> }

export interface Group<Out> {
  /** Its option's name (`redis`); `undefined` for the top level. */
  name: string | undefined
  /** What the group's value must be, ending `must be ...` when it is no object. */
  shape: string
  /** Checked in this order: a row may use the rows above it. */
  rows: Table<Out>
  /** Keys accepted without being listed (or resolved unless they have a row): Fastify's own. */
  unlisted?: readonly string[]
}

/** The group's options resolved, or the first problem found, in row order. */
export function resolveGroup<Out>(group: Group<Out>, input: unknown): Out | Problem {
  const optionName = (key: string) => (group.name === undefined ? key : `${group.name}.${key}`)
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    return new Problem(`must be ${group.shape}, got ${describe(input)}`, group.name ?? 'options')
  }
  const given = input as Record<string, unknown>
  const unlisted = group.unlisted ?? []
  const keys = Object.keys(group.rows)
  const listed = keys.filter((key) => !unlisted.includes(key))
  for (const key of Object.keys(given)) {
    if (!keys.includes(key) && !unlisted.includes(key)) {
      const list = group.name === undefined ? 'options' : `${group.name} options`
      const text = `is not an option of fastify-tus (${list}: ${listed.join(', ')})`
      return new Problem(text, optionName(key))
    }
  }
  const resolved: Record<string, unknown> = {}
  const context = { resolved: resolved as Partial<Out>, given }
  for (const key of keys) {
    const row = group.rows[key as keyof Out] as Row<unknown, Out>
    const value = row.default && given[key] == null ? row.default(context.resolved) : given[key]
    if (value === undefined && !row.required) {
      resolved[key] = undefined
      continue
    }
    const checked = row.check(value, context)
    if (checked instanceof Problem)
      return new Problem(checked.text, checked.option ?? optionName(key))
    resolved[key] = checked
  }
  return resolved as Out
}

/** A check: `value` when `test` accepts it, else `must be <what>, got <value>`. */
export function must<V>(test: (value: unknown) => value is V, what: string) {
  return (value: unknown): V | Problem =>
    test(value) ? value : new Problem(`must be ${what}, got ${describe(value)}`)
}

/** A check: a whole number of milliseconds within `bounds` (from the rows above, or fixed). */
export function milliseconds<Out>(
  bounds: Bounds | ((resolved: Readonly<Partial<Out>>) => Bounds),
  note?: string,
) {
  return (value: unknown, { resolved }: RowContext<Out>): number | Problem => {
    const checked = checkMilliseconds(
      value,
      typeof bounds === 'function' ? bounds(resolved) : bounds,
    )
    if (typeof checked === 'number') return checked
    return new Problem(`${checked}${note ? ` (${note})` : ''}, got ${describe(value)}`)
  }
}

/** A check: a whole number of bytes, at least `min`. */
export function bytes(min: number, note: string) {
  return (value: unknown): number | Problem =>
    Number.isSafeInteger(value) && (value as number) >= min
      ? (value as number)
      : new Problem(`must be a whole number of bytes >= ${min} (${note}), got ${describe(value)}`)
}

/**
 * A value as a refusal shows it: strings quoted, objects by their kind only, never their contents
 * (a Redis client holds its connection settings).
 */
export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value)
  if (typeof value === 'function') return 'a function'
  if (Array.isArray(value)) return 'an array'
  return `an object (${Object.prototype.toString.call(value)})`
}
