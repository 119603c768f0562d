// fast-check generators for property tests: small, valid ClusterState values and flows,
// biased towards interesting cases (selectors that half-match, ipBlocks around pod addresses,
// named ports, host-network pods, node addresses, fail-closed invalid policies).
//
// Every value satisfies the model contract of src/model/types.ts:
// - canonical addresses (ipaddr.js `toString()`), at most one per family per pod, pod IPs unique
//   (host-network pods share their node's address, as they do in a real cluster);
// - canonical CIDRs (host bits cleared); `except` entries strictly inside their cidr, same family;
// - `endPort` only with a numeric port and >= port; named ports are valid IANA_SVC_NAMEs;
// - `valid: false` policies have no rules (podSelector sometimes undefined);
// - namespaces carry the automatic `kubernetes.io/metadata.name` label.
//
// Address plan (all inside benchmarking ranges):
//   pods      198.18.{0,1,2}.{1..40}      2001:2:0:{0,2,3}::{1..40} (hex)
//   nodes     198.18.200.{1,2}             2001:2:0:ff::{1,2}
//   external  198.19.0.0/16                2001:2:0:1::/64

import fc from 'fast-check';
import ipaddr from 'ipaddr.js';

import {
  NS_NAME_LABEL,
  type ClusterState,
  type IpBlock,
  type LabelSelector,
  type Labels,
  type NamedPort,
  type NamespaceInfo,
  type NodeInfo,
  type PodInfo,
  type PolicyPeer,
  type PolicyPort,
  type PolicyRule,
  type PolicySpec,
  type PolicyType,
  type Protocol,
  type SelectorRequirement,
} from '../../src/model/types.js';
import type { RefFlow } from '../../src/policy/reference.js';

// ---------------------------------------------------------------------------------------------
// Vocabularies

export const NAMESPACE_NAMES = ['default', 'prod', 'dev', 'kube-system'] as const;
export const NAMESPACE_LABEL_VOCAB: Readonly<Record<string, readonly string[]>> = { team: ['a', 'b', 'c'], env: ['a', 'b', 'c'] };
export const POD_LABEL_VOCAB: Readonly<Record<string, readonly string[]>> = { app: ['web', 'db', 'api'], tier: ['x', 'y'] };
export const PORT_NAMES = ['http', 'dns', 'metrics'] as const;
export const COMMON_PORTS = [53, 80, 8080, 9090] as const;
export const FLOW_PORTS = [53, 80, 443, 8080, 9090] as const;

export const NODES: readonly NodeInfo[] = [
  { name: 'n1', addresses: ['198.18.200.1', '2001:2:0:ff::1'] },
  { name: 'n2', addresses: ['198.18.200.2', '2001:2:0:ff::2'] },
];
/** A small pool of external addresses, so that ipBlock `except` entries can hit them. */
export const EXTERNAL_V4 = ['198.19.0.1', '198.19.0.2', '198.19.1.1', '198.19.255.254'] as const;
export const EXTERNAL_V6 = ['2001:2:0:1::1', '2001:2:0:1::2', '2001:2:0:1::abcd'] as const;

const V4_CIDRS = ['198.18.0.0/15', '198.18.0.0/16', '198.18.0.0/24', '198.18.1.0/24', '198.18.0.0/23', '198.19.0.0/16', '198.18.200.0/24', '0.0.0.0/0'];
const V6_CIDRS = ['2001:2::/48', '2001:2::/64', '2001:2::/47', '2001:2:0:2::/63', '2001:2:0:1::/64', '2001:2:0:ff::/64', '::/0'];

type Family = 'ipv4' | 'ipv6';

// ---------------------------------------------------------------------------------------------
// Small helpers

function weighted<T>(...entries: [number, fc.Arbitrary<T>][]): fc.Arbitrary<T> {
  return fc.oneof(...entries.filter(([w]) => w > 0).map(([weight, arbitrary]) => ({ weight, arbitrary })));
}

export const arbProtocol: fc.Arbitrary<Protocol> = weighted<Protocol>([3, fc.constant('TCP')], [2, fc.constant('UDP')], [1, fc.constant('SCTP')]);

function familyOf(ip: string): Family {
  return ipaddr.parse(ip).kind();
}

function bitsOf(f: Family): number {
  return f === 'ipv4' ? 32 : 128;
}

/** Canonical network `addr/prefix` for the given bytes, host bits cleared. */
function networkOf(bytes: readonly number[], prefix: number): string {
  const out = bytes.map((b, i) => {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    return keep === 0 ? 0 : b & ((0xff << (8 - keep)) & 0xff);
  });
  return `${ipaddr.fromByteArray(out).toString()}/${prefix}`;
}

