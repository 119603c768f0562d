// Synthetic clusters for the decision benchmark: deterministic (seeded), with a realistic mix
// of labels, selectors, ports and ipBlocks. Addresses: pods get 2001:2::/48 addresses and, while
// the range lasts, 198.18.0.0/15 ones; "external" clients come from 198.19.128.0/17. Nothing is
// ever sent to them: the benchmark only decides flows in memory.
import type { ClusterState, LabelSelector, NamespaceInfo, PodInfo, PolicyRule, PolicySpec } from '../src/model/types.js';
import { NS_NAME_LABEL } from '../src/model/types.js';

export interface SizeSpec {
  readonly name: string;
  readonly pods: number;
  readonly policies: number;
  readonly namespaces: number;
}

export const SIZES: readonly SizeSpec[] = [
  { name: 'S', pods: 100, policies: 10, namespaces: 5 },
  { name: 'M', pods: 10_000, policies: 1_000, namespaces: 100 },
  { name: 'L', pods: 150_000, policies: 10_000, namespaces: 10_000 },
];

/** mulberry32: a tiny seeded PRNG so every run builds the same cluster. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const TIERS = ['web', 'api', 'db', 'cache'];
const ENVS = ['prod', 'staging', 'dev'];
const V4_POD_LIMIT = 120_000; // 198.18.0.0/15 holds 131,072 addresses; keep the rest for nodes

export function podV4(i: number): string {
  const n = 0xc6120000 + 16 + i; // 198.18.0.16 + i
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}
export function podV6(i: number): string {
  return `2001:2::${((i >>> 16) & 0xffff).toString(16)}:${(i & 0xffff).toString(16)}`;
}
export function externalV4(i: number): string {
  return `198.19.${128 + ((i >>> 8) & 127)}.${i & 255}`;
}

const sel = (matchLabels: Record<string, string>, matchExpressions: LabelSelector['matchExpressions'] = []): LabelSelector => ({
  matchLabels,
  matchExpressions,
});

export interface SyntheticCluster {
  readonly state: ClusterState;
  /** Deployments (app names) per namespace. */
  readonly appsPerNs: number;
}

export function syntheticCluster(size: SizeSpec, seed = 1): SyntheticCluster {
  const rand = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const nsCount = size.namespaces;
  const podsPerNs = Math.max(1, Math.floor(size.pods / nsCount));
  const appsPerNs = Math.max(1, Math.min(10, Math.floor(podsPerNs / 5)));

  const namespaces: NamespaceInfo[] = [];
  for (let n = 0; n < nsCount; n++) {
    const name = `ns-${n}`;
    namespaces.push({ name, labels: { [NS_NAME_LABEL]: name, team: `team-${n % 20}`, env: ENVS[n % 3]! } });
  }
  namespaces.push({ name: 'kube-system', labels: { [NS_NAME_LABEL]: 'kube-system' } });

  const pods: PodInfo[] = [];
  for (let i = 0; i < size.pods; i++) {
    const n = i % nsCount;
    const local = Math.floor(i / nsCount);
    const app = local % appsPerNs;
    const tier = TIERS[app % TIERS.length]!;
    const ips = i < V4_POD_LIMIT ? [podV4(i), podV6(i)] : [podV6(i)];
    pods.push({
      namespace: `ns-${n}`,
      name: `app-${app}-${local}`,
      ips,
      labels: { app: `app-${app}`, tier, version: `v${(local >>> 4) % 2}` },
      namedPorts: tier === 'web' ? [{ name: 'http', port: 8080, protocol: 'TCP' }] : tier === 'db' ? [{ name: 'sql', port: 5432, protocol: 'TCP' }] : [],
      node: `node-${i % 50}`,
      hostNetwork: false,
    });
  }
  pods.push({
    namespace: 'kube-system',
    name: 'coredns',
    ips: ['198.19.0.53', '2001:2:0:53::53'],
    labels: { 'k8s-app': 'kube-dns' },
    namedPorts: [{ name: 'dns', port: 53, protocol: 'UDP' }],
    node: 'node-0',
    hostNetwork: false,
  });

  const policies: PolicySpec[] = [];
  for (let k = 0; k < size.policies; k++) {
    const n = k % nsCount;
    const ns = `ns-${n}`;
    const target = `app-${Math.floor(rand() * appsPerNs)}`;
    const from = `app-${Math.floor(rand() * appsPerNs)}`;
    const kind = (k + Math.floor(k / nsCount)) % 6;
    const base = { namespace: ns, name: `pol-${k}`, valid: true };
    const rules: PolicyRule[] = [];
    let podSelector: LabelSelector = sel({ app: target });
    let egress: PolicyRule[] = [];
    let policyTypes: PolicySpec['policyTypes'] = ['Ingress'];
    switch (kind) {
      case 0: // default deny ingress for the namespace, plus same-namespace web access
        podSelector = sel({});
        rules.push({ peers: [{ podSelector: sel({ tier: 'web' }), namespaceSelector: undefined, ipBlock: undefined }], ports: [] });
        break;
      case 1: // app-to-app on a port
        rules.push({ peers: [{ podSelector: sel({ app: from }), namespaceSelector: undefined, ipBlock: undefined }], ports: [{ protocol: 'TCP', port: 8080, endPort: undefined }] });
        break;
      case 2: // from the same team's web tier in any namespace, named port
        rules.push({
          peers: [{ podSelector: sel({ tier: 'web' }), namespaceSelector: sel({ team: `team-${n % 20}` }), ipBlock: undefined }],
          ports: [{ protocol: 'TCP', port: pick(['http', 'sql']), endPort: undefined }],
        });
        break;
      case 3: // external clients by CIDR, with except, on a port range
        rules.push({
          peers: [
            { podSelector: undefined, namespaceSelector: undefined, ipBlock: { cidr: '198.19.128.0/17', except: [`198.19.${128 + (k % 64)}.0/24`] } },
            { podSelector: undefined, namespaceSelector: undefined, ipBlock: { cidr: `198.18.${(k * 7) % 256}.0/24`, except: [] } },
          ],
          ports: [{ protocol: 'TCP', port: 8000, endPort: 8999 }],
        });
        break;
      case 4: // expressions over tiers and environments
        podSelector = sel({}, [{ key: 'tier', operator: 'In', values: ['api', 'db'] }]);
        rules.push({
          peers: [
            {
              podSelector: sel({}, [{ key: 'version', operator: 'NotIn', values: ['v9'] }]),
              namespaceSelector: sel({}, [{ key: 'env', operator: 'NotIn', values: ['dev'] }, { key: 'team', operator: 'Exists', values: [] }]),
              ipBlock: undefined,
            },
          ],
          ports: [{ protocol: 'TCP', port: 8080, endPort: undefined }, { protocol: 'UDP', port: undefined, endPort: undefined }],
        });
        break;
      default: // egress: same namespace plus DNS
        policyTypes = ['Egress'];
        egress = [
          { peers: [{ podSelector: sel({}), namespaceSelector: undefined, ipBlock: undefined }], ports: [] },
          { peers: [{ podSelector: sel({ 'k8s-app': 'kube-dns' }), namespaceSelector: sel({ [NS_NAME_LABEL]: 'kube-system' }), ipBlock: undefined }], ports: [{ protocol: 'UDP', port: 53, endPort: undefined }] },
        ];
        break;
    }
    policies.push({ ...base, podSelector, policyTypes, ingress: policyTypes.includes('Ingress') ? rules : [], egress });
  }

  return { state: { namespaces, pods, nodes: [], policies }, appsPerNs };
}
