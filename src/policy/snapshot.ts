// The compiled decision structure. A PolicySnapshot is built by `compile` and never mutated
// afterwards (apart from the per-lookup scratch stamps described below); a policy, pod or
// namespace change produces a new snapshot with a new revision.
import type { PodInfo, PolicySpec } from '../model/types.js';
import type { AddrTable } from './addr-table.js';
import type { CidrTrie } from './cidr-trie.js';
import type { IdSet } from './idset.js';

/** One `ports` entry: a protocol and an inclusive range, or a named port (nameId >= 0). */
export interface CompiledPort {
  readonly proto: number;
  readonly lo: number;
  readonly hi: number;
  /** Interned port name, or -1 for numeric / all-ports entries. */
  readonly nameId: number;
}

/**
 * One `from`/`to` entry: either an ipBlock (blockId >= 0) or a selector, whose identity set is
 * `PolicySnapshot.sets[slot]`. Rules name slots rather than sets so that a pod-only recompile
 * can update a set without rebuilding the rules that use it.
 */
export interface CompiledPeer {
  readonly blockId: number;
  readonly slot: number;
}

export interface CompiledRule {
  readonly policy: CompiledPolicy;
  readonly direction: 'ingress' | 'egress';
  /** Index of the rule in the policy's `ingress` / `egress` list. */
  readonly index: number;
  /** null = all ports ("If this field is empty or missing, this rule matches all ports"). */
  readonly ports: readonly CompiledPort[] | null;
  /** null = all peers ("If this field is empty or missing, this rule matches all sources"). */
  readonly peers: readonly CompiledPeer[] | null;
  readonly hasIpBlocks: boolean;
}

export interface CompiledPolicy {
  readonly index: number;
  /** `namespace/name`. */
  readonly key: string;
  readonly spec: PolicySpec;
}

/**
 * The rules that apply to identities selected by exactly the same set of policies, in one
 * direction. Identities share groups, so the per-identity cost is one int.
 */
export interface RuleGroup {
  readonly index: number;
  readonly direction: 'ingress' | 'egress';
  /** All policies selecting these identities for this direction (valid or not). */
  readonly policies: readonly CompiledPolicy[];
  /** Rules of the valid ones, in policy order then rule order. */
  readonly rules: readonly CompiledRule[];
  readonly hasIpBlocks: boolean;
}

export interface Identity {
  readonly id: number;
  readonly namespace: string;
  readonly labels: Readonly<Record<string, string>>;
}

export interface SnapshotStats {
  pods: number;
  namespaces: number;
  nodes: number;
  identities: number;
  policies: number;
  invalidPolicies: number;
  selectors: number;
  selectorBytes: number;
  ruleGroups: number;
  ipBlocks: number;
  trieNodes: number;
  trieBytes: number;
  compileMs: number;
  /** True when only pods changed and the previous compile's work was reused. */
  incremental: boolean;
}

export interface PolicySnapshot {
  readonly revision: number;
  readonly localNode: string | undefined;

  readonly pods: readonly PodInfo[];
  /** Identity of each pod endpoint (-1 for host-network pods and pods without identity). */
  readonly podIdentity: Int32Array;
  /** Node index of each pod (-1 when unknown). */
  readonly podNode: Int32Array;
  /** Named ports of pod i are triples (nameId, proto, port) in podPortData[podPortOff[i]..podPortOff[i+1]). */
  readonly podPortOff: Int32Array;
  readonly podPortData: Int32Array;
  readonly nodeNames: readonly string[];
  /** Address -> endpoint: pod index * 2 for pod endpoints, node index * 2 + 1 for node addresses. */
  readonly addrs: AddrTable;

  readonly identities: readonly Identity[];
  /** Per identity: RuleGroup index for each direction, -1 when not isolated. */
  readonly ingressGroupOf: Int32Array;
  readonly egressGroupOf: Int32Array;
  readonly groups: readonly RuleGroup[];
  readonly policies: readonly CompiledPolicy[];
  /** Identity sets of the selector peers, by slot (deduplicated: one per distinct selector). */
  readonly sets: readonly IdSet[];

  readonly trie4: CidrTrie;
  readonly trie6: CidrTrie;
  /** The ipBlocks by block id, as written (for explanations). */
  readonly blocks: readonly { cidr: string; except: readonly string[] }[];
  readonly portNames: readonly string[];

  /**
   * Scratch for trie lookups: decide() stamps the blocks containing the source / destination
   * address here. Owned by the snapshot so that lookups allocate nothing; JavaScript runs one
   * decide() at a time per isolate, and every worker has its own snapshot object.
   */
  readonly srcMarks: Int32Array;
  readonly dstMarks: Int32Array;
  stamp: number;

  readonly stats: SnapshotStats;
}
