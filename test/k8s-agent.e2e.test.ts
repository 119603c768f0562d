// End to end with the Kubernetes source: the real agent (`netpold agent --kubeconfig`) in a lab's
// node namespace, fed by the fake API server of this test process, enforcing on real traffic.
// A NetworkPolicy added to (then deleted from) the API server changes a live verdict.
// Needs root, iproute2, nftables and the native addon; skips with a message otherwise.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeAddonPath } from '../src/dataplane/native.js';
import { AgentProcess } from '../src/lab/agent-process.js';
import { Lab } from '../src/lab/lab.js';
import { labRequirementsMissing } from '../src/lab/sys.js';
import { FakeApiServer, type FakeKind, namespaceObject, policyObject } from './support/fake-apiserver.js';

const root = new URL('..', import.meta.url).pathname;
const missing = [...labRequirementsMissing()];
const addon = nativeAddonPath();
if (!addon || !existsSync(addon)) missing.push('the native addon (npm ci builds it)');
if (!existsSync(join(root, 'dist/src/cli/main.js'))) missing.push('dist/ (npm run build)');
const skip = missing.length > 0;
if (skip) console.warn(`kubernetes agent e2e tests skipped: they need ${missing.join(', ')}`);

const KINDS = new Set<string>(['Namespace', 'Pod', 'Node', 'NetworkPolicy']);

/** The demo manifests' objects, as an API server would hold them. */
function loadDemo(server: FakeApiServer): void {
  const dir = join(root, 'examples/demo');
  const declared = new Set<string>();
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.yaml')).sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(dir, f), 'utf8'))) {
      const o = doc.toJS() as Record<string, unknown> | null;
      if (o === null) continue;
      const objects = o['kind'] === 'List' ? (o['items'] as Record<string, unknown>[]) : [o];
      for (const obj of objects) {
        const kind = obj['kind'] as string;
        if (!KINDS.has(kind)) continue;
        const { apiVersion: _a, kind: _k, ...rest } = obj;
        if (kind === 'Namespace') {
          const meta = rest['metadata'] as { name: string; labels?: Record<string, string> };
          declared.add(meta.name);
          meta.labels = { 'kubernetes.io/metadata.name': meta.name, ...meta.labels };
        }
        server.apply(kind as FakeKind, rest);
      }
    }
  }
  for (const ns of ['default', 'kube-system', 'kube-public', 'kube-node-lease']) if (!declared.has(ns)) server.apply('Namespace', namespaceObject(ns));
}

