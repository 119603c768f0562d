// The memory and soak benchmark (`npm run bench:memory`): how much agent state one tracked flow
// costs at many concurrent flows, and whether the agent grows over a long run of opening and
// closing flows.
//
// One fresh lab (the flow benchmark's cluster: bench/flow-cluster.ts, a client and a server pod,
// the real `netpold agent` in the node namespace with its default relay unless --agent-relay).
// Measured on the agent process (the node process itself, not `ip netns exec`): RSS and its parts
// (/proc/PID/status), open fds (/proc/PID/fd), and the JS heap from the agent's own /metrics
// (prom-client's default nodejs_* metrics). Kernel socket memory is reported separately:
// /proc/net/sockstat of the three namespaces (sockets in use per namespace; TCP buffer pages,
// machine-wide) and the machine's slab (socket, pipe and TCP objects of every end of a flow).
//
// Steps: idle → warm-up (a short `loadgen rate` window and a probe of concurrent flows, opened and
// closed: first-use costs and the fds one flow costs) → baseline → N concurrent flows opened in
// stages by `loadgen hold` (client pod → server pod through the agent; each stage a client and a
// server process of its own, so no process needs more fds than its limit allows), sampled at each
// stage once the agent's flow table shows them → all closed (the client first) → soak: windows of
// `loadgen rate` (new connections at full speed) and bursts of concurrent flows opened and closed,
// repeated for --soak-seconds, RSS and heap sampled at its start, about every 30 s, and at its end.
//
// Concurrency is capped by the agent's open-files limit, measured, not assumed: every flow costs
// the agent some fds (the client's socket, the upstream's, and with the splice relay a pipe per
// direction), and a process cannot raise its hard limit without CAP_SYS_RESOURCE. The benchmark
// raises its own limit (the agent inherits it) as far as it can; when the flows asked for still do
// not fit, it measures at as many as fit and says so in the report (`limits`).
//
// Every step is bounded in time; the lab (namespaces, the agent's nftables table and routes) is
// removed in a finally block, also on failure or SIGINT.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_OPTIONS } from '../src/config/agent.js';
import { FlowTable } from '../src/conntrack/flow-table.js';
import { AgentProcess } from '../src/lab/agent-process.js';
import { Lab } from '../src/lab/lab.js';
import { exec, labRequirementsMissing, sysctls, which } from '../src/lab/sys.js';
import { BENCH_NODE, CLIENT, SERVER, flowCluster, writeManifests } from './flow-cluster.js';
import { fmt, table } from './flows.js';
import { hardware, hardwareLine, type Hardware } from './hardware.js';
import { cCompiler, ensureLoadgen, loadgenBinary, runLoadgen, startLoadgenServer, stopAllLoadgens, type LoadgenServer, type RateOut } from './loadgen.js';
import {
  flowsThatFit,
  median,
  parseMeminfo,
  parseNofileLimit,
  parseProcStatus,
  parsePrometheus,
  parseSockstat,
  perFlow,
  promValue,
  slope,
  splitEven,
  type Sockstat,
} from './procfs.js';

export interface MemoryBenchConfig {
  /** Concurrent flows asked for (capped by the agent's open-files limit, reported). */
  flows: number;
  /** Opening stages (at least; more when one process cannot hold a stage's connections). */
  stages: number;
  /** Concurrent flows of the warm-up probe (also measures fds per flow). */
  probeFlows: number;
  soakSeconds: number;
  /** One `loadgen rate` window of the soak, and its parallel connections. */
  soakWindowS: number;
  soakConns: number;
  /** Concurrent flows opened and closed after each soak window (0: none). */
  soakBurst: number;
  /** RSS and heap sampled at least this often during the soak. */
  sampleEveryS: number;
  /** Policies of the cluster the agent enforces (bench/flow-cluster.ts). */
  policies: number;
  agentRelay?: 'js' | 'splice';
  /** Connects in flight per hold process. */
  holdConcurrency: number;
  quick: boolean;
}

export const FULL_MEMORY_CONFIG: MemoryBenchConfig = {
  flows: 100_000,
  stages: 4,
  probeFlows: 500,
  soakSeconds: 600,
  soakWindowS: 10,
  soakConns: 32,
  soakBurst: 1_000,
  sampleEveryS: 30,
  policies: 10,
  holdConcurrency: 512,
  quick: false,
};

export const QUICK_MEMORY_CONFIG: MemoryBenchConfig = {
  ...FULL_MEMORY_CONFIG,
  flows: 2_000,
  probeFlows: 200,
  soakSeconds: 20,
  soakWindowS: 4,
  soakBurst: 500,
  sampleEveryS: 5,
  quick: true,
};

export function memoryConfigFromArgs(o: { quick?: boolean; flows?: string; soakSeconds?: string; agentRelay?: string; policies?: string }): MemoryBenchConfig {
  const cfg: MemoryBenchConfig = { ...(o.quick ? QUICK_MEMORY_CONFIG : FULL_MEMORY_CONFIG) };
  const int = (name: string, v: string, lo: number, hi: number): number => {
    const n = Number(v.replace(/_/g, ''));
    if (!Number.isInteger(n) || n < lo || n > hi) throw new Error(`${name}: an integer from ${lo} to ${hi}, not ${v}`);
    return n;
  };
  if (o.flows !== undefined) cfg.flows = int('--flows', o.flows, 1, 1_000_000);
  if (o.soakSeconds !== undefined) cfg.soakSeconds = int('--soak-seconds', o.soakSeconds, 0, 24 * 3600);
  if (o.policies !== undefined) cfg.policies = int('--policies', o.policies, 2, 100_000);
  if (o.agentRelay !== undefined) {
    if (o.agentRelay !== 'js' && o.agentRelay !== 'splice') throw new Error(`--agent-relay: js or splice, not ${o.agentRelay}`);
    cfg.agentRelay = o.agentRelay;
  }
  cfg.probeFlows = Math.min(cfg.probeFlows, cfg.flows);
  cfg.soakBurst = Math.min(cfg.soakBurst, cfg.flows);
  return cfg;
}

// ---------------------------------------------------------------------------------------------
// results

export interface MemorySample {
  label: string;
  /** Seconds since the agent was ready. */
  t: number;
  /** Concurrent flows held open by the load generator at this point. */
  heldFlows: number;
  /** The agent's TCP flows in its flow table (netpold_flows_active{protocol="tcp"}). */
  agentTcpFlows: number;
  rssBytes: number;
  rssAnonBytes: number;
  rssFileBytes: number;
  hwmBytes: number;
  threads: number;
  fds: number;
  /** JS heap right after a full GC (the agent's preload, GC_PRELOAD): live objects only. */
  heapUsedBytes: number;
  heapTotalBytes: number;
  externalBytes: number;
  /** nodejs_heap_size_used_bytes as /metrics shows it a moment later (garbage included). */
  scrapedHeapUsedBytes: number;
  /**
   * netpold_native_malloc_in_use_bytes, read with the scrape: what malloc has handed out,
   * process-wide (the engine's relays and UDP flows, Node's own, ArrayBuffer contents); not the
   * JS heap, and unlike RSS without the allocator's slack. 0 without the addon.
   */
  mallocInUseBytes: number;
  /** Post-GC readings taken (several when the sample waited for memory to settle). */
  gcReadings: number;
  sockstat: { node: Sockstat; client: Sockstat; server: Sockstat };
  /** Machine-wide slab (kernel objects: sockets, pipes, TCP state of every end of a flow). */
  slabBytes: number;
  /** netpold_event_loop_lag_seconds: the agent's largest event-loop lag of the last 5 s. */
  eventLoopLagS: number;
  /** The agent's netpold_*_total counters (summed over labels): what failed flows ran into. */
  agentCounters: Record<string, number>;
}

