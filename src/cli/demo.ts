// `netpold demo`: the main job on the embedded example cluster. As root (with iproute2,
// nftables and the native addon), it builds a lab node out of network namespaces, runs the real
// agent in it, and shows live reachability next to the computed one, before and after a policy
// change; then tears everything down. Elsewhere it shows the computed part and says why.
import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatManifestError } from '../errors.js';
import { nativeAddonPath } from '../dataplane/native.js';
import { AgentProcess } from '../lab/agent-process.js';
import { Lab } from '../lab/lab.js';
import { labRequirementsMissing, packageRoot } from '../lab/sys.js';
import type { ClusterState } from '../model/types.js';
import { compile } from '../policy/compile.js';
import { decideText, reportDecision } from '../policy/explain.js';
import type { PolicySnapshot } from '../policy/snapshot.js';
import { loadManifestPaths } from '../source/files/load.js';
import { formatReport } from './check.js';
import { EXIT_INPUT, EXIT_OK, loadOrReport, type Io } from './common.js';
import { computeMatrix, formatMatrix, type Matrix } from './matrix.js';


const PORT = 8080;

export async function runDemo(io: Io, o: { manifests?: string[]; live?: boolean; bridge?: boolean }): Promise<number> {
  const root = packageRoot();
  const base = o.manifests ?? [join(root, 'examples/demo')];
  const state = loadOrReport(io, base, false);
  if (!state) return EXIT_INPUT;
  const say = (...lines: string[]): void => {
    for (const t of lines.length ? lines : ['']) io.out(t);
  };

  say('netpold demo: Kubernetes NetworkPolicy, compiled, and enforced on real traffic by the agent');
  say(`manifests: ${base.join(' ')}`);
  say(`loaded ${state.namespaces.length} namespaces, ${state.pods.length} pods, ${state.policies.length} policies`);
  const snap = compile(state, { revision: 1, localNode: 'node-a' });
  const s = snap.stats;
  say(`compiled in ${s.compileMs.toFixed(2)} ms: ${s.identities} identities, ${s.selectors} selectors, ${s.ruleGroups} rule groups`);
  if (o.bridge === true && (o.manifests !== undefined || o.live === false)) say('(--bridge changes the live part only, which this run skips)');
  if (o.manifests) {
    say('', `Who can reach whom on TCP/${PORT} (computed):`, formatMatrix(computeMatrix(snap, state.pods, 'TCP', PORT, 4)));
    return EXIT_OK;
  }

  say('', 'Why: four flows, each direction explained');
  for (const [from, to, proto, port] of [
    ['production/frontend', 'production/backend', 'TCP', PORT],
    ['production/api', 'production/backend', 'TCP', PORT],
    ['staging/frontend', 'production/backend', 'TCP', PORT],
    ['production/api', 'kube-system/coredns', 'UDP', 53],
  ] as const) {
    say(formatReport(reportDecision(snap, decideText(snap, proto, podIp(state, from), podIp(state, to), port)), from, to, `${proto}/${port}`));
  }

  const missing = labRequirementsMissing();
  const addon = nativeAddonPath();
  if (!addon || !existsSync(addon)) missing.push('the native addon (built by npm ci)');
  let code = EXIT_OK;
  if (o.live === false || missing.length > 0) {
    say('', `Live enforcement part skipped: it needs ${missing.length ? missing.join(', ') : 'to be asked for (drop --no-live)'}.`);
    computedOnlyChange(say, root, base, snap);
  } else {
    code = await liveDemo(say, root, state, o.bridge === true);
  }

  say('', 'Manifests copied from a seed document are rejected with the reason, never half-applied:');
  for (const e of loadManifestPaths([join(root, 'examples/rejected')]).errors) say(`  ${formatManifestError(e)}`);
  return code;
}

function computedOnlyChange(say: (...lines: string[]) => void, root: string, base: string[], snap: PolicySnapshot): void {
  const before = loadManifestPaths(base).state;
  const after = loadManifestPaths([...base, join(root, 'examples/demo-change')]).state;
  const snap2 = compile(after, { revision: 2, localNode: 'node-a' });
  say('', `Who can reach whom on TCP/${PORT} (computed):`, formatMatrix(computeMatrix(snap, before.pods, 'TCP', PORT, 4)));
  say('', 'A policy change: examples/demo-change/allow-api-to-backend.yaml (named port "http")');
  printChanges(say, computeMatrix(snap, before.pods, 'TCP', PORT, 4), computeMatrix(snap2, after.pods, 'TCP', PORT, 4));
}

