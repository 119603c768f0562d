// End to end, the native fast path (--relay splice): the engine's threads accept TCP on a
// SO_REUSEPORT listener group, and established UDP flows move on their own sockets without
// JavaScript. The demo cluster in a lab, the real agent with two engine threads and a short
// UDP idle time; real sockets through the kernel's TPROXY path. What is asserted here is what
// the fast path adds; test/agent.e2e.test.ts runs every common behaviour with both relays.
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeAddonPath } from '../src/dataplane/native.js';
import { AgentProcess } from '../src/lab/agent-process.js';
import { Lab } from '../src/lab/lab.js';
import { labRequirementsMissing } from '../src/lab/sys.js';
import { sleep } from './support/wait.js';

const root = new URL('..', import.meta.url).pathname;
const missing = [...labRequirementsMissing()];
const addon = nativeAddonPath();
if (!addon || !existsSync(addon)) missing.push('the native addon (npm ci builds it)');
const skip = missing.length > 0;
if (skip) console.warn(`fast path e2e tests skipped: they need ${missing.join(', ')}`);

/** Polls an async condition every 100 ms until it holds, failing after timeoutMs. */
async function waitUntil(cond: () => Promise<boolean>, o: { timeoutMs: number; what: string }): Promise<void> {
  const deadline = Date.now() + o.timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${o.timeoutMs} ms waiting for ${o.what}`);
    await sleep(100);
  }
}

/** The value of one metric series (exact name with labels), 0 if absent. */
function series(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.slice(name.length + 1));
}

/**
 * A UDP client script: from a fixed source port, `count` datagrams to host:port one after the
 * other, each waiting (bounded) for its reply; prints {sent, replies, first}.
 */
function udpClient(host: string, port: number, srcPort: number, count: number, waitMs = 1500): string {
  return `
    const dgram = require('dgram');
    const s = dgram.createSocket({ type: 'udp4', reuseAddr: true });
    let replies = 0, first = null, sent = 0, timer = null, pending = null;
    s.on('message', (m) => { replies++; if (first === null) first = m.toString().trim(); if (pending) { clearTimeout(timer); const p = pending; pending = null; p(); } });
    const one = () => new Promise((resolve) => { pending = resolve; timer = setTimeout(() => { pending = null; resolve(); }, ${waitMs}); s.send('ping ' + sent, ${port}, '${host}'); sent++; });
    s.bind(${srcPort}, async () => {
      for (let i = 0; i < ${count}; i++) await one();
      console.log(JSON.stringify({ sent, replies, first }));
      s.close();
    });`;
}

describe.skipIf(skip)('native fast path (--relay splice, 2 engine threads)', () => {
  let lab: Lab;
  let agent: AgentProcess;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'netpold-fast-'));
    cpSync(join(root, 'examples/demo'), dir, { recursive: true });
    lab = await Lab.up({ id: `f${Math.floor(Math.random() * 1e6)}`, manifests: [dir], nodeName: 'node-a', ports: [8080, 53] });
    agent = AgentProcess.start(lab.nodeNamespace, [
      '--manifests', dir, '--node-name', 'node-a', '--relay', 'splice', '--relay-threads', '2', '--udp-idle-ms', '1500',
    ]);
    await agent.waitFor((r) => r.msg === 'ready');
  }, 60_000);

  afterAll(async () => {
    await agent?.stop();
    await lab?.down();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  const metrics = async (): Promise<string> => (await agent.get('/metrics')).body;

  it('accepts TCP on both engine threads: the kernel spreads connections over the listener group', async () => {
    const before = await metrics();
    // 64 connections at once from production/frontend to production/backend:8080 (allowed):
    // different source ports, so the group's hash sends them to both sockets.
    const script = `
      const net = require('net'); let ok = 0, bad = 0, done = 0; const N = 64;
      for (let i = 0; i < N; i++) {
        const s = net.connect({ host: '198.18.1.20', port: 8080 });
        let got = '';
        s.on('data', (d) => { got += d; if (got.endsWith('\\n')) s.end(); });
        s.on('close', () => { if (got.trim() === 'production/backend') ok++; else bad++; if (++done === N) { console.log(JSON.stringify({ ok, bad })); process.exit(0); } });
        s.on('error', () => {});
      }
      setTimeout(() => { console.log(JSON.stringify({ ok, bad, timeout: true })); process.exit(1); }, 20000);`;
    const r = await lab.exec(lab.podNamespace('production/frontend'), [process.execPath, '-e', script], { timeoutMs: 30_000 });
    expect(JSON.parse(r.stdout.trim())).toEqual({ ok: 64, bad: 0 });
    const after = await metrics();
    expect(series(after, 'netpold_engine_threads')).toBe(2);
    const t0 = series(after, 'netpold_engine_accepted_total{thread="0"}') - series(before, 'netpold_engine_accepted_total{thread="0"}');
    const t1 = series(after, 'netpold_engine_accepted_total{thread="1"}') - series(before, 'netpold_engine_accepted_total{thread="1"}');
    expect(t0 + t1).toBe(64);
    // All 64 on one thread would happen with probability 2^-63 if the hash spreads them.
    expect(t0).toBeGreaterThan(0);
    expect(t1).toBeGreaterThan(0);
    // Syscalls per connection are counted by the engine (reported by the flow benchmark).
    expect(series(after, 'netpold_engine_syscalls_total')).toBeGreaterThan(series(before, 'netpold_engine_syscalls_total') + 64);
  });

  it('the verdict cache relays repeated connections at once, each still decided by JavaScript; a policy change voids it', async () => {
    const policies = join(dir, 'policies.yaml');
    const original = readFileSync(policies, 'utf8');
    const ns = lab.podNamespace('production/frontend');
    // `count` connections one after the other (each waits for its reply, or its failure).
    const connect = async (count: number): Promise<{ ok: number; failed: number }> => {
      const script = `
        const net = require('net'); let ok = 0, failed = 0;
        const one = () => new Promise((resolve) => {
          const s = net.connect({ host: '198.18.1.20', port: 8080 }); let got = '';
          const t = setTimeout(() => { s.destroy(); failed++; resolve(); }, 3000);
          s.on('data', (d) => { got += d; if (got.endsWith('\\n')) s.end(); });
          s.on('close', () => { clearTimeout(t); if (got.trim() === 'production/backend') ok++; else failed++; resolve(); });
          s.on('error', () => {});
        });
        (async () => { for (let i = 0; i < ${count}; i++) await one(); console.log(JSON.stringify({ ok, failed })); })();`;
      return JSON.parse((await lab.exec(ns, [process.execPath, '-e', script], { timeoutMs: 60_000 })).stdout.trim()) as { ok: number; failed: number };
    };
    const before = await metrics();
    expect(await connect(20)).toEqual({ ok: 20, failed: 0 });
    const after = await metrics();
    const d = (a: string, b: string, name: string): number => series(b, name) - series(a, name);
    // Each engine thread learns the verdict from its first connection; the rest are relayed
    // from its cache. JavaScript decided all 20 all the same.
    expect(d(before, after, 'netpold_engine_verdict_cache_hits_total')).toBeGreaterThanOrEqual(18);
    expect(d(before, after, 'netpold_flows_total{protocol="tcp",verdict="allow"}')).toBe(20);

    const mark = agent.lines.length;
    writeFileSync(policies, original.split('\n---\n').filter((doc) => !doc.includes('name: allow-frontend')).join('\n---\n'));
    try {
      await agent.waitFor((l) => l.msg === 'snapshot enforced', 20_000, mark);
      const m0 = await metrics();
      // Denied now: no cached verdict lets one through.
      expect(await connect(10)).toEqual({ ok: 0, failed: 10 });
      const m1 = await metrics();
      expect(d(m0, m1, 'netpold_engine_verdict_cache_hits_total')).toBe(0);
      expect(d(m0, m1, 'netpold_flows_total{protocol="tcp",verdict="deny"}')).toBe(10);
    } finally {
      const back = agent.lines.length;
      writeFileSync(policies, original);
      await agent.waitFor((l) => l.msg === 'snapshot enforced', 20_000, back);
    }
    expect(await connect(3)).toEqual({ ok: 3, failed: 0 });
  }, 120_000);

  it('an established UDP flow moves its datagrams without JavaScript: one decision, every datagram relayed by the engine', async () => {
    const before = await metrics();
    const r = await lab.exec(lab.podNamespace('production/api'), [process.execPath, '-e', udpClient('198.18.2.53', 53, 41001, 100)], { timeoutMs: 60_000 });
    expect(JSON.parse(r.stdout.trim())).toEqual({ sent: 100, replies: 100, first: 'kube-system/coredns' });
    const after = await metrics();
    const d = (name: string): number => series(after, name) - series(before, name);
    expect(d('netpold_engine_udp_flows_total')).toBe(1);
    expect(d('netpold_flows_total{protocol="udp",verdict="allow"}')).toBe(1);
    // 100 requests and 100 replies went through the engine; only the first went to JS (queued
    // with its flow until the verdict, then sent by the engine too).
    expect(d('netpold_engine_udp_datagrams_total')).toBe(200);
    expect(d('netpold_engine_udp_io_calls_total')).toBeGreaterThan(0);
  });

  it('a UDP flow idle for --udp-idle-ms is ended by the engine and leaves the flow table', async () => {
    const r = await lab.exec(lab.podNamespace('production/api'), [process.execPath, '-e', udpClient('198.18.2.53', 53, 41002, 3)], { timeoutMs: 30_000 });
    expect(JSON.parse(r.stdout.trim())).toMatchObject({ replies: 3 });
    expect(series(await metrics(), 'netpold_engine_udp_flows_active')).toBeGreaterThanOrEqual(1);
    await waitUntil(async () => series(await metrics(), 'netpold_engine_udp_flows_active') === 0, { timeoutMs: 15_000, what: 'the UDP flows to idle out' });
    await waitUntil(async () => series(await metrics(), 'netpold_flow_table_entries') === 0, { timeoutMs: 5_000, what: 'the flow table to empty' });
  });

  it('a policy change re-decides UDP flows: an allowed flow is closed, a remembered denial is lifted', async () => {
    const policies = join(dir, 'policies.yaml');
    const original = readFileSync(policies, 'utf8');
    const ns = lab.podNamespace('production/api');
    const send = async (count: number) =>
      JSON.parse((await lab.exec(ns, [process.execPath, '-e', udpClient('198.18.2.53', 53, 41003, count, 700)], { timeoutMs: 30_000 })).stdout.trim()) as { replies: number };
    // Allowed (allow-dns); the flow stays live in the engine (idle time 1.5 s, resent below).
    expect((await send(2)).replies).toBe(2);
    const mark = agent.lines.length;
    writeFileSync(policies, original.split('\n---\n').filter((doc) => !doc.includes('name: allow-dns')).join('\n---\n'));
    try {
      await agent.waitFor((l) => l.msg === 'flow closed: no longer allowed after a policy change' && l.protocol === 'UDP', 20_000, mark);
      // Same 5-tuple: decided afresh, denied, and remembered by the engine (dropped there).
      expect((await send(2)).replies).toBe(0);
      const m = await metrics();
      expect(series(m, 'netpold_engine_udp_dropped_total')).toBeGreaterThanOrEqual(2);
    } finally {
      const back = agent.lines.length;
      writeFileSync(policies, original);
      await agent.waitFor((l) => l.msg === 'snapshot enforced', 20_000, back);
    }
    // The remembered denial was re-decided under the restored policies: allowed again.
    expect((await send(2)).replies).toBe(2);
  }, 90_000);
});
