// The flow benchmark harness (bench/flows.ts) at a tiny size with short phases: the report has the
// promised shape and every mode moved traffic. No timing assertions: only that it works. Needs
// root, iproute2, nftables, a C compiler, the native addon and dist/ (npm run build); skips
// with a message naming what is missing otherwise (in CI, a missing prerequisite is a failure).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { flowCluster } from '../bench/flow-cluster.js';
import { MODES, QUICK_CONFIG, flowBenchMissing, flowConfigFromArgs, formatFlowMarkdown, runFlowBench, spreadOf, type FlowBenchConfig, type Mode } from '../bench/flows.js';
import { barChart, histToCdf, lineChart } from '../bench/svg.js';
import { nativeAddonPath } from '../src/dataplane/native.js';
import { listNetns } from '../src/lab/sys.js';

const root = new URL('..', import.meta.url).pathname;
const missing = flowBenchMissing();
const addon = nativeAddonPath();
if (!addon || !existsSync(addon)) missing.push('the native addon (npm ci builds it)');
if (!existsSync(join(root, 'dist/src/cli/main.js'))) missing.push('dist/ (npm run build)');
const skip = missing.length > 0;
if (skip) console.warn(`flow benchmark test skipped: it needs ${missing.join(', ')}`);

/** One round at 10 policies with phases of a few tenths of a second: it works, nothing timed. */
function tinyConfig(modes: Mode[]): FlowBenchConfig {
  return {
    ...QUICK_CONFIG,
    sizes: [10],
    rounds: 1,
    modes,
    warmupS: 0.15,
    rate: { seconds: 0.3, conns: 16 },
    latency: { seconds: 0.3, rate: 200 },
    stream: { seconds: 0.3, warmupS: 0.1, streams: 2 },
    udpFlows: { seconds: 0.3, conns: 16 },
    udpDgram: { seconds: 0.3, warmupS: 0.1, flows: 2, window: 16, size: 64 },
  };
}

describe.runIf(skip && process.env.CI === 'true')('flow benchmark prerequisites in CI', () => {
  it('are all present', () => {
    expect(missing).toEqual([]);
  });
});

