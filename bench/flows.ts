// The flow benchmark: real traffic through a lab node in three modes, interleaved in rounds.
//
//   none    no enforcement: plain forwarding through the node namespace;
//   kernel  the same policies compiled with renderNftEnforcement loaded into the node namespace;
//   agent   the real `netpold agent` in the node namespace (TPROXY, userspace relay).
//
// For each policy size (the cluster of bench/flow-cluster.ts: 2 real pods, the rest virtual) and
// each round, the modes run in turn (none kernel agent none kernel agent ...), each on a FRESH
// lab (new namespaces: no TIME_WAIT, conntrack or agent flow left over from another mode). In
// each run, after a short warm-up on ports of its own, the C load generator (bench/c/loadgen.c)
// measures, client pod -> server pod:
//   rate      new TCP connections/s, N parallel (connect, request, whole reply, client closes first)
//   latency   connect (handshake) and connect -> reply latency at a fixed moderate rate
//   stream    throughput of 1 and of several TCP streams, and CPU seconds per GB (1 stream)
//   udpflows  new UDP flows/s (each from a new source port: request, echo, close)
//   udpdgram  echoed datagrams/s on a few established UDP flows
// Each phase uses its own server ports, so no 4-tuple is reused between phases; each run has its
// own client namespace, so no source port is reused between modes or rounds.
//
// Two yardstick modes, only when asked for (`--modes`): the smallest TPROXY relay we could write
// (bench/c/relay.c, no policy, no JavaScript) in the node namespace instead of the agent, so the
// agent's distance to the kernel splits into what terminating the connection costs and what the
// agent adds:
//   relay    the C relay with splice(2) through a pipe per direction, on one epoll thread;
//   sockmap  the C relay handing both sockets to a BPF sockhash whose sk_skb verdict program
//            redirects every skb to the peer (an experiment: not byte-exact at close).
// They relay TCP only: their UDP phases are not run (the UDP rows say n/a).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentProcess } from '../src/lab/agent-process.js';
import { Lab } from '../src/lab/lab.js';
import { exec, labRequirementsMissing, sysctls } from '../src/lab/sys.js';
import { compile } from '../src/policy/compile.js';
import { renderNftEnforcement } from '../src/policy/nft-target.js';
import { BENCH_NODE, CLIENT, SERVER, flowCluster, writeManifests, type FlowCluster } from './flow-cluster.js';
import { hardware, type Hardware } from './hardware.js';
import { parsePrometheus, promValue } from './procfs.js';
import {
  cCompiler,
  ensureCProgram,
  ensureLoadgen,
  runLoadgen,
  startLoadgenServer,
  startRelay,
  stopAllLoadgens,
  type LoadgenServer,
  type CpuTicks,
  type Hist,
  type LatencyOut,
  type RateOut,
  type StreamOut,
  type UdpDgramOut,
  type UdpFlowsOut,
} from './loadgen.js';

export type Mode = 'none' | 'kernel' | 'agent' | 'relay' | 'sockmap';
/** The default modes (bench:flows and bench). */
export const MODES: readonly Mode[] = ['none', 'kernel', 'agent'];
/** Every mode `--modes` accepts: the defaults and the two yardstick relays. */
export const ALL_MODES: readonly Mode[] = [...MODES, 'relay', 'sockmap'];
/** Modes that relay TCP only (their UDP phases are skipped). */
const TCP_ONLY_MODES: ReadonlySet<Mode> = new Set(['relay', 'sockmap']);
/** The yardstick relay's listening port in the node namespace (127.0.0.1). */
const RELAY_PORT = 15001;
/** The yardstick relay's mark and routing table (the agent's are not in the same lab). */
const RELAY_MARK = 0x2000;
const RELAY_TABLE = 4243;

export interface FlowBenchConfig {
  /** Policy counts. */
  sizes: number[];
  /** The agent's TCP relay (`--relay`): splice (in the kernel, the agent's default) or js. */
  agentRelay?: 'js' | 'splice';
  /** Pods on a Linux bridge (Flannel style) instead of routed veths (Calico style). */
  bridge?: boolean;
  rounds: number;
  modes: Mode[];
  /** Per-run warm-up load before measuring (rate, stream and UDP flows on their own ports). */
  warmupS: number;
  rate: { seconds: number; conns: number };
  latency: { seconds: number; rate: number };
  stream: { seconds: number; warmupS: number; streams: number };
  udpFlows: { seconds: number; conns: number };
  udpDgram: { seconds: number; warmupS: number; flows: number; window: number; size: number };
  /** Per-connection / per-flow timeout of the load generator. */
  timeoutMs: number;
}

export const FULL_CONFIG: FlowBenchConfig = {
  sizes: [10, 1_000, 10_000],
  rounds: 5,
  modes: [...MODES],
  warmupS: 0.5,
  rate: { seconds: 2, conns: 64 },
  latency: { seconds: 2, rate: 500 },
  stream: { seconds: 2, warmupS: 0.5, streams: 4 },
  udpFlows: { seconds: 1.5, conns: 64 },
  udpDgram: { seconds: 1.5, warmupS: 0.3, flows: 4, window: 32, size: 64 },
  timeoutMs: 2_000,
};

export const QUICK_CONFIG: FlowBenchConfig = {
  sizes: [10],
  rounds: 2,
  modes: [...MODES],
  warmupS: 0.2,
  rate: { seconds: 0.5, conns: 32 },
  latency: { seconds: 0.5, rate: 300 },
  stream: { seconds: 0.6, warmupS: 0.2, streams: 4 },
  udpFlows: { seconds: 0.4, conns: 32 },
  udpDgram: { seconds: 0.4, warmupS: 0.1, flows: 4, window: 32, size: 64 },
  timeoutMs: 2_000,
};

