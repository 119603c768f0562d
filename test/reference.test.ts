import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { describe, expect, it } from 'vitest';

import type { ClusterState, LabelSelector, Labels, PolicyPeer, PolicySpec } from '../src/model/types.js';
import { NS_NAME_LABEL, PROTOCOLS } from '../src/model/types.js';
import { referenceDecide, selectorMatches, type RefFlow, type RefResult } from '../src/policy/reference.js';
import { arbCluster, arbClusterWithFlows, arbFlow } from './support/arbitraries.js';
import { expr, flow, makeCluster, makeHostPod, makeInvalidPolicy, makeNode, makeNs, makePod, makePolicy, sel, type PolicyInput } from './support/builders.js';

import { IP, cases, cluster, type Expect } from './support/cases.js';

function pick(result: RefResult, expected: Expect): Expect {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(expected)) out[k] = (result as unknown as Record<string, unknown>)[k];
  return out as Expect;
}

/** Invariants that hold for every result. */
function checkInvariants(r: RefResult): void {
  expect(r.allowed).toBe(r.egress !== 'denied' && r.ingress !== 'denied');
  expect(r.egressBy !== undefined).toBe(r.egress === 'allowed');
  expect(r.ingressBy !== undefined).toBe(r.ingress === 'allowed');
  if (r.egressBy) expect(r.egressBy.length).toBeGreaterThan(0);
  if (r.ingressBy) expect(r.ingressBy.length).toBeGreaterThan(0);
}

describe('referenceDecide: table', () => {
  it.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    for (const check of c.checks) {
      const r = referenceDecide(c.state, check.flow, check.opts);
      expect(pick(r, check.expect), `${check.flow.srcIp} -> ${check.flow.dstIp}:${check.flow.dstPort}/${check.flow.protocol}`).toEqual(check.expect);
      checkInvariants(r);
    }
  });

  it('rejects a flow address that is not an IP', () => {
    expect(() => referenceDecide(cluster(), flow('web-1', IP.web, 80))).toThrow(/not an IP/);
  });
});

describe('selectorMatches', () => {
  const labels: Labels = { app: 'web', tier: 'x' };
  const table: [string, LabelSelector, boolean][] = [
    ['empty selector', sel(), true],
    ['matchLabels equal', sel({ app: 'web' }), true],
    ['matchLabels all must match', sel({ app: 'web', tier: 'y' }), false],
    ['matchLabels missing key', sel({ env: 'prod' }), false],
    ['In', sel({ matchExpressions: [expr('app', 'In', 'db', 'web')] }), true],
    ['In, value not listed', sel({ matchExpressions: [expr('app', 'In', 'db')] }), false],
    ['In, key absent', sel({ matchExpressions: [expr('env', 'In', 'prod')] }), false],
    ['NotIn, value not listed', sel({ matchExpressions: [expr('app', 'NotIn', 'db')] }), true],
    ['NotIn, value listed', sel({ matchExpressions: [expr('app', 'NotIn', 'web')] }), false],
    ['NotIn, key absent', sel({ matchExpressions: [expr('env', 'NotIn', 'prod')] }), true],
    ['Exists', sel({ matchExpressions: [expr('tier', 'Exists')] }), true],
    ['Exists, key absent', sel({ matchExpressions: [expr('env', 'Exists')] }), false],
    ['DoesNotExist', sel({ matchExpressions: [expr('env', 'DoesNotExist')] }), true],
    ['DoesNotExist, key present', sel({ matchExpressions: [expr('app', 'DoesNotExist')] }), false],
    ['matchLabels AND matchExpressions', sel({ matchLabels: { app: 'web' }, matchExpressions: [expr('tier', 'In', 'y')] }), false],
    ['inherited keys are not labels', sel({ matchExpressions: [expr('toString', 'Exists')] }), false],
  ];
  it.each(table)('%s', (_name, selector, expected) => {
    expect(selectorMatches(selector, labels)).toBe(expected);
  });
});

// ---------------------------------------------------------------------------------------------
// Properties: the generators honour the model contract, and the reference is self-consistent.

function isCanonicalIp(ip: string): boolean {
  return ipaddr.isValid(ip) && ipaddr.parse(ip).toString() === ip;
}

function isCanonicalCidr(cidr: string): boolean {
  if (!ipaddr.isValidCIDR(cidr)) return false;
  const [addr, bits] = ipaddr.parseCIDR(cidr);
  const net = addr.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(cidr) : ipaddr.IPv6.networkAddressFromCIDR(cidr);
  return `${net.toString()}/${bits}` === cidr;
}

