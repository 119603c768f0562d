// Typed readers for the fields of a parsed manifest. Each reader reports a problem to the
// Reporter and returns undefined when the value cannot be used; none of them throws.
import { describeType, field, get, index, isAbsent, isRecord, type Reporter, show } from './report.js';

/** Strings longer than this are rejected before any further validation (guard against huge input). */
export const MAX_STRING = 64 * 1024;

/** Suggests a replacement for an unknown field, or returns undefined. */
export type Hint = (key: string, value: unknown) => string | undefined;

/**
 * Reports every key of `obj` not in `allowed` as NETPOLD_E_UNKNOWN_FIELD (the API server's
 * strict field validation). `hint` may explain a common mistake; otherwise a key that differs
 * from an allowed one only in case is suggested.
 */
export function checkFields(
  r: Reporter,
  obj: Record<string, unknown>,
  path: string,
  allowed: readonly string[],
  hint?: Hint,
): void {
  for (const key of Object.keys(obj)) {
    if (allowed.includes(key)) continue;
    const suggestion = hint?.(key, get(obj, key)) ?? caseHint(key, allowed);
    const known = `known fields here: ${allowed.join(', ')}`;
    const text = suggestion === undefined ? known : `${suggestion} (${known})`;
    r.error('NETPOLD_E_UNKNOWN_FIELD', field(path, key), `unknown field ${show(key)}; ${text}`);
  }
}

/** Suggests an allowed field differing only in case or by a plural 's' (`label` -> `labels`). */
function caseHint(key: string, allowed: readonly string[]): string | undefined {
  const lower = key.toLowerCase();
  const match = allowed.find((a) => {
    const al = a.toLowerCase();
    return al === lower || al === `${lower}s` || `${al}s` === lower;
  });
  return match === undefined ? undefined : `did you mean ${match}?`;
}

function typeError(r: Reporter, path: string, expected: string, v: unknown): void {
  r.error('NETPOLD_E_FIELD_TYPE', path, `expected ${expected}, got ${describeType(v)} ${isRecord(v) || Array.isArray(v) ? '' : show(v)}`.trimEnd());
}

/** A mapping, or undefined (reported) when `v` is something else. Absent values must be handled by the caller. */
export function readRecord(r: Reporter, v: unknown, path: string): Record<string, unknown> | undefined {
  if (isRecord(v)) return v;
  typeError(r, path, 'a mapping', v);
  return undefined;
}

/** A list; absent or null is the empty list (Go's nil slice). */
export function readList(r: Reporter, v: unknown, path: string): unknown[] | undefined {
  if (isAbsent(v)) return [];
  if (Array.isArray(v)) return v;
  typeError(r, path, 'a list', v);
  return undefined;
}

/**
 * Calls `each` on each mapping of an optional list. A `null` item is rejected: the API server
 * would read it as an all-defaults object (for a rule, "allow everything"), which is never what
 * an empty list item in a manifest means.
 */
export function eachRecord<T>(
  r: Reporter,
  v: unknown,
  path: string,
  each: (item: Record<string, unknown>, itemPath: string) => T | undefined,
): T[] {
  const list = readList(r, v, path) ?? [];
  const out: T[] = [];
  list.forEach((item, i) => {
    const itemPath = index(path, i);
    const rec = readRecord(r, item, itemPath);
    if (rec === undefined) return;
    const value = each(rec, itemPath);
    if (value !== undefined) out.push(value);
  });
  return out;
}

/** A string (at most MAX_STRING characters), or undefined (reported). */
export function readString(r: Reporter, v: unknown, path: string): string | undefined {
  if (typeof v !== 'string') {
    typeError(r, path, 'a string', v);
    return undefined;
  }
  if (v.length > MAX_STRING) {
    r.error('NETPOLD_E_INVALID_VALUE', path, `a string of ${v.length} characters is longer than the ${MAX_STRING}-character limit`);
    return undefined;
  }
  return v;
}

/** An optional string: absent/null -> undefined without a report. */
export function readOptionalString(r: Reporter, v: unknown, path: string): string | undefined {
  return isAbsent(v) ? undefined : readString(r, v, path);
}

/** A required string: absent/null is NETPOLD_E_REQUIRED. */
export function readRequiredString(r: Reporter, v: unknown, path: string, what: string): string | undefined {
  if (isAbsent(v)) {
    r.error('NETPOLD_E_REQUIRED', path, `${what} is required`);
    return undefined;
  }
  return readString(r, v, path);
}

/** An optional boolean: absent/null -> undefined without a report. */
export function readOptionalBool(r: Reporter, v: unknown, path: string): boolean | undefined {
  if (isAbsent(v)) return undefined;
  if (typeof v === 'boolean') return v;
  typeError(r, path, 'true or false', v);
  return undefined;
}

/** True when `v` is a JSON number usable as an integer (finite, no fraction). */
export function isInteger(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}
