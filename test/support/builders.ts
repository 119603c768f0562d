// Small, pleasant builders for domain values in tests (reference and engine alike).
//
//   const state = makeCluster({
//     namespaces: [makeNs('prod', { env: 'prod' })],
//     pods: [makePod('prod/web-1', { app: 'web' }, { ips: ['198.18.0.10'], namedPorts: [{ name: 'http', port: 8080 }], node: 'n1' })],
//     policies: [makePolicy('prod/allow-web', {
//       podSelector: { app: 'web' },                         // shorthand for matchLabels
//       ingress: [{ from: [{ podSelector: { app: 'api' } }], ports: [{ port: 80 }] }],
//     })],
//   });
//
// Selectors accept either a plain label map (taken as matchLabels) or the full
// `{ matchLabels?, matchExpressions? }` form. Addresses are canonicalised with ipaddr.js.

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
  type SelectorOperator,
  type SelectorRequirement,
} from '../../src/model/types.js';
import type { RefFlow } from '../../src/policy/reference.js';

// ---------------------------------------------------------------------------------------------
// Addresses

/** Canonical text of an address (`ipaddr.parse(x).toString()`). */
export function canonIp(text: string): string {
  return ipaddr.parse(text).toString();
}

/** Canonical network form of a CIDR, host bits cleared: `10.1.2.3/8` -> `10.0.0.0/8`. */
export function canonCidr(text: string): string {
  const [addr, bits] = ipaddr.parseCIDR(text);
  const net = addr.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(text) : ipaddr.IPv6.networkAddressFromCIDR(text);
  return `${net.toString()}/${bits}`;
}

// ---------------------------------------------------------------------------------------------
// Selectors

export interface SelectorRequirementInput {
  key: string;
  operator: SelectorOperator;
  values?: readonly string[];
}

export interface FullSelectorInput {
  matchLabels?: Labels;
  matchExpressions?: readonly SelectorRequirementInput[];
}

/** A plain label map (= matchLabels) or the full selector form. */
export type SelectorInput = Labels | FullSelectorInput;

function isFullSelector(x: SelectorInput): x is FullSelectorInput {
  // A plain label map has only string values; the full form has object/array values.
  return Object.values(x).some((v) => typeof v !== 'string');
}

/** Builds a LabelSelector. `sel()` / `sel({})` selects everything. */
export function sel(input: SelectorInput = {}): LabelSelector {
  if (!isFullSelector(input)) return { matchLabels: { ...input }, matchExpressions: [] };
  return {
    matchLabels: { ...(input.matchLabels ?? {}) },
    matchExpressions: (input.matchExpressions ?? []).map(
      (r): SelectorRequirement => ({ key: r.key, operator: r.operator, values: [...(r.values ?? [])] }),
    ),
  };
}

/** One selector requirement, e.g. `expr('app', 'NotIn', 'web', 'db')`, `expr('app', 'Exists')`. */
export function expr(key: string, operator: SelectorOperator, ...values: string[]): SelectorRequirementInput {
  return { key, operator, values };
}

// ---------------------------------------------------------------------------------------------
// Namespaces, nodes, pods

function splitRef(ref: string, what: string): [string, string] {
  const i = ref.indexOf('/');
  if (i <= 0 || i === ref.length - 1) throw new Error(`${what}: expected "namespace/name", got ${JSON.stringify(ref)}`);
  return [ref.slice(0, i), ref.slice(i + 1)];
}

/** A namespace; the automatic `kubernetes.io/metadata.name` label is added. */
export function makeNs(name: string, labels: Labels = {}): NamespaceInfo {
  return { name, labels: { ...labels, [NS_NAME_LABEL]: name } };
}

/** A node with its addresses (canonicalised). */
export function makeNode(name: string, addresses: readonly string[] = []): NodeInfo {
  return { name, addresses: addresses.map(canonIp) };
}

export interface NamedPortInput {
  name: string;
  port: number;
  /** Default TCP. */
  protocol?: Protocol;
}

export interface PodOptions {
  ips?: readonly string[];
  namedPorts?: readonly NamedPortInput[];
  node?: string;
  hostNetwork?: boolean;
}

/** `makePod('prod/web-1', { app: 'web' }, { ips: ['198.18.0.10'], node: 'n1' })`. */
export function makePod(ref: string, labels: Labels = {}, opts: PodOptions = {}): PodInfo {
  const [namespace, name] = splitRef(ref, 'makePod');
  return {
    namespace,
    name,
    ips: (opts.ips ?? []).map(canonIp),
    labels: { ...labels },
    namedPorts: (opts.namedPorts ?? []).map((p): NamedPort => ({ name: p.name, port: p.port, protocol: p.protocol ?? 'TCP' })),
    node: opts.node,
    hostNetwork: opts.hostNetwork ?? false,
  };
}

/** A host-network pod: its address is its node's. */
export function makeHostPod(ref: string, node: string, ips: readonly string[], labels: Labels = {}): PodInfo {
  return makePod(ref, labels, { ips, node, hostNetwork: true });
}

// ---------------------------------------------------------------------------------------------
// Policies

export interface IpBlockInput {
  cidr: string;
  except?: readonly string[];
}

/** A peer, API-shaped; `ipBlock` may be a bare CIDR string. */
export interface PeerInput {
  podSelector?: SelectorInput;
  namespaceSelector?: SelectorInput;
  ipBlock?: string | IpBlockInput;
}

/** A port: a number, a port name, or the API shape (protocol defaults to TCP). */
export type PortInput = number | string | { port?: number | string; endPort?: number; protocol?: Protocol };