function inCidr(ip: string, cidr: string): boolean {
  const a = ipaddr.parse(ip);
  const [net, bits] = ipaddr.parseCIDR(cidr);
  return a.kind() === net.kind() && a.match(net, bits);
}

// ---------------------------------------------------------------------------------------------
// Labels and selectors

export function arbLabels(vocab: Readonly<Record<string, readonly string[]>>): fc.Arbitrary<Labels> {
  const model: Record<string, fc.Arbitrary<string>> = {};
  for (const [k, vs] of Object.entries(vocab)) model[k] = fc.constantFrom(...vs);
  return fc.record(model, { requiredKeys: [] }).map((r) => {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(r)) if (typeof v === 'string') out[k] = v;
    return out;
  });
}

function arbRequirement(vocab: Readonly<Record<string, readonly string[]>>): fc.Arbitrary<SelectorRequirement> {
  // 'zone' is never set on any object: Exists never matches it, DoesNotExist/NotIn always do.
  const keys = [...Object.keys(vocab), 'zone'];
  return fc
    .tuple(fc.constantFrom(...keys), fc.constantFrom<SelectorRequirement['operator']>('In', 'NotIn', 'Exists', 'DoesNotExist'))
    .chain(([key, operator]) => {
      if (operator === 'Exists' || operator === 'DoesNotExist') return fc.constant<SelectorRequirement>({ key, operator, values: [] });
      const values = [...(vocab[key] ?? []), 'other'];
      return fc
        .uniqueArray(fc.constantFrom(...values), { minLength: 1, maxLength: 2 })
        .map((vs): SelectorRequirement => ({ key, operator, values: vs }));
    });
}

/** A valid LabelSelector over `vocab`: `{}` often, matchLabels, matchExpressions (all operators), or both. */
export function arbSelector(vocab: Readonly<Record<string, readonly string[]>>): fc.Arbitrary<LabelSelector> {
  const empty = fc.constant<LabelSelector>({ matchLabels: {}, matchExpressions: [] });
  const labelsOnly = arbLabels(vocab).map((matchLabels): LabelSelector => ({ matchLabels, matchExpressions: [] }));
  const exprs = fc
    .tuple(arbLabels(vocab), fc.array(arbRequirement(vocab), { minLength: 1, maxLength: 2 }))
    .map(([matchLabels, matchExpressions]): LabelSelector => ({ matchLabels, matchExpressions }));
  return weighted([4, empty], [3, labelsOnly], [3, exprs]);
}

export const arbPodSelector = arbSelector(POD_LABEL_VOCAB);
export const arbNamespaceSelector = arbSelector({ ...NAMESPACE_LABEL_VOCAB, [NS_NAME_LABEL]: [...NAMESPACE_NAMES] });

// ---------------------------------------------------------------------------------------------
// Namespaces and pods

const arbNamespaces: fc.Arbitrary<NamespaceInfo[]> = fc
  .uniqueArray(fc.record({ name: fc.constantFrom(...NAMESPACE_NAMES), labels: arbLabels(NAMESPACE_LABEL_VOCAB) }), {
    selector: (n) => n.name,
    minLength: 1,
    maxLength: 4,
  })
  .map((list) => list.map((n): NamespaceInfo => ({ name: n.name, labels: { ...n.labels, [NS_NAME_LABEL]: n.name } })));

const arbNamedPorts: fc.Arbitrary<NamedPort[]> = weighted(
  [1, fc.constant<NamedPort[]>([])],
  [2, fc.uniqueArray(
    fc.record({ name: fc.constantFrom(...PORT_NAMES), port: fc.constantFrom(...COMMON_PORTS), protocol: arbProtocol }),
    { selector: (p) => p.name, minLength: 1, maxLength: 3 },
  )],
);

const arbNode: fc.Arbitrary<string | undefined> = fc.constantFrom<string | undefined>('n1', 'n2', undefined);

interface RawPod {
  namespace: string;
  /** [subnet 0..2, host 1..40]: unique per pod, drives both addresses. */
  slot: [number, number];
  v6: boolean;
  labels: Labels;
  namedPorts: NamedPort[];
  node: string | undefined;
}

function arbRawPod(nsNames: readonly string[]): fc.Arbitrary<RawPod> {
  return fc.record({
    namespace: fc.constantFrom(...nsNames),
    slot: fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 1, max: 40 })),
    v6: fc.integer({ min: 0, max: 3 }).map((x) => x > 0),
    labels: arbLabels(POD_LABEL_VOCAB),
    namedPorts: arbNamedPorts,
    node: arbNode,
  });
}

