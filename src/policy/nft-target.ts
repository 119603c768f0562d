// Kernel enforcement of a compiled snapshot: an nftables ruleset deciding, in the forward hook,
// exactly what decide() decides, for the first packet of every TCP/UDP/SCTP flow from or to a
// local pod. Pure: no I/O. Researchers load it instead of the agent to compare userspace and
// kernel enforcement of the same policies (test/kernel-diff.e2e.test.ts keeps the two equal).
//
// Shape (one table, family inet):
//
//   forward (hook forward, priority filter, policy accept)
//     ct state established,related accept        only a flow's first packet is decided
//     meta l4proto != { tcp, udp, sctp } accept  other protocols (ICMP...) are not touched
//     ip saddr . ip daddr @node_local_v4 accept  a node's addresses to the pods of that node
//     [ip saddr != @local_v4 ip daddr != @local_v4 accept]   only with some pods not local
//     ip saddr vmap @egress_v4                   isolated source pod -> jump out_g<N>
//     ip daddr vmap @ingress_v4                  isolated destination pod -> jump in_g<N>
//     (the same for IPv6)
//   out_g<N> / in_g<N>: one chain per rule group (pods selected by the same policies share it);
//     one rule per (compiled rule, protocol/port alternative, peer), ending in `return` (allowed:
//     the other direction is still checked); the chain ends in `drop`.
//
// Peers are named sets: `sel_s<slot>_v4` (addresses of the pods whose identity is in
// snapshot.sets[slot]), `blk_b<id>_v4` (interval set: the ipBlock's cidr minus its excepts,
// computed here since nft has no set difference). Named ports are resolved per destination pod
// into `np_<name>_<proto>_v4` sets of (pod address . port), matched with `ip daddr . th dport`.
//
// Everything is first built as plain data (buildNftPlan), which tests evaluate against decide();
// renderNftPlan only prints it.
import type { Protocol } from '../model/types.js';
import { formatAddr, parseAddrInto, parseCidr, protocolNumber, type Family } from './addr.js';
import type { CompiledRule, PolicySnapshot, RuleGroup } from './snapshot.js';

export const DEFAULT_NFT_TABLE = 'netpold_kernel';
const ALL_PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP', 'SCTP'];
/** nft identifiers: a letter, then letters, digits and `_` (kept short and portable). */
export const NFT_TABLE_RE = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;

export interface NftTargetOptions {
  /** Table name (family inet); default `netpold_kernel`. */
  table: string;
  /** Protocols whose flows are decided; default all three. Other traffic is accepted. */
  protocols: readonly Protocol[];
  /**
   * Whose flows the ruleset decides: all pods, or the pods of one node (snapshot.podNode, so pods
   * without spec.nodeName count as on the snapshot's localNode). A flow is decided when its source
   * or its destination is a local pod, and then exactly as decide() does: the other endpoint's
   * policies included, as the agent does. Flows between non-local endpoints are accepted.
   */
  localPods: 'all' | { nodeName: string };
}

// ---------------------------------------------------------------------------------------------
// The plan: plain data

export type NftAddrField = 'saddr' | 'daddr';

export type NftSet =
  /** `type ipv4_addr` / `ipv6_addr`: exact addresses. */
  | { readonly kind: 'addr'; readonly name: string; readonly family: Family; readonly elements: readonly string[]; readonly comment: string }
  /** `flags interval`: inclusive address ranges, disjoint, ascending. */
  | { readonly kind: 'interval'; readonly name: string; readonly family: Family; readonly elements: readonly NftRange[]; readonly comment: string }
  /** `type ipv4_addr . ipv4_addr`: (source, destination) pairs. */
  | { readonly kind: 'addr-pair'; readonly name: string; readonly family: Family; readonly elements: readonly (readonly [string, string])[]; readonly comment: string }
  /** `type ipv4_addr . inet_service`: (destination, port) pairs. */
  | { readonly kind: 'addr-port'; readonly name: string; readonly family: Family; readonly elements: readonly (readonly [string, number])[]; readonly comment: string };