function strictlyInside(inner: string, outer: string): boolean {
  const [ia, ib] = ipaddr.parseCIDR(inner);
  const [oa, ob] = ipaddr.parseCIDR(outer);
  return ia.kind() === oa.kind() && ib > ob && ia.match(oa, ob);
}

function contractViolations(state: ClusterState): string[] {
  const bad: string[] = [];
  const nsNames = new Set(state.namespaces.map((n) => n.name));
  for (const ns of state.namespaces) if (ns.labels[NS_NAME_LABEL] !== ns.name) bad.push(`ns ${ns.name}: name label`);
  const seen = new Map<string, string>();
  const podKeys = new Set<string>();
  for (const p of state.pods) {
    const key = `${p.namespace}/${p.name}`;
    if (podKeys.has(key)) bad.push(`pod ${key}: duplicate`);
    podKeys.add(key);
    if (!nsNames.has(p.namespace)) bad.push(`pod ${key}: unknown namespace`);
    const fams = p.ips.map((ip) => (ipaddr.isValid(ip) ? ipaddr.parse(ip).kind() : 'bad'));
    if (new Set(fams).size !== fams.length) bad.push(`pod ${key}: two ips of one family`);
    for (const ip of p.ips) {
      if (!isCanonicalIp(ip)) bad.push(`pod ${key}: ip ${ip}`);
      if (!p.hostNetwork) {
        if (seen.has(ip)) bad.push(`pod ${key}: ip ${ip} also on ${seen.get(ip)}`);
        seen.set(ip, key);
      }
    }
    if (p.hostNetwork) {
      const node = state.nodes.find((n) => n.name === p.node);
      if (!node || !p.ips.every((ip) => node.addresses.includes(ip))) bad.push(`host pod ${key}: ips not its node's`);
    }
    const names = new Set<string>();
    for (const np of p.namedPorts) {
      if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(np.name) || np.name.length > 15 || !/[a-z]/.test(np.name)) bad.push(`pod ${key}: port name ${np.name}`);
      if (names.has(np.name)) bad.push(`pod ${key}: duplicate port name`);
      names.add(np.name);
      if (!PROTOCOLS.includes(np.protocol) || np.port < 1 || np.port > 65535) bad.push(`pod ${key}: named port`);
    }
  }
  for (const n of state.nodes) for (const a of n.addresses) {
    if (!isCanonicalIp(a)) bad.push(`node ${n.name}: ${a}`);
    if (seen.has(a)) bad.push(`node ${n.name}: ${a} is also a pod ip`);
  }
  const polKeys = new Set<string>();
  for (const pol of state.policies) {
    const key = `${pol.namespace}/${pol.name}`;
    if (polKeys.has(key)) bad.push(`policy ${key}: duplicate`);
    polKeys.add(key);
    if (pol.policyTypes.length === 0) bad.push(`policy ${key}: no policyTypes`);
    if (!pol.valid && (pol.ingress.length > 0 || pol.egress.length > 0)) bad.push(`policy ${key}: invalid with rules`);
    if (pol.valid && pol.podSelector === undefined) bad.push(`policy ${key}: valid without podSelector`);
    const sels: LabelSelector[] = pol.podSelector ? [pol.podSelector] : [];
    for (const r of [...pol.ingress, ...pol.egress]) {
      for (const peer of r.peers) {
        if (peer.ipBlock) {
          if (peer.podSelector || peer.namespaceSelector) bad.push(`policy ${key}: ipBlock with selector`);
          if (!isCanonicalCidr(peer.ipBlock.cidr)) bad.push(`policy ${key}: cidr ${peer.ipBlock.cidr}`);
          for (const ex of peer.ipBlock.except) {
            if (!isCanonicalCidr(ex) || !strictlyInside(ex, peer.ipBlock.cidr)) bad.push(`policy ${key}: except ${ex} of ${peer.ipBlock.cidr}`);
          }
        } else if (!peer.podSelector && !peer.namespaceSelector) bad.push(`policy ${key}: empty peer`);
        for (const s of [peer.podSelector, peer.namespaceSelector]) if (s) sels.push(s);
      }
      for (const p of r.ports) {
        if (!PROTOCOLS.includes(p.protocol)) bad.push(`policy ${key}: protocol`);
        if (p.endPort !== undefined && (typeof p.port !== 'number' || p.endPort < p.port || p.endPort > 65535)) bad.push(`policy ${key}: endPort`);
        if (typeof p.port === 'number' && (p.port < 1 || p.port > 65535)) bad.push(`policy ${key}: port`);
        if (typeof p.port === 'string' && !/^[a-z0-9-]{1,15}$/.test(p.port)) bad.push(`policy ${key}: port name`);
      }
    }
    for (const s of sels) for (const req of s.matchExpressions) {
      const needsValues = req.operator === 'In' || req.operator === 'NotIn';
      if (needsValues !== req.values.length > 0) bad.push(`policy ${key}: requirement ${req.key} ${req.operator}`);
    }
  }
  return bad;
}

