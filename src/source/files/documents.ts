// From manifest text to raw Kubernetes objects: YAML/JSON parsing (JSON is parsed as YAML 1.2,
// of which it is a subset, so duplicate keys and syntax errors get line numbers too),
// multi-document streams, and List expansion.
import { parseAllDocuments } from 'yaml';
import type { ManifestError } from '../../errors.js';
import { isRecord, Reporter, show } from './report.js';

/** One object found in a file, before validation. */
export interface RawObject {
  readonly file: string;
  /** Where in the file: `document 2` or `document 2, items[3]`. */
  readonly where: string;
  readonly apiVersion: string;
  readonly kind: string;
  readonly value: Record<string, unknown>;
}

/** Files larger than this are rejected rather than parsed. */
export const MAX_FILE_CHARS = 32 * 1024 * 1024;
const MAX_ALIASES = 100;
const MAX_LIST_NESTING = 4;
const MAX_KIND_CHARS = 256;

/**
 * YAML 1.2 core schema, as JSON-compatible as YAML gets, plus `<<` merge keys (kubectl's YAML
 * parser supports them). Duplicate keys are errors, as with the API server's strict decoding.
 */
const PARSE_OPTIONS = {
  uniqueKeys: true,
  maxAliasCount: MAX_ALIASES,
  prettyErrors: true,
  merge: true,
  // No process warnings on stderr (e.g. for a mapping used as a key): problems are reported
  // as errors by the validation that follows, never as side effects.
  logLevel: 'error',
} as const;

type YamlDocument = ReturnType<typeof parseAllDocuments>[number];

/** The problems and objects of one document, in document order. */
export interface ParsedDocument {
  readonly errors: readonly ManifestError[];
  readonly objects: readonly RawObject[];
}

/** Parses one file's text into its documents. Never throws. */
export function parseManifestText(file: string, text: string): ParsedDocument[] {
  if (text.length > MAX_FILE_CHARS) {
    const r = new Reporter(file, undefined);
    r.error('NETPOLD_E_PARSE', undefined, `file of ${text.length} characters exceeds the ${MAX_FILE_CHARS}-character limit`);
    return [{ errors: r.errors, objects: [] }];
  }
  let docs: ReturnType<typeof parseAllDocuments>;
  try {
    docs = parseAllDocuments(text.startsWith('\uFEFF') ? text.slice(1) : text, PARSE_OPTIONS);
  } catch (e) {
    const r = new Reporter(file, undefined);
    r.error('NETPOLD_E_PARSE', undefined, `cannot parse the file as YAML or JSON: ${errorText(e)}`);
    return [{ errors: r.errors, objects: [] }];
  }
  const out: ParsedDocument[] = [];
  let n = 0;
  for (const doc of docs) {
    n++;
    const r = new Reporter(file, undefined);
    const objects: RawObject[] = [];
    readDocument(r, doc, `document ${n}`, objects);
    out.push({ errors: r.errors, objects });
  }
  return out;
}

function readDocument(r: Reporter, doc: YamlDocument, where: string, out: RawObject[]): void {
  if (doc.errors.length > 0) {
    for (const err of doc.errors) r.error('NETPOLD_E_PARSE', undefined, `YAML/JSON syntax error in ${where}: ${firstLine(err.message)}`);
    return;
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIASES });
  } catch (e) {
    r.error('NETPOLD_E_PARSE', undefined, `cannot read ${where}: ${errorText(e)}`);
    return;
  }
  collectObjects(r, value, where, undefined, 0, out);
}

interface ListDefaults {
  readonly apiVersion: string;
  readonly kind: string;
}

/**
 * Adds `value` (one document, or one List item) to `out`. An empty document is fine. A typed list
 * such as `NetworkPolicyList` may omit apiVersion/kind in its items (the API server does): they
 * are then the list's apiVersion and the kind without `List`.
 */
function collectObjects(
  r: Reporter,
  value: unknown,
  where: string,
  defaults: ListDefaults | undefined,
  depth: number,
  out: RawObject[],
): void {
  if (value === null || value === undefined) {
    if (depth > 0) r.error('NETPOLD_E_OBJECT', undefined, `${where} is empty; a list item must be an object`);
    return;
  }
  if (!isRecord(value)) {
    r.error('NETPOLD_E_OBJECT', undefined, `${where} is ${show(value)}, not a Kubernetes object (a mapping with apiVersion and kind)`);
    return;
  }
  const apiVersion = typeField(r, value, 'apiVersion', where, defaults?.apiVersion);
  const kind = typeField(r, value, 'kind', where, defaults?.kind);
  if (apiVersion === undefined || kind === undefined) return;
  if (isListKind(kind)) {
    expandList(r, value, kind, apiVersion, where, depth, out);
    return;
  }
  out.push({ file: r.file, where, apiVersion, kind, value });
}

function typeField(
  r: Reporter,
  obj: Record<string, unknown>,
  key: 'apiVersion' | 'kind',
  where: string,
  fallback: string | undefined,
): string | undefined {
  const v = Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
  if ((v === undefined || v === null) && fallback !== undefined) return fallback;
  if (typeof v === 'string' && v.length > 0 && v.length <= MAX_KIND_CHARS) return v;
  const got = v === undefined ? 'it is missing' : `got ${show(v)}`;
  r.error('NETPOLD_E_OBJECT', undefined, `${where} is not a Kubernetes object: ${key} must be a non-empty string (${got})`);
  return undefined;
}

function isListKind(kind: string): boolean {
  return kind.endsWith('List');
}

function expandList(
  r: Reporter,
  list: Record<string, unknown>,
  kind: string,
  apiVersion: string,
  where: string,
  depth: number,
  out: RawObject[],
): void {
  if (depth >= MAX_LIST_NESTING) {
    r.error('NETPOLD_E_OBJECT', undefined, `${where}: lists nested more than ${MAX_LIST_NESTING} deep`);
    return;
  }
  const items = Object.prototype.hasOwnProperty.call(list, 'items') ? list['items'] : undefined;
  if (items === undefined || items === null) return;
  if (!Array.isArray(items)) {
    r.error('NETPOLD_E_FIELD_TYPE', 'items', `${where}: ${kind} items must be a list, got ${show(items)}`);
    return;
  }
  const itemKind = kind === 'List' ? undefined : kind.slice(0, -'List'.length);
  const defaults = itemKind === undefined || itemKind === '' ? undefined : { apiVersion, kind: itemKind };
  items.forEach((item: unknown, i) => {
    collectObjects(r, item, `${where}, items[${i}]`, defaults, depth + 1, out);
  });
}

function firstLine(s: string): string {
  const line = s.split('\n', 1)[0] ?? s;
  return line.replace(/:$/, '');
}

function errorText(e: unknown): string {
  return e instanceof Error ? firstLine(e.message).slice(0, 200) : 'unknown error';
}