export interface PerFlow {
  flows: number;
  rssBytes: number;
  /** Least-squares slope of RSS over the stages (0 flows = the baseline). */
  rssSlopeBytes: number;
  rssAnonBytes: number;
  heapUsedBytes: number;
  heapSlopeBytes: number;
  externalBytes: number;
  mallocInUseBytes: number;
  /**
   * The agent's state per flow: JS heap used (after a full GC) plus malloc in use (which holds
   * the engine's part and the ArrayBuffers of "external"). What the flows themselves take,
   * without what the allocators keep in reserve (RSS has that too).
   */
  stateBytes: number;
  /**
   * What the agent's flow table allocates per slot at start (records, chains, buckets, entries
   * array: FlowTable.allocatedBytes / capacity). The baseline holds the whole table already, so
   * stateBytes leaves it out; a table sized to its flows adds this to every flow.
   */
  tableSlotBytes: number;
  /** stateBytes + tableSlotBytes: a tracked flow's agent state in a table sized to the flows. */
  stateWithSlotBytes: number;
  fds: number;
  /** Socket buffers (sockstat TCP mem pages × page size), all sockets of a flow, machine-wide. */
  socketBufferBytes: number;
  /** Slab growth, machine-wide: the kernel objects of the client, agent (both sides) and server ends. */
  kernelSlabBytes: number;
  /** Sockets in use per flow in each namespace. */
  socketsNode: number;
  socketsClient: number;
  socketsServer: number;
}

export interface SoakResult {
  seconds: number;
  windows: number;
  connections: number;
  connectionErrors: number;
  connectionTimeouts: number;
  bursts: number;
  burstFlows: number;
  burstFailures: number;
  before: MemorySample;
  after: MemorySample;
  maxRssBytes: number;
  maxHeapUsedBytes: number;
  rssGrowthBytes: number;
  heapGrowthBytes: number;
  /** Least-squares trend of the samples, bytes per minute. */
  rssTrendBytesPerMin: number;
  heapTrendBytesPerMin: number;
  samples: MemorySample[];
}

export interface MemoryReport {
  startedAt: string;
  seconds: number;
  config: MemoryBenchConfig;
  hardware: Hardware;
  command: string;
  relay: string;
  pageSize: number;
  /** Open-files limits: the benchmark's own, the agent's, and what capped the flow count. */
  limits: {
    benchNofile: { soft: number; hard: number } | undefined;
    agentNofile: { soft: number; hard: number } | undefined;
    fdsPerFlowProbe: number;
    flowsThatFit: number;
    requestedFlows: number;
    measuredFlows: number;
    cappedBy: string | undefined;
  };
  /** Sysctls of the namespaces, as found (set: only the client's port range). */
  sysctls: Record<string, string>;
  samples: MemorySample[];
  perFlow: PerFlow;
  afterClose: { rssAboveBaselineBytes: number; heapAboveBaselineBytes: number; fdsAboveBaseline: number; agentTcpFlows: number };
  holdErrors: { established: number; errors: number; timeouts: number; peerClosed: number; errorKinds: Record<string, number> };
  soak: SoakResult | undefined;
  /**
   * perFlowRssMet is undefined when V8's heap reserve (total heap size less used) moved by more than
   * RSS_RESERVE_NOISE_BYTES between the baseline and the open sample: RSS per flow then measures
   * V8 growing or returning pages, not the flows (seen: -13.8 MiB, RSS "per flow" -1,347 B).
   */
  targets: { perFlowBytes: number; perFlowStateMet: boolean; perFlowRssMet: boolean | undefined; perFlowHeapMet: boolean; soakGrowthLimitBytes: number; soakMet: boolean | undefined };
  /** V8's heap reserve (total heap size less used) at the open sample minus at the baseline. */
  heapReserveChangeBytes: number;
  lab: string;
  failures: string[];
}

/** The issue's target: agent state per tracked flow. */
export const TARGET_BYTES_PER_FLOW = 512;
/** A move of V8's heap reserve between baseline and open beyond this voids the RSS-per-flow verdict (see MemoryReport.targets). */
export const RSS_RESERVE_NOISE_BYTES = 4 * 2 ** 20;
/**
 * "No growth" over the soak, as this benchmark judges it: RSS and heap after the soak at most
 * this much above before it (GC timing and allocator caches move a few MiB either way).
 */
export const SOAK_GROWTH_LIMIT_BYTES = 8 * 2 ** 20;

// ---------------------------------------------------------------------------------------------

/** Ports (the bench policies allow TCP 5100-5399): soak and warm-up transactions, held flows. */
const RR_PORTS = '5100-5131';
const HOLD_PORT_LO = 5200;
const HOLD_PORT_HI = 5399;
const CLIENT_PORT_RANGE = '10000 65535';
const AGENT_READY_TIMEOUT_MS = 180_000;
/** fds the agent keeps free beyond the measured need (listeners, the metrics scrape, logs...). */
const FD_RESERVE = 512;
/** Held connections per load-generator process: its own fd limit minus its other fds. */
const PROCESS_FD_RESERVE = 256;
const NOFILE_WANTED = 1_048_576;

/**
 * Preloaded into the agent (NODE_OPTIONS=--require): a full garbage collection on SIGUSR2, so
 * that each heap sample counts live objects, not the garbage a young generation of up to tens of
 * MiB happens to hold (which would swamp a few hundred bytes per flow). It changes nothing else:
 * the agent's code and flags are its own; the collection runs only when the benchmark samples.
 */
const GC_PRELOAD = `'use strict';
// netpold bench:memory: a full GC on SIGUSR2 (see bench/memory.ts).
const v8 = require('node:v8');
const vm = require('node:vm');
v8.setFlagsFromString('--expose-gc');
// Without this, V8 drops the bytecode of functions unused for a few collections: megabytes of
// start-up code released at an arbitrary point, which lands inside a measurement as a step
// bigger than thousands of flows. Kept, it is a constant (a few MiB) in every sample.
v8.setFlagsFromString('--no-flush-bytecode');
const gc = vm.runInNewContext('gc');
// 'last-resort': V8's memory-reducing full collection (several passes, freed pages returned at
// once), so that RSS does not depend on when V8 would have shrunk its heap by itself.
// The figures right after it go to gc-PID.json next to this file (written whole, then renamed).
const fs = require('node:fs');
const path = require('node:path');
let seq = 0;
process.on('SIGUSR2', () => {
  try {
    gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  } catch {
    gc();
  }
  const h = v8.getHeapStatistics();
  const m = process.memoryUsage();
  const out = path.join(__dirname, 'gc-' + process.pid + '.json');
  fs.writeFileSync(out + '.tmp', JSON.stringify({ seq: ++seq, heapUsed: h.used_heap_size, heapTotal: h.total_heap_size, external: m.external, arrayBuffers: m.arrayBuffers }));
  fs.renameSync(out + '.tmp', out);
});
`;

