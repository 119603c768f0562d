// explainFlow(snapshot, flow): why a flow is allowed or denied, rule by rule. Off the hot path
// (the CLI's `explain`, the agent's explain socket): it may allocate. It walks the same compiled
// structures decide() reads — the address table, the rule groups, the compiled ports and
// peers, the selector identity sets, the ipBlock trie — so its verdict is decide()'s verdict
// (a property test holds it to that); the words around each check (which label did not match,
// which except caught the address) are derived from the policies' specs.
import { addrBit, formatAddr, parseCidr, protocolName, type Family } from './addr.js';
import type { FlowKey } from './decide.js';
import type { SideStatus } from './explain.js';
import { selectorMatches } from './selector.js';
import type { CompiledPeer, CompiledPort, CompiledRule, PolicySnapshot, RuleGroup } from './snapshot.js';
import type { LabelSelector, PolicyPeer, Protocol } from '../model/types.js';

export interface EndpointInfo {
  readonly ip: string;
  /** A pod (not host-network), a node address (host-network pods included), or anything else. */
  readonly kind: 'pod' | 'node' | 'external';
  /** `namespace/name` for a pod. */
  readonly pod: string | undefined;
  /** The node, for a node address. */
  readonly node: string | undefined;
}

export interface PortCheck {
  /** As written: `TCP/8080`, `TCP/8080-8090`, `all UDP ports`, `TCP/http` (a named port). */
  readonly text: string;
  readonly matched: boolean;
  readonly why: string;
}

export interface PeerCheck {
  readonly index: number;
  /** As written: `podSelector {app=web}`, `namespaceSelector {team=a} + podSelector {}`, `ipBlock 198.18.0.0/16 except [...]`. */
  readonly text: string;
  readonly matched: boolean;
  readonly why: string;
}

export interface RuleCheck {
  readonly policy: string;
  readonly direction: 'ingress' | 'egress';
  readonly index: number;
  /** Ports and peers both match. */
  readonly matched: boolean;
  /** `all`: the rule has no ports (every port and protocol). */
  readonly ports: { readonly all: boolean; readonly matched: boolean; readonly entries: readonly PortCheck[] };
  /** `all`: the rule has no peers (every source / destination, external ones included). */
  readonly peers: { readonly all: boolean; readonly matched: boolean; readonly matchedPeer: number | undefined; readonly entries: readonly PeerCheck[] };
  readonly why: string;
}

export interface PolicyCheck {
  readonly policy: string;
  readonly valid: boolean;
  readonly rules: readonly RuleCheck[];
  /** Why it has no rule to check, when it has none. */
  readonly note: string | undefined;
}

export interface SideExplanation {
  readonly direction: 'egress' | 'ingress';
  readonly status: SideStatus;
  /** The pod this side is about (the source for egress, the destination for ingress). */
  readonly pod: string | undefined;
  /** One line: the side's verdict and why. */
  readonly summary: string;
  /** The policies that select the pod for this direction (isolating it), each with its rules checked. */
  readonly policies: readonly PolicyCheck[];
  /** The rule decide() names: the first matching rule in policy order. */
  readonly allowedBy: { readonly policy: string; readonly rule: number } | undefined;
}

export interface FlowExplanation {
  readonly verdict: 'allow' | 'deny';
  readonly revision: number;
  readonly protocol: Protocol;
  readonly family: Family;
  readonly srcPort: number;
  readonly dstPort: number;
  readonly src: EndpointInfo;
  readonly dst: EndpointInfo;
  readonly egress: SideExplanation;
  readonly ingress: SideExplanation;
}

interface Ep {
  info: EndpointInfo;
  words: Uint32Array;
  /** Pod index, or -1. */
  pod: number;
  /** Identity of the pod, or -1. */
  id: number;
  /** Node index for a node address, or -1. */
  nodeIdx: number;
}