export interface NftRange {
  readonly lo: string;
  readonly hi: string;
  /** The prefix length when lo..hi is exactly one prefix, else undefined. */
  readonly prefix: number | undefined;
}

/** A verdict map from an address to `jump <chain>`. */
export interface NftVmap {
  readonly name: string;
  readonly family: Family;
  readonly elements: readonly (readonly [string, string])[];
  readonly comment: string;
}

export type NftMatch =
  /** `ct state established,related` */
  | { readonly kind: 'ct-established' }
  /** `meta l4proto != { ... }` */
  | { readonly kind: 'l4proto-not-in'; readonly protos: readonly number[] }
  /** `meta l4proto tcp` */
  | { readonly kind: 'l4proto'; readonly proto: number }
  /** `th dport { 80, 8000-9000 }`: inclusive ranges, disjoint, ascending */
  | { readonly kind: 'dport'; readonly ranges: readonly (readonly [number, number])[] }
  /** `ip saddr @set` / `ip daddr != @set` (the family is implied: other families never match) */
  | { readonly kind: 'addr-in'; readonly family: Family; readonly field: NftAddrField; readonly set: string; readonly negate: boolean }
  /** `ip saddr . ip daddr @set` */
  | { readonly kind: 'pair-in'; readonly family: Family; readonly set: string }
  /** `ip daddr . th dport @set` */
  | { readonly kind: 'daddr-port-in'; readonly family: Family; readonly set: string };

export type NftVerdict =
  | { readonly kind: 'accept' }
  | { readonly kind: 'drop' }
  | { readonly kind: 'return' }
  /** `ip saddr vmap @map`: jump to the chain the map names, if the address is in it. */
  | { readonly kind: 'vmap'; readonly family: Family; readonly field: NftAddrField; readonly map: string };

export interface NftRule {
  readonly matches: readonly NftMatch[];
  readonly verdict: NftVerdict;
  readonly comment: string | undefined;
}

export interface NftChain {
  readonly name: string;
  /** Only the base chain has a hook (policy accept). */
  readonly hook: 'forward' | undefined;
  readonly comment: string;
  readonly rules: readonly NftRule[];
}

export interface NftPlan {
  readonly table: string;
  readonly protocols: readonly Protocol[];
  readonly sets: readonly NftSet[];
  readonly maps: readonly NftVmap[];
  /** The base chain first, then the group chains. */
  readonly chains: readonly NftChain[];
  readonly stats: { readonly localPods: number; readonly groupChains: number; readonly rules: number; readonly setElements: number };
}

// ---------------------------------------------------------------------------------------------
// Building

interface PodAddr {
  readonly pod: number;
  readonly family: Family;
  readonly text: string;
}

interface PortAlt {
  readonly matches: readonly NftMatch[];
  /** Set for named ports (family-specific sets). */
  readonly family: Family | undefined;
}

interface PeerAlt {
  readonly matches: readonly NftMatch[];
  readonly family: Family | undefined;
}

const FAMILIES: readonly Family[] = [4, 6];
const sfx = (f: Family): string => (f === 4 ? 'v4' : 'v6');

function normaliseOptions(opts: Partial<NftTargetOptions>): NftTargetOptions {
  const table = opts.table ?? DEFAULT_NFT_TABLE;
  if (!NFT_TABLE_RE.test(table)) throw new RangeError(`invalid nftables table name ${JSON.stringify(table)}: a letter, then up to 63 letters, digits or _`);
  const protocols = ALL_PROTOCOLS.filter((p) => (opts.protocols ?? ALL_PROTOCOLS).includes(p));
  if (protocols.length === 0) throw new RangeError('no protocols to enforce: give at least one of TCP, UDP, SCTP');
  return { table, protocols, localPods: opts.localPods ?? 'all' };
}

