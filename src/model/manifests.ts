// ClusterState -> Kubernetes manifests (objects, or multi-document YAML), so that generated
// clusters (property tests, benchmarks) go through the file loader and the lab like hand-written
// ones. Loading the output gives the same ClusterState back (test/kernel-diff.e2e.test.ts checks
// the round trip).
//
// Only valid policies can be written: an invalid one (`valid: false`) has no faithful YAML form
// (which field made it invalid is lost), so the caller decides what to do with those.
import { stringify } from 'yaml';
import { MODE_ANNOTATION, type ClusterState, type LabelSelector, type PolicyPeer, type PolicyPort, type PolicyRule } from './types.js';

type Obj = Record<string, unknown>;

function selector(s: LabelSelector): Obj {
  const out: Obj = {};
  if (Object.keys(s.matchLabels).length > 0) out.matchLabels = { ...s.matchLabels };
  if (s.matchExpressions.length > 0) {
    out.matchExpressions = s.matchExpressions.map((e) => (e.values.length > 0 ? { key: e.key, operator: e.operator, values: [...e.values] } : { key: e.key, operator: e.operator }));
  }
  return out;
}

function peer(p: PolicyPeer): Obj {
  if (p.ipBlock) return { ipBlock: p.ipBlock.except.length > 0 ? { cidr: p.ipBlock.cidr, except: [...p.ipBlock.except] } : { cidr: p.ipBlock.cidr } };
  const out: Obj = {};
  if (p.podSelector) out.podSelector = selector(p.podSelector);
  if (p.namespaceSelector) out.namespaceSelector = selector(p.namespaceSelector);
  return out;
}

function port(p: PolicyPort): Obj {
  const out: Obj = { protocol: p.protocol };
  if (p.port !== undefined) out.port = p.port;
  if (p.endPort !== undefined) out.endPort = p.endPort;
  return out;
}

function rule(r: PolicyRule, peersKey: 'from' | 'to'): Obj {
  const out: Obj = {};
  if (r.peers.length > 0) out[peersKey] = r.peers.map(peer);
  if (r.ports.length > 0) out.ports = r.ports.map(port);
  return out;
}

/** The cluster as Kubernetes objects: Namespaces, Nodes, Pods, NetworkPolicies. */
export function toManifestObjects(state: ClusterState): Obj[] {
  const out: Obj[] = [];
  for (const ns of state.namespaces) {
    const metadata: Obj = { name: ns.name, labels: { ...ns.labels } };
    if (ns.audit) metadata.annotations = { [MODE_ANNOTATION]: 'audit' };
    out.push({ apiVersion: 'v1', kind: 'Namespace', metadata });
  }
  for (const n of state.nodes) {
    out.push({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: n.name },
      status: { addresses: n.addresses.map((address) => ({ type: 'InternalIP', address })) },
    });
  }
  for (const p of state.pods) {
    const spec: Obj = {
      containers: [
        {
          name: 'c0',
          image: 'registry.example/netpold-lab:1',
          ...(p.namedPorts.length > 0 ? { ports: p.namedPorts.map((np) => ({ name: np.name, containerPort: np.port, protocol: np.protocol })) } : {}),
        },
      ],
    };
    if (p.node !== undefined) spec.nodeName = p.node;
    if (p.hostNetwork) spec.hostNetwork = true;
    const status: Obj = p.ips.length > 0 ? { podIP: p.ips[0], podIPs: p.ips.map((ip) => ({ ip })) } : {};
    const metadata: Obj = { name: p.name, namespace: p.namespace };
    if (Object.keys(p.labels).length > 0) metadata.labels = { ...p.labels };
    out.push({ apiVersion: 'v1', kind: 'Pod', metadata, spec, status });
  }
  for (const pol of state.policies) {
    if (!pol.valid || pol.podSelector === undefined) {
      throw new Error(`toManifests: policy ${pol.namespace}/${pol.name} is invalid; only valid policies have a YAML form`);
    }
    const spec: Obj = { podSelector: selector(pol.podSelector), policyTypes: [...pol.policyTypes] };
    if (pol.ingress.length > 0) spec.ingress = pol.ingress.map((r) => rule(r, 'from'));
    if (pol.egress.length > 0) spec.egress = pol.egress.map((r) => rule(r, 'to'));
    out.push({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: pol.name, namespace: pol.namespace }, spec });
  }
  return out;
}

/** The cluster as one multi-document YAML text. */
export function toManifests(state: ClusterState): string {
  return toManifestObjects(state)
    .map((o) => stringify(o, { lineWidth: 0 }))
    .join('---\n');
}
