// `npm run bench:decide [-- --json] [-- --sizes S,M]`: the policy engine at three cluster sizes.
// Per size: decision latency per flow kind (tinybench, batches of flows, p50/p99 of the batch
// mean), IP -> endpoint lookup, CIDR trie lookup, the reference evaluator on the same flows,
// full compile, one-pod-change recompile, heap per pod. Ratios are measured in one run.
import { Command } from 'commander';
import { Bench } from 'tinybench';
import { Compiler, compile } from '../src/policy/compile.js';
import { Decision, FlowKey, Side, decide } from '../src/policy/decide.js';
import { flowFromText } from '../src/policy/explain.js';
import { referenceDecide, type RefFlow } from '../src/policy/reference.js';
import type { PolicySnapshot } from '../src/policy/snapshot.js';
import type { ClusterState, PodInfo, Protocol } from '../src/model/types.js';
import { SIZES, externalV4, rng, syntheticCluster, type SizeSpec } from './synthetic.js';

const BATCH = 64;

interface FlowSample {
  readonly text: RefFlow;
  readonly key: FlowKey;
}

export interface KindResult {
  readonly kind: string;
  readonly flows: number;
  readonly p50Ns: number;
  readonly p99Ns: number;
}

export interface SizeResult {
  name: string;
  pods: number;
  policies: number;
  namespaces: number;
  identities: number;
  selectors: number;
  ruleGroups: number;
  trieNodes: number;
  decideP50Ns: number;
  decideP99Ns: number;
  referenceP50Ns: number;
  engineSpeedup: number;
  addrLookupP50Ns: number;
  trieLookupP50Ns: number;
  compileMs: number;
  podChangeMs: number;
  podChangeP90Ms: number;
  heapBytesPerPod: number;
  kinds: KindResult[];
}

function toFlow(protocol: Protocol, srcIp: string, dstIp: string, dstPort: number): FlowSample {
  const key = new FlowKey();
  const err = flowFromText(key, protocol, srcIp, dstIp, dstPort, 40000);
  if (err) throw new Error(err);
  return { text: { protocol, srcIp, dstIp, dstPort }, key };
}

/** Random flows, bucketed by what decided them. */
function makeFlows(snap: PolicySnapshot, state: ClusterState, count: number): Map<string, FlowSample[]> {
  const rand = rng(7);
  const pods = state.pods.filter((p) => p.ips.length > 0);
  const v4 = (p: PodInfo): string | undefined => p.ips.find((ip) => !ip.includes(':'));
  const byNs = new Map<string, PodInfo[]>();
  for (const p of pods) {
    if (!v4(p)) continue;
    let l = byNs.get(p.namespace);
    if (!l) byNs.set(p.namespace, (l = []));
    l.push(p);
  }
  const nsNames = [...byNs.keys()];
  const ports = [8080, 5432, 8443, 53];
  const buckets = new Map<string, FlowSample[]>();
  const d = new Decision();
  for (let i = 0; i < count; i++) {
    const r = rand();
    const dstNs = byNs.get(nsNames[Math.floor(rand() * nsNames.length)]!)!;
    const dst = dstNs[Math.floor(rand() * dstNs.length)]!;
    let src: string;
    if (r < 0.4) src = v4(dstNs[Math.floor(rand() * dstNs.length)]!)!;
    else if (r < 0.7) {
      const other = byNs.get(nsNames[Math.floor(rand() * nsNames.length)]!)!;
      src = v4(other[Math.floor(rand() * other.length)]!)!;
    } else src = externalV4(Math.floor(rand() * 32768));
    const port = r >= 0.7 ? 8000 + Math.floor(rand() * 1000) : ports[Math.floor(rand() * ports.length)]!;
    const f = toFlow(port === 53 ? 'UDP' : 'TCP', src, v4(dst)!, port);
    decide(snap, f.key, d);
    const kind = classify(d);
    const list = buckets.get(kind) ?? [];
    if (list.length < 1024) list.push(f);
    buckets.set(kind, list);
  }
  return buckets;
}

function classify(d: Decision): string {
  if (!d.allowed) return 'denied';
  const rule = d.ingress === Side.Allowed ? d.ingressRule : d.egress === Side.Allowed ? d.egressRule : null;
  if (!rule) return 'not-isolated';
  const viaBlock = rule.peers !== null && rule.peers.some((p) => p.blockId >= 0) && d.srcPod < 0;
  return viaBlock ? 'allowed-ipblock' : 'allowed-selector';
}

