// The converted objects of the Kubernetes source, one map per kind keyed by namespace/name, and
// the assembly of a ClusterState from them. Pure data structures: no I/O, no timers.
//
// Object identity is kept on purpose: an object whose resourceVersion did not change is not
// converted again, and a new version that converts to an equal value keeps the previous object.
// The compiler recompiles only the pod tables when the namespaces, policies and nodes arrays hold
// the same objects as last time (src/policy/compile.ts), and memoises per PodInfo object.
import type { ManifestError } from '../../errors.js';
import type { ClusterState, NamespaceInfo, NodeInfo, PodInfo, PolicySpec } from '../../model/types.js';
import { API_SOURCE, type Converted, describeRef, type Kind, type ObjectRef, sameValue, type ValueOf } from './convert.js';

export interface StoreEntry<K extends Kind> {
  readonly ref: ObjectRef;
  readonly value: ValueOf[K] | undefined;
  readonly errors: readonly ManifestError[];
  readonly ignored: string | undefined;
}

/** One kind's converted objects. Map order is insertion order, and an update keeps its place. */
export class KindStore<K extends Kind> {
  readonly entries = new Map<string, StoreEntry<K>>();
  /** Pods: address -> how many non-hostNetwork pods claim it (kept up to date on every change). */
  readonly claims = new Map<string, number>();
  /** Pods: how many addresses have more than one claimant. */
  shared = 0;

  constructor(readonly kind: K) {}

  private track(v: ValueOf[K] | undefined, delta: 1 | -1): void {
    if (this.kind !== 'Pod' || v === undefined) return;
    const pod = v as PodInfo;
    if (pod.hostNetwork) return;
    for (const ip of pod.ips) {
      const n = (this.claims.get(ip) ?? 0) + delta;
      if (delta > 0 && n === 2) this.shared++;
      if (delta < 0 && n === 1) this.shared--;
      if (n === 0) this.claims.delete(ip);
      else this.claims.set(ip, n);
    }
  }

  /** The entry for `key` if its resourceVersion is `rv` (nothing to convert again). */
  current(key: string, rv: string): StoreEntry<K> | undefined {
    const e = this.entries.get(key);
    return e !== undefined && rv !== '' && e.ref.resourceVersion === rv ? e : undefined;
  }

  /**
   * Stores a converted object. Returns true when the state changed (the value was added,
   * removed or replaced by a different one); an equal value keeps the previous object.
   */
  put(c: Converted<K>): boolean {
    const prev = this.entries.get(c.ref.key);
    const keep = prev !== undefined && prev.value !== undefined && c.value !== undefined && sameValue(prev.value, c.value);
    const value = keep ? prev.value : c.value;
    this.entries.set(c.ref.key, { ref: c.ref, value, errors: c.errors, ignored: c.ignored });
    if (prev?.value === value) return false;
    this.track(prev?.value, -1);
    this.track(value, 1);
    return true;
  }

  /** Returns true when the state changed. */
  delete(key: string): boolean {
    const prev = this.entries.get(key);
    if (prev === undefined) return false;
    this.entries.delete(key);
    this.track(prev.value, -1);
    return prev.value !== undefined;
  }

  /** After a (re)list: drops every object the list did not contain. Returns true when the state changed. */
  retainOnly(keys: ReadonlySet<string>): boolean {
    let changed = false;
    for (const key of [...this.entries.keys()]) if (!keys.has(key) && this.delete(key)) changed = true;
    return changed;
  }

}

export interface Stores {
  readonly Namespace: KindStore<'Namespace'>;
  readonly Pod: KindStore<'Pod'>;
  readonly Node: KindStore<'Node'>;
  readonly NetworkPolicy: KindStore<'NetworkPolicy'>;
}

export function makeStores(): Stores {
  return {
    Namespace: new KindStore('Namespace'),
    Pod: new KindStore('Pod'),
    Node: new KindStore('Node'),
    NetworkPolicy: new KindStore('NetworkPolicy'),
  };
}

/** A problem found across objects: keyed per object so it is reported once while it lasts. */
export interface CrossProblem {
  readonly ref: ObjectRef;
  readonly error: ManifestError;
}

export interface Assembled {
  readonly state: ClusterState;
  /** Objects left out because of other objects (unknown namespace, address conflicts). */
  readonly problems: readonly CrossProblem[];
}

