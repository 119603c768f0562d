// compile(state) -> PolicySnapshot. Pure: no I/O; the only clock read is for the stats.
// All parsing and selector matching happen here, once per change, so that decide() only does
// integer, bitmap and trie work.
//
// A Compiler keeps what it built last time. When only pods changed (the common case: pods come
// and go, get addresses, change labels), it reuses the policies' compiled rules, the selector
// sets and the rule groups, and only (a) rebuilds the per-pod tables and (b) evaluates the
// selectors against label sets it has never seen, adding them as new identities. Namespace,
// policy or node changes recompile everything.
import type { ClusterState, LabelSelector, NamespaceInfo, NodeInfo, PodInfo, PolicyPeer, PolicyPort, PolicyRule, PolicySpec } from '../model/types.js';
import { parseAddrInto, parseCidr, protocolNumber, type Family } from './addr.js';
import { AddrTable } from './addr-table.js';
import { CidrTrie } from './cidr-trie.js';
import { IdSet } from './idset.js';
import { isEmptySelector, labelsKey, positivePostingKeys, selectorKey, selectorMatches } from './selector.js';
import type { CompiledPeer, CompiledPolicy, CompiledPort, CompiledRule, Identity, PolicySnapshot, RuleGroup, SnapshotStats } from './snapshot.js';

export interface CompileOptions {
  /** Revision number stamped on the snapshot. */
  readonly revision?: number;
  /**
   * The node this snapshot enforces for. Pods without `spec.nodeName` and host-network pods
   * without one are taken to run on it (node-local traffic rules).
   */
  readonly localNode?: string;
}

/** Compiles once, with no memory of earlier compiles. */
export function compile(state: ClusterState, options: CompileOptions = {}): PolicySnapshot {
  return new Compiler().compile(state, options);
}

type Labels = Readonly<Record<string, string>>;

interface NsEntry {
  readonly name: string;
  readonly labels: Labels;
  /** Identity ids in this namespace, ascending. */
  readonly identities: number[];
}

/** What a selector peer selects: the definition of one slot of `PolicySnapshot.sets`. */
interface PeerDef {
  /** Namespace index of the policy (used when there is no namespaceSelector). */
  readonly policyNs: number;
  readonly podSel: LabelSelector | undefined; // undefined = any pod
  readonly nsSel: LabelSelector | undefined; // undefined = the policy's namespace
}

/** How a policy selects the pods it applies to. */
interface PolicySelect {
  readonly nsIdx: number; // -1: namespace unknown, selects nothing
  readonly podSel: LabelSelector | undefined; // undefined: invalid podSelector, selects nothing
  readonly ingress: boolean;
  readonly egress: boolean;
}

/**
 * Per-pod memo: parsed addresses (address i in words[4i..4i+3], family fams[i]; one typed
 * array per pod), and the identity as of base generation `gen`.
 */
interface PodMemo {
  readonly words: Uint32Array;
  readonly fams: readonly Family[];
  gen: number;
  identity: number;
}

/** Everything but the per-pod tables; reused by pod-only recompiles (copied before changes). */
interface Base {
  /** Identity ids are stable within one generation; a full build starts a new one. */
  readonly gen: number;
  readonly namespacesIn: readonly NamespaceInfo[];
  readonly policiesIn: readonly PolicySpec[];
  readonly nodesIn: readonly NodeInfo[];
  readonly localNode: string | undefined;

  readonly nsIndex: ReadonlyMap<string, number>;
  readonly namespaces: readonly NsEntry[];
  /** Per namespace index: label-set key -> identity (copied on write by pod-only recompiles). */
  readonly identityByNs: (Map<string, number> | undefined)[];
  readonly identities: Identity[];
  readonly identityNs: number[];
  readonly peerDefs: readonly PeerDef[];
  readonly sets: IdSet[];
  readonly policies: readonly CompiledPolicy[];
  readonly policySelect: readonly PolicySelect[];
  readonly ingressRules: readonly (readonly CompiledRule[])[];
  readonly egressRules: readonly (readonly CompiledRule[])[];
  readonly groupKeys: Map<string, number>;
  readonly groups: RuleGroup[];
  readonly ingressGroupOf: number[];
  readonly egressGroupOf: number[];
  readonly trie4: CidrTrie;
  readonly trie6: CidrTrie;
  readonly blocks: readonly { cidr: string; except: readonly string[] }[];
  readonly portNameIds: Map<string, number>;
  readonly portNames: string[];
  readonly invalidPolicies: number;
  readonly selectorBytes: number;
}

