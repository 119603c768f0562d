// decide(snapshot, flow, out): the per-flow hot path. It allocates nothing: the caller owns the
// FlowKey and the Decision and reuses them; everything it reads was precomputed by compile().
import type { Family } from './addr.js';
import type { CompiledRule, PolicySnapshot, RuleGroup } from './snapshot.js';

/** What one direction (the source's egress, the destination's ingress) says about a flow. */
export const Side = {
  /** The endpoint is not a pod (external, node, host-network): no policy of its own applies. */
  NotAPod: 0,
  /** A pod no policy selects for this direction: "not isolated", everything allowed. */
  NotIsolated: 1,
  /** Isolated, and a rule allows it (Decision.*Rule names which). */
  Allowed: 2,
  /** Isolated, and no rule of the selecting policies matched (Decision.*Group lists them). */
  Denied: 3,
  /** Traffic from the destination pod's own node: always allowed. */
  NodeLocal: 4,
  /**
   * A pod's traffic to its own address never leaves the pod, so no data plane sees it; the
   * upstream e2e suite likewise expects it allowed whatever the policies ("loopback logic
   * follows no policy", AllowLoopback in test/e2e/network/netpol).
   */
  Loopback: 5,
} as const;
export type Side = (typeof Side)[keyof typeof Side];

/** A flow's 5-tuple, numeric. Reused by callers; fill it in place. */
export class FlowKey {
  proto = 6;
  family: Family = 4;
  readonly src = new Uint32Array(4);
  readonly dst = new Uint32Array(4);
  srcPort = 0;
  dstPort = 0;
}

export class Decision {
  allowed = false;
  revision = 0;
  egress: Side = Side.NotAPod;
  ingress: Side = Side.NotAPod;
  /** The rule that allowed each side, when that side is Allowed. */
  egressRule: CompiledRule | null = null;
  ingressRule: CompiledRule | null = null;
  /** The policies that isolate each side, when it is Allowed or Denied. */
  egressGroup: RuleGroup | null = null;
  ingressGroup: RuleGroup | null = null;
  /** Pod index of the source / destination endpoint, or -1. */
  srcPod = -1;
  dstPod = -1;
}

const NO_ENDPOINT = -1;

/**
 * Decides a flow: allowed iff the source's egress AND the destination's ingress allow it
 * ("both the egress policy on the source pod and the ingress policy on the destination pod
 * need to allow the connection").
 */
export function decide(snap: PolicySnapshot, flow: FlowKey, out: Decision): Decision {
  const stamp = ++snap.stamp;
  const srcEp = snap.addrs.get(flow.family, flow.src);
  const dstEp = snap.addrs.get(flow.family, flow.dst);
  const srcPod = srcEp >= 0 && (srcEp & 1) === 0 ? srcEp >>> 1 : NO_ENDPOINT;
  const dstPod = dstEp >= 0 && (dstEp & 1) === 0 ? dstEp >>> 1 : NO_ENDPOINT;
  out.revision = snap.revision;
  out.srcPod = srcPod;
  out.dstPod = dstPod;
  out.egressRule = null;
  out.ingressRule = null;
  out.egressGroup = null;
  out.ingressGroup = null;

  if (srcPod >= 0 && srcPod === dstPod) {
    out.egress = Side.Loopback;
    out.ingress = Side.Loopback;
    out.allowed = true;
    return out;
  }

  // Egress of the source pod, matched against the destination.
  const srcId = srcPod >= 0 ? snap.podIdentity[srcPod]! : -1;
  const dstId = dstPod >= 0 ? snap.podIdentity[dstPod]! : -1;
  if (srcId < 0) {
    out.egress = Side.NotAPod;
  } else {
    const g = snap.egressGroupOf[srcId]!;
    if (g < 0) {
      out.egress = Side.NotIsolated;
    } else {
      const group = snap.groups[g]!;
      out.egressGroup = group;
      if (group.hasIpBlocks) (flow.family === 4 ? snap.trie4 : snap.trie6).lookup(flow.dst, snap.dstMarks, stamp);
      const rule = matchGroup(snap, group, flow, dstPod, dstId, snap.dstMarks, stamp);
      out.egressRule = rule;
      out.egress = rule !== null ? Side.Allowed : Side.Denied;
    }
  }

  // Ingress of the destination pod, matched against the source.
  if (dstId < 0) {
    out.ingress = Side.NotAPod;
  } else if (srcEp >= 0 && (srcEp & 1) === 1 && srcEp >>> 1 === snap.podNode[dstPod]) {
    // "Traffic from the node itself to its pods is always allowed."
    out.ingress = Side.NodeLocal;
  } else {
    const g = snap.ingressGroupOf[dstId]!;
    if (g < 0) {
      out.ingress = Side.NotIsolated;
    } else {
      const group = snap.groups[g]!;
      out.ingressGroup = group;
      if (group.hasIpBlocks) (flow.family === 4 ? snap.trie4 : snap.trie6).lookup(flow.src, snap.srcMarks, stamp);
      const rule = matchGroup(snap, group, flow, dstPod, srcId, snap.srcMarks, stamp);
      out.ingressRule = rule;
      out.ingress = rule !== null ? Side.Allowed : Side.Denied;
    }
  }

  out.allowed = out.egress !== Side.Denied && out.ingress !== Side.Denied;
  return out;
}

/**
 * The first rule of the group whose ports match the flow and whose peers match the other
 * endpoint (its identity `peerId`, -1 if not a pod; its address via the stamped `marks`).
 */
function matchGroup(
  snap: PolicySnapshot,
  group: RuleGroup,
  flow: FlowKey,
  dstPod: number,
  peerId: number,
  marks: Int32Array,
  stamp: number,
): CompiledRule | null {
  const rules = group.rules;
  for (let r = 0; r < rules.length; r++) {
    const rule = rules[r]!;
    if (rule.ports !== null && !portsMatch(snap, rule, flow, dstPod)) continue;
    const peers = rule.peers;
    if (peers === null) return rule;
    for (let i = 0; i < peers.length; i++) {
      const peer = peers[i]!;
      if (peer.blockId >= 0) {
        if (marks[peer.blockId] === stamp) return rule;
      } else if (peerId >= 0 && snap.sets[peer.slot]!.has(peerId)) {
        return rule;
      }
    }
  }
  return null;
}

/**
 * Ports are always the destination's: a named port "will be resolved on the destination pod's
 * container ports"; it matches only a pod that declares that name with the flow's protocol.
 */
function portsMatch(snap: PolicySnapshot, rule: CompiledRule, flow: FlowKey, dstPod: number): boolean {
  const ports = rule.ports!;
  const proto = flow.proto;
  const port = flow.dstPort;
  for (let i = 0; i < ports.length; i++) {
    const p = ports[i]!;
    if (p.proto !== proto) continue;
    if (p.nameId < 0) {
      if (port >= p.lo && port <= p.hi) return true;
    } else if (dstPod >= 0) {
      const data = snap.podPortData;
      const end = snap.podPortOff[dstPod + 1]!;
      for (let k = snap.podPortOff[dstPod]!; k < end; k += 3) {
        if (data[k] === p.nameId && data[k + 1] === proto && data[k + 2] === port) return true;
      }
    }
  }
  return false;
}
