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

  notice(message: string): void {
    const where = [this.file, this.object].filter((s) => s !== undefined && s !== '').join(': ');
    this.notices.push(`${where}: ${message}`);
  }

  get errorCount(): number {
    return this.errors.length;
  }
}

const MAX_PATH_SEGMENT = 80;

/** `spec` + `ingress` -> `spec.ingress`. */
export function field(path: string, name: string): string {
  const seg = clip(name, MAX_PATH_SEGMENT);
  return path === '' ? seg : `${path}.${seg}`;
}

/** `spec.ingress` + 0 -> `spec.ingress[0]`. */
export function index(path: string, i: number): string {
  return `${path}[${i}]`;
}

/** A map entry, as the API server writes it: `metadata.labels[app]`. */
export function mapKey(path: string, key: string): string {
  return `${path}[${clip(key, MAX_PATH_SEGMENT)}]`;
}

function clip(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max)}…`;
}

const MAX_SHOWN = 64;

/** A short, safe rendering of a user value for messages (never the whole of a huge value). */
export function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(clip(v, MAX_SHOWN));
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