describe('arbitraries', () => {
  it('generate clusters that honour the model contract', () => {
    fc.assert(fc.property(arbCluster(), (state) => {
      expect(contractViolations(state)).toEqual([]);
    }), { numRuns: 300 });
  });

  it('generate flows with both addresses of one family', () => {
    fc.assert(fc.property(arbClusterWithFlows(5), ({ flows }) => {
      for (const f of flows) {
        expect(ipaddr.parse(f.srcIp).kind()).toBe(ipaddr.parse(f.dstIp).kind());
        expect(f.dstPort).toBeGreaterThanOrEqual(1);
        expect(f.dstPort).toBeLessThanOrEqual(65535);
      }
    }), { numRuns: 200 });
  });

  it('hit every outcome of each side', () => {
    const seen = new Set<string>();
    fc.assert(fc.property(arbClusterWithFlows(10), ({ cluster: state, flows }) => {
      for (const f of flows) {
        const r = referenceDecide(state, f);
        seen.add(`egress:${r.egress}`).add(`ingress:${r.ingress}`).add(`allowed:${r.allowed}`);
      }
    }), { numRuns: 300, seed: 42 });
    for (const s of ['not-a-pod', 'not-isolated', 'allowed', 'denied']) {
      expect(seen).toContain(`egress:${s}`);
      expect(seen).toContain(`ingress:${s}`);
    }
    expect(seen).toContain('ingress:node-local');
    expect(seen).toContain('allowed:true');
    expect(seen).toContain('allowed:false');
  });
});

describe('referenceDecide: properties', () => {
  it('is self-consistent on random clusters', () => {
    fc.assert(fc.property(arbClusterWithFlows(8), ({ cluster: state, flows }) => {
      for (const f of flows) checkInvariants(referenceDecide(state, f));
    }), { numRuns: 300 });
  });

  it('without policies everything is allowed', () => {
    fc.assert(fc.property(arbClusterWithFlows(8), ({ cluster: state, flows }) => {
      const open = { ...state, policies: [] };
      for (const f of flows) expect(referenceDecide(open, f).allowed).toBe(true);
    }), { numRuns: 200 });
  });

  it('adding an allow-all policy in every namespace allows everything', () => {
    fc.assert(fc.property(arbClusterWithFlows(8), ({ cluster: state, flows }) => {
      const allowAll = state.namespaces.map((n) =>
        makePolicy(`${n.name}/zz-allow-all`, { policyTypes: ['Ingress', 'Egress'], ingress: [{}], egress: [{}] }),
      );
      const open = { ...state, policies: [...state.policies, ...allowAll] };
      for (const f of flows) expect(referenceDecide(open, f).allowed).toBe(true);
    }), { numRuns: 200 });
  });

  it('is insensitive to the textual form of flow addresses', () => {
    fc.assert(fc.property(arbCluster().chain((c) => fc.tuple(fc.constant(c), arbFlow(c))), ([state, f]) => {
      const long = { ...f, srcIp: ipaddr.parse(f.srcIp).toNormalizedString(), dstIp: ipaddr.parse(f.dstIp).toNormalizedString() };
      expect(referenceDecide(state, long)).toEqual(referenceDecide(state, f));
    }), { numRuns: 200 });
  });

  it('selector peers never match a host-network pod or an external address', () => {
    fc.assert(fc.property(arbClusterWithFlows(8), ({ cluster: state, flows }) => {
      const anyPod: PolicyPeer = { podSelector: sel(), namespaceSelector: sel(), ipBlock: undefined };
      const policies = state.namespaces.map((n) => makePolicy(`${n.name}/only-pods`, { ingress: [{ from: [anyPod] }] }));
      const closed = { ...state, policies };
      for (const f of flows) {
        const r = referenceDecide(closed, f);
        if (r.ingress === 'not-a-pod' || r.ingress === 'node-local' || r.ingress === 'loopback') continue;
        const srcIsPod = state.pods.some((p) => !p.hostNetwork && p.ips.includes(f.srcIp));
        expect(r.ingress).toBe(srcIsPod ? 'allowed' : 'denied');
      }
    }), { numRuns: 200 });
  });
});