/** A settled sample takes at least this many post-GC readings, for at most this long. */
const SETTLE_MIN_READINGS = 6;
const SETTLE_MAX_MS = 45_000;
/** Seconds after the agent is ready before the baseline is taken (see where it is used). */
const BASELINE_MIN_AGE_S = 75;

interface GcReading {
  seq: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
}

function sleepMs(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** What the memory benchmark needs and is missing (empty when it can run). */
export function memoryBenchMissing(): string[] {
  const missing = [...labRequirementsMissing()];
  if (!cCompiler()) missing.push('a C compiler (cc)');
  if (!which('prlimit')) missing.push('prlimit (util-linux)');
  return missing;
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/**
 * Raises this process's open-files limit as far as the hard limit (and, with CAP_SYS_RESOURCE,
 * beyond it); children (the agent, the load generators) inherit it. Returns the limit in force.
 */
async function raiseOpenFilesLimit(): Promise<{ soft: number; hard: number } | undefined> {
  const r = await exec('prlimit', ['--pid', String(process.pid), `--nofile=${NOFILE_WANTED}:${NOFILE_WANTED}`]);
  if (r.code !== 0) {
    const cur = parseNofileLimit(readText(`/proc/${process.pid}/limits`));
    if (cur && cur.soft < cur.hard) await exec('prlimit', ['--pid', String(process.pid), `--nofile=${cur.hard}:${cur.hard}`]);
  }
  return parseNofileLimit(readText(`/proc/${process.pid}/limits`));
}

/** `ip netns exec` replaces itself with the command; if an iproute2 forked instead, its child is the agent. */
function execedPid(pid: number | undefined, needle: string): number | undefined {
  if (pid === undefined) return undefined;
  const cmd = (p: number): string => readText(`/proc/${p}/cmdline`);
  if (cmd(pid).includes(needle)) return pid;
  for (const c of readText(`/proc/${pid}/task/${pid}/children`).trim().split(/\s+/)) {
    if (c && cmd(Number(c)).includes(needle)) return Number(c);
  }
  return pid;
}

// ---------------------------------------------------------------------------------------------
// held connections: `loadgen hold` in the client namespace

interface HoldOut {
  mode: 'hold';
  pid: number;
  conns: number;
  established: number;
  setupS: number;
  ok: number;
  started: number;
  errors: number;
  timeouts: number;
  /** Timeouts before the handshake completed (the rest waited for the server's byte). */
  connectTimeouts: number;
  errorKinds: Record<string, number>;
}

interface HoldClosed {
  closed: true;
  held: number;
  peerClosed: number;
  heldS: number;
  reason: string;
}

const holds = new Set<ChildProcess>();

/** A `loadgen hold` process: its result once every connection is established or failed. */
class Hold {
  private constructor(
    private readonly child: ChildProcess,
    readonly out: HoldOut,
    private readonly lines: () => string,
    private readonly exited: Promise<void>,
  ) {}

  /**
   * Starts it and waits for its first line. Its stdin is a pipe from this process: if this
   * process dies, the hold ends and its connections close.
   */
  static start(netns: string, args: readonly string[], timeoutMs: number): Promise<Hold> {
    const child = spawn(which('ip') ?? 'ip', ['netns', 'exec', netns, loadgenBinary(), 'hold', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    holds.add(child);
    let out = '';
    let err = '';
    const exited = new Promise<void>((r) => child.on('close', () => (holds.delete(child), r())));
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (why: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(new Error(`loadgen hold ${args.join(' ')}: ${why}${err ? `: ${err.trim().slice(0, 500)}` : ''}`));
      };
      const timer = setTimeout(() => fail(`no result after ${timeoutMs} ms`), timeoutMs);
      child.stderr!.setEncoding('utf8').on('data', (d: string) => {
        if (err.length < 64 << 10) err += d;
      });
      child.stdout!.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        if (settled) return;
        const nl = out.indexOf('\n');
        if (nl < 0) return;
        try {
          const first = JSON.parse(out.slice(0, nl)) as HoldOut;
          if (first.mode !== 'hold') return fail(`unexpected first line ${out.slice(0, nl)}`);
          settled = true;
          clearTimeout(timer);
          resolve(new Hold(child, first, () => out, exited));
        } catch {
          fail(`unexpected first line ${out.slice(0, nl)}`);
        }
      });
      child.stdin!.on('error', () => undefined);
      child.on('error', (e) => fail(e.message));
      child.on('close', (code) => fail(`exited (${code})`));
    });
  }

  /** Closes every connection (the client first) and returns the final line. */
  async stop(timeoutMs = 30_000): Promise<HoldClosed | undefined> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.stdin!.end();
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
      await this.exited;
      clearTimeout(t);
    }
    const last = this.lines().trim().split('\n').pop() ?? '';
    try {
      const r = JSON.parse(last) as HoldClosed;
      return r.closed === true ? r : undefined;
    } catch {
      return undefined;
    }
  }
}

function killAllHolds(): void {
  for (const c of holds) c.kill('SIGKILL');
}

// ---------------------------------------------------------------------------------------------

class Aborted extends Error {
  constructor() {
    super('aborted');
  }
}

export interface MemoryBenchOptions {
  log?: (text: string) => void;
  signal?: AbortSignal;
  command?: string;
}

function labId(): string {
  return `m${Math.floor(Math.random() * 36 ** 6)
    .toString(36)
    .padStart(6, '0')}`;
}

