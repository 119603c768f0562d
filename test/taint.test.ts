// The readiness taint (src/source/k8s/taint.ts) against the fake API server: removed from this
// node only, with every effect of its key and nothing else; a Node without it is left alone (no
// PATCH); RBAC refusal and a request the server refuses stop it with NETPOLD_E_TAINT; a missing
// Node, a 401 and a concurrent change of the taints are retried. No root needed.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../src/config/agent.js';
import { MemoryLogger } from '../src/log.js';
import { loadKubeConfig } from '../src/source/k8s/config.js';
import { DEFAULT_READY_TAINT, ReadyTaint, taintRemovalPatch } from '../src/source/k8s/taint.js';
import { FakeApiServer, nodeObject } from './support/fake-apiserver.js';

const KEY = DEFAULT_READY_TAINT;
type Taint = { key: string; effect: string; value?: string };

describe('taintRemovalPatch', () => {
  it.each<[string, Taint[], unknown]>([
    ['none', [], undefined],
    ['only others', [{ key: 'node.kubernetes.io/not-ready', effect: 'NoSchedule' }], undefined],
    ['ours alone', [{ key: KEY, effect: 'NoSchedule' }], [{ op: 'test', path: '/spec/taints/0/key', value: KEY }, { op: 'remove', path: '/spec/taints/0' }]],
    [
      'ours twice among others: highest index first',
      [{ key: KEY, effect: 'NoSchedule' }, { key: 'a', effect: 'NoSchedule' }, { key: KEY, effect: 'NoExecute' }],
      [
        { op: 'test', path: '/spec/taints/2/key', value: KEY },
        { op: 'remove', path: '/spec/taints/2' },
        { op: 'test', path: '/spec/taints/0/key', value: KEY },
        { op: 'remove', path: '/spec/taints/0' },
      ],
    ],
  ])('%s', (_name, taints, expected) => {
    expect(taintRemovalPatch(taints, KEY)).toEqual(expected);
  });
});

