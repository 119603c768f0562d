// The manifests-folder source: reads Namespace, Pod, Node and NetworkPolicy objects from YAML or
// JSON files into a ClusterState, validating them as strictly as the Kubernetes API server.
// Neither entry point throws: every problem becomes a ManifestError with a stable code.
import type { ManifestError } from '../../errors.js';
import type { ClusterState, NamespaceInfo, NodeInfo, PodInfo, PolicySpec } from '../../model/types.js';
import { parseManifestText, type RawObject } from './documents.js';
import { readManifestFiles } from './files.js';
import { DEFAULT_NAMESPACE, isNamespaced, type Meta, type ReadKind, readMetadata } from './metadata.js';
import { readNetworkPolicy } from './networkpolicy.js';
import { impliedNamespace, readNamespace, readNode, readPod } from './objects.js';
import { clip, escapeText, get, isRecord, Reporter, show } from './report.js';

export interface LoadResult {
  state: ClusterState;
  /** Every problem found, never just the first. */
  errors: ManifestError[];
  /** Informational: skipped kinds (one notice per kind), policy rules that have no effect. */
  notices: string[];
}

/** Files or folders (recursive: *.yaml, *.yml, *.json, in sorted order). Unreadable paths are NETPOLD_E_IO. */
export function loadManifestPaths(paths: string[]): LoadResult {
  const read = readManifestFiles(paths);
  return load(read.docs, read.errors);
}

/** The same, from in-memory texts. */
export function loadManifestTexts(docs: { file: string; text: string }[]): LoadResult {
  return load(docs, []);
}

// ---------------------------------------------------------------------------------------------

/** The apiVersion netpold reads each kind from. */
const READ_KINDS: Readonly<Record<ReadKind, string>> = {
  Namespace: 'v1',
  Pod: 'v1',
  Node: 'v1',
  NetworkPolicy: 'networking.k8s.io/v1',
};
const READ_KIND_NAMES = Object.keys(READ_KINDS) as ReadKind[];

/** Namespaces every cluster has; implied (with only their name label) when not declared. */
const BUILTIN_NAMESPACES = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];

type Value = NamespaceInfo | PodInfo | NodeInfo | PolicySpec;

/** One validated object. `value` is undefined when the object is dropped. */
interface Entry {
  readonly kind: ReadKind;
  readonly reporter: Reporter;
  readonly where: string;
  /** metadata.name when it is a string (possibly invalid). */
  readonly name: string | undefined;
  /** `kind/namespace/name` for duplicate detection; undefined when the name is unknown. */
  readonly key: string | undefined;
  /** Namespaced kinds: the (valid) namespace. */
  readonly namespace: string | undefined;
  value: Value | undefined;
}

interface SkippedKind {
  count: number;
  readonly apiVersions: string[];
}

function load(docs: readonly { file: string; text: string }[], preErrors: readonly ManifestError[]): LoadResult {
  // Errors are reported in input order: per document, its parse errors then its objects' errors
  // (cross-object errors found later are attached to the object they drop).
  const timeline: (readonly ManifestError[] | Entry)[] = [];
  const entries: Entry[] = [];
  const skipped = new Map<string, SkippedKind>();
  for (const doc of safeDocs(docs)) {
    for (const parsed of parseManifestText(doc.file, doc.text)) {
      timeline.push(parsed.errors);
      for (const raw of parsed.objects) {
        const read = readObject(raw, skipped);
        if (read === undefined) continue;
        timeline.push(read);
        if (isEntry(read)) entries.push(read);
      }
    }
  }
  const state = assemble(entries);
  const errors = [...preErrors, ...timeline.flatMap((t) => (isEntry(t) ? t.reporter.errors : t))];
  const notices = [...skippedNotices(skipped), ...entries.flatMap((e) => (e.value === undefined ? [] : e.reporter.notices))];
  return { state, errors, notices };
}

function isEntry(x: readonly ManifestError[] | Entry): x is Entry {
  return 'reporter' in x;
}

/**
 * Input from callers is trusted to be typed, but never to be well-formed. File names are
 * escaped here, once: every error and notice names its file, and a name can hold any character.
 */
function safeDocs(docs: readonly { file: string; text: string }[]): { file: string; text: string }[] {
  if (!Array.isArray(docs)) return [];
  return docs.map((d: unknown, i) => {
    const rec = isRecord(d) ? d : {};
    const file = typeof rec['file'] === 'string' ? escapeText(rec['file']) : `<input ${i}>`;
    const text = typeof rec['text'] === 'string' ? rec['text'] : '';
    return { file, text };
  });
}

