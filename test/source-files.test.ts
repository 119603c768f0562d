// The manifests-folder source: table-driven cases, each a YAML (or JSON) snippet and the
// expected model or the expected errors (code, object, path).
import { chmodSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ErrorCodes, type ErrorCode, formatManifestError } from '../src/errors.js';
import type { PolicySpec } from '../src/model/types.js';
import { MAX_NESTING } from '../src/source/files/documents.js';
import { type LoadResult, loadManifestPaths, loadManifestTexts } from '../src/source/files/load.js';

const FILE = 'm.yaml';

function load(text: string, file = FILE): LoadResult {
  return loadManifestTexts([{ file, text }]);
}

/** A NetworkPolicy in `default` with the given flow-style spec. */
function np(spec: string, name = 'p', extra = ''): string {
  return `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: ${name}}\nspec: ${spec}\n${extra}`;
}

/** A Pod in `default` with the given flow-style spec and status. */
function pod(name: string, spec = '{}', status = '{}', meta = ''): string {
  return `apiVersion: v1\nkind: Pod\nmetadata: {name: ${name}${meta}}\nspec: ${spec}\nstatus: ${status}\n`;
}

function ns(name: string, labels = '{}'): string {
  return `apiVersion: v1\nkind: Namespace\nmetadata: {name: ${name}, labels: ${labels}}\n`;
}

function node(name: string, addresses: string): string {
  return `apiVersion: v1\nkind: Node\nmetadata: {name: ${name}}\nstatus: {addresses: ${addresses}}\n`;
}

const docs = (...parts: string[]): string => parts.join('---\n');

function policy(r: LoadResult, name = 'p'): PolicySpec {
  const p = r.state.policies.find((x) => x.name === name);
  if (p === undefined) throw new Error(`no policy ${name}`);
  return p;
}

function labelsOf(l: Readonly<Record<string, string>>): Record<string, string> {
  return { ...l };
}

// ---------------------------------------------------------------------------------------------
// Valid input -> model

describe('valid manifests', () => {
  it('implies the namespace name label and the built-in namespaces', () => {
    const r = load(ns('prod', '{env: prod}'));
    expect(r.errors).toEqual([]);
    expect(r.state.namespaces.map((n) => n.name)).toEqual(['prod', 'default', 'kube-system', 'kube-public', 'kube-node-lease']);
    expect(labelsOf(r.state.namespaces[0]!.labels)).toEqual({ env: 'prod', 'kubernetes.io/metadata.name': 'prod' });
    expect(labelsOf(r.state.namespaces[2]!.labels)).toEqual({ 'kubernetes.io/metadata.name': 'kube-system' });
  });

  it('accepts the name label when it matches, and a declared built-in namespace replaces the implied one', () => {
    const r = load(docs(ns('kube-system', '{tier: control, kubernetes.io/metadata.name: kube-system}')));
    expect(r.errors).toEqual([]);
    const ks = r.state.namespaces.filter((n) => n.name === 'kube-system');
    expect(ks).toHaveLength(1);
    expect(labelsOf(ks[0]!.labels)).toEqual({ tier: 'control', 'kubernetes.io/metadata.name': 'kube-system' });
  });

  it('puts objects without metadata.namespace in default', () => {
    const r = load(pod('web', '{}', '{podIP: 10.0.0.1}'));
    expect(r.errors).toEqual([]);
    expect(r.state.pods).toEqual([
      { namespace: 'default', name: 'web', ips: ['10.0.0.1'], labels: {}, namedPorts: [], node: undefined, hostNetwork: false },
    ]);
  });

  it('reads an empty metadata.namespace as default', () => {
    const r = load(pod('web', '{}', '{}', ', namespace: ""'));
    expect(r.errors).toEqual([]);
    expect(r.state.pods[0]!.namespace).toBe('default');
  });

  it('keeps a pod with no IP, and reads nodeName, hostNetwork and labels', () => {
    const r = load(pod('web', '{nodeName: node-1.example, hostNetwork: true}', '{}', ', labels: {app.kubernetes.io/name: web, empty: ""}'));
    expect(r.errors).toEqual([]);
    expect(r.state.pods[0]).toMatchObject({ ips: [], node: 'node-1.example', hostNetwork: true });
    expect(labelsOf(r.state.pods[0]!.labels)).toEqual({ 'app.kubernetes.io/name': 'web', empty: '' });
  });

  it('returns label maps without a prototype (a label named constructor is not inherited)', () => {
    const r = load(pod('web'));
    expect('constructor' in r.state.pods[0]!.labels).toBe(false);
  });

  it('reads named ports from containers and sidecar init containers only', () => {
    const spec = `{
      containers: [{name: a, ports: [{name: http, containerPort: 8080}, {containerPort: 9000}, {name: dns, containerPort: 53, protocol: UDP}]}],
      initContainers: [
        {name: sidecar, restartPolicy: Always, ports: [{name: metrics, containerPort: 9100, protocol: SCTP}]},
        {name: setup, ports: [{name: setup-port, containerPort: 7000}]}
      ]}`;
    const r = load(pod('web', spec));
    expect(r.errors).toEqual([]);
    expect(r.state.pods[0]!.namedPorts).toEqual([
      { name: 'http', port: 8080, protocol: 'TCP' },
      { name: 'dns', port: 53, protocol: 'UDP' },
      { name: 'metrics', port: 9100, protocol: 'SCTP' },
    ]);
  });

  it('ignores fields of spec/status it does not read', () => {
    const r = load(pod('web', '{containers: [{name: a, image: nginx, resources: {limits: {cpu: 1}}, ports: [{containerPort: 80, hostPort: 80}]}], volumes: []}', '{phase: Running, conditions: []}'));
    expect(r.errors).toEqual([]);
  });

  it.each([
    ['IPv6 canonicalised', '{podIP: "2001:DB8:0:0::1"}', ['2001:db8::1']],
    ['dual stack', '{podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}, {ip: "fd00::0001"}]}', ['10.0.0.1', 'fd00::1']],
    ['IPv6 first', '{podIPs: [{ip: "fd00::1"}, {ip: 10.0.0.1}]}', ['fd00::1', '10.0.0.1']],
    ['empty podIP', '{podIP: ""}', []],
  ])('pod IPs: %s', (_name, status, ips) => {
    const r = load(pod('web', '{}', status));
    expect(r.errors).toEqual([]);
    expect(r.state.pods[0]!.ips).toEqual(ips);
  });

  it('reads node InternalIP/ExternalIP addresses and ignores the other types', () => {
    const r = load(node('n1', '[{type: InternalIP, address: "2001:db8::0:5"}, {type: ExternalIP, address: 203.0.113.5}, {type: Hostname, address: n1}, {type: InternalDNS, address: n1.local}]'));
    expect(r.errors).toEqual([]);
    expect(r.state.nodes).toEqual([{ name: 'n1', addresses: ['2001:db8::5', '203.0.113.5'] }]);
  });

  it('reads multi-document YAML with empty documents and a trailing ---', () => {
    const r = load(`---\n# comment only\n---\n${ns('a')}---\n---\n${ns('b')}---\n`);
    expect(r.errors).toEqual([]);
    expect(r.state.namespaces.map((n) => n.name).slice(0, 2)).toEqual(['a', 'b']);
  });

  it('reads JSON', () => {
    const text = JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'j', namespace: 'default' }, status: { podIP: '10.0.0.9' } });
    const r = load(text, 'pod.json');
    expect(r.errors).toEqual([]);
    expect(r.state.pods[0]).toMatchObject({ name: 'j', ips: ['10.0.0.9'] });
  });

  it('reads v1 List and typed lists (items of a typed list may omit apiVersion/kind)', () => {
    const list = `apiVersion: v1\nkind: List\nitems:\n- ${'{apiVersion: v1, kind: Namespace, metadata: {name: a}}'}\n- {apiVersion: v1, kind: Service, metadata: {name: s}}\n`;
    const typed = 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicyList\nmetadata: {resourceVersion: "1"}\nitems:\n- {metadata: {name: p1}, spec: {podSelector: {}}}\n- {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: p2}, spec: {podSelector: {}}}\n';
    const r = load(docs(list, typed, 'apiVersion: v1\nkind: PodList\nitems: []\n'));
    expect(r.errors).toEqual([]);
    expect(r.state.namespaces[0]!.name).toBe('a');
    expect(r.state.policies.map((p) => p.name)).toEqual(['p1', 'p2']);
    expect(r.notices).toEqual([expect.stringContaining('skipped 1 object of kind Service (v1)')]);
  });

  it('accepts (and ignores) the standard metadata fields', () => {
    const meta = `{name: p, namespace: default, annotations: {a: b}, uid: "1", resourceVersion: "2", generation: 3, creationTimestamp: null,
      managedFields: [], ownerReferences: [], finalizers: [], generateName: p-, deletionTimestamp: "2024-01-01T00:00:00Z",
      deletionGracePeriodSeconds: 30, selfLink: /x}`;
    const r = load(`apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: ${meta}\nspec: {podSelector: {}}\n`);
    expect(r.errors).toEqual([]);
  });

  it('gives one notice per skipped kind, with counts', () => {
    const other = (kind: string, apiVersion: string, name: string): string => `apiVersion: ${apiVersion}\nkind: ${kind}\nmetadata: {name: ${name}}\n`;
    const r = load(docs(other('Service', 'v1', 'a'), other('Service', 'v1', 'b'), other('Deployment', 'apps/v1', 'c'), other('Service', 'v1', 'd')));
    expect(r.errors).toEqual([]);
    expect(r.notices).toEqual([
      'skipped 3 objects of kind Service (v1): netpold only reads Namespace, Pod, Node, NetworkPolicy',
      'skipped 1 object of kind Deployment (apps/v1): netpold only reads Namespace, Pod, Node, NetworkPolicy',
    ]);
  });

  it('hints at a kind written in the wrong case', () => {
    const r = load('apiVersion: networking.k8s.io/v1\nkind: networkpolicy\nmetadata: {name: x}\n');
    expect(r.notices[0]).toContain('did you mean kind: NetworkPolicy?');
  });
});

