// The clusters of the flow benchmark: a synthetic cluster of N policies (bench/synthetic.ts) plus a
// `bench` namespace with the two pods that really exist in the lab, a client and a server, and two
// policies that isolate both (the server's ingress and the client's egress) and allow the
// benchmark's ports. Every other pod is *virtual*: it has an address in 198.18.0.0/15 and is in the
// manifests (so the agent and the nftables ruleset carry its identity, sets and rules), but the lab
// builds no namespace for it: the lab is given a state holding only the real pods.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ClusterState, LabelSelector, NamespaceInfo, NodeInfo, PodInfo, PolicySpec } from '../src/model/types.js';
import { NS_NAME_LABEL } from '../src/model/types.js';
import { syntheticCluster } from './synthetic.js';
import { toManifestObjects } from '../src/model/manifests.js';

/** The lab node; the real pods run on it, virtual pods are spread over node-0..node-49. */
export const BENCH_NODE = 'node-0';
export const NODE_V4 = '198.18.255.1';
export const NODE_V6 = '2001:2:0:ff::1';
export const CLIENT = { namespace: 'bench', name: 'client', v4: '198.18.254.10', v6: '2001:2:0:fe::a' } as const;
export const SERVER = { namespace: 'bench', name: 'server', v4: '198.18.254.20', v6: '2001:2:0:fe::14' } as const;

/** Server ports (see bench/flows.ts); the bench policies allow exactly these ranges. */
export const TCP_PORTS = { lo: 5100, hi: 5399 } as const;
export const UDP_PORTS = { lo: 5400, hi: 5499 } as const;

/** Synthetic pods per policy (and at least MIN_PODS), and policies per namespace. */
const PODS_PER_POLICY = 1;
const MIN_PODS = 40;
const POLICIES_PER_NAMESPACE = 10;
/** 198.18.0.16 + i stays below the real pods' 198.18.254.0/24 up to here. */
const MAX_VIRTUAL_PODS = 64_000;

export interface FlowCluster {
  /** Everything: what the agent loads and the nftables ruleset is compiled from. */
  readonly state: ClusterState;
  /** Only the real pods (and the node): what the lab builds. */
  readonly labState: ClusterState;
  readonly policies: number;
  readonly pods: number;
  readonly namespaces: number;
}

const sel = (matchLabels: Record<string, string>): LabelSelector => ({ matchLabels, matchExpressions: [] });

export function flowCluster(policies: number): FlowCluster {
  if (!Number.isInteger(policies) || policies < 2 || policies > 100_000) throw new Error(`policies must be an integer from 2 to 100000, not ${policies}`);
  const synthPolicies = policies - 2;
  const pods = Math.min(MAX_VIRTUAL_PODS, Math.max(MIN_PODS, policies * PODS_PER_POLICY));
  const namespaces = Math.max(2, Math.ceil(policies / POLICIES_PER_NAMESPACE));
  const synth = syntheticCluster({ name: `P${policies}`, pods, policies: synthPolicies, namespaces }).state;

  const benchNs: NamespaceInfo = { name: 'bench', labels: { [NS_NAME_LABEL]: 'bench', team: 'bench' } };
  const real: PodInfo[] = [
    { namespace: CLIENT.namespace, name: CLIENT.name, ips: [CLIENT.v4, CLIENT.v6], labels: { app: 'bench-client' }, namedPorts: [], node: BENCH_NODE, hostNetwork: false },
    { namespace: SERVER.namespace, name: SERVER.name, ips: [SERVER.v4, SERVER.v6], labels: { app: 'bench-server' }, namedPorts: [], node: BENCH_NODE, hostNetwork: false },
  ];
  const benchPolicies: PolicySpec[] = [
    {
      namespace: 'bench',
      name: 'server-allow-client',
      valid: true,
      podSelector: sel({ app: 'bench-server' }),
      policyTypes: ['Ingress'],
      ingress: [
        {
          peers: [{ podSelector: sel({ app: 'bench-client' }), namespaceSelector: undefined, ipBlock: undefined }],
          ports: [
            { protocol: 'TCP', port: TCP_PORTS.lo, endPort: TCP_PORTS.hi },
            { protocol: 'UDP', port: UDP_PORTS.lo, endPort: UDP_PORTS.hi },
          ],
        },
      ],
      egress: [],
    },
    {
      namespace: 'bench',
      name: 'client-egress',
      valid: true,
      podSelector: sel({ app: 'bench-client' }),
      policyTypes: ['Egress'],
      ingress: [],
      egress: [
        {
          peers: [{ podSelector: sel({ app: 'bench-server' }), namespaceSelector: sel({ team: 'bench' }), ipBlock: undefined }],
          ports: [
            { protocol: 'TCP', port: TCP_PORTS.lo, endPort: TCP_PORTS.hi },
            { protocol: 'UDP', port: UDP_PORTS.lo, endPort: UDP_PORTS.hi },
          ],
        },
      ],
    },
  ];
  const node: NodeInfo = { name: BENCH_NODE, addresses: [NODE_V4, NODE_V6] };
  // The synthetic DNS pod sits in 198.19.0.0/16 (the lab's "external" range); it stays virtual.
  const state: ClusterState = {
    namespaces: [...synth.namespaces, benchNs],
    pods: [...synth.pods, ...real],
    nodes: [node],
    policies: [...synth.policies, ...benchPolicies],
  };
  const labState: ClusterState = { namespaces: [benchNs], pods: real, nodes: [node], policies: [] };
  return { state, labState, policies, pods: state.pods.length, namespaces: state.namespaces.length };
}

// ---------------------------------------------------------------------------------------------
// ClusterState -> one JSON `List` manifest (the format the agent's --manifests folder reads)

export function writeManifests(state: ClusterState, dir: string): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'cluster.json'), `${JSON.stringify({ apiVersion: 'v1', kind: 'List', items: toManifestObjects(state) })}\n`);
  return dir;
}