export class Compiler {
  private base: Base | undefined;
  private forceFull = false;
  private readonly scratch = new Uint32Array(4);
  private readonly labelKeys = new WeakMap<object, string>();
  private readonly podMemo = new WeakMap<PodInfo, PodMemo>();
  private gen = 0;

  /** Compiles `state`, reusing the previous compile's work where only pods changed. */
  compile(state: ClusterState, options: CompileOptions = {}): PolicySnapshot {
    const t0 = performance.now();
    const prev = this.base;
    const podsOnly =
      prev !== undefined &&
      !this.forceFull &&
      prev.localNode === options.localNode &&
      sameItems(prev.namespacesIn, state.namespaces) &&
      sameItems(prev.policiesIn, state.policies) &&
      sameItems(prev.nodesIn, state.nodes) &&
      state.pods.every((p) => p.hostNetwork || prev.nsIndex.has(p.namespace));
    const base = podsOnly ? copyBase(prev) : this.buildBase(state, options.localNode);
    const tables = this.buildPodTables(base, state, options.localNode);
    this.base = base;
    // Identities of label sets no pod has any more are kept by pod-only recompiles; once they
    // are a quarter of all, the next compile starts afresh to drop them.
    this.forceFull = tables.staleIdentities > Math.max(64, base.identities.length / 4);

    const compileMs = performance.now() - t0;
    const stats: SnapshotStats = {
      pods: state.pods.length,
      namespaces: base.namespaces.length,
      nodes: tables.nodeNames.length,
      identities: base.identities.length,
      policies: base.policies.length,
      invalidPolicies: base.invalidPolicies,
      selectors: base.sets.length,
      selectorBytes: base.selectorBytes,
      ruleGroups: base.groups.length,
      ipBlocks: base.blocks.length,
      trieNodes: base.trie4.nodes + base.trie6.nodes,
      trieBytes: base.trie4.bytes + base.trie6.bytes,
      compileMs,
      incremental: podsOnly,
    };
    return {
      revision: options.revision ?? 1,
      localNode: options.localNode,
      pods: state.pods,
      podIdentity: tables.podIdentity,
      podNode: tables.podNode,
      podPortOff: tables.podPortOff,
      podPortData: tables.podPortData,
      nodeNames: tables.nodeNames,
      addrs: tables.addrs,
      identities: base.identities.slice(),
      ingressGroupOf: Int32Array.from(base.ingressGroupOf),
      egressGroupOf: Int32Array.from(base.egressGroupOf),
      groups: base.groups.slice(),
      policies: base.policies,
      sets: base.sets.slice(),
      trie4: base.trie4,
      trie6: base.trie6,
      blocks: base.blocks,
      portNames: base.portNames.slice(),
      srcMarks: new Int32Array(base.blocks.length),
      dstMarks: new Int32Array(base.blocks.length),
      stamp: 0,
      stats,
    };
  }

  private memoOf(p: PodInfo): PodMemo {
    let m = this.podMemo.get(p);
    if (m === undefined) {
      const words = new Uint32Array(4 * p.ips.length);
      const fams: Family[] = [];
      for (const ip of p.ips) {
        const fam = parseAddrInto(ip, this.scratch);
        if (fam === 0) continue; // validated upstream; an unparsable address is no endpoint
        words.set(this.scratch, 4 * fams.length);
        fams.push(fam);
      }
      m = { words, fams, gen: -1, identity: -1 };
      this.podMemo.set(p, m);
    }
    return m;
  }

  private static insertPod(addrs: AddrTable, m: PodMemo, value: number): void {
    for (let k = 0; k < m.fams.length; k++) addrs.insert(m.fams[k]!, m.words, value, 4 * k);
  }

  private labelsKey(labels: Labels): string {
    let k = this.labelKeys.get(labels);
    if (k === undefined) {
      k = labelsKey(labels);
      this.labelKeys.set(labels, k);
    }
    return k;
  }

  // --- Full build -----------------------------------------------------------------------------

