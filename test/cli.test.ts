// The CLI commands, in-process through run(argv, io), plus one real process through bin/.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { run } from '../src/cli/main.js';

const root = new URL('..', import.meta.url).pathname;
const demo = join(root, 'examples/demo');

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await run(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const tmp = mkdtempSync(join(tmpdir(), 'netpold-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('netpold check', () => {
  it('allows frontend -> backend on 8080 and names the rule', async () => {
    const r = await cli('check', '--manifests', demo, '--from', 'production/frontend', '--to', 'production/backend', '--port', '8080');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^allow /);
    expect(r.out).toContain('allowed by policy production/allow-frontend, ingress rule 0');
    expect(r.out).toContain('allowed by policy production/egress-within-namespace, egress rule 0');
  });

  it('denies staging -> production with the policies that did not match, exit 1', async () => {
    const r = await cli('check', '--manifests', demo, '--from', 'staging/frontend', '--to', 'production/backend', '--port', '8080', '--json');
    expect(r.code).toBe(1);
    const j = JSON.parse(r.out);
    expect(j.verdict).toBe('deny');
    expect(j.egress.status).toBe('not-isolated');
    expect(j.ingress.status).toBe('denied');
    expect(j.ingress.policies).toEqual(['production/default-deny-ingress', 'production/allow-frontend']);
  });

  it('takes IP addresses, IPv6 included, and UDP', async () => {
    const r = await cli('check', '--manifests', demo, '--from', '2001:2::1:30', '--to', '2001:2::2:53', '--port', '53', '--protocol', 'udp', '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.from.endpoint).toBe('production/api');
    expect(j.egress.policy).toBe('production/allow-dns');
  });

  it('an external source is not a pod and meets the ingress rules', async () => {
    const r = await cli('check', '--manifests', demo, '--from', '198.19.7.7', '--to', 'production/database', '--port', '5432', '--json');
    expect(r.code).toBe(1);
    expect(JSON.parse(r.out).egress.status).toBe('not-a-pod');
  });

  it('exit 2 with a coded message for an unknown pod, a bad port, a missing flag', async () => {
    const unknown = await cli('check', '--manifests', demo, '--from', 'production/nope', '--to', 'production/backend', '--port', '80');
    expect(unknown.code).toBe(2);
    expect(unknown.err).toContain('[NETPOLD_E_UNKNOWN_ENDPOINT]');
    const badPort = await cli('check', '--manifests', demo, '--from', 'production/api', '--to', 'production/backend', '--port', '70000');
    expect(badPort.code).toBe(2);
    expect(badPort.err).toContain('[NETPOLD_E_USAGE]');
    const missing = await cli('check', '--manifests', demo, '--from', 'production/api', '--port', '80');
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/--to/);
  });
});