// ---------------------------------------------------------------------------------------------
// NetworkPolicy model

describe('NetworkPolicy model', () => {
  it('reads a complete policy', () => {
    const r = load(np(`{
      podSelector: {matchLabels: {app: web}, matchExpressions: [{key: tier, operator: In, values: [a, b]}, {key: canary, operator: DoesNotExist}]},
      policyTypes: [Ingress, Egress],
      ingress: [{from: [{podSelector: {matchLabels: {app: api}}, namespaceSelector: {}}, {ipBlock: {cidr: 198.18.1.5/16, except: [198.18.1.0/24]}}],
                 ports: [{port: 80}, {protocol: UDP, port: dns}, {port: 8000, endPort: 8080}, {protocol: SCTP}]}],
      egress: [{to: [{namespaceSelector: {matchExpressions: [{key: env, operator: NotIn, values: [dev]}]}}]}]}`));
    expect(r.errors).toEqual([]);
    expect(r.notices).toEqual([]);
    const p = policy(r);
    expect(p).toEqual({
      namespace: 'default',
      name: 'p',
      valid: true,
      podSelector: {
        matchLabels: { app: 'web' },
        matchExpressions: [
          { key: 'tier', operator: 'In', values: ['a', 'b'] },
          { key: 'canary', operator: 'DoesNotExist', values: [] },
        ],
      },
      policyTypes: ['Ingress', 'Egress'],
      ingress: [
        {
          peers: [
            { podSelector: { matchLabels: { app: 'api' }, matchExpressions: [] }, namespaceSelector: { matchLabels: {}, matchExpressions: [] }, ipBlock: undefined },
            { podSelector: undefined, namespaceSelector: undefined, ipBlock: { cidr: '198.18.0.0/16', except: ['198.18.1.0/24'] } },
          ],
          ports: [
            { protocol: 'TCP', port: 80, endPort: undefined },
            { protocol: 'UDP', port: 'dns', endPort: undefined },
            { protocol: 'TCP', port: 8000, endPort: 8080 },
            { protocol: 'SCTP', port: undefined, endPort: undefined },
          ],
        },
      ],
      egress: [
        {
          peers: [{ podSelector: undefined, namespaceSelector: { matchLabels: {}, matchExpressions: [{ key: 'env', operator: 'NotIn', values: ['dev'] }] }, ipBlock: undefined }],
          ports: [],
        },
      ],
    });
  });

  it.each([
    ['IPv4 host bits cleared', '198.18.1.5/16', '198.18.0.0/16'],
    ['IPv4 /0', '10.0.0.1/0', '0.0.0.0/0'],
    ['IPv4 /32', '10.0.0.1/32', '10.0.0.1/32'],
    ['IPv6 host bits cleared', '2001:DB8:1:2::1/48', '2001:db8:1::/48'],
    ['IPv6 /128', '2001:db8::0:1/128', '2001:db8::1/128'],
  ])('canonicalises ipBlock cidr: %s', (_name, cidr, expected) => {
    const r = load(np(`{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: "${cidr}"}}]}]}`));
    expect(r.errors).toEqual([]);
    expect(policy(r).ingress[0]!.peers[0]!.ipBlock).toEqual({ cidr: expected, except: [] });
  });

  // "If this field is not specified, it will default based on the existence of ingress or egress rules"
  it.each([
    ['absent, no rules', '{podSelector: {}}', ['Ingress']],
    ['absent, ingress rules', '{podSelector: {}, ingress: [{}]}', ['Ingress']],
    ['absent, egress rules', '{podSelector: {}, egress: [{}]}', ['Ingress', 'Egress']],
    ['absent, egress: []', '{podSelector: {}, egress: []}', ['Ingress']],
    ['absent, egress: null', '{podSelector: {}, egress: null}', ['Ingress']],
    ['empty list, egress rules', '{podSelector: {}, policyTypes: [], egress: [{}]}', ['Ingress', 'Egress']],
    ['null', '{podSelector: {}, policyTypes: null}', ['Ingress']],
    ['explicit Egress', '{podSelector: {}, policyTypes: [Egress]}', ['Egress']],
    ['explicit both', '{podSelector: {}, policyTypes: [Egress, Ingress]}', ['Egress', 'Ingress']],
  ])('defaults policyTypes: %s', (_name, spec, expected) => {
    const r = load(np(spec));
    expect(r.errors).toEqual([]);
    expect(policy(r).policyTypes).toEqual(expected);
  });

  it.each([
    ['absent', '{}'],
    ['null', '{from: null, ports: null}'],
    ['empty', '{from: [], ports: []}'],
  ])('rule fields %s become empty lists', (_name, rule) => {
    const r = load(np(`{podSelector: {}, ingress: [${rule}]}`));
    expect(r.errors).toEqual([]);
    expect(policy(r).ingress).toEqual([{ peers: [], ports: [] }]);
  });

  it.each([['ingress: []'], ['ingress: null'], ['']])('no ingress rules: %s', (field) => {
    const r = load(np(`{podSelector: {}${field === '' ? '' : `, ${field}`}}`));
    expect(r.errors).toEqual([]);
    expect(policy(r).ingress).toEqual([]);
  });

  it('accepts null and [] for optional selector parts', () => {
    const r = load(np('{podSelector: {matchLabels: null, matchExpressions: []}, ingress: [{from: [{podSelector: {}, namespaceSelector: null}, {ipBlock: {cidr: 10.0.0.0/8, except: null}}]}]}'));
    expect(r.errors).toEqual([]);
    expect(policy(r).ingress[0]!.peers[0]!.namespaceSelector).toBeUndefined();
  });

  it('notices rules for a direction policyTypes leaves out (the policy stays valid)', () => {
    const r = load(np('{podSelector: {}, policyTypes: [Ingress], egress: [{}, {}]}'));
    expect(r.errors).toEqual([]);
    expect(policy(r).valid).toBe(true);
    expect(r.notices).toEqual([
      'm.yaml: NetworkPolicy default/p: spec.egress has 2 rule(s) but spec.policyTypes [Ingress] does not include Egress; those rules have no effect',
    ]);
  });
});

// ---------------------------------------------------------------------------------------------
// Errors: each case is a snippet and the errors it must produce (all of them, in order)

interface ErrorCase {
  readonly name: string;
  readonly text: string;
  readonly errors: readonly { code: ErrorCode; path?: string | undefined; object?: string | undefined; message?: RegExp }[];
}

const NP = 'NetworkPolicy default/p';
const POD = 'Pod default/web';

