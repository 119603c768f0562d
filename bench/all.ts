// `npm run bench [-- --quick] [-- --out DIR] [-- --no-flows] [-- --no-decide]`: the decision
// benchmark (bench/decide.ts, in a child process with --expose-gc) and the flow benchmark
// (bench/flows.ts), one report in bench/results/<date>/ (gitignored): results.json, results.md,
// SVG charts, and PNG copies when a converter (rsvg-convert, ImageMagick convert) is installed.
// A full (not --quick) run also replaces bench/results/latest/, which is committed and shown in the
// README. `--quick` stays under two minutes.
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { packageRoot, which } from '../src/lab/sys.js';
import { formatTable, type SizeResult as DecideSize } from './decide.js';
import { flowConfigFromArgs, fmt, formatFlowMarkdown, runFlowBench, table, type FlowReport, type Mode } from './flows.js';
import { hardware, hardwareLine, type Hardware } from './hardware.js';
import { withSignalAbort } from './signals.js';
import { MODE_COLORS, PALETTE, barChart, histToCdf, lineChart, type BarSeries } from './svg.js';

interface Report {
  startedAt: string;
  command: string;
  quick: boolean;
  hardware: Hardware;
  decide: { sizes: DecideSize[] } | null;
  flows: FlowReport | null;
  errors: string[];
  seconds: number;
}

const log = (t: string): void => {
  process.stderr.write(`${t}\n`);
};