describe('netpold matrix', () => {
  it('prints exactly one JSON object with every pair, self included', async () => {
    const r = await cli('matrix', '--manifests', demo, '--port', '8080', '--json');
    expect(r.code).toBe(0);
    const m = JSON.parse(r.out) as Record<string, Record<string, boolean>>;
    const pods = Object.keys(m);
    expect(pods).toHaveLength(6);
    for (const a of pods) {
      expect(Object.keys(m[a]!).sort()).toEqual([...pods].sort());
      expect(m[a]![a]).toBe(true); // loopback
    }
    expect(m['production/frontend']!['production/backend']).toBe(true);
    expect(m['production/api']!['production/backend']).toBe(false);
    expect(m['staging/frontend']!['production/backend']).toBe(false);
    expect(m['production/backend']!['staging/frontend']).toBe(false); // egress-within-namespace
    expect(m['staging/frontend']!['kube-system/coredns']).toBe(true);
  });

  it('IPv6 gives the same answers for the same pods', async () => {
    const v4 = JSON.parse((await cli('matrix', '--manifests', demo, '--port', '8080', '--json')).out);
    const v6 = JSON.parse((await cli('matrix', '--manifests', demo, '--port', '8080', '--json', '--family', '6')).out);
    expect(v6).toEqual(v4);
  });

  it('human output is an aligned grid', async () => {
    const r = await cli('matrix', '--manifests', demo, '--port', '8080');
    const rows = r.out.split('\n').filter((l) => /^(production|staging|kube-system)\//.test(l));
    expect(rows).toHaveLength(6);
    expect(new Set(rows.map((l) => l.length)).size).toBe(1);
  });
});

describe('invalid input', () => {
  it('refuses to evaluate, lists every error with file, object and field, exit 2', async () => {
    const r = await cli('matrix', '--manifests', demo, join(root, 'examples/rejected'), '--port', '80');
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/seed-typos\.yaml: NetworkPolicy default\/allow-same-namespace: spec\.ingress\[0\]\.from\[0\]\.podSelector\.color: .*matchLabels/);
    expect(r.err).toMatch(/NetworkPolicy default\/allow-same-namespace: spec\.ingress\[0\]\.to/);
    expect(r.err).toMatch(/NetworkPolicy default\/default-deny: spec\.types: .*policyTypes/);
  });

  it('with --allow-errors an invalid policy fails closed: its pods stay isolated', async () => {
    const file = join(tmp, 'bad.yaml');
    writeFileSync(file, `
apiVersion: v1
kind: Pod
metadata: {name: a, labels: {app: a}}
status: {podIP: 198.18.9.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, labels: {app: b}}
status: {podIP: 198.18.9.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: open-b}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
  - from: [{ipBlock: {cidr: 198.18.0.0/15, except: [10.0.0.0/8]}}]
`);
    const strict = await cli('check', '--manifests', file, '--from', 'default/a', '--to', 'default/b', '--port', '80');
    expect(strict.code).toBe(2);
    expect(strict.err).toContain('[NETPOLD_E_CIDR]');
    const lax = await cli('check', '--manifests', file, '--from', 'default/a', '--to', 'default/b', '--port', '80', '--allow-errors', '--json');
    expect(lax.code).toBe(1);
    const j = JSON.parse(lax.out);
    expect(j.ingress.status).toBe('denied');
    expect(j.ingress.policies).toEqual(['default/open-b']);
  });
});

describe('netpold compile --stats', () => {
  it('reports the sizes of the decision structure', async () => {
    const r = await cli('compile', '--manifests', demo, '--stats', '--json');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.out);
    expect(s).toMatchObject({ pods: 6, policies: 5, invalidPolicies: 0 });
    expect(s.identities).toBe(6);
    expect(s.compileMs).toBeGreaterThan(0);
    expect(s.heapUsedBytes).toBeGreaterThan(0);
  });
});

describe('netpold demo', () => {
  it('runs on the embedded examples and shows the change', async () => {
    const r = await cli('demo');
    expect(r.code).toBe(0);
    expect(r.out).toContain('changed: production/api -> production/backend: denied -> allowed');
    expect(r.out).toContain('[NETPOLD_E_UNKNOWN_FIELD]');
  });

  it('--bridge: the live part with the pods on a Linux bridge agrees with the computed matrices too', async () => {
    const r = await cli('demo', '--bridge');
    expect(r.code).toBe(0);
    // Without root, iproute2, nftables or the addon the live part is skipped, and says so (in CI,
    // which has them all, the prerequisite tests fail instead).
    if (r.out.includes('Live enforcement part skipped')) return;
    expect(r.out).toContain('their veths on a Linux bridge cni0');
    expect(r.out).toContain('Live and computed agree.');
  }, 60_000);
});

describe('the installed command', () => {
  it('bin/netpold.js runs from dist and keeps exit codes', () => {
    const bin = join(root, 'bin/netpold.js');
    const ok = spawnSync(process.execPath, [bin, 'check', '--manifests', demo, '--from', 'production/api', '--to', 'production/database', '--port', '5432'], { encoding: 'utf8', timeout: 30_000 });
    expect(ok.stderr).toBe('');
    expect(ok.status).toBe(0);
    const bad = spawnSync(process.execPath, [bin, 'matrix', '--manifests', join(tmp, 'missing.yaml'), '--port', '80'], { encoding: 'utf8', timeout: 30_000 });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('[NETPOLD_E_IO]');
    expect(bad.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });
});