/** Server ports per phase (all inside the ranges the bench policies allow). */
const PORTS = {
  rate: '5100-5131',
  warmRate: '5140-5143',
  latency: '5200-5203',
  stream1: '5300',
  streamN: '5301',
  warmStream: '5302',
  udpFlows: '5400-5407',
  warmUdp: '5408',
  udpDgram: '5410-5413',
} as const;
const SERVER_ARGS = ['--addr', SERVER.v4, '--rr-ports', '5100-5131,5140-5143,5200-5203', '--bulk-ports', '5300-5302', '--udp-ports', '5400-5408,5410-5413'];
/** The client namespace's ephemeral range (TCP and the UDP datagram flows). */
const CLIENT_PORT_RANGE = '10000 65535';
/**
 * Explicit UDP source ports: new flows (2,000 ports × 8 server ports: at most 16,000 flows per
 * run), and the warm-up's (at most 1,000). The agent holds one socket per live UDP flow, and the
 * hard open-files limit of the machine this was written on is 20,000 (no CAP_SYS_RESOURCE to
 * raise it): more flows than that alive at once would measure EMFILE, not the agent.
 */
const UDP_SPORTS = { lo: 20_000, hi: 21_999 };
const UDP_WARM_SPORTS = { lo: 10_000, hi: 10_999 };
/** A pause before the datagram phase, in every mode: the agent's new-flow phase flows expire (--udp-idle-ms). */
const UDP_SETTLE_MS = 2_500;
const AGENT_ARGS = ['--node-name', BENCH_NODE, '--flow-table-size', '262144', '--udp-idle-ms', '2000', '--log-level', 'info'];
const KERNEL_TABLE = 'netpold_bench';
const AGENT_READY_TIMEOUT_MS = 180_000;
const NFT_LOAD_TIMEOUT_MS = 180_000;
/** The agent and the lab processes inherit this open-files limit (a DaemonSet would have one as high). */
const NOFILE = 1_048_576;

// ---------------------------------------------------------------------------------------------
// results

/** One run (one mode, one round, one size). */
export interface RunMetrics {
  connPerSec: number;
  rateErrors: number;
  rateTimeouts: number;
  txnP50Us: number;
  txnP99Us: number;
  connectP50Us: number;
  connectP99Us: number;
  firstReplyP50Us: number;
  firstReplyP99Us: number;
  latencyErrors: number;
  latencyTimeouts: number;
  streamGbps: number;
  streamsGbps: number;
  streamErrors: number;
  cpuSecPerGB: number;
  agentCpuSecPerGB: number;
  sysSoftirqCpuSecPerGB: number;
  machineCpuSecPerGB: number;
  udpFlowsPerSec: number;
  udpFlowErrors: number;
  udpFlowTimeouts: number;
  udpDgramsPerSec: number;
  udpDgramRefills: number;
  /** Agent only (0 otherwise): system calls of the native engine per accepted connection in the rate window. */
  syscallsPerConn: number;
  /** Agent only: the agent process's CPU time (all threads) per connection in the rate window, µs. */
  agentCpuUsPerConn: number;
  /** Agent only: UDP datagrams relayed per recvmmsg/sendmmsg call in the datagram window. */
  udpDgramsPerIoCall: number;
  errors: number;
  setupS: number;
}

export interface Spread {
  min: number;
  q1: number;
  median: number;
  q3: number;
  max: number;
}

/** Medians over the rounds of one mode at one size, with their spread. */
export interface ModeResult {
  policies: number;
  rounds: number;
  connPerSec: number;
  connectP50Us: number;
  connectP99Us: number;
  firstReplyP50Us: number;
  firstReplyP99Us: number;
  txnP50Us: number;
  txnP99Us: number;
  streamGbps: number;
  streamsGbps: number;
  cpuSecPerGB: number;
  agentCpuSecPerGB: number;
  sysSoftirqCpuSecPerGB: number;
  machineCpuSecPerGB: number;
  udpFlowsPerSec: number;
  udpDgramsPerSec: number;
  syscallsPerConn: number;
  agentCpuUsPerConn: number;
  udpDgramsPerIoCall: number;
  /** Errors and timeouts of every phase, summed over the measured rounds. */
  errors: number;
  errorBreakdown: Record<string, number>;
  setupS: number;
  spread: Record<string, Spread>;
  /** Latency distributions summed over the rounds: [bucket upper bound in µs, count]. */
  hist: { connect: Hist; firstReply: Hist; txn: Hist; udpFlow: Hist };
}

export interface SizeResult {
  policies: number;
  pods: number;
  namespaces: number;
  nftRulesetBytes: number;
  modes: Partial<Record<Mode, ModeResult>>;
}

export interface FlowReport {
  /** At the largest size measured. */
  modes: Record<Mode, ModeResult>;
  referencePolicies: number;
  sizes: SizeResult[];
  config: FlowBenchConfig;
  hardware: Hardware;
  startedAt: string;
  seconds: number;
  failures: string[];
  /** The lab ids used (every `np-ID-*` namespace is gone when runFlowBench returns). */
  labs: string[];
  measurement: Record<string, string>;
}

export const MEASUREMENT: Record<string, string> = {
  connPerSec: 'new TCP connections completed per second with N parallel connections, each: connect, 32-byte request, whole 32-byte reply, client closes first',
  connectP50Us: 'connect() to handshake complete (the socket writable), at a fixed rate; with the agent the handshake completes in the node kernel (TPROXY) before the agent sees the connection',
  firstReplyP50Us: 'connect() to the whole reply read, at the same fixed rate: what a client waits for',
  streamGbps: 'bytes received by the client from one server stream per second after a warm-up, in Gbit/s',
  streamsGbps: 'the same over several parallel streams',
  cpuSecPerGB:
    'during the 1-stream window: softirq+irq time system-wide (/proc/stat: forwarding, nftables, TPROXY and TCP receive processing run there) plus the agent process utime+stime (/proc/PID/stat), per GB received; tick-sampled, and without IRQ time accounting a softirq tick in the agent\'s own context is counted twice',
  agentCpuSecPerGB: 'utime+stime of the agent process (/proc/PID/stat) per GB in the 1-stream window (0 without an agent)',
  sysSoftirqCpuSecPerGB: 'system-wide system+irq+softirq time (/proc/stat) per GB in the 1-stream window: the client\'s and server\'s syscalls and any other work on the machine included',
  machineCpuSecPerGB: 'all busy CPU time system-wide per GB in the 1-stream window, client and server included',
  udpFlowsPerSec:
    'new UDP flows per second, N in parallel, each from a new source port: one 32-byte request, its echo, close; at most 16,000 flows per run (the window ends when the last is done), because the agent holds one socket per live UDP flow and this machine caps open files at 20,000 (the agent runs with --udp-idle-ms 2000)',
  udpDgramsPerSec: 'echoed 64-byte datagrams received per second on a few established UDP flows (each is a request and a reply through the node)',
  errors: 'failed connections/flows (refused, reset, EOF before the reply, other) plus timeouts, all phases, all measured rounds',
};