export async function runMemoryBench(cfg: MemoryBenchConfig, opts: MemoryBenchOptions = {}): Promise<MemoryReport> {
  const log = opts.log ?? (() => undefined);
  const missing = memoryBenchMissing();
  if (missing.length > 0) throw new Error(`the memory benchmark needs ${missing.join(', ')}`);
  ensureLoadgen(log);
  const benchNofile = await raiseOpenFilesLimit();
  log(`memory: open-files limit of this process (inherited by the agent and the load generators): ${benchNofile?.soft}/${benchNofile?.hard}`);
  const started = Date.now();
  const startedAt = new Date().toISOString();
  const failures: string[] = [];
  const check = (): void => {
    if (opts.signal?.aborted) throw new Aborted();
  };
  const onAbort = (): void => {
    stopAllLoadgens();
    killAllHolds();
  };
  opts.signal?.addEventListener('abort', onAbort);
  const pageSize = Number((await exec('getconf', ['PAGESIZE'])).stdout.trim()) || 4096;

  const work = mkdtempSync(join(tmpdir(), 'netpold-memory-'));
  const id = labId();
  let agent: AgentProcess | undefined;
  const servers: LoadgenServer[] = [];
  const openHolds: Hold[] = [];
  try {
    const cluster = flowCluster(cfg.policies);
    const manifests = writeManifests(cluster.state, join(work, 'cluster'));
    const lab = await Lab.up({ id, state: cluster.labState, nodeName: BENCH_NODE, ports: [] });
    check();
    const nodeNs = lab.nodeNamespace;
    const clientNs = lab.podNamespace(`${CLIENT.namespace}/${CLIENT.name}`);
    const serverNs = lab.podNamespace(`${SERVER.namespace}/${SERVER.name}`);
    // Sysctls, all in namespaces this benchmark created: the ephemeral ports of the client and
    // of the node (more 4-tuples per server port; the agent's upstream connections take their
    // ports from the node's range and, closing first, hold them in TIME_WAIT as the client does
    // its own), and in the node the time conntrack keeps a closed TCP flow (TIME_WAIT, 120 s by
    // default) down to 10 s. The soak opens ~5,000 connections a second; each leaves conntrack
    // entries in the node (the client's leg and the agent's upstream leg), and the node's
    // table (262,144 entries, not resizable from inside a namespace) would be full within a
    // minute: new SYNs dropped, for kernel forwarding as for the agent, so the soak would
    // measure conntrack, not the agent. Seen before this was set: "nf_conntrack: table full"
    // and hold bursts timing out.
    await sysctls(clientNs, { 'net.ipv4.ip_local_port_range': CLIENT_PORT_RANGE });
    await sysctls(nodeNs, { 'net.netfilter.nf_conntrack_tcp_timeout_time_wait': 10, 'net.ipv4.ip_local_port_range': CLIENT_PORT_RANGE });
    const sysctlsFound = await readSysctls(lab, { node: nodeNs, client: clientNs, server: serverNs });

    const flowTableSize = Math.max(262_144, 2 ** Math.ceil(Math.log2(cfg.flows * 2)));
    // The same table as the agent's, built here for its size: allocated up front, so in the baseline.
    const allocated = new FlowTable(flowTableSize, 1000).allocatedBytes;
    const slotBytes = (allocated.arrayBuffers + allocated.entries) / flowTableSize;
    const agentArgs = ['--manifests', manifests, '--node-name', BENCH_NODE, '--flow-table-size', String(flowTableSize), '--log-level', 'info'];
    if (cfg.agentRelay) agentArgs.push('--relay', cfg.agentRelay);
    const preload = join(work, 'gc-preload.cjs');
    writeFileSync(preload, GC_PRELOAD);
    // AgentProcess.start passes this process's environment on: NODE_OPTIONS is set only for the
    // moment of the (synchronous) spawn, so that nothing else started later inherits it.
    const savedNodeOptions = process.env['NODE_OPTIONS'];
    process.env['NODE_OPTIONS'] = `${savedNodeOptions ?? ''} --require ${preload}`.trim();
    try {
      agent = AgentProcess.start(nodeNs, agentArgs);
    } finally {
      if (savedNodeOptions === undefined) delete process.env['NODE_OPTIONS'];
      else process.env['NODE_OPTIONS'] = savedNodeOptions;
    }
    await agent.waitFor((l) => l.msg === 'ready', AGENT_READY_TIMEOUT_MS);
    const relay = cfg.agentRelay ?? `${String(AGENT_OPTIONS.find((x) => x.name === 'relay')?.default)} (the agent's default)`;
    const agentPid = execedPid(agent.proc.pid, 'netpold');
    if (agentPid === undefined) throw new Error('the agent has no pid');
    const agentNofile = parseNofileLimit(readText(`/proc/${agentPid}/limits`));
    log(`memory: lab ${id}, agent pid ${agentPid} ready (relay ${relay}, open files ${agentNofile?.soft}/${agentNofile?.hard}), ${cluster.policies} policies`);
    const tReady = performance.now();

    const budgetS = Math.ceil(900 + cfg.soakSeconds * 1.5);
    servers.push(await startLoadgenServer(serverNs, ['--addr', SERVER.v4, '--rr-ports', RR_PORTS], budgetS));

    // ---- sampling
    const a = agent;
    let held = 0;
    /**
     * GET /metrics, retried: an agent whose event loop stalls for a while (seen under churn) is
     * a finding to report (failures, eventLoopLagS), not a reason to drop the run.
     */
    const scrape = async (): Promise<ReturnType<typeof parsePrometheus>> => {
      let why = '';
      for (let attempt = 1; attempt <= 5; attempt++) {
        const t0 = performance.now();
        try {
          const r = await a.get('/metrics', 20_000);
          if (r.status === 200) {
            if (attempt > 1) {
              const msg = `GET /metrics answered after ${attempt - 1} failed attempt(s) (${why}), ${Math.round(performance.now() - t0)} ms for the last`;
              failures.push(msg);
              log(`memory: ${msg}`);
            }
            return parsePrometheus(r.body);
          }
          why = `status ${r.status}: ${r.body.slice(0, 200)}`;
        } catch (e) {
          why = (e as Error).message.slice(0, 200);
        }
        check();
        log(`memory: GET /metrics failed (${why}), attempt ${attempt} of 5`);
        await sleepMs(3_000);
      }
      throw new Error(`GET /metrics failed 5 times: ${why}`);
    };
    const sockstat = async (ns: string): Promise<Sockstat> => parseSockstat((await lab.exec(ns, ['cat', '/proc/net/sockstat'])).stdout);
    let gcSeq = 0;
    /** Asks the agent for a full GC and reads what its preload wrote right after it. */
    const gcReading = async (): Promise<GcReading> => {
      const file = join(work, `gc-${agentPid}.json`);
      process.kill(agentPid, 'SIGUSR2');
      const deadline = Date.now() + 10_000;
      for (;;) {
        await sleepMs(100);
        try {
          const r = JSON.parse(readFileSync(file, 'utf8')) as GcReading;
          if (r.seq > gcSeq) {
            gcSeq = r.seq;
            return r;
          }
        } catch {
          // not written yet
        }
        if (Date.now() > deadline) throw new Error('the agent did not report a GC within 10 s (is it stalled?)');
      }
    };
    /**
     * One sample. `settle`: post-GC readings every second until RSS, heap size and heap used stop
     * moving (bounded): V8 returns freed pages some collections after load ends, and flushes the
     * bytecode of functions unused for several collections (at first, megabytes of start-up
     * code), so a single reading after a quiet period would mix those in. Heap figures are the
     * median of the last three readings.
     */
    const sample = async (label: string, settle = false): Promise<MemorySample> => {
      const readings: { gc: GcReading; rss: number }[] = [];
      const settleUntil = Date.now() + (settle ? SETTLE_MAX_MS : 0);
      const close = (p: { gc: GcReading; rss: number }, q: { gc: GcReading; rss: number }): boolean =>
        Math.abs(q.rss - p.rss) < 512 * 1024 && Math.abs(q.gc.heapTotal - p.gc.heapTotal) < 256 * 1024 && Math.abs(q.gc.heapUsed - p.gc.heapUsed) < 128 * 1024;
      for (;;) {
        const gc = await gcReading();
        readings.push({ gc, rss: parseProcStatus(readText(`/proc/${agentPid}/status`)).vmRss });
        const [a, b, c] = readings.slice(-3);
        const still = readings.length >= SETTLE_MIN_READINGS && a !== undefined && b !== undefined && c !== undefined && close(a, b) && close(b, c);
        if (!settle || still || Date.now() > settleUntil) break;
        await sleepMs(1_000);
      }
      const last3 = readings.slice(-3).map((r) => r.gc);
      const m = await scrape();
      const st = parseProcStatus(readText(`/proc/${agentPid}/status`));
      let fds = 0;
      try {
        fds = readdirSync(`/proc/${agentPid}/fd`).length;
      } catch {
        // gone: 0, and the next step fails on the agent
      }
      const [node, client, server] = await Promise.all([sockstat(nodeNs), sockstat(clientNs), sockstat(serverNs)]);
      const s: MemorySample = {
        label,
        t: Math.round((performance.now() - tReady) / 100) / 10,
        heldFlows: held,
        agentTcpFlows: promValue(m, 'netpold_flows_active', { protocol: 'tcp' }) ?? 0,
        rssBytes: st.vmRss,
        rssAnonBytes: st.rssAnon,
        rssFileBytes: st.rssFile,
        hwmBytes: st.vmHwm,
        threads: st.threads,
        fds,
        heapUsedBytes: median(last3.map((h) => h.heapUsed)),
        heapTotalBytes: median(last3.map((h) => h.heapTotal)),
        externalBytes: median(last3.map((h) => h.external)),
        scrapedHeapUsedBytes: promValue(m, 'nodejs_heap_size_used_bytes') ?? 0,
        mallocInUseBytes: promValue(m, 'netpold_native_malloc_in_use_bytes') ?? 0,
        gcReadings: readings.length,
        sockstat: { node, client, server },
        slabBytes: parseMeminfo(readText('/proc/meminfo'))['Slab'] ?? 0,
        eventLoopLagS: promValue(m, 'netpold_event_loop_lag_seconds') ?? 0,
        agentCounters: counters(m),
      };
      log(
        `memory: ${label.padEnd(14)} held ${fmt(s.heldFlows)}, agent tcp flows ${fmt(s.agentTcpFlows)}, RSS ${mib(s.rssBytes)} MiB, heap ${mib(s.heapUsedBytes)}/${mib(s.heapTotalBytes)} MiB, ` +
          `external ${mib(s.externalBytes)} MiB, fds ${s.fds}, loop lag ${fmt(s.eventLoopLagS)} s, sockets node/client/server ${node.tcpInuse}/${client.tcpInuse}/${server.tcpInuse}, TCP mem ${node.tcpMemPages} pages, slab ${mib(s.slabBytes)} MiB`,
      );
      return s;
    };
    /** Waits until the agent's TCP flows satisfy `ok` (its flow table is updated asynchronously). */
    const waitAgentFlows = async (ok: (n: number) => boolean, what: string, timeoutMs: number): Promise<number> => {
      const deadline = Date.now() + timeoutMs;
      let n = -1;
      for (;;) {
        check();
        n = promValue(await scrape(), 'netpold_flows_active', { protocol: 'tcp' }) ?? 0;
        if (ok(n)) return n;
        if (Date.now() > deadline) {
          failures.push(`${what}: the agent shows ${n} TCP flows after ${timeoutMs} ms`);
          log(`memory: ${what}: the agent shows ${n} TCP flows after ${timeoutMs} ms, going on`);
          return n;
        }
        await sleepMs(500);
      }
    };
    const holdErrors = { established: 0, errors: 0, timeouts: 0, peerClosed: 0, errorKinds: {} as Record<string, number> };
    const perProcess = Math.max(1_000, (benchNofile?.soft ?? 20_000) - PROCESS_FD_RESERVE);
    let portCursor = HOLD_PORT_LO;
    /** A server of its own (own ports) and a hold client for `n` concurrent flows. */
    const openFlows = async (n: number, ports: number): Promise<Hold> => {
      if (portCursor + ports - 1 > HOLD_PORT_HI) portCursor = HOLD_PORT_LO; // reused only after the previous server on them stopped
      const list = `${portCursor}-${portCursor + ports - 1}`;
      portCursor += ports;
      const srv = await startLoadgenServer(serverNs, ['--addr', SERVER.v4, '--hold-ports', list], budgetS);
      servers.push(srv);
      const h = await Hold.start(
        clientNs,
        ['--addr', SERVER.v4, '--ports', list, '--conns', String(n), '--concurrency', String(cfg.holdConcurrency), '--timeout-ms', '15000', '--max-seconds', String(budgetS)],
        60_000 + n * 5,
      );
      (h as Hold & { server?: LoadgenServer }).server = srv;
      openHolds.push(h);
      held += h.out.established;
      holdErrors.established += h.out.established;
      holdErrors.errors += h.out.errors;
      holdErrors.timeouts += h.out.timeouts;
      for (const [k, v] of Object.entries(h.out.errorKinds)) holdErrors.errorKinds[k] = (holdErrors.errorKinds[k] ?? 0) + v;
      if (h.out.established < n) {
        const msg = `hold of ${n} flows: ${h.out.established} established, ${h.out.errors} errors ${JSON.stringify(h.out.errorKinds)}, ${h.out.timeouts} timeouts (${h.out.connectTimeouts} before the handshake)`;
        failures.push(msg);
        log(`memory: ${msg}`);
      }
      return h;
    };
    const closeAll = async (): Promise<void> => {
      for (const h of openHolds.splice(0)) {
        const r = await h.stop();
        if (r) holdErrors.peerClosed += r.peerClosed;
        const srv = (h as Hold & { server?: LoadgenServer }).server;
        if (srv) {
          await srv.stop();
          servers.splice(servers.indexOf(srv), 1);
        }
      }
      held = 0;
    };

    const samples: MemorySample[] = [];
    samples.push(await sample('idle', true));

    // ---- warm-up: first-use costs (code paths, pools) out of the baseline, and fds per flow
    const warm = await runLoadgen<RateOut>(clientNs, ['rate', '--addr', SERVER.v4, '--ports', RR_PORTS, '--conns', '16', '--duration', cfg.quick ? '0.5' : '1', '--timeout-ms', '2000'], 30_000);
    if (warm.ok === 0) throw new Error(`no connection succeeded through the agent in the warm-up (${JSON.stringify(warm.errorKinds)}, ${warm.timeouts} timeouts)`);
    await waitAgentFlows((n) => n === 0, 'warm-up drain', 30_000);
    const beforeProbe = await sample('warm');
    samples.push(beforeProbe);
    const probeN = Math.min(cfg.probeFlows, perProcess);
    await openFlows(probeN, 8);
    await waitAgentFlows((n) => n >= held, 'probe', 30_000);
    const probe = await sample('probe');
    samples.push(probe);
    const fdsPerFlowProbe = probe.heldFlows > 0 ? (probe.fds - beforeProbe.fds) / probe.heldFlows : 0;
    await closeAll();
    await waitAgentFlows((n) => n === 0, 'probe close', 60_000);
    // Some tens of seconds after start the agent's heap drops by a few MiB once (seen between 25
    // and 45 s after ready, with or without load: a one-time release of start-up memory). It
    // must fall before the baseline, not between two stages: collections every 2 s until then.
    while ((performance.now() - tReady) / 1000 < BASELINE_MIN_AGE_S) {
      check();
      await gcReading();
      await sleepMs(2_000);
    }
    const baseline = await sample('baseline', true);
    samples.push(baseline);
    check();

    // ---- N concurrent flows, in stages
    const soft = agentNofile?.soft ?? Number.POSITIVE_INFINITY;
    // 5% above the probe's ratio: pools and per-flow costs are not exactly linear.
    const fit = flowsThatFit(soft, baseline.fds, fdsPerFlowProbe * 1.05, FD_RESERVE);
    const measuredFlows = Math.min(cfg.flows, fit);
    let cappedBy: string | undefined;
    if (measuredFlows < cfg.flows) {
      cappedBy =
        `the agent's open-files limit: ${soft} (hard ${agentNofile?.hard}; raising it needs CAP_SYS_RESOURCE, which this process does not have), ` +
        `${baseline.fds} fds open at the baseline, ${round2(fdsPerFlowProbe)} fds per flow measured (relay ${relay}): ${fit} flows fit with a reserve of ${FD_RESERVE}`;
      log(`memory: ${cfg.flows} flows asked for, ${measuredFlows} measured: capped by ${cappedBy}`);
    }
    if (measuredFlows < 1) throw new Error(`no flow fits in the agent's open-files limit (${cappedBy})`);
    portCursor = HOLD_PORT_LO; // every hold server is stopped: the stages share the whole range
    const stages = splitEven(measuredFlows, Math.max(cfg.stages, Math.ceil(measuredFlows / perProcess)));
    const portsPerStage = Math.max(1, Math.floor((HOLD_PORT_HI - HOLD_PORT_LO + 1) / stages.length));
    const stageSamples: MemorySample[] = [];
    for (const [i, n] of stages.entries()) {
      check();
      const t0 = performance.now();
      const h = await openFlows(n, portsPerStage);
      const want = held;
      const got = await waitAgentFlows((x) => x >= want, `stage ${i + 1}`, 60_000 + n);
      log(`memory: stage ${i + 1}/${stages.length}: ${h.out.established} flows established in ${h.out.setupS} s (agent: ${got}; ${Math.round(performance.now() - t0)} ms with the wait)`);
      await sleepMs(2_000);
      const s = await sample(i === stages.length - 1 ? 'open' : `stage ${i + 1}`, i === stages.length - 1);
      samples.push(s);
      stageSamples.push(s);
    }
    const open = stageSamples[stageSamples.length - 1]!;
    const n = open.heldFlows;
    const pts = (f: (s: MemorySample) => number): [number, number][] => [[0, f(baseline)], ...stageSamples.map((s): [number, number] => [s.heldFlows, f(s)])];
    const perFlowResult: PerFlow = {
      flows: n,
      rssBytes: perFlow(baseline.rssBytes, open.rssBytes, n),
      rssSlopeBytes: slope(pts((s) => s.rssBytes)),
      rssAnonBytes: perFlow(baseline.rssAnonBytes, open.rssAnonBytes, n),
      heapUsedBytes: perFlow(baseline.heapUsedBytes, open.heapUsedBytes, n),
      heapSlopeBytes: slope(pts((s) => s.heapUsedBytes)),
      externalBytes: perFlow(baseline.externalBytes, open.externalBytes, n),
      mallocInUseBytes: perFlow(baseline.mallocInUseBytes, open.mallocInUseBytes, n),
      stateBytes: perFlow(baseline.heapUsedBytes + baseline.mallocInUseBytes, open.heapUsedBytes + open.mallocInUseBytes, n),
      tableSlotBytes: slotBytes,
      stateWithSlotBytes: perFlow(baseline.heapUsedBytes + baseline.mallocInUseBytes, open.heapUsedBytes + open.mallocInUseBytes, n) + slotBytes,
      fds: perFlow(baseline.fds, open.fds, n),
      socketBufferBytes: perFlow(baseline.sockstat.node.tcpMemPages, open.sockstat.node.tcpMemPages, n) * pageSize,
      kernelSlabBytes: perFlow(baseline.slabBytes, open.slabBytes, n),
      socketsNode: perFlow(baseline.sockstat.node.tcpInuse, open.sockstat.node.tcpInuse, n),
      socketsClient: perFlow(baseline.sockstat.client.tcpInuse, open.sockstat.client.tcpInuse, n),
      socketsServer: perFlow(baseline.sockstat.server.tcpInuse, open.sockstat.server.tcpInuse, n),
    };
    // V8's reserve: total heap size less what is used (the flows' own heap is in "used").
    const reserveChange = open.heapTotalBytes - open.heapUsedBytes - (baseline.heapTotalBytes - baseline.heapUsedBytes);
    log(
      `memory: per flow at ${fmt(n)} flows: state ${fmt(perFlowResult.stateWithSlotBytes)} B with its table slot of ${fmt(perFlowResult.tableSlotBytes)} (heap ${fmt(perFlowResult.heapUsedBytes)} + malloc ${fmt(perFlowResult.mallocInUseBytes)}), ` +
        `RSS ${fmt(perFlowResult.rssBytes)} B (slope ${fmt(perFlowResult.rssSlopeBytes)}), ` +
        `external ${fmt(perFlowResult.externalBytes)} B, ${round2(perFlowResult.fds)} fds; kernel: socket buffers ${fmt(perFlowResult.socketBufferBytes)} B, slab ${fmt(perFlowResult.kernelSlabBytes)} B`,
    );

    // ---- close them all
    await closeAll();
    await waitAgentFlows((x) => x === 0, 'close', 120_000);
    await sleepMs(3_000);
    const closed = await sample('closed', true);
    samples.push(closed);
    check();

    // ---- soak
    let soak: SoakResult | undefined;
    if (cfg.soakSeconds > 0) soak = await runSoak(cfg, { clientNs, sample, waitAgentFlows, openFlows, closeAll, check, log });

    const growthOk = soak ? soak.rssGrowthBytes <= SOAK_GROWTH_LIMIT_BYTES && soak.heapGrowthBytes <= SOAK_GROWTH_LIMIT_BYTES : undefined;
    return {
      startedAt,
      seconds: Math.round((Date.now() - started) / 100) / 10,
      config: cfg,
      hardware: hardware(),
      command: opts.command ?? '',
      relay,
      pageSize,
      limits: { benchNofile, agentNofile, fdsPerFlowProbe: round2(fdsPerFlowProbe), flowsThatFit: fit, requestedFlows: cfg.flows, measuredFlows: n, cappedBy },
      sysctls: sysctlsFound,
      samples: [...samples, ...(soak ? soak.samples : [])],
      perFlow: perFlowResult,
      heapReserveChangeBytes: reserveChange,
      afterClose: {
        rssAboveBaselineBytes: closed.rssBytes - baseline.rssBytes,
        heapAboveBaselineBytes: closed.heapUsedBytes - baseline.heapUsedBytes,
        fdsAboveBaseline: closed.fds - baseline.fds,
        agentTcpFlows: closed.agentTcpFlows,
      },
      holdErrors,
      soak,
      targets: {
        perFlowBytes: TARGET_BYTES_PER_FLOW,
        perFlowStateMet: perFlowResult.stateWithSlotBytes <= TARGET_BYTES_PER_FLOW,
        perFlowRssMet: Math.abs(reserveChange) > RSS_RESERVE_NOISE_BYTES ? undefined : perFlowResult.rssBytes <= TARGET_BYTES_PER_FLOW,
        perFlowHeapMet: perFlowResult.heapUsedBytes <= TARGET_BYTES_PER_FLOW,
        soakGrowthLimitBytes: SOAK_GROWTH_LIMIT_BYTES,
        soakMet: growthOk,
      },
      lab: id,
      failures,
    };
  } catch (e) {
    if (e instanceof Aborted || opts.signal?.aborted) throw new Error('memory benchmark aborted (the lab it built was removed)');
    throw new Error(`${(e as Error).message}${agentHint(agent)}`);
  } finally {
    // Teardown, also after a failure or an abort: held connections, servers, the agent (it
    // removes its own table and routes), then every namespace of the lab.
    for (const h of openHolds) await h.stop(5_000).catch(() => undefined);
    killAllHolds();
    for (const s of servers) await s.stop().catch(() => undefined);
    await agent?.stop().catch(() => undefined);
    try {
      await Lab.downById(id);
    } catch (e) {
      log(`memory: teardown of lab ${id} failed: ${(e as Error).message}`);
    }
    opts.signal?.removeEventListener('abort', onAbort);
    rmSync(work, { recursive: true, force: true });
  }
}