async function measureBatches(name: string, fn: () => void, timeMs: number): Promise<{ p50: number; p99: number }> {
  const bench = new Bench({ time: timeMs, warmupTime: Math.min(200, timeMs / 2), iterations: 20 });
  bench.add(name, fn);
  await bench.run();
  const lat = bench.tasks[0]!.result as { latency?: { p50?: number; p99?: number } };
  // Samples are batch durations in ms; report nanoseconds per operation.
  return { p50: ((lat.latency?.p50 ?? NaN) * 1e6) / BATCH, p99: ((lat.latency?.p99 ?? NaN) * 1e6) / BATCH };
}

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) {
    g();
    g();
  }
}

export async function benchSize(size: SizeSpec, opts: { timeMs: number; refFlows: number }): Promise<SizeResult> {
  gc();
  const heap0 = process.memoryUsage().heapUsed;
  const { state } = syntheticCluster(size);
  let snap = compile(state);
  gc();
  const heap1 = process.memoryUsage().heapUsed;

  // Full compile from scratch (no memo tables): best of a few runs (the first pays for JIT warm-up).
  let compileMs = Infinity;
  for (let i = 0; i < 3; i++) compileMs = Math.min(compileMs, compile(state).stats.compileMs);

  // One pod change: a pod gets a label value never seen before (so a new identity must be
  // evaluated against every selector), then the cluster is recompiled as the agent does it,
  // reusing the previous compile. 5 unmeasured changes warm the incremental path up; then the
  // median (and p90) of 15.
  const compiler = new Compiler();
  compiler.compile(state);
  const changeTimes: number[] = [];
  for (let i = 0; i < 20; i++) {
    const changedPods = state.pods.slice();
    const k = (i * 7) % changedPods.length;
    const p = changedPods[k]!;
    changedPods[k] = { ...p, labels: { ...p.labels, version: `v-canary-${i}` } };
    const t = performance.now();
    const s = compiler.compile({ ...state, pods: changedPods }, { revision: 2 + i });
    if (i >= 5) changeTimes.push(performance.now() - t);
    if (!s.stats.incremental) throw new Error('bench: a pod-only change did not take the incremental path');
  }
  changeTimes.sort((a, b) => a - b);
  const podChangeMs = changeTimes[Math.floor(changeTimes.length / 2)]!;
  const podChangeP90Ms = changeTimes[Math.floor(changeTimes.length * 0.9)]!;
  snap = compile(state);

  const buckets = makeFlows(snap, state, 20_000);
  const all: FlowSample[] = [...buckets.values()].flat();
  const d = new Decision();
  const kinds: KindResult[] = [];
  const runKind = async (kind: string, flows: FlowSample[]): Promise<KindResult> => {
    let i = 0;
    const r = await measureBatches(`decide ${kind}`, () => {
      for (let k = 0; k < BATCH; k++) {
        decide(snap, flows[i]!.key, d);
        i = i + 1 === flows.length ? 0 : i + 1;
      }
    }, opts.timeMs);
    return { kind, flows: flows.length, p50Ns: r.p50, p99Ns: r.p99 };
  };
  for (const [kind, flows] of [...buckets.entries()].sort()) kinds.push(await runKind(kind, flows));
  const mixed = await runKind('mixed', shuffle(all));

  let ai = 0;
  const addr = await measureBatches('addr lookup', () => {
    for (let k = 0; k < BATCH; k++) {
      const f = all[ai]!.key;
      snap.addrs.get(f.family, f.src);
      ai = ai + 1 === all.length ? 0 : ai + 1;
    }
  }, opts.timeMs);
  let ti = 0;
  const trie = await measureBatches('trie lookup', () => {
    for (let k = 0; k < BATCH; k++) {
      const f = all[ti]!.key;
      snap.trie4.lookup(f.src, snap.srcMarks, ++snap.stamp);
      ti = ti + 1 === all.length ? 0 : ti + 1;
    }
  }, opts.timeMs);

  // The reference evaluator on the same flows: timed directly (it is slow enough).
  const refSample = shuffle(all).slice(0, opts.refFlows);
  const refTimes: number[] = [];
  for (const f of refSample) {
    const t = process.hrtime.bigint();
    referenceDecide(state, f.text);
    refTimes.push(Number(process.hrtime.bigint() - t));
  }
  refTimes.sort((a, b) => a - b);
  const referenceP50Ns = refTimes[Math.floor(refTimes.length / 2)] ?? NaN;

  return {
    name: size.name,
    pods: size.pods,
    policies: size.policies,
    namespaces: size.namespaces,
    identities: snap.stats.identities,
    selectors: snap.stats.selectors,
    ruleGroups: snap.stats.ruleGroups,
    trieNodes: snap.stats.trieNodes,
    decideP50Ns: round(mixed.p50Ns),
    decideP99Ns: round(mixed.p99Ns),
    referenceP50Ns: round(referenceP50Ns),
    engineSpeedup: round(referenceP50Ns / mixed.p50Ns),
    addrLookupP50Ns: round(addr.p50),
    trieLookupP50Ns: round(trie.p50),
    compileMs: round(compileMs),
    podChangeMs: round(podChangeMs),
    podChangeP90Ms: round(podChangeP90Ms),
    heapBytesPerPod: Math.round(Math.max(0, heap1 - heap0) / size.pods),
    kinds: kinds.map((k) => ({ ...k, p50Ns: round(k.p50Ns), p99Ns: round(k.p99Ns) })),
  };
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}