function podFromRaw(raw: RawPod, index: number, ipv6: boolean): PodInfo {
  const [net, host] = raw.slot;
  const ips = [ipaddr.parse(`198.18.${net}.${host}`).toString()];
  if (ipv6 && raw.v6) ips.push(ipaddr.parse(`2001:2:0:${[0, 2, 3][net]}::${host.toString(16)}`).toString());
  return {
    namespace: raw.namespace,
    name: `pod-${index}`,
    ips,
    labels: raw.labels,
    namedPorts: raw.namedPorts,
    node: raw.node,
    hostNetwork: false,
  };
}

function arbHostPods(nsNames: readonly string[], max: number, ipv6: boolean): fc.Arbitrary<PodInfo[]> {
  const one = fc.record({
    namespace: fc.constantFrom(...nsNames),
    node: fc.constantFrom(...NODES),
    v6: fc.boolean(),
    labels: arbLabels(POD_LABEL_VOCAB),
    namedPorts: arbNamedPorts,
  });
  return fc.array(one, { maxLength: max }).map((list) =>
    list.map((h, i): PodInfo => ({
      namespace: h.namespace,
      name: `host-${i}`,
      // A host-network pod's address is its node's.
      ips: h.node.addresses.filter((a) => familyOf(a) === 'ipv4' || (ipv6 && h.v6)),
      labels: h.labels,
      namedPorts: h.namedPorts,
      node: h.node.name,
      hostNetwork: true,
    })),
  );
}

// ---------------------------------------------------------------------------------------------
// Policies

/** Addresses known to the cluster, used to aim ipBlocks at interesting places. */
interface AddrContext {
  readonly nsNames: readonly string[];
  readonly podIps: Readonly<Record<Family, readonly string[]>>;
  readonly seeds: Readonly<Record<Family, readonly string[]>>;
}

function arbBytesIn(cidr: string): fc.Arbitrary<number[]> {
  const [net, bits] = ipaddr.parseCIDR(cidr);
  const base = net.toByteArray();
  return fc.array(fc.integer({ min: 0, max: 255 }), { minLength: base.length, maxLength: base.length }).map((rnd) =>
    base.map((b, i) => {
      const keep = Math.max(0, Math.min(8, bits - i * 8));
      const mask = (0xff << (8 - keep)) & 0xff;
      return (b & mask) | ((rnd[i] ?? 0) & ~mask & 0xff);
    }),
  );
}

/** 0-2 distinct `except` entries strictly inside `cidr`, often around known addresses. */
function arbExcept(cidr: string, ctx: AddrContext): fc.Arbitrary<string[]> {
  const [net, bits] = ipaddr.parseCIDR(cidr);
  const family = net.kind();
  const max = bitsOf(family);
  if (bits >= max) return fc.constant([]);
  const prefix = weighted([2, fc.constant(max)], [2, fc.integer({ min: bits + 1, max })], [1, fc.constant(Math.min(max, bits + 8))]);
  const seeds = ctx.seeds[family].filter((ip) => inCidr(ip, cidr));
  const fromSeed = fc
    .tuple(fc.constantFrom(...(seeds.length > 0 ? seeds : ['unused'])), prefix)
    .map(([ip, p]) => networkOf(ipaddr.parse(ip).toByteArray(), p));
  const fromRandom = fc.tuple(arbBytesIn(cidr), prefix).map(([bytes, p]) => networkOf(bytes, p));
  const entry = weighted([seeds.length > 0 ? 3 : 0, fromSeed], [1, fromRandom]);
  return weighted([2, fc.constant<string[]>([])], [3, fc.uniqueArray(entry, { minLength: 1, maxLength: 2 })]);
}

function arbIpBlock(family: Family, ctx: AddrContext): fc.Arbitrary<IpBlock> {
  const fixed = family === 'ipv4' ? V4_CIDRS : V6_CIDRS;
  const hosts = ctx.podIps[family].map((ip) => networkOf(ipaddr.parse(ip).toByteArray(), bitsOf(family)));
  const cidr = weighted([3, fc.constantFrom(...fixed)], [hosts.length > 0 ? 2 : 0, fc.constantFrom(...(hosts.length > 0 ? hosts : ['unused']))]);
  return cidr.chain((c) => arbExcept(c, ctx).map((except): IpBlock => ({ cidr: c, except })));
}