/** An entry for an object of a read kind; errors alone for one that cannot be read; undefined for a skipped kind. */
function readObject(raw: RawObject, skipped: Map<string, SkippedKind>): Entry | readonly ManifestError[] | undefined {
  const kind = READ_KIND_NAMES.find((k) => k === raw.kind);
  if (kind === undefined) {
    tallySkipped(skipped, raw);
    return undefined;
  }
  const r = new Reporter(raw.file, objectRef(kind, raw));
  const expected = READ_KINDS[kind];
  if (raw.apiVersion !== expected) {
    r.error(
      'NETPOLD_E_INVALID_VALUE',
      'apiVersion',
      `netpold reads ${kind} from apiVersion ${expected} only, got ${show(raw.apiVersion)}; the object is not read`,
    );
    return r.errors;
  }
  const meta = readMetadata(r, get(raw.value, 'metadata'), kind);
  let value = readKind(kind, r, raw.value, meta);
  // A policy whose namespace is invalid can select no pods: it is reported, then dropped.
  if (kind === 'NetworkPolicy' && meta.namespace === undefined) value = undefined;
  const namespace = isNamespaced(kind) ? meta.namespace : undefined;
  const key = meta.name === undefined || (isNamespaced(kind) && namespace === undefined)
    ? undefined
    : `${kind}/${namespace ?? ''}/${meta.name}`;
  return { kind, reporter: r, where: raw.where, name: meta.name, key, namespace, value };
}

function readKind(kind: ReadKind, r: Reporter, obj: Record<string, unknown>, meta: Meta): Value | undefined {
  switch (kind) {
    case 'Namespace':
      return readNamespace(r, obj, meta);
    case 'Pod':
      return readPod(r, obj, meta);
    case 'Node':
      return readNode(r, obj, meta);
    case 'NetworkPolicy':
      // Fail-closed: an invalid policy is kept (valid: false); see networkpolicy.ts.
      return readNetworkPolicy(r, obj, meta);
  }
}

/**
 * `Kind namespace/name`, `Kind name`, or `Kind (unnamed, document 2)`; from the raw object so
 * every error can name it. The name and namespace may be anything at this point: escaped.
 */
function objectRef(kind: ReadKind, raw: RawObject): string {
  const meta = get(raw.value, 'metadata');
  const rawName = isRecord(meta) ? get(meta, 'name') : undefined;
  if (typeof rawName !== 'string' || rawName === '') return `${kind} (unnamed, ${raw.where})`;
  const name = clipName(rawName);
  if (!isNamespaced(kind)) return `${kind} ${name}`;
  const rawNs = isRecord(meta) ? get(meta, 'namespace') : undefined;
  const ns = rawNs === undefined || rawNs === null || rawNs === '' ? DEFAULT_NAMESPACE : typeof rawNs === 'string' ? clipName(rawNs) : '?';
  return `${kind} ${ns}/${name}`;
}

function clipName(s: string): string {
  return escapeText(clip(s, 256));
}

// ---------------------------------------------------------------------------------------------
// Skipped kinds

function tallySkipped(skipped: Map<string, SkippedKind>, raw: RawObject): void {
  const t = skipped.get(raw.kind) ?? { count: 0, apiVersions: [] };
  t.count++;
  if (!t.apiVersions.includes(raw.apiVersion)) t.apiVersions.push(raw.apiVersion);
  skipped.set(raw.kind, t);
}