/** Builds the ruleset as plain data (sets, maps, chains of rule objects). */
export function buildNftPlan(snap: PolicySnapshot, options: Partial<NftTargetOptions> = {}): NftPlan {
  const opts = normaliseOptions(options);
  const protoNums = opts.protocols.map(protocolNumber);
  const localNodeIdx = opts.localPods === 'all' ? -2 : snap.nodeNames.indexOf(opts.localPods.nodeName);
  const isLocal = (pod: number): boolean => localNodeIdx === -2 || (localNodeIdx >= 0 && snap.podNode[pod] === localNodeIdx);

  // Pod endpoints: each address of a pod that the snapshot resolves to that pod (host-network
  // pods are node endpoints; an address two pods claim belongs to the first, as in decide()).
  const podAddrs: PodAddr[] = [];
  const addrsOfPod: PodAddr[][] = snap.pods.map(() => []);
  const words = new Uint32Array(4);
  for (let i = 0; i < snap.pods.length; i++) {
    const p = snap.pods[i]!;
    if (p.hostNetwork) continue;
    for (const ip of p.ips) {
      const fam = parseAddrInto(ip, words);
      if (fam === 0 || snap.addrs.get(fam, words) !== i * 2) continue;
      const a: PodAddr = { pod: i, family: fam, text: formatAddr(fam, words) };
      podAddrs.push(a);
      addrsOfPod[i]!.push(a);
    }
  }
  const podsWithPorts: number[] = [];
  for (let i = 0; i < snap.pods.length; i++) if (addrsOfPod[i]!.length > 0 && snap.podPortOff[i + 1]! > snap.podPortOff[i]!) podsWithPorts.push(i);
  const addrsOfIdentity = new Map<number, PodAddr[]>();
  for (const a of podAddrs) {
    const id = snap.podIdentity[a.pod]!;
    if (id < 0) continue;
    let list = addrsOfIdentity.get(id);
    if (!list) addrsOfIdentity.set(id, (list = []));
    list.push(a);
  }
  // Node endpoints: node index -> its addresses (Node objects' and host-network pods').
  const nodeAddrs = new Map<number, { family: Family; text: string }[]>();
  for (const e of snap.addrs.entries()) {
    if ((e.value & 1) !== 1) continue;
    const n = e.value >>> 1;
    let list = nodeAddrs.get(n);
    if (!list) nodeAddrs.set(n, (list = []));
    list.push({ family: e.family, text: formatAddr(e.family, e.words) });
  }

  const sets = new Map<string, NftSet>();
  const maps: NftVmap[] = [];
  const chains: NftChain[] = [];

  // --- Maps, and the group chains they reach ---------------------------------------------------
  const usedGroups = new Set<number>();
  const mapElems = { egress: { 4: [] as [string, string][], 6: [] as [string, string][] }, ingress: { 4: [] as [string, string][], 6: [] as [string, string][] } };
  const chainName = (g: RuleGroup): string => `${g.direction === 'ingress' ? 'in' : 'out'}_g${g.index}`;
  for (const a of podAddrs) {
    const id = snap.podIdentity[a.pod]!;
    if (id < 0) continue;
    for (const dir of ['egress', 'ingress'] as const) {
      const g = (dir === 'egress' ? snap.egressGroupOf : snap.ingressGroupOf)[id]!;
      if (g < 0) continue;
      usedGroups.add(g);
      mapElems[dir][a.family].push([a.text, `jump ${chainName(snap.groups[g]!)}`]);
    }
  }
  for (const dir of ['egress', 'ingress'] as const) {
    for (const f of FAMILIES) {
      maps.push({
        name: `${dir}_${sfx(f)}`,
        family: f,
        elements: sortPairs(f, mapElems[dir][f]),
        comment: `${dir}-isolated pods -> their rule group's chain`,
      });
    }
  }

  // --- Sets used by the group chains (created on first use) -----------------------------------
  const selSet = (slot: number, f: Family, usedBy: string): string | undefined => {
    const name = `sel_s${slot}_${sfx(f)}`;
    if (!sets.has(name)) {
      const idset = snap.sets[slot]!;
      const members = idset.isAll ? [...addrsOfIdentity.keys()] : idset.toArray();
      const elems: string[] = [];
      for (const id of members) for (const a of addrsOfIdentity.get(id) ?? []) if (a.family === f) elems.push(a.text);
      sets.set(name, { kind: 'addr', name, family: f, elements: sortAddrs(f, elems), comment: `pods of selector slot ${slot} (first used by a peer of ${usedBy})` });
    }
    const s = sets.get(name)!;
    return s.elements.length > 0 ? name : undefined;
  };
  const blockSet = (blockId: number): { name: string; family: Family } | undefined => {
    const b = snap.blocks[blockId]!;
    const c = parseCidr(b.cidr);
    if (!c) return undefined; // validated upstream; decide() treats it as matching nothing
    const name = `blk_b${blockId}_${sfx(c.family)}`;
    if (!sets.has(name)) {
      const excepts: [bigint, bigint][] = [];
      for (const e of b.except) {
        const x = parseCidr(e);
        if (x && x.family === c.family) excepts.push(prefixRange(x.family, x.words, x.prefix));
      }
      const ranges = subtractRanges(prefixRange(c.family, c.words, c.prefix), excepts);
      const comment = `ipBlock ${b.cidr}${b.except.length ? ` except ${b.except.join(', ')}` : ''}`;
      sets.set(name, { kind: 'interval', name, family: c.family, elements: ranges.map(([lo, hi]) => toNftRange(c.family, lo, hi)), comment });
    }
    const s = sets.get(name)!;
    return s.elements.length > 0 ? { name, family: c.family } : undefined;
  };
  const namedSet = (nameId: number, proto: number, f: Family): string | undefined => {
    const portName = snap.portNames[nameId]!;
    // IANA_SVC_NAMEs are [a-z0-9-], so `-` -> `_` keeps names distinct; anything else by number.
    const base = /^[a-z0-9-]+$/.test(portName) ? `np_${portName.replace(/-/g, '_')}` : `np${nameId}`;
    const name = `${base}_${protoName(proto)}_${sfx(f)}`;
    if (!sets.has(name)) {
      const elems: [string, number][] = [];
      for (const i of podsWithPorts) {
        const pods = addrsOfPod[i]!.filter((a) => a.family === f);
        if (pods.length === 0) continue;
        const end = snap.podPortOff[i + 1]!;
        for (let k = snap.podPortOff[i]!; k < end; k += 3) {
          if (snap.podPortData[k] !== nameId || snap.podPortData[k + 1] !== proto) continue;
          for (const a of pods) elems.push([a.text, snap.podPortData[k + 2]!]);
        }
      }
      const uniq = new Map(elems.map((e) => [`${e[0]} ${e[1]}`, e] as const));
      const sorted = sortByAddr(f, [...uniq.values()], (e) => e[0], (x, y) => x[1] - y[1]);
      sets.set(name, { kind: 'addr-port', name, family: f, elements: sorted, comment: `pods declaring port ${portName}/${protoName(proto).toUpperCase()}` });
    }
    const s = sets.get(name)!;
    return s.elements.length > 0 ? name : undefined;
  };

  // --- Group chains ---------------------------------------------------------------------------
  let ruleCount = 0;
  const groupIdx = [...usedGroups].sort((a, b) => a - b);
  const groupChains: NftChain[] = [];
  for (const g of groupIdx) {
    const group = snap.groups[g]!;
    const peerField: NftAddrField = group.direction === 'ingress' ? 'saddr' : 'daddr';
    const rules: NftRule[] = [];
    for (const rule of group.rules) {
      const comment = truncate(`${rule.policy.key} ${rule.direction}[${rule.index}]`);
      for (const pa of portAlternatives(rule, protoNums, namedSet)) {
        for (const qa of peerAlternatives(rule, peerField, (slot, f) => selSet(slot, f, comment), blockSet)) {
          if (pa.family !== undefined && qa.family !== undefined && pa.family !== qa.family) continue;
          rules.push({ matches: [...pa.matches, ...qa.matches], verdict: { kind: 'return' }, comment });
        }
      }
    }
    rules.push({ matches: [], verdict: { kind: 'drop' }, comment: undefined });
    ruleCount += rules.length;
    const pols = group.policies.map((p) => p.key + (p.spec.valid ? '' : ' (invalid: fails closed)'));
    groupChains.push({ name: chainName(group), hook: undefined, comment: `${group.direction} of pods selected by ${pols.join(', ')}`, rules });
  }

  // --- Node-local pairs and local pods --------------------------------------------------------
  const pairElems: Record<Family, [string, string][]> = { 4: [], 6: [] };
  const localElems: Record<Family, string[]> = { 4: [], 6: [] };
  let allLocal = true;
  const localPods = new Set<number>();
  for (const a of podAddrs) {
    if (!isLocal(a.pod)) {
      allLocal = false;
      continue;
    }
    localPods.add(a.pod);
    localElems[a.family].push(a.text);
    const n = snap.podNode[a.pod]!;
    if (n < 0 || snap.podIdentity[a.pod]! < 0) continue; // not a pod for policy: allowed anyway
    for (const na of nodeAddrs.get(n) ?? []) if (na.family === a.family) pairElems[a.family].push([na.text, a.text]);
  }
  for (const f of FAMILIES) {
    const name = `node_local_${sfx(f)}`;
    const elements = pairElems[f]
      .map((e) => ({ e, k1: addrKey(f, e[0]), k2: addrKey(f, e[1]) }))
      .sort((x, y) => cmpBig(x.k1, y.k1) || cmpBig(x.k2, y.k2))
      .map((x) => x.e);
    sets.set(name, { kind: 'addr-pair', name, family: f, elements, comment: 'node address . pod of that node: always allowed' });
  }
  if (!allLocal) {
    for (const f of FAMILIES) {
      const name = `local_${sfx(f)}`;
      sets.set(name, { kind: 'addr', name, family: f, elements: sortAddrs(f, localElems[f]), comment: 'the local pods: flows from or to them are decided' });
    }
  }

  // --- The base chain -------------------------------------------------------------------------
  const base: NftRule[] = [
    { matches: [{ kind: 'ct-established' }], verdict: { kind: 'accept' }, comment: undefined },
    { matches: [{ kind: 'l4proto-not-in', protos: protoNums }], verdict: { kind: 'accept' }, comment: undefined },
  ];
  for (const f of FAMILIES) base.push({ matches: [{ kind: 'pair-in', family: f, set: `node_local_${sfx(f)}` }], verdict: { kind: 'accept' }, comment: undefined });
  if (!allLocal) {
    for (const f of FAMILIES) {
      base.push({
        matches: [
          { kind: 'addr-in', family: f, field: 'saddr', set: `local_${sfx(f)}`, negate: true },
          { kind: 'addr-in', family: f, field: 'daddr', set: `local_${sfx(f)}`, negate: true },
        ],
        verdict: { kind: 'accept' },
        comment: undefined,
      });
    }
  }
  for (const dir of ['egress', 'ingress'] as const) {
    for (const f of FAMILIES) {
      base.push({ matches: [], verdict: { kind: 'vmap', family: f, field: dir === 'egress' ? 'saddr' : 'daddr', map: `${dir}_${sfx(f)}` }, comment: undefined });
    }
  }
  ruleCount += base.length;
  chains.push({ name: 'forward', hook: 'forward', comment: 'the first packet of each flow from or to a local pod', rules: base }, ...groupChains);

  // Sets in a stable order: node_local, local, then by name; only those some rule names.
  const referenced = new Set<string>();
  for (const c of chains) for (const r of c.rules) for (const m of r.matches) if ('set' in m) referenced.add(m.set);
  const setList = [...sets.values()].filter((x) => referenced.has(x.name)).sort((a, b) => setRank(a.name) - setRank(b.name) || cmpStr(a.name, b.name));
  let setElements = 0;
  for (const s of setList) setElements += s.elements.length;
  for (const m of maps) setElements += m.elements.length;
  return {
    table: opts.table,
    protocols: opts.protocols,
    sets: setList,
    maps,
    chains,
    stats: { localPods: localPods.size, groupChains: groupChains.length, rules: ruleCount, setElements },
  };
}