function endpoint(snap: PolicySnapshot, family: Family, words: Uint32Array): Ep {
  const ip = formatAddr(family, words);
  const e = snap.addrs.get(family, words);
  if (e >= 0 && (e & 1) === 0) {
    const pod = e >>> 1;
    const p = snap.pods[pod]!;
    return { info: { ip, kind: 'pod', pod: `${p.namespace}/${p.name}`, node: undefined }, words, pod, id: snap.podIdentity[pod]!, nodeIdx: -1 };
  }
  if (e >= 0) {
    const nodeIdx = e >>> 1;
    return { info: { ip, kind: 'node', pod: undefined, node: snap.nodeNames[nodeIdx] }, words, pod: -1, id: -1, nodeIdx };
  }
  return { info: { ip, kind: 'external', pod: undefined, node: undefined }, words, pod: -1, id: -1, nodeIdx: -1 };
}

/** Explains the flow's verdict under `snap`; same verdict as `decide(snap, flow, ...)`. */
export function explainFlow(snap: PolicySnapshot, flow: FlowKey): FlowExplanation {
  const family = flow.family;
  const src = endpoint(snap, family, flow.src);
  const dst = endpoint(snap, family, flow.dst);
  const protocol = protocolName(flow.proto) ?? 'TCP';
  let egress: SideExplanation;
  let ingress: SideExplanation;
  if (src.pod >= 0 && src.pod === dst.pod) {
    const text = `${src.info.pod} to itself: loopback traffic is always allowed`;
    egress = simpleSide('egress', 'loopback', src.info.pod, text);
    ingress = simpleSide('ingress', 'loopback', dst.info.pod, text);
  } else {
    // Egress of the source pod, matched against the destination.
    if (src.id < 0) {
      egress = simpleSide('egress', 'not-a-pod', undefined, `source ${src.info.ip} is not a pod${src.info.node ? ` (an address of node ${src.info.node})` : ''}: no egress policy applies`);
    } else {
      const g = snap.egressGroupOf[src.id]!;
      egress = g < 0
        ? simpleSide('egress', 'not-isolated', src.info.pod, `${src.info.pod} is not isolated for egress: no policy selects it for egress`)
        : groupSide(snap, snap.groups[g]!, flow, src, dst);
    }
    // Ingress of the destination pod, matched against the source.
    if (dst.id < 0) {
      ingress = simpleSide('ingress', 'not-a-pod', undefined, `destination ${dst.info.ip} is not a pod${dst.info.node ? ` (an address of node ${dst.info.node})` : ''}: no ingress policy applies`);
    } else if (src.nodeIdx >= 0 && src.nodeIdx === snap.podNode[dst.pod]) {
      ingress = simpleSide('ingress', 'node-local', dst.info.pod, `from ${dst.info.pod}'s own node ${src.info.node}: traffic from a pod's node is always allowed`);
    } else {
      const g = snap.ingressGroupOf[dst.id]!;
      ingress = g < 0
        ? simpleSide('ingress', 'not-isolated', dst.info.pod, `${dst.info.pod} is not isolated for ingress: no policy selects it for ingress`)
        : groupSide(snap, snap.groups[g]!, flow, dst, src);
    }
  }
  return {
    verdict: egress.status !== 'denied' && ingress.status !== 'denied' ? 'allow' : 'deny',
    revision: snap.revision,
    protocol,
    family,
    srcPort: flow.srcPort,
    dstPort: flow.dstPort,
    src: src.info,
    dst: dst.info,
    egress,
    ingress,
  };
}

function simpleSide(direction: 'egress' | 'ingress', status: SideStatus, pod: string | undefined, summary: string): SideExplanation {
  return { direction, status, pod, summary, policies: [], allowedBy: undefined };
}

/**
 * An isolated side: every rule of the group checked (decide() stops at the first match; the
 * explanation checks them all, and names the first match as decide() does).
 * `subject` is the side's pod, `other` the endpoint its rules' peers are matched against.
 */