const errorCases: ErrorCase[] = [
  // --- documents
  { name: 'a scalar document', text: 'hello\n', errors: [{ code: 'NETPOLD_E_OBJECT', object: undefined, message: /document 1 is "hello"/ }] },
  { name: 'a list document', text: '- a\n- b\n', errors: [{ code: 'NETPOLD_E_OBJECT', message: /document 1 is a list/ }] },
  { name: 'missing kind', text: 'apiVersion: v1\nmetadata: {name: x}\n', errors: [{ code: 'NETPOLD_E_OBJECT', message: /kind must be a non-empty string \(it is missing\)/ }] },
  { name: 'numeric apiVersion', text: 'apiVersion: 1\nkind: Pod\n', errors: [{ code: 'NETPOLD_E_OBJECT', message: /apiVersion .*got 1/ }] },
  { name: 'a null List item', text: 'apiVersion: v1\nkind: List\nitems: [null]\n', errors: [{ code: 'NETPOLD_E_OBJECT', message: /items\[0\] is empty/ }] },
  { name: 'List items not a list', text: 'apiVersion: v1\nkind: List\nitems: {a: 1}\n', errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'items' }] },
  { name: 'a YAML syntax error, with its line', text: 'apiVersion: v1\nkind: [Pod\nmetadata: {}\n', errors: [{ code: 'NETPOLD_E_PARSE', message: /line 3/ }] },
  { name: 'duplicate keys', text: 'apiVersion: v1\nkind: Pod\nkind: Pod\n', errors: [{ code: 'NETPOLD_E_PARSE', message: /unique.*line 3/ }] },
  { name: 'duplicate keys in JSON', text: '{"apiVersion": "v1",\n "apiVersion": "v1", "kind": "Pod"}', errors: [{ code: 'NETPOLD_E_PARSE', message: /line 2/ }] },
  {
    name: 'an alias bomb',
    text: `a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n`,
    errors: [{ code: 'NETPOLD_E_PARSE', message: /document 1/ }],
  },

  // --- kinds and apiVersions
  {
    name: 'extensions/v1beta1 NetworkPolicy',
    text: 'apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}}\n',
    errors: [{ code: 'NETPOLD_E_INVALID_VALUE', object: NP, path: 'apiVersion', message: /from apiVersion networking\.k8s\.io\/v1 only, got "extensions\/v1beta1"/ }],
  },
  { name: 'apps/v1 Pod', text: 'apiVersion: apps/v1\nkind: Pod\nmetadata: {name: web}\n', errors: [{ code: 'NETPOLD_E_INVALID_VALUE', object: POD, path: 'apiVersion', message: /apiVersion v1 only/ }] },

  // --- metadata
  { name: 'no metadata', text: 'apiVersion: v1\nkind: Pod\n', errors: [{ code: 'NETPOLD_E_REQUIRED', object: 'Pod (unnamed, document 1)', path: 'metadata' }] },
  { name: 'no name', text: 'apiVersion: v1\nkind: Node\nmetadata: {labels: {}}\n', errors: [{ code: 'NETPOLD_E_REQUIRED', path: 'metadata.name' }] },
  { name: 'generateName only', text: 'apiVersion: v1\nkind: Pod\nmetadata: {generateName: web-}\n', errors: [{ code: 'NETPOLD_E_REQUIRED', path: 'metadata.name', message: /generateName is not supported/ }] },
  { name: 'metadata not a mapping', text: 'apiVersion: v1\nkind: Pod\nmetadata: [a]\n', errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'metadata' }] },
  { name: 'unknown metadata field', text: pod('web', '{}', '{}', ', label: {a: b}'), errors: [{ code: 'NETPOLD_E_UNKNOWN_FIELD', object: POD, path: 'metadata.label', message: /did you mean labels\?/ }] },
  { name: 'Namespace name not a DNS label', text: ns('a.b'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', object: 'Namespace a.b', path: 'metadata.name', message: /DNS-1123 label/ }] },
  { name: 'Pod name not a DNS subdomain', text: pod('Web'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', object: 'Pod default/Web', path: 'metadata.name', message: /DNS-1123 subdomain/ }] },
  { name: 'Node name too long', text: node('a'.repeat(254), '[]'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'metadata.name', message: /no more than 253/ }] },
  { name: 'namespace not a DNS label', text: pod('web', '{}', '{}', ', namespace: Prod'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', object: 'Pod Prod/web', path: 'metadata.namespace' }] },
  { name: 'label key with two slashes', text: pod('web', '{}', '{}', ', labels: {a/b/c: x}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'metadata.labels[a/b/c]', message: /at most one '\/'/ }] },
  { name: 'label key prefix not a subdomain', text: pod('web', '{}', '{}', ', labels: {Example.com/a: x}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'metadata.labels[Example.com/a]', message: /prefix/ }] },
  { name: 'label key name too long', text: pod('web', '{}', '{}', `, labels: {${'k'.repeat(64)}: x}`), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', message: /no more than 63/ }] },
  { name: 'label value with a space', text: pod('web', '{}', '{}', ', labels: {a: "b c"}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'metadata.labels[a]', message: /invalid label value "b c"/ }] },
  { name: 'label value too long', text: pod('web', '{}', '{}', `, labels: {a: ${'v'.repeat(64)}}`), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'metadata.labels[a]' }] },
  { name: 'label value a number', text: pod('web', '{}', '{}', ', labels: {version: 1}'), errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'metadata.labels[version]', message: /expected a string, got an integer 1/ }] },
  { name: 'label value null', text: pod('web', '{}', '{}', ', labels: {a: null}'), errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'metadata.labels[a]' }] },
  {
    name: 'namespace name label mismatch',
    text: ns('prod', '{kubernetes.io/metadata.name: dev}'),
    errors: [{ code: 'NETPOLD_E_INVALID_VALUE', object: 'Namespace prod', path: 'metadata.labels[kubernetes.io/metadata.name]', message: /must equal the namespace name "prod", got "dev"/ }],
  },
  { name: 'a string over 64 KiB', text: pod('web', `{nodeName: ${'a'.repeat(70_000)}}`), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'spec.nodeName', message: /longer than the 65536-character limit/ }] },

  // --- Pod
  { name: 'unknown top-level Pod field', text: `${pod('web')}specs: {}\n`, errors: [{ code: 'NETPOLD_E_UNKNOWN_FIELD', object: POD, path: 'specs' }] },
  { name: 'hostNetwork as a string', text: pod('web', '{hostNetwork: "yes"}'), errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'spec.hostNetwork', message: /expected true or false, got a string "yes"/ }] },
  { name: 'nodeName invalid', text: pod('web', '{nodeName: Node_1}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'spec.nodeName' }] },
  { name: 'containers not a list', text: pod('web', '{containers: {name: a}}'), errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'spec.containers' }] },
  { name: 'containerPort missing', text: pod('web', '{containers: [{ports: [{name: http}]}]}'), errors: [{ code: 'NETPOLD_E_REQUIRED', path: 'spec.containers[0].ports[0].containerPort' }] },
  { name: 'containerPort out of range', text: pod('web', '{containers: [{ports: [{containerPort: 70000}]}]}'), errors: [{ code: 'NETPOLD_E_PORT', path: 'spec.containers[0].ports[0].containerPort' }] },
  { name: 'containerPort a float', text: pod('web', '{containers: [{ports: [{containerPort: 80.5}]}]}'), errors: [{ code: 'NETPOLD_E_PORT', path: 'spec.containers[0].ports[0].containerPort' }] },
  { name: 'containerPort a string', text: pod('web', '{containers: [{ports: [{containerPort: "80"}]}]}'), errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'spec.containers[0].ports[0].containerPort' }] },
  { name: 'container port protocol', text: pod('web', '{containers: [{ports: [{containerPort: 80, protocol: ICMP}]}]}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'spec.containers[0].ports[0].protocol', message: /TCP, UDP, SCTP/ }] },
  { name: 'container port name uppercase', text: pod('web', '{containers: [{ports: [{containerPort: 80, name: HTTP}]}]}'), errors: [{ code: 'NETPOLD_E_PORT', path: 'spec.containers[0].ports[0].name' }] },
  { name: 'container port name too long', text: pod('web', '{containers: [{ports: [{containerPort: 80, name: abcdefghijklmnop}]}]}'), errors: [{ code: 'NETPOLD_E_PORT', message: /no more than 15/ }] },
  { name: 'container port name without a letter', text: pod('web', '{containers: [{ports: [{containerPort: 80, name: "8080"}]}]}'), errors: [{ code: 'NETPOLD_E_PORT', message: /at least one letter/ }] },
  { name: "container port name with '--'", text: pod('web', '{containers: [{ports: [{containerPort: 80, name: a--b}]}]}'), errors: [{ code: 'NETPOLD_E_PORT', message: /'--'/ }] },
  {
    name: 'duplicate port names across a container and a sidecar',
    text: pod('web', '{containers: [{ports: [{containerPort: 80, name: http}]}], initContainers: [{restartPolicy: Always, ports: [{containerPort: 81, name: http}]}]}'),
    errors: [{ code: 'NETPOLD_E_PORT', path: 'spec.initContainers[0].ports[0].name', message: /already used at spec.containers\[0\].ports\[0\].name/ }],
  },
  { name: 'podIP with leading zeros', text: pod('web', '{}', '{podIP: 010.0.0.1}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'status.podIP', message: /dotted-decimal/ }] },
  { name: 'podIP with three parts', text: pod('web', '{}', '{podIP: 10.0.1}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'status.podIP' }] },
  { name: 'podIP in hex', text: pod('web', '{}', '{podIP: 0xa.0.0.1}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'status.podIP' }] },
  { name: 'podIP IPv4-mapped IPv6', text: pod('web', '{}', '{podIP: "::ffff:10.0.0.1"}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'status.podIP', message: /IPv4-mapped/ }] },
  { name: 'podIP with a zone', text: pod('web', '{}', '{podIP: "fe80::1%eth0"}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'status.podIP', message: /zone/ }] },
  { name: 'podIP a number', text: pod('web', '{}', '{podIP: 1}'), errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'status.podIP' }] },
  { name: 'podIPs[0] differs from podIP', text: pod('web', '{}', '{podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.2}]}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'status.podIPs[0].ip' }] },
  { name: 'two IPv4 podIPs', text: pod('web', '{}', '{podIPs: [{ip: 10.0.0.1}, {ip: 10.0.0.2}]}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'status.podIPs[1].ip', message: /at most one IPv4/ }] },
  { name: 'invalid podIPs entry', text: pod('web', '{}', '{podIPs: [{ip: "1:2:3"}]}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'status.podIPs[0].ip' }] },

  // --- Node
  { name: 'node address invalid', text: node('n1', '[{type: InternalIP, address: 10.0.0.256}]'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', object: 'Node n1', path: 'status.addresses[0].address' }] },
  { name: 'node address missing', text: node('n1', '[{type: ExternalIP}]'), errors: [{ code: 'NETPOLD_E_REQUIRED', path: 'status.addresses[0].address' }] },
  { name: 'node addresses not a list', text: node('n1', '"10.0.0.1"'), errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'status.addresses' }] },

  // --- NetworkPolicy: fields
  { name: 'status on a NetworkPolicy', text: np('{podSelector: {}}', 'p', 'status: {}\n'), errors: [{ code: 'NETPOLD_E_UNKNOWN_FIELD', object: NP, path: 'status', message: /status was removed/ }] },
  { name: 'no spec', text: 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\n', errors: [{ code: 'NETPOLD_E_REQUIRED', path: 'spec' }] },
  { name: 'spec a list', text: np('[]'), errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'spec' }] },
  { name: 'no podSelector', text: np('{ingress: []}'), errors: [{ code: 'NETPOLD_E_REQUIRED', path: 'spec.podSelector', message: /podSelector: \{\}/ }] },
  { name: 'podSelector null', text: np('{podSelector: null}'), errors: [{ code: 'NETPOLD_E_REQUIRED', path: 'spec.podSelector' }] },
  { name: 'types instead of policyTypes', text: np('{podSelector: {}, types: [Ingress]}'), errors: [{ code: 'NETPOLD_E_UNKNOWN_FIELD', path: 'spec.types', message: /did you mean policyTypes\?/ }] },
  { name: 'a selector without matchLabels', text: np('{podSelector: {color: red}}'), errors: [{ code: 'NETPOLD_E_UNKNOWN_FIELD', path: 'spec.podSelector.color', message: /did you mean matchLabels/ }] },
  { name: 'to in an ingress rule', text: np('{podSelector: {}, ingress: [{to: []}]}'), errors: [{ code: 'NETPOLD_E_UNKNOWN_FIELD', path: 'spec.ingress[0].to', message: /ingress rules use from/ }] },
  { name: 'from in an egress rule', text: np('{podSelector: {}, egress: [{from: []}]}'), errors: [{ code: 'NETPOLD_E_UNKNOWN_FIELD', path: 'spec.egress[0].from', message: /egress rules use to/ }] },
  { name: 'unknown peer field', text: np('{podSelector: {}, ingress: [{from: [{podSelector: {}, serviceAccount: x}]}]}'), errors: [{ code: 'NETPOLD_E_UNKNOWN_FIELD', path: 'spec.ingress[0].from[0].serviceAccount' }] },
  { name: 'unknown ipBlock field', text: np('{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, exceptions: []}}]}]}'), errors: [{ code: 'NETPOLD_E_UNKNOWN_FIELD', path: 'spec.ingress[0].from[0].ipBlock.exceptions' }] },
  { name: 'unknown port field', text: np('{podSelector: {}, ingress: [{ports: [{port: 80, targetPort: 80}]}]}'), errors: [{ code: 'NETPOLD_E_UNKNOWN_FIELD', path: 'spec.ingress[0].ports[0].targetPort', message: /did you mean port\?/ }] },
  { name: 'unknown requirement field', text: np('{podSelector: {matchExpressions: [{key: a, operator: Exists, value: x}]}}'), errors: [{ code: 'NETPOLD_E_UNKNOWN_FIELD', path: 'spec.podSelector.matchExpressions[0].value', message: /did you mean values\?/ }] },
  { name: 'ingress a mapping', text: np('{podSelector: {}, ingress: {from: []}}'), errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'spec.ingress' }] },
  { name: 'a null rule', text: np('{podSelector: {}, ingress: [null]}'), errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'spec.ingress[0]' }] },

  // --- policyTypes
  { name: 'policyType in lower case', text: np('{podSelector: {}, policyTypes: [ingress]}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'spec.policyTypes[0]', message: /did you mean Ingress\?/ }] },
  { name: 'duplicate policyType', text: np('{podSelector: {}, policyTypes: [Egress, Egress]}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'spec.policyTypes[1]', message: /duplicate/ }] },
  {
    name: 'three policyTypes',
    text: np('{podSelector: {}, policyTypes: [Ingress, Egress, Ingress]}'),
    errors: [
      { code: 'NETPOLD_E_INVALID_VALUE', path: 'spec.policyTypes', message: /at most 2/ },
      { code: 'NETPOLD_E_INVALID_VALUE', path: 'spec.policyTypes[2]', message: /duplicate/ },
    ],
  },
  { name: 'policyTypes a string', text: np('{podSelector: {}, policyTypes: Ingress}'), errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'spec.policyTypes' }] },

  // --- peers
  { name: 'an empty peer', text: np('{podSelector: {}, ingress: [{from: [{}]}]}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'spec.ingress[0].from[0]', message: /must set podSelector, namespaceSelector or ipBlock/ }] },
  {
    name: 'ipBlock with a selector',
    text: np('{podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}, namespaceSelector: {}}]}]}'),
    errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'spec.egress[0].to[0]', message: /may not be combined/ }],
  },

  // --- selectors
  { name: 'matchLabels bad key', text: np('{podSelector: {matchLabels: {-a: b}}}'), errors: [{ code: 'NETPOLD_E_SELECTOR', path: 'spec.podSelector.matchLabels[-a]' }] },
  { name: 'matchLabels bad value', text: np('{podSelector: {matchLabels: {a: "-b"}}}'), errors: [{ code: 'NETPOLD_E_SELECTOR', path: 'spec.podSelector.matchLabels[a]' }] },
  { name: 'matchLabels a list', text: np('{podSelector: {matchLabels: [a]}}'), errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'spec.podSelector.matchLabels' }] },
  { name: 'unknown operator', text: np('{podSelector: {matchExpressions: [{key: a, operator: Equals, values: [b]}]}}'), errors: [{ code: 'NETPOLD_E_SELECTOR', path: 'spec.podSelector.matchExpressions[0].operator', message: /In, NotIn, Exists, DoesNotExist/ }] },
  { name: 'operator in the wrong case', text: np('{podSelector: {matchExpressions: [{key: a, operator: in, values: [b]}]}}'), errors: [{ code: 'NETPOLD_E_SELECTOR', message: /did you mean In\?/ }] },
  { name: 'missing operator', text: np('{podSelector: {matchExpressions: [{key: a}]}}'), errors: [{ code: 'NETPOLD_E_REQUIRED', path: 'spec.podSelector.matchExpressions[0].operator' }] },
  { name: 'missing key', text: np('{podSelector: {matchExpressions: [{operator: Exists}]}}'), errors: [{ code: 'NETPOLD_E_REQUIRED', path: 'spec.podSelector.matchExpressions[0].key' }] },
  { name: 'invalid expression key', text: np('{podSelector: {matchExpressions: [{key: "a b", operator: Exists}]}}'), errors: [{ code: 'NETPOLD_E_SELECTOR', path: 'spec.podSelector.matchExpressions[0].key' }] },
  { name: 'In without values', text: np('{podSelector: {matchExpressions: [{key: a, operator: In}]}}'), errors: [{ code: 'NETPOLD_E_SELECTOR', path: 'spec.podSelector.matchExpressions[0].values', message: /non-empty/ }] },
  { name: 'NotIn with []', text: np('{podSelector: {matchExpressions: [{key: a, operator: NotIn, values: []}]}}'), errors: [{ code: 'NETPOLD_E_SELECTOR', path: 'spec.podSelector.matchExpressions[0].values' }] },
  { name: 'Exists with values', text: np('{podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}}'), errors: [{ code: 'NETPOLD_E_SELECTOR', path: 'spec.podSelector.matchExpressions[0].values', message: /must not have values/ }] },
  { name: 'an invalid value', text: np('{podSelector: {matchExpressions: [{key: a, operator: In, values: [ok, "not ok"]}]}}'), errors: [{ code: 'NETPOLD_E_SELECTOR', path: 'spec.podSelector.matchExpressions[0].values[1]' }] },

  // --- ipBlock
  { name: 'cidr missing', text: np('{podSelector: {}, ingress: [{from: [{ipBlock: {except: []}}]}]}'), errors: [{ code: 'NETPOLD_E_REQUIRED', path: 'spec.ingress[0].from[0].ipBlock.cidr' }] },
  { name: 'cidr without prefix', text: np('{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0}}]}]}'), errors: [{ code: 'NETPOLD_E_CIDR', path: 'spec.ingress[0].from[0].ipBlock.cidr', message: /missing \/prefix-length/ }] },
  { name: 'cidr prefix too long', text: np('{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}'), errors: [{ code: 'NETPOLD_E_CIDR', message: /0 to 32/ }] },
  { name: 'cidr prefix with a leading zero', text: np('{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/08}}]}]}'), errors: [{ code: 'NETPOLD_E_CIDR' }] },
  { name: 'cidr with leading zeros', text: np('{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 010.0.0.0/8}}]}]}'), errors: [{ code: 'NETPOLD_E_CIDR', message: /dotted-decimal/ }] },
  { name: 'IPv6 cidr prefix too long', text: np('{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: "2001:db8::/129"}}]}]}'), errors: [{ code: 'NETPOLD_E_CIDR', message: /0 to 128/ }] },
  {
    name: 'except outside cidr',
    text: np('{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24, 10.1.0.0/24]}}]}]}'),
    errors: [{ code: 'NETPOLD_E_CIDR', path: 'spec.ingress[0].from[0].ipBlock.except[1]', message: /10\.1\.0\.0\/24 is not strictly inside cidr 10\.0\.0\.0\/16/ }],
  },
  { name: 'except equal to cidr', text: np('{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.9.9/16]}}]}]}'), errors: [{ code: 'NETPOLD_E_CIDR', path: 'spec.ingress[0].from[0].ipBlock.except[0]' }] },
  { name: 'except of the other family', text: np('{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0, except: ["::/64"]}}]}]}'), errors: [{ code: 'NETPOLD_E_CIDR', path: 'spec.ingress[0].from[0].ipBlock.except[0]' }] },
  { name: 'except invalid', text: np('{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/99]}}]}]}'), errors: [{ code: 'NETPOLD_E_CIDR', path: 'spec.ingress[0].from[0].ipBlock.except[0]' }] },

  // --- ports
  { name: 'port 0', text: np('{podSelector: {}, ingress: [{ports: [{port: 0}]}]}'), errors: [{ code: 'NETPOLD_E_PORT', path: 'spec.ingress[0].ports[0].port' }] },
  { name: 'port 65536', text: np('{podSelector: {}, ingress: [{ports: [{port: 65536}]}]}'), errors: [{ code: 'NETPOLD_E_PORT', path: 'spec.ingress[0].ports[0].port' }] },
  { name: 'port a float', text: np('{podSelector: {}, ingress: [{ports: [{port: 80.5}]}]}'), errors: [{ code: 'NETPOLD_E_PORT' }] },
  { name: 'port infinite', text: np('{podSelector: {}, ingress: [{ports: [{port: 1e400}]}]}'), errors: [{ code: 'NETPOLD_E_PORT' }] },
  { name: 'port NaN', text: np('{podSelector: {}, ingress: [{ports: [{port: .nan}]}]}'), errors: [{ code: 'NETPOLD_E_PORT' }] },
  { name: 'port a numeric string', text: np('{podSelector: {}, ingress: [{ports: [{port: "80"}]}]}'), errors: [{ code: 'NETPOLD_E_PORT', path: 'spec.ingress[0].ports[0].port', message: /use a number/ }] },
  { name: 'port an invalid name', text: np('{podSelector: {}, ingress: [{ports: [{port: Http}]}]}'), errors: [{ code: 'NETPOLD_E_PORT', path: 'spec.ingress[0].ports[0].port' }] },
  { name: 'port a boolean', text: np('{podSelector: {}, ingress: [{ports: [{port: true}]}]}'), errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'spec.ingress[0].ports[0].port' }] },
  { name: 'protocol ICMP', text: np('{podSelector: {}, ingress: [{ports: [{protocol: ICMP}]}]}'), errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'spec.ingress[0].ports[0].protocol', message: /supported values: TCP, UDP, SCTP/ }] },
  { name: 'endPort without port', text: np('{podSelector: {}, ingress: [{ports: [{endPort: 90}]}]}'), errors: [{ code: 'NETPOLD_E_PORT', path: 'spec.ingress[0].ports[0].endPort', message: /requires a numeric port/ }] },
  { name: 'endPort with a named port', text: np('{podSelector: {}, ingress: [{ports: [{port: http, endPort: 90}]}]}'), errors: [{ code: 'NETPOLD_E_PORT', path: 'spec.ingress[0].ports[0].endPort', message: /named port/ }] },
  { name: 'endPort below port', text: np('{podSelector: {}, ingress: [{ports: [{port: 100, endPort: 90}]}]}'), errors: [{ code: 'NETPOLD_E_PORT', path: 'spec.ingress[0].ports[0].endPort', message: /greater than port 100/ }] },
  { name: 'endPort above 65535', text: np('{podSelector: {}, ingress: [{ports: [{port: 100, endPort: 65536}]}]}'), errors: [{ code: 'NETPOLD_E_PORT', path: 'spec.ingress[0].ports[0].endPort' }] },
  { name: 'endPort a string', text: np('{podSelector: {}, ingress: [{ports: [{port: 100, endPort: "200"}]}]}'), errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'spec.ingress[0].ports[0].endPort' }] },

  // --- cross-object
  {
    name: 'a duplicate pod',
    text: docs(pod('web', '{}', '{podIP: 10.0.0.1}'), pod('web', '{}', '{podIP: 10.0.0.2}')),
    errors: [{ code: 'NETPOLD_E_DUPLICATE', object: POD, path: undefined, message: /also defined in m\.yaml \(document 1\); the first one is kept/ }],
  },
  {
    name: 'a pod in an undeclared namespace',
    text: pod('web', '{}', '{}', ', namespace: shop'),
    errors: [{ code: 'NETPOLD_E_UNKNOWN_NAMESPACE', object: 'Pod shop/web', path: 'metadata.namespace', message: /"shop" is not declared/ }],
  },
  {
    name: 'a pod whose Namespace is invalid',
    text: docs(ns('shop', '{a: "b c"}'), pod('web', '{}', '{}', ', namespace: shop')),
    errors: [
      { code: 'NETPOLD_E_INVALID_VALUE', object: 'Namespace shop' },
      { code: 'NETPOLD_E_UNKNOWN_NAMESPACE', object: 'Pod shop/web', message: /its Namespace object is invalid/ },
    ],
  },
  {
    name: 'a policy in an undeclared namespace',
    text: 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {podSelector: {}}\n',
    errors: [{ code: 'NETPOLD_E_UNKNOWN_NAMESPACE', object: 'NetworkPolicy shop/p', message: /policy is dropped/ }],
  },
  {
    name: 'two pods with one IP',
    text: docs(pod('a', '{}', '{podIP: 10.0.0.1}'), pod('b', '{}', '{podIP: "10.0.0.1"}')),
    errors: [{ code: 'NETPOLD_E_IP_CONFLICT', object: 'Pod default/b', message: /already used by Pod default\/a/ }],
  },
  {
    name: 'two pods with one IPv6 address written differently',
    text: docs(pod('a', '{}', '{podIP: "fd00::1"}'), pod('b', '{}', '{podIP: "FD00:0::0:1"}')),
    errors: [{ code: 'NETPOLD_E_IP_CONFLICT', object: 'Pod default/b' }],
  },
  {
    name: "a pod with its node's address",
    text: docs(pod('a', '{}', '{podIP: 192.0.2.1}'), node('n1', '[{type: InternalIP, address: 192.0.2.1}]')),
    errors: [{ code: 'NETPOLD_E_IP_CONFLICT', object: 'Pod default/a', message: /address of Node n1/ }],
  },
  {
    name: 'two nodes with one address',
    text: docs(node('n1', '[{type: InternalIP, address: 192.0.2.1}]'), node('n2', '[{type: ExternalIP, address: 192.0.2.1}]')),
    errors: [{ code: 'NETPOLD_E_IP_CONFLICT', object: 'Node n2', path: 'status.addresses' }],
  },

  // --- user text in object references, paths and messages is escaped (the YAML texts below
  // write the characters with YAML escapes; the expectations are the escaped forms, one line)
  {
    name: 'a name with a line break (object reference and message)',
    text: pod('"a\\n    at b"'),
    errors: [{ code: 'NETPOLD_E_INVALID_VALUE', object: 'Pod default/a\\n    at b', path: 'metadata.name', message: /^invalid Pod name "a\\n    at b": / }],
  },
  {
    name: 'a namespace with a carriage return and a tab',
    text: pod('web', '{}', '{}', ', namespace: "a\\r\\tb"'),
    errors: [{ code: 'NETPOLD_E_INVALID_VALUE', object: 'Pod a\\r\\tb/web', path: 'metadata.namespace', message: /^invalid namespace "a\\r\\tb": / }],
  },
  {
    name: 'a label key with a line break (path and message)',
    text: pod('web', '{}', '{}', ', labels: {"k\\n    at c": v}'),
    errors: [{ code: 'NETPOLD_E_INVALID_VALUE', object: POD, path: 'metadata.labels[k\\n    at c]', message: /^invalid label key "k\\n    at c": / }],
  },
  {
    name: 'an unknown field with a terminal escape sequence',
    text: `${pod('web')}"\\e[31mred\\e[0m": 1\n`,
    errors: [{ code: 'NETPOLD_E_UNKNOWN_FIELD', object: POD, path: '\\u001b[31mred\\u001b[0m', message: /^unknown field "\\u001b\[31mred\\u001b\[0m"; / }],
  },
  {
    name: 'an unknown field with a backslash and a quote',
    text: `${pod('web')}'a\\n"b': 1\n`,
    errors: [{ code: 'NETPOLD_E_UNKNOWN_FIELD', path: 'a\\\\n"b', message: /^unknown field "a\\\\n\\"b"; / }],
  },
  {
    name: 'a selector key with a line separator and a bidi override',
    text: np('{podSelector: {matchLabels: {"a\\u2028\\u202eb": x}}}'),
    errors: [{ code: 'NETPOLD_E_SELECTOR', object: NP, path: 'spec.podSelector.matchLabels[a\\u2028\\u202eb]', message: /^invalid label key "a\\u2028\\u202eb": / }],
  },
  {
    name: 'DEL and a C1 control character (CSI) in a value',
    text: pod('web', '{nodeName: "a\\x7f\\x9b1m"}'),
    errors: [{ code: 'NETPOLD_E_INVALID_VALUE', path: 'spec.nodeName', message: /^invalid node name "a\\u007f\\u009b1m": / }],
  },
  {
    name: 'a lone surrogate in a name',
    text: '{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n\\ud800"}}',
    errors: [{ code: 'NETPOLD_E_INVALID_VALUE', object: 'Node n\\ud800', message: /^invalid Node name "n\\ud800": / }],
  },
  {
    name: 'a List kind with a line break',
    text: 'apiVersion: v1\nkind: "Foo\\nList"\nitems: 5\n',
    errors: [{ code: 'NETPOLD_E_FIELD_TYPE', path: 'items', message: /^document 1: Foo\\nList items must be a list, got 5$/ }],
  },
  {
    name: 'non-ASCII letters are not escaped',
    text: pod('"wéb-😀"'),
    errors: [{ code: 'NETPOLD_E_INVALID_VALUE', object: 'Pod default/wéb-😀', message: /^invalid Pod name "wéb-😀": / }],
  },
];

/** Any character escapeText escapes: none may appear raw in an error or notice line. */
const RAW_UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

describe('errors', () => {
  it.each(errorCases)('$name', ({ text, errors }) => {
    const r = load(text);
    expect(r.errors.map((e) => e.code)).toEqual(errors.map((e) => e.code));
    errors.forEach((want, i) => {
      const got = r.errors[i]!;
      expect(got.file).toBe(FILE);
      if ('path' in want) expect(got.path).toBe(want.path);
      if ('object' in want) expect(got.object).toBe(want.object);
      if (want.message !== undefined) expect(got.message).toMatch(want.message);
    });
    for (const e of r.errors) expect(formatManifestError(e)).not.toMatch(RAW_UNSAFE);
  });

  it('covers every manifest error code of the catalogue', () => {
    const covered = new Set<string>(errorCases.flatMap((c) => c.errors.map((e) => e.code)));
    covered.add('NETPOLD_E_IO'); // see the paths tests
    // The codes the manifest loader can produce (the others belong to the CLI, lab, data plane).
    const manifestCodes = [
      'NETPOLD_E_IO', 'NETPOLD_E_PARSE', 'NETPOLD_E_OBJECT', 'NETPOLD_E_UNKNOWN_FIELD', 'NETPOLD_E_FIELD_TYPE',
      'NETPOLD_E_REQUIRED', 'NETPOLD_E_INVALID_VALUE', 'NETPOLD_E_SELECTOR', 'NETPOLD_E_CIDR', 'NETPOLD_E_PORT',
      'NETPOLD_E_DUPLICATE', 'NETPOLD_E_UNKNOWN_NAMESPACE', 'NETPOLD_E_IP_CONFLICT',
    ];
    expect(manifestCodes.every((c) => c in ErrorCodes)).toBe(true);
    expect(manifestCodes.filter((c) => !covered.has(c))).toEqual([]);
  });

  it('reports every problem, not just the first', () => {
    const r = load(docs(np('{podSelector: {matchLabels: {a: "-"}}, ingress: [{from: [{}], ports: [{port: 0}]}]}'), pod('Bad'), 'hello\n'));
    expect(r.errors.map((e) => e.code)).toEqual(['NETPOLD_E_SELECTOR', 'NETPOLD_E_INVALID_VALUE', 'NETPOLD_E_PORT', 'NETPOLD_E_INVALID_VALUE', 'NETPOLD_E_OBJECT']);
  });

  it('keeps the first of duplicates, and drops the later conflicting pod', () => {
    const r = load(docs(pod('web', '{}', '{podIP: 10.0.0.1}'), pod('web', '{}', '{podIP: 10.0.0.2}'), pod('other', '{}', '{podIP: 10.0.0.1}')));
    expect(r.state.pods.map((p) => [p.name, p.ips])).toEqual([['web', ['10.0.0.1']]]);
  });

  it('lets hostNetwork pods share their node address and each other', () => {
    const r = load(docs(
      node('n1', '[{type: InternalIP, address: 192.0.2.1}]'),
      pod('a', '{hostNetwork: true, nodeName: n1}', '{podIP: 192.0.2.1}'),
      pod('b', '{hostNetwork: true, nodeName: n1}', '{podIP: 192.0.2.1}'),
    ));
    expect(r.errors).toEqual([]);
    expect(r.state.pods.map((p) => p.name)).toEqual(['a', 'b']);
  });

  it('still implies kube-system when an invalid Namespace name merely contains it', () => {
    const r = load(ns('kube-system/x'));
    expect(r.errors.map((e) => e.code)).toEqual(['NETPOLD_E_INVALID_VALUE']);
    expect(r.state.namespaces.map((n) => n.name)).toContain('kube-system');
  });

  it('drops invalid pods, namespaces and nodes', () => {
    const r = load(docs(pod('web', '{hostNetwork: 1}'), ns('Bad'), node('n1', '[{type: InternalIP, address: x}]')));
    expect(r.errors).toHaveLength(3);
    expect(r.state.pods).toEqual([]);
    expect(r.state.nodes).toEqual([]);
    expect(r.state.namespaces.map((n) => n.name)).not.toContain('Bad');
  });

  it('does not read an object of a read kind with the wrong apiVersion', () => {
    const r = load('apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}}\n');
    expect(r.state.policies).toEqual([]);
  });

  it('truncates huge values in messages', () => {
    const r = load(pod(`a${'b'.repeat(100_000)}`));
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]!.message.length).toBeLessThan(400);
    expect(r.errors[0]!.object!.length).toBeLessThan(300);
  });
});

// ---------------------------------------------------------------------------------------------
// Nesting limit: documents nested more than MAX_NESTING levels are rejected while parsing

/**
 * A valid Pod whose deepest list or mapping is `levels` deep (the top-level mapping is level 1;
 * Pod spec fields netpold does not read are ignored, so the nesting goes there), and the line on
 * which level `levels` opens.
 */
const NESTED: { style: string; text: (levels: number) => string; line: (levels: number) => number }[] = [
  {
    style: 'flow lists',
    text: (n) => `apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {volumes: ${'['.repeat(n - 2)}${']'.repeat(n - 2)}}\n`,
    line: () => 4,
  },
  {
    style: 'JSON objects',
    text: (n) => `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},\n "spec": ${'{"a": '.repeat(n - 1)}1${'}'.repeat(n - 1)}}`,
    line: () => 2,
  },
  {
    style: 'block mappings',
    text: (n) => `apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n${Array.from({ length: n - 1 }, (_, i) => `${'  '.repeat(i + 1)}k${i + 1}:`).join('\n')} 1\n`,
    line: (n) => 4 + n - 1,
  },
  {
    style: 'block sequences',
    text: (n) => `apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  volumes:\n${Array.from({ length: n - 2 }, (_, i) => `${'  '.repeat(i + 1)}-`).join('\n')} x\n`,
    line: (n) => 5 + n - 2,
  },
  {
    style: 'compact block sequences on one line',
    text: (n) => `apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  volumes:\n  ${'- '.repeat(n - 2)}x\n`,
    line: () => 6,
  },
];

describe(`nesting limit (${MAX_NESTING} levels)`, () => {
  it('is 64 levels', () => {
    expect(MAX_NESTING).toBe(64);
  });

  it.each(NESTED)('$style: exactly the limit is read', ({ text }) => {
    const r = load(text(MAX_NESTING));
    expect(r.errors).toEqual([]);
    expect(r.state.pods.map((p) => p.name)).toEqual(['web']);
  });

  it.each(NESTED)('$style: one level more is one parse error naming the line and the limit', ({ text, line }) => {
    const r = load(text(MAX_NESTING + 1));
    expect(r.errors).toEqual([
      {
        code: 'NETPOLD_E_PARSE',
        file: FILE,
        object: undefined,
        path: undefined,
        message: expect.stringMatching(
          new RegExp(`^document 1 nests lists and mappings more than 64 levels deep at line ${line(MAX_NESTING + 1)}, column \\d+; netpold reads at most 64 levels, so the rest of the file is not read$`),
        ),
      },
    ]);
    expect(r.state.pods).toEqual([]);
  });

  // Inputs the YAML parser nests thousands of levels deep, several of them without indentation
  // or brackets (its error recovery nests mappings): one error each, whatever the shape.
  it.each([
    { name: '5,000 [', text: '['.repeat(5000) },
    { name: '5,000 [ closed', text: `${'['.repeat(5000)}${']'.repeat(5000)}` },
    { name: '5,000 {a:', text: `${'{a: '.repeat(5000)}1${'}'.repeat(5000)}` },
    { name: '3,000 lines of a: b: c', text: 'a: b: c\n'.repeat(3000) },
    { name: 'a: followed by 5,000 :', text: `a: ${': '.repeat(5000)}x` },
    { name: 'mapping keys 3,000 deep, then back to column 0', text: `${Array.from({ length: 3000 }, (_, i) => `${' '.repeat(i)}k:`).join('\n')}\nx: 1\n` },
    { name: 'sequences 3,000 deep, then back to column 0', text: `${Array.from({ length: 3000 }, (_, i) => `${' '.repeat(i)}-`).join('\n')}\nx: 1\n` },
    { name: '5,000 - on one line', text: `${'- '.repeat(5000)}x` },
    { name: '5,000 ? on one line', text: `${'? '.repeat(5000)}x` },
    { name: '3,000 tab-separated -', text: '\t- '.repeat(3000) },
    { name: 'a block sequence in a flow list, then 5,000 :', text: `[- a${': '.repeat(5000)}]` },
    { name: '[a]: b: c on 3,000 lines', text: '[a]: b: c\n'.repeat(3000) },
  ])('$name: one NETPOLD_E_PARSE error', ({ text }) => {
    const r = load(text);
    expect(r.errors.map((e) => [e.code, e.message.replace(/ at line \d+, column \d+/, '')])).toEqual([
      ['NETPOLD_E_PARSE', 'document 1 nests lists and mappings more than 64 levels deep; netpold reads at most 64 levels, so the rest of the file is not read'],
    ]);
  });

  it('keeps the documents before the deep one and does not read the rest of the file', () => {
    const r = load(docs(ns('a'), `x: ${'['.repeat(100)}\n`, ns('b')));
    expect(r.errors).toEqual([expect.objectContaining({ code: 'NETPOLD_E_PARSE', message: expect.stringMatching(/^document 2 nests .* at line 5, column 67;/) })]);
    const names = r.state.namespaces.map((n) => n.name);
    expect(names).toContain('a');
    expect(names).not.toContain('b');
  });

  it('reports each deep file once, and goes on with the next file', () => {
    const r = loadManifestTexts([
      { file: 'a.yaml', text: '['.repeat(5000) },
      { file: 'b.yaml', text: '['.repeat(5000) },
      { file: 'c.yaml', text: ns('c') },
    ]);
    expect(r.errors.map((e) => [e.file, e.code])).toEqual([['a.yaml', 'NETPOLD_E_PARSE'], ['b.yaml', 'NETPOLD_E_PARSE']]);
    expect(r.state.namespaces.map((n) => n.name)).toContain('c');
  });

  it('reports one syntax error per document, with the number of the others', () => {
    const r = load(docs(`${'['.repeat(MAX_NESTING)}\n`, 'a: [\n', ns('ok')));
    expect(r.errors.map((e) => e.message)).toEqual([
      expect.stringMatching(/^YAML\/JSON syntax error in document 1: .* at line 2, column 1 \(and 63 more syntax errors in document 1\)$/),
      expect.stringMatching(/^YAML\/JSON syntax error in document 2: .* at line 4, column 1$/),
    ]);
    expect(r.state.namespaces.map((n) => n.name)).toContain('ok');
  });

  // Merge keys (<<) copy a mapping into another: the nesting of the result is what counts (toJS
  // recurses through the copy), and a mapping merged into itself is not followed forever.
  /** A valid Pod: `b` is 33 levels deep, and merged into a mapping `j` + 3 levels deep. */
  const mergePod = (j: number): string =>
    `apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {x: &b ${'{a: '.repeat(31)}1${'}'.repeat(31)}, y: ${'{a: '.repeat(j)}{<<: *b}${'}'.repeat(j)}}\n`;
  const mergeColumn = (text: string): number => text.split('\n')[3]!.indexOf('<<') + 1;

  it('merge keys: exactly the limit, counting the merged mapping, is read', () => {
    const r = load(mergePod(31));
    expect(r.errors).toEqual([]);
    expect(r.state.pods.map((p) => p.name)).toEqual(['web']);
  });

  it('merge keys: one level more is one error naming the merge key', () => {
    const text = mergePod(32);
    expect(load(text).errors).toEqual([
      expect.objectContaining({
        code: 'NETPOLD_E_PARSE',
        message: `document 1 nests lists and mappings more than 64 levels deep once the merge key (<<) at line 4, column ${mergeColumn(text)} is applied; netpold reads at most 64 levels, so the document is not read`,
      }),
    ]);
  });

  it.each([
    { name: 'a mapping merged into itself', text: '&a {x: 1, <<: *a}\n', col: 11 },
    { name: 'a mapping merged into a mapping it contains', text: `&a ${'{x: '.repeat(30)}{<<: *a}${'}'.repeat(30)}\n`, col: 125 },
  ])('merge keys: $name is one error', ({ text, col }) => {
    expect(load(docs(text, ns('after'))).errors.map((e) => [e.code, e.message])).toEqual([
      ['NETPOLD_E_PARSE', `cannot read document 1: the merge key (<<) at line 1, column ${col} merges a mapping into itself`],
    ]);
  });

  it('merge keys: a chain of merged mappings is bounded', () => {
    const chain = Array.from({ length: 6 }, (_, k) => `a${k}: &a${k} ${'{x: '.repeat(60)}${k === 0 ? '{y: 1}' : `{<<: [*a${k - 1}], y: 1}`}${'}'.repeat(60)}`).join('\n');
    expect(load(chain).errors.map((e) => e.message)).toEqual([expect.stringMatching(/^document 1 nests lists and mappings more than 64 levels deep once the merge key \(<<\) at line 6, column 250 is applied; /)]);
  });

  it('merge keys still work', () => {
    const r = load('apiVersion: v1\nkind: Pod\nmetadata: {<<: [{name: web}, {namespace: default}], labels: {<<: &l {app: web}, tier: front}}\nspec: {nodeSelector: *l}\n');
    expect(r.errors).toEqual([]);
    expect(r.state.pods.map((p) => [p.namespace, p.name, labelsOf(p.labels)])).toEqual([['default', 'web', { app: 'web', tier: 'front' }]]);
  });

  /** Calls `f` with `frames` more frames on the stack. */
  function atStackDepth<T>(frames: number, f: () => T): T {
    return frames <= 0 ? f() : atStackDepth(frames - 1, f);
  }

  /** The most frames atStackDepth can add before the stack overflows (binary search). */
  function maxFrames(): number {
    let lo = 0;
    let hi = 1 << 22;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      try {
        atStackDepth(mid, () => 0);
        lo = mid;
      } catch {
        hi = mid - 1;
      }
    }
    return lo;
  }

  it('gives the same result whatever the depth of the caller’s stack', () => {
    const max = maxFrames();
    const inputs = [
      '['.repeat(5000),
      `${'{"a": '.repeat(5000)}1${'}'.repeat(5000)}`,
      'a: b: c\n'.repeat(3000),
      NESTED[0]!.text(MAX_NESTING),
      NESTED[2]!.text(MAX_NESTING),
      NESTED[2]!.text(MAX_NESTING + 1),
      docs(`${'['.repeat(MAX_NESTING)}\n`, ns('a')),
      mergePod(31),
      mergePod(32),
      `&a ${'{x: '.repeat(30)}{<<: *a}${'}'.repeat(30)}\n`,
      Array.from({ length: 6 }, (_, k) => `a${k}: &a${k} ${'{x: '.repeat(60)}${k === 0 ? '{y: 1}' : `{<<: [*a${k - 1}], y: 1}`}${'}'.repeat(60)}`).join('\n'),
    ];
    for (const text of inputs) {
      const want = JSON.stringify(load(text));
      for (const fraction of [0.5, 0.75, 0.85]) {
        expect(JSON.stringify(atStackDepth(Math.floor(max * fraction), () => load(text))), `${text.slice(0, 40)} at ${fraction} of the stack`).toBe(want);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// User text in notices and file names is escaped too

describe('escaping user text outside error messages', () => {
  it.each([
    {
      name: 'a skipped kind and apiVersion with line breaks and escape sequences',
      text: 'apiVersion: "v1\\n"\nkind: "Foo\\n    at Bar\\e[0m"\nmetadata: {name: x}\n',
      notice: 'skipped 1 object of kind Foo\\n    at Bar\\u001b[0m (v1\\n): netpold only reads Namespace, Pod, Node, NetworkPolicy',
    },
    {
      name: 'an ordinary skipped kind is unchanged',
      text: 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n',
      notice: 'skipped 1 object of kind Deployment (apps/v1): netpold only reads Namespace, Pod, Node, NetworkPolicy',
    },
  ])('notice: $name', ({ text, notice }) => {
    const r = load(text);
    expect(r.errors).toEqual([]);
    expect(r.notices).toEqual([notice]);
  });

  it('escapes the name of a policy in a notice', () => {
    const r = load('apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: "p\\u2029x"}\nspec: {podSelector: {}, policyTypes: [Ingress], egress: [{}]}\n');
    expect(r.notices).toEqual([]); // an invalid name: the policy is not enforced, its notice not given
    expect(r.errors.map((e) => e.object)).toEqual(['NetworkPolicy default/p\\u2029x']);
  });

  it('escapes file names in errors and in the messages that quote them', () => {
    const r = loadManifestTexts([
      { file: 'dir/a\nb.yaml', text: pod('web', '{}', '{podIP: 10.0.0.1}') },
      { file: 'dir/c\u001b[2J.yaml', text: pod('web', '{}', '{podIP: 10.0.0.2}') },
    ]);
    expect(r.errors).toEqual([
      expect.objectContaining({ code: 'NETPOLD_E_DUPLICATE', file: 'dir/c\\u001b[2J.yaml', message: expect.stringContaining('also defined in dir/a\\nb.yaml (document 1)') }),
    ]);
    for (const e of r.errors) expect(formatManifestError(e)).not.toMatch(RAW_UNSAFE);
  });

  it('escapes an unreadable path', () => {
    const missing = join(tmpdir(), 'netpold-no-such-dir', 'a\nb.yaml');
    const r = loadManifestPaths([missing]);
    expect(r.errors).toEqual([{ code: 'NETPOLD_E_IO', file: missing.replace('\n', '\\n'), object: undefined, path: undefined, message: `cannot read ${missing.replace('\n', '\\n')}: no such file or folder` }]);
  });
});

// ---------------------------------------------------------------------------------------------
// Fail-closed invalid policies

describe('invalid NetworkPolicy (fail-closed)', () => {
  it.each([
    {
      name: 'a bad ingress rule: podSelector kept, defaulted policyTypes',
      spec: '{podSelector: {matchLabels: {app: web}}, ingress: [{from: [{}]}]}',
      podSelector: { matchLabels: { app: 'web' }, matchExpressions: [] },
      policyTypes: ['Ingress'],
      sentence: 'The policy is not enforced as written; the pods it selects stay isolated for Ingress.',
    },
    {
      name: 'a bad egress rule: Egress is isolated too',
      spec: '{podSelector: {}, egress: [{ports: [{port: 0}]}]}',
      podSelector: { matchLabels: {}, matchExpressions: [] },
      policyTypes: ['Ingress', 'Egress'],
      sentence: 'The policy is not enforced as written; the pods it selects stay isolated for Ingress and Egress.',
    },
    {
      name: 'egress unreadable: Egress is isolated too',
      spec: '{podSelector: {}, egress: "all"}',
      podSelector: { matchLabels: {}, matchExpressions: [] },
      policyTypes: ['Ingress', 'Egress'],
      sentence: 'stay isolated for Ingress and Egress.',
    },
    {
      name: 'explicit policyTypes are kept',
      spec: '{podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: nope}}]}]}',
      podSelector: { matchLabels: {}, matchExpressions: [] },
      policyTypes: ['Egress'],
      sentence: 'stay isolated for Egress.',
    },
    {
      name: 'invalid policyTypes isolate both directions',
      spec: '{podSelector: {}, policyTypes: [Ingres]}',
      podSelector: { matchLabels: {}, matchExpressions: [] },
      policyTypes: ['Ingress', 'Egress'],
      sentence: 'stay isolated for Ingress and Egress.',
    },
    {
      name: 'an unreadable spec isolates both directions but selects nothing',
      spec: '"deny"',
      podSelector: undefined,
      policyTypes: ['Ingress', 'Egress'],
      sentence: 'its podSelector is invalid, so it selects no pods.',
    },
    {
      name: 'an invalid podSelector selects nothing',
      spec: '{podSelector: {matchLabels: {app: "we b"}}, ingress: [{}]}',
      podSelector: undefined,
      policyTypes: ['Ingress'],
      sentence: 'The policy is not enforced as written; its podSelector is invalid, so it selects no pods.',
    },
    {
      name: 'invalid metadata labels make the policy invalid',
      spec: '{podSelector: {}}',
      meta: ', labels: {"a b": c}',
      podSelector: { matchLabels: {}, matchExpressions: [] },
      policyTypes: ['Ingress'],
      sentence: 'stay isolated for Ingress.',
    },
  ])('$name', ({ spec, meta, podSelector, policyTypes, sentence }) => {
    const text = `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p${meta ?? ''}}\nspec: ${spec}\n`;
    const r = load(text);
    expect(r.errors.length).toBeGreaterThan(0);
    for (const e of r.errors) expect(e.message.endsWith(sentence)).toBe(true);
    expect(r.state.policies).toEqual([{ namespace: 'default', name: 'p', podSelector, policyTypes, ingress: [], egress: [], valid: false }]);
  });

  it('keeps the first (invalid) of two policies with one name, fail-closed', () => {
    const r = load(docs(np('{podSelector: {}, ingress: [{from: [{}]}]}'), np('{podSelector: {}}')));
    expect(r.state.policies).toHaveLength(1);
    expect(r.state.policies[0]!.valid).toBe(false);
    expect(r.errors.map((e) => e.code)).toEqual(['NETPOLD_E_INVALID_VALUE', 'NETPOLD_E_DUPLICATE']);
  });

  it('drops a policy whose namespace is invalid', () => {
    const r = load('apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: "A"}\nspec: {podSelector: {}}\n');
    expect(r.state.policies).toEqual([]);
    expect(r.errors).toEqual([expect.objectContaining({ code: 'NETPOLD_E_INVALID_VALUE', path: 'metadata.namespace', message: expect.stringMatching(/namespace is invalid, so it selects no pods\.$/) })]);
  });
});

// ---------------------------------------------------------------------------------------------
// Paths

describe('loadManifestPaths', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'netpold-files-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('reads a folder recursively, in sorted order, only manifest extensions', () => {
    const r = loadManifestPaths(['test/fixtures/manifests']);
    expect(r.errors).toEqual([]);
    expect(r.state.namespaces.map((n) => n.name)).toEqual(['prod', 'staging', 'default', 'kube-system', 'kube-public', 'kube-node-lease']);
    expect(r.state.pods.map((p) => `${p.namespace}/${p.name}`)).toEqual(['prod/web-1', 'prod/api-1']);
    expect(r.state.pods[0]).toMatchObject({ ips: ['10.1.0.10', 'fd00::a'], namedPorts: [{ name: 'http', port: 8080, protocol: 'TCP' }], node: 'node-a' });
    expect(r.state.nodes).toEqual([{ name: 'node-a', addresses: ['192.0.2.1'] }]);
    expect(r.state.policies.map((p) => `${p.namespace}/${p.name}`)).toEqual(['prod/allow-web', 'staging/deny-all']);
    expect(r.state.policies[1]!.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(r.notices).toEqual([expect.stringMatching(/^skipped 1 object of kind Deployment \(apps\/v1\)/)]);
  });

  it('reads each file once, even when named twice', () => {
    const r = loadManifestPaths(['test/fixtures/manifests/00-namespaces.yaml', 'test/fixtures/manifests']);
    expect(r.errors).toEqual([]);
  });

  it('reports unreadable paths as NETPOLD_E_IO and goes on', () => {
    const missing = join(tmp, 'missing.yaml');
    const r = loadManifestPaths([missing, 'test/fixtures/manifests/00-namespaces.yaml']);
    expect(r.errors).toEqual([{ code: 'NETPOLD_E_IO', file: missing, object: undefined, path: undefined, message: expect.stringContaining('no such file') }]);
    expect(r.state.namespaces.map((n) => n.name)).toContain('prod');
  });

  it('reports a file without read permission as NETPOLD_E_IO', () => {
    const dir = join(tmp, 'perm');
    mkdirSync(dir);
    const file = join(dir, 'secret.yaml');
    writeFileSync(file, ns('x'));
    chmodSync(file, 0o000);
    const r = loadManifestPaths([dir]);
    const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
    if (isRoot) expect(r.errors).toEqual([]); // root reads anything
    else expect(r.errors).toEqual([expect.objectContaining({ code: 'NETPOLD_E_IO', file })]);
    chmodSync(file, 0o600);
  });

  it('skips other extensions in folders, reads any explicitly named file, rejects non-UTF-8', () => {
    const dir = join(tmp, 'mixed');
    mkdirSync(join(dir, 'b'), { recursive: true });
    writeFileSync(join(dir, 'notes.txt'), 'not yaml: [');
    writeFileSync(join(dir, 'b', 'z.YML'), ns('z'));
    writeFileSync(join(dir, 'a.json'), JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'a' } }));
    writeFileSync(join(dir, 'bin.yaml'), Buffer.from([0xff, 0xfe, 0x00, 0x81]));
    const r = loadManifestPaths([dir]);
    expect(r.errors).toEqual([expect.objectContaining({ code: 'NETPOLD_E_PARSE', file: join(dir, 'bin.yaml') })]);
    expect(r.state.namespaces.map((n) => n.name).slice(0, 2)).toEqual(['a', 'z']);
    const explicit = loadManifestPaths([join(dir, 'notes.txt')]);
    expect(explicit.errors.map((e) => e.code)).toEqual(['NETPOLD_E_PARSE']);
  });
});