/** The configuration of `--quick`, `--sizes`, `--rounds` (shared by bench:flows and bench). */
export function flowConfigFromArgs(o: { quick?: boolean; sizes?: string; rounds?: string; agentRelay?: string; modes?: string; bridge?: boolean }): FlowBenchConfig {
  const base = o.quick ? QUICK_CONFIG : FULL_CONFIG;
  const cfg: FlowBenchConfig = { ...base, sizes: [...base.sizes], modes: [...base.modes] };
  if (o.agentRelay !== undefined) {
    if (o.agentRelay !== 'js' && o.agentRelay !== 'splice') throw new Error(`--agent-relay: js or splice, not ${o.agentRelay}`);
    cfg.agentRelay = o.agentRelay;
  }
  if (o.sizes !== undefined) {
    cfg.sizes = o.sizes.split(',').map((s) => Number(s.trim().replace(/_/g, '')));
    if (cfg.sizes.some((s) => !Number.isInteger(s))) throw new Error(`--sizes: expected comma-separated policy counts, not ${o.sizes}`);
  }
  if (o.rounds !== undefined) {
    cfg.rounds = Number(o.rounds);
    if (!Number.isInteger(cfg.rounds)) throw new Error(`--rounds: expected an integer, not ${o.rounds}`);
  }
  if (o.modes !== undefined) {
    const modes = o.modes.split(',').map((m) => m.trim());
    const unknown = modes.filter((m) => !ALL_MODES.includes(m as Mode));
    if (unknown.length > 0 || modes.length === 0) throw new Error(`--modes: comma-separated, from ${ALL_MODES.join(', ')}; not ${unknown.join(', ') || o.modes}`);
    if (new Set(modes).size !== modes.length) throw new Error(`--modes: ${o.modes} names a mode twice`);
    cfg.modes = modes as Mode[];
  }
  if (o.bridge === true) {
    // The yardstick relays' interception is TPROXY alone, which bridged traffic escapes.
    const yardsticks = cfg.modes.filter((m) => TCP_ONLY_MODES.has(m));
    if (yardsticks.length > 0) throw new Error(`--bridge: the yardstick relays (${yardsticks.join(', ')}) cannot take bridged traffic; use none, kernel, agent`);
    cfg.bridge = true;
  }
  return cfg;
}

// ---------------------------------------------------------------------------------------------

export interface FlowBenchOptions {
  log?: (text: string) => void;
  signal?: AbortSignal;
}

/** What the flow benchmark needs and is missing (empty when it can run). */
export function flowBenchMissing(): string[] {
  const missing = [...labRequirementsMissing()];
  if (!cCompiler()) missing.push('a C compiler (cc)');
  return missing;
}

class Aborted extends Error {
  constructor() {
    super('aborted');
  }
}

interface SizeCtx {
  readonly cluster: FlowCluster;
  readonly manifests: string;
  readonly nft: string;
}

function raiseOpenFilesLimit(): void {
  // Node has no setrlimit; util-linux prlimit sets our own limit (root), children inherit it.
  void exec('prlimit', ['--pid', String(process.pid), `--nofile=${NOFILE}:${NOFILE}`]);
}