function groupSide(snap: PolicySnapshot, group: RuleGroup, flow: FlowKey, subject: Ep, other: Ep): SideExplanation {
  const direction = group.direction;
  // ipBlocks containing the other endpoint's address, from the same trie decide() walks.
  const marks = new Int32Array(snap.blocks.length);
  if (group.hasIpBlocks) (flow.family === 4 ? snap.trie4 : snap.trie6).lookup(other.words, marks, 1);
  const dstPod = direction === 'egress' ? other.pod : subject.pod;
  const checks = new Map<CompiledRule, RuleCheck>();
  let first: CompiledRule | undefined;
  for (const rule of group.rules) {
    const c = checkRule(snap, rule, flow, dstPod, other, marks);
    checks.set(rule, c);
    if (c.matched && first === undefined) first = rule;
  }
  const policies: PolicyCheck[] = group.policies.map((p) => {
    const rules = group.rules.filter((r) => r.policy === p).map((r) => checks.get(r)!);
    const declared = direction === 'ingress' ? p.spec.ingress.length : p.spec.egress.length;
    const note = !p.spec.valid
      ? 'invalid: enforced failing closed, it isolates and opens nothing'
      : rules.length === 0
        ? declared === 0
          ? `no ${direction} rules: it only isolates`
          : `its ${direction} rules have no effect`
        : undefined;
    return { policy: p.key, valid: p.spec.valid, rules, note };
  });
  const names = group.policies.map((p) => p.key);
  if (first) {
    return {
      direction,
      status: 'allowed',
      pod: subject.info.pod,
      summary: `allowed by policy ${first.policy.key}, ${direction} rule ${first.index}`,
      policies,
      allowedBy: { policy: first.policy.key, rule: first.index },
    };
  }
  return {
    direction,
    status: 'denied',
    pod: subject.info.pod,
    summary: `denied: no rule of policies [${names.join(', ')}] matched`,
    policies,
    allowedBy: undefined,
  };
}

function checkRule(snap: PolicySnapshot, rule: CompiledRule, flow: FlowKey, dstPod: number, other: Ep, marks: Int32Array): RuleCheck {
  const specRule = (rule.direction === 'ingress' ? rule.policy.spec.ingress : rule.policy.spec.egress)[rule.index];
  const portEntries = rule.ports === null ? [] : rule.ports.map((p) => checkPort(snap, p, flow, dstPod));
  const portsMatched = rule.ports === null || portEntries.some((p) => p.matched);
  const peerEntries = rule.peers === null ? [] : rule.peers.map((p, i) => checkPeer(snap, rule, p, i, specRule?.peers[i], other, marks));
  const matchedPeer = peerEntries.find((p) => p.matched)?.index;
  const peersMatched = rule.peers === null || matchedPeer !== undefined;
  const peerWord = rule.direction === 'ingress' ? 'source' : 'destination';
  const why = portsMatched && peersMatched
    ? `matches: ${rule.ports === null ? 'all ports' : 'the port'}, ${rule.peers === null ? `every ${peerWord}` : `peer ${matchedPeer}`}`
    : [!portsMatched ? 'ports do not match' : '', !peersMatched ? `no peer matches the ${peerWord}` : ''].filter((s) => s !== '').join('; ');
  return {
    policy: rule.policy.key,
    direction: rule.direction,
    index: rule.index,
    matched: portsMatched && peersMatched,
    ports: { all: rule.ports === null, matched: portsMatched, entries: portEntries },
    peers: { all: rule.peers === null, matched: peersMatched, matchedPeer, entries: peerEntries },
    why,
  };
}

