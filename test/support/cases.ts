// The named table of NetworkPolicy cases, shared by the reference evaluator's tests and the
// engine's: every case is checked against both, with expectations derived by hand from the
// API text.
import type { ClusterState, PolicySpec } from '../../src/model/types.js';
import { NS_NAME_LABEL } from '../../src/model/types.js';
import type { RefFlow, RefResult } from '../../src/policy/reference.js';
import { expr, flow, makeCluster, makeHostPod, makeInvalidPolicy, makeNode, makeNs, makePod, makePolicy, type PolicyInput } from './builders.js';

// ---------------------------------------------------------------------------------------------
// A small cluster shared by the table.

export const IP = {
  web: '198.18.0.10',
  web6: '2001:2::10',
  api: '198.18.0.20',
  api6: '2001:2::20',
  db: '198.18.0.30',
  api2: '198.18.1.20',
  tool: '198.18.1.30',
  n1: '198.18.200.1',
  n2: '198.18.200.2',
  agent: '198.18.200.11', // host-network pod on n1 (an extra node address)
  agent2: '198.18.200.12', // host-network pod on n2
  ext: '198.19.0.1',
  ext2: '198.19.1.1',
  ext6: '2001:2:0:1::1',
} as const;

const namespaces = [makeNs('prod', { env: 'prod', team: 'a' }), makeNs('dev', { env: 'dev' }), makeNs('kube-system')];
const nodes = [makeNode('n1', [IP.n1, '2001:2:0:ff::1']), makeNode('n2', [IP.n2])];
const pods = [
  makePod('prod/web-1', { app: 'web' }, { ips: [IP.web, IP.web6], namedPorts: [{ name: 'http', port: 8080 }], node: 'n1' }),
  makePod('prod/api-1', { app: 'api', tier: 'x' }, { ips: [IP.api, IP.api6], node: 'n1' }),
  makePod('prod/db-1', { app: 'db' }, { ips: [IP.db], namedPorts: [{ name: 'dns', port: 53, protocol: 'UDP' }], node: 'n2' }),
  makePod('dev/api-2', { app: 'api' }, { ips: [IP.api2], node: 'n2' }),
  makePod('dev/tool', {}, { ips: [IP.tool] }), // no labels, not scheduled
  makeHostPod('kube-system/agent', 'n1', [IP.agent], { app: 'web' }),
  makeHostPod('kube-system/agent-2', 'n2', [IP.agent2], { app: 'api' }),
];

export function cluster(...policies: PolicySpec[]): ClusterState {
  return makeCluster({ namespaces, nodes, pods, policies });
}

/** A policy selecting prod/web-1 for ingress with the given rules. */
function webIngress(name: string, ingress: PolicyInput['ingress']): PolicySpec {
  return makePolicy(`prod/${name}`, { podSelector: { app: 'web' }, ingress });
}

export type Expect = Partial<RefResult>;
export interface Check {
  flow: RefFlow;
  opts?: { localNode?: string };
  expect: Expect;
}
export interface Case {
  name: string;
  state: ClusterState;
  checks: Check[];
}

const ALLOW: Expect = { allowed: true };
const DENY_IN: Expect = { allowed: false, ingress: 'denied' };

