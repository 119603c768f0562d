// Error collection for one manifest object, and the field-path helpers used in messages.
import type { ErrorCode, ManifestError } from '../../errors.js';

/** Collects the errors and notices of one object (or one file, when `object` is undefined). */
export class Reporter {
  readonly errors: ManifestError[] = [];
  readonly notices: string[] = [];

  constructor(
    readonly file: string,
    readonly object: string | undefined,
  ) {}

  error(code: ErrorCode, path: string | undefined, message: string): void {
    this.errors.push({ code, file: this.file, object: this.object, path: path === '' ? undefined : path, message });
  }

  /** `message` must already be safe to print (user text in it escaped, see escapeText). */
  notice(message: string): void {
    const where = [this.file, this.object].filter((s) => s !== undefined && s !== '').join(': ');
    this.notices.push(`${where}: ${message}`);
  }

  get errorCount(): number {
    return this.errors.length;
  }
}

const MAX_PATH_SEGMENT = 80;

/** `spec` + `ingress` -> `spec.ingress`. `name` may be user text (an unknown key): it is escaped. */
export function field(path: string, name: string): string {
  const seg = escapeText(clip(name, MAX_PATH_SEGMENT));
  return path === '' ? seg : `${path}.${seg}`;
}

/** `spec.ingress` + 0 -> `spec.ingress[0]`. */
export function index(path: string, i: number): string {
  return `${path}[${i}]`;
}

/** A map entry, as the API server writes it: `metadata.labels[app]`. The key is escaped. */
export function mapKey(path: string, key: string): string {
  return `${path}[${escapeText(clip(key, MAX_PATH_SEGMENT))}]`;
}

/** The first `max` characters of `s` and `…`, never splitting a surrogate pair. */
export function clip(s: string, max: number): string {
  if (s.length <= max) return s;
  const end = isHighSurrogate(s.charCodeAt(max - 1)) ? max - 1 : max;
  return `${s.slice(0, end)}…`;
}

function isHighSurrogate(c: number): boolean {
  return c >= 0xd800 && c <= 0xdbff;
}

/**
 * Characters that must not reach a terminal or a log line raw: the backslash (so escapes stay
 * unambiguous), C0 and C1 control characters and DEL (line breaks, tabs, terminal escape
 * sequences), the Unicode line and paragraph separators, the bidirectional formatting
 * characters (which can make a line read differently than it is), the BOM, and lone surrogates.
 */
const UNSAFE =
  /[\\\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

const SHORT_ESCAPES: Readonly<Record<string, string>> = { '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f' };

/**
 * User text (a name, a key, a kind, a file name, a parser message quoting the input) made safe
 * to print on one line: the characters above are written as JSON writes them (`\n`, `\\`,
 * `\u001b`...); everything else, non-ASCII letters included, is unchanged, and no quotes are
 * added, so an ordinary name such as `default/web` reads as itself.
 */
export function escapeText(s: string): string {
  return s.replace(UNSAFE, (c) => SHORT_ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

const MAX_SHOWN = 64;

/**
 * A short, safe rendering of a user value for messages (never the whole of a huge value).
 * Strings are quoted and escaped as JSON writes them, and the characters escapeText escapes
 * are escaped too (JSON leaves DEL, C1 controls, U+2028/U+2029 and bidi controls raw).
 */
export function show(v: unknown): string {
  if (typeof v === 'string') return `"${escapeText(clip(v, MAX_SHOWN)).replace(/"/g, '\\"')}"`;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  return describeType(v);
}

/** A human name for a value's type: "a string", "a list", "null"... */
export function describeType(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  switch (typeof v) {
    case 'string':
      return 'a string';
    case 'number':
      return Number.isInteger(v) ? 'an integer' : 'a number';
    case 'boolean':
      return 'a boolean';
    case 'bigint':
      return 'an integer';
    case 'object':
      return isRecord(v) ? 'a mapping' : 'a YAML-specific value (set, ordered map or binary)';
    default:
      return `a ${typeof v}`;
  }
}

/** A plain mapping as produced by YAML/JSON parsing (not a Map, Set, Uint8Array...). */
export function isRecord(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Own value of a mapping (never inherited, whatever the key). */
export function get(obj: Record<string, unknown>, key: string): unknown {
  return Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
}

/** Absent or `null`: both mean "not set" for an optional field (Go's nil). */
export function isAbsent(v: unknown): v is null | undefined {
  return v === undefined || v === null;
}
