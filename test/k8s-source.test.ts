// The Kubernetes source, driving the real client library (@kubernetes/client-node, through
// src/source/k8s) against the in-process fake API server (test/support/fake-apiserver.ts).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { run } from '../src/cli/main.js';
import { MemoryLogger } from '../src/log.js';
import type { ClusterState, PodInfo } from '../src/model/types.js';
import { Compiler } from '../src/policy/compile.js';
import { Decision, FlowKey, decide } from '../src/policy/decide.js';
import { flowFromText } from '../src/policy/explain.js';
import { loadManifestTexts } from '../src/source/files/load.js';
import { KubernetesSource, type KubernetesSourceOptions } from '../src/source/k8s/source.js';
import type { SourceUpdate } from '../src/source/source.js';
import { FAKE_KINDS, FakeApiServer, namespaceObject, nodeObject, podObject, policyObject } from './support/fake-apiserver.js';

let server: FakeApiServer;
let dir: string;
let sources: KubernetesSource[];

beforeEach(async () => {
  server = new FakeApiServer();
  await server.start();
  dir = mkdtempSync(join(tmpdir(), 'netpold-k8s-'));
  sources = [];
});

afterEach(async () => {
  for (const s of sources) await s.stop();
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A small cluster: two namespaces, three pods, one node, one policy. */
function seed(s: FakeApiServer): void {
  for (const ns of ['default', 'kube-system', 'kube-public', 'kube-node-lease']) s.apply('Namespace', namespaceObject(ns));
  s.apply('Namespace', namespaceObject('prod', { env: 'prod' }));
  s.apply('Node', nodeObject('node-a', ['198.18.200.1']));
  s.apply('Pod', podObject({ namespace: 'prod', name: 'web', labels: { app: 'web' }, ips: ['198.18.0.10', '2001:2::10'], node: 'node-a', ports: [{ name: 'http', containerPort: 8080 }] }));
  s.apply('Pod', podObject({ namespace: 'prod', name: 'db', labels: { app: 'db' }, ips: ['198.18.0.11'], node: 'node-a', ports: [{ name: 'sql', containerPort: 5432 }] }));
  s.apply('Pod', podObject({ namespace: 'default', name: 'client', labels: { app: 'client' }, ips: ['198.18.0.12'], node: 'node-a' }));
  s.apply('NetworkPolicy', policyObject('prod', 'db-from-web', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: 'sql' }] }] }));
}

interface Harness {
  readonly source: KubernetesSource;
  readonly log: MemoryLogger;
  readonly updates: SourceUpdate[];
  readonly started: Promise<void>;
  last(): ClusterState;
}

function startSource(options: Partial<KubernetesSourceOptions> = {}): Harness {
  const log = new MemoryLogger();
  const source = new KubernetesSource({
    connection: { kubeconfig: server.writeKubeconfig(dir) },
    log,
    nodeName: 'node-a',
    quietMs: 10,
    maxDelayMs: 50,
    backoffInitialMs: 50,
    backoffMaxMs: 400,
    ...options,
  });
  sources.push(source);
  const updates: SourceUpdate[] = [];
  const started = source.start((u) => updates.push(u));
  return {
    source,
    log,
    updates,
    started,
    last: () => {
      const u = updates.at(-1);
      if (u === undefined) throw new Error('no update yet');
      return u.state;
    },
  };
}

