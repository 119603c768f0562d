// Wire objects from the Kubernetes API (plain JSON, as served by list and watch) into the domain
// types, through exactly the validators of the manifests-folder source (src/source/files), so
// that both sources accept and reject the same objects. Nothing here imports the client library:
// these functions see parsed JSON only, and no wire type leaves src/source/k8s.
import type { ManifestError } from '../../errors.js';
import type { NamespaceInfo, NodeInfo, PodInfo, PolicySpec } from '../../model/types.js';
import { DEFAULT_NAMESPACE, isNamespaced, readMetadata, type ReadKind } from '../files/metadata.js';
import { readNetworkPolicy } from '../files/networkpolicy.js';
import { readNamespace, readNode, readPod } from '../files/objects.js';
import { get, isRecord, Reporter } from '../files/report.js';

export type Kind = ReadKind;
export const KINDS: readonly Kind[] = ['Namespace', 'Pod', 'Node', 'NetworkPolicy'];

/** What each kind converts to. */
export interface ValueOf {
  Namespace: NamespaceInfo;
  Pod: PodInfo;
  Node: NodeInfo;
  NetworkPolicy: PolicySpec;
}

export const API_VERSION: Readonly<Record<Kind, string>> = {
  Namespace: 'v1',
  Pod: 'v1',
  Node: 'v1',
  NetworkPolicy: 'networking.k8s.io/v1',
};

/** The collection path of each kind (list and watch, all namespaces). */
export const API_PATH: Readonly<Record<Kind, string>> = {
  Namespace: '/api/v1/namespaces',
  Pod: '/api/v1/pods',
  Node: '/api/v1/nodes',
  NetworkPolicy: '/apis/networking.k8s.io/v1/networkpolicies',
};

/** The `file` of errors about objects from the API server (formatManifestError prints it first). */
export const API_SOURCE = 'kube-apiserver';

/** Enough to name an object in logs and to post an Event about it. */
export interface ObjectRef {
  readonly kind: Kind;
  /** `namespace/name` for namespaced kinds, `name` otherwise (the informer's cache key). */
  readonly key: string;
  readonly namespace: string | undefined;
  readonly name: string;
  readonly uid: string | undefined;
  readonly resourceVersion: string;
}

/** One object after validation. */
export interface Converted<K extends Kind> {
  readonly ref: ObjectRef;
  /** Undefined when the object is not part of the state (rejected, or ignored: see `ignored`). */
  readonly value: ValueOf[K] | undefined;
  /** Validation errors; non-empty means the object was rejected (or, a policy, kept failing closed). */
  readonly errors: readonly ManifestError[];
  /** Why an object without errors is left out of the state. */
  readonly ignored: string | undefined;
}

/**
 * The key, name and resourceVersion of a wire object, as the informer's cache keys it
 * (`metadata.namespace || ''` and `metadata.name || ''`), or undefined when it has no name.
 */
export function refOf(kind: Kind, obj: unknown): ObjectRef | undefined {
  if (!isRecord(obj)) return undefined;
  const meta = get(obj, 'metadata');
  if (!isRecord(meta)) return undefined;
  const name = get(meta, 'name');
  if (typeof name !== 'string' || name === '') return undefined;
  const ns = get(meta, 'namespace');
  const namespace = isNamespaced(kind) ? (typeof ns === 'string' && ns !== '' ? ns : DEFAULT_NAMESPACE) : undefined;
  const rawNs = typeof ns === 'string' ? ns : '';
  const uid = get(meta, 'uid');
  const rv = get(meta, 'resourceVersion');
  return {
    kind,
    key: cacheKey(rawNs, name),
    namespace,
    name,
    uid: typeof uid === 'string' ? uid : undefined,
    resourceVersion: typeof rv === 'string' ? rv : '',
  };
}

/** The informer's cache key: `namespace/name`, or `/name` for cluster-scoped objects. */
export function cacheKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** `Pod ns/name` or `Node name`: how errors and logs name an object. */
export function describeRef(ref: ObjectRef): string {
  return ref.namespace === undefined ? `${ref.kind} ${ref.name}` : `${ref.kind} ${ref.namespace}/${ref.name}`;
}

/**
 * Pods in a terminal phase keep `status.podIP` after their containers have exited, but the
 * address is released and may already belong to a new pod: they are left out of the state.
 */
const TERMINAL_PHASES = ['Succeeded', 'Failed'];

/** Validates one wire object (never throws). */
export function convert<K extends Kind>(kind: K, obj: Record<string, unknown>, ref: ObjectRef): Converted<K> {
  const r = new Reporter(API_SOURCE, describeRef(ref));
  if (kind === 'Pod') {
    const status = get(obj, 'status');
    const phase = isRecord(status) ? get(status, 'phase') : undefined;
    if (typeof phase === 'string' && TERMINAL_PHASES.includes(phase)) {
      return { ref, value: undefined, errors: [], ignored: `pod phase ${phase}: its address is released` };
    }
  }
  const meta = readMetadata(r, get(obj, 'metadata'), kind);
  let value: ValueOf[Kind] | undefined;
  switch (kind) {
    case 'Namespace':
      value = readNamespace(r, obj, meta);
      break;
    case 'Pod':
      value = readPod(r, obj, meta);
      break;
    case 'Node':
      value = readNode(r, obj, meta);
      break;
    case 'NetworkPolicy':
      // Fail-closed: an invalid policy is kept (valid: false), as in the folder source; one whose
      // namespace is invalid selects no pods and is dropped.
      value = meta.namespace === undefined ? undefined : readNetworkPolicy(r, obj, meta);
      break;
  }
  return { ref, value: value as ValueOf[K] | undefined, errors: r.errors, ignored: undefined };
}

/**
 * Structural equality of converted values (plain data: objects with or without prototype,
 * arrays, strings, numbers, booleans, undefined). Lets an update that changes nothing the engine
 * reads (a pod's conditions, a node's heartbeat, an annotation) keep the previous object, so
 * that no update is emitted and the compiler's identity checks still hold.
 */
export function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!sameValue(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(b, k)) return false;
    if (!sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false;
  }
  return true;
}