/** A rule: API-shaped (`from` for ingress, `to` for egress; either key is accepted) or a built PolicyRule. */
export interface RuleInput {
  from?: readonly (PeerInput | PolicyPeer)[];
  to?: readonly (PeerInput | PolicyPeer)[];
  peers?: readonly (PeerInput | PolicyPeer)[];
  ports?: readonly (PortInput | PolicyPort)[];
}

export function ipBlock(cidr: string, except: readonly string[] = []): IpBlock {
  return { cidr: canonCidr(cidr), except: except.map(canonCidr) };
}

/**
 * `peer({ podSelector: { app: 'api' } })`, `peer({ ipBlock: '10.0.0.0/8' })`... A built
 * PolicyPeer is accepted too (rebuilt, canonicalised).
 */
export function peer(input: PeerInput | PolicyPeer): PolicyPeer {
  const block = input.ipBlock;
  return {
    podSelector: input.podSelector === undefined ? undefined : sel(input.podSelector),
    namespaceSelector: input.namespaceSelector === undefined ? undefined : sel(input.namespaceSelector),
    ipBlock: block === undefined ? undefined : typeof block === 'string' ? ipBlock(block) : ipBlock(block.cidr, block.except),
  };
}

/**
 * `port(80)`, `port(80, 'UDP')`, `port('http')`, `port(8000, 'TCP', 9000)`, `port(undefined, 'UDP')`
 * (all UDP ports), or `port({ port: 8000, endPort: 9000 })`.
 */
export function port(
  p?: PortInput | PolicyPort,
  protocol: Protocol = 'TCP',
  endPort?: number,
): PolicyPort {
  if (p !== undefined && typeof p === 'object') {
    return { protocol: p.protocol ?? protocol, port: p.port, endPort: p.endPort ?? endPort };
  }
  return { protocol, port: p, endPort };
}

/** `rule([peer...], [port...])`: a built rule; empty lists mean "all". */
export function rule(peers: readonly (PeerInput | PolicyPeer)[] = [], ports: readonly (PortInput | PolicyPort)[] = []): PolicyRule {
  return { peers: peers.map(peer), ports: ports.map((p) => port(p)) };
}

function toRule(r: RuleInput | PolicyRule): PolicyRule {
  // A built PolicyRule is also a valid RuleInput (`peers`, `ports`): rebuilt, canonicalised.
  const input: RuleInput = r;
  return rule([...(input.from ?? []), ...(input.to ?? []), ...(input.peers ?? [])], input.ports ?? []);
}

export interface PolicyInput {
  /** Default `{}` (all pods of the namespace). `null` = an unvalidatable selector (invalid policies only). */
  podSelector?: SelectorInput | null;
  ingress?: readonly (RuleInput | PolicyRule)[];
  egress?: readonly (RuleInput | PolicyRule)[];
  /** Defaulted like the API server: ['Ingress'], plus 'Egress' when egress has at least one rule. */
  policyTypes?: readonly PolicyType[];
  /** Default true. */
  valid?: boolean;
}

/** `makePolicy('prod/allow-web', { podSelector: { app: 'web' }, ingress: [{ from: [...], ports: [{ port: 80 }] }] })`. */
export function makePolicy(ref: string, input: PolicyInput = {}): PolicySpec {
  const [namespace, name] = splitRef(ref, 'makePolicy');
  const ingress = (input.ingress ?? []).map(toRule);
  const egress = (input.egress ?? []).map(toRule);
  const policyTypes: PolicyType[] = input.policyTypes
    ? [...input.policyTypes]
    : egress.length > 0
      ? ['Ingress', 'Egress']
      : ['Ingress'];
  return {
    namespace,
    name,
    podSelector: input.podSelector === null ? undefined : sel(input.podSelector ?? {}),
    policyTypes,
    ingress,
    egress,
    valid: input.valid ?? true,
  };
}

/**
 * An invalid policy as the sources produce it: fail-closed, no rules, isolating in
 * `policyTypes` (default ['Ingress']).
 */
export function makeInvalidPolicy(
  ref: string,
  podSelector: SelectorInput | null = {},
  policyTypes: readonly PolicyType[] = ['Ingress'],
): PolicySpec {
  return makePolicy(ref, { podSelector, policyTypes, valid: false });
}

// ---------------------------------------------------------------------------------------------
// Cluster and flows

export interface ClusterInput {
  namespaces?: readonly NamespaceInfo[];
  pods?: readonly PodInfo[];
  nodes?: readonly NodeInfo[];
  policies?: readonly PolicySpec[];
  /**
   * Default true: namespaces referenced by pods or policies but not listed are added with only
   * their automatic name label. Set false to test unknown namespaces.
   */
  autoNamespaces?: boolean;
}

export function makeCluster(input: ClusterInput = {}): ClusterState {
  const namespaces = [...(input.namespaces ?? [])];
  const pods = [...(input.pods ?? [])];
  const policies = [...(input.policies ?? [])];
  if (input.autoNamespaces ?? true) {
    for (const ns of [...pods.map((p) => p.namespace), ...policies.map((p) => p.namespace)]) {
      if (!namespaces.some((n) => n.name === ns)) namespaces.push(makeNs(ns));
    }
  }
  return { namespaces, pods, nodes: [...(input.nodes ?? [])], policies };
}

/** `flow('198.18.0.1', '198.18.0.2', 80)`; protocol defaults to TCP. */
export function flow(srcIp: string, dstIp: string, dstPort: number, protocol: Protocol = 'TCP'): RefFlow {
  return { protocol, srcIp, dstIp, dstPort };
}