function setRank(name: string): number {
  return name.startsWith('node_local_') ? 0 : name.startsWith('local_') ? 1 : 2;
}

/**
 * The protocol/port alternatives of a rule (any one must match): null ports = everything;
 * numeric entries of a protocol merge into one `th dport` match; named ports become
 * `ip daddr . th dport` lookups per family. Protocols not enforced are left out.
 */
function portAlternatives(
  rule: CompiledRule,
  protoNums: readonly number[],
  namedSet: (nameId: number, proto: number, f: Family) => string | undefined,
): PortAlt[] {
  if (rule.ports === null) return [{ matches: [], family: undefined }];
  const out: PortAlt[] = [];
  const numeric = new Map<number, [number, number][]>();
  const named = new Set<string>();
  for (const p of rule.ports) {
    if (!protoNums.includes(p.proto)) continue;
    if (p.nameId < 0) {
      let list = numeric.get(p.proto);
      if (!list) numeric.set(p.proto, (list = []));
      list.push([p.lo, p.hi]);
    } else {
      named.add(`${p.nameId}/${p.proto}`);
    }
  }
  for (const proto of protoNums) {
    const list = numeric.get(proto);
    if (!list) continue;
    const ranges = mergeRanges(list);
    const all = ranges.length === 1 && ranges[0]![0] <= 0 && ranges[0]![1] >= 65535;
    out.push({ matches: all ? [{ kind: 'l4proto', proto }] : [{ kind: 'l4proto', proto }, { kind: 'dport', ranges }], family: undefined });
  }
  for (const key of [...named].sort()) {
    const [nameId, proto] = key.split('/').map(Number) as [number, number];
    for (const f of FAMILIES) {
      const set = namedSet(nameId, proto, f);
      if (set) out.push({ matches: [{ kind: 'l4proto', proto }, { kind: 'daddr-port-in', family: f, set }], family: f });
    }
  }
  return out;
}

