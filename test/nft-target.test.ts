// The nftables target (src/policy/nft-target.ts) against decide(), without running nft per case:
// a small evaluator over the plan (buildNftPlan's plain data, which renderNftEnforcement only
// prints) decides the first packet of a flow the way the kernel walks the ruleset, and must agree
// with decide() on random clusters and flows. Then `nft -c` (check mode, in a network namespace
// of its own) must accept the rendered text for random clusters and the seed fixtures.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../src/cli/main.js';
import { computeMatrix } from '../src/cli/matrix.js';
import type { ClusterState, Protocol } from '../src/model/types.js';
import { parseAddrInto, protocolNumber } from '../src/policy/addr.js';
import { compile } from '../src/policy/compile.js';
import { Decision, FlowKey, Side, decide } from '../src/policy/decide.js';
import { flowFromText } from '../src/policy/explain.js';
import { buildNftPlan, renderNftEnforcement, renderNftPlan, subtractRanges, type NftMatch, type NftPlan, type NftTargetOptions } from '../src/policy/nft-target.js';
import type { PolicySnapshot } from '../src/policy/snapshot.js';
import { exec, labRequirementsMissing } from '../src/lab/sys.js';
import { loadManifestPaths } from '../src/source/files/load.js';
import { arbCluster, arbClusterWithFlows } from './support/arbitraries.js';

const root = new URL('..', import.meta.url).pathname;
const seeds = join(root, 'test/fixtures/seeds');

// ---------------------------------------------------------------------------------------------
// A tiny evaluator of the plan: the first packet of a flow through the forward hook.

interface Packet {
  family: 4 | 6;
  proto: number;
  src: bigint;
  dst: bigint;
  dport: number;
}

type ChainResult = 'accept' | 'drop' | 'return';

function big(text: string): bigint {
  const a = ipaddr.parse(text);
  return a.toByteArray().reduce((acc, b) => (acc << 8n) | BigInt(b), 0n);
}

class PlanEvaluator {
  private readonly addrSets = new Map<string, Set<bigint>>();
  private readonly intervals = new Map<string, [bigint, bigint][]>();
  private readonly pairs = new Map<string, Set<string>>();
  private readonly addrPorts = new Map<string, Set<string>>();
  private readonly maps = new Map<string, Map<bigint, string>>();
  private readonly families = new Map<string, 4 | 6>();

  constructor(private readonly plan: NftPlan) {
    for (const s of plan.sets) {
      expect(this.families.has(s.name), `duplicate set ${s.name}`).toBe(false);
      this.families.set(s.name, s.family);
      switch (s.kind) {
        case 'addr':
          this.addrSets.set(s.name, new Set(s.elements.map(big)));
          break;
        case 'interval': {
          const ranges = s.elements.map((r): [bigint, bigint] => [big(r.lo), big(r.hi)]);
          for (let i = 0; i < ranges.length; i++) {
            expect(ranges[i]![0] <= ranges[i]![1]).toBe(true);
            // Disjoint, ascending, not even adjacent (nft would merge or refuse them).
            if (i > 0) expect(ranges[i - 1]![1] + 1n < ranges[i]![0], `${s.name} ranges overlap`).toBe(true);
          }
          this.intervals.set(s.name, ranges);
          break;
        }
        case 'addr-pair':
          this.pairs.set(s.name, new Set(s.elements.map(([a, b]) => `${big(a)} ${big(b)}`)));
          break;
        case 'addr-port':
          this.addrPorts.set(s.name, new Set(s.elements.map(([a, p]) => `${big(a)} ${p}`)));
          break;
      }
    }
    const chainNames = new Set(plan.chains.map((c) => c.name));
    expect(chainNames.size).toBe(plan.chains.length);
    for (const m of plan.maps) {
      const entries = new Map<bigint, string>();
      for (const [a, v] of m.elements) {
        const target = /^jump (\S+)$/.exec(v)?.[1];
        expect(target && chainNames.has(target), `map ${m.name}: ${v}`).toBe(true);
        const k = big(a);
        expect(entries.has(k), `map ${m.name}: duplicate key ${a}`).toBe(false);
        entries.set(k, target!);
      }
      this.maps.set(m.name, entries);
      this.families.set(m.name, m.family);
    }
    // Every set and map a rule names exists, with the family the rule expects.
    for (const c of plan.chains) {
      for (const r of c.rules) {
        for (const m of r.matches) {
          if ('set' in m) expect(this.families.get(m.set), `${c.name}: @${m.set}`).toBe(m.family);
        }
        if (r.verdict.kind === 'vmap') expect(this.families.get(r.verdict.map)).toBe(r.verdict.family);
      }
    }
  }

