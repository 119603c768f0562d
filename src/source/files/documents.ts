// From manifest text to raw Kubernetes objects: YAML/JSON parsing (JSON is parsed as YAML 1.2,
// of which it is a subset, so duplicate keys and syntax errors get line numbers too),
// multi-document streams, and List expansion.
//
// Nesting is bounded while parsing. The YAML composer (and toJS after it) recurses once per level
// of nested lists and mappings, and so does the CST parser when many levels end at once: a
// document thousands of levels deep overflows the stack, and an overflow that lands in V8's
// RegExp compiler aborts the whole process. The CST parser keeps the open levels on an explicit
// stack, so the text is fed to it one token at a time and parsing stops as soon as more than
// MAX_NESTING levels are open, before any recursive stage sees them. A pre-scan of the text
// cannot give that bound: the YAML error recovery nests mappings without any indentation
// (`a: b: c` on each of 3,000 lines is 3,000 levels deep) and inside flow collections.
// Merge keys (`<<`) copy a mapping into another one, and toJS recurses through the copy: the
// depth of a document is checked again with merges applied (iteratively) before toJS runs.
import { Composer, type CST, isAlias, isMap, isPair, isScalar, isSeq, Lexer, LineCounter, Parser, type YAMLError, type YAMLMap, type YAMLSeq } from 'yaml';
import type { ManifestError } from '../../errors.js';
import { escapeText, isRecord, Reporter, show } from './report.js';

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
/**
 * Lists and mappings (block or flow style) nested more deeply than this are rejected with one
 * NETPOLD_E_PARSE error: found while parsing, the rest of the file is not read; found once merge
 * keys are applied, that document is not read. Kubernetes objects need far fewer levels (the
 * values of a NetworkPolicy's matchExpressions are 10 deep).
 */
export const MAX_NESTING = 64;
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
  merge: true,
  // No process warnings on stderr (e.g. for a mapping used as a key): problems are reported
  // as errors by the validation that follows, never as side effects.
  logLevel: 'error',
} as const;

type YamlDocument = ReturnType<Composer['compose']> extends Iterable<infer D> ? D : never;

/** The problems and objects of one document, in document order. */
export interface ParsedDocument {
  readonly errors: readonly ManifestError[];
  readonly objects: readonly RawObject[];
}

/** Parses one file's text into its documents. Never throws. */
export function parseManifestText(file: string, text: string): ParsedDocument[] {
  if (text.length > MAX_FILE_CHARS) {
    return [fileError(file, `file of ${text.length} characters exceeds the ${MAX_FILE_CHARS}-character limit`)];
  }
  let parsed: Parsed;
  try {
    parsed = parseBounded(text.startsWith('\uFEFF') ? text.slice(1) : text);
  } catch (e) {
    return [fileError(file, `cannot parse the file as YAML or JSON: ${errorText(e)}`)];
  }
  const out: ParsedDocument[] = [];
  let n = 0;
  for (const doc of parsed.docs) {
    n++;
    const r = new Reporter(file, undefined);
    const objects: RawObject[] = [];
    readDocument(r, doc, `document ${n}`, parsed, objects);
    out.push({ errors: r.errors, objects });
  }
  if (parsed.tooDeep !== undefined) {
    const { line, col } = parsed.tooDeep;
    out.push(
      fileError(
        file,
        `document ${n + 1} nests lists and mappings more than ${MAX_NESTING} levels deep at line ${line}, column ${col}; ` +
          `netpold reads at most ${MAX_NESTING} levels, so the rest of the file is not read`,
      ),
    );
  }
  return out;
}

function fileError(file: string, message: string): ParsedDocument {
  const r = new Reporter(file, undefined);
  r.error('NETPOLD_E_PARSE', undefined, message);
  return { errors: r.errors, objects: [] };
}

type LinePos = (offset: number) => { readonly line: number; readonly col: number };

interface Parsed {
  /** The documents before the first one nested too deeply (all of them when none is). */
  readonly docs: YamlDocument[];
  readonly tooDeep: { readonly line: number; readonly col: number } | undefined;
  readonly linePos: LinePos;
  /** False when the text has no `<<`, so no merge key (which is always a plain `<<`). */
  readonly mayMerge: boolean;
}

