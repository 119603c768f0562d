// ObjectMeta: the name, namespace and labels netpold reads, and the standard fields it accepts.
import type { Labels } from '../../model/types.js';
import { checkFields, readOptionalString, readRecord, readRequiredString } from './fields.js';
import { dns1123LabelProblem, dns1123SubdomainProblem } from './names.js';
import { field, get, isAbsent, type Reporter, show } from './report.js';
import { readLabelMap } from './selectors.js';

export type ReadKind = 'Namespace' | 'Pod' | 'Node' | 'NetworkPolicy';

export interface Meta {
  /** The name if it is a string (even an invalid one, so errors can name the object). */
  readonly name: string | undefined;
  readonly nameValid: boolean;
  /** Namespaced kinds only: the namespace, `default` when absent; undefined when invalid. */
  readonly namespace: string | undefined;
  /** Undefined when the labels are invalid. */
  readonly labels: Labels | undefined;
}

/** Read and validated. */
const READ_FIELDS = ['name', 'namespace', 'labels'];
/** Accepted but ignored: they do not affect enforcement. */
const IGNORED_FIELDS = [
  'annotations',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'managedFields',
  'ownerReferences',
  'finalizers',
  'generateName',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'selfLink',
];
const META_FIELDS = [...READ_FIELDS, ...IGNORED_FIELDS];

export const DEFAULT_NAMESPACE = 'default';

export function isNamespaced(kind: ReadKind): boolean {
  return kind === 'Pod' || kind === 'NetworkPolicy';
}

export function readMetadata(r: Reporter, v: unknown, kind: ReadKind): Meta {
  if (isAbsent(v)) {
    r.error('NETPOLD_E_REQUIRED', 'metadata', 'metadata (with metadata.name) is required');
    return { name: undefined, nameValid: false, namespace: isNamespaced(kind) ? DEFAULT_NAMESPACE : undefined, labels: undefined };
  }
  const rec = readRecord(r, v, 'metadata');
  if (rec === undefined) return { name: undefined, nameValid: false, namespace: undefined, labels: undefined };
  checkFields(r, rec, 'metadata', META_FIELDS);
  const { name, nameValid } = readName(r, rec, kind);
  const namespace = isNamespaced(kind) ? readNamespaceField(r, get(rec, 'namespace')) : undefined;
  // For cluster-scoped kinds the API server clears metadata.namespace (rest.BeforeCreate), so
  // a namespace written on a Namespace or Node is accepted and ignored, as kubectl apply does.
  const labels = readLabelMap(r, get(rec, 'labels'), field('metadata', 'labels'), 'NETPOLD_E_INVALID_VALUE');
  return { name, nameValid, namespace, labels };
}

function readName(r: Reporter, rec: Record<string, unknown>, kind: ReadKind): { name: string | undefined; nameValid: boolean } {
  const path = 'metadata.name';
  const raw = get(rec, 'name');
  if (isAbsent(raw) && !isAbsent(get(rec, 'generateName'))) {
    r.error('NETPOLD_E_REQUIRED', path, 'metadata.name is required (generateName is not supported: netpold needs the final name)');
    return { name: undefined, nameValid: false };
  }
  const name = readRequiredString(r, raw, path, 'metadata.name');
  if (name === undefined) return { name: undefined, nameValid: false };
  // Namespace names are DNS-1123 labels; Pod, Node and NetworkPolicy names are DNS-1123 subdomains.
  const problem = kind === 'Namespace' ? dns1123LabelProblem(name) : dns1123SubdomainProblem(name);
  if (problem !== undefined) {
    r.error('NETPOLD_E_INVALID_VALUE', path, `invalid ${kind} name ${show(name)}: ${problem}`);
    return { name, nameValid: false };
  }
  return { name, nameValid: true };
}

/**
 * kubectl puts an object without metadata.namespace (or with an empty one) in `default`, its
 * context's default namespace; netpold has no context, so it is always `default`.
 */
function readNamespaceField(r: Reporter, v: unknown): string | undefined {
  const path = 'metadata.namespace';
  if (isAbsent(v) || v === '') return DEFAULT_NAMESPACE;
  const ns = readOptionalString(r, v, path);
  if (ns === undefined) return undefined;
  const problem = dns1123LabelProblem(ns);
  if (problem !== undefined) {
    r.error('NETPOLD_E_INVALID_VALUE', path, `invalid namespace ${show(ns)}: ${problem}`);
    return undefined;
  }
  return ns;
}
