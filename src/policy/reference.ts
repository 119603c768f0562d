// A naive, spec-literal reference evaluator for Kubernetes NetworkPolicy.
//
// Used only by tests: the optimised engine is compared against it (example tables and
// property tests). It deliberately shares no code with the engine (no address tables, no
// tries, no compiled selectors): every call re-reads `ClusterState` with linear scans, so
// that each line can be checked against the API text quoted next to it. Clarity beats speed.
//
// Quotations are from the networking.k8s.io/v1 NetworkPolicy API reference and, for isolation
// and node traffic, the "Network Policies" concepts page of the Kubernetes documentation.

import ipaddr from 'ipaddr.js';

import type {
  ClusterState,
  IpBlock,
  LabelSelector,
  Labels,
  NamespaceInfo,
  PodInfo,
  PolicyPeer,
  PolicyPort,
  PolicyRule,
  PolicySpec,
  PolicyType,
  Protocol,
  SelectorRequirement,
} from '../model/types.js';

export interface RefFlow {
  protocol: Protocol;
  /** Any textual form ipaddr.js accepts; compared after normalisation. */
  srcIp: string;
  dstIp: string;
  dstPort: number;
}

export type RefSide = 'not-a-pod' | 'not-isolated' | 'allowed' | 'denied' | 'node-local' | 'loopback';

export interface RuleRef {
  /** `namespace/name` of the policy. */
  policy: string;
  /** Index of the rule in the policy's `ingress` or `egress` list. */
  rule: number;
}

export interface RefResult {
  allowed: boolean;
  egress: RefSide;
  ingress: RefSide;
  /** Present when `egress === 'allowed'`: every (policy, rule) that allows, in policy order. */
  egressBy?: RuleRef[];
  /** Present when `ingress === 'allowed'`: every (policy, rule) that allows, in policy order. */
  ingressBy?: RuleRef[];
}

type Addr = ipaddr.IPv4 | ipaddr.IPv6;

/** One end of a flow: its address, and the pod owning it if it is a pod endpoint. */
interface Endpoint {
  readonly ip: Addr;
  readonly pod: PodInfo | undefined;
}

// ---------------------------------------------------------------------------------------------
// Addresses

function parseIp(text: string): Addr {
  if (!ipaddr.isValid(text)) throw new Error(`referenceDecide: not an IP address: ${JSON.stringify(text)}`);
  return ipaddr.parse(text);
}

/** Same family and same address (zone ids and textual form are irrelevant). */
function sameIp(a: Addr, b: Addr): boolean {
  if (a.kind() !== b.kind()) return false;
  const x = a.toByteArray();
  const y = b.toByteArray();
  return x.length === y.length && x.every((byte, i) => byte === y[i]);
}

function ipInList(ip: Addr, list: readonly string[]): boolean {
  return list.some((text) => ipaddr.isValid(text) && sameIp(ip, ipaddr.parse(text)));
}

/** `ip` is inside `cidr`; false (not an error) when the families differ. */
function ipInCidr(ip: Addr, cidr: string): boolean {
  const [net, bits] = ipaddr.parseCIDR(cidr);
  if (net.kind() !== ip.kind()) return false;
  return ip.match(net, bits);
}

// ---------------------------------------------------------------------------------------------
// Endpoints

/**
 * An IP is a pod endpoint if it is one of the `ips` of a pod with `hostNetwork === false`.
 * Otherwise it is not a pod: an external address, a node address, or a host-network pod's
 * address (such a pod shares its node's network namespace; NetworkPolicy does not apply to it).
 * IPs are unique in a valid ClusterState; should two pods claim one, the first one wins.
 */
function resolveEndpoint(state: ClusterState, ip: Addr): Endpoint {
  const pod = state.pods.find((p) => !p.hostNetwork && ipInList(ip, p.ips));
  return { ip, pod };
}