  private buildBase(state: ClusterState, localNode: string | undefined): Base {
    const nsIndex = new Map<string, number>();
    const namespaces: NsEntry[] = [];
    const gen = ++this.gen;
    const addNs = (name: string, labels: Labels): number => {
      let i = nsIndex.get(name);
      if (i === undefined) {
        i = namespaces.length;
        nsIndex.set(name, i);
        namespaces.push({ name, labels, identities: [] });
      }
      return i;
    };
    for (const ns of state.namespaces) addNs(ns.name, ns.labels);

    // Identities, namespace by namespace, so each namespace's ids form one contiguous range:
    // namespace-scoped selectors then become small dense bitmaps.
    const podsByNs: PodInfo[][] = [];
    for (const p of state.pods) {
      if (p.hostNetwork) continue; // "host-network pods are never selected"
      (podsByNs[addNs(p.namespace, {})] ??= []).push(p);
    }
    const identityByNs: Map<string, number>[] = [];
    const identities: Identity[] = [];
    const identityNs: number[] = [];
    const postings = new Map<string, number[]>();
    for (let n = 0; n < namespaces.length; n++) {
      const byLabels = (identityByNs[n] = new Map<string, number>());
      for (const pod of podsByNs[n] ?? []) {
        const key = this.labelsKey(pod.labels);
        const memo = this.memoOf(pod);
        memo.gen = gen;
        const known = byLabels.get(key);
        if (known !== undefined) {
          memo.identity = known;
          continue;
        }
        const id = identities.length;
        memo.identity = id;
        byLabels.set(key, id);
        identities.push({ id, namespace: namespaces[n]!.name, labels: pod.labels });
        identityNs.push(n);
        namespaces[n]!.identities.push(id);
        for (const k in pod.labels) {
          pushPosting(postings, `${k}=${pod.labels[k]}`, id);
          pushPosting(postings, k, id);
        }
      }
    }
    const resolver = new SelectorResolver(identities, identityNs, namespaces, postings);

    // ipBlocks, deduplicated, into one trie per family.
    const trie4 = new CidrTrie(4);
    const trie6 = new CidrTrie(6);
    const blockIds = new Map<string, number>();
    const blocks: { cidr: string; except: readonly string[] }[] = [];
    const blockId = (cidr: string, except: readonly string[]): number => {
      const key = `${cidr}|${[...except].sort().join(',')}`;
      let id = blockIds.get(key);
      if (id !== undefined) return id;
      id = blocks.length;
      blockIds.set(key, id);
      blocks.push({ cidr, except });
      const c = parseCidr(cidr);
      if (!c) return id; // validated upstream; an unparsable block simply matches nothing
      const trie = c.family === 4 ? trie4 : trie6;
      trie.add(c.words, c.prefix, id, false);
      for (const e of except) {
        const x = parseCidr(e);
        if (x && x.family === c.family) trie.add(x.words, x.prefix, id, true);
      }
      return id;
    };

    const portNameIds = new Map<string, number>();
    const portNames: string[] = [];
    const compilePort = (p: PolicyPort): CompiledPort => {
      const proto = protocolNumber(p.protocol);
      if (p.port === undefined) return { proto, lo: 0, hi: 65535, nameId: -1 };
      if (typeof p.port === 'string') return { proto, lo: 0, hi: -1, nameId: internName(portNameIds, portNames, p.port) };
      return { proto, lo: p.port, hi: p.endPort ?? p.port, nameId: -1 };
    };
    const compilePeer = (nsI: number, peer: PolicyPeer): CompiledPeer =>
      peer.ipBlock
        ? { blockId: blockId(peer.ipBlock.cidr, peer.ipBlock.except), slot: -1 }
        : { blockId: -1, slot: resolver.peerSlot(nsI, peer.podSelector, peer.namespaceSelector) };
    const compileRules = (pol: CompiledPolicy, direction: 'ingress' | 'egress', rules: readonly PolicyRule[], nsI: number): CompiledRule[] =>
      rules.map((r, index) => {
        const peers = r.peers.length === 0 ? null : r.peers.map((p) => compilePeer(nsI, p));
        return {
          policy: pol,
          direction,
          index,
          ports: r.ports.length === 0 ? null : r.ports.map(compilePort),
          peers,
          hasIpBlocks: peers !== null && peers.some((p) => p.blockId >= 0),
        };
      });

    const policies: CompiledPolicy[] = state.policies.map((spec, index) => ({ index, key: `${spec.namespace}/${spec.name}`, spec }));
    const policySelect: PolicySelect[] = [];
    const ingressRules: CompiledRule[][] = [];
    const egressRules: CompiledRule[][] = [];
    const selIngress: number[][] = [];
    const selEgress: number[][] = [];
    let invalidPolicies = 0;
    for (const pol of policies) {
      const spec = pol.spec;
      if (!spec.valid) invalidPolicies++;
      const nsI = nsIndex.get(spec.namespace) ?? -1;
      const sel: PolicySelect = {
        nsIdx: nsI,
        podSel: spec.podSelector,
        ingress: spec.policyTypes.includes('Ingress'),
        egress: spec.policyTypes.includes('Egress'),
      };
      policySelect.push(sel);
      // Rules of an invalid policy never open anything; rules of a direction the policy does
      // not declare in policyTypes have no effect.
      ingressRules.push(spec.valid && sel.ingress ? compileRules(pol, 'ingress', spec.ingress, nsI) : []);
      egressRules.push(spec.valid && sel.egress ? compileRules(pol, 'egress', spec.egress, nsI) : []);
      if (sel.podSel === undefined || nsI < 0) continue;
      // "Selects the pods to which this NetworkPolicy object applies ... in the policy's
      // namespace"; an empty podSelector selects all pods in the namespace.
      for (const id of resolver.podsMatching([nsI], `in(${nsI})`, isEmptySelector(sel.podSel) ? undefined : sel.podSel)) {
        if (sel.ingress) (selIngress[id] ??= []).push(pol.index);
        if (sel.egress) (selEgress[id] ??= []).push(pol.index);
      }
    }
    trie4.seal();
    trie6.seal();

    const base: Base = {
      gen,
      namespacesIn: state.namespaces,
      policiesIn: state.policies,
      nodesIn: state.nodes,
      localNode,
      nsIndex,
      namespaces,
      identityByNs,
      identities,
      identityNs,
      peerDefs: resolver.defs,
      sets: resolver.sets,
      policies,
      policySelect,
      ingressRules,
      egressRules,
      groupKeys: new Map(),
      groups: [],
      ingressGroupOf: [],
      egressGroupOf: [],
      trie4,
      trie6,
      blocks,
      portNameIds,
      portNames,
      invalidPolicies,
      selectorBytes: resolver.sets.reduce((a, s) => a + s.bytes, 0),
    };
    for (let id = 0; id < identities.length; id++) {
      base.ingressGroupOf.push(groupFor(base, 'ingress', selIngress[id]));
      base.egressGroupOf.push(groupFor(base, 'egress', selEgress[id]));
    }
    return base;
  }