/**
 * What `parseAllDocuments` does (lexer, CST parser, composer), with the CST parser's stack
 * checked after each token: at most MAX_NESTING collections are ever open, so no later stage
 * recurses more than that, whatever the input and whatever the caller's stack depth.
 */
function parseBounded(source: string): Parsed {
  const lines = new LineCounter();
  const parser = new Parser(lines.addNewLine);
  const composer = new Composer(PARSE_OPTIONS);
  let tooDeepAt: number | undefined;
  function* tokens(): Generator<CST.Token> {
    lines.addNewLine(0); // as Parser.parse does
    for (const lexeme of new Lexer().lex(source)) {
      const at = parser.offset;
      yield* parser.next(lexeme);
      if (parser.stack.length > MAX_NESTING && openCollections(parser.stack) > MAX_NESTING) {
        tooDeepAt = at;
        return;
      }
    }
    yield* parser.end();
  }
  const docs = Array.from(composer.compose(tokens()));
  // prettyErrors, as parseAllDocuments applies it, for the part of the message netpold prints.
  for (const doc of docs) for (const err of doc.errors) locate(err, lines);
  return {
    docs,
    tooDeep: tooDeepAt === undefined ? undefined : lines.linePos(tooDeepAt),
    linePos: (offset) => lines.linePos(offset),
    mayMerge: source.includes('<<'),
  };
}

function openCollections(stack: readonly CST.Token[]): number {
  let n = 0;
  for (const t of stack) if (t.type === 'block-map' || t.type === 'block-seq' || t.type === 'flow-collection') n++;
  return n;
}

/** Appends ` at line L, column C` to the message, as the yaml package's prettyErrors option does. */
function locate(err: YAMLError, lines: LineCounter): void {
  const pos = err.pos[0];
  if (pos === -1) return;
  const { line, col } = lines.linePos(pos);
  err.message += ` at line ${line}, column ${col}`;
}

