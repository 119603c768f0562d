// compile(state) -> PolicySnapshot. Pure: no I/O, no clock except for the stats' duration.
// All parsing and selector matching happen here, once per change, so that decide() only does
// integer, bitmap and trie work.
import type { ClusterState, LabelSelector, PolicyPeer, PolicyPort, PolicyRule } from '../model/types.js';
import { parseAddrInto, parseCidr, protocolNumber } from './addr.js';
import { AddrTable } from './addr-table.js';
import { CidrTrie } from './cidr-trie.js';
import { IdSet } from './idset.js';
import { isEmptySelector, labelsKey, positivePostingKeys, selectorKey, selectorMatches } from './selector.js';
import type {
  CompiledPeer,
  CompiledPolicy,
  CompiledPort,
  CompiledRule,
  Identity,
  PolicySnapshot,
  RuleGroup,
} from './snapshot.js';

export interface CompileOptions {
  /** Revision number stamped on the snapshot. */
  readonly revision?: number;
  /**
   * The node this snapshot enforces for. Pods without `spec.nodeName` and host-network pods
   * without one are taken to run on it (node-local traffic rules).
   */
  readonly localNode?: string;
}

interface NsEntry {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  /** Identity ids in this namespace, ascending. */
  readonly identities: number[];
}

/** Resolves selectors to identity sets, memoised by canonical key (Cilium's "selector cache"). */
class SelectorResolver {
  private readonly peerCache = new Map<string, IdSet>();
  private readonly nsCache = new Map<string, number[]>();
  private readonly podsCache = new Map<string, number[]>();
  selectorBytes = 0;

  constructor(
    private readonly identities: readonly Identity[],
    private readonly identityNs: Int32Array,
    private readonly namespaces: readonly NsEntry[],
    private readonly postings: ReadonlyMap<string, number[]>,
  ) {}

  get distinctSelectors(): number {
    return this.peerCache.size;
  }

  /** Namespace indexes whose labels match `sel`. */
  namespacesMatching(sel: LabelSelector): number[] {
    const key = selectorKey(sel);
    let out = this.nsCache.get(key);
    if (!out) {
      out = [];
      for (let i = 0; i < this.namespaces.length; i++) {
        if (selectorMatches(sel, this.namespaces[i]!.labels)) out.push(i);
      }
      this.nsCache.set(key, out);
    }
    return out;
  }