function arbPeer(ctx: AddrContext): fc.Arbitrary<PolicyPeer> {
  const podOnly = arbPodSelector.map((podSelector): PolicyPeer => ({ podSelector, namespaceSelector: undefined, ipBlock: undefined }));
  const nsOnly = arbNamespaceSelector.map((namespaceSelector): PolicyPeer => ({ podSelector: undefined, namespaceSelector, ipBlock: undefined }));
  const both = fc
    .tuple(arbPodSelector, arbNamespaceSelector)
    .map(([podSelector, namespaceSelector]): PolicyPeer => ({ podSelector, namespaceSelector, ipBlock: undefined }));
  const block = (f: Family) => arbIpBlock(f, ctx).map((ipBlock): PolicyPeer => ({ podSelector: undefined, namespaceSelector: undefined, ipBlock }));
  return weighted([3, podOnly], [2, nsOnly], [2, both], [2, block('ipv4')], [1, block('ipv6')]);
}

export const arbPolicyPort: fc.Arbitrary<PolicyPort> = fc.tuple(
  arbProtocol,
  weighted<{ port: number | string | undefined; endPort: number | undefined }>(
    [1, fc.constant({ port: undefined, endPort: undefined })],
    [3, weighted<number>([4, fc.constantFrom(...FLOW_PORTS)], [1, fc.integer({ min: 1, max: 65535 })]).map((port) => ({ port, endPort: undefined }))],
    [2, fc
      .tuple(fc.constantFrom(1, 53, 80, 1024, 8000, 8080, 9000), fc.constantFrom(0, 1, 27, 100, 1000, 10000, 65535))
      .map(([port, span]) => ({ port, endPort: Math.min(65535, port + span) }))],
    [2, fc.constantFrom('http', 'dns', 'metrics', 'grpc').map((port) => ({ port, endPort: undefined }))],
  ),
).map(([protocol, p]): PolicyPort => ({ protocol, port: p.port, endPort: p.endPort }));

function arbRule(ctx: AddrContext): fc.Arbitrary<PolicyRule> {
  return fc.record({
    peers: weighted([2, fc.constant<PolicyPeer[]>([])], [3, fc.array(arbPeer(ctx), { minLength: 1, maxLength: 3 })]),
    ports: weighted([2, fc.constant<PolicyPort[]>([])], [3, fc.array(arbPolicyPort, { minLength: 1, maxLength: 3 })]),
  });
}

const arbPolicyTypes: fc.Arbitrary<PolicyType[]> = fc.constantFrom<PolicyType[]>(['Ingress'], ['Egress'], ['Ingress', 'Egress']);

function arbPolicy(ctx: AddrContext, index: number): fc.Arbitrary<PolicySpec> {
  const name = `pol-${index}`;
  const validPolicy = fc.record({
    namespace: fc.constantFrom(...ctx.nsNames),
    podSelector: arbPodSelector,
    policyTypes: arbPolicyTypes,
    ingress: fc.array(arbRule(ctx), { maxLength: 3 }),
    egress: fc.array(arbRule(ctx), { maxLength: 3 }),
  }).map((p): PolicySpec => ({ ...p, name, valid: true }));
  // Fail-closed: an invalid policy keeps isolating what it selects, with no rules.
  const invalidPolicy = fc.record({
    namespace: fc.constantFrom(...ctx.nsNames),
    podSelector: fc.option(arbPodSelector, { nil: undefined, freq: 4 }),
    policyTypes: arbPolicyTypes,
  }).map((p): PolicySpec => ({ ...p, name, ingress: [], egress: [], valid: false }));
  return weighted([9, validPolicy], [1, invalidPolicy]);
}

// ---------------------------------------------------------------------------------------------
// Clusters

export interface ClusterArbOptions {
  /** Default 1. */
  minPods?: number;
  /** Default 8. */
  maxPods?: number;
  /** Default 2. */
  maxHostPods?: number;
  /** Default 0. */
  minPolicies?: number;
  /** Default 5. */
  maxPolicies?: number;
  /** Default true: pods (often) and host pods (sometimes) get an IPv6 address too. */
  ipv6?: boolean;
}