function readDocument(r: Reporter, doc: YamlDocument, where: string, parsed: Parsed, out: RawObject[]): void {
  const [first, ...more] = doc.errors;
  if (first !== undefined) {
    // One error per document: after the first, the parser's errors are mostly consequences of
    // it (an unclosed `[` is reported once per enclosing level).
    const rest = more.length === 0 ? '' : ` (and ${more.length} more syntax error${more.length === 1 ? '' : 's'} in ${where})`;
    r.error('NETPOLD_E_PARSE', undefined, `YAML/JSON syntax error in ${where}: ${escapeText(firstLine(first.message))}${rest}`);
    return;
  }
  // Without merge keys the nesting was bounded while parsing.
  const merged = parsed.mayMerge ? mergedNesting(doc.contents) : { levels: 0, via: undefined, cycleAt: undefined };
  if (merged.cycleAt !== undefined) {
    const { line, col } = parsed.linePos(merged.cycleAt);
    r.error('NETPOLD_E_PARSE', undefined, `cannot read ${where}: the merge key (<<) at line ${line}, column ${col} merges a mapping into itself`);
    return;
  }
  if (merged.levels > MAX_NESTING) {
    const { line, col } = parsed.linePos(merged.via ?? doc.range[0]);
    const how = merged.via === undefined ? `at line ${line}, column ${col}` : `once the merge key (<<) at line ${line}, column ${col} is applied`;
    r.error('NETPOLD_E_PARSE', undefined, `${where} nests lists and mappings more than ${MAX_NESTING} levels deep ${how}; netpold reads at most ${MAX_NESTING} levels, so the document is not read`);
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

type Collection = YAMLMap<unknown, unknown> | YAMLSeq<unknown>;

interface Nesting {
  /** Levels of lists and mappings in the value toJS builds, merged mappings included. */
  readonly levels: number;
  /** Offset of the outermost merge key on the deepest path, if any. */
  readonly via: number | undefined;
  /** Offset of a merge key that merges a mapping containing it (toJS would never end). */
  readonly cycleAt: number | undefined;
}

/**
 * The nesting of a document's value once merge keys are applied, computed without recursion.
 * A merge key copies the entries of its source mappings (aliases or inline mappings) into its
 * own mapping, so a source of N levels adds N - 1 levels there. Other aliases are leaves: toJS
 * reuses the value it built for the anchor.
 */
function mergedNesting(root: unknown): Nesting {
  if (!isCollection(root)) return { levels: 0, via: undefined, cycleAt: undefined };
  const sources = aliasSources(root);
  const done = new Map<Collection, { levels: number; via: number | undefined }>();
  const open = new Set<Collection>();
  interface Frame {
    readonly node: Collection;
    readonly edges: readonly Edge[];
    i: number;
    levels: number;
    via: number | undefined;
  }
  const frame = (node: Collection): Frame => {
    open.add(node);
    return { node, edges: edgesOf(node, sources), i: 0, levels: 1, via: undefined };
  };
  const stack: Frame[] = [frame(root)];
  let result = { levels: 0, via: undefined as number | undefined };
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const edge = top.edges[top.i];
    if (edge !== undefined) {
      const known = done.get(edge.node);
      if (known === undefined) {
        if (open.has(edge.node)) return { levels: Infinity, via: edge.mergeAt, cycleAt: edge.mergeAt ?? 0 };
        stack.push(frame(edge.node));
        continue;
      }
      top.i++;
      const levels = edge.mergeAt === undefined ? known.levels + 1 : known.levels;
      if (levels > top.levels) {
        top.levels = levels;
        top.via = edge.mergeAt ?? known.via;
      }
      continue;
    }
    stack.pop();
    open.delete(top.node);
    done.set(top.node, { levels: top.levels, via: top.via });
    result = { levels: top.levels, via: top.via };
  }
  return { ...result, cycleAt: undefined };
}

interface Edge {
  readonly node: Collection;
  /** Set for a merge source: the offset of the merge key. */
  readonly mergeAt: number | undefined;
}

/** The child collections of a list or mapping, and the mappings its merge keys merge. */
function edgesOf(node: Collection, sources: ReadonlyMap<unknown, unknown>): Edge[] {
  const out: Edge[] = [];
  for (const item of node.items) {
    if (!isPair(item)) {
      if (isCollection(item)) out.push({ node: item, mergeAt: undefined });
      continue;
    }
    if (isCollection(item.key)) out.push({ node: item.key, mergeAt: undefined });
    if (isMergeKey(item.key)) {
      const at = item.key.range?.[0] ?? 0;
      const values = isSeq(item.value) ? item.value.items : [item.value];
      for (const v of values) {
        const source = isAlias(v) ? sources.get(v) : v;
        if (isMap(source)) out.push({ node: source, mergeAt: at });
      }
    } else if (isCollection(item.value)) {
      out.push({ node: item.value, mergeAt: undefined });
    }
  }
  return out;
}

/** What toJS treats as a merge key (with the merge option on): a plain `<<`. */
function isMergeKey(key: unknown): key is { range?: readonly number[] | null } {
  if (!isScalar(key)) return false;
  const v: unknown = key.value;
  if (typeof v === 'symbol') return v.description === '<<';
  return v === '<<' && (key.type === undefined || key.type === 'PLAIN');
}

function isCollection(v: unknown): v is Collection {
  return isMap(v) || isSeq(v);
}

/**
 * The anchored node each alias refers to: the last node with that anchor before the alias, in
 * the order yaml's Alias.resolve uses (pre-order, keys before values). Without recursion.
 */
function aliasSources(root: Collection): Map<unknown, unknown> {
  const anchors = new Map<string, unknown>();
  const out = new Map<unknown, unknown>();
  const todo: unknown[] = [root];
  while (todo.length > 0) {
    const n = todo.pop();
    if (isAlias(n)) {
      out.set(n, anchors.get(n.source));
      continue;
    }
    if ((isScalar(n) || isCollection(n)) && typeof n.anchor === 'string') anchors.set(n.anchor, n);
    if (!isCollection(n)) continue;
    for (let i = n.items.length - 1; i >= 0; i--) {
      const item = n.items[i];
      if (isPair(item)) todo.push(item.value, item.key);
      else todo.push(item);
    }
  }
  return out;
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
    r.error('NETPOLD_E_FIELD_TYPE', 'items', `${where}: ${escapeText(kind)} items must be a list, got ${show(items)}`);
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

/** The first line of an exception's message, escaped (it may quote the input). */
function errorText(e: unknown): string {
  return e instanceof Error ? escapeText(firstLine(e.message).slice(0, 200)) : 'unknown error';
}
