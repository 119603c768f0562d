// `netpold demo`: a guided tour of the policy engine on the embedded example manifests.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatManifestError } from '../errors.js';
import { compile } from '../policy/compile.js';
import { decideText, reportDecision } from '../policy/explain.js';
import type { ClusterState } from '../model/types.js';
import { loadManifestPaths } from '../source/files/load.js';
import { formatReport } from './check.js';
import { EXIT_INPUT, EXIT_OK, loadOrReport, type Io } from './common.js';
import { computeMatrix, formatMatrix } from './matrix.js';

/** The package root (holding `examples/`), found from this module's location. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'netpold') return dir;
    dir = dirname(dir);
  }
  throw new Error('cannot find the netpold package root');
}

export function runDemo(io: Io, o: { manifests?: string[] }): number {
  const root = packageRoot();
  const base = o.manifests ?? [join(root, 'examples/demo')];
  const state = loadOrReport(io, base, false);
  if (!state) return EXIT_INPUT;
  const say = (t = ''): void => io.out(t);

  say('netpold demo: NetworkPolicy compiled into identities, selector bitmaps and a CIDR trie');
  say(`manifests: ${base.join(' ')}`);
  say(`loaded ${state.namespaces.length} namespaces, ${state.pods.length} pods, ${state.policies.length} policies`);
  const snap = compile(state, { revision: 1 });
  const s = snap.stats;
  say(`compiled revision 1 in ${s.compileMs.toFixed(2)} ms: ${s.identities} identities, ${s.selectors} selectors, ${s.ruleGroups} rule groups`);
  say();
  say('1. Who can reach whom on TCP/8080 (computed):');
  say(formatMatrix(computeMatrix(snap, state.pods, 'TCP', 8080, 4)));

  if (o.manifests) return EXIT_OK;
  say();
  say('2. Why: four flows, each direction explained');
  const show = (from: string, to: string, proto: 'TCP' | 'UDP', port: number, st: ClusterState, sn = snap): void => {
    const a = podIp(st, from);
    const b = podIp(st, to);
    say(formatReport(reportDecision(sn, decideText(sn, proto, a, b, port)), from, to, `${proto}/${port}`));
  };
  show('production/frontend', 'production/backend', 'TCP', 8080, state);
  show('production/api', 'production/backend', 'TCP', 8080, state);
  show('staging/frontend', 'production/backend', 'TCP', 8080, state);
  show('production/api', 'kube-system/coredns', 'UDP', 53, state);

  say();
  say('3. A policy change: examples/demo-change/allow-api-to-backend.yaml (named port "http")');
  const changed = loadOrReport(io, [...base, join(root, 'examples/demo-change')], false);
  if (!changed) return EXIT_INPUT;
  const snap2 = compile(changed, { revision: 2 });
  show('production/api', 'production/backend', 'TCP', 8080, changed, snap2);
  const before = computeMatrix(snap, state.pods, 'TCP', 8080, 4);
  const after = computeMatrix(snap2, changed.pods, 'TCP', 8080, 4);
  for (const a of Object.keys(after)) {
    for (const b of Object.keys(after[a]!)) {
      if (before[a]?.[b] !== after[a]![b]) say(`  changed: ${a} -> ${b}: ${before[a]?.[b] ? 'allowed' : 'denied'} -> ${after[a]![b] ? 'allowed' : 'denied'}`);
    }
  }

  say();
  say('4. Manifests copied from a seed document, rejected with the reason (never half-applied):');
  const rejected = loadManifestPaths([join(root, 'examples/rejected')]);
  for (const e of rejected.errors) say(`  ${formatManifestError(e)}`);
  return EXIT_OK;
}

function podIp(st: ClusterState, nsName: string): string {
  const [ns, name] = nsName.split('/');
  const pod = st.pods.find((p) => p.namespace === ns && p.name === name);
  const ip = pod?.ips.find((i) => !i.includes(':'));
  if (!ip) throw new Error(`demo: no IPv4 pod ${nsName}`);
  return ip;
}