/** Remembers node objects whose addresses were trimmed, so a lasting conflict keeps one object. */
export type TrimMemo = WeakMap<NodeInfo, { readonly key: string; readonly node: NodeInfo }>;

/**
 * The state the engine sees:
 * - namespaces: every valid Namespace (the API server has the built-in ones; none is implied);
 * - pods and policies in a namespace that is not (yet) known are left out: a pod event can
 *   arrive before its namespace's on the other watch; a policy there would select no pods;
 * - node addresses claimed by two nodes stay with the first (as in the folder source);
 * - a pod address claimed by two non-hostNetwork pods, or by a pod and a node, belongs to none
 *   of those pods: all claimants are left out. Unlike the folder source (first one wins), this
 *   never lets a stale pod's labels stand for the new owner of a reused address; an address
 *   that belongs to no known pod is decided as an external address, which never allows more
 *   than the pod's own labels would (see README, "New pods").
 */
export function assemble(s: Stores, memo: TrimMemo): Assembled {
  const problems: CrossProblem[] = [];
  const problem = (ref: ObjectRef, code: ManifestError['code'], path: string | undefined, message: string): void => {
    problems.push({ ref, error: { code, file: API_SOURCE, object: describeRef(ref), path, message } });
  };
  const unknownNs = (ref: ObjectRef, ns: string): void =>
    problem(ref, 'NETPOLD_E_UNKNOWN_NAMESPACE', 'metadata.namespace', `namespace ${JSON.stringify(ns)} is not known (no valid Namespace object); the ${ref.kind} is left out until it is`);

  const namespaces: NamespaceInfo[] = [];
  const known = new Set<string>();
  for (const e of s.Namespace.entries.values()) {
    if (e.value === undefined) continue;
    namespaces.push(e.value);
    known.add(e.value.name);
  }

  const nodes: NodeInfo[] = [];
  const nodeOf = new Map<string, string>();
  for (const e of s.Node.entries.values()) {
    const value = e.value;
    if (value === undefined) continue;
    let node = value;
    const dropped = value.addresses.filter((ip) => nodeOf.has(ip) && nodeOf.get(ip) !== value.name);
    if (dropped.length > 0) {
      for (const ip of dropped) {
        problem(e.ref, 'NETPOLD_E_IP_CONFLICT', 'status.addresses', `address ${ip} is also an address of Node ${nodeOf.get(ip)}; it is kept there and ignored here`);
      }
      const addresses = value.addresses.filter((ip) => !dropped.includes(ip));
      const key = addresses.join(',');
      const m = memo.get(value);
      node = m !== undefined && m.key === key ? m.node : { ...value, addresses };
      memo.set(value, { key, node });
    }
    for (const ip of node.addresses) nodeOf.set(ip, node.name);
    nodes.push(node);
  }

  // Contested pod addresses, from the claim counts the store keeps: usually none, so the pods
  // loop below does no per-address work.
  const contested = new Map<string, string>();
  for (const [ip, node] of nodeOf) if (s.Pod.claims.has(ip)) contested.set(ip, `IP ${ip} is an address of Node ${node}; this pod is left out (only hostNetwork pods may share an address)`);
  if (s.Pod.shared > 0) {
    for (const [ip, n] of s.Pod.claims) {
      if (n > 1 && !contested.has(ip)) contested.set(ip, `IP ${ip} is also claimed by another pod (an address being reused); every claimant is left out until only one remains`);
    }
  }
  const pods: PodInfo[] = [];
  for (const e of s.Pod.entries.values()) {
    const pod = e.value;
    if (pod === undefined) continue;
    if (!known.has(pod.namespace)) {
      unknownNs(e.ref, pod.namespace);
      continue;
    }
    if (contested.size > 0 && !pod.hostNetwork) {
      const ip = pod.ips.find((a) => contested.has(a));
      if (ip !== undefined) {
        problem(e.ref, 'NETPOLD_E_IP_CONFLICT', 'status.podIP', contested.get(ip)!);
        continue;
      }
    }
    pods.push(pod);
  }

  const policies: PolicySpec[] = [];
  for (const e of s.NetworkPolicy.entries.values()) {
    if (e.value === undefined) continue;
    if (!known.has(e.value.namespace)) {
      unknownNs(e.ref, e.value.namespace);
      continue;
    }
    policies.push(e.value);
  }
  return { state: { namespaces, pods, nodes, policies }, problems };
}