function runDecide(quick: boolean): Promise<{ sizes: DecideSize[] }> {
  const script = join(packageRoot(), 'dist', 'bench', 'decide-main.js');
  const args = ['--expose-gc', script, '--json', ...(quick ? ['--sizes', 'S,M', '--time', '100'] : [])];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15 * 60_000);
    child.on('error', (e) => (clearTimeout(timer), reject(e)));
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`bench:decide ${sig ? `killed (${sig})` : `exited ${code}`}`));
      try {
        resolve(JSON.parse(out) as { sizes: DecideSize[] });
      } catch {
        reject(new Error(`bench:decide printed no JSON: ${out.slice(0, 200)}`));
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// charts

const policiesLabel = (n: number): string => `${n.toLocaleString('en-US')} policies`;

function modeBars(f: FlowReport, key: 'connPerSec' | 'udpFlowsPerSec' | 'udpDgramsPerSec' | 'cpuSecPerGB'): BarSeries[] {
  return f.config.modes.map((m: Mode) => ({
    name: m,
    color: MODE_COLORS[m] ?? '#999',
    values: f.sizes.map((s) => s.modes[m]?.[key] ?? null),
    lo: f.sizes.map((s) => s.modes[m]?.spread[key]?.min ?? null),
    hi: f.sizes.map((s) => s.modes[m]?.spread[key]?.max ?? null),
  }));
}

function charts(r: Report): Record<string, string> {
  const out: Record<string, string> = {};
  const f = r.flows;
  const note = `${r.hardware.nproc} CPUs, ${r.hardware.kernel}; median of ${f?.config.rounds ?? '?'} rounds, whiskers min–max`;
  if (f) {
    const groups = f.sizes.map((s) => policiesLabel(s.policies));
    out['flows-tcp.svg'] = barChart({ title: 'New TCP connections per second', yLabel: 'connections/s', groups, series: modeBars(f, 'connPerSec'), labels: true, note });
    out['flows-udp.svg'] = barChart({ title: 'New UDP flows per second', yLabel: 'flows/s', groups, series: modeBars(f, 'udpFlowsPerSec'), labels: true, note });
    out['udp-datagrams.svg'] = barChart({ title: 'UDP datagrams per second (established flows, echoed)', yLabel: 'datagrams/s', groups, series: modeBars(f, 'udpDgramsPerSec'), labels: true, note });
    out['cpu-per-gb.svg'] = barChart({ title: 'CPU seconds per GB, 1 stream (softirq + agent process)', yLabel: 'CPU s/GB', groups, series: modeBars(f, 'cpuSecPerGB'), labels: true, note });
    const tgroups = f.sizes.flatMap((s) => [`${policiesLabel(s.policies)}\n1 stream`, `${policiesLabel(s.policies)}\n${f.config.stream.streams} streams`]);
    out['throughput.svg'] = barChart({
      title: 'TCP throughput',
      yLabel: 'Gbit/s',
      groups: tgroups,
      width: Math.max(760, 120 * tgroups.length),
      height: 400,
      labels: true,
      note,
      series: f.config.modes.map((m) => ({
        name: m,
        color: MODE_COLORS[m] ?? '#999',
        values: f.sizes.flatMap((s) => [s.modes[m]?.streamGbps ?? null, s.modes[m]?.streamsGbps ?? null]),
        lo: f.sizes.flatMap((s) => [s.modes[m]?.spread.streamGbps?.min ?? null, s.modes[m]?.spread.streamsGbps?.min ?? null]),
        hi: f.sizes.flatMap((s) => [s.modes[m]?.spread.streamGbps?.max ?? null, s.modes[m]?.spread.streamsGbps?.max ?? null]),
      })),
    });
    const ref = f.sizes[f.sizes.length - 1]!;
    out['latency-cdf.svg'] = lineChart({
      title: `Connection latency at ${f.config.latency.rate}/s, ${policiesLabel(ref.policies)} (CDF)`,
      xLabel: 'microseconds (log scale): dashed = handshake done, solid = whole reply read',
      yLabel: 'fraction of connections',
      logX: true,
      yMin: 0,
      yMax: 1,
      note: `all rounds pooled; ${r.hardware.nproc} CPUs shared by client, server, forwarding and agent`,
      series: f.config.modes.flatMap((m) => {
        const h = ref.modes[m]?.hist;
        if (!h) return [];
        return [
          { name: `${m} reply`, color: MODE_COLORS[m] ?? '#999', points: histToCdf(h.firstReply) },
          { name: `${m} connect`, color: MODE_COLORS[m] ?? '#999', dashed: true, points: histToCdf(h.connect) },
        ];
      }),
    });
  }
  if (r.decide && r.decide.sizes.length > 0) {
    const d = r.decide.sizes;
    const line = (name: string, i: number, key: 'decideP50Ns' | 'decideP99Ns' | 'addrLookupP50Ns' | 'trieLookupP50Ns') => ({
      name,
      color: PALETTE[i]!,
      points: d.map((s) => [s.pods, s[key]] as [number, number]),
    });
    out['decide-latency.svg'] = lineChart({
      title: 'Policy decision latency vs cluster size',
      xLabel: `pods (log scale); sizes ${d.map((s) => `${s.name}: ${s.pods.toLocaleString('en-US')} pods / ${s.policies.toLocaleString('en-US')} policies`).join(', ')}`,
      yLabel: 'nanoseconds per decision',
      logX: true,
      yMin: 0,
      series: [line('decide p50', 0, 'decideP50Ns'), line('decide p99', 1, 'decideP99Ns'), line('address lookup p50', 2, 'addrLookupP50Ns'), line('CIDR trie lookup p50', 3, 'trieLookupP50Ns')],
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Markdown

function markdown(r: Report, images: string[]): string {
  const out: string[] = [];
  out.push(`# netpold benchmark, ${r.startedAt}${r.quick ? ' (--quick)' : ''}`, '');
  out.push(`- Command: \`${r.command}\` (as root), ${r.seconds} s in all`);
  out.push(`- Machine: ${hardwareLine(r.hardware)}`);
  out.push('- One run on one machine: client, server, forwarding and the agent share its CPUs; other work on the machine shows up as noise.');
  if (r.errors.length > 0) out.push(`- Errors: ${r.errors.join('; ')}`);
  if (r.flows) {
    out.push('', '## Flows: agent vs kernel enforcement vs no enforcement', '', formatFlowMarkdown(r.flows));
    out.push('', 'How each figure is measured:', '');
    for (const [k, v] of Object.entries(r.flows.measurement)) out.push(`- \`${k}\`: ${v}`);
  }
  if (r.decide) {
    out.push('', '## Policy decisions (in memory)', '', formatTable(r.decide.sizes));
  }
  if (images.length > 0) {
    out.push('', '## Charts', '');
    for (const img of images) out.push(`![${img}](${img})`, '');
  }
  return `${out.join('\n')}\n`;
}

/** A short summary table for the terminal: reference size, medians. */
function summary(f: FlowReport): string {
  const rows: string[][] = [['', ...f.config.modes]];
  const keys: [string, 'connPerSec' | 'connectP99Us' | 'firstReplyP99Us' | 'streamGbps' | 'cpuSecPerGB' | 'udpFlowsPerSec' | 'errors'][] = [
    ['TCP conn/s', 'connPerSec'],
    ['connect p99 µs', 'connectP99Us'],
    ['reply p99 µs', 'firstReplyP99Us'],
    ['Gbit/s 1 stream', 'streamGbps'],
    ['CPU s/GB', 'cpuSecPerGB'],
    ['UDP flows/s', 'udpFlowsPerSec'],
    ['errors', 'errors'],
  ];
  for (const [label, k] of keys) rows.push([label, ...f.config.modes.map((m) => fmt(f.modes[m][k]))]);
  return table(rows);
}

// ---------------------------------------------------------------------------------------------
// PNG

function pngConverter(): ((svg: string, png: string) => void) | undefined {
  const rsvg = which('rsvg-convert');
  if (rsvg) return (svg, png) => execFileSync(rsvg, ['-o', png, svg], { stdio: 'ignore', timeout: 60_000 });
  const convert = which('convert');
  if (convert) {
    let version = '';
    try {
      version = execFileSync(convert, ['-version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
    } catch {
      // not ImageMagick
    }
    if (/^Version: ImageMagick/m.test(version)) return (svg, png) => execFileSync(convert, [svg, png], { stdio: 'ignore', timeout: 60_000 });
  }
  return undefined;
}

function isPng(file: string): boolean {
  try {
    return readFileSync(file).subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  } catch {
    return false;
  }
}

/** Writes the charts (SVG, and PNG when a converter is there) and results.md; returns the chart count. */
function writeReport(dir: string, report: Report): number {
  const images: string[] = [];
  const convert = pngConverter();
  for (const [name, svg] of Object.entries(charts(report))) {
    writeFileSync(join(dir, name), svg);
    images.push(name);
    if (convert) {
      const png = join(dir, name.replace(/\.svg$/, '.png'));
      try {
        convert(join(dir, name), png);
        if (!isPng(png)) rmSync(png, { force: true });
      } catch {
        rmSync(png, { force: true });
      }
    }
  }
  writeFileSync(join(dir, 'results.md'), markdown(report, images));
  return images.length;
}

// ---------------------------------------------------------------------------------------------

async function main(argv: string[]): Promise<void> {
  const program = new Command('bench')
    .option('--quick', 'small sizes, 2 flow rounds, short phases (under two minutes)')
    .option('--out <dir>', 'results folder (default bench/results/<date>)')
    .option('--sizes <list>', 'flow benchmark policy counts (default 10,1000,10000; --quick: 10)')
    .option('--rounds <n>', 'flow benchmark rounds (default 5; --quick: 2)')
    .option('--no-decide', 'skip the decision benchmark')
    .option('--no-flows', 'skip the flow benchmark')
    .option('--no-latest', 'do not replace bench/results/latest/ (a full run does by default)')
    .option('--render <dir>', 'measure nothing: rewrite results.md and the charts of DIR from its results.json')
    .parse(argv);
  const o = program.opts<{ quick?: boolean; out?: string; sizes?: string; rounds?: string; decide: boolean; flows: boolean; latest: boolean; render?: string }>();
  if (o.render !== undefined) {
    const r = JSON.parse(readFileSync(join(o.render, 'results.json'), 'utf8')) as Report;
    const n = writeReport(o.render, r);
    log(`bench: rewrote results.md and ${n} chart(s) in ${o.render}`);
    return;
  }
  const t0 = Date.now();
  const startedAt = new Date().toISOString();
  const stamp = startedAt.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  const root = packageRoot();
  const dir = o.out ?? join(root, 'bench', 'results', `${stamp}${o.quick ? '-quick' : ''}`);
  const report: Report = {
    startedAt,
    command: ['npm run bench', ...(argv.slice(2).length > 0 ? ['--', ...argv.slice(2)] : [])].join(' '),
    quick: o.quick === true,
    hardware: hardware(),
    decide: null,
    flows: null,
    errors: [],
    seconds: 0,
  };
  if (o.decide) {
    log('bench: decision benchmark...');
    try {
      report.decide = await runDecide(o.quick === true);
    } catch (e) {
      report.errors.push(`decide: ${(e as Error).message}`);
    }
  }
  if (o.flows) {
    log('bench: flow benchmark...');
    try {
      const cfg = flowConfigFromArgs(o);
      report.flows = await withSignalAbort((signal) => runFlowBench(cfg, { log, signal }));
    } catch (e) {
      report.errors.push(`flows: ${(e as Error).message}`);
    }
  }
  report.seconds = Math.round((Date.now() - t0) / 100) / 10;

  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'results.json'), `${JSON.stringify(report, null, 1)}\n`);
  const n = writeReport(dir, report);
  log(`bench: wrote ${dir} (results.json, results.md, ${n} SVG chart(s)${pngConverter() ? ' and PNG copies' : '; no PNG: neither rsvg-convert nor ImageMagick is installed'})`);
  if (!o.quick && o.latest && o.out === undefined && report.errors.length === 0) {
    const latest = join(root, 'bench', 'results', 'latest');
    // bench:memory's results, the yardstick relays' run (bench:flows --modes) and the bridged
    // pods' pair of runs (bench:flows --bridge, then without) live there too,
    // from runs of their own: kept.
    const kept = ['memory.json', 'memory.md', 'yardstick.json', 'yardstick.md', 'yardstick-rerun.json', 'yardstick-rerun.md', 'bridge.json', 'bridge.md', 'bridge-routed.json', 'bridge-routed.md'].filter((f) => existsSync(join(latest, f))).map((f) => [f, readFileSync(join(latest, f))] as const);
    rmSync(latest, { recursive: true, force: true });
    cpSync(dir, latest, { recursive: true });
    for (const [f, data] of kept) writeFileSync(join(latest, f), data);
    log(`bench: replaced ${latest}`);
  }
  if (report.flows) process.stdout.write(`${summary(report.flows)}\n`);
  if (report.decide) process.stdout.write(`${formatTable(report.decide.sizes)}\n`);
  if (report.errors.length > 0) {
    for (const e of report.errors) log(`bench: ${e}`);
    if (!process.exitCode) process.exitCode = 1;
  }
  if (existsSync(dir)) process.stdout.write(`results: ${dir}\n`);
}

main(process.argv).catch((e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
