// explainFlow (src/policy/explain-flow.ts) and `netpold explain`: the verdict always equals
// decide()'s (property test on random clusters), and hand-checked explanations of seed examples:
// which policies select each side, each rule with its ports and peers and why they match or not.
import fc from 'fast-check';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { run } from '../src/cli/main.js';
import { compile } from '../src/policy/compile.js';
import { Decision, FlowKey, decide, type Side } from '../src/policy/decide.js';
import { flowFromText } from '../src/policy/explain.js';
import { explainFlow, formatExplanation, type FlowExplanation } from '../src/policy/explain-flow.js';
import { loadManifestPaths } from '../src/source/files/load.js';
import { arbClusterWithFlows } from './support/arbitraries.js';

const root = new URL('..', import.meta.url).pathname;
const seeds = join(root, 'test/fixtures/seeds');
const seed = (name: string): string => join(seeds, `${name}.yaml`);
const cluster = (name: string): string => join(seeds, 'clusters', `${name}.yaml`);
const STATUS = ['not-a-pod', 'not-isolated', 'allowed', 'denied', 'node-local', 'loopback'] as const;

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await run(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

/** explain --json from manifests: the explanation. */
async function explain(manifests: string[], from: string, to: string, port: number, protocol = 'TCP'): Promise<{ code: number; x: FlowExplanation; enforcement: string }> {
  const r = await cli('explain', '--manifests', ...manifests, '--from', from, '--to', to, '--port', String(port), '--protocol', protocol, '--json');
  expect(r.err).toBe('');
  const j = JSON.parse(r.out);
  return { code: r.code, x: j.explanation as FlowExplanation, enforcement: j.enforcement as string };
}

describe('explainFlow agrees with decide()', () => {
  it('verdict, each side, the allowing rule and the isolating policies, on random clusters and flows', () => {
    fc.assert(
      fc.property(arbClusterWithFlows(8), ({ cluster: state, flows }) => {
        const snap = compile(state, { revision: 3 });
        const key = new FlowKey();
        const d = new Decision();
        for (const f of flows) {
          const err = flowFromText(key, f.protocol, f.srcIp, f.dstIp, f.dstPort);
          expect(err).toBeUndefined();
          const x = explainFlow(snap, key);
          decide(snap, key, d);
          expect(x.verdict).toBe(d.allowed ? 'allow' : 'deny');
          expect(x.revision).toBe(3);
          for (const [side, status, rule, group] of [
            [x.egress, d.egress, d.egressRule, d.egressGroup],
            [x.ingress, d.ingress, d.ingressRule, d.ingressGroup],
          ] as const) {
            expect(side.status).toBe(STATUS[status as Side]);
            expect(side.allowedBy).toEqual(rule ? { policy: rule.policy.key, rule: rule.index } : undefined);
            expect(side.policies.map((p) => p.policy)).toEqual(group ? group.policies.map((p) => p.key) : []);
            // Each rule check agrees with itself: matched = ports and peers matched; the first
            // matching rule (policy order) is the one named.
            const checks = side.policies.flatMap((p) => p.rules);
            for (const c of checks) expect(c.matched).toBe(c.ports.matched && c.peers.matched);
            const first = checks.find((c) => c.matched);
            if (side.status === 'allowed') expect(first && { policy: first.policy, rule: first.index }).toEqual(side.allowedBy);
            if (side.status === 'denied') expect(first).toBeUndefined();
          }
          // The text formatter handles every explanation.
          expect(formatExplanation(x)).toMatch(/^(allow|deny) /);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('explain: seed 001 zone-internal (podSelector peer OR ipBlock with except, two TCP ports)', () => {
  const m = [cluster('blue'), seed('zone-internal')];
  const P = 'blue/zone-internal';

  it('an address in the except: the pod peer cannot match an address, the ipBlock excludes it; port 8080 matches the second entry', async () => {
    const { code, x } = await explain(m, '4.42.6.5', 'blue/app-1', 8080);
    expect(code).toBe(1);
    expect(x.verdict).toBe('deny');
    expect(x.src).toEqual({ ip: '4.42.6.5', kind: 'external' }); // (JSON: no pod, no node)
    expect(x.egress.status).toBe('not-a-pod');
    expect(x.ingress.status).toBe('denied');
    expect(x.ingress.policies).toHaveLength(1);
    const [p] = x.ingress.policies;
    expect(p!.policy).toBe(P);
    const r = p!.rules[0]!;
    expect(r.matched).toBe(false);
    expect(r.ports).toMatchObject({ all: false, matched: true });
    expect(r.ports.entries).toEqual([
      { text: 'TCP/8000', matched: false, why: 'port 8080 is not in it' },
      { text: 'TCP/8080', matched: true, why: 'TCP/8080 is in it' },
    ]);
    expect(r.peers).toMatchObject({ all: false, matched: false });
    expect(r.peers.matchedPeer).toBeUndefined();
    expect(r.peers.entries).toEqual([
      { index: 0, text: 'podSelector {zone=dmz}', matched: false, why: '4.42.6.5 is not a pod: only ipBlock peers can match it' },
      { index: 1, text: 'ipBlock 4.42.6.0/24 except [4.42.6.5/32]', matched: false, why: '4.42.6.5 is in the except 4.42.6.5/32' },
    ]);
  });

  it('another address of the /24: allowed by rule 0 through peer 1 (the ipBlock)', async () => {
    const { code, x } = await explain(m, '4.42.6.7', 'blue/app-1', 8080);
    expect(code).toBe(0);
    expect(x.ingress.allowedBy).toEqual({ policy: P, rule: 0 });
    const r = x.ingress.policies[0]!.rules[0]!;
    expect(r.matched).toBe(true);
    expect(r.peers.matchedPeer).toBe(1);
    expect(r.peers.entries[1]).toMatchObject({ matched: true, why: '4.42.6.7 is in 4.42.6.0/24 and in no except' });
  });

  it('zone=dmz in another namespace: a podSelector alone selects the policy namespace only; the address is outside the block', async () => {
    const { x } = await explain(m, 'red/proxy-2', 'blue/app-1', 8000);
    expect(x.verdict).toBe('deny');
    expect(x.egress).toMatchObject({ status: 'not-isolated', pod: 'red/proxy-2' });
    expect(x.ingress.policies[0]!.rules[0]!.peers.entries.map((e) => e.why)).toEqual([
      "red/proxy-2 is in namespace red; a podSelector alone selects pods of the policy's namespace blue",
      '198.18.17.20 is not in 4.42.6.0/24',
    ]);
  });

  it('UDP: both port entries are TCP', async () => {
    const { x } = await explain(m, 'blue/proxy-1', 'blue/app-1', 8000, 'UDP');
    expect(x.ingress.policies[0]!.rules[0]!.ports).toEqual({
      all: false,
      matched: false,
      entries: [
        { text: 'TCP/8000', matched: false, why: 'protocol UDP is not TCP' },
        { text: 'TCP/8080', matched: false, why: 'protocol UDP is not TCP' },
      ],
    });
    expect(x.ingress.policies[0]!.rules[0]!.peers.matchedPeer).toBe(0);
    expect(x.ingress.policies[0]!.rules[0]!.why).toBe('ports do not match');
  });
});

describe('explain: seed 003 prod (deny external egress + whitelist ingress)', () => {
  const m = [cluster('prod'), seed('deny-external-egress'), seed('customer-api-allow-web')];

  it('web -> customer on 80: egress allowed by deny-external-egress (namespaceSelector {} matches every pod), ingress by customer-api-allow-web', async () => {
    const { code, x } = await explain(m, 'prod/web-1', 'prod/customer-1', 80);
    expect(code).toBe(0);
    expect(x.egress.allowedBy).toEqual({ policy: 'prod/deny-external-egress', rule: 0 });
    expect(x.egress.policies[0]!.rules[0]!.ports.all).toBe(true);
    expect(x.egress.policies[0]!.rules[0]!.peers.entries).toEqual([{ index: 0, text: 'namespaceSelector {}', matched: true, why: 'prod/customer-1 matches' }]);
    expect(x.ingress.allowedBy).toEqual({ policy: 'prod/customer-api-allow-web', rule: 0 });
  });

  it('orders -> customer on 80: the ingress peer wants app=web', async () => {
    const { x } = await explain(m, 'prod/orders-1', 'prod/customer-1', 80);
    expect(x.verdict).toBe('deny');
    expect(x.egress.status).toBe('allowed');
    expect(x.ingress.summary).toBe('denied: no rule of policies [prod/customer-api-allow-web] matched');
    expect(x.ingress.policies[0]!.rules[0]!.peers.entries[0]!.why).toBe("prod/orders-1's labels {app=orders} do not match podSelector {app=web}");
  });

  it('web -> an external address: egress denied, only ipBlock peers match addresses; the destination has no ingress policy', async () => {
    const { x } = await explain(m, 'prod/web-1', '198.19.1.1', 443);
    expect(x.verdict).toBe('deny');
    expect(x.egress.status).toBe('denied');
    expect(x.egress.policies[0]!.rules[0]!.peers.entries[0]!.why).toBe('198.19.1.1 is not a pod: only ipBlock peers can match it');
    expect(x.ingress).toMatchObject({ status: 'not-a-pod', policies: [] });
  });

  it('a node address to a pod of that node: node-local, always allowed', async () => {
    const { x } = await explain(m, '198.18.255.1', 'prod/customer-1', 9999);
    expect(x.src).toMatchObject({ kind: 'node', node: 'node-a' });
    expect(x.ingress.status).toBe('node-local');
    expect(x.verdict).toBe('allow');
  });
});

describe('explain: named ports (demo + its change)', () => {
  const m = [join(root, 'examples/demo'), join(root, 'examples/demo-change')];

  it("api -> backend on 8080: the named port http resolves on the backend's container port", async () => {
    const { x } = await explain(m, 'production/api', 'production/backend', 8080);
    expect(x.verdict).toBe('allow');
    const rule = x.ingress.policies.find((p) => p.policy === 'production/allow-api-to-backend')!.rules[0]!;
    expect(rule.ports.entries).toEqual([{ text: 'TCP/http', matched: true, why: 'production/backend declares http as TCP/8080' }]);
  });

  it('api -> backend on 8081: the named port means 8080 there', async () => {
    const { x } = await explain(m, 'production/api', 'production/backend', 8081);
    const rule = x.ingress.policies.find((p) => p.policy === 'production/allow-api-to-backend')!.rules[0]!;
    expect(rule.ports.entries[0]!.why).toBe('production/backend declares http as TCP/8080, not 8081');
  });
});

describe('netpold explain (text)', () => {
  it('prints the verdict, each side, the policies selecting it and every rule with its ports and peers', async () => {
    const r = await cli('explain', '--manifests', join(root, 'examples/demo'), '--from', 'staging/frontend', '--to', 'production/backend', '--port', '8080');
    expect(r.code).toBe(1);
    expect(r.out.split('\n')).toEqual([
      'deny  staging/frontend (198.18.3.10) -> production/backend (198.18.1.20) TCP/8080  [revision 1]',
      'egress of staging/frontend: staging/frontend is not isolated for egress: no policy selects it for egress',
      'ingress of production/backend: denied: no rule of policies [production/default-deny-ingress, production/allow-frontend] matched',
      '  selected for ingress by 2 policies: production/default-deny-ingress, production/allow-frontend',
      '  policy production/default-deny-ingress: no ingress rules: it only isolates',
      '  policy production/allow-frontend',
      '    ingress rule 0: no match (no peer matches the source)',
      '      port TCP/8080: matches: TCP/8080 is in it',
      "      from[0] podSelector {app=frontend}: no: staging/frontend is in namespace staging; a podSelector alone selects pods of the policy's namespace production",
      '(explained from manifests)',
    ]);
  });

  it('marks the rule that allows the flow', async () => {
    const r = await cli('explain', '--manifests', join(root, 'examples/demo'), '--from', 'production/frontend', '--to', 'production/backend', '--port', '8080');
    expect(r.code).toBe(0);
    expect(r.out).toContain('    ingress rule 0: MATCHES  <- allows the flow');
    expect(r.out).toMatch(/^allow  production\/frontend/);
  });

  it('a namespace in audit mode: the explanation says the denial is let through', async () => {
    const { mkdtempSync, writeFileSync, cpSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(join(tmpdir(), 'netpold-explain-'));
    cpSync(join(root, 'examples/demo'), dir, { recursive: true });
    const file = join(dir, 'cluster.yaml');
    const { readFileSync } = await import('node:fs');
    writeFileSync(file, readFileSync(file, 'utf8').replace('  name: production\n  labels:', '  name: production\n  annotations: {netpold.io/mode: audit}\n  labels:'));
    const j = await explain([dir], 'staging/frontend', 'production/backend', 8080);
    expect(j.x.verdict).toBe('deny');
    expect(j.enforcement).toBe('audit');
    const r = await cli('explain', '--manifests', dir, '--from', 'staging/frontend', '--to', 'production/backend', '--port', '8080');
    expect(r.out.split('\n')[0]).toMatch(/\(audit mode: let through and logged\)$/);
  });

  it('usage errors: unknown pod, bad port, both sources', async () => {
    expect((await cli('explain', '--manifests', join(root, 'examples/demo'), '--from', 'production/nope', '--to', 'production/backend', '--port', '80')).err).toContain('[NETPOLD_E_UNKNOWN_ENDPOINT]');
    expect((await cli('explain', '--manifests', join(root, 'examples/demo'), '--from', 'production/api', '--to', 'production/backend', '--port', '0')).code).toBe(2);
    const both = await cli('explain', '--manifests', 'x', '--agent-socket', '/tmp/x.sock', '--from', 'a/b', '--to', 'c/d', '--port', '80');
    expect(both.code).toBe(2);
    expect(both.err).toMatch(/not both.*NETPOLD_E_USAGE/);
    const none = await cli('explain', '--agent-socket', '/nonexistent/agent.sock', '--from', 'a/b', '--to', 'c/d', '--port', '80');
    expect(none.code).toBe(2);
    expect(none.err).toContain('[NETPOLD_E_AGENT_UNREACHABLE]');
  });
});

describe('the netpold.io/mode namespace annotation', () => {
  it('audit marks the namespace; enforce and absent do not; another value is an error and the namespace is enforced', async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(join(tmpdir(), 'netpold-mode-'));
    const ns = (name: string, mode?: string) => `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${name}\n${mode === undefined ? '' : `  annotations: {netpold.io/mode: ${mode}, other/annotation: x}\n`}---\n`;
    writeFileSync(join(dir, 'ns.yaml'), ns('a', 'audit') + ns('b', 'enforce') + ns('c') + ns('d', 'loud'));
    const r = loadManifestPaths([dir]);
    const byName = Object.fromEntries(r.state.namespaces.map((n) => [n.name, n]));
    expect(byName['a']!.audit).toBe(true);
    expect(byName['b']!.audit).toBeUndefined();
    expect(byName['c']!.audit).toBeUndefined();
    expect(byName['d']).toBeDefined(); // kept, enforced
    expect(byName['d']!.audit).toBeUndefined();
    expect(r.errors).toEqual([
      expect.objectContaining({ code: 'NETPOLD_E_INVALID_VALUE', object: 'Namespace d', path: 'metadata.annotations[netpold.io/mode]', message: expect.stringContaining('must be "audit" or "enforce"') }),
    ]);
  });

  it('the Kubernetes source reads it through the same validator', async () => {
    const { convert, refOf } = await import('../src/source/k8s/convert.js');
    const obj = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'team-a', resourceVersion: '7', annotations: { 'netpold.io/mode': 'audit' } } };
    const c = convert('Namespace', obj, refOf('Namespace', obj)!);
    expect(c.errors).toEqual([]);
    expect(c.value).toMatchObject({ name: 'team-a', audit: true });
    const bad = { ...obj, metadata: { ...obj.metadata, annotations: { 'netpold.io/mode': 'Audit' } } };
    const cb = convert('Namespace', bad, refOf('Namespace', bad)!);
    expect(cb.value).toMatchObject({ name: 'team-a' });
    expect((cb.value as { audit?: boolean }).audit).toBeUndefined();
    expect(cb.errors.map((e) => e.code)).toEqual(['NETPOLD_E_INVALID_VALUE']);
  });
});