function skippedNotices(skipped: Map<string, SkippedKind>): string[] {
  const out: string[] = [];
  for (const [kind, t] of skipped) {
    const objects = t.count === 1 ? '1 object' : `${t.count} objects`;
    const near = READ_KIND_NAMES.find((k) => k.toLowerCase() === kind.toLowerCase());
    const hint = near === undefined ? '' : ` (did you mean kind: ${near}? kinds are case-sensitive)`;
    const apiVersions = t.apiVersions.map(escapeText).join(', ');
    out.push(`skipped ${objects} of kind ${escapeText(kind)} (${apiVersions}): netpold only reads ${READ_KIND_NAMES.join(', ')}${hint}`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Cross-object checks: duplicates, namespaces, IP conflicts

function assemble(entries: Entry[]): ClusterState {
  dropDuplicates(entries);
  const namespaces = collectNamespaces(entries);
  dropUnknownNamespaces(entries, namespaces);
  const nodes = collectNodes(entries);
  const pods = collectPods(entries, nodes);
  const policies = entries.flatMap((e) => (e.kind === 'NetworkPolicy' && e.value !== undefined ? [e.value as PolicySpec] : []));
  return { namespaces: [...namespaces.values()], pods, nodes, policies };
}

/** "The same object (kind, namespace, name) appears twice; the first one is kept" — even when the first is invalid. */
function dropDuplicates(entries: Entry[]): void {
  const first = new Map<string, Entry>();
  for (const e of entries) {
    if (e.key === undefined) continue;
    const prev = first.get(e.key);
    if (prev === undefined) {
      first.set(e.key, e);
      continue;
    }
    e.value = undefined;
    e.reporter.error('NETPOLD_E_DUPLICATE', undefined, `${e.reporter.object ?? e.kind} is also defined in ${prev.reporter.file} (${prev.where}); the first one is kept and this one is ignored`);
  }
}

function collectNamespaces(entries: Entry[]): Map<string, NamespaceInfo> {
  const out = new Map<string, NamespaceInfo>();
  const declared = new Set<string>();
  for (const e of entries) {
    if (e.kind !== 'Namespace') continue;
    if (e.name !== undefined) declared.add(e.name);
    if (e.value !== undefined) out.set((e.value as NamespaceInfo).name, e.value as NamespaceInfo);
  }
  for (const name of BUILTIN_NAMESPACES) {
    if (!declared.has(name)) out.set(name, impliedNamespace(name));
  }
  return out;
}

/** Objects in a namespace no manifest declares are dropped (a policy there would select no pods anyway). */
function dropUnknownNamespaces(entries: Entry[], namespaces: Map<string, NamespaceInfo>): void {
  const invalid = new Set(entries.flatMap((e) => (e.kind === 'Namespace' && e.value === undefined && e.name !== undefined ? [e.name] : [])));
  for (const e of entries) {
    if (e.value === undefined || e.namespace === undefined || namespaces.has(e.namespace)) continue;
    e.value = undefined;
    const what = e.kind === 'NetworkPolicy' ? 'the policy is dropped: a policy in an unknown namespace selects no pods' : `the ${e.kind} is dropped`;
    const why = invalid.has(e.namespace)
      ? `namespace ${show(e.namespace)} is declared, but its Namespace object is invalid (see its errors)`
      : `namespace ${show(e.namespace)} is not declared by any manifest (only ${BUILTIN_NAMESPACES.join(', ')} are implied); add a Namespace object`;
    e.reporter.error('NETPOLD_E_UNKNOWN_NAMESPACE', 'metadata.namespace', `${why}; ${what}`);
  }
}

/** Node addresses; an address two nodes claim stays with the first node. */
function collectNodes(entries: Entry[]): NodeInfo[] {
  const owner = new Map<string, string>();
  const out: NodeInfo[] = [];
  for (const e of entries) {
    if (e.kind !== 'Node' || e.value === undefined) continue;
    const node = e.value as NodeInfo;
    const addresses = node.addresses.filter((ip) => {
      const other = owner.get(ip);
      if (other === undefined) {
        owner.set(ip, node.name);
        return true;
      }
      e.reporter.error('NETPOLD_E_IP_CONFLICT', 'status.addresses', `address ${ip} is also an address of Node ${other}; it is kept there and ignored here`);
      return false;
    });
    e.value = { ...node, addresses };
    out.push(e.value as NodeInfo);
  }
  return out;
}

/**
 * Pod IPs must be unique, and distinct from node addresses, except for hostNetwork pods, which
 * legitimately share their node's address. The first claimant keeps an address; a later pod
 * claiming it is dropped.
 */
function collectPods(entries: Entry[], nodes: readonly NodeInfo[]): PodInfo[] {
  const nodeOf = new Map<string, string>();
  for (const n of nodes) for (const ip of n.addresses) nodeOf.set(ip, n.name);
  const podOf = new Map<string, string>();
  const out: PodInfo[] = [];
  for (const e of entries) {
    if (e.kind !== 'Pod' || e.value === undefined) continue;
    const pod = e.value as PodInfo;
    if (!pod.hostNetwork) {
      const conflict = pod.ips.map((ip) => ipConflict(ip, nodeOf, podOf)).find((c) => c !== undefined);
      if (conflict !== undefined) {
        e.value = undefined;
        e.reporter.error('NETPOLD_E_IP_CONFLICT', 'status.podIP', `${conflict}; this pod is dropped (only hostNetwork pods may share an address)`);
        continue;
      }
      for (const ip of pod.ips) podOf.set(ip, `Pod ${pod.namespace}/${pod.name}`);
    }
    out.push(pod);
  }
  return out;
}

function ipConflict(ip: string, nodeOf: Map<string, string>, podOf: Map<string, string>): string | undefined {
  const node = nodeOf.get(ip);
  if (node !== undefined) return `IP ${ip} is an address of Node ${node}`;
  const pod = podOf.get(ip);
  if (pod !== undefined) return `IP ${ip} is already used by ${pod}`;
  return undefined;
}