export async function runFlowBench(cfg: FlowBenchConfig, opts: FlowBenchOptions = {}): Promise<FlowReport> {
  const log = opts.log ?? (() => undefined);
  const missing = flowBenchMissing();
  if (missing.length > 0) throw new Error(`the flow benchmark needs ${missing.join(', ')}`);
  checkConfig(cfg);
  ensureLoadgen(log);
  if (cfg.modes.some((m) => TCP_ONLY_MODES.has(m))) ensureCProgram('relay', log);
  raiseOpenFilesLimit();
  const started = Date.now();
  const startedAt = new Date().toISOString();
  const failures: string[] = [];
  const labs: string[] = [];
  const sizes: SizeResult[] = [];
  const onAbort = (): void => stopAllLoadgens();
  opts.signal?.addEventListener('abort', onAbort);
  const work = mkdtempSync(join(tmpdir(), 'netpold-flows-'));
  try {
    for (const policies of cfg.sizes) {
      const t0 = performance.now();
      const cluster = flowCluster(policies);
      const manifests = writeManifests(cluster.state, join(work, `p${policies}`));
      const snap = compile(cluster.state, { localNode: BENCH_NODE });
      const nft = renderNftEnforcement(snap, { table: KERNEL_TABLE, protocols: ['TCP', 'UDP', 'SCTP'], localPods: { nodeName: BENCH_NODE } });
      log(`flows: ${policies} policies, ${cluster.pods} pods (2 real), ${cluster.namespaces} namespaces; manifests and nft ruleset (${nft.length} bytes) in ${Math.round(performance.now() - t0)} ms`);
      const ctx: SizeCtx = { cluster, manifests, nft };
      const runs = new Map<Mode, { metrics: RunMetrics; rate: RateOut; lat: LatencyOut; udp: UdpFlowsOut }[]>();
      for (let round = 0; round < cfg.rounds; round++) {
        for (const mode of cfg.modes) {
          if (opts.signal?.aborted) throw new Aborted();
          let r: Awaited<ReturnType<typeof runOnce>> | undefined;
          for (let attempt = 0; attempt < 2 && !r; attempt++) {
            try {
              r = await runOnce(ctx, mode, cfg, log, opts.signal, labs);
            } catch (e) {
              if (e instanceof Aborted || opts.signal?.aborted) throw new Aborted();
              const msg = `${policies} policies, round ${round + 1}, ${mode}, attempt ${attempt + 1}: ${(e as Error).message}`;
              failures.push(msg);
              log(`flows: FAILED ${msg}`);
            }
          }
          if (!r) continue;
          const m = r.metrics;
          log(
            `flows: ${policies} policies round ${round + 1}/${cfg.rounds} ${mode.padEnd(6)} ` +
              `${fmt(m.connPerSec)} conn/s, connect p50 ${fmt(m.connectP50Us)} µs, reply p50 ${fmt(m.firstReplyP50Us)} µs, ` +
              `${fmt(m.streamGbps)}/${fmt(m.streamsGbps)} Gbit/s, ${fmt(m.cpuSecPerGB)} CPU s/GB, ` +
              `${fmt(m.udpFlowsPerSec)} UDP flows/s, ${fmt(m.udpDgramsPerSec)} dgrams/s, ${m.errors} errors (setup ${fmt(m.setupS)} s)`,
          );
          const list = runs.get(mode) ?? [];
          list.push(r);
          runs.set(mode, list);
        }
      }
      const modes: Partial<Record<Mode, ModeResult>> = {};
      for (const mode of cfg.modes) {
        const list = runs.get(mode);
        if (list && list.length > 0) modes[mode] = summarize(policies, list);
      }
      sizes.push({ policies, pods: cluster.pods, namespaces: cluster.namespaces, nftRulesetBytes: nft.length, modes });
    }
  } catch (e) {
    if (e instanceof Aborted) throw new Error('flow benchmark aborted (every lab it built was removed)');
    throw e;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    rmSync(work, { recursive: true, force: true });
  }
  const ref = sizes[sizes.length - 1]!;
  const missingModes = cfg.modes.filter((m) => !ref.modes[m]);
  if (missingModes.length > 0) throw new Error(`no successful run of ${missingModes.join(', ')} at ${ref.policies} policies: ${failures.join('; ')}`);
  const modes = Object.fromEntries(cfg.modes.map((m) => [m, ref.modes[m]!])) as Record<Mode, ModeResult>;
  return {
    modes,
    referencePolicies: ref.policies,
    sizes,
    config: cfg,
    hardware: hardware(),
    startedAt,
    seconds: Math.round((Date.now() - started) / 100) / 10,
    failures,
    labs,
    measurement: MEASUREMENT,
  };
}

function checkConfig(cfg: FlowBenchConfig): void {
  const bad = (what: string): never => {
    throw new Error(`flow benchmark config: ${what}`);
  };
  if (cfg.sizes.length === 0 || cfg.sizes.length > 10) bad('1 to 10 sizes');
  for (const s of cfg.sizes) if (!Number.isInteger(s) || s < 2 || s > 100_000) bad(`size ${s}: policies must be 2 to 100000`);
  if (!Number.isInteger(cfg.rounds) || cfg.rounds < 1 || cfg.rounds > 50) bad('rounds must be 1 to 50');
  if (cfg.modes.length === 0 || cfg.modes.some((m) => !ALL_MODES.includes(m))) bad(`modes are ${ALL_MODES.join(', ')}`);
  const secs = [cfg.warmupS, cfg.rate.seconds, cfg.latency.seconds, cfg.stream.seconds, cfg.udpFlows.seconds, cfg.udpDgram.seconds];
  if (secs.some((s) => !(s >= 0 && s <= 120))) bad('phase durations must be 0 to 120 s');
}

// ---------------------------------------------------------------------------------------------
// one run

/** The native engine's counters (from the agent's /metrics) and the agent's CPU time so far. */
async function engineSample(agent: AgentProcess, pid: number | undefined): Promise<{ syscalls: number; accepted: number; udpDatagrams: number; udpIoCalls: number; cpuS: number }> {
  const samples = parsePrometheus((await agent.get('/metrics')).body);
  const sum = (name: string): number => promValue(samples, name) ?? 0;
  let cpuS = 0;
  if (pid !== undefined) {
    try {
      // /proc/PID/stat: utime and stime (fields 14 and 15) in clock ticks, every thread included.
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
      cpuS = (Number(rest[11]) + Number(rest[12])) / CLOCK_TICKS;
    } catch {
      cpuS = 0;
    }
  }
  return {
    syscalls: sum('netpold_engine_syscalls_total'),
    accepted: sum('netpold_engine_accepted_total'),
    udpDatagrams: sum('netpold_engine_udp_datagrams_total'),
    udpIoCalls: sum('netpold_engine_udp_io_calls_total'),
    cpuS,
  };
}

/** USER_HZ: 100 on every Linux architecture this runs on. */
const CLOCK_TICKS = 100;

function labId(): string {
  return `f${Math.floor(Math.random() * 36 ** 6)
    .toString(36)
    .padStart(6, '0')}`;
}