async function waitFor(what: string, pred: () => boolean, timeoutMs = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const pod = (st: ClusterState, ns: string, name: string): PodInfo | undefined => st.pods.find((p) => p.namespace === ns && p.name === name);
const names = (xs: readonly { name: string }[]): string[] => xs.map((x) => x.name).sort();

/** Whether TCP from one address to another on `port` is allowed under `state`. */
function allowed(state: ClusterState, from: string, to: string, port: number): boolean {
  const snap = new Compiler().compile(state, { localNode: 'node-a' });
  const key = new FlowKey();
  const err = flowFromText(key, 'TCP', from, to, port);
  if (err) throw new Error(err);
  return decide(snap, key, new Decision()).allowed;
}

describe('KubernetesSource: initial sync', () => {
  it('emits its first update only after the LIST of all four kinds, with the same state as the folder source', async () => {
    seed(server);
    const release = server.holdLists('NetworkPolicy');
    const h = startSource();
    let resolved = false;
    void h.started.then(() => (resolved = true));
    await waitFor('the three other lists', () => ['Namespace', 'Pod', 'Node'].every((k) => h.log.lines.some((l) => l.msg === `listed ${k}s`)));
    await sleep(150);
    expect(h.updates).toHaveLength(0);
    expect(resolved).toBe(false);
    expect(h.source.ready).toBe(false);
    release();
    await h.started;
    expect(h.updates).toHaveLength(1);
    expect(h.source.ready).toBe(true);
    const u = h.updates[0]!;
    expect(u.unusable).toBe(false);
    expect(u.errors).toEqual([]);
    expect(names(u.state.namespaces)).toEqual(['default', 'kube-node-lease', 'kube-public', 'kube-system', 'prod']);
    expect(pod(u.state, 'prod', 'web')).toEqual({
      namespace: 'prod',
      name: 'web',
      ips: ['198.18.0.10', '2001:2::10'],
      labels: { app: 'web' },
      namedPorts: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      node: 'node-a',
      hostNetwork: false,
    });
    expect(u.state.nodes).toEqual([{ name: 'node-a', addresses: ['198.18.200.1'] }]);
    expect(u.state.policies.map((p) => [p.namespace, p.name, p.valid])).toEqual([['prod', 'db-from-web', true]]);
    expect(h.source.counters.lastSyncTime).toBeGreaterThan(0);
    expect(h.source.updates).toBe(1);

    // Both sources validate identically: the same objects as manifests give the same state.
    const docs = FAKE_KINDS.flatMap((k) => server.objectsOf(k).map((o, i) => ({ file: `${k}-${i}.json`, text: JSON.stringify(o) })));
    const folder = loadManifestTexts(docs);
    expect(folder.errors).toEqual([]);
    const sortState = (s: ClusterState) => ({
      namespaces: [...s.namespaces].sort((a, b) => a.name.localeCompare(b.name)),
      pods: [...s.pods].sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`)),
      nodes: s.nodes,
      policies: s.policies,
    });
    expect(sortState(u.state)).toEqual(sortState(folder.state));
  });

  it('asks for bookmarks, follows them, and resumes a dropped watch without relisting', async () => {
    seed(server);
    const h = startSource();
    await h.started;
    await waitFor('four watches', () => server.openWatches() === 4);
    const watches = server.requests.filter((r) => r.query['watch'] === 'true');
    expect(watches.every((r) => r.query['allowWatchBookmarks'] === 'true' && Number(r.query['timeoutSeconds']) > 0)).toBe(true);

    // Other kinds move the global resourceVersion on; a bookmark carries it to the pod watch, so
    // resuming after a compaction up to that version needs no relist.
    server.apply('Namespace', namespaceObject('dev'));
    server.bookmark(['Pod']);
    await waitFor('the bookmark', () => h.source.counters.bookmarks >= 1);
    server.compact(['Pod']);
    server.dropWatches();
    await waitFor('four watches again', () => server.openWatches() === 4);
    server.apply('Pod', podObject({ namespace: 'prod', name: 'cache', labels: { app: 'cache' }, ips: ['198.18.0.13'], node: 'node-a' }));
    await waitFor('the new pod', () => pod(h.last(), 'prod', 'cache') !== undefined);
    expect(h.source.relists).toBe(0);
    expect(h.source.counters.expired).toBe(0);
    expect(names(h.last().namespaces)).toContain('dev');
  });
});

describe('KubernetesSource: changes of each kind', () => {
  it('adds, updates and deletes pods, namespaces, policies and nodes, keeping unchanged objects identical', async () => {
    seed(server);
    const h = startSource();
    await h.started;
    const s0 = h.last();
    expect(allowed(s0, '198.18.0.10', '198.18.0.11', 5432)).toBe(true); // web -> db
    expect(allowed(s0, '198.18.0.12', '198.18.0.11', 5432)).toBe(false); // client -> db

    // Pod label change: a pod-only update; everything else is the very same objects.
    const compiler = new Compiler();
    compiler.compile(s0, { localNode: 'node-a' });
    server.modify('Pod', 'default', 'client', (o) => ((o['metadata'] as { labels: Record<string, string> }).labels = { app: 'web' }));
    await waitFor('the label change', () => pod(h.last(), 'default', 'client')?.labels['app'] === 'web');
    const s1 = h.last();
    for (const k of ['namespaces', 'nodes', 'policies'] as const) s1[k].forEach((x, i) => expect(x).toBe(s0[k][i]));
    expect(pod(s1, 'prod', 'web')).toBe(pod(s0, 'prod', 'web'));
    expect(pod(s1, 'prod', 'db')).toBe(pod(s0, 'prod', 'db'));
    const snap = compiler.compile(s1, { localNode: 'node-a' });
    expect(snap.stats.incremental).toBe(true);
    // Still denied: the policy only admits pods labelled web in its own namespace (prod).
    expect(allowed(s1, '198.18.0.12', '198.18.0.11', 5432)).toBe(false);

    // A change that the engine does not read (conditions, annotations) emits nothing.
    const before = h.updates.length;
    server.modify('Pod', 'prod', 'web', (o) => {
      (o['status'] as { conditions: unknown[] }).conditions = [{ type: 'Ready', status: 'False' }];
      (o['metadata'] as { annotations: Record<string, string> }).annotations = { note: 'changed' };
    });
    await sleep(150);
    expect(h.updates.length).toBe(before);

    // Namespace: labels change and a new namespace with a pod.
    server.apply('Namespace', namespaceObject('staging', { env: 'staging' }));
    server.apply('Pod', podObject({ namespace: 'staging', name: 'web', labels: { app: 'web' }, ips: ['198.18.0.20'], node: 'node-a' }));
    await waitFor('staging', () => pod(h.last(), 'staging', 'web') !== undefined);
    server.modify('Namespace', undefined, 'staging', (o) => ((o['metadata'] as { labels: Record<string, string> }).labels['team'] = 'blue'));
    await waitFor('namespace label', () => h.last().namespaces.find((n) => n.name === 'staging')?.labels['team'] === 'blue');

    // Policy: add (staging web may reach db), update, delete.
    server.apply('NetworkPolicy', policyObject('prod', 'db-from-staging', {
      podSelector: { matchLabels: { app: 'db' } },
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'blue' } }, podSelector: { matchLabels: { app: 'web' } } }] }],
    }));
    await waitFor('policy added', () => allowed(h.last(), '198.18.0.20', '198.18.0.11', 5432));
    server.modify('NetworkPolicy', 'prod', 'db-from-staging', (o) => ((o['spec'] as { ingress: unknown[] }).ingress = [{ from: [{ namespaceSelector: { matchLabels: { team: 'red' } } }] }]));
    await waitFor('policy updated', () => !allowed(h.last(), '198.18.0.20', '198.18.0.11', 5432));
    server.delete('NetworkPolicy', 'prod', 'db-from-web');
    server.delete('NetworkPolicy', 'prod', 'db-from-staging');
    await waitFor('policies deleted', () => h.last().policies.length === 0);
    expect(allowed(h.last(), '198.18.0.12', '198.18.0.11', 5432)).toBe(true);

    // Node: addresses change, a node is added and deleted.
    server.modify('Node', undefined, 'node-a', (o) => ((o['status'] as { addresses: unknown[] }).addresses = [{ type: 'InternalIP', address: '198.18.200.2' }]));
    server.apply('Node', nodeObject('node-b', ['198.18.201.1']));
    await waitFor('nodes', () => h.last().nodes.length === 2 && h.last().nodes[0]!.addresses[0] === '198.18.200.2');
    server.delete('Node', undefined, 'node-b');
    await waitFor('node deleted', () => h.last().nodes.length === 1);

    // Pod deleted; a namespace deleted takes its pods out of the state.
    server.delete('Pod', 'prod', 'db');
    await waitFor('pod deleted', () => pod(h.last(), 'prod', 'db') === undefined);
    server.delete('Namespace', undefined, 'staging');
    await waitFor('namespace deleted', () => pod(h.last(), 'staging', 'web') === undefined && !names(h.last().namespaces).includes('staging'));

    expect(h.source.events).toBeGreaterThanOrEqual(12);
    expect(h.source.relists).toBe(0);
    expect(h.source.watchErrors).toBe(0);
  });

  it('leaves out pods that have no address yet from address matching, and terminated pods and reused addresses entirely', async () => {
    seed(server);
    const h = startSource();
    await h.started;
    server.apply('Pod', podObject({ namespace: 'prod', name: 'pending', labels: { app: 'web' } }));
    server.apply('Pod', podObject({ namespace: 'prod', name: 'done', labels: { app: 'web' }, ips: ['198.18.0.30'], phase: 'Succeeded' }));
    await waitFor('pending pod', () => pod(h.last(), 'prod', 'pending') !== undefined);
    expect(pod(h.last(), 'prod', 'pending')!.ips).toEqual([]);
    expect(pod(h.last(), 'prod', 'done')).toBeUndefined();
    // A new pod gets the address of a pod whose deletion has not arrived: neither claims it.
    server.apply('Pod', podObject({ namespace: 'default', name: 'newcomer', labels: { app: 'x' }, ips: ['198.18.0.10'] }));
    await waitFor('conflict', () => pod(h.last(), 'prod', 'web') === undefined);
    expect(pod(h.last(), 'default', 'newcomer')).toBeUndefined();
    expect(h.log.lines.some((l) => l.level === 'warn' && l.fields['code'] === 'NETPOLD_E_IP_CONFLICT')).toBe(true);
    server.delete('Pod', 'prod', 'web');
    await waitFor('conflict resolved', () => pod(h.last(), 'default', 'newcomer') !== undefined);
    // The pod gets its address: now it is in the address table.
    server.modify('Pod', 'prod', 'pending', (o) => ((o['status'] as Record<string, unknown>)['podIP'] = '198.18.0.31'));
    await waitFor('address', () => pod(h.last(), 'prod', 'pending')?.ips[0] === '198.18.0.31');
  });
});

describe('KubernetesSource: failures', () => {
  it('relists after 410 Gone (ERROR event), catching up with what changed meanwhile', async () => {
    seed(server);
    const h = startSource();
    await h.started;
    await waitFor('four watches', () => server.openWatches() === 4);
    server.dropWatches(['Pod']);
    server.delete('Pod', 'prod', 'db');
    server.apply('Pod', podObject({ namespace: 'prod', name: 'late', labels: { app: 'late' }, ips: ['198.18.0.40'] }));
    server.compact(['Pod']);
    await waitFor('relist', () => h.source.relists >= 1 && pod(h.last(), 'prod', 'late') !== undefined);
    expect(pod(h.last(), 'prod', 'db')).toBeUndefined();
    expect(h.source.counters.expired).toBeGreaterThanOrEqual(1);
    expect(h.log.lines.some((l) => l.level === 'warn' && /410 Gone/.test(l.msg) && l.fields['code'] === 'NETPOLD_E_KUBE_API')).toBe(true);
    expect(h.log.lines.some((l) => /relisting Pods/.test(l.msg))).toBe(true);
    // The other kinds' objects kept their identity through the pod relist.
    const s = h.last();
    expect(h.updates.at(-2)!.state.policies[0]).toBe(s.policies[0]);
  });

  it('relists after 410 Gone as an HTTP status', async () => {
    seed(server);
    server.goneAsHttpStatus = true;
    const h = startSource();
    await h.started;
    await waitFor('four watches', () => server.openWatches() === 4);
    server.dropWatches(['Namespace']);
    server.apply('Namespace', namespaceObject('dev'));
    server.compact(['Namespace']);
    await waitFor('relist', () => h.source.relists >= 1 && server.openWatches('Namespace') === 1 && names(h.last().namespaces).includes('dev'));
    expect(h.source.counters.expired).toBeGreaterThanOrEqual(1);
  });

  it('keeps the last state while the API server is down, and relists when it is back', async () => {
    seed(server);
    const h = startSource();
    await h.started;
    await waitFor('four watches', () => server.openWatches() === 4);
    const before = h.last();
    const nUpdates = h.updates.length;
    await server.down();
    // Changes the agent cannot see yet; with the compaction, old resourceVersions are gone too
    // (as after an API server restart on a compacted etcd).
    server.delete('Pod', 'default', 'client');
    server.apply('NetworkPolicy', policyObject('prod', 'deny-all', { podSelector: {} }));
    server.compact();
    await waitFor('watch errors', () => h.source.watchErrors >= 4, 10_000);
    await sleep(300);
    expect(h.updates.length).toBe(nUpdates); // the last state stays in force
    expect(h.last()).toBe(before);
    expect(h.log.lines.filter((l) => l.fields['code'] === 'NETPOLD_E_KUBE_API').length).toBeGreaterThanOrEqual(4);
    await server.up();
    await waitFor('back in sync', () => pod(h.last(), 'default', 'client') === undefined && h.last().policies.length === 2, 15_000);
    expect(h.source.relists).toBeGreaterThanOrEqual(4);
    // Exponential backoff with jitter, bounded (backoffInitialMs 50, backoffMaxMs 400 here).
    const delays = h.log.lines.filter((l) => l.fields['code'] === 'NETPOLD_E_KUBE_API').map((l) => l.fields['delayMs'] as number);
    expect(Math.max(...delays)).toBeLessThanOrEqual(400);
    expect(Math.max(...delays)).toBeGreaterThanOrEqual(200);
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(25);
    expect(allowed(h.last(), '198.18.0.10', '198.18.0.11', 5432)).toBe(true);
    expect(allowed(h.last(), '198.18.0.11', '198.18.0.10', 8080)).toBe(false); // deny-all isolates web now
  });

  it('retries a failed initial list with backoff and stays closed meanwhile', async () => {
    seed(server);
    server.failLists('Node', 500, 403);
    const h = startSource();
    await h.started;
    expect(server.lists('Node')).toBe(3);
    expect(h.source.watchErrors).toBe(2);
    expect(h.updates).toHaveLength(1);
  });

  it('reports a malformed object once per change (log and Event), without crashing, and keeps an invalid policy failing closed', async () => {
    seed(server);
    server.apply('NetworkPolicy', policyObject('prod', 'bad-port', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ ports: [{ port: 70000 }] }] }));
    server.apply('Pod', podObject({ namespace: 'prod', name: 'bad-ip', labels: { app: 'x' }, ips: ['198.18.0.300'] }));
    const h = startSource();
    await h.started;
    const u = h.updates[0]!;
    const bad = u.state.policies.find((p) => p.name === 'bad-port')!;
    expect(bad.valid).toBe(false);
    expect(bad.ingress).toEqual([]);
    expect(pod(u.state, 'prod', 'bad-ip')).toBeUndefined();
    expect(new Set(u.errors.map((e) => `${e.object} ${e.code}`))).toEqual(new Set(['NetworkPolicy prod/bad-port NETPOLD_E_PORT', 'Pod prod/bad-ip NETPOLD_E_INVALID_VALUE']));
    // web is isolated by the invalid policy: nothing reaches it, not even with a port it serves.
    expect(allowed(u.state, '198.18.0.12', '198.18.0.10', 8080)).toBe(false);
    await h.source.eventsIdle();
    expect(server.postedEvents).toHaveLength(2);
    const ev = server.postedEvents.find((e) => (e['involvedObject'] as Record<string, unknown>)['kind'] === 'NetworkPolicy')!;
    expect(ev).toMatchObject({ type: 'Warning', reason: 'NetpoldRejected', involvedObject: { name: 'bad-port', namespace: 'prod', apiVersion: 'networking.k8s.io/v1' } });
    expect(String(ev['message'])).toMatch(/70000/);
    expect(h.log.lines.filter((l) => l.level === 'warn' && /rejected/.test(l.msg))).toHaveLength(2);

    // Unrelated changes and a relist do not report it again; a new version of it does.
    server.apply('Pod', podObject({ namespace: 'prod', name: 'other', ips: ['198.18.0.50'] }));
    server.compact(['NetworkPolicy']);
    server.dropWatches(['NetworkPolicy']);
    await waitFor('relist', () => h.source.relists >= 1 && pod(h.last(), 'prod', 'other') !== undefined);
    await h.source.eventsIdle();
    expect(server.postedEvents).toHaveLength(2);
    expect(h.updates.slice(1).flatMap((x) => x.errors)).toEqual([]);
    server.modify('NetworkPolicy', 'prod', 'bad-port', (o) => ((o['spec'] as Record<string, unknown>)['ingress'] = [{ ports: [{ port: 70001 }] }]));
    await waitFor('second report', () => h.log.lines.filter((l) => /rejected/.test(l.msg)).length === 3);
    await h.source.eventsIdle();
    expect(server.postedEvents).toHaveLength(3);
    expect(h.source.counters.rejected).toBe(3);
  });

  it('stops posting Events when RBAC forbids them, logging that once', async () => {
    seed(server);
    server.eventStatus = 403;
    const h = startSource();
    await h.started;
    server.apply('NetworkPolicy', policyObject('prod', 'bad-1', { podSelector: {}, policyTypes: ['Sideways'] }));
    await waitFor('first rejection', () => h.source.counters.rejected === 1);
    await h.source.eventsIdle();
    server.apply('NetworkPolicy', policyObject('prod', 'bad-2', { podSelector: {}, policyTypes: ['Sideways'] }));
    await waitFor('second rejection', () => h.source.counters.rejected === 2);
    await h.source.eventsIdle();
    const posts = server.requests.filter((r) => r.method === 'POST');
    expect(posts).toHaveLength(1);
    expect(h.log.lines.filter((l) => /RBAC/.test(l.msg))).toHaveLength(1);
    await waitFor('both in the state', () => h.last().policies.filter((p) => !p.valid).length === 2);
  });
});

describe('KubernetesSource: coalescing', () => {
  it('turns a burst of 1,000 pod changes into a few updates', async () => {
    seed(server);
    for (let i = 0; i < 1000; i++) server.apply('Pod', podObject({ namespace: 'prod', name: `p-${i}`, labels: { app: 'burst', gen: '0' }, ips: [`198.18.${4 + (i >> 8)}.${i & 255}`] }));
    const h = startSource({ quietMs: 20, maxDelayMs: 100, pageSize: 300 });
    await h.started;
    expect(h.last().pods.length).toBe(1003);
    expect(server.requests.filter((r) => r.path === '/api/v1/pods' && r.query['continue'] !== undefined)).toHaveLength(3); // 4 pages of <= 300
    const before = h.updates.length;
    for (let i = 0; i < 1000; i++) server.modify('Pod', 'prod', `p-${i}`, (o) => ((o['metadata'] as { labels: Record<string, string> }).labels['gen'] = '1'));
    await waitFor('all changes', () => h.last().pods.filter((p) => p.labels['gen'] === '1').length === 1000);
    await sleep(150);
    const burst = h.updates.length - before;
    expect(burst).toBeGreaterThanOrEqual(1);
    expect(burst).toBeLessThanOrEqual(10);
    expect(h.source.events).toBeGreaterThanOrEqual(1000);
  });
});

describe('netpold agent: source flags', () => {
  async function cli(...args: string[]): Promise<{ code: number; err: string }> {
    let err = '';
    const code = await run(args, { out: () => {}, err: (t) => (err += `${t}\n`) });
    return { code, err };
  }

  it('requires exactly one of --manifests, --kubeconfig, --in-cluster', async () => {
    const none = await cli('agent');
    expect(none.code).toBe(2);
    expect(none.err).toMatch(/--manifests PATH\.\.\., --kubeconfig PATH or --in-cluster.*NETPOLD_E_CONFIG/);
    const two = await cli('agent', '--manifests', 'x', '--kubeconfig', 'y', '--node-name', 'n');
    expect(two.code).toBe(2);
    expect(two.err).toMatch(/only one state source.*NETPOLD_E_CONFIG/);
    const noNode = await cli('agent', '--kubeconfig', 'y');
    expect(noNode.err).toMatch(/--kubeconfig needs --node-name.*NETPOLD_E_CONFIG/);
  });

  it('reports an unusable kubeconfig or in-cluster config as NETPOLD_E_KUBECONFIG before touching the node', async () => {
    const missing = await cli('agent', '--kubeconfig', join(dir, 'nope'), '--node-name', 'n');
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/cannot load kubeconfig.*NETPOLD_E_KUBECONFIG/);
    const plain = join(dir, 'plain');
    writeFileSync(plain, `apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\nusers: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n`);
    expect((await cli('agent', '--kubeconfig', plain, '--node-name', 'n')).err).toMatch(/plain HTTP.*NETPOLD_E_KUBECONFIG/);
    const env = { host: process.env['KUBERNETES_SERVICE_HOST'] };
    delete process.env['KUBERNETES_SERVICE_HOST'];
    try {
      const inCluster = await cli('agent', '--in-cluster', '--node-name', 'n');
      expect(inCluster.code).toBe(2);
      expect(inCluster.err).toMatch(/--in-cluster works only inside a Kubernetes pod.*KUBERNETES_SERVICE_HOST.*NETPOLD_E_KUBECONFIG/);
    } finally {
      if (env.host !== undefined) process.env['KUBERNETES_SERVICE_HOST'] = env.host;
    }
  });
});