describe('flow benchmark pieces (no root needed)', () => {
  it('builds a cluster whose lab part holds only the two real pods', () => {
    const c = flowCluster(10);
    expect(c.state.policies).toHaveLength(10);
    expect(c.labState.pods.map((p) => `${p.namespace}/${p.name}`)).toEqual(['bench/client', 'bench/server']);
    expect(c.state.pods.length).toBeGreaterThan(10);
    for (const p of c.state.pods) for (const ip of p.ips) expect(ip.startsWith('198.1') || ip.startsWith('2001:2:')).toBe(true);
  });

  it('takes --modes: the default three, the yardstick relays, nothing unknown or repeated', () => {
    expect(flowConfigFromArgs({}).modes).toEqual(['none', 'kernel', 'agent']);
    expect(flowConfigFromArgs({ modes: 'none, relay,sockmap,agent' }).modes).toEqual(['none', 'relay', 'sockmap', 'agent']);
    expect(() => flowConfigFromArgs({ modes: 'none,ebpf' })).toThrow(/--modes: .*not ebpf/);
    expect(() => flowConfigFromArgs({ modes: 'agent,agent' })).toThrow(/names a mode twice/);
  });

  it('takes --bridge, but not with the yardstick relays (TPROXY alone cannot take bridged traffic)', () => {
    expect(flowConfigFromArgs({ bridge: true }).bridge).toBe(true);
    expect(flowConfigFromArgs({}).bridge).toBeUndefined();
    expect(() => flowConfigFromArgs({ bridge: true, modes: 'none,relay' })).toThrow(/--bridge: the yardstick relays \(relay\)/);
  });

  it('summarizes rounds and draws charts', () => {
    expect(spreadOf([3, 1, 2])).toEqual({ min: 1, q1: 1.5, median: 2, q3: 2.5, max: 3 });
    const bars = barChart({ title: 'a <b>', yLabel: 'y', groups: ['g1', 'g2'], series: [{ name: 's', color: '#000', values: [1, null], lo: [0.5, null], hi: [2, null] }] });
    expect(bars).toMatch(/^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(bars).toContain('a &lt;b&gt;');
    expect(bars.match(/<rect [^>]*><title>/g)).toHaveLength(1); // one bar (the null value has none)
    expect(histToCdf([[10, 1], [20, 3]])).toEqual([[10, 0.25], [20, 1]]);
    expect(lineChart({ title: 't', xLabel: 'x', yLabel: 'y', logX: true, series: [{ name: 'l', color: '#000', points: [[10, 1], [1000, 2]] }] })).toContain('<path d="M');
  });
});

describe.skipIf(skip)('flow benchmark, tiny and quick', () => {
  it('measures none, kernel and agent: the JSON shape, and traffic in every mode', async () => {
    const report = await runFlowBench(tinyConfig([...MODES]));
    const json = JSON.parse(JSON.stringify(report)) as { modes: Record<string, Record<string, unknown>> };
    expect(Object.keys(json.modes).sort()).toEqual([...MODES].sort());
    for (const mode of MODES) {
      const m = json.modes[mode]!;
      for (const k of ['connPerSec', 'connectP50Us', 'connectP99Us', 'streamGbps', 'cpuSecPerGB', 'udpFlowsPerSec', 'errors']) {
        expect(typeof m[k], `${mode}.${k}`).toBe('number');
        expect(Number.isFinite(m[k]), `${mode}.${k}`).toBe(true);
      }
      expect(m.connPerSec as number, mode).toBeGreaterThan(0);
      expect(m.streamGbps as number, mode).toBeGreaterThan(0);
      expect(m.udpFlowsPerSec as number, mode).toBeGreaterThan(0);
    }
    expect(report.sizes).toHaveLength(1);
    expect(report.modes.agent.agentCpuSecPerGB).toBeGreaterThanOrEqual(0);
    expect(formatFlowMarkdown(report)).toMatch(/agent : kernel : none/);
    // Every namespace the runs built is gone.
    const left = (await listNetns()).filter((n) => report.labs.some((id) => n.startsWith(`np-${id}-`)));
    expect(left).toEqual([]);
  }, 120_000);
});

describe.skipIf(skip)('flow benchmark, pods on a bridge', () => {
  it('measures none (switched), kernel (forward hook through br_netfilter) and agent (taken off the bridge): traffic in every mode', async () => {
    const report = await runFlowBench({ ...tinyConfig([...MODES]), bridge: true });
    for (const mode of MODES) {
      const m = report.modes[mode];
      expect(m.connPerSec, mode).toBeGreaterThan(0);
      expect(m.streamGbps, mode).toBeGreaterThan(0);
      expect(m.udpFlowsPerSec, mode).toBeGreaterThan(0);
    }
    expect(formatFlowMarkdown(report)).toMatch(/^Pods on a Linux bridge \(`--bridge`/);
    const left = (await listNetns()).filter((n) => report.labs.some((id) => n.startsWith(`np-${id}-`)));
    expect(left).toEqual([]);
  }, 120_000);
});

describe.skipIf(skip)('flow benchmark, the yardstick relays', () => {
  // bench/c/relay.c in the node namespace instead of the agent: both variants carry the TCP
  // phases (the loadgen counts a connection only with its whole reply, a stream only its bytes);
  // the splice relay without a single error. The sockmap variant is an experiment that is not
  // byte-exact at close, so its errors are reported, not asserted.
  it('relay (splice) and sockmap move the TCP phases; their UDP rows are n/a', async () => {
    const report = await runFlowBench(tinyConfig(['none', 'relay', 'sockmap']));
    for (const mode of ['relay', 'sockmap'] as const) {
      const m = report.modes[mode];
      expect(m.connPerSec, mode).toBeGreaterThan(0);
      expect(m.streamGbps, mode).toBeGreaterThan(0);
      expect(m.streamsGbps, mode).toBeGreaterThan(0);
      expect(m.udpFlowsPerSec, mode).toBe(0); // not run
      expect(m.agentCpuSecPerGB, `${mode}: the relay process's CPU is counted`).toBeGreaterThan(0);
    }
    expect(report.modes.relay.errors).toBe(0);
    const md = formatFlowMarkdown(report);
    expect(md).toMatch(/sockmap : relay : none/);
    expect(md).toMatch(/\| new UDP flows\/s[^\n]*\| n\/a +\| n\/a +\| n\/a : n\/a : 1 +\|/);
    const left = (await listNetns()).filter((n) => report.labs.some((id) => n.startsWith(`np-${id}-`)));
    expect(left).toEqual([]);
  }, 120_000);
});