export function arbCluster(opts: ClusterArbOptions = {}): fc.Arbitrary<ClusterState> {
  const minPods = opts.minPods ?? 1;
  const maxPods = opts.maxPods ?? 8;
  const maxHostPods = opts.maxHostPods ?? 2;
  const minPolicies = opts.minPolicies ?? 0;
  const maxPolicies = opts.maxPolicies ?? 5;
  const ipv6 = opts.ipv6 ?? true;

  return arbNamespaces.chain((namespaces) => {
    const nsNames = namespaces.map((n) => n.name);
    return fc
      .tuple(
        fc.uniqueArray(arbRawPod(nsNames), {
          selector: (p) => p.slot[0] * 256 + p.slot[1],
          minLength: minPods,
          maxLength: maxPods,
        }),
        arbHostPods(nsNames, maxHostPods, ipv6),
        fc.integer({ min: minPolicies, max: maxPolicies }),
      )
      .chain(([rawPods, hostPods, policyCount]) => {
        const pods = rawPods.map((raw, i) => podFromRaw(raw, i, ipv6));
        const podIps = { ipv4: [] as string[], ipv6: [] as string[] };
        for (const p of pods) for (const ip of p.ips) podIps[familyOf(ip)].push(ip);
        const nodeIps = NODES.flatMap((n) => n.addresses);
        const seeds = {
          ipv4: [...podIps.ipv4, ...nodeIps.filter((a) => familyOf(a) === 'ipv4'), ...EXTERNAL_V4],
          ipv6: [...podIps.ipv6, ...nodeIps.filter((a) => familyOf(a) === 'ipv6'), ...EXTERNAL_V6],
        };
        const ctx: AddrContext = { nsNames, podIps, seeds };
        const policies = Array.from({ length: policyCount }, (_, i) => arbPolicy(ctx, i));
        // Host-network pods are interleaved with ordinary pods at a random place.
        return fc.tuple(fc.tuple(...policies), fc.integer({ min: 0, max: pods.length })).map(
          ([pols, at]): ClusterState => ({
            namespaces,
            pods: [...pods.slice(0, at), ...hostPods, ...pods.slice(at)],
            nodes: NODES,
            policies: pols,
          }),
        );
      });
  });
}

// ---------------------------------------------------------------------------------------------
// Flows

function arbExternal(family: Family): fc.Arbitrary<string> {
  if (family === 'ipv4') {
    return weighted(
      [3, fc.constantFrom(...EXTERNAL_V4)],
      [1, fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 })).map(([a, b]) => `198.19.${a}.${b}`)],
    );
  }
  return weighted(
    [3, fc.constantFrom(...EXTERNAL_V6)],
    [1, fc.integer({ min: 0, max: 0xffff }).map((x) => ipaddr.parse(`2001:2:0:1::${x.toString(16)}`).toString())],
  );
}

function arbEndpoint(cluster: ClusterState, family: Family): fc.Arbitrary<string> {
  const podIps = cluster.pods.filter((p) => !p.hostNetwork).flatMap((p) => p.ips).filter((ip) => familyOf(ip) === family);
  const nodeIps = [
    ...cluster.nodes.flatMap((n) => n.addresses),
    ...cluster.pods.filter((p) => p.hostNetwork).flatMap((p) => p.ips),
  ].filter((ip) => familyOf(ip) === family);
  const some = (xs: string[]) => fc.constantFrom(...(xs.length > 0 ? xs : ['unused']));
  return weighted([podIps.length > 0 ? 6 : 0, some(podIps)], [nodeIps.length > 0 ? 1 : 0, some(nodeIps)], [2, arbExternal(family)]);
}

/** A flow between addresses of one family: mostly pod IPs, sometimes node or external addresses. */
export function arbFlow(cluster: ClusterState): fc.Arbitrary<RefFlow> {
  const hasV6Pod = cluster.pods.some((p) => !p.hostNetwork && p.ips.some((ip) => familyOf(ip) === 'ipv6'));
  const family = weighted<Family>([3, fc.constant('ipv4')], [hasV6Pod ? 1 : 0, fc.constant('ipv6')]);
  return family.chain((f) =>
    fc.record({
      protocol: arbProtocol,
      srcIp: arbEndpoint(cluster, f),
      dstIp: arbEndpoint(cluster, f),
      dstPort: weighted<number>([4, fc.constantFrom(...FLOW_PORTS)], [1, fc.integer({ min: 1, max: 65535 })]),
    }),
  );
}

export interface ClusterWithFlows {
  cluster: ClusterState;
  flows: RefFlow[];
}

/** A cluster and `n` flows in it. */
export function arbClusterWithFlows(n: number, opts?: ClusterArbOptions): fc.Arbitrary<ClusterWithFlows> {
  return arbCluster(opts).chain((cluster) =>
    fc.array(arbFlow(cluster), { minLength: n, maxLength: n }).map((flows): ClusterWithFlows => ({ cluster, flows })),
  );
}