  run(p: Packet): 'accept' | 'drop' {
    const base = this.plan.chains.find((c) => c.hook === 'forward')!;
    const r = this.chain(base.name, p, 0);
    return r === 'drop' ? 'drop' : 'accept'; // the base chain's policy is accept
  }

  private chain(name: string, p: Packet, depth: number): ChainResult {
    expect(depth).toBeLessThan(4);
    const c = this.plan.chains.find((x) => x.name === name)!;
    for (const rule of c.rules) {
      if (!rule.matches.every((m) => this.match(m, p))) continue;
      const v = rule.verdict;
      if (v.kind === 'accept' || v.kind === 'drop' || v.kind === 'return') return v.kind;
      if (v.family !== p.family) continue;
      const target = this.maps.get(v.map)!.get(v.field === 'saddr' ? p.src : p.dst);
      if (target === undefined) continue;
      const r = this.chain(target, p, depth + 1);
      if (r !== 'return') return r; // `jump`: a return comes back here
    }
    return 'return';
  }

  private match(m: NftMatch, p: Packet): boolean {
    switch (m.kind) {
      case 'ct-established':
        return false; // the first packet of a flow
      case 'l4proto-not-in':
        return !m.protos.includes(p.proto);
      case 'l4proto':
        return p.proto === m.proto;
      case 'dport':
        return m.ranges.some(([lo, hi]) => p.dport >= lo && p.dport <= hi);
      case 'addr-in': {
        // `ip saddr` carries a dependency on the family: other packets never match, `!=` or not.
        if (p.family !== m.family) return false;
        const a = m.field === 'saddr' ? p.src : p.dst;
        const s = this.addrSets.get(m.set);
        const hit = s ? s.has(a) : this.intervals.get(m.set)!.some(([lo, hi]) => a >= lo && a <= hi);
        return hit !== m.negate;
      }
      case 'pair-in':
        return p.family === m.family && this.pairs.get(m.set)!.has(`${p.src} ${p.dst}`);
      case 'daddr-port-in':
        return p.family === m.family && this.addrPorts.get(m.set)!.has(`${p.dst} ${p.dport}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------

interface FlowText {
  protocol: Protocol;
  srcIp: string;
  dstIp: string;
  dstPort: number;
}

/** Whether an address is a pod endpoint of a local pod (as the ruleset's local_* sets say). */
function isLocalPod(snap: PolicySnapshot, ip: string, local: NftTargetOptions['localPods']): boolean {
  const w = new Uint32Array(4);
  const fam = parseAddrInto(ip, w);
  if (fam === 0) return false;
  const ep = snap.addrs.get(fam, w);
  if (ep < 0 || (ep & 1) === 1) return false;
  if (local === 'all') return true;
  const n = snap.podNode[ep >>> 1]!;
  return n >= 0 && snap.nodeNames[n] === local.nodeName;
}

/**
 * The plan's verdict and decide()'s, for one flow; undefined for loopback flows (a pod to its own
 * address never leaves the pod, so no forward hook sees it).
 */
function bothVerdicts(snap: PolicySnapshot, ev: PlanEvaluator, opts: NftTargetOptions, f: FlowText): { nft: boolean; want: boolean } | undefined {
  const key = new FlowKey();
  const err = flowFromText(key, f.protocol, f.srcIp, f.dstIp, f.dstPort);
  if (err) throw new Error(err);
  const d = decide(snap, key, new Decision());
  if (d.egress === Side.Loopback) return undefined;
  const decided = opts.protocols.includes(f.protocol) && (isLocalPod(snap, f.srcIp, opts.localPods) || isLocalPod(snap, f.dstIp, opts.localPods));
  const want = decided ? d.allowed : true;
  const nft = ev.run({ family: key.family, proto: protocolNumber(f.protocol), src: big(f.srcIp), dst: big(f.dstIp), dport: f.dstPort }) === 'accept';
  return { nft, want };
}

const arbOptions: fc.Arbitrary<{ localNode: string | undefined; opts: NftTargetOptions }> = fc
  .record({
    localNode: fc.option(fc.constantFrom('n1', 'n2'), { nil: undefined }),
    local: fc.constantFrom<'all' | 'n1' | 'n2' | 'same'>('all', 'all', 'same', 'n1', 'n2'),
    protocols: fc.oneof(
      { weight: 3, arbitrary: fc.constant<Protocol[]>(['TCP', 'UDP', 'SCTP']) },
      { weight: 1, arbitrary: fc.subarray<Protocol>(['TCP', 'UDP', 'SCTP'], { minLength: 1 }) },
    ),
  })
  .map(({ localNode, local, protocols }) => ({
    localNode,
    opts: {
      table: 'netpold_kernel',
      protocols,
      localPods: local === 'all' ? 'all' : local === 'same' ? { nodeName: localNode ?? 'n1' } : { nodeName: local },
    },
  }));

describe('nft target: the plan decides what decide() decides', () => {
  it('agrees with decide() for random clusters and flows (local pods, protocols, node-local, named ports, ipBlocks)', () => {
    let compared = 0;
    let denied = 0;
    fc.assert(
      fc.property(arbClusterWithFlows(40), arbOptions, ({ cluster, flows }, { localNode, opts }) => {
        const snap = compile(cluster, { localNode });
        const ev = new PlanEvaluator(buildNftPlan(snap, opts));
        for (const f of flows) {
          const v = bothVerdicts(snap, ev, opts, f);
          if (!v) continue;
          compared++;
          if (!v.want) denied++;
          expect(v.nft, `${f.protocol} ${f.srcIp} -> ${f.dstIp}:${f.dstPort} (${JSON.stringify(opts.localPods)}, ${opts.protocols.join(',')})`).toBe(v.want);
        }
      }),
      { numRuns: 400 },
    );
    // The comparison means something: many flows, a fair share of them denied.
    expect(compared).toBeGreaterThan(5000);
    expect(denied).toBeGreaterThan(compared / 20);
  });

  it('agrees with decide() on every pod pair of clusters with many policies (ports 53, 80, 8080, a random one)', () => {
    fc.assert(
      fc.property(arbCluster({ minPods: 4, maxPods: 10, minPolicies: 3, maxPolicies: 8 }), fc.integer({ min: 1, max: 65535 }), (cluster, extraPort) => {
        const snap = compile(cluster);
        const opts: NftTargetOptions = { table: 'netpold_kernel', protocols: ['TCP', 'UDP', 'SCTP'], localPods: 'all' };
        const ev = new PlanEvaluator(buildNftPlan(snap, opts));
        const ips = cluster.pods.flatMap((p) => p.ips).concat(cluster.nodes.flatMap((n) => n.addresses), ['198.19.0.1', '2001:2:0:1::1']);
        for (const a of ips) {
          for (const b of ips) {
            if (a.includes(':') !== b.includes(':')) continue;
            for (const protocol of ['TCP', 'UDP', 'SCTP'] as const) {
              for (const dstPort of [53, 80, 8080, extraPort]) {
                const v = bothVerdicts(snap, ev, opts, { protocol, srcIp: a, dstIp: b, dstPort });
                if (v) expect(v.nft, `${protocol} ${a} -> ${b}:${dstPort}`).toBe(v.want);
              }
            }
          }
        }
      }),
      { numRuns: 40 },
    );
  });

  it('the demo and seed fixtures: the plan equals the matrix', () => {
    for (const manifests of seedManifestSets()) {
      const { state } = loadManifestPaths(manifests);
      const snap = compile(state);
      const ev = new PlanEvaluator(buildNftPlan(snap, {}));
      for (const protocol of ['TCP', 'UDP'] as const) {
        for (const port of [53, 80, 443, 3306, 5432, 6379, 8080]) {
          for (const family of [4, 6] as const) {
            const m = computeMatrix(snap, state.pods, protocol, port, family);
            for (const [from, row] of Object.entries(m)) {
              for (const [to, allowed] of Object.entries(row)) {
                if (from === to) continue;
                const ipOf = (k: string) => state.pods.find((p) => `${p.namespace}/${p.name}` === k)!.ips.find((ip) => ip.includes(':') === (family === 6))!;
                const got = ev.run({ family, proto: protocolNumber(protocol), src: big(ipOf(from)), dst: big(ipOf(to)), dport: port }) === 'accept';
                expect(got, `${manifests.join(' ')}: ${from} -> ${to} ${protocol}/${port}`).toBe(allowed);
              }
            }
          }
        }
      }
    }
  });
});

describe('nft target: structure', () => {
  it('subtracts excepts from a block as disjoint, non-adjacent ranges', () => {
    expect(subtractRanges([0n, 255n], [[10n, 19n], [15n, 30n], [31n, 40n], [255n, 255n]])).toEqual([[0n, 9n], [41n, 254n]]);
    expect(subtractRanges([0n, 255n], [[0n, 255n]])).toEqual([]);
    expect(subtractRanges([16n, 31n], [[0n, 15n], [40n, 50n]])).toEqual([[16n, 31n]]);
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 70 }), fc.integer({ min: 0, max: 10 })), { maxLength: 6 }), (cuts) => {
        const c = cuts.map(([lo, n]): [bigint, bigint] => [BigInt(lo), BigInt(lo + n)]);
        const out = subtractRanges([5n, 60n], c);
        for (let x = 0n; x <= 75n; x++) {
          const want = x >= 5n && x <= 60n && !c.some(([lo, hi]) => x >= lo && x <= hi);
          expect(out.some(([lo, hi]) => x >= lo && x <= hi)).toBe(want);
        }
      }),
    );
  });

  it('renders the demo as the README describes it', () => {
    const { state } = loadManifestPaths([join(root, 'examples/demo')]);
    const text = renderNftEnforcement(compile(state), { table: 'kern_demo', protocols: ['TCP', 'UDP'] });
    expect(text).toContain('table inet kern_demo {');
    expect(text).toContain('delete table inet kern_demo\n');
    expect(text).toContain('type filter hook forward priority filter; policy accept;');
    expect(text).toContain('ct state established,related accept');
    expect(text).toContain('meta l4proto != { tcp, udp } accept');
    expect(text).toContain('ip saddr vmap @egress_v4');
    expect(text).toContain('ip6 daddr vmap @ingress_v6');
    expect(text).toMatch(/chain in_g\d+ \{\n {4}meta l4proto tcp th dport 8080 ip saddr @sel_s\d+_v4 return comment "production\/allow-frontend ingress\[0\]"/);
    expect(text).toMatch(/198\.18\.255\.1 \. 198\.18\.1\.20/); // node-local
    expect(text).not.toMatch(/set local_v4/); // every pod is local: no gate
  });

  it('restricted to a node: a gate on the local pods, the others in the maps all the same', () => {
    // prod.yaml: pods on node-a and node-b.
    const { state } = loadManifestPaths([join(seeds, 'clusters', 'prod.yaml'), join(seeds, 'default-deny-all-ingress.yaml')]);
    const plan = buildNftPlan(compile(state, { localNode: 'node-a' }), { localPods: { nodeName: 'node-a' } });
    const text = renderNftPlan(plan);
    expect(text).toContain('ip saddr != @local_v4 ip daddr != @local_v4 accept');
    const onA = state.pods.filter((p) => !p.hostNetwork && p.ips.length > 0 && (p.node ?? 'node-a') === 'node-a');
    expect(onA.length).toBeLessThan(state.pods.filter((p) => !p.hostNetwork && p.ips.length > 0).length);
    expect(plan.stats.localPods).toBe(onA.length);
    // The ingress map still names every isolated pod, node-b's too: a flow from a pod of node-a
    // to one of node-b is decided here on both sides, as decide() (and the agent) do.
    const ingress = plan.maps.find((m) => m.name === 'ingress_v4')!;
    expect(ingress.elements.map(([a]) => a)).toContain('198.18.8.40');
  });

  it('refuses a bad table name and an empty protocol list', () => {
    const snap = compile({ namespaces: [], pods: [], nodes: [], policies: [] });
    expect(() => renderNftEnforcement(snap, { table: 'bad-name' })).toThrow(/table name/);
    expect(() => renderNftEnforcement(snap, { protocols: [] })).toThrow(/protocols/);
    expect(renderNftEnforcement(snap, {})).toContain('table inet netpold_kernel {');
  });

  it('rendering is deterministic and does not depend on pod order', () => {
    fc.assert(
      fc.property(arbCluster(), (cluster) => {
        const a = renderNftEnforcement(compile(cluster), {});
        expect(renderNftEnforcement(compile(cluster), {})).toBe(a);
      }),
      { numRuns: 30 },
    );
  });
});

describe('netpold compile --target nft', () => {
  const cli = async (...argv: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await run(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
    return { code, out: out.join('\n'), err: err.join('\n') };
  };
  const demo = join(root, 'examples/demo');

  it('prints the ruleset renderNftEnforcement renders, with the flags applied', async () => {
    const r = await cli('compile', '--manifests', demo, '--target', 'nft', '--table', 'kdemo', '--protocols', 'tcp,UDP');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const { state } = loadManifestPaths([demo]);
    expect(`${r.out}\n`).toBe(renderNftEnforcement(compile(state), { table: 'kdemo', protocols: ['TCP', 'UDP'], localPods: 'all' }));
    expect(r.out).toContain('meta l4proto != { tcp, udp } accept');
  });

  it('--node restricts the decided flows to that node\'s pods; --json prints the plan', async () => {
    const prod = [join(seeds, 'clusters', 'prod.yaml'), join(seeds, 'default-deny-all-ingress.yaml')];
    const r = await cli('compile', '--manifests', ...prod, '--target', 'nft', '--node', 'node-b', '--json');
    expect(r.code).toBe(0);
    const plan = JSON.parse(r.out) as NftPlan;
    expect(plan.table).toBe('netpold_kernel');
    expect(plan.protocols).toEqual(['TCP', 'UDP', 'SCTP']);
    const { state } = loadManifestPaths(prod);
    expect(plan).toEqual(JSON.parse(JSON.stringify(buildNftPlan(compile(state, { localNode: 'node-b' }), { localPods: { nodeName: 'node-b' } }))));
    // Pods without spec.nodeName are on --node (as everywhere); node-a's pods are not local.
    const local = state.pods.filter((p) => !p.hostNetwork && (p.node ?? 'node-b') === 'node-b').flatMap((p) => p.ips.filter((ip) => !ip.includes(':')));
    expect(local).toContain('198.18.8.40');
    expect(local).not.toContain('198.18.8.10');
    expect([...plan.sets.find((x) => x.name === 'local_v4')!.elements].sort()).toEqual(local.sort());
  });

  it('needs exactly one of --stats and --target nft; checks --target, --table and --protocols', async () => {
    for (const [argv, msg] of [
      [[], /--stats or --target nft/],
      [['--stats', '--target', 'nft'], /not both/],
      [['--target', 'iptables'], /--target must be nft/],
      [['--target', 'nft', '--table', '1bad'], /--table 1bad/],
      [['--target', 'nft', '--protocols', 'TCP,ICMP'], /--protocols/],
      [['--stats', '--table', 'x'], /go with --target nft/],
    ] as const) {
      const r = await cli('compile', '--manifests', demo, ...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.err).toMatch(msg);
      expect(r.err).toContain('NETPOLD_E_USAGE');
    }
  });
});

// ---------------------------------------------------------------------------------------------
// nft -c: the kernel's own parser and evaluator accept the text.

/** The demo, and the seed combinations (valid ones; the Calico ones as written, failing closed). */
function seedManifestSets(): string[][] {
  const c = (n: string) => join(seeds, 'clusters', `${n}.yaml`);
  const p = (n: string) => join(seeds, `${n}.yaml`);
  const combos: string[][] = [
    ['testweb', 'deny-all-for-testweb', 'allow-testcurl-for-testweb'],
    ['dockercoins', 'deny-from-other-namespaces', 'allow-webui'],
    ['blue', 'zone-internal'],
    ['production', 'default-deny-ingress', 'allow-frontend', 'deny-cross-namespace', 'database-policy', 'allow-dns'],
    ['production-unlabelled', 'deny-cross-namespace'],
    ['prod', 'default-deny-all-ingress', 'deny-external-egress', 'customer-api-allow-web', 'web-allow-external'],
    ['prod', 'orders-egress-external'],
    ['db', 'db-policy'],
    ['calico', 'calico-allow-egress-external'],
    ['calico', 'calico-default-deny', 'calico-allow-same-namespace', 'calico-allow-different-namespace', 'calico-allow-egress-same-namespace'],
  ];
  return [[join(root, 'examples/demo')], ...combos.map(([cl, ...ps]) => [c(cl!), ...ps.map(p)])];
}

const missing = labRequirementsMissing();
const skipNft = missing.length > 0;
if (skipNft) console.warn(`nft -c checks skipped: they need ${missing.join(', ')}`);

describe.runIf(skipNft && process.env.CI === 'true')('nft -c prerequisites in CI', () => {
  it('are all present', () => {
    expect(missing).toEqual([]);
  });
});

describe.skipIf(skipNft)('nft -c accepts the rendered rulesets', () => {
  const ns = `npd-nftchk-${randomBytes(4).toString('hex')}`;

  beforeAll(async () => {
    const r = await exec('ip', ['netns', 'add', ns]);
    expect(r.code, r.stderr).toBe(0);
  });
  afterAll(async () => {
    await exec('ip', ['netns', 'del', ns]);
  });

  const check = async (text: string, label: string): Promise<void> => {
    const r = await exec('ip', ['netns', 'exec', ns, 'nft', '-c', '-f', '-'], { input: text, timeoutMs: 20_000 });
    expect(r.code, `${label}: ${r.stderr}\n${text}`).toBe(0);
  };

  it('for the demo and the seed fixtures (all pods, one node, TCP only)', async () => {
    for (const manifests of seedManifestSets()) {
      const { state } = loadManifestPaths(manifests);
      const node = state.pods.find((p) => p.node !== undefined)?.node ?? 'node-a';
      await check(renderNftEnforcement(compile(state), {}), manifests.join(' '));
      await check(renderNftEnforcement(compile(state, { localNode: node }), { localPods: { nodeName: node }, protocols: ['TCP'] }), `${manifests.join(' ')} --node ${node}`);
    }
  });

  it('for 40 random clusters', async () => {
    const samples = fc.sample(fc.tuple(arbCluster({ maxPolicies: 8 }), arbOptions), { seed: 20240611, numRuns: 40 });
    for (const [cluster, { localNode, opts }] of samples) {
      await check(renderNftEnforcement(compile(cluster, { localNode }), opts), JSON.stringify(opts));
    }
  });

  it('for a cluster of every edge at once: empty sets, ::/0, 0.0.0.0/0 with excepts, all-port ranges', async () => {
    const state: ClusterState = loadManifestPaths([join(root, 'examples/demo')]).state;
    const wide: ClusterState = {
      ...state,
      policies: [
        ...state.policies,
        {
          namespace: 'staging',
          name: 'wide',
          podSelector: { matchLabels: {}, matchExpressions: [] },
          policyTypes: ['Ingress', 'Egress'],
          ingress: [
            {
              peers: [
                { podSelector: undefined, namespaceSelector: undefined, ipBlock: { cidr: '0.0.0.0/0', except: ['198.18.0.0/15', '198.18.1.10/32'] } },
                { podSelector: undefined, namespaceSelector: undefined, ipBlock: { cidr: '::/0', except: ['2001:2::/48'] } },
                { podSelector: { matchLabels: { app: 'nobody' }, matchExpressions: [] }, namespaceSelector: undefined, ipBlock: undefined },
              ],
              ports: [
                { protocol: 'TCP', port: 1, endPort: 65535 },
                { protocol: 'UDP', port: 'dns', endPort: undefined },
                { protocol: 'SCTP', port: undefined, endPort: undefined },
                { protocol: 'TCP', port: 'no-such-port', endPort: undefined },
              ],
            },
          ],
          egress: [{ peers: [], ports: [] }],
          valid: true,
        },
      ],
    };
    await check(renderNftEnforcement(compile(wide), {}), 'edges');
  });
});
