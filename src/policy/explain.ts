// Turns a Decision into words and JSON. Off the hot path: called by the CLI, logs and tests.
import { parseAddrInto, protocolNumber } from './addr.js';
import { Decision, FlowKey, Side, decide } from './decide.js';
import type { PolicySnapshot } from './snapshot.js';
import type { Protocol } from '../model/types.js';

export type SideStatus = 'not-a-pod' | 'not-isolated' | 'allowed' | 'denied' | 'node-local' | 'loopback';

export interface SideReport {
  readonly status: SideStatus;
  /** The pod this side is about (source for egress, destination for ingress). */
  readonly pod: string | undefined;
  /** For `allowed`: the policy and rule index that allowed it. */
  readonly policy: string | undefined;
  readonly rule: number | undefined;
  /** For `allowed` and `denied`: every policy that isolates this side. */
  readonly policies: readonly string[];
  readonly text: string;
}

export interface DecisionReport {
  readonly verdict: 'allow' | 'deny';
  readonly revision: number;
  readonly egress: SideReport;
  readonly ingress: SideReport;
}

const STATUS: Record<Side, SideStatus> = {
  [Side.NotAPod]: 'not-a-pod',
  [Side.NotIsolated]: 'not-isolated',
  [Side.Allowed]: 'allowed',
  [Side.Denied]: 'denied',
  [Side.NodeLocal]: 'node-local',
  [Side.Loopback]: 'loopback',
};

function podName(snap: PolicySnapshot, idx: number): string | undefined {
  const p = idx >= 0 ? snap.pods[idx] : undefined;
  return p ? `${p.namespace}/${p.name}` : undefined;
}

function sideReport(snap: PolicySnapshot, d: Decision, dir: 'egress' | 'ingress'): SideReport {
  const side = dir === 'egress' ? d.egress : d.ingress;
  const rule = dir === 'egress' ? d.egressRule : d.ingressRule;
  const group = dir === 'egress' ? d.egressGroup : d.ingressGroup;
  const pod = podName(snap, dir === 'egress' ? d.srcPod : d.dstPod);
  const policies = group ? group.policies.map((p) => p.key) : [];
  const who = dir === 'egress' ? 'source' : 'destination';
  let text: string;
  switch (side) {
    case Side.NotAPod:
      text = `${who} is not a pod: no ${dir} policy applies`;
      break;
    case Side.NotIsolated:
      text = `${pod} is not isolated for ${dir}: no policy selects it`;
      break;
    case Side.Allowed:
      text = `allowed by policy ${rule!.policy.key}, ${dir} rule ${rule!.index}`;
      break;
    case Side.Denied:
      text = `denied: no rule of policies [${policies.join(', ')}] matched`;
      break;
    case Side.NodeLocal:
      text = `from ${pod}'s own node: always allowed`;
      break;
    case Side.Loopback:
      text = `${pod} to itself: loopback traffic is always allowed`;
      break;
  }
  return {
    status: STATUS[side],
    pod,
    policy: side === Side.Allowed ? rule!.policy.key : undefined,
    rule: side === Side.Allowed ? rule!.index : undefined,
    policies,
    text,
  };
}

export function reportDecision(snap: PolicySnapshot, d: Decision): DecisionReport {
  return {
    verdict: d.allowed ? 'allow' : 'deny',
    revision: d.revision,
    egress: sideReport(snap, d, 'egress'),
    ingress: sideReport(snap, d, 'ingress'),
  };
}

/** Fills a FlowKey from text; returns an error message instead when it cannot. */
export function flowFromText(
  flow: FlowKey,
  protocol: Protocol,
  srcIp: string,
  dstIp: string,
  dstPort: number,
  srcPort = 0,
): string | undefined {
  const fs = parseAddrInto(srcIp, flow.src);
  const fd = parseAddrInto(dstIp, flow.dst);
  if (fs === 0) return `not an IP address: ${srcIp}`;
  if (fd === 0) return `not an IP address: ${dstIp}`;
  if (fs !== fd) return `source ${srcIp} and destination ${dstIp} are of different address families`;
  flow.family = fs;
  flow.proto = protocolNumber(protocol);
  flow.srcPort = srcPort;
  flow.dstPort = dstPort;
  return undefined;
}

/** Convenience for tests and the CLI: decide a flow given as text. */
export function decideText(
  snap: PolicySnapshot,
  protocol: Protocol,
  srcIp: string,
  dstIp: string,
  dstPort: number,
): Decision {
  const flow = new FlowKey();
  const err = flowFromText(flow, protocol, srcIp, dstIp, dstPort);
  if (err) throw new Error(err);
  return decide(snap, flow, new Decision());
}