async function liveDemo(say: (...lines: string[]) => void, root: string, state: ClusterState, bridge: boolean): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'netpold-demo-'));
  cpSync(join(root, 'examples/demo'), dir, { recursive: true });
  let lab: Lab | undefined;
  let agent: AgentProcess | undefined;
  const cleanup = async (): Promise<void> => {
    await agent?.stop();
    await lab?.down();
    rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = (): void => void cleanup().finally(() => process.exit(130));
  process.once('SIGINT', onSignal);
  try {
    say(
      '',
      bridge
        ? 'Building a lab node: one network namespace per pod, their veths on a Linux bridge cni0 in the node namespace (Flannel style)...'
        : 'Building a lab node: one network namespace per pod, a node namespace routing between them...',
    );
    lab = await Lab.up({ id: `d${process.pid % 100000}`, manifests: [dir], nodeName: 'node-a', ports: [PORT], bridge });
    say(`Starting the agent in ${lab.nodeNamespace} (nftables TPROXY, transparent relays)...`);
    agent = AgentProcess.start(lab.nodeNamespace, ['--manifests', dir, '--node-name', 'node-a']);
    await agent.waitFor((l) => l.msg === 'ready');
    const snap = compile(state, { localNode: 'node-a' });
    const live1 = await lab.matrix(PORT, 'TCP', { timeoutMs: 700 });
    const comp1 = computeMatrix(snap, state.pods, 'TCP', PORT, 4);
    say('', `Who can reach whom on TCP/${PORT}: live through the agent, and computed`);
    sideBySide(say, live1, comp1);

    say('', 'A policy change while the agent runs: adding allow-api-to-backend.yaml (named port "http")');
    const mark = agent.lines.length;
    cpSync(join(root, 'examples/demo-change'), dir, { recursive: true });
    const enforced = await agent.waitFor((l) => l.msg === 'snapshot enforced' && l.revision === 2, 15_000, mark);
    say(`agent: snapshot revision ${String(enforced.revision)} enforced (compiled in ${Number(enforced.compileMs).toFixed(2)} ms, ${enforced.incremental ? 'incremental' : 'full'})`);
    const after = loadManifestPaths([dir]).state;
    const live2 = await lab.matrix(PORT, 'TCP', { timeoutMs: 700 });
    sideBySide(say, live2, computeMatrix(compile(after, { localNode: 'node-a' }), after.pods, 'TCP', PORT, 4));
    printChanges(say, live1, live2);
    const denied = agent.lines.filter((l) => l.msg === 'flow denied').slice(-1)[0];
    if (denied) say('', `agent log, a denied flow: ${JSON.stringify(denied)}`);
    const same = JSON.stringify(live1) === JSON.stringify(comp1);
    say('', same ? 'Live and computed agree.' : 'Live and computed DISAGREE: please report this.');
    return same ? EXIT_OK : 1;
  } finally {
    say('', 'Tearing down: agent stopped (its nftables table and routes removed), lab namespaces deleted.');
    process.off('SIGINT', onSignal);
    await cleanup();
  }
}

function sideBySide(say: (...lines: string[]) => void, live: Matrix, computed: Matrix): void {
  const a = formatGrid(live).split('\n');
  const b = formatGrid(computed).split('\n');
  const w = Math.max(...a.map((l) => l.length));
  say(`${'live (agent)'.padEnd(w)}   computed (netpold matrix)`);
  for (let i = 0; i < Math.max(a.length, b.length); i++) say(`${(a[i] ?? '').padEnd(w)}   ${b[i] ?? ''}`);
}

/** A compact grid: one row per source, one column per destination (numbered in the legend). */
function formatGrid(m: Matrix): string {
  const names = Object.keys(m);
  const w = Math.max(...names.map((n) => n.length));
  return [
    `${''.padEnd(w)} ${names.map((_, i) => String(i + 1).padStart(3)).join('')}`,
    ...names.map((a, i) => `${`${i + 1} ${a}`.padEnd(w + 3).slice(0, w + 3)}${names.map((b) => (m[a]![b] ? ' ok' : ' --')).join('')}`),
  ].join('\n');
}

function printChanges(say: (...lines: string[]) => void, before: Matrix, after: Matrix): void {
  for (const a of Object.keys(after)) {
    for (const b of Object.keys(after[a]!)) {
      if (before[a]?.[b] !== after[a]![b]) say(`  changed: ${a} -> ${b}: ${before[a]?.[b] ? 'allowed' : 'denied'} -> ${after[a]![b] ? 'allowed' : 'denied'}`);
    }
  }
}

function podIp(st: ClusterState, nsName: string): string {
  const [ns, name] = nsName.split('/');
  const ip = st.pods.find((p) => p.namespace === ns && p.name === name)?.ips.find((i) => !i.includes(':'));
  if (!ip) throw new Error(`demo: no IPv4 pod ${nsName}`);
  return ip;
}