export const cases: Case[] = [
  {
    name: 'no policy: everything allowed, both sides not isolated',
    state: cluster(),
    checks: [
      { flow: flow(IP.api, IP.web, 80), expect: { allowed: true, egress: 'not-isolated', ingress: 'not-isolated' } },
      { flow: flow(IP.ext, IP.web, 80), expect: { allowed: true, egress: 'not-a-pod', ingress: 'not-isolated' } },
      { flow: flow(IP.web, IP.ext, 443), expect: { allowed: true, egress: 'not-isolated', ingress: 'not-a-pod' } },
    ],
  },
  {
    name: 'default deny ingress isolates every pod of its namespace, only there',
    state: cluster(makePolicy('prod/deny-all')),
    checks: [
      { flow: flow(IP.api, IP.web, 80), expect: { allowed: false, egress: 'not-isolated', ingress: 'denied' } },
      { flow: flow(IP.ext, IP.db, 53, 'UDP'), expect: { allowed: false, egress: 'not-a-pod', ingress: 'denied' } },
      { flow: flow(IP.api2, IP.tool, 80), expect: { allowed: true, egress: 'not-isolated', ingress: 'not-isolated' } },
      // Egress from prod is not restricted by an Ingress-only policy.
      { flow: flow(IP.web, IP.tool, 80), expect: { allowed: true, egress: 'not-isolated', ingress: 'not-isolated' } },
    ],
  },
  {
    name: 'default deny egress',
    state: cluster(makePolicy('prod/deny-egress', { policyTypes: ['Egress'] })),
    checks: [
      { flow: flow(IP.web, IP.db, 53, 'UDP'), expect: { allowed: false, egress: 'denied', ingress: 'not-isolated' } },
      { flow: flow(IP.web, IP.ext, 443), expect: { allowed: false, egress: 'denied', ingress: 'not-a-pod' } },
      { flow: flow(IP.tool, IP.web, 80), expect: { allowed: true, egress: 'not-isolated', ingress: 'not-isolated' } },
    ],
  },
  {
    name: 'allow from pods (podSelector alone = the policy namespace only)',
    state: cluster(webIngress('allow-api', [{ from: [{ podSelector: { app: 'api' } }] }])),
    checks: [
      { flow: flow(IP.api, IP.web, 80), expect: { allowed: true, ingress: 'allowed', ingressBy: [{ policy: 'prod/allow-api', rule: 0 }] } },
      { flow: flow(IP.db, IP.web, 80), expect: DENY_IN },
      { flow: flow(IP.api2, IP.web, 80), expect: DENY_IN }, // app=api, but in dev
      { flow: flow(IP.ext, IP.web, 80), expect: DENY_IN },
      { flow: flow(IP.web, IP.db, 80), expect: { allowed: true, ingress: 'not-isolated' } },
    ],
  },
  {
    name: 'allow from namespace (namespaceSelector alone = all pods of those namespaces)',
    state: cluster(webIngress('from-dev', [{ from: [{ namespaceSelector: { env: 'dev' } }] }])),
    checks: [
      { flow: flow(IP.api2, IP.web, 80), expect: { allowed: true, ingress: 'allowed' } },
      { flow: flow(IP.tool, IP.web, 80), expect: { allowed: true, ingress: 'allowed' } },
      { flow: flow(IP.api, IP.web, 80), expect: DENY_IN },
    ],
  },
  {
    name: 'namespaceSelector on the automatic kubernetes.io/metadata.name label',
    state: cluster(webIngress('from-dev-by-name', [{ from: [{ namespaceSelector: { [NS_NAME_LABEL]: 'dev' } }] }])),
    checks: [
      { flow: flow(IP.tool, IP.web, 80), expect: ALLOW },
      { flow: flow(IP.db, IP.web, 80), expect: DENY_IN },
    ],
  },
  {
    name: 'podSelector AND namespaceSelector in one peer',
    state: cluster(webIngress('dev-api', [{ from: [{ namespaceSelector: { env: 'dev' }, podSelector: { app: 'api' } }] }])),
    checks: [
      { flow: flow(IP.api2, IP.web, 80), expect: ALLOW },
      { flow: flow(IP.tool, IP.web, 80), expect: DENY_IN }, // right namespace, wrong pod
      { flow: flow(IP.api, IP.web, 80), expect: DENY_IN }, // right pod, wrong namespace
    ],
  },
  {
    name: 'two peers are ORed',
    state: cluster(webIngress('dev-or-api', [{ from: [{ namespaceSelector: { env: 'dev' } }, { podSelector: { app: 'api' } }] }])),
    checks: [
      { flow: flow(IP.api2, IP.web, 80), expect: ALLOW },
      { flow: flow(IP.tool, IP.web, 80), expect: ALLOW },
      { flow: flow(IP.api, IP.web, 80), expect: ALLOW },
      { flow: flow(IP.db, IP.web, 80), expect: DENY_IN },
    ],
  },
  {
    name: 'matchExpressions In',
    state: cluster(webIngress('in', [{ from: [{ podSelector: { matchExpressions: [expr('app', 'In', 'api', 'db')] } }] }])),
    checks: [
      { flow: flow(IP.db, IP.web, 80), expect: ALLOW },
      { flow: flow(IP.api, IP.web, 80), expect: ALLOW },
      { flow: flow(IP.tool, IP.web, 80), expect: DENY_IN },
      // A pod's traffic to itself is loopback: allowed whatever the policies.
      { flow: flow(IP.web, IP.web, 80), expect: { allowed: true, ingress: 'loopback' } },
    ],
  },
  {
    name: 'matchExpressions NotIn matches pods without the key',
    state: cluster(
      webIngress('not-api', [{ from: [{ namespaceSelector: {}, podSelector: { matchExpressions: [expr('app', 'NotIn', 'api')] } }] }]),
    ),
    checks: [
      { flow: flow(IP.tool, IP.web, 80), expect: ALLOW }, // no app label at all
      { flow: flow(IP.db, IP.web, 80), expect: ALLOW },
      { flow: flow(IP.api2, IP.web, 80), expect: DENY_IN },
    ],
  },
  {
    name: 'matchExpressions Exists',
    state: cluster(webIngress('has-tier', [{ from: [{ podSelector: { matchExpressions: [expr('tier', 'Exists')] } }] }])),
    checks: [
      { flow: flow(IP.api, IP.web, 80), expect: ALLOW },
      { flow: flow(IP.db, IP.web, 80), expect: DENY_IN },
    ],
  },
  {
    name: 'matchExpressions DoesNotExist (with matchLabels, ANDed)',
    state: cluster(
      webIngress('no-app', [{ from: [{ namespaceSelector: { matchLabels: { env: 'dev' } }, podSelector: { matchExpressions: [expr('app', 'DoesNotExist')] } }] }]),
    ),
    checks: [
      { flow: flow(IP.tool, IP.web, 80), expect: ALLOW },
      { flow: flow(IP.api2, IP.web, 80), expect: DENY_IN },
    ],
  },
  {
    name: 'empty from = all sources, external addresses included',
    state: cluster(webIngress('port-80', [{ ports: [{ port: 80 }] }])),
    checks: [
      { flow: flow(IP.ext, IP.web, 80), expect: { allowed: true, egress: 'not-a-pod', ingress: 'allowed', ingressBy: [{ policy: 'prod/port-80', rule: 0 }] } },
      { flow: flow(IP.api2, IP.web, 80), expect: ALLOW },
      { flow: flow(IP.ext, IP.web, 81), expect: DENY_IN },
    ],
  },
  {
    name: 'ipBlock with except',
    state: cluster(webIngress('ext', [{ from: [{ ipBlock: { cidr: '198.19.0.0/16', except: ['198.19.0.0/24'] } }] }])),
    checks: [
      { flow: flow(IP.ext2, IP.web, 80), expect: ALLOW },
      { flow: flow(IP.ext, IP.web, 80), expect: DENY_IN },
      { flow: flow(IP.api, IP.web, 80), expect: DENY_IN },
    ],
  },
  {
    name: 'ipBlock matches pod addresses too',
    state: cluster(webIngress('api-ip', [{ from: [{ ipBlock: `${IP.api}/32` }] }])),
    checks: [
      { flow: flow(IP.api, IP.web, 80), expect: ALLOW },
      { flow: flow(IP.db, IP.web, 80), expect: DENY_IN },
    ],
  },
  {
    name: 'IPv6: ipBlock, selectors and non-canonical flow text',
    state: cluster(
      webIngress('v6', [{ from: [{ ipBlock: '2001:2::/48' }] }]),
      makePolicy('prod/v4-only', { podSelector: { app: 'db' }, ingress: [{ from: [{ ipBlock: '0.0.0.0/0' }] }] }),
    ),
    checks: [
      { flow: flow('2001:0002:0000:0000:0000:0000:0000:0020', IP.web6, 80), expect: ALLOW },
      { flow: flow(IP.ext6, '2001:2::10', 80), expect: ALLOW },
      { flow: flow(IP.api, IP.web, 80), expect: DENY_IN }, // v4 source, v6 block
      // 0.0.0.0/0 never matches an IPv6 address (db has no v6 here, so test against web6 -> db is moot).
      { flow: flow(IP.api6, IP.web6, 80, 'UDP'), expect: ALLOW },
    ],
  },
  {
    name: 'IPv4 ipBlock 0.0.0.0/0 does not match IPv6 sources',
    state: cluster(webIngress('v4-all', [{ from: [{ ipBlock: '0.0.0.0/0' }] }])),
    checks: [
      { flow: flow(IP.ext, IP.web, 80), expect: ALLOW },
      { flow: flow(IP.ext6, IP.web6, 80), expect: DENY_IN },
    ],
  },
  {
    name: 'numeric port and port range (inclusive)',
    state: cluster(webIngress('ports', [{ ports: [{ port: 80 }, { port: 8000, endPort: 9000 }] }])),
    checks: [
      { flow: flow(IP.api, IP.web, 80), expect: ALLOW },
      { flow: flow(IP.api, IP.web, 81), expect: DENY_IN },
      { flow: flow(IP.api, IP.web, 8000), expect: ALLOW },
      { flow: flow(IP.api, IP.web, 9000), expect: ALLOW },
      { flow: flow(IP.api, IP.web, 9001), expect: DENY_IN },
    ],
  },
  {
    name: 'protocol mismatch; absent port = every port of that protocol',
    state: cluster(webIngress('udp', [{ ports: [{ port: 80, protocol: 'UDP' }, { protocol: 'SCTP' }] }])),
    checks: [
      { flow: flow(IP.api, IP.web, 80, 'TCP'), expect: DENY_IN },
      { flow: flow(IP.api, IP.web, 80, 'UDP'), expect: ALLOW },
      { flow: flow(IP.api, IP.web, 12345, 'SCTP'), expect: ALLOW },
      { flow: flow(IP.api, IP.web, 12345, 'UDP'), expect: DENY_IN },
    ],
  },
  {
    name: 'named port on ingress resolves against the destination pod',
    state: cluster(webIngress('http', [{ ports: ['http'] }])),
    checks: [
      { flow: flow(IP.api, IP.web, 8080), expect: ALLOW },
      { flow: flow(IP.api, IP.web, 80), expect: DENY_IN },
      { flow: flow(IP.api, IP.web, 8080, 'UDP'), expect: DENY_IN }, // http is TCP
    ],
  },
  {
    name: 'named port on egress resolves against the destination pod',
    state: cluster(makePolicy('prod/web-dns', { podSelector: { app: 'web' }, policyTypes: ['Egress'], egress: [{ ports: [{ port: 'dns', protocol: 'UDP' }] }] })),
    checks: [
      { flow: flow(IP.web, IP.db, 53, 'UDP'), expect: { allowed: true, egress: 'allowed', egressBy: [{ policy: 'prod/web-dns', rule: 0 }] } },
      { flow: flow(IP.web, IP.db, 53, 'TCP'), expect: { allowed: false, egress: 'denied' } },
      { flow: flow(IP.web, IP.api, 53, 'UDP'), expect: { allowed: false, egress: 'denied' } }, // api has no dns port
    ],
  },
  {
    name: 'named port to an external or host-network destination never matches',
    state: cluster(makePolicy('prod/web-http-out', { podSelector: { app: 'web' }, policyTypes: ['Egress'], egress: [{ ports: ['http', 'dns'] }] })),
    checks: [
      { flow: flow(IP.web, IP.ext, 8080), expect: { allowed: false, egress: 'denied', ingress: 'not-a-pod' } },
      { flow: flow(IP.web, IP.agent, 8080), expect: { allowed: false, egress: 'denied', ingress: 'not-a-pod' } },
      // Only web declares `http`, so the only pod destination is web itself: loopback.
      { flow: flow(IP.web, IP.web, 8080), expect: { allowed: true, egress: 'loopback' } },
    ],
  },
  {
    name: 'egress to pods by selector and to an ipBlock',
    state: cluster(
      makePolicy('prod/web-out', {
        podSelector: { app: 'web' },
        egress: [{ to: [{ podSelector: { app: 'db' } }], ports: [{ port: 5432 }] }, { to: [{ ipBlock: '198.19.0.0/16' }] }],
      }),
    ),
    checks: [
      { flow: flow(IP.web, IP.db, 5432), expect: { allowed: true, egress: 'allowed', egressBy: [{ policy: 'prod/web-out', rule: 0 }] } },
      { flow: flow(IP.web, IP.db, 80), expect: { allowed: false, egress: 'denied' } },
      { flow: flow(IP.web, IP.ext, 443), expect: { allowed: true, egress: 'allowed', egressBy: [{ policy: 'prod/web-out', rule: 1 }] } },
      // Default policyTypes with egress rules: ['Ingress', 'Egress'], and no ingress rule.
      { flow: flow(IP.api, IP.web, 80), expect: { allowed: false, egress: 'not-isolated', ingress: 'denied' } },
    ],
  },
  {
    name: 'two policies are a union; every allowing (policy, rule) is listed in policy order',
    state: cluster(
      webIngress('from-api', [{ from: [{ podSelector: { app: 'db' } }] }, { from: [{ podSelector: { app: 'api' } }], ports: [{ port: 80 }] }]),
      webIngress('port-80', [{ ports: [{ port: 80 }] }]),
      webIngress('port-443', [{ ports: [{ port: 443 }] }]),
    ),
    checks: [
      {
        flow: flow(IP.api, IP.web, 80),
        expect: { allowed: true, ingress: 'allowed', ingressBy: [{ policy: 'prod/from-api', rule: 1 }, { policy: 'prod/port-80', rule: 0 }] },
      },
      { flow: flow(IP.ext, IP.web, 443), expect: { allowed: true, ingressBy: [{ policy: 'prod/port-443', rule: 0 }] } },
      { flow: flow(IP.ext, IP.web, 22), expect: DENY_IN },
    ],
  },
  {
    name: 'source egress AND destination ingress are both required',
    state: cluster(
      makePolicy('prod/api-out', { podSelector: { app: 'api' }, policyTypes: ['Egress'], egress: [{ to: [{ podSelector: { app: 'web' } }] }] }),
      webIngress('web-in', [{ from: [{ podSelector: { app: 'db' } }] }]),
    ),
    checks: [
      { flow: flow(IP.api, IP.web, 80), expect: { allowed: false, egress: 'allowed', ingress: 'denied' } },
      { flow: flow(IP.api, IP.db, 80), expect: { allowed: false, egress: 'denied', ingress: 'not-isolated' } },
      { flow: flow(IP.db, IP.web, 80), expect: { allowed: true, egress: 'not-isolated', ingress: 'allowed' } },
    ],
  },
  {
    name: 'node-local traffic is always allowed (node addresses and host-network pod addresses)',
    state: cluster(makePolicy('prod/deny-all'), makePolicy('dev/deny-all')),
    checks: [
      { flow: flow(IP.n1, IP.web, 80), expect: { allowed: true, egress: 'not-a-pod', ingress: 'node-local' } },
      { flow: flow('2001:2:0:ff::1', IP.web6, 80), expect: { allowed: true, ingress: 'node-local' } },
      { flow: flow(IP.agent, IP.api, 80), expect: { allowed: true, ingress: 'node-local' } },
      { flow: flow(IP.n2, IP.web, 80), expect: { allowed: false, egress: 'not-a-pod', ingress: 'denied' } }, // other node
      { flow: flow(IP.agent2, IP.web, 80), expect: { allowed: false, ingress: 'denied' } },
      { flow: flow(IP.n2, IP.api2, 80), expect: { allowed: true, ingress: 'node-local' } },
    ],
  },
  {
    name: 'node-local for an unscheduled pod uses opts.localNode',
    state: cluster(makePolicy('dev/deny-all')),
    checks: [
      { flow: flow(IP.n1, IP.tool, 80), expect: { allowed: false, ingress: 'denied' } },
      { flow: flow(IP.n1, IP.tool, 80), opts: { localNode: 'n1' }, expect: { allowed: true, ingress: 'node-local' } },
      { flow: flow(IP.agent, IP.tool, 80), opts: { localNode: 'n1' }, expect: { allowed: true, ingress: 'node-local' } },
      { flow: flow(IP.n2, IP.tool, 80), opts: { localNode: 'n1' }, expect: { allowed: false, ingress: 'denied' } },
      // pod.node wins over localNode.
      { flow: flow(IP.n1, IP.api2, 80), opts: { localNode: 'n1' }, expect: { allowed: false, ingress: 'denied' } },
    ],
  },
  {
    name: 'host-network pods are not pods: never selected, never matched by selector peers',
    state: cluster(
      makePolicy('kube-system/deny-all', { policyTypes: ['Ingress', 'Egress'] }),
      webIngress('all-pods', [{ from: [{ namespaceSelector: {}, podSelector: {} }] }]),
    ),
    checks: [
      { flow: flow(IP.api, IP.agent, 80), expect: { allowed: true, egress: 'not-isolated', ingress: 'not-a-pod' } },
      { flow: flow(IP.agent2, IP.api, 80), expect: { allowed: true, egress: 'not-a-pod', ingress: 'not-isolated' } },
      { flow: flow(IP.agent2, IP.web, 80), expect: { allowed: false, egress: 'not-a-pod', ingress: 'denied' } },
      { flow: flow(IP.tool, IP.web, 80), expect: { allowed: true, ingress: 'allowed' } },
    ],
  },
  {
    name: 'an invalid policy isolates with no rules (fail-closed); other policies still add',
    state: cluster(
      makeInvalidPolicy('prod/broken', { app: 'web' }, ['Ingress', 'Egress']),
      makeInvalidPolicy('dev/broken-selector', null, ['Ingress']),
      makePolicy('prod/db-from-web', { podSelector: { app: 'db' }, ingress: [{ from: [{ podSelector: { app: 'web' } }] }] }),
    ),
    checks: [
      { flow: flow(IP.api, IP.web, 80), expect: { allowed: false, egress: 'not-isolated', ingress: 'denied' } },
      { flow: flow(IP.web, IP.ext, 80), expect: { allowed: false, egress: 'denied' } },
      { flow: flow(IP.web, IP.db, 80), expect: { allowed: false, egress: 'denied', ingress: 'allowed' } },
      // podSelector undefined selects nothing.
      { flow: flow(IP.api2, IP.tool, 80), expect: { allowed: true, egress: 'not-isolated', ingress: 'not-isolated' } },
    ],
  },
  {
    name: 'invalid policy plus a valid allowing policy: the union allows',
    state: cluster(makeInvalidPolicy('prod/broken', { app: 'web' }), webIngress('allow-all', [{}])),
    checks: [{ flow: flow(IP.ext, IP.web, 80), expect: { allowed: true, ingress: 'allowed', ingressBy: [{ policy: 'prod/allow-all', rule: 0 }] } }],
  },
  {
    name: 'policyTypes [Egress] with ingress rules: the ingress rules are ignored',
    state: cluster(
      makePolicy('prod/egress-only', { podSelector: { app: 'web' }, policyTypes: ['Egress'], ingress: [{}], egress: [{ to: [{ ipBlock: '198.19.0.0/16' }] }] }),
    ),
    checks: [
      { flow: flow(IP.api, IP.web, 80), expect: { allowed: true, ingress: 'not-isolated' } },
      { flow: flow(IP.web, IP.api, 80), expect: { allowed: false, egress: 'denied' } },
      { flow: flow(IP.web, IP.ext, 80), expect: { allowed: true, egress: 'allowed' } },
    ],
  },
  {
    name: 'policyTypes [Egress] with ingress rules does not open an ingress-isolated pod',
    state: cluster(
      makePolicy('prod/deny-all'),
      makePolicy('prod/egress-only', { podSelector: {}, policyTypes: ['Egress'], ingress: [{}], egress: [{}] }),
    ),
    checks: [{ flow: flow(IP.api, IP.web, 80), expect: { allowed: false, egress: 'allowed', ingress: 'denied' } }],
  },
  {
    name: 'unknown namespace of the peer: its labels are {}',
    state: makeCluster({
      autoNamespaces: false,
      namespaces: [makeNs('prod')],
      pods: [makePod('prod/web-1', { app: 'web' }, { ips: [IP.web] }), makePod('ghost/p', { app: 'api' }, { ips: [IP.ext] })],
      policies: [
        webIngress('any-ns', [{ from: [{ namespaceSelector: { matchExpressions: [expr(NS_NAME_LABEL, 'DoesNotExist')] } }], ports: [{ port: 1 }] }]),
        webIngress('named-ns', [{ from: [{ namespaceSelector: { [NS_NAME_LABEL]: 'ghost' } }], ports: [{ port: 2 }] }]),
      ],
    }),
    checks: [
      { flow: flow(IP.ext, IP.web, 1), expect: ALLOW },
      { flow: flow(IP.ext, IP.web, 2), expect: DENY_IN },
    ],
  },
];