function checkPort(snap: PolicySnapshot, p: CompiledPort, flow: FlowKey, dstPod: number): PortCheck {
  const proto = protocolName(p.proto) ?? String(p.proto);
  const flowProto = protocolName(flow.proto) ?? String(flow.proto);
  const port = flow.dstPort;
  if (p.nameId >= 0) {
    const name = snap.portNames[p.nameId]!;
    const text = `${proto}/${name}`;
    if (p.proto !== flow.proto) return { text, matched: false, why: `protocol ${flowProto} is not ${proto}` };
    if (dstPod < 0) return { text, matched: false, why: 'the destination is not a pod: a named port matches only pods that declare it' };
    const pod = snap.pods[dstPod]!;
    const data = snap.podPortData;
    const end = snap.podPortOff[dstPod + 1]!;
    let declared: number | undefined;
    for (let k = snap.podPortOff[dstPod]!; k < end; k += 3) {
      if (data[k] === p.nameId && data[k + 1] === p.proto) {
        declared = data[k + 2]!;
        if (declared === port) return { text, matched: true, why: `${pod.namespace}/${pod.name} declares ${name} as ${proto}/${port}` };
      }
    }
    return {
      text,
      matched: false,
      why: declared === undefined ? `${pod.namespace}/${pod.name} declares no ${proto} port named ${name}` : `${pod.namespace}/${pod.name} declares ${name} as ${proto}/${declared}, not ${port}`,
    };
  }
  const text = p.lo === 0 && p.hi === 65535 ? `all ${proto} ports` : p.lo === p.hi ? `${proto}/${p.lo}` : `${proto}/${p.lo}-${p.hi}`;
  if (p.proto !== flow.proto) return { text, matched: false, why: `protocol ${flowProto} is not ${proto}` };
  if (port >= p.lo && port <= p.hi) return { text, matched: true, why: `${flowProto}/${port} is in it` };
  return { text, matched: false, why: `port ${port} is not in it` };
}

function checkPeer(
  snap: PolicySnapshot,
  rule: CompiledRule,
  peer: CompiledPeer,
  index: number,
  spec: PolicyPeer | undefined,
  other: Ep,
  marks: Int32Array,
): PeerCheck {
  const who = other.info.pod ?? other.info.ip;
  if (peer.blockId >= 0) {
    const b = snap.blocks[peer.blockId]!;
    const text = `ipBlock ${b.cidr}${b.except.length > 0 ? ` except [${b.except.join(', ')}]` : ''}`;
    if (marks[peer.blockId] === 1) return { index, text, matched: true, why: `${other.info.ip} is in ${b.cidr}${b.except.length > 0 ? ' and in no except' : ''}` };
    const fam = other.info.ip.includes(':') ? 6 : 4;
    const c = parseCidr(b.cidr);
    if (!c || c.family !== fam || !inCidr(other.words, c.words, c.prefix)) return { index, text, matched: false, why: `${other.info.ip} is not in ${b.cidr}` };
    const ex = b.except.find((e) => {
      const x = parseCidr(e);
      return x !== undefined && x.family === fam && inCidr(other.words, x.words, x.prefix);
    });
    return { index, text, matched: false, why: `${other.info.ip} is in the except ${ex ?? '(an except)'}` };
  }
  const policyNs = rule.policy.spec.namespace;
  const text = spec ? peerText(spec) : `selector peer ${index}`;
  if (other.id >= 0 && snap.sets[peer.slot]!.has(other.id)) return { index, text, matched: true, why: `${who} matches` };
  if (other.id < 0) {
    return { index, text, matched: false, why: `${who} is not a pod${other.info.node ? ` (an address of node ${other.info.node})` : ''}: only ipBlock peers can match it` };
  }
  const ident = snap.identities[other.id]!;
  if (spec === undefined) return { index, text, matched: false, why: `${who} is not selected` };
  const podOk = spec.podSelector === undefined || selectorMatches(spec.podSelector, ident.labels);
  if (!podOk) return { index, text, matched: false, why: `${who}'s labels ${labelsText(ident.labels)} do not match podSelector ${selectorText(spec.podSelector!)}` };
  if (spec.namespaceSelector === undefined) {
    return { index, text, matched: false, why: `${who} is in namespace ${ident.namespace}; a podSelector alone selects pods of the policy's namespace ${policyNs}` };
  }
  return { index, text, matched: false, why: `namespace ${ident.namespace} is not selected by namespaceSelector ${selectorText(spec.namespaceSelector)}` };
}