describe('ReadyTaint against an API server', () => {
  let server: FakeApiServer;
  let dir: string;
  let log: MemoryLogger;

  beforeEach(async () => {
    server = new FakeApiServer();
    await server.start();
    dir = mkdtempSync(join(tmpdir(), 'netpold-taint-'));
    log = new MemoryLogger();
  });
  afterEach(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const node = (name: string, taints: Taint[]) => ({ ...nodeObject(name, ['198.18.255.1']), spec: { taints } });
  const taintsOf = (name: string) => ((server.get('Node', undefined, name)?.['spec'] as { taints?: Taint[] } | undefined)?.taints ?? []).map((t) => `${t.key}:${t.effect}`);
  const remover = (name = 'node-a') => new ReadyTaint(loadKubeConfig({ kubeconfig: server.writeKubeconfig(dir) }), name, KEY, log, { retryMs: 20, maxRetryMs: 100 });

  it("removes every taint with its key from its own Node, and nothing else, anywhere", async () => {
    server.apply('Node', node('node-a', [{ key: KEY, effect: 'NoSchedule' }, { key: 'dedicated', value: 'db', effect: 'NoSchedule' }, { key: KEY, effect: 'NoExecute' }]));
    server.apply('Node', node('node-b', [{ key: KEY, effect: 'NoSchedule' }]));
    const t = remover();
    t.start();
    expect(await t.settled(5000)).toBe('removed');
    expect(taintsOf('node-a')).toEqual(['dedicated:NoSchedule']);
    expect(taintsOf('node-b')).toEqual([`${KEY}:NoSchedule`]);
    expect(log.lines.some((l) => l.level === 'info' && /removed the readiness taint/.test(l.msg))).toBe(true);
  });

  it('leaves a Node without the taint alone: one GET, no PATCH', async () => {
    server.apply('Node', node('node-a', [{ key: 'dedicated', effect: 'NoSchedule' }]));
    const t = remover();
    t.start();
    expect(await t.settled(5000)).toBe('absent');
    expect(server.nodePatches).toEqual([]);
    expect(server.requests.filter((r) => r.path === '/api/v1/nodes/node-a').map((r) => r.method)).toEqual(['GET']);
    expect(taintsOf('node-a')).toEqual(['dedicated:NoSchedule']);
  });

  it('stops with NETPOLD_E_TAINT when RBAC forbids it, and does not retry', async () => {
    server.apply('Node', node('node-a', [{ key: KEY, effect: 'NoSchedule' }]));
    server.nodeStatus = 403;
    const t = remover();
    t.start();
    expect(await t.settled(5000)).toBe('forbidden');
    const attempts = t.attempts;
    await new Promise((r) => setTimeout(r, 150)); // longer than the retry backoff
    expect(t.attempts).toBe(attempts);
    expect(log.lines.find((l) => l.level === 'error')?.fields['code']).toBe('NETPOLD_E_TAINT');
    expect(taintsOf('node-a')).toEqual([`${KEY}:NoSchedule`]);
  });

  it('stops when the server refuses the request itself (400), and retries a 401 (a token being rotated)', async () => {
    server.apply('Node', node('node-a', [{ key: KEY, effect: 'NoSchedule' }]));
    server.nodeStatus = 400;
    const t = remover();
    t.start();
    expect(await t.settled(5000)).toBe('rejected');
    server.nodeStatus = 401;
    const u = remover();
    u.start();
    await new Promise((r) => setTimeout(r, 100));
    expect(u.state).toBe('working');
    server.nodeStatus = 200;
    expect(await u.settled(5000)).toBe('removed');
  });

  it('retries until the Node exists (kubelet registers it)', async () => {
    const t = remover();
    t.start();
    await new Promise((r) => setTimeout(r, 100));
    expect(t.state).toBe('working');
    expect(log.lines.some((l) => l.level === 'warn' && l.fields['status'] === 404)).toBe(true);
    server.apply('Node', node('node-a', [{ key: KEY, effect: 'NoSchedule' }]));
    expect(await t.settled(5000)).toBe('removed');
    expect(taintsOf('node-a')).toEqual([]);
  });

  it('a concurrent change of the taints fails the patch (its test), and the next attempt removes the right one', async () => {
    server.apply('Node', node('node-a', [{ key: 'a', effect: 'NoSchedule' }, { key: KEY, effect: 'NoSchedule' }]));
    // Between the agent's GET and its PATCH another writer drops taint "a": index 1 is gone.
    server.beforeNodePatch = () => server.modify('Node', undefined, 'node-a', (o) => ((o['spec'] as { taints: Taint[] }).taints = [{ key: KEY, effect: 'NoSchedule' }, { key: 'b', effect: 'NoExecute' }]));
    const t = remover();
    t.start();
    expect(await t.settled(5000)).toBe('removed');
    expect(log.lines.some((l) => l.level === 'warn' && l.fields['status'] === 422)).toBe(true);
    expect(taintsOf('node-a')).toEqual(['b:NoExecute']);
    expect(server.nodePatches).toHaveLength(1);
  });

  it('stop() ends the retries', async () => {
    const t = remover('nowhere');
    t.start();
    await new Promise((r) => setTimeout(r, 60));
    t.stop();
    const attempts = t.attempts;
    await new Promise((r) => setTimeout(r, 200));
    expect(t.state).toBe('stopped');
    expect(t.attempts).toBe(attempts);
  });
});

describe('--ready-taint', () => {
  const load = (flags: Record<string, unknown>) => loadAgentConfig({ flags: { kubeconfig: '/k', 'node-name': 'node-a', ...flags }, env: {} });
  it('is off by default (it needs patch on every Node, deploy/optional/), on with a key', () => {
    expect(load({}).readyTaint).toBeUndefined();
    expect(load({ 'ready-taint': KEY }).readyTaint).toBe(KEY);
    expect(load({ 'ready-taint': 'example.com/not-yet' }).readyTaint).toBe('example.com/not-yet');
    expect(load({ 'ready-taint': KEY }).warnings).toEqual([]);
  });
  it('does nothing without a Node to remove it from (manifests, no node name), and says so', () => {
    const m = loadAgentConfig({ flags: { manifests: ['/m'], 'node-name': 'node-a', 'ready-taint': KEY }, env: {} });
    expect(m.readyTaint).toBeUndefined();
    expect(m.warnings.join()).toMatch(/--ready-taint netpold.io\/agent-not-ready does nothing without --kubeconfig/);
    expect(loadAgentConfig({ flags: { kubeconfig: '/k', 'intercept-all-pods': true, 'ready-taint': KEY }, env: {} }).readyTaint).toBeUndefined();
  });
  it('rejects a key that is not a taint key, naming the flag', () => {
    expect(() => load({ 'ready-taint': 'bad key!' })).toThrow(/--ready-taint must be a taint key/);
    expect(() => load({ 'ready-taint': 'a/b/c' })).toThrow(/at most one '\/'/);
  });
});