function shuffle<T>(xs: readonly T[]): T[] {
  const rand = rng(11);
  const a = xs.slice();
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

export function formatTable(results: readonly SizeResult[]): string {
  const rows: string[][] = [
    ['size', 'pods', 'policies', 'ns', 'identities', 'decide p50', 'decide p99', 'reference p50', 'engine:reference', 'addr lookup', 'trie lookup', 'compile', 'pod change', 'heap/pod'],
  ];
  for (const r of results) {
    rows.push([
      r.name, String(r.pods), String(r.policies), String(r.namespaces), String(r.identities),
      `${r.decideP50Ns} ns`, `${r.decideP99Ns} ns`, `${r.referenceP50Ns} ns`, `1 : ${r.engineSpeedup}`,
      `${r.addrLookupP50Ns} ns`, `${r.trieLookupP50Ns} ns`, `${r.compileMs} ms`, `${r.podChangeMs} ms`, `${r.heapBytesPerPod} B`,
    ]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const line = (r: string[]): string => `| ${r.map((v, c) => v.padEnd(widths[c]!)).join(' | ')} |`;
  const out = [line(rows[0]!), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.slice(1).map(line)];
  out.push('', 'decision latency by flow kind (p50 / p99 ns):');
  for (const r of results) out.push(`  ${r.name}: ${r.kinds.map((k) => `${k.kind} ${k.p50Ns}/${k.p99Ns} (${k.flows} flows)`).join(', ')}`);
  return out.join('\n');
}

export async function main(argv: string[]): Promise<void> {
  const program = new Command('bench:decide')
    .option('--json', 'print exactly one JSON object on stdout')
    .option('--sizes <list>', 'comma-separated sizes among S,M,L', 'S,M,L')
    .option('--time <ms>', 'time per measured task', '400')
    .parse(argv);
  const o = program.opts<{ json?: boolean; sizes: string; time: string }>();
  const wanted = o.sizes.split(',').map((s) => s.trim().toUpperCase());
  const sizes = SIZES.filter((s) => wanted.includes(s.name));
  if (sizes.length === 0) throw new Error(`--sizes: none of ${o.sizes} is one of S, M, L`);
  if (!(globalThis as { gc?: unknown }).gc) process.stderr.write('note: run with node --expose-gc for heap figures\n');
  const results: SizeResult[] = [];
  for (const s of sizes) {
    process.stderr.write(`bench:decide: size ${s.name} (${s.pods} pods, ${s.policies} policies, ${s.namespaces} namespaces)...\n`);
    results.push(await benchSize(s, { timeMs: Number(o.time), refFlows: s.name === 'L' ? 20 : 200 }));
  }
  if (o.json) process.stdout.write(`${JSON.stringify({ sizes: results })}\n`);
  else process.stdout.write(`${formatTable(results)}\n`);
}