/** The peer alternatives of a rule: null peers = anyone; selector and ipBlock peers by set. */
function peerAlternatives(
  rule: CompiledRule,
  field: NftAddrField,
  selSet: (slot: number, f: Family) => string | undefined,
  blockSet: (blockId: number) => { name: string; family: Family } | undefined,
): PeerAlt[] {
  if (rule.peers === null) return [{ matches: [], family: undefined }];
  const out: PeerAlt[] = [];
  const seen = new Set<string>();
  for (const peer of rule.peers) {
    const key = peer.blockId >= 0 ? `b${peer.blockId}` : `s${peer.slot}`;
    if (seen.has(key)) continue;
    seen.add(key);
    if (peer.blockId >= 0) {
      const b = blockSet(peer.blockId);
      if (b) out.push({ matches: [{ kind: 'addr-in', family: b.family, field, set: b.name, negate: false }], family: b.family });
    } else {
      for (const f of FAMILIES) {
        const s = selSet(peer.slot, f);
        if (s) out.push({ matches: [{ kind: 'addr-in', family: f, field, set: s, negate: false }], family: f });
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Rendering

/** The ruleset for `nft -f`: replaces the table atomically (created if absent, then rebuilt). */
export function renderNftEnforcement(snap: PolicySnapshot, opts: Partial<NftTargetOptions> = {}): string {
  return renderNftPlan(buildNftPlan(snap, opts));
}

export function renderNftPlan(plan: NftPlan): string {
  const t = plan.table;
  const out: string[] = [];
  out.push(`# netpold: kernel enforcement of the compiled NetworkPolicy snapshot (${plan.protocols.join(', ')}).`);
  out.push(`# ${plan.stats.localPods} local pod(s), ${plan.stats.groupChains} rule group chain(s), ${plan.stats.rules} rule(s), ${plan.stats.setElements} set/map element(s).`);
  out.push(`# Load with \`nft -f FILE\` (replaces the table atomically); remove with \`nft delete table inet ${t}\`.`);
  out.push(`table inet ${t}`);
  out.push(`delete table inet ${t}`);
  out.push(`table inet ${t} {`);
  for (const s of plan.sets) {
    out.push(`  # ${s.comment}`);
    out.push(`  set ${s.name} {`);
    const at = s.family === 4 ? 'ipv4_addr' : 'ipv6_addr';
    switch (s.kind) {
      case 'addr':
        out.push(`    type ${at}`);
        pushElements(out, s.elements);
        break;
      case 'interval':
        out.push(`    type ${at}`, `    flags interval`);
        pushElements(out, s.elements.map(renderRange));
        break;
      case 'addr-pair':
        out.push(`    type ${at} . ${at}`);
        pushElements(out, s.elements.map(([a, b]) => `${a} . ${b}`));
        break;
      case 'addr-port':
        out.push(`    type ${at} . inet_service`);
        pushElements(out, s.elements.map(([a, p]) => `${a} . ${p}`));
        break;
    }
    out.push('  }');
  }
  for (const m of plan.maps) {
    out.push(`  # ${m.comment}`);
    out.push(`  map ${m.name} {`);
    out.push(`    type ${m.family === 4 ? 'ipv4_addr' : 'ipv6_addr'} : verdict`);
    pushElements(out, m.elements.map(([a, v]) => `${a} : ${v}`));
    out.push('  }');
  }
  for (const c of plan.chains) {
    out.push(`  # ${c.comment}`);
    out.push(`  chain ${c.name} {`);
    if (c.hook) out.push(`    type filter hook ${c.hook} priority filter; policy accept;`);
    for (const r of c.rules) out.push(`    ${renderRule(r)}`);
    out.push('  }');
  }
  out.push('}');
  return `${out.join('\n')}\n`;
}

function pushElements(out: string[], elems: readonly string[]): void {
  if (elems.length === 0) return;
  if (elems.length <= 4) {
    out.push(`    elements = { ${elems.join(', ')} }`);
    return;
  }
  out.push('    elements = {');
  for (let i = 0; i < elems.length; i++) out.push(`      ${elems[i]}${i < elems.length - 1 ? ',' : ''}`);
  out.push('    }');
}

function renderRange(r: NftRange): string {
  if (r.prefix !== undefined) return r.prefix === (r.lo.includes(':') ? 128 : 32) ? r.lo : `${r.lo}/${r.prefix}`;
  return `${r.lo}-${r.hi}`;
}

function renderRule(r: NftRule): string {
  const parts = r.matches.map(renderMatch);
  const v = r.verdict;
  switch (v.kind) {
    case 'vmap':
      parts.push(`${v.family === 4 ? 'ip' : 'ip6'} ${v.field} vmap @${v.map}`);
      break;
    default:
      parts.push(v.kind);
  }
  if (r.comment !== undefined) parts.push(`comment "${r.comment}"`);
  return parts.join(' ');
}

function renderMatch(m: NftMatch): string {
  switch (m.kind) {
    case 'ct-established':
      return 'ct state established,related';
    case 'l4proto-not-in':
      return `meta l4proto != ${m.protos.length === 1 ? protoName(m.protos[0]!) : `{ ${m.protos.map(protoName).join(', ')} }`}`;
    case 'l4proto':
      return `meta l4proto ${protoName(m.proto)}`;
    case 'dport': {
      const items = m.ranges.map(([lo, hi]) => (lo === hi ? `${lo}` : `${lo}-${hi}`));
      return `th dport ${items.length === 1 ? items[0]! : `{ ${items.join(', ')} }`}`;
    }
    case 'addr-in':
      return `${m.family === 4 ? 'ip' : 'ip6'} ${m.field} ${m.negate ? '!= ' : ''}@${m.set}`;
    case 'pair-in':
      return m.family === 4 ? `ip saddr . ip daddr @${m.set}` : `ip6 saddr . ip6 daddr @${m.set}`;
    case 'daddr-port-in':
      return `${m.family === 4 ? 'ip' : 'ip6'} daddr . th dport @${m.set}`;
  }
}

function protoName(n: number): string {
  return n === 6 ? 'tcp' : n === 17 ? 'udp' : n === 132 ? 'sctp' : String(n);
}

function truncate(s: string): string {
  const clean = s.replace(/["\\\n]/g, '_');
  return clean.length <= 120 ? clean : `${clean.slice(0, 117)}...`;
}

// ---------------------------------------------------------------------------------------------
// Addresses and ranges

function toBig(family: Family, w: Uint32Array): bigint {
  if (family === 4) return BigInt(w[0]!);
  return (BigInt(w[0]!) << 96n) | (BigInt(w[1]!) << 64n) | (BigInt(w[2]!) << 32n) | BigInt(w[3]!);
}

function fromBig(family: Family, v: bigint): string {
  const w = new Uint32Array(4);
  if (family === 4) w[0] = Number(v);
  else for (let i = 0; i < 4; i++) w[i] = Number((v >> BigInt(96 - 32 * i)) & 0xffffffffn);
  return formatAddr(family, w);
}

function prefixRange(family: Family, w: Uint32Array, prefix: number): [bigint, bigint] {
  const bits = family === 4 ? 32 : 128;
  const host = (1n << BigInt(bits - prefix)) - 1n;
  const lo = toBig(family, w) & ~host & ((1n << BigInt(bits)) - 1n);
  return [lo, lo | host];
}

/** [lo, hi] minus the union of `cuts`: disjoint, non-adjacent, ascending ranges. */
export function subtractRanges(whole: readonly [bigint, bigint], cuts: readonly (readonly [bigint, bigint])[]): [bigint, bigint][] {
  const sorted = [...cuts].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const out: [bigint, bigint][] = [];
  let next = whole[0];
  for (const [lo, hi] of sorted) {
    if (hi < next || lo > whole[1]) continue;
    if (lo > next) out.push([next, lo - 1n]);
    if (hi + 1n > next) next = hi + 1n;
    if (next > whole[1]) break;
  }
  if (next <= whole[1]) out.push([next, whole[1]]);
  return out;
}

function toNftRange(family: Family, lo: bigint, hi: bigint): NftRange {
  const bits = family === 4 ? 32 : 128;
  const size = hi - lo + 1n;
  let prefix: number | undefined;
  if ((size & (size - 1n)) === 0n && (lo & (size - 1n)) === 0n) prefix = bits - (size.toString(2).length - 1);
  return { lo: fromBig(family, lo), hi: fromBig(family, hi), prefix };
}

function mergeRanges(list: readonly (readonly [number, number])[]): [number, number][] {
  const sorted = [...list].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const out: [number, number][] = [];
  for (const [lo, hi] of sorted) {
    if (hi < lo) continue;
    const last = out[out.length - 1];
    if (last && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else out.push([lo, hi]);
  }
  return out;
}

function addrKey(family: Family, text: string): bigint {
  const w = new Uint32Array(4);
  parseAddrInto(text, w);
  return toBig(family, w);
}

function cmpBig(x: bigint, y: bigint): number {
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Sorts by address (then by `tie`), parsing each address once. */
function sortByAddr<T>(f: Family, list: readonly T[], addrOf: (t: T) => string, tie: (a: T, b: T) => number = () => 0): T[] {
  return list
    .map((t) => ({ t, k: addrKey(f, addrOf(t)) }))
    .sort((a, b) => cmpBig(a.k, b.k) || tie(a.t, b.t))
    .map((x) => x.t);
}

function sortAddrs(f: Family, list: readonly string[]): string[] {
  return sortByAddr(f, [...new Set(list)], (a) => a);
}

function sortPairs(f: Family, list: readonly [string, string][]): [string, string][] {
  return sortByAddr(f, list, (p) => p[0]);
}

function cmpStr(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