  // --- Per-pod tables (every compile) ---------------------------------------------------------

  private buildPodTables(base: Base, state: ClusterState, localNode: string | undefined) {
    const pods = state.pods;
    const nodeIndex = new Map<string, number>();
    const nodeNames: string[] = [];
    const nodeIdx = (name: string): number => {
      let i = nodeIndex.get(name);
      if (i === undefined) {
        i = nodeNames.length;
        nodeIndex.set(name, i);
        nodeNames.push(name);
      }
      return i;
    };
    let addrCount = 0;
    for (const n of state.nodes) addrCount += n.addresses.length;
    for (const p of pods) addrCount += p.ips.length;
    const addrs = new AddrTable(addrCount + 1);

    const podIdentity = new Int32Array(pods.length).fill(-1);
    const podNode = new Int32Array(pods.length).fill(-1);
    const podPortOff = new Int32Array(pods.length + 1);
    const portData: number[] = [];
    const used = new Uint8Array(base.identities.length + pods.length);
    for (let i = 0; i < pods.length; i++) {
      const p = pods[i]!;
      const nodeName = p.node ?? localNode;
      if (nodeName !== undefined) podNode[i] = nodeIdx(nodeName);
      podPortOff[i] = portData.length;
      for (const np of p.namedPorts) portData.push(internName(base.portNameIds, base.portNames, np.name), protocolNumber(np.protocol), np.port);
      if (p.hostNetwork) continue;
      const memo = this.memoOf(p);
      if (memo.gen !== base.gen) {
        memo.identity = this.identityOf(base, p);
        memo.gen = base.gen;
      }
      podIdentity[i] = memo.identity;
      used[memo.identity] = 1;
      // Pod endpoints first: a pod address wins over a node address claiming the same IP
      // (the loader reports such conflicts; compile just needs a deterministic answer).
      Compiler.insertPod(addrs, memo, i * 2);
    }
    podPortOff[pods.length] = portData.length;
    for (const n of state.nodes) {
      const ni = nodeIdx(n.name);
      for (const ip of n.addresses) {
        const fam = parseAddrInto(ip, this.scratch);
        if (fam !== 0) addrs.insert(fam, this.scratch, ni * 2 + 1);
      }
    }
    // "Host-network pods ... are matched as their node's address."
    for (let i = 0; i < pods.length; i++) {
      const p = pods[i]!;
      if (p.hostNetwork && podNode[i]! >= 0) Compiler.insertPod(addrs, this.memoOf(p), podNode[i]! * 2 + 1);
    }
    let staleIdentities = 0;
    for (let id = 0; id < base.identities.length; id++) if (used[id] === 0) staleIdentities++;
    return { podIdentity, podNode, podPortOff, podPortData: Int32Array.from(portData), nodeNames, addrs, staleIdentities };
  }