describe.skipIf(skip)('agent with the Kubernetes source, on the demo cluster', () => {
  let server: FakeApiServer;
  let lab: Lab;
  let agent: AgentProcess;
  let dir: string;
  let bridge: Server;
  let forwarder: ChildProcess;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'netpold-k8s-e2e-'));
    server = new FakeApiServer();
    await server.start();
    loadDemo(server);
    // Registered as kubelet --register-with-taints would: no pod scheduled before the agent enforces.
    server.modify('Node', undefined, 'node-a', (o) => (o['spec'] = { taints: [{ key: 'netpold.io/agent-not-ready', effect: 'NoSchedule' }, { key: 'example.com/keep', effect: 'NoSchedule' }] }));
    lab = await Lab.up({ id: `k${Math.floor(Math.random() * 1e6)}`, manifests: [join(root, 'examples/demo')], nodeName: 'node-a', ports: [8080] });
    // The agent lives in the node namespace; the API server in this process. The agent reaches
    // it as a remote address, like a real API server: 198.19.200.1:16443 in the lab's external
    // namespace, forwarded through a Unix socket (visible from every network namespace) to the
    // fake server. (Not 127.0.0.1 in the node namespace: before its first state the agent
    // intercepts every address, and loopback traffic passes prerouting too.)
    const sock = join(dir, 'apiserver.sock');
    bridge = createServer((c) => {
      const u = connect(server.port, '127.0.0.1');
      c.pipe(u).pipe(c);
      c.on('error', () => u.destroy());
      u.on('error', () => c.destroy());
    });
    await new Promise<void>((r) => bridge.listen(sock, r));
    const fwd = `
      const net = require('net');
      net.createServer((c) => { const u = net.connect(${JSON.stringify(sock)}); c.pipe(u).pipe(c);
        c.on('error', () => u.destroy()); u.on('error', () => c.destroy()); })
        .listen(16443, '198.19.200.1', () => console.log('listening'));
      setTimeout(() => process.exit(0), 300000);`;
    const addr = await lab.exec(lab.extNamespace, ['ip', 'addr', 'replace', '198.19.200.1/32', 'dev', 'eth0']);
    expect(addr.code).toBe(0);
    forwarder = spawn('ip', ['netns', 'exec', lab.extNamespace, process.execPath, '-e', fwd], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('forwarder did not start')), 10_000);
      forwarder.stdout!.once('data', () => (clearTimeout(t), resolve()));
    });
    const kubeconfig = server.writeKubeconfig(dir, 'http://198.19.200.1:16443');
    agent = AgentProcess.start(lab.nodeNamespace, ['--kubeconfig', kubeconfig, '--node-name', 'node-a', '--ready-taint', 'netpold.io/agent-not-ready']);
    await agent.waitFor((r) => r.msg === 'ready', 30_000);
  }, 90_000);

  afterAll(async () => {
    await agent?.stop();
    forwarder?.kill('SIGKILL');
    await new Promise<void>((r) => (bridge ? bridge.close(() => r()) : r()));
    await lab?.down();
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('removes the readiness taint from its Node once enforcing, and only that taint', async () => {
    const taints = (): string[] => ((server.get('Node', undefined, 'node-a')?.['spec'] as { taints?: { key: string }[] } | undefined)?.taints ?? []).map((t) => t.key);
    for (let i = 0; i < 100 && taints().includes('netpold.io/agent-not-ready'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(taints()).toEqual(['example.com/keep']);
    expect(agent.lines.some((l) => /removed the readiness taint/.test(String(l.msg)))).toBe(true);
  });

  it('an added NetworkPolicy opens a denied flow; deleting it closes it again', async () => {
    const denied = await lab.probe('production/api', 'production/backend', 8080, 'TCP', { timeoutMs: 2000 });
    expect(denied.result).toBe('reset');

    const from = agent.lines.length;
    server.apply('NetworkPolicy', policyObject('production', 'allow-api-to-backend', {
      podSelector: { matchLabels: { app: 'backend' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { app: 'api' } } }], ports: [{ port: 8080 }] }],
    }));
    await agent.waitFor((r) => r.msg === 'snapshot enforced' && r['policies'] === 6, 10_000, from);
    const open = await lab.probe('production/api', 'production/backend', 8080, 'TCP', { timeoutMs: 3000 });
    expect(open.result).toBe('connected');

    const from2 = agent.lines.length;
    server.delete('NetworkPolicy', 'production', 'allow-api-to-backend');
    await agent.waitFor((r) => r.msg === 'snapshot enforced' && r['policies'] === 5, 10_000, from2);
    const closed = await lab.probe('production/api', 'production/backend', 8080, 'TCP', { timeoutMs: 2000 });
    expect(closed.result).toBe('reset');
  });

  it('SIGTERM before the first state (API server unreachable) removes the fail-closed interception and exits 0', async () => {
    const kubeconfig = server.writeKubeconfig(mkdtempSync(join(dir, 'unreachable-')), 'http://198.19.200.1:16444');
    const other = AgentProcess.start(lab.nodeNamespace, [
      '--kubeconfig', kubeconfig, '--node-name', 'node-a',
      '--table', 'netpold_t2', '--port', '15002', '--fwmark', '0x8000', '--route-table', '4243',
      // The first agent serves 127.0.0.1:9464 in this namespace already.
      '--metrics-address', '127.0.0.1:9465',
    ]);
    await other.waitFor((r) => /interception installed/.test(r.msg), 30_000);
    await other.waitFor((r) => r['code'] === 'NETPOLD_E_KUBE_API', 30_000);
    const during = await lab.exec(lab.nodeNamespace, ['nft', 'list', 'tables']);
    expect(during.stdout).toMatch(/netpold_t2/);
    expect(await other.stop()).toBe(0);
    const after = await lab.exec(lab.nodeNamespace, ['nft', 'list', 'tables']);
    expect(after.stdout).not.toMatch(/netpold_t2/);
    expect(other.lines.some((r) => r.msg === 'ready')).toBe(false);
  });
});