async function runOnce(ctx: SizeCtx, mode: Mode, cfg: FlowBenchConfig, log: (t: string) => void, signal: AbortSignal | undefined, labs: string[]) {
  const check = (): void => {
    if (signal?.aborted) throw new Aborted();
  };
  const id = labId();
  labs.push(id);
  const t0 = performance.now();
  let lab: Lab | undefined;
  let agent: AgentProcess | undefined;
  let relay: LoadgenServer | undefined;
  let server: LoadgenServer | undefined;
  try {
    lab = await Lab.up({ id, state: ctx.cluster.labState, nodeName: BENCH_NODE, ports: [], bridge: cfg.bridge === true });
    check();
    const clientNs = lab.podNamespace(`${CLIENT.namespace}/${CLIENT.name}`);
    const serverNs = lab.podNamespace(`${SERVER.namespace}/${SERVER.name}`);
    // The node's range too: the agent's upstream connections take their ports from it (each
    // holding it in TIME_WAIT after closing first, as the client does its own); unused in the
    // other modes.
    await sysctls(clientNs, { 'net.ipv4.ip_local_port_range': CLIENT_PORT_RANGE });
    await sysctls(lab.nodeNamespace, { 'net.ipv4.ip_local_port_range': CLIENT_PORT_RANGE });
    // The whole run is bounded: the server (and the relay) exit by themselves at the latest after this long.
    const budgetS = 120 + cfg.warmupS * 3 + cfg.rate.seconds + cfg.latency.seconds + 2 * (cfg.stream.seconds + cfg.stream.warmupS) + cfg.udpFlows.seconds + cfg.udpDgram.seconds;
    const tcpOnly = TCP_ONLY_MODES.has(mode);
    let agentPid: number | undefined;
    if (mode === 'kernel') {
      const r = await lab.exec(lab.nodeNamespace, ['nft', '-f', '-'], { input: ctx.nft, timeoutMs: NFT_LOAD_TIMEOUT_MS });
      if (r.code !== 0) throw new Error(`nft -f in ${lab.nodeNamespace} failed: ${r.stderr.trim().slice(0, 500)}`);
    } else if (mode === 'agent') {
      agent = AgentProcess.start(lab.nodeNamespace, ['--manifests', ctx.manifests, ...AGENT_ARGS, '--relay', cfg.agentRelay ?? 'splice']);
      await agent.waitFor((l) => l.msg === 'ready', AGENT_READY_TIMEOUT_MS);
      agentPid = execedPid(agent.proc.pid, 'netpold');
    } else if (tcpOnly) {
      // The client's TCP to the server goes to the relay (TPROXY), the server's answers to the
      // relay's transparent upstream sockets (socket transparent 1): the agent's interception in
      // its simplest form. All of it lives in the lab's node namespace and goes with it.
      const nft = [
        'table ip netpold_bench_relay {',
        '  chain divert {',
        '    type filter hook prerouting priority mangle; policy accept;',
        `    meta l4proto tcp socket transparent 1 meta mark set ${RELAY_MARK} accept`,
        `    ip saddr ${CLIENT.v4} ip daddr ${SERVER.v4} meta l4proto tcp tproxy to 127.0.0.1:${RELAY_PORT} meta mark set ${RELAY_MARK} accept`,
        '  }',
        '}',
        '',
      ].join('\n');
      const steps: [string[], string | undefined][] = [
        [['nft', '-f', '-'], nft],
        [['ip', 'rule', 'add', 'fwmark', String(RELAY_MARK), 'lookup', String(RELAY_TABLE)], undefined],
        [['ip', 'route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', String(RELAY_TABLE)], undefined],
      ];
      for (const [argv, input] of steps) {
        const r = await lab.exec(lab.nodeNamespace, argv, { input, timeoutMs: 30_000 });
        if (r.code !== 0) throw new Error(`${argv.join(' ')} in ${lab.nodeNamespace} failed: ${r.stderr.trim().slice(0, 500)}`);
      }
      relay = await startRelay(lab.nodeNamespace, mode === 'sockmap' ? 'sockmap' : 'splice', RELAY_PORT, budgetS);
      agentPid = relay.pid;
    }
    check();
    server = await startLoadgenServer(serverNs, SERVER_ARGS, budgetS);
    const setupS = (performance.now() - t0) / 1000;
    const slack = (s: number): number => Math.ceil((s + cfg.timeoutMs / 1000) * 1000) + 20_000;
    const to = ['--addr', SERVER.v4, '--timeout-ms', String(cfg.timeoutMs)];

    // Warm-up (not measured), on ports of its own; it must move traffic, else the mode is broken.
    if (cfg.warmupS > 0) {
      const w = await runLoadgen<RateOut>(clientNs, ['rate', ...to, '--ports', PORTS.warmRate, '--conns', '16', '--duration', String(cfg.warmupS)], slack(cfg.warmupS));
      if (w.ok === 0) throw new Error(`${mode}: no TCP connection succeeded in the warm-up (${JSON.stringify(w.errorKinds)}, ${w.timeouts} timeouts)${agentHint(agent)}`);
      await runLoadgen<StreamOut>(clientNs, ['stream', ...to, '--ports', PORTS.warmStream, '--streams', '1', '--duration', String(cfg.warmupS), '--warmup', '0'], slack(cfg.warmupS));
      const u = tcpOnly
        ? undefined
        : await runLoadgen<UdpFlowsOut>(
            clientNs,
            ['udpflows', ...to, '--ports', PORTS.warmUdp, '--conns', '8', '--duration', String(Math.min(cfg.warmupS, 0.3)), '--sport-lo', String(UDP_WARM_SPORTS.lo), '--sport-hi', String(UDP_WARM_SPORTS.hi)],
            slack(cfg.warmupS),
          );
      if (u && u.ok === 0) throw new Error(`${mode}: no UDP flow succeeded in the warm-up (${u.timeouts} timeouts, ${u.errors} errors)${agentHint(agent)}`);
    }
    check();
    const e0 = agent ? await engineSample(agent, agentPid) : undefined;
    const rate = await runLoadgen<RateOut>(clientNs, ['rate', ...to, '--ports', PORTS.rate, '--conns', String(cfg.rate.conns), '--duration', String(cfg.rate.seconds)], slack(cfg.rate.seconds));
    const e1 = agent ? await engineSample(agent, agentPid) : undefined;
    check();
    const lat = await runLoadgen<LatencyOut>(
      clientNs,
      ['latency', ...to, '--ports', PORTS.latency, '--rate', String(cfg.latency.rate), '--duration', String(cfg.latency.seconds)],
      slack(cfg.latency.seconds),
    );
    check();
    const cpuPids = [server.pid, ...(agentPid !== undefined ? [agentPid] : [])].join(',');
    const s1 = await runLoadgen<StreamOut>(
      clientNs,
      ['stream', ...to, '--ports', PORTS.stream1, '--streams', '1', '--duration', String(cfg.stream.seconds), '--warmup', String(cfg.stream.warmupS), '--cpu-pids', cpuPids],
      slack(cfg.stream.seconds + cfg.stream.warmupS),
    );
    check();
    const sN = await runLoadgen<StreamOut>(
      clientNs,
      ['stream', ...to, '--ports', PORTS.streamN, '--streams', String(cfg.stream.streams), '--duration', String(cfg.stream.seconds), '--warmup', String(cfg.stream.warmupS), '--cpu-pids', cpuPids],
      slack(cfg.stream.seconds + cfg.stream.warmupS),
    );
    check();
    const udp = tcpOnly
      ? UDP_FLOWS_NOT_RUN
      : await runLoadgen<UdpFlowsOut>(
          clientNs,
          ['udpflows', ...to, '--ports', PORTS.udpFlows, '--conns', String(cfg.udpFlows.conns), '--duration', String(cfg.udpFlows.seconds), '--sport-lo', String(UDP_SPORTS.lo), '--sport-hi', String(UDP_SPORTS.hi)],
          slack(cfg.udpFlows.seconds),
        );
    if (!tcpOnly) await sleepMs(UDP_SETTLE_MS);
    check();
    const d0 = agent ? await engineSample(agent, agentPid) : undefined;
    const dg = tcpOnly
      ? { udpDgramsPerSec: 0, refills: 0, errors: 0 }
      : await runLoadgen<UdpDgramOut>(
          clientNs,
          [
            'udpdgram', ...to, '--ports', PORTS.udpDgram, '--flows', String(cfg.udpDgram.flows), '--window', String(cfg.udpDgram.window),
            '--size', String(cfg.udpDgram.size), '--duration', String(cfg.udpDgram.seconds), '--warmup', String(cfg.udpDgram.warmupS),
          ],
          slack(cfg.udpDgram.seconds + cfg.udpDgram.warmupS),
        );
    const d1 = agent ? await engineSample(agent, agentPid) : undefined;
    if (s1.bytes <= 0) throw new Error(`${mode}: the stream moved no bytes${agentHint(agent)}`);
    const accepted = e0 && e1 ? e1.accepted - e0.accepted : 0;
    const ioCalls = d0 && d1 ? d1.udpIoCalls - d0.udpIoCalls : 0;
    const cpu = cpuPerGB(s1.cpu, s1.bytes, agentPid);
    const metrics: RunMetrics = {
      connPerSec: rate.connPerSec,
      rateErrors: rate.errors,
      rateTimeouts: rate.timeouts,
      txnP50Us: rate.txnP50Us,
      txnP99Us: rate.txnP99Us,
      connectP50Us: lat.connectP50Us,
      connectP99Us: lat.connectP99Us,
      firstReplyP50Us: lat.firstReplyP50Us,
      firstReplyP99Us: lat.firstReplyP99Us,
      latencyErrors: lat.errors,
      latencyTimeouts: lat.timeouts,
      streamGbps: s1.gbps,
      streamsGbps: sN.gbps,
      streamErrors: s1.errors + sN.errors,
      ...cpu,
      udpFlowsPerSec: udp.udpFlowsPerSec,
      udpFlowErrors: udp.errors,
      udpFlowTimeouts: udp.timeouts,
      udpDgramsPerSec: dg.udpDgramsPerSec,
      udpDgramRefills: dg.refills,
      syscallsPerConn: e0 && e1 && accepted > 0 ? round3((e1.syscalls - e0.syscalls) / accepted) : 0,
      agentCpuUsPerConn: e0 && e1 && accepted > 0 ? round3(((e1.cpuS - e0.cpuS) * 1e6) / accepted) : 0,
      udpDgramsPerIoCall: d0 && d1 && ioCalls > 0 ? round3((d1.udpDatagrams - d0.udpDatagrams) / ioCalls) : 0,
      errors: rate.errors + rate.timeouts + lat.errors + lat.timeouts + s1.errors + sN.errors + udp.errors + udp.timeouts + dg.errors,
      setupS: round3(setupS),
    };
    return { metrics, rate, lat, udp };
  } finally {
    // Teardown, also after a failure or an abort: the server, the agent (it removes its own
    // table and routes) or the relay, then every namespace of the lab (with the nft table, rule
    // and routes loaded in it).
    await server?.stop().catch(() => undefined);
    await agent?.stop().catch(() => undefined);
    await relay?.stop().catch(() => undefined);
    try {
      await Lab.downById(id);
    } catch (e) {
      log(`flows: teardown of lab ${id} failed: ${(e as Error).message}`);
    }
  }
}