  /** The pod's identity; a label set seen for the first time becomes a new identity. */
  private identityOf(base: Base, pod: PodInfo): number {
    const nsI = base.nsIndex.get(pod.namespace)!;
    const key = this.labelsKey(pod.labels);
    const byLabels = base.identityByNs[nsI];
    const known = byLabels?.get(key);
    if (known !== undefined) return known;

    const id = base.identities.length;
    base.identityByNs[nsI] = new Map(byLabels).set(key, id);
    base.identities.push({ id, namespace: pod.namespace, labels: pod.labels });
    base.identityNs.push(nsI);
    // Every selector is asked once about the new label set...
    const nsLabels = base.namespaces[nsI]!.labels;
    for (let s = 0; s < base.peerDefs.length; s++) {
      if (peerMatches(base.peerDefs[s]!, nsI, nsLabels, pod.labels)) base.sets[s] = base.sets[s]!.with(id);
    }
    // ...and so is every policy of its namespace.
    const ing: number[] = [];
    const eg: number[] = [];
    for (let pi = 0; pi < base.policySelect.length; pi++) {
      const ps = base.policySelect[pi]!;
      if (ps.nsIdx !== nsI || ps.podSel === undefined || !selectorMatches(ps.podSel, pod.labels)) continue;
      if (ps.ingress) ing.push(pi);
      if (ps.egress) eg.push(pi);
    }
    base.ingressGroupOf.push(groupFor(base, 'ingress', ing));
    base.egressGroupOf.push(groupFor(base, 'egress', eg));
    return id;
  }
}

/** A shallow copy of the parts a pod-only recompile may append to or replace. */
function copyBase(b: Base): Base {
  return {
    ...b,
    identityByNs: b.identityByNs.slice(),
    identities: b.identities.slice(),
    identityNs: b.identityNs.slice(),
    sets: b.sets.slice(),
    groupKeys: new Map(b.groupKeys),
    groups: b.groups.slice(),
    ingressGroupOf: b.ingressGroupOf.slice(),
    egressGroupOf: b.egressGroupOf.slice(),
    portNameIds: new Map(b.portNameIds),
    portNames: b.portNames.slice(),
  };
}

/** Rule groups: identities selected by the same policies share one rule list. */
function groupFor(base: Base, direction: 'ingress' | 'egress', pols: readonly number[] | undefined): number {
  if (!pols || pols.length === 0) return -1; // not isolated in this direction
  const key = `${direction}:${pols.join(',')}`;
  let g = base.groupKeys.get(key);
  if (g !== undefined) return g;
  g = base.groups.length;
  base.groupKeys.set(key, g);
  const rules = pols.flatMap((pi) => (direction === 'ingress' ? base.ingressRules[pi]! : base.egressRules[pi]!));
  base.groups.push({
    index: g,
    direction,
    policies: pols.map((pi) => base.policies[pi]!),
    rules,
    hasIpBlocks: rules.some((r) => r.hasIpBlocks),
  });
  return g;
}

/**
 * Whether a selector peer selects a pod with these labels in namespace `nsI`:
 * "podSelector ... selects particular Pods in the same namespace as the NetworkPolicy";
 * "namespaceSelector ... selects particular namespaces for which all Pods should be allowed";
 * with both, "selects particular Pods within particular namespaces".
 */
function peerMatches(def: PeerDef, nsI: number, nsLabels: Labels, podLabels: Labels): boolean {
  if (def.nsSel ? !selectorMatches(def.nsSel, nsLabels) : def.policyNs !== nsI) return false;
  return def.podSel === undefined || selectorMatches(def.podSel, podLabels);
}

/** Resolves selector peers to identity sets, memoised by canonical key (a selector cache). */
class SelectorResolver {
  readonly defs: PeerDef[] = [];
  readonly sets: IdSet[] = [];
  private readonly slotByKey = new Map<string, number>();
  private readonly nsCache = new Map<string, number[]>();
  private readonly podsCache = new Map<string, number[]>();

  constructor(
    private readonly identities: readonly Identity[],
    private readonly identityNs: readonly number[],
    private readonly namespaces: readonly NsEntry[],
    private readonly postings: ReadonlyMap<string, number[]>,
  ) {}

