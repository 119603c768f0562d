// The agent as an operator sees it, without root: the real Agent over FakeNativeSockets and a
// command runner that models the node's nftables tables, ip rules and routes. Health and
// readiness through the real listener, the phase metric, the explain socket, and shutdown:
// draining, then every rule the agent made removed.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { Agent } from '../src/agent/agent.js';
import { askAgent, serveExplainSocket } from '../src/agent/explain-socket.js';
import { Dataplane } from '../src/dataplane/dataplane.js';
import { DEFAULT_INTERCEPTION, Interception, type CommandRunner } from '../src/dataplane/interception.js';
import { FakeNativeSockets } from '../src/dataplane/native-fake.js';
import { MemoryLogger } from '../src/log.js';
import { healthCheck, readinessCheck } from '../src/metrics/health.js';
import { LoopMonitor } from '../src/metrics/loop-monitor.js';
import { AgentMetrics } from '../src/metrics/metrics.js';
import { startMetricsServer } from '../src/metrics/server.js';
import type { ClusterState } from '../src/model/types.js';
import type { SourceUpdate, StateSource } from '../src/source/source.js';
import { makeCluster, makeNs, makePod, makePolicy } from './support/builders.js';

const tmp = mkdtempSync(join(tmpdir(), 'netpold-op-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const CLIENT_IP = '198.18.3.10';
const WEB_IP = '198.18.1.20';
const state: ClusterState = makeCluster({
  namespaces: [makeNs('client-ns'), makeNs('server-ns')],
  pods: [makePod('client-ns/client', { app: 'client' }, { ips: [CLIENT_IP] }), makePod('server-ns/web', { app: 'web' }, { ips: [WEB_IP] })],
  policies: [makePolicy('server-ns/allow-client', { podSelector: { app: 'web' }, ingress: [{ from: [{ namespaceSelector: {}, podSelector: { app: 'client' } }], ports: [{ port: 8080 }] }] })],
});

/** A source the test drives: start() resolves with the first update, as the real ones do. */
class ManualSource implements StateSource {
  private onUpdate: ((u: SourceUpdate) => void) | undefined;
  private started: (() => void) | undefined;
  start(onUpdate: (u: SourceUpdate) => void): Promise<void> {
    this.onUpdate = onUpdate;
    return new Promise((r) => (this.started = r));
  }
  push(s: ClusterState): void {
    this.onUpdate!({ state: s, errors: [], unusable: false });
    this.started?.();
  }
  async stop(): Promise<void> {
    this.started?.();
  }
}

/** The node's nftables tables, ip rules and routes, as the commands the agent runs change them. */
function nodeModel() {
  const tables = new Set<string>();
  const rules: string[] = [];
  const routes: string[] = [];
  const run: CommandRunner = async (cmd, args, input) => {
    const a = args.join(' ');
    if (cmd === 'nft' && a === 'list tables inet') return { code: 0, stdout: [...tables].map((t) => `table inet ${t}\n`).join(''), stderr: '' };
    if (cmd === 'nft' && a === '-f -') {
      for (const m of (input ?? '').matchAll(/^table inet (\w+) \{/gm)) tables.add(m[1]!);
      return { code: 0, stdout: '', stderr: '' };
    }
    if (cmd === 'nft' && args[0] === 'delete') return { code: tables.delete(args[3]!) ? 0 : 1, stdout: '', stderr: '' };
    if (cmd === 'ip' && args[1] === 'rule' && args[2] === 'add') {
      rules.push(`${args[0]} ${args.slice(3).join(' ')}`);
      return { code: 0, stdout: '', stderr: '' };
    }
    if (cmd === 'ip' && args[1] === 'rule' && args[2] === 'del') {
      // As the kernel matches a deletion: the first rule of the family having every attribute
      // given (attributes not given match anything).
      const pairs = (text: string) => new Set(text.split(' ').slice(1).reduce<string[]>((acc, w, i, all) => (i % 2 === 0 ? [...acc, `${w} ${all[i + 1]}`] : acc), []));
      const want = pairs(`${args[0]} ${args.slice(3).join(' ')}`);
      const i = rules.findIndex((r) => r.startsWith(`${args[0]} `) && [...want].every((p) => pairs(r).has(p)));
      if (i < 0) return { code: 2, stdout: '', stderr: 'RTNETLINK answers: No such file or directory' };
      rules.splice(i, 1);
      return { code: 0, stdout: '', stderr: '' };
    }
    if (cmd === 'ip' && args[1] === 'route' && args[2] === 'add') {
      routes.push(`${args[0]} ${args.slice(3).join(' ')}`);
      return { code: 0, stdout: '', stderr: '' };
    }
    if (cmd === 'ip' && args[1] === 'route' && args[2] === 'flush') {
      const t = args[4]!;
      for (let i = routes.length - 1; i >= 0; i--) if (routes[i]!.startsWith(args[0]!) && routes[i]!.endsWith(`table ${t}`)) routes.splice(i, 1);
      return { code: 0, stdout: '', stderr: '' };
    }
    return { code: 1, stdout: '', stderr: `unexpected: ${cmd} ${a}` };
  };
  return { tables, rules, routes, run };
}

async function build(shutdownGraceMs = 0) {
  const fake = new FakeNativeSockets();
  const log = new MemoryLogger();
  const registry = new Registry();
  const metrics = new AgentMetrics(registry);
  const node = nodeModel();
  const interception = new Interception(DEFAULT_INTERCEPTION, node.run);
  const dataplane = new Dataplane(fake, log, { port: 0, flowTableSize: 64, udpIdleMs: 60_000, existingFlows: 'revalidate', connectTimeoutMs: 2000, families: [4] }, { observeDecision: metrics.observeDecision });
  const source = new ManualSource();
  const agent = new Agent(source, dataplane, interception, log, { nodeName: undefined, interceptAllPods: true, shutdownGraceMs }, { snapshotApplied: (s, sec) => metrics.snapshotApplied(s, sec) });
  const loop = new LoopMonitor({ intervalMs: 100, windowMs: 1000 });
  metrics.bind({ dataplane, agent, loop, source: () => ({ kind: 'manifests', updates: 0, events: 0, relists: 0, errors: 0, rejected: 0, lastSyncTime: 0 }) });
  const server = await startMetricsServer({
    host: '127.0.0.1',
    port: 0,
    registry,
    health: () => healthCheck(loop, 200, agent),
    ready: () => readinessCheck(agent, dataplane.revision),
  });
  const base = `http://127.0.0.1:${server.port}`;
  const get = async (path: string) => {
    const r = await fetch(`${base}${path}`);
    return { status: r.status, body: await r.text() };
  };
  return { fake, log, node, interception, dataplane, source, agent, loop, server, get };
}

async function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('health and readiness', () => {
  it('/readyz is 503 before the first snapshot (failing closed) and 200 after; the phase metric follows; /healthz is 200', async () => {
    const h = await build();
    try {
      const before = await h.get('/readyz');
      expect(before.status).toBe(503);
      expect(JSON.parse(before.body)).toMatchObject({ ok: false, phase: 'starting', interception: false });
      const starting = h.agent.start();
      await waitFor(() => h.agent.phase === 'fail_closed', 'the fail-closed phase');
      const closed = await h.get('/readyz');
      expect(closed.status).toBe(503);
      expect(JSON.parse(closed.body)).toMatchObject({ ok: false, phase: 'fail_closed', interception: true, revision: 0 });
      expect((await h.get('/metrics')).body).toMatch(/^netpold_phase\{phase="fail_closed"\} 1$/m);
      expect((await h.get('/metrics')).body).toMatch(/^netpold_interception_installed 1$/m);

      h.source.push(state);
      await starting;
      const ready = await h.get('/readyz');
      expect(ready.status).toBe(200);
      expect(JSON.parse(ready.body)).toMatchObject({ ok: true, phase: 'enforcing', interception: true, revision: 1 });
      const m = (await h.get('/metrics')).body;
      expect(m).toMatch(/^netpold_phase\{phase="enforcing"\} 1$/m);
      expect(m).toMatch(/^netpold_phase\{phase="fail_closed"\} 0$/m);
      expect(m).toMatch(/^netpold_snapshot_revision 1$/m);
      expect(m).toMatch(/^netpold_snapshot_compile_duration_seconds_count 1$/m);
      expect(m).toMatch(/^netpold_snapshot_pods 2$/m);
      const health = await h.get('/healthz');
      expect(health.status).toBe(200);
      expect(JSON.parse(health.body)).toMatchObject({ ok: true, phase: 'enforcing' });
      expect((await h.get('/nope')).status).toBe(404);

      await h.agent.stop();
      const after = await h.get('/readyz');
      expect(after.status).toBe(503);
      expect(JSON.parse(after.body)).toMatchObject({ phase: 'stopped', interception: false });
    } finally {
      await h.server.close();
      await h.fake.close();
    }
  });

  it('/healthz turns 503 when the event loop was blocked longer than allowed, and 200 again once the window has passed', async () => {
    let now = 0;
    const loop = new LoopMonitor({ intervalMs: 100, windowMs: 1000, now: () => now });
    const view = { phase: 'enforcing' as const, interceptionInstalled: true, ready: true };
    for (; now <= 500; now += 100) loop.sample();
    expect(healthCheck(loop, 200, view).ok).toBe(true);
    now = 1400; // the last tick was at 500: this one fires 800 ms late, the loop was blocked
    loop.sample();
    const bad = healthCheck(loop, 200, view);
    expect(bad.ok).toBe(false);
    expect(bad.detail).toMatchObject({ eventLoopLagMs: 800 });
    for (let i = 0; i < 12; i++) {
      now += 100;
      loop.sample();
    }
    expect(healthCheck(loop, 200, view).ok).toBe(true);
    // A timer overdue right now counts too.
    now += 700;
    expect(healthCheck(loop, 200, view).ok).toBe(false);
  });

  it('a real stall of the event loop is seen by the running monitor', async () => {
    const loop = new LoopMonitor({ intervalMs: 20, windowMs: 60_000 });
    loop.start();
    try {
      await new Promise((r) => setTimeout(r, 50));
      const t0 = performance.now();
      while (performance.now() - t0 < 300) {
        // block the loop
      }
      await new Promise((r) => setTimeout(r, 50));
      expect(loop.lagMs).toBeGreaterThanOrEqual(200);
    } finally {
      loop.stop();
    }
  });
});

describe('shutdown', () => {
  it('removes every table, rule and route the agent made; a live flow finishes within the grace period', async () => {
    const h = await build(60_000);
    try {
      const starting = h.agent.start();
      await waitFor(() => h.agent.phase === 'fail_closed', 'the fail-closed phase');
      expect([...h.node.tables].sort()).toEqual(['netpold', 'netpold_sctp']);
      expect(h.node.rules).toHaveLength(3); // the fwmark rule per family, the IPv4 reverse-path rule
      expect(h.node.routes).toHaveLength(2);
      h.source.push(state);
      await starting;
      h.fake.redirectTcp(h.dataplane.listeners.tcp[0]!);
      // A live flow through the agent.
      await h.fake.serveTcp({ address: WEB_IP, port: 8080 }, (s) => s.pipe(s));
      const c = await h.fake.clientTcp({ srcAddress: CLIENT_IP, srcPort: 40000, dstAddress: WEB_IP, dstPort: 8080 });
      const got: Buffer[] = [];
      c.on('data', (b: Buffer) => got.push(b));
      c.write('one');
      await waitFor(() => Buffer.concat(got).toString() === 'one', 'the first echo');

      const stopped = h.agent.stop();
      await waitFor(() => h.agent.phase === 'draining', 'the draining phase');
      expect((await h.get('/readyz')).status).toBe(503);
      // Interception stays while the flow drains, and the flow keeps working.
      expect(h.node.tables.size).toBe(2);
      c.write('two');
      await waitFor(() => Buffer.concat(got).toString() === 'onetwo', 'the echo during the drain');
      let closedError: string | undefined;
      c.on('error', (e: NodeJS.ErrnoException) => (closedError = e.code));
      c.end();
      await stopped;
      expect(closedError).toBeUndefined();
      expect(h.agent.phase).toBe('stopped');
      expect(h.node.tables.size).toBe(0);
      expect(h.node.rules).toEqual([]);
      expect(h.node.routes).toEqual([]);
      expect(h.log.lines.map((l) => l.msg)).toContain('drained: every live flow finished');
    } finally {
      await h.server.close();
      await h.fake.close();
    }
  });

  it('a crashed run leaves its table and rules behind; the next start removes them before installing its own', async () => {
    const crashed = await build();
    const starting = crashed.agent.start();
    await waitFor(() => crashed.agent.phase === 'fail_closed', 'the fail-closed phase');
    crashed.source.push(state);
    await starting;
    // The process dies here: nothing is torn down. A new agent starts on the same node.
    await crashed.server.close();
    const node = crashed.node;
    expect(node.tables.size).toBe(2);
    const next = new Interception(DEFAULT_INTERCEPTION, node.run);
    await next.setup();
    expect([...node.tables].sort()).toEqual(['netpold', 'netpold_sctp']);
    expect(node.rules).toHaveLength(3); // as one start makes them: the leftovers were removed, not duplicated
    expect(node.routes).toHaveLength(2);
    await next.teardown();
    expect(node.tables.size + node.rules.length + node.routes.length).toBe(0);
    await crashed.dataplane.stop();
    await crashed.fake.close();
  });
});

describe('the explain socket', () => {
  it('answers explain requests about the enforced state, JSON lines; errors carry their code', async () => {
    const h = await build();
    const path = join(tmp, 'explain', 'agent.sock');
    const sock = await serveExplainSocket(path, (req) => h.agent.explain(req as Parameters<Agent['explain']>[0]), h.log);
    try {
      const early = (await askAgent(path, { from: 'client-ns/client', to: 'server-ns/web', port: 8080 })) as { ok: boolean; error: { message: string } };
      expect(early.ok).toBe(false);
      expect(early.error.message).toMatch(/no policy state is enforced yet/);
      const starting = h.agent.start();
      await waitFor(() => h.agent.phase === 'fail_closed', 'the fail-closed phase');
      h.source.push(state);
      await starting;
      const r = (await askAgent(path, { from: 'client-ns/client', to: 'server-ns/web', port: 8080 })) as { ok: boolean; result: Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any
      expect(r.ok).toBe(true);
      expect(r.result).toMatchObject({ from: { endpoint: 'client-ns/client', ip: CLIENT_IP }, to: { endpoint: 'server-ns/web', ip: WEB_IP }, protocol: 'TCP', port: 8080, enforcement: 'allow' });
      expect(r.result.explanation.ingress).toMatchObject({ status: 'allowed', allowedBy: { policy: 'server-ns/allow-client', rule: 0 } });
      const denied = (await askAgent(path, { from: 'client-ns/client', to: 'server-ns/web', port: 9090 })) as { result: Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any
      expect(denied.result.enforcement).toBe('deny');
      expect(denied.result.explanation.ingress.policies[0].rules[0].ports.entries[0]).toMatchObject({ text: 'TCP/8080', matched: false });
      const unknown = (await askAgent(path, { from: 'client-ns/nope', to: 'server-ns/web', port: 80 })) as { ok: boolean; error: { code: string } };
      expect(unknown).toMatchObject({ ok: false, error: { code: 'NETPOLD_E_UNKNOWN_ENDPOINT' } });
      const garbage = (await askAgent(path, 'just a string')) as { ok: boolean; error: { code: string } };
      expect(garbage).toMatchObject({ ok: false, error: { code: 'NETPOLD_E_USAGE' } });
      // A second agent cannot take over the live socket.
      await expect(serveExplainSocket(path, () => 1, h.log)).rejects.toMatchObject({ code: 'NETPOLD_E_LISTEN' });
      await h.agent.stop();
    } finally {
      await sock.close();
      await h.server.close();
      await h.fake.close();
    }
  });

  it('replaces a stale socket file (a crashed agent), refuses a path that is not a socket, and says when no agent answers', async () => {
    const path = join(tmp, 'stale.sock');
    // A socket file nobody listens on any more.
    const dead = createServer();
    await new Promise<void>((r) => dead.listen(path, r));
    await new Promise<void>((r) => {
      (dead as unknown as { _handle: { close(): void } | null })._handle?.close(); // drop the listener without unlinking the file
      r();
    });
    const log = new MemoryLogger();
    const s = await serveExplainSocket(path, () => ({ pong: true }), log);
    expect(await askAgent(path, { ping: 1 })).toEqual({ ok: true, result: { pong: true } });
    await s.close();
    const file = join(tmp, 'plain-file');
    writeFileSync(file, 'x');
    await expect(serveExplainSocket(file, () => 1, log)).rejects.toMatchObject({ code: 'NETPOLD_E_LISTEN' });
    await expect(askAgent(join(tmp, 'nobody.sock'), {})).rejects.toMatchObject({ code: 'NETPOLD_E_AGENT_UNREACHABLE' });
  });
});