/** The UDP new-flow phase of a mode that does not run it (TCP_ONLY_MODES): nothing counted. */
const UDP_FLOWS_NOT_RUN: UdpFlowsOut = { mode: 'udpflows', udpFlowsPerSec: 0, ok: 0, started: 0, timeouts: 0, errors: 0, bindFailures: 0, exhausted: false, p50Us: 0, p99Us: 0, hist: [] };

function sleepMs(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function agentHint(agent: AgentProcess | undefined): string {
  if (!agent) return '';
  const denied = agent.lines.filter((l) => l.msg === 'flow denied').slice(0, 2);
  const warn = agent.lines.filter((l) => l.level === 'warn' || l.level === 'error' || (typeof l.level === 'number' && l.level >= 40)).slice(-3);
  return `; agent: ${JSON.stringify([...denied, ...warn]).slice(0, 800)}`;
}

/**
 * `ip netns exec` replaces itself with the command, so the spawned pid is normally the agent's
 * node process; if an iproute2 forked instead, its child is.
 */
function execedPid(pid: number | undefined, needle: string): number | undefined {
  if (pid === undefined) return undefined;
  const cmd = (p: number): string => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8');
    } catch {
      return '';
    }
  };
  if (cmd(pid).includes(needle)) return pid;
  try {
    for (const c of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)) {
      if (c && cmd(Number(c)).includes(needle)) return Number(c);
    }
  } catch {
    // gone
  }
  return pid;
}