  /** Namespace indexes whose labels match `sel`. */
  private namespacesMatching(sel: LabelSelector): number[] {
    const key = selectorKey(sel);
    let out = this.nsCache.get(key);
    if (!out) {
      out = [];
      for (let i = 0; i < this.namespaces.length; i++) if (selectorMatches(sel, this.namespaces[i]!.labels)) out.push(i);
      this.nsCache.set(key, out);
    }
    return out;
  }

  /**
   * Identities in the given namespaces whose pod labels match `sel` (ascending). Candidates
   * come from the smallest label posting the selector requires, or from the namespaces'
   * identity lists, whichever is smaller: compile never tests every identity against every
   * selector.
   */
  podsMatching(nsIdxs: readonly number[], nsSetKey: string, sel: LabelSelector | undefined): number[] {
    const cacheKey = `${nsSetKey}|${sel ? selectorKey(sel) : '*'}`;
    const cached = this.podsCache.get(cacheKey);
    if (cached) return cached;

    let nsTotal = 0;
    for (const n of nsIdxs) nsTotal += this.namespaces[n]!.identities.length;
    let best: number[][] | undefined;
    let bestSize = nsTotal;
    if (sel) {
      for (const alternatives of positivePostingKeys(sel)) {
        const lists = alternatives.map((k) => this.postings.get(k) ?? []);
        const size = lists.reduce((a, l) => a + l.length, 0);
        if (size < bestSize) {
          best = lists;
          bestSize = size;
        }
      }
    }
    const out: number[] = [];
    if (best) {
      const nsWanted = new Set(nsIdxs);
      for (const list of best) {
        for (const id of list) {
          if (nsWanted.has(this.identityNs[id]!) && selectorMatches(sel!, this.identities[id]!.labels)) out.push(id);
        }
      }
      if (best.length > 1) {
        out.sort((a, b) => a - b);
        dedupeSorted(out);
      }
    } else {
      for (const n of nsIdxs) {
        for (const id of this.namespaces[n]!.identities) if (!sel || selectorMatches(sel, this.identities[id]!.labels)) out.push(id);
      }
      // Namespaces' identity ranges are contiguous and ascending in namespace order.
      if (!isAscending(nsIdxs)) out.sort((a, b) => a - b);
    }
    this.podsCache.set(cacheKey, out);
    return out;
  }

  /** The slot (index into the snapshot's `sets`) of a selector peer of a policy in `policyNs`. */
  peerSlot(policyNs: number, podSel: LabelSelector | undefined, nsSel: LabelSelector | undefined): number {
    const podAll = podSel === undefined || isEmptySelector(podSel);
    const nsKey = nsSel ? `ns(${selectorKey(nsSel)})` : `in(${policyNs})`;
    const key = `${nsKey}|${podAll ? '*' : selectorKey(podSel)}`;
    let slot = this.slotByKey.get(key);
    if (slot !== undefined) return slot;
    let set: IdSet;
    if (nsSel && isEmptySelector(nsSel) && podAll) {
      set = IdSet.ALL; // every pod of every namespace, now and later
    } else {
      const nsIdxs = nsSel ? this.namespacesMatching(nsSel) : policyNs >= 0 ? [policyNs] : [];
      set = IdSet.fromSorted(this.podsMatching(nsIdxs, nsKey, podAll ? undefined : podSel));
    }
    slot = this.sets.length;
    this.slotByKey.set(key, slot);
    this.sets.push(set);
    this.defs.push({ policyNs, podSel: podAll ? undefined : podSel, nsSel });
    return slot;
  }
}

function internName(ids: Map<string, number>, names: string[], name: string): number {
  let id = ids.get(name);
  if (id === undefined) {
    id = names.length;
    ids.set(name, id);
    names.push(name);
  }
  return id;
}

function sameItems<T>(a: readonly T[], b: readonly T[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function isAscending(a: readonly number[]): boolean {
  for (let i = 1; i < a.length; i++) if (a[i]! < a[i - 1]!) return false;
  return true;
}

function dedupeSorted(a: number[]): void {
  let w = 0;
  for (let r = 0; r < a.length; r++) if (r === 0 || a[r] !== a[r - 1]) a[w++] = a[r]!;
  a.length = w;
}

function pushPosting(postings: Map<string, number[]>, key: string, id: number): void {
  const list = postings.get(key);
  if (list) list.push(id);
  else postings.set(key, [id]);
}