/** The labels of namespace `name`; `{}` when the namespace is unknown. */
function namespaceLabels(state: ClusterState, name: string): Labels {
  const ns: NamespaceInfo | undefined = state.namespaces.find((n) => n.name === name);
  return ns?.labels ?? {};
}

/**
 * The addresses of node `node`: the NodeInfo's `addresses`, plus the `ips` of every
 * host-network pod whose `node` is `node` (literally `pod.node === node`).
 */
function nodeAddresses(state: ClusterState, node: string): string[] {
  const out: string[] = [];
  for (const n of state.nodes) if (n.name === node) out.push(...n.addresses);
  for (const p of state.pods) if (p.hostNetwork && p.node === node) out.push(...p.ips);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Label selectors

/**
 * metav1.LabelSelector: "The requirements of matchLabels and matchExpressions are ANDed.
 * An empty label selector matches all objects."
 */
export function selectorMatches(sel: LabelSelector, labels: Labels): boolean {
  // "matchLabels is a map of {key,value} pairs. A single {key,value} in the matchLabels map is
  // equivalent to an element of matchExpressions, whose key field is "key", the operator is
  // "In", and the values array contains only "value"."
  for (const [key, value] of Object.entries(sel.matchLabels)) {
    if (!Object.hasOwn(labels, key) || labels[key] !== value) return false;
  }
  return sel.matchExpressions.every((req) => requirementMatches(req, labels));
}

function requirementMatches(req: SelectorRequirement, labels: Labels): boolean {
  const present = Object.hasOwn(labels, req.key);
  const value = present ? labels[req.key] : undefined;
  switch (req.operator) {
    // "In: the label's key is present and its value is in the set of values"
    case 'In':
      return present && value !== undefined && req.values.includes(value);
    // "NotIn: the key is absent, or its value is not in the set of values"
    case 'NotIn':
      return !present || value === undefined || !req.values.includes(value);
    // "Exists: the key is present (values ignored)"
    case 'Exists':
      return present;
    // "DoesNotExist: the key is absent"
    case 'DoesNotExist':
      return !present;
  }
}

// ---------------------------------------------------------------------------------------------
// Policy selection and isolation

/**
 * "podSelector selects the pods to which this NetworkPolicy object applies. [...] An empty
 * podSelector selects all pods in this namespace." A policy only ever selects pods of its own
 * namespace. A policy whose podSelector could not be validated (undefined) selects nothing.
 */
function selectingPolicies(state: ClusterState, pod: PodInfo): PolicySpec[] {
  return state.policies.filter(
    (p) => p.namespace === pod.namespace && p.podSelector !== undefined && selectorMatches(p.podSelector, pod.labels),
  );
}

function policyRef(p: PolicySpec): string {
  return `${p.namespace}/${p.name}`;
}

/**
 * Evaluates one direction for the pod `subject` (the source for Egress, the destination for
 * Ingress); `other` is the far end of the flow, `dst` the flow's destination (named ports are
 * always resolved against the destination pod).
 */
function decideSide(
  state: ClusterState,
  direction: PolicyType,
  subject: PodInfo,
  other: Endpoint,
  dst: Endpoint,
  flow: RefFlow,
): { side: 'not-isolated' | 'allowed' | 'denied'; by: RuleRef[] } {
  const selecting = selectingPolicies(state, subject);
  // "policyTypes: List of rule types that the NetworkPolicy relates to. [...] If this field is
  // not specified, it will default based on the existence of ingress or egress rules" (the
  // defaulting is already applied in PolicySpec). A pod is isolated for a direction when any
  // policy selecting it lists that direction — whether or not the policy is valid: invalid
  // policies are kept fail-closed (they isolate, with no rules).
  const isolating = selecting.filter((p) => p.policyTypes.includes(direction));
  if (isolating.length === 0) {
    // "By default, pods are non-isolated; they accept all traffic from any source." (ingress)
    // "[...] pods are non-isolated for egress; all outbound connections are allowed."
    return { side: 'not-isolated', by: [] };
  }
  // Isolated: "the only allowed connections [...] are those which are allowed by the [...]
  // list of some NetworkPolicy that applies to the pod". Policies are additive (a union).
  const by: RuleRef[] = [];
  for (const policy of isolating) {
    // Rules of invalid policies are ignored (fail-closed). Rules of a direction not listed in
    // policyTypes were already excluded by `isolating` (a policy lists Egress only: its ingress
    // rules are never consulted).
    if (!policy.valid) continue;
    const rules = direction === 'Ingress' ? policy.ingress : policy.egress;
    rules.forEach((rule, index) => {
      if (ruleMatches(state, policy, rule, other, dst, flow)) by.push({ policy: policyRef(policy), rule: index });
    });
  }
  return by.length > 0 ? { side: 'allowed', by } : { side: 'denied', by: [] };
}

/**
 * IngressRule: "traffic is allowed [...] if the traffic matches both ports AND from."
 * EgressRule: "traffic is allowed [...] if the traffic matches both ports AND to."
 */
function ruleMatches(
  state: ClusterState,
  policy: PolicySpec,
  rule: PolicyRule,
  other: Endpoint,
  dst: Endpoint,
  flow: RefFlow,
): boolean {
  return peersMatch(state, policy, rule.peers, other) && portsMatch(rule.ports, dst, flow);
}

// ---------------------------------------------------------------------------------------------
// Peers

function peersMatch(state: ClusterState, policy: PolicySpec, peers: readonly PolicyPeer[], t: Endpoint): boolean {
  // "If this field is empty or missing, this rule matches all sources (traffic not restricted
  // by source)." / "[...] all destinations". External addresses included.
  if (peers.length === 0) return true;
  // "If this field is present and contains at least one item, this rule allows traffic only
  // if the traffic matches at least one item in the from list." (OR over peers)
  return peers.some((peer) => peerMatches(state, policy, peer, t));
}

function peerMatches(state: ClusterState, policy: PolicySpec, peer: PolicyPeer, t: Endpoint): boolean {
  if (peer.ipBlock !== undefined) return ipBlockMatches(peer.ipBlock, t.ip);

  // A selector peer only ever matches pods.
  if (peer.podSelector === undefined && peer.namespaceSelector === undefined) return false; // not a valid shape
  const pod = t.pod;
  if (pod === undefined) return false;

  if (peer.namespaceSelector !== undefined) {
    // "namespaceSelector selects namespaces using cluster-scoped labels. [...] If podSelector
    // is also set, then the NetworkPolicyPeer as a whole selects the pods matching podSelector
    // in the namespaces selected by namespaceSelector. Otherwise it selects all pods in the
    // namespaces selected by namespaceSelector."
    if (!selectorMatches(peer.namespaceSelector, namespaceLabels(state, pod.namespace))) return false;
  } else {
    // "If namespaceSelector is also set, [...]. Otherwise it selects the pods matching
    // podSelector in the policy's own namespace."
    if (pod.namespace !== policy.namespace) return false;
  }
  // "podSelector is a label selector which selects pods." Absent = any pod (of the namespaces
  // chosen above).
  if (peer.podSelector !== undefined && !selectorMatches(peer.podSelector, pod.labels)) return false;
  return true;
}

/**
 * "ipBlock defines policy on a particular IPBlock." "cidr is a string representing the IPBlock
 * Valid examples are "192.168.1.0/24" or "2001:db8::/64"." "except is a slice of CIDRs that
 * should not be included within an IPBlock [...] Except values will be rejected if they are
 * outside the cidr range."
 *
 * Project semantics: an ipBlock matches any address, pod addresses included.
 */
function ipBlockMatches(block: IpBlock, ip: Addr): boolean {
  if (!ipInCidr(ip, block.cidr)) return false;
  return !block.except.some((ex) => ipInCidr(ip, ex));
}

// ---------------------------------------------------------------------------------------------
// Ports

function portsMatch(ports: readonly PolicyPort[], dst: Endpoint, flow: RefFlow): boolean {
  // "If this field is empty or missing, this rule matches all ports (traffic not restricted by
  // port)." "If this field is present and contains at least one item, then this rule allows
  // traffic only if the traffic matches at least one port in the list."
  if (ports.length === 0) return true;
  return ports.some((p) => portMatches(p, dst, flow));
}

function portMatches(p: PolicyPort, dst: Endpoint, flow: RefFlow): boolean {
  // "protocol represents the protocol (TCP, UDP, or SCTP) which traffic must match."
  if (p.protocol !== flow.protocol) return false;
  // "port represents the port on the given protocol. [...] If this field is not provided,
  // this matches all port names and numbers."
  if (p.port === undefined) return true;
  if (typeof p.port === 'number') {
    // "endPort indicates that the range of ports from port to endPort if set, inclusive,
    // should be allowed by the policy."
    if (p.endPort !== undefined) return p.port <= flow.dstPort && flow.dstPort <= p.endPort;
    return flow.dstPort === p.port;
  }
  // "This can either be a numerical or named port on a pod." A named port is resolved against
  // the flow's destination pod, for egress rules too; a destination that is not a pod
  // endpoint (external, node, host-network pod) never matches a named port.
  const name = p.port;
  const pod = dst.pod;
  if (pod === undefined) return false;
  return pod.namedPorts.some((np) => np.name === name && np.protocol === flow.protocol && np.port === flow.dstPort);
}

// ---------------------------------------------------------------------------------------------
// The decision

const sideOK = (side: RefSide): boolean => side !== 'denied';

/**
 * Decides one flow. A connection is allowed when the source's egress side and the
 * destination's ingress side both allow it: "For a connection from a source pod to a
 * destination pod to be allowed, both the egress policy on the source pod and the ingress
 * policy on the destination pod need to allow the connection."
 */
export function referenceDecide(state: ClusterState, flow: RefFlow, opts?: { localNode?: string }): RefResult {
  const src = resolveEndpoint(state, parseIp(flow.srcIp));
  const dst = resolveEndpoint(state, parseIp(flow.dstIp));

  // A pod's traffic to its own address stays inside the pod: the upstream e2e suite expects
  // it allowed whatever the policies ("loopback logic follows no policy").
  if (src.pod !== undefined && src.pod === dst.pod) return { allowed: true, egress: 'loopback', ingress: 'loopback' };

  // Egress: about the source.
  let egress: RefSide;
  let egressBy: RuleRef[] = [];
  if (src.pod === undefined) {
    egress = 'not-a-pod';
  } else {
    const r = decideSide(state, 'Egress', src.pod, dst, dst, flow);
    egress = r.side;
    egressBy = r.by;
  }

  // Ingress: about the destination.
  let ingress: RefSide;
  let ingressBy: RuleRef[] = [];
  if (dst.pod === undefined) {
    ingress = 'not-a-pod';
  } else {
    // "traffic to and from the node where a Pod is running is always allowed, regardless of
    // the IP address of the Pod or the node" — here: traffic from the node itself to its pods.
    const node = dst.pod.node ?? opts?.localNode;
    if (node !== undefined && ipInList(src.ip, nodeAddresses(state, node))) {
      ingress = 'node-local';
    } else {
      const r = decideSide(state, 'Ingress', dst.pod, src, dst, flow);
      ingress = r.side;
      ingressBy = r.by;
    }
  }

  const result: RefResult = { allowed: sideOK(egress) && sideOK(ingress), egress, ingress };
  if (egress === 'allowed') result.egressBy = egressBy;
  if (ingress === 'allowed') result.ingressBy = ingressBy;
  return result;
}