function inCidr(addr: Uint32Array, net: Uint32Array, prefix: number): boolean {
  for (let i = 0; i < prefix; i++) if (addrBit(addr, i) !== addrBit(net, i)) return false;
  return true;
}

function peerText(p: PolicyPeer): string {
  if (p.ipBlock) return `ipBlock ${p.ipBlock.cidr}${p.ipBlock.except.length > 0 ? ` except [${p.ipBlock.except.join(', ')}]` : ''}`;
  const parts: string[] = [];
  if (p.namespaceSelector) parts.push(`namespaceSelector ${selectorText(p.namespaceSelector)}`);
  if (p.podSelector) parts.push(`podSelector ${selectorText(p.podSelector)}`);
  return parts.join(' + ');
}

export function selectorText(s: LabelSelector): string {
  const parts = Object.keys(s.matchLabels).sort().map((k) => `${k}=${s.matchLabels[k]}`);
  for (const e of s.matchExpressions) {
    if (e.operator === 'Exists') parts.push(e.key);
    else if (e.operator === 'DoesNotExist') parts.push(`!${e.key}`);
    else parts.push(`${e.key} ${e.operator === 'In' ? 'in' : 'notin'} (${e.values.join(',')})`);
  }
  return `{${parts.join(', ')}}`;
}

function labelsText(l: Readonly<Record<string, string>>): string {
  return `{${Object.keys(l).sort().map((k) => `${k}=${l[k]}`).join(', ')}}`;
}

// ---------------------------------------------------------------------------------------------
// Text

export interface FormatOptions {
  /** Labels of the endpoints as the user named them (`ns/pod` or an address). */
  readonly from?: string;
  readonly to?: string;
  /** The agent's audit verdict for a denied flow, when asked of a running agent. */
  readonly audit?: boolean;
}

/** A person's reading of an explanation: the verdict, then each side with its policies and rules. */
export function formatExplanation(x: FlowExplanation, o: FormatOptions = {}): string {
  const name = (e: EndpointInfo, given: string | undefined): string => {
    const label = given ?? e.pod ?? (e.node ? `node ${e.node}` : e.ip);
    return label === e.ip ? e.ip : `${label} (${e.ip})`;
  };
  const out: string[] = [];
  const audit = x.verdict === 'deny' && o.audit === true ? '  (audit mode: let through and logged)' : '';
  out.push(`${x.verdict}  ${name(x.src, o.from)} -> ${name(x.dst, o.to)} ${x.protocol}/${x.dstPort}  [revision ${x.revision}]${audit}`);
  for (const side of [x.egress, x.ingress]) {
    const whose = side.pod ? ` of ${side.pod}` : '';
    out.push(`${side.direction}${whose}: ${side.summary}`);
    if (side.policies.length > 0) out.push(`  selected for ${side.direction} by ${side.policies.length === 1 ? 'policy' : `${side.policies.length} policies`}: ${side.policies.map((p) => p.policy).join(', ')}`);
    for (const p of side.policies) {
      out.push(`  policy ${p.policy}${p.note ? `: ${p.note}` : ''}`);
      for (const r of p.rules) {
        const peerKey = r.direction === 'ingress' ? 'from' : 'to';
        out.push(`    ${r.direction} rule ${r.index}: ${r.matched ? 'MATCHES' : 'no match'}${r.matched ? '' : ` (${r.why})`}${side.allowedBy?.policy === r.policy && side.allowedBy.rule === r.index ? '  <- allows the flow' : ''}`);
        if (r.ports.all) out.push('      ports: all ports and protocols');
        else for (const p2 of r.ports.entries) out.push(`      port ${p2.text}: ${p2.matched ? 'matches' : 'no'}: ${p2.why}`);
        if (r.peers.all) out.push(`      ${peerKey}: every peer (external addresses included)`);
        else for (const q of r.peers.entries) out.push(`      ${peerKey}[${q.index}] ${q.text}: ${q.matched ? 'matches' : 'no'}: ${q.why}`);
      }
    }
  }
  return out.join('\n');
}