/**
 * CPU per GB over the 1-stream window (ticks sampled by the kernel, USER_HZ units):
 * - cpuSecPerGB: softirq+irq system-wide (forwarding, nftables, TPROXY and TCP receive processing
 *   all run there) plus the agent process's utime+stime; immune to the user and system time of
 *   other work on a shared machine. Without IRQ time accounting a softirq tick that lands in the
 *   agent's own context is also in its stime (counted twice: an overestimate for the agent);
 * - agentCpuSecPerGB: the agent process alone (/proc/PID/stat);
 * - sysSoftirqCpuSecPerGB: system+irq+softirq system-wide (client and server syscalls included);
 * - machineCpuSecPerGB: every busy tick of the machine.
 */
function cpuPerGB(cpu: CpuTicks, bytes: number, agentPid: number | undefined) {
  const hz = cpu.ticksPerSec || 100;
  const busy = cpu.user + cpu.nice + cpu.system + cpu.irq + cpu.softirq;
  const p = agentPid === undefined ? undefined : cpu.pids[String(agentPid)];
  const agent = p ? p.utime + p.stime : 0;
  const gb = bytes / 1e9;
  return {
    cpuSecPerGB: round3((cpu.softirq + cpu.irq + agent) / hz / gb),
    agentCpuSecPerGB: round3(agent / hz / gb),
    sysSoftirqCpuSecPerGB: round3((cpu.system + cpu.irq + cpu.softirq) / hz / gb),
    machineCpuSecPerGB: round3(busy / hz / gb),
  };
}

// ---------------------------------------------------------------------------------------------
// aggregation

const SUMMARY_KEYS = [
  'connPerSec',
  'syscallsPerConn',
  'agentCpuUsPerConn',
  'udpDgramsPerIoCall',
  'connectP50Us',
  'connectP99Us',
  'firstReplyP50Us',
  'firstReplyP99Us',
  'txnP50Us',
  'txnP99Us',
  'streamGbps',
  'streamsGbps',
  'cpuSecPerGB',
  'agentCpuSecPerGB',
  'sysSoftirqCpuSecPerGB',
  'machineCpuSecPerGB',
  'udpFlowsPerSec',
  'udpDgramsPerSec',
  'setupS',
] as const satisfies readonly (keyof RunMetrics)[];

function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export function spreadOf(values: readonly number[]): Spread {
  const s = [...values].sort((a, b) => a - b);
  return { min: round3(s[0] ?? 0), q1: round3(quantile(s, 0.25)), median: round3(quantile(s, 0.5)), q3: round3(quantile(s, 0.75)), max: round3(s[s.length - 1] ?? 0) };
}

function mergeHists(hs: readonly Hist[]): Hist {
  const m = new Map<number, number>();
  for (const h of hs) for (const [ub, n] of h) m.set(ub, (m.get(ub) ?? 0) + n);
  return [...m.entries()].sort((a, b) => a[0] - b[0]);
}

function summarize(policies: number, runs: readonly { metrics: RunMetrics; rate: RateOut; lat: LatencyOut; udp: UdpFlowsOut }[]): ModeResult {
  const spread: Record<string, Spread> = {};
  for (const k of SUMMARY_KEYS) spread[k] = spreadOf(runs.map((r) => r.metrics[k]));
  const sum = (k: keyof RunMetrics): number => runs.reduce((a, r) => a + r.metrics[k], 0);
  const med = (k: (typeof SUMMARY_KEYS)[number]): number => spread[k]!.median;
  return {
    policies,
    rounds: runs.length,
    connPerSec: med('connPerSec'),
    connectP50Us: med('connectP50Us'),
    connectP99Us: med('connectP99Us'),
    firstReplyP50Us: med('firstReplyP50Us'),
    firstReplyP99Us: med('firstReplyP99Us'),
    txnP50Us: med('txnP50Us'),
    txnP99Us: med('txnP99Us'),
    streamGbps: med('streamGbps'),
    streamsGbps: med('streamsGbps'),
    cpuSecPerGB: med('cpuSecPerGB'),
    agentCpuSecPerGB: med('agentCpuSecPerGB'),
    sysSoftirqCpuSecPerGB: med('sysSoftirqCpuSecPerGB'),
    machineCpuSecPerGB: med('machineCpuSecPerGB'),
    udpFlowsPerSec: med('udpFlowsPerSec'),
    udpDgramsPerSec: med('udpDgramsPerSec'),
    syscallsPerConn: med('syscallsPerConn'),
    agentCpuUsPerConn: med('agentCpuUsPerConn'),
    udpDgramsPerIoCall: med('udpDgramsPerIoCall'),
    errors: sum('errors'),
    errorBreakdown: {
      rateErrors: sum('rateErrors'),
      rateTimeouts: sum('rateTimeouts'),
      latencyErrors: sum('latencyErrors'),
      latencyTimeouts: sum('latencyTimeouts'),
      streamErrors: sum('streamErrors'),
      udpFlowErrors: sum('udpFlowErrors'),
      udpFlowTimeouts: sum('udpFlowTimeouts'),
      udpDgramRefills: sum('udpDgramRefills'),
    },
    setupS: med('setupS'),
    spread,
    hist: {
      connect: mergeHists(runs.map((r) => r.lat.connectHist)),
      firstReply: mergeHists(runs.map((r) => r.lat.firstReplyHist)),
      txn: mergeHists(runs.map((r) => r.rate.txnHist)),
      udpFlow: mergeHists(runs.map((r) => r.udp.hist)),
    },
  };
}

function round3(x: number): number {
  if (!Number.isFinite(x)) return 0;
  const a = Math.abs(x);
  const d = a >= 100 ? 1 : a >= 1 ? 100 : 10_000;
  return Math.round(x * d) / d;
}

// ---------------------------------------------------------------------------------------------
// Markdown

/** Thousands separators from 1,000 up; three significant digits below. */
export function fmt(x: number): string {
  if (!Number.isFinite(x)) return '–';
  const a = Math.abs(x);
  if (a >= 1000) return Math.round(x).toLocaleString('en-US');
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  if (a === 0) return '0';
  return x.toPrecision(2);
}

