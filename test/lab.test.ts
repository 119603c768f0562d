// `netpold lab`: the topology plan (pure, runs anywhere) and a real lab built from examples/demo
// out of network namespaces (needs root, iproute2, nftables; skipped otherwise, saying why).
// Ids are random per run so parallel test files never collide.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../src/cli/main.js';
import { NetpoldError } from '../src/errors.js';
import { Lab, labStateDir } from '../src/lab/lab.js';
import { planLab } from '../src/lab/plan.js';
import { labRequirementsMissing } from '../src/lab/sys.js';
import type { ClusterState, PodInfo } from '../src/model/types.js';
import { loadManifestPaths } from '../src/source/files/load.js';

const root = new URL('..', import.meta.url).pathname;
const demo = join(root, 'examples/demo');
const digits = (): string => String(Math.floor(Math.random() * 1e7)).padStart(7, '0');
const missing = labRequirementsMissing();
if (missing.length > 0) console.warn(`test/lab.test.ts: the network-namespace lab tests are skipped: they need ${missing.join(', ')}`);

function demoState(): ClusterState {
  const r = loadManifestPaths([demo]);
  expect(r.errors).toEqual([]);
  return r.state;
}

function labNamespaces(id: string): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: 10_000 })
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith(`np-${id}-`));
}

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await run(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('lab plan (no root needed)', () => {
  it('names every namespace and interface from the id and the sorted pods', () => {
    const plan = planLab(demoState(), { id: 'demo', ports: [8080] });
    expect(plan.nodeNamespace).toBe('np-demo-node');
    expect(plan.extNamespace).toBe('np-demo-ext');
    expect(plan.nodeName).toBe('node-a');
    expect(plan.nodeAddresses).toEqual(['198.18.255.1']);
    expect(plan.pods.map((p) => [p.key, p.netns, p.nodeIf])).toEqual([
      ['kube-system/coredns', 'np-demo-p0', 'npv0'],
      ['production/api', 'np-demo-p1', 'npv1'],
      ['production/backend', 'np-demo-p2', 'npv2'],
      ['production/database', 'np-demo-p3', 'npv3'],
      ['production/frontend', 'np-demo-p4', 'npv4'],
      ['staging/frontend', 'np-demo-p5', 'npv5'],
    ]);
    const dns = plan.pods[0]!;
    const slots = [...new Set(dns.listeners.map((l) => `${l.protocol}/${l.port}`))].sort();
    expect(slots).toEqual(['TCP/53', 'TCP/8080', 'UDP/53', 'UDP/8080']);
    expect(new Set(dns.listeners.map((l) => l.host))).toEqual(new Set(['198.18.2.53', '2001:2::2:53']));
    expect(dns.listeners.every((l) => l.reply === 'kube-system/coredns')).toBe(true);
  });

  it('refuses addresses outside 198.18.0.0/15 and 2001:2::/48, and bad ids', () => {
    const s = demoState();
    const bad: PodInfo = { ...s.pods[0]!, name: 'stray', ips: ['10.0.0.1'] };
    expect(() => planLab({ ...s, pods: [...s.pods, bad] }, { id: 'x' })).toThrow(/only addresses in 198\.18\.0\.0\/15 and 2001:2::\/48: pod [a-z-]+\/stray has 10\.0\.0\.1/);
    expect(() => planLab({ ...s, nodes: [{ name: 'n', addresses: ['2001:db8::1'] }] }, { id: 'x' })).toThrow(/node n has 2001:db8::1/);
    expect(() => planLab(s, { id: 'Demo' })).toThrow(NetpoldError);
    expect(() => planLab(s, { id: 'abcdefghi' })).toThrow(/1 to 8/);
    expect(() => planLab(s, { id: 'x', nodeName: 'nope' })).toThrow(/no Node object/);
  });

  it('host-network pods answer from the node namespace on the node addresses', () => {
    const s = demoState();
    const hn: PodInfo = { namespace: 'kube-system', name: 'proxy', ips: ['198.18.255.1'], labels: {}, namedPorts: [{ name: 'm', port: 10249, protocol: 'TCP' }], node: 'node-a', hostNetwork: true };
    const plan = planLab({ ...s, pods: [...s.pods, hn] }, { id: 'x', ports: [80] });
    const p = plan.pods.find((q) => q.key === 'kube-system/proxy')!;
    expect(p.netns).toBe('np-x-node');
    expect(p.k).toBeUndefined();
    expect(p.listeners.map((l) => `${l.protocol}/${l.host}/${l.port}`).sort()).toEqual(['TCP/198.18.255.1/10249', 'TCP/198.18.255.1/80', 'UDP/198.18.255.1/80']);
    expect(plan.pods.filter((q) => !q.hostNetwork)).toHaveLength(6);
  });
});

describe.skipIf(missing.length > 0)(`lab on network namespaces${missing.length ? ` (skipped: needs ${missing.join(', ')})` : ''}`, () => {
  const id = `t${digits()}`;
  let lab: Lab | undefined;

  beforeAll(async () => {
    const t0 = Date.now();
    lab = await Lab.up({ id, manifests: [demo], ports: [8080] });
    console.info(`lab ${id} up in ${Date.now() - t0} ms`);
  });

  afterAll(async () => {
    await Lab.downById(id); // also when a test failed
  });

  it('builds the node, the external namespace and one namespace per pod', async () => {
    const l = lab!;
    expect(l.nodeNamespace).toBe(`np-${id}-node`);
    expect(labNamespaces(id).sort()).toEqual([`np-${id}-ext`, `np-${id}-node`, ...[0, 1, 2, 3, 4, 5].map((k) => `np-${id}-p${k}`)].sort());
    expect(l.podNamespace('production/backend')).toBe(`np-${id}-p2`);
    expect(existsSync(join(labStateDir(id), 'state.json'))).toBe(true);
    const addr = await l.exec(l.nodeNamespace, ['ip', '-o', 'addr', 'show', 'dev', 'node0']);
    expect(addr.code).toBe(0);
    expect(addr.stdout).toContain('198.18.255.1/32');
    const fwd = await l.exec(l.nodeNamespace, ['sysctl', '-n', 'net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding', 'net.ipv4.conf.all.rp_filter']);
    expect(fwd.stdout.split('\n').filter(Boolean)).toEqual(['1', '1', '0']);
    const routes = await l.exec(l.podNamespace('production/backend'), ['ip', 'route']);
    expect(routes.stdout).toContain('default via 169.254.1.1 dev eth0');
  });

  it('without an agent every pod reaches every pod: TCP, IPv4 and IPv6, and UDP', async () => {
    const l = lab!;
    for (const [protocol, family] of [['TCP', 4], ['TCP', 6], ['UDP', 4], ['UDP', 6]] as const) {
      const t0 = Date.now();
      const m = await l.matrix(8080, protocol, { family, timeoutMs: 2000 });
      console.info(`matrix ${protocol}/IPv${family}: ${Date.now() - t0} ms`);
      expect(Object.keys(m)).toHaveLength(6);
      for (const row of Object.values(m)) {
        expect(Object.keys(row)).toHaveLength(6);
        expect(Object.values(row).every((v) => v === true)).toBe(true);
      }
    }
  });

  it('the reply names the pod that answered; a closed port is refused', async () => {
    const l = lab!;
    const ok = await l.probe('production/frontend', 'production/backend', 8080, 'TCP', { family: 6 });
    expect(ok).toMatchObject({ result: 'connected', reply: 'production/backend', src: '2001:2::1:10', dst: '2001:2::1:20' });
    const dns = await l.probe('production/api', 'kube-system/coredns', 53, 'UDP', {});
    expect(dns).toMatchObject({ result: 'connected', reply: 'kube-system/coredns' });
    expect((await l.probe('production/api', 'production/database', 9, 'TCP', {})).result).toBe('refused');
    expect((await l.probe('production/api', 'production/database', 9, 'UDP', { family: 6 })).result).toBe('refused');
  });

  it('probes from an external address and from the node', async () => {
    const l = lab!;
    const ext = await l.probe('198.19.7.7', 'production/database', 8080, 'TCP', { timeoutMs: 2000 });
    expect(ext).toMatchObject({ result: 'connected', reply: 'production/database', from: 'external', src: '198.19.7.7' });
    const ext6 = await l.probe('2001:2:0:1::7', 'staging/frontend', 8080, 'UDP', { timeoutMs: 2000 });
    expect(ext6).toMatchObject({ result: 'connected', reply: 'staging/frontend' });
    const again = await l.probe('198.19.7.7', 'production/api', 8080, 'TCP', {});
    expect(again.result).toBe('connected');
    const node = await l.probe('198.18.255.1', 'production/api', 8080, 'TCP', {});
    expect(node).toMatchObject({ result: 'connected', reply: 'production/api', from: 'node' });
    const out = await l.probe('production/api', '198.19.9.9', 8080, 'TCP', {});
    expect(out).toMatchObject({ result: 'connected', reply: 'external/198.19.9.9' });
  });

  it('the CLI: lab matrix --json, lab probe, and lab up on an existing id', async () => {
    const m = await cli('lab', 'matrix', '--id', id, '--port', '8080', '--json');
    expect(m.code).toBe(0);
    const j = JSON.parse(m.out) as Record<string, Record<string, boolean>>;
    expect(Object.keys(j)).toHaveLength(6);
    expect(j['staging/frontend']!['production/backend']).toBe(true);
    const p = await cli('lab', 'probe', '--id', id, '--from', 'production/frontend', '--to', 'production/backend', '--port', '8080');
    expect(p.code).toBe(0);
    expect(p.out).toMatch(/^connected .*reply "production\/backend"/);
    const again = await cli('lab', 'up', '--id', id, '--manifests', demo);
    expect(again.code).toBe(2);
    expect(again.err).toContain(`lab down --id ${id}`);
    expect(again.err).toContain('NETPOLD_E_LAB');
  });

  it('down removes every namespace, process and the state dir; it is idempotent', async () => {
    const l = lab!;
    const pids = l.state.agents.map((a) => a.pid!);
    await l.down();
    expect(labNamespaces(id)).toEqual([]);
    expect(existsSync(labStateDir(id))).toBe(false);
    expect(pids.filter((pid) => existsSync(`/proc/${pid}`))).toEqual([]);
    const d = await cli('lab', 'down', '--id', id);
    expect(d.code).toBe(0);
    expect(d.out).toContain('nothing to remove');
  });

  it('a step that fails leaves nothing behind', async () => {
    const fid = `f${digits()}`;
    // Addresses outside the test ranges: refused before anything is built, exit 2 from the CLI.
    const tmp = mkdtempSync(join(tmpdir(), 'netpold-lab-'));
    try {
      writeFileSync(
        join(tmp, 'pod.yaml'),
        'apiVersion: v1\nkind: Pod\nmetadata: {name: stray, namespace: default}\nspec: {containers: [{name: c}]}\nstatus: {podIP: 10.1.2.3}\n',
      );
      const r = await cli('lab', 'up', '--id', fid, '--manifests', tmp);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/only addresses in 198\.18\.0\.0\/15.*10\.1\.2\.3/);
      await expect(Lab.up({ id: fid, manifests: [tmp] })).rejects.toThrow(/10\.1\.2\.3/);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    expect(labNamespaces(fid)).toEqual([]);
    expect(existsSync(labStateDir(fid))).toBe(false);

    // A step failing half-way (two pods claiming one address: the second host route fails).
    const s = demoState();
    const twin: PodInfo = { ...s.pods.find((p) => p.name === 'backend')!, name: 'zz-twin' };
    await expect(Lab.up({ id: fid, state: { ...s, pods: [...s.pods, twin] } })).rejects.toThrow(/NETPOLD_E_LAB|File exists|exists/);
    expect(labNamespaces(fid)).toEqual([]);
    expect(existsSync(labStateDir(fid))).toBe(false);
  });
});