interface SoakCtx {
  clientNs: string;
  sample: (label: string, settle?: boolean) => Promise<MemorySample>;
  waitAgentFlows: (ok: (n: number) => boolean, what: string, timeoutMs: number) => Promise<number>;
  openFlows: (n: number, ports: number) => Promise<Hold>;
  closeAll: () => Promise<void>;
  check: () => void;
  log: (t: string) => void;
}

/** Opening and closing flows for cfg.soakSeconds: rate windows, each followed by a burst of concurrent flows. */
async function runSoak(cfg: MemoryBenchConfig, c: SoakCtx): Promise<SoakResult> {
  const before = await c.sample('soak start', true);
  const samples: MemorySample[] = [before];
  const t0 = performance.now();
  const elapsed = (): number => (performance.now() - t0) / 1000;
  let lastSample = 0;
  let windows = 0;
  let connections = 0;
  let connectionErrors = 0;
  let connectionTimeouts = 0;
  let bursts = 0;
  let burstFlows = 0;
  let burstFailures = 0;
  while (elapsed() < cfg.soakSeconds) {
    c.check();
    const w = Math.min(cfg.soakWindowS, Math.max(0.2, cfg.soakSeconds - elapsed()));
    const r = await runLoadgen<RateOut>(c.clientNs, ['rate', '--addr', SERVER.v4, '--ports', RR_PORTS, '--conns', String(cfg.soakConns), '--duration', w.toFixed(2), '--timeout-ms', '2000'], Math.ceil(w * 1000) + 30_000);
    windows++;
    connections += r.ok + r.lateOk;
    connectionErrors += r.errors;
    connectionTimeouts += r.timeouts;
    if (cfg.soakBurst > 0 && elapsed() < cfg.soakSeconds) {
      const h = await c.openFlows(cfg.soakBurst, 8);
      bursts++;
      burstFlows += h.out.established;
      burstFailures += h.out.errors + h.out.timeouts;
      await c.closeAll();
    }
    if (elapsed() - lastSample >= cfg.sampleEveryS) {
      lastSample = elapsed();
      samples.push(await c.sample(`soak ${Math.round(elapsed())} s`));
    }
  }
  const seconds = elapsed();
  c.log(`memory: soak: ${windows} windows, ${fmt(connections)} connections (${connectionErrors} errors, ${connectionTimeouts} timeouts), ${bursts} bursts of ${cfg.soakBurst} concurrent flows in ${Math.round(seconds)} s`);
  await c.waitAgentFlows((n) => n === 0, 'soak drain', 60_000);
  await sleepMs(3_000);
  const after = await c.sample('soak end', true);
  samples.push(after);
  const mins = (s: MemorySample): number => (s.t - before.t) / 60;
  return {
    seconds: Math.round(seconds * 10) / 10,
    windows,
    connections,
    connectionErrors,
    connectionTimeouts,
    bursts,
    burstFlows,
    burstFailures,
    before,
    after,
    maxRssBytes: Math.max(...samples.map((s) => s.rssBytes)),
    maxHeapUsedBytes: Math.max(...samples.map((s) => s.heapUsedBytes)),
    rssGrowthBytes: after.rssBytes - before.rssBytes,
    heapGrowthBytes: after.heapUsedBytes - before.heapUsedBytes,
    rssTrendBytesPerMin: Math.round(slope(samples.map((s): [number, number] => [mins(s), s.rssBytes]))),
    heapTrendBytesPerMin: Math.round(slope(samples.map((s): [number, number] => [mins(s), s.heapUsedBytes]))),
    samples: samples.slice(1),
  };
}