interface Row {
  key: keyof ModeResult & keyof RunMetrics;
  label: (cfg: FlowBenchConfig) => string;
  ratio: boolean;
}

const ROWS: Row[] = [
  { key: 'connPerSec', label: (c) => `new TCP connections/s (${c.rate.conns} parallel)`, ratio: true },
  { key: 'connectP50Us', label: (c) => `connect p50, µs (${c.latency.rate}/s)`, ratio: true },
  { key: 'connectP99Us', label: (c) => `connect p99, µs (${c.latency.rate}/s)`, ratio: true },
  { key: 'firstReplyP50Us', label: () => 'connect → reply p50, µs', ratio: true },
  { key: 'firstReplyP99Us', label: () => 'connect → reply p99, µs', ratio: true },
  { key: 'streamGbps', label: () => 'TCP throughput, 1 stream, Gbit/s', ratio: true },
  { key: 'streamsGbps', label: (c) => `TCP throughput, ${c.stream.streams} streams, Gbit/s`, ratio: true },
  { key: 'cpuSecPerGB', label: () => 'CPU s/GB: softirq + agent (1 stream)', ratio: true },
  { key: 'agentCpuSecPerGB', label: () => 'of which the agent process, CPU s/GB', ratio: false },
  { key: 'sysSoftirqCpuSecPerGB', label: () => 'CPU s/GB: system + softirq, whole machine', ratio: true },
  { key: 'machineCpuSecPerGB', label: () => 'CPU s/GB: all busy time, whole machine', ratio: true },
  { key: 'udpFlowsPerSec', label: (c) => `new UDP flows/s (${c.udpFlows.conns} parallel)`, ratio: true },
  { key: 'udpDgramsPerSec', label: (c) => `UDP datagrams/s echoed (${c.udpDgram.flows} flows × ${c.udpDgram.window} in flight)`, ratio: true },
  { key: 'syscallsPerConn', label: () => 'agent: native engine syscalls per new TCP connection', ratio: false },
  { key: 'agentCpuUsPerConn', label: () => 'agent: CPU µs per new TCP connection (all threads)', ratio: false },
  { key: 'udpDgramsPerIoCall', label: () => 'agent: UDP datagrams per recvmmsg/sendmmsg call', ratio: false },
  { key: 'errors', label: () => 'errors + timeouts (all measured rounds)', ratio: false },
];

const MODE_TEXT: Record<Mode, string> = {
  none: 'plain forwarding',
  kernel: 'the same policies as nftables rules',
  agent: 'netpold',
  relay: 'the C yardstick relay, splice, no policy; its process in the agent rows',
  sockmap: 'the C yardstick relay, BPF sockmap redirect, no policy; its process in the agent rows',
};

/** The rows a TCP-only mode has no number for. */
const UDP_ROWS: ReadonlySet<string> = new Set(['udpFlowsPerSec', 'udpDgramsPerSec', 'udpDgramsPerIoCall']);

export function formatFlowMarkdown(report: FlowReport): string {
  const cfg = report.config;
  const modes = cfg.modes;
  const out: string[] = [];
  // Ratios to none, in the reverse order of the modes (agent : kernel : none by default).
  const ratioModes = modes.includes('none') ? [...modes].reverse() : [];
  const described = modes.map((m) => `\`${m}\` (${MODE_TEXT[m]})`).join(', ');
  if (cfg.bridge) {
    out.push(
      'Pods on a Linux bridge (`--bridge`, Flannel style, br_netfilter on): `none` is switched by the bridge, `kernel` is the same rules in the forward hook (br_netfilter runs it for bridged frames), `agent` takes the traffic off the bridge (README, "Pods on a bridge").',
      '',
    );
  }
  out.push(
    `Modes: ${described}. ` +
      `${cfg.rounds} round(s), modes interleaved, a fresh lab per run; median [min–max] over the rounds; ` +
      (ratioModes.length > 1 ? `ratios are ${ratioModes.join(' : ')}, none = 1.` : 'no ratios (they are to none, which did not run).'),
  );
  for (const size of report.sizes) {
    out.push('', `**${size.policies.toLocaleString('en-US')} policies** (${size.pods.toLocaleString('en-US')} pods of which 2 real, ${size.namespaces.toLocaleString('en-US')} namespaces)`, '');
    const header = ['metric', ...modes, ratioModes.length > 1 ? ratioModes.join(' : ') : 'ratio'];
    const rows: string[][] = [header];
    for (const row of ROWS) {
      const cells = modes.map((m) => {
        const r = size.modes[m];
        if (!r) return 'failed';
        if (TCP_ONLY_MODES.has(m) && UDP_ROWS.has(row.key)) return 'n/a';
        const s = r.spread[row.key];
        const v = r[row.key] as number;
        return s && r.rounds > 1 ? `${fmt(v)} [${fmt(s.min)}–${fmt(s.max)}]` : fmt(v);
      });
      let ratio = '';
      const none = size.modes.none?.[row.key] as number | undefined;
      if (row.ratio && ratioModes.length > 1 && none !== undefined && none > 0 && ratioModes.every((m) => size.modes[m])) {
        ratio = ratioModes
          .map((m) => (m === 'none' ? '1' : TCP_ONLY_MODES.has(m) && UDP_ROWS.has(row.key) ? 'n/a' : ratioFmt((size.modes[m]![row.key] as number) / none)))
          .join(' : ');
      }
      rows.push([row.label(cfg), ...cells, ratio]);
    }
    out.push(table(rows));
  }
  if (report.failures.length > 0) out.push('', `Failed runs (retried once): ${report.failures.length}`, ...report.failures.map((f) => `- ${f}`));
  return out.join('\n');
}

function ratioFmt(x: number): string {
  if (!Number.isFinite(x)) return '–';
  return x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(3, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (r: string[]): string => `| ${r.map((v, c) => (v ?? '').padEnd(widths[c]!)).join(' | ')} |`;
  return [line(rows[0]!), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n');
}