  /**
   * Identities in the given namespaces whose pod labels match `sel` (ascending).
   * Candidates come from the smallest label posting the selector requires, else from the
   * namespaces' identity lists, whichever is smaller.
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
        for (const id of this.namespaces[n]!.identities) {
          if (!sel || selectorMatches(sel, this.identities[id]!.labels)) out.push(id);
        }
      }
      // Namespaces' identity ranges are contiguous and ascending in namespace order.
      if (!isAscending(nsIdxs)) out.sort((a, b) => a - b);
    }
    this.podsCache.set(cacheKey, out);
    return out;
  }

  /**
   * The identities a selector peer matches, for a policy in namespace `policyNs`:
   * "podSelector ... selects particular Pods in the same namespace as the NetworkPolicy";
   * "namespaceSelector ... selects particular namespaces for which all Pods should be allowed";
   * both: "selects particular Pods within particular namespaces".
   */
  peerSet(policyNs: number, podSel: LabelSelector | undefined, nsSel: LabelSelector | undefined): IdSet {
    const key = `${nsSel ? `ns(${selectorKey(nsSel)})` : `in(${policyNs})`}|${podSel ? selectorKey(podSel) : '*'}`;
    let set = this.peerCache.get(key);
    if (set) return set;
    const podAll = podSel === undefined || isEmptySelector(podSel);
    if (nsSel && isEmptySelector(nsSel) && podAll) {
      set = IdSet.ALL;
    } else {
      const nsIdxs = nsSel ? this.namespacesMatching(nsSel) : policyNs >= 0 ? [policyNs] : [];
      const nsSetKey = nsSel ? `ns(${selectorKey(nsSel)})` : `in(${policyNs})`;
      set = IdSet.fromSorted(this.podsMatching(nsIdxs, nsSetKey, podAll ? undefined : podSel));
      this.selectorBytes += set.bytes;
    }
    this.peerCache.set(key, set);
    return set;
  }
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

export function compile(state: ClusterState, options: CompileOptions = {}): PolicySnapshot {
  const t0 = performance.now();
  const localNode = options.localNode;

  // --- Namespaces and identities -------------------------------------------------------------
  const nsIndex = new Map<string, number>();
  const namespaces: NsEntry[] = [];
  const addNs = (name: string, labels: Readonly<Record<string, string>>): number => {
    let i = nsIndex.get(name);
    if (i === undefined) {
      i = namespaces.length;
      nsIndex.set(name, i);
      namespaces.push({ name, labels, identities: [] });
    }
    return i;
  };
  for (const ns of state.namespaces) addNs(ns.name, ns.labels);

  // Group pods by namespace so that each namespace's identities get a contiguous id range:
  // namespace-scoped selectors then become small dense bitmaps.
  const podsByNs = new Map<number, number[]>();
  state.pods.forEach((p, i) => {
    if (p.hostNetwork) return; // "host-network pods are never selected"
    const n = addNs(p.namespace, {});
    let list = podsByNs.get(n);
    if (!list) podsByNs.set(n, (list = []));
    list.push(i);
  });

  const identities: Identity[] = [];
  const identityNsArr: number[] = [];
  const podIdentity = new Int32Array(state.pods.length).fill(-1);
  const postings = new Map<string, number[]>();
  for (let n = 0; n < namespaces.length; n++) {
    const ns = namespaces[n]!;
    const byKey = new Map<string, number>();
    for (const podIdx of podsByNs.get(n) ?? []) {
      const pod = state.pods[podIdx]!;
      const key = labelsKey(pod.labels);
      let id = byKey.get(key);
      if (id === undefined) {
        id = identities.length;
        byKey.set(key, id);
        identities.push({ id, namespace: ns.name, labels: pod.labels });
        identityNsArr.push(n);
        ns.identities.push(id);
        for (const k in pod.labels) {
          pushPosting(postings, `${k}=${pod.labels[k]}`, id);
          pushPosting(postings, k, id);
        }
      }
      podIdentity[podIdx] = id;
    }
  }
  const identityNs = Int32Array.from(identityNsArr);
  const resolver = new SelectorResolver(identities, identityNs, namespaces, postings);

  // --- Nodes and addresses ----------------------------------------------------------------
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
  for (const p of state.pods) addrCount += p.ips.length;
  const addrs = new AddrTable(addrCount + 1);
  const words = new Uint32Array(4);
  const podNode = new Int32Array(state.pods.length).fill(-1);

  // Pod endpoints first: a pod address wins over a node address claiming the same IP
  // (the loader reports such conflicts; compile just needs a deterministic answer).
  state.pods.forEach((p, i) => {
    const nodeName = p.node ?? localNode;
    if (nodeName !== undefined) podNode[i] = nodeIdx(nodeName);
    if (p.hostNetwork) return;
    for (const ip of p.ips) {
      const fam = parseAddrInto(ip, words);
      if (fam !== 0) addrs.insert(fam, words, i * 2);
    }
  });
  for (const n of state.nodes) {
    const ni = nodeIdx(n.name);
    for (const ip of n.addresses) {
      const fam = parseAddrInto(ip, words);
      if (fam !== 0) addrs.insert(fam, words, ni * 2 + 1);
    }
  }
  // "Host-network pods ... are matched as their node's address."
  state.pods.forEach((p, i) => {
    if (!p.hostNetwork || podNode[i]! < 0) return;
    for (const ip of p.ips) {
      const fam = parseAddrInto(ip, words);
      if (fam !== 0) addrs.insert(fam, words, podNode[i]! * 2 + 1);
    }
  });

  // --- Named ports ------------------------------------------------------------------------
  const portNameIds = new Map<string, number>();
  const portNames: string[] = [];
  const portNameId = (name: string): number => {
    let id = portNameIds.get(name);
    if (id === undefined) {
      id = portNames.length;
      portNameIds.set(name, id);
      portNames.push(name);
    }
    return id;
  };
  const podPortOff = new Int32Array(state.pods.length + 1);
  const portData: number[] = [];
  state.pods.forEach((p, i) => {
    podPortOff[i] = portData.length;
    for (const np of p.namedPorts) portData.push(portNameId(np.name), protocolNumber(np.protocol), np.port);
  });
  podPortOff[state.pods.length] = portData.length;

  // --- ipBlocks ---------------------------------------------------------------------------
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

  // --- Policies and rules -----------------------------------------------------------------
  const policies: CompiledPolicy[] = state.policies.map((spec, index) => ({ index, key: `${spec.namespace}/${spec.name}`, spec }));
  const compilePort = (p: PolicyPort): CompiledPort => {
    const proto = protocolNumber(p.protocol);
    if (p.port === undefined) return { proto, lo: 0, hi: 65535, nameId: -1 };
    if (typeof p.port === 'string') return { proto, lo: 0, hi: -1, nameId: portNameId(p.port) };
    return { proto, lo: p.port, hi: p.endPort ?? p.port, nameId: -1 };
  };
  const compilePeer = (nsI: number, peer: PolicyPeer): CompiledPeer => {
    if (peer.ipBlock) return { blockId: blockId(peer.ipBlock.cidr, peer.ipBlock.except), set: IdSet.NONE };
    return { blockId: -1, set: resolver.peerSet(nsI, peer.podSelector, peer.namespaceSelector) };
  };
  const compileRules = (pol: CompiledPolicy, direction: 'ingress' | 'egress', rules: readonly PolicyRule[]): CompiledRule[] => {
    const nsI = nsIndex.get(pol.spec.namespace) ?? -1;
    return rules.map((r, index) => {
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
  };
  const ingressRules: CompiledRule[][] = [];
  const egressRules: CompiledRule[][] = [];
  // Identity -> policies selecting it, per direction.
  const selIngress: number[][] = [];
  const selEgress: number[][] = [];
  let invalidPolicies = 0;
  for (const pol of policies) {
    const spec = pol.spec;
    if (!spec.valid) invalidPolicies++;
    const isIngress = spec.policyTypes.includes('Ingress');
    const isEgress = spec.policyTypes.includes('Egress');
    // Rules of an invalid policy never open anything; rules of a direction the policy does
    // not declare in policyTypes have no effect.
    ingressRules.push(spec.valid && isIngress ? compileRules(pol, 'ingress', spec.ingress) : []);
    egressRules.push(spec.valid && isEgress ? compileRules(pol, 'egress', spec.egress) : []);
    const nsI = nsIndex.get(spec.namespace);
    if (spec.podSelector === undefined || nsI === undefined) continue;
    // "podSelector selects the pods to which this NetworkPolicy object applies ... in the
    // policy's namespace"; an empty podSelector selects all pods in the namespace.
    const selected = resolver.podsMatching([nsI], `in(${nsI})`, isEmptySelector(spec.podSelector) ? undefined : spec.podSelector);
    for (const id of selected) {
      if (isIngress) (selIngress[id] ??= []).push(pol.index);
      if (isEgress) (selEgress[id] ??= []).push(pol.index);
    }
  }

  // --- Rule groups: identities selected by the same policies share one rule list ----------
  const groups: RuleGroup[] = [];
  const groupKeys = new Map<string, number>();
  const groupFor = (direction: 'ingress' | 'egress', pols: number[] | undefined): number => {
    if (!pols || pols.length === 0) return -1; // not isolated in this direction
    const key = `${direction}:${pols.join(',')}`;
    let g = groupKeys.get(key);
    if (g !== undefined) return g;
    g = groups.length;
    groupKeys.set(key, g);
    const rules = pols.flatMap((pi) => (direction === 'ingress' ? ingressRules[pi]! : egressRules[pi]!));
    groups.push({
      index: g,
      direction,
      policies: pols.map((pi) => policies[pi]!),
      rules,
      hasIpBlocks: rules.some((r) => r.hasIpBlocks),
    });
    return g;
  };
  const ingressGroupOf = new Int32Array(identities.length);
  const egressGroupOf = new Int32Array(identities.length);
  for (let id = 0; id < identities.length; id++) {
    ingressGroupOf[id] = groupFor('ingress', selIngress[id]);
    egressGroupOf[id] = groupFor('egress', selEgress[id]);
  }

  trie4.seal();
  trie6.seal();
  const compileMs = performance.now() - t0;
  return {
    revision: options.revision ?? 1,
    localNode,
    pods: state.pods,
    podIdentity,
    podNode,
    podPortOff,
    podPortData: Int32Array.from(portData),
    nodeNames,
    addrs,
    identities,
    ingressGroupOf,
    egressGroupOf,
    groups,
    policies,
    trie4,
    trie6,
    blocks,
    portNames,
    srcMarks: new Int32Array(blocks.length),
    dstMarks: new Int32Array(blocks.length),
    stamp: 0,
    stats: {
      pods: state.pods.length,
      namespaces: namespaces.length,
      nodes: nodeNames.length,
      identities: identities.length,
      policies: policies.length,
      invalidPolicies,
      selectors: resolver.distinctSelectors,
      selectorBytes: resolver.selectorBytes,
      ruleGroups: groups.length,
      ipBlocks: blocks.length,
      trieNodes: trie4.nodes + trie6.nodes,
      trieBytes: trie4.bytes + trie6.bytes,
      compileMs,
    },
  };
}

function pushPosting(postings: Map<string, number[]>, key: string, id: number): void {
  const list = postings.get(key);
  if (list) list.push(id);
  else postings.set(key, [id]);
}