/** The agent's last warnings and errors (and its stderr), for a failure message. */
function agentHint(agent: AgentProcess | undefined): string {
  if (!agent) return '';
  const bad = agent.lines.filter((l) => l.level === 'warn' || l.level === 'error' || l.level === 'fatal' || (typeof l.level === 'number' && l.level >= 40)).slice(-5);
  const alive = agent.proc.exitCode === null && agent.proc.signalCode === null;
  return `; agent ${alive ? 'running' : `exited (${agent.proc.exitCode ?? agent.proc.signalCode})`}, last warnings: ${JSON.stringify(bad).slice(0, 1500)}; stderr: ${agent.stderr.join('').slice(-800)}`;
}

function counters(m: ReturnType<typeof parsePrometheus>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of m) if (s.name.startsWith('netpold_') && s.name.endsWith('_total')) out[s.name] = (out[s.name] ?? 0) + s.value;
  return out;
}

async function readSysctls(lab: Lab, nss: Record<string, string>): Promise<Record<string, string>> {
  const keys = ['net.ipv4.ip_local_port_range', 'net.ipv4.tcp_mem', 'net.ipv4.tcp_max_tw_buckets', 'net.core.somaxconn', 'net.netfilter.nf_conntrack_max', 'net.netfilter.nf_conntrack_count'];
  const out: Record<string, string> = {};
  for (const [role, ns] of Object.entries(nss)) {
    for (const k of keys) {
      const r = await lab.exec(ns, ['cat', `/proc/sys/${k.replace(/\./g, '/')}`]);
      out[`${role}: ${k}`] = r.code === 0 ? r.stdout.trim().replace(/\s+/g, ' ') : '(absent)';
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Markdown

function mib(b: number): string {
  return (b / 2 ** 20).toFixed(1);
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

function bytes(b: number): string {
  return `${fmt(Math.round(b))} B`;
}

export function formatMemoryMarkdown(r: MemoryReport): string {
  const out: string[] = [];
  const p = r.perFlow;
  out.push(
    `Agent relay \`${r.relay}\`, ${r.config.policies} policies; ${hardwareLine(r.hardware)}. ` +
      `Requested ${fmt(r.limits.requestedFlows)} concurrent flows, measured at **${fmt(r.limits.measuredFlows)}**` +
      (r.limits.cappedBy ? ` (capped by ${r.limits.cappedBy})` : '') +
      '.',
    '',
    '**Per tracked flow** (at the measured count, against the baseline after warm-up; the slope is over the opening stages):',
    '',
    table([
      ['measure', 'per flow', `target ≤ ${r.targets.perFlowBytes} B`],
      ['**agent state with its flow-table slot** (the two rows below)', bytes(p.stateWithSlotBytes), r.targets.perFlowStateMet ? 'met' : 'not met'],
      ['agent state: JS heap used + malloc in use, above the baseline', bytes(p.stateBytes), ''],
      ['flow-table slot, allocated at start (in the baseline)', bytes(p.tableSlotBytes), ''],
      [
        'agent RSS (VmRSS): state and allocator reserve',
        bytes(p.rssBytes),
        r.targets.perFlowRssMet === undefined ? `n/a: V8's heap reserve moved ${mib(r.heapReserveChangeBytes)} MiB` : r.targets.perFlowRssMet ? 'met' : 'not met',
      ],
      ['agent RSS, slope over the stages', bytes(p.rssSlopeBytes), ''],
      ['agent RssAnon', bytes(p.rssAnonBytes), ''],
      ['agent JS heap used (after a full GC)', bytes(p.heapUsedBytes), r.targets.perFlowHeapMet ? 'met' : 'not met'],
      ['agent JS heap used, slope', bytes(p.heapSlopeBytes), ''],
      ['agent malloc in use (native engine, Node, ArrayBuffers)', bytes(p.mallocInUseBytes), ''],
      ['agent external memory (ArrayBuffers, part of malloc)', bytes(p.externalBytes), ''],
      ['agent open fds', String(round2(p.fds)), ''],
      ['kernel: TCP socket buffers, all ends (sockstat mem, machine-wide)', bytes(p.socketBufferBytes), 'separate'],
      ['kernel: slab, all ends of the flow (machine-wide)', bytes(p.kernelSlabBytes), 'separate'],
      ['TCP sockets in use: node / client / server namespace', `${round2(p.socketsNode)} / ${round2(p.socketsClient)} / ${round2(p.socketsServer)}`, ''],
    ]),
    '',
    `After closing them all: RSS ${mib(r.afterClose.rssAboveBaselineBytes)} MiB above the baseline, heap ${mib(r.afterClose.heapAboveBaselineBytes)} MiB, ` +
      `${r.afterClose.fdsAboveBaseline} fds, ${r.afterClose.agentTcpFlows} TCP flows left in the agent. ` +
      `Held connections (all holds: probe, stages and soak bursts): ${fmt(r.holdErrors.established)} established, ${r.holdErrors.errors} errors, ${r.holdErrors.timeouts} timeouts, ${r.holdErrors.peerClosed} closed by the other side.`,
  );
  if (r.soak) {
    const s = r.soak;
    out.push(
      '',
      `**Soak**: ${Math.round(s.seconds)} s of opening and closing flows: ${s.windows} windows of new connections (${r.config.soakConns} parallel), ` +
        `${fmt(s.connections)} connections (${s.connectionErrors} errors, ${s.connectionTimeouts} timeouts), and ${s.bursts} bursts of ${fmt(r.config.soakBurst)} concurrent flows ` +
        `(${fmt(s.burstFlows)} established, ${s.burstFailures} failed).`,
      '',
      table([
        ['', 'before', 'after', 'max', 'growth', 'trend / min'],
        ['agent RSS, MiB', mib(s.before.rssBytes), mib(s.after.rssBytes), mib(s.maxRssBytes), mib(s.rssGrowthBytes), `${fmt(s.rssTrendBytesPerMin / 1024)} KiB`],
        ['agent JS heap used, MiB', mib(s.before.heapUsedBytes), mib(s.after.heapUsedBytes), mib(s.maxHeapUsedBytes), mib(s.heapGrowthBytes), `${fmt(s.heapTrendBytesPerMin / 1024)} KiB`],
        ['agent malloc in use, MiB', mib(s.before.mallocInUseBytes), mib(s.after.mallocInUseBytes), '', mib(s.after.mallocInUseBytes - s.before.mallocInUseBytes), ''],
        ['agent open fds', String(s.before.fds), String(s.after.fds), '', String(s.after.fds - s.before.fds), ''],
      ]),
      '',
      `No growth (after ≤ before + ${mib(r.targets.soakGrowthLimitBytes)} MiB, RSS and heap): ${r.targets.soakMet ? 'met' : 'not met'}.`,
    );
  }
  out.push(
    '',
    '**Samples** (heap: right after a full GC in the agent; at idle, baseline, open, closed, soak start and end the sample waits until RSS and heap size settle, and takes the median of the last 3 readings; "scraped": /metrics, garbage included):',
    '',
    table([
      ['step', 't, s', 'held flows', 'agent TCP flows', 'RSS MiB', 'RssAnon MiB', 'heap used MiB', 'heap total MiB', 'scraped heap MiB', 'external MiB', 'malloc MiB', 'fds', 'sockets node/client/server', 'TCP mem pages', 'slab MiB'],
      ...r.samples.map((s) => [
        s.label,
        String(s.t),
        fmt(s.heldFlows),
        fmt(s.agentTcpFlows),
        mib(s.rssBytes),
        mib(s.rssAnonBytes),
        mib(s.heapUsedBytes),
        mib(s.heapTotalBytes),
        mib(s.scrapedHeapUsedBytes),
        mib(s.externalBytes),
        mib(s.mallocInUseBytes),
        String(s.fds),
        `${s.sockstat.node.tcpInuse}/${s.sockstat.client.tcpInuse}/${s.sockstat.server.tcpInuse}`,
        String(s.sockstat.node.tcpMemPages),
        mib(s.slabBytes),
      ]),
    ]),
    '',
    `Open-files limits: this process ${r.limits.benchNofile?.soft}/${r.limits.benchNofile?.hard}, the agent ${r.limits.agentNofile?.soft}/${r.limits.agentNofile?.hard}; ` +
      `${r.limits.fdsPerFlowProbe} agent fds per flow in the probe; ${fmt(r.limits.flowsThatFit)} flows fit.`,
    '',
    `Sysctls found: ${Object.entries(r.sysctls)
      .map(([k, v]) => `${k} = ${v}`)
      .join('; ')}.`,
  );
  const last = r.samples[r.samples.length - 1];
  if (last) {
    const interesting = Object.entries(last.agentCounters).filter(([k, v]) => v > 0 && /error|refus|evict|closed_by|dropped/.test(k));
    out.push('', `Agent counters at the end: ${interesting.length === 0 ? 'no errors, refusals or evictions' : interesting.map(([k, v]) => `${k} ${fmt(v)}`).join(', ')}.`);
  }
  if (r.failures.length > 0) out.push('', 'Problems:', ...r.failures.map((f) => `- ${f}`));
  out.push('', `Command: \`${r.command}\`; ${r.startedAt}, ${r.seconds} s.`);
  return out.join('\n');
}
