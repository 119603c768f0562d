// The agent's Prometheus metrics (prom-client), registered on a Registry passed in (never the
// library's global default registry).
//
// The hot path increments nothing here: the data plane, the flow table, the flow log and the
// sources keep plain counters, which collect() callbacks copy into the metrics when scraped.
// Only the decision-latency histogram is observed per decision (first packets only), and the
// compile-duration histogram per snapshot. No label has unbounded values: no addresses, no pod
// or policy names; every label's values come from a small fixed set (README, "Metrics").
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { PHASES, type Phase } from '../agent/agent.js';
import type { SpliceCounters } from '../dataplane/native.js';
import { FLOW_PROTOCOLS, FLOW_VERDICTS, type Dataplane } from '../dataplane/dataplane.js';
import type { FlowLog } from '../flowlog/flow-log.js';
import type { SideStatus } from '../policy/explain.js';
import type { PolicySnapshot } from '../policy/snapshot.js';
import type { LoopMonitor } from './loop-monitor.js';

/** Side values in decide() order (Side.NotAPod = 0 ... Side.Loopback = 5). */
const SIDES: readonly SideStatus[] = ['not-a-pod', 'not-isolated', 'allowed', 'denied', 'node-local', 'loopback'];

/** What the state source reports, whichever it is. */
export interface SourceStats {
  readonly kind: 'manifests' | 'kubernetes';
  /** States delivered to the agent. */
  readonly updates: number;
  /** Kubernetes: watch events; manifests: file changes that triggered a reload. */
  readonly events: number;
  /** Kubernetes: relists after errors, 410 Gone, restarts; manifests: 0. */
  readonly relists: number;
  /** Kubernetes: failed lists/watches and expired resourceVersions; manifests: unusable reloads. */
  readonly errors: number;
  /** Objects the validators rejected. */
  readonly rejected: number;
  /** When the source last confirmed its state current (ms since the epoch); 0: never. */
  readonly lastSyncTime: number;
}

/** What the metrics read from the agent. */
export interface AgentView {
  readonly phase: Phase;
  readonly interceptionInstalled: boolean;
  /** Installed but pods on a bridge not redirected (dropped instead, or a port unhooked). */
  readonly interceptionDegraded?: boolean;
  /** Bridge ports whose traffic is redirected now. */
  readonly bridgePorts?: number;
  readonly auditNamespaceCount: number;
}

export interface MetricsParts {
  readonly dataplane: Dataplane;
  readonly agent: AgentView;
  readonly source: () => SourceStats;
  readonly flowLog?: FlowLog | undefined;
  readonly loop?: LoopMonitor | undefined;
  readonly version?: string;
  /** The native relay engine's process-wide counters (absent without the addon's splice engine). */
  readonly engine?: (() => SpliceCounters) | undefined;
}

/** Buckets of the decision latency, in seconds: 100 ns to 10 ms. */
export const DECISION_BUCKETS = [1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2];
/** Buckets of the snapshot compile time, in seconds: 100 µs to 30 s. */
export const COMPILE_BUCKETS = [1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class AgentMetrics {
  private parts: MetricsParts | undefined;
  private readonly decisionSeconds: Histogram;
  private readonly compileSeconds: Histogram;
  private snap: PolicySnapshot | undefined;

  /** Observes one decision's duration in seconds (hand it to the data plane). */
  readonly observeDecision: (seconds: number) => void;

  constructor(readonly registry: Registry) {
    const registers = [registry];
    this.decisionSeconds = new Histogram({
      name: 'netpold_decision_duration_seconds',
      help: 'Time to decide the first packet of a flow (decide() on the compiled snapshot), in seconds.',
      buckets: DECISION_BUCKETS,
      registers,
    });
    const hist = this.decisionSeconds;
    this.observeDecision = (s) => hist.observe(s);
    this.compileSeconds = new Histogram({
      name: 'netpold_snapshot_compile_duration_seconds',
      help: 'Time to compile a policy state into a snapshot, in seconds.',
      buckets: COMPILE_BUCKETS,
      registers,
    });
    this.define(registers);
  }

  /** Connects the collect() callbacks to the running parts. Before this, they report nothing. */
  bind(parts: MetricsParts): void {
    this.parts = parts;
  }

  /** A snapshot was swapped in. */
  snapshotApplied(snap: PolicySnapshot, seconds: number): void {
    this.snap = snap;
    this.compileSeconds.observe(seconds);
  }

  private define(registers: Registry[]): void {
    const self = this;
    const p = (): MetricsParts | undefined => self.parts;

    new Gauge({
      name: 'netpold_build_info',
      help: 'Always 1; the version label is the running netpold version.',
      labelNames: ['version'],
      registers,
      collect() {
        this.reset();
        this.set({ version: p()?.version ?? 'unknown' }, 1);
      },
    });
    new Gauge({
      name: 'netpold_phase',
      help: 'The agent phase: 1 for the current one (starting, fail_closed: intercepting and refusing every flow, enforcing, draining, stopped).',
      labelNames: ['phase'],
      registers,
      collect() {
        const cur = p()?.agent.phase ?? 'starting';
        for (const ph of PHASES) this.set({ phase: ph }, ph === cur ? 1 : 0);
      },
    });
    new Gauge({
      name: 'netpold_interception_installed',
      help: '1 while the nftables interception table and policy routing are installed.',
      registers,
      collect() {
        this.set(p()?.agent.interceptionInstalled ? 1 : 0);
      },
    });
    new Gauge({
      name: 'netpold_interception_degraded',
      help: '1 while pods on a Linux bridge cannot be redirected: their IP traffic is dropped instead, or a bridge port is not hooked (see the log: NETPOLD_E_INTERCEPTION, NETPOLD_E_UNSUPPORTED_NODE); /readyz fails meanwhile.',
      registers,
      collect() {
        this.set(p()?.agent.interceptionDegraded ? 1 : 0);
      },
    });
    new Gauge({
      name: 'netpold_bridge_ports',
      help: 'Ports of pod bridges (--pod-bridges) whose traffic the agent takes off the bridge.',
      registers,
      collect() {
        this.set(p()?.agent.bridgePorts ?? 0);
      },
    });
    new Gauge({
      name: 'netpold_audit_mode',
      help: '1 when --mode audit lets every flow through (would-be denials logged).',
      registers,
      collect() {
        this.set(p()?.dataplane.mode === 'audit' ? 1 : 0);
      },
    });
    new Gauge({
      name: 'netpold_audit_namespaces',
      help: 'Namespaces annotated netpold.io/mode: audit in the enforced state.',
      registers,
      collect() {
        this.set(p()?.agent.auditNamespaceCount ?? 0);
      },
    });

    // --- decisions and flows -------------------------------------------------------------
    new Counter({
      name: 'netpold_decisions_total',
      help: "First-packet decisions, by the policies' verdict and each side's reason (egress: the source's, ingress: the destination's).",
      labelNames: ['verdict', 'egress', 'ingress'],
      registers,
      collect() {
        const dp = p()?.dataplane;
        if (!dp) return;
        this.reset();
        const a = dp.counters.bySides;
        for (let i = 0; i < a.length; i++) {
          if (a[i] === 0) continue;
          const eg = SIDES[Math.floor(i / 6)]!;
          const ing = SIDES[i % 6]!;
          this.inc({ verdict: eg === 'denied' || ing === 'denied' ? 'deny' : 'allow', egress: eg, ingress: ing }, a[i]!);
        }
      },
    });
    new Counter({
      name: 'netpold_flows_total',
      help: 'Decided flows by protocol and enforced verdict (audit: denied by policy, let through by audit mode).',
      labelNames: ['protocol', 'verdict'],
      registers,
      collect() {
        const dp = p()?.dataplane;
        if (!dp) return;
        this.reset();
        const f = dp.counters.flows;
        for (let pr = 0; pr < FLOW_PROTOCOLS.length; pr++) {
          for (let v = 0; v < FLOW_VERDICTS.length; v++) this.inc({ protocol: FLOW_PROTOCOLS[pr]!.toLowerCase(), verdict: FLOW_VERDICTS[v]! }, f[pr * 3 + v]!);
        }
      },
    });
    new Gauge({
      name: 'netpold_flows_active',
      help: 'Flows in the flow table by protocol and verdict (deny: UDP flows whose datagrams are dropped).',
      labelNames: ['protocol', 'verdict'],
      registers,
      collect() {
        const dp = p()?.dataplane;
        if (!dp) return;
        const n = new Float64Array(6);
        for (const e of dp.table.all()) {
          const pr = e.proto === 6 ? 0 : e.proto === 17 ? 1 : -1;
          if (pr < 0) continue;
          const v = e.state === 'allowed' ? (dp.isAudited(e) ? 2 : 0) : e.state === 'denied' ? 1 : -1;
          if (v >= 0) n[pr * 3 + v]!++;
        }
        for (let pr = 0; pr < FLOW_PROTOCOLS.length; pr++) {
          for (let v = 0; v < FLOW_VERDICTS.length; v++) this.set({ protocol: FLOW_PROTOCOLS[pr]!.toLowerCase(), verdict: FLOW_VERDICTS[v]! }, n[pr * 3 + v]!);
        }
      },
    });
    new Counter({
      name: 'netpold_flows_refused_total',
      help: 'New flows refused without a decision: not_ready (no snapshot yet: fail closed), table_full, draining (at shutdown).',
      labelNames: ['reason'],
      registers,
      collect() {
        const c = p()?.dataplane.counters;
        if (!c) return;
        this.reset();
        this.inc({ reason: 'not_ready' }, c.refusedNotReady);
        this.inc({ reason: 'table_full' }, c.refusedTableFull);
        this.inc({ reason: 'draining' }, c.refusedDraining);
      },
    });
    counterFrom(registers, 'netpold_flows_closed_by_policy_change_total', 'Live flows closed because a new snapshot no longer allows them (--existing-flows revalidate).', () => p()?.dataplane.counters.closedByPolicyChange);
    counterFrom(registers, 'netpold_upstream_errors_total', 'Upstream connections that failed (refused, timed out, unreachable) or UDP flows that could not be opened; the client is reset.', () => p()?.dataplane.counters.upstreamErrors);
    counterFrom(registers, 'netpold_udp_datagrams_dropped_total', 'UDP datagrams dropped by the JS relay: those of denied flows, and replies to pods from the node it could not send (raw socket: no NET_RAW, larger than the path MTU).', () => p()?.dataplane.counters.udpDropped);
    new Counter({
      name: 'netpold_relayed_bytes_total',
      help: 'Bytes relayed for allowed flows, by direction (to_server: from the client to the original destination).',
      labelNames: ['direction'],
      registers,
      collect() {
        const c = p()?.dataplane.counters;
        if (!c) return;
        this.reset();
        this.inc({ direction: 'to_server' }, c.bytesToServer);
        this.inc({ direction: 'to_client' }, c.bytesToClient);
      },
    });

    // --- flow table ------------------------------------------------------------------------
    gaugeFrom(registers, 'netpold_flow_table_entries', 'Entries in the flow table.', () => p()?.dataplane.table.stats.entries);
    gaugeFrom(registers, 'netpold_flow_table_capacity', 'Capacity of the flow table (--flow-table-size).', () => p()?.dataplane.table.capacity);
    counterFrom(registers, 'netpold_flow_table_lookups_total', 'Flow-table lookups (UDP datagrams).', () => p()?.dataplane.table.stats.lookups);
    counterFrom(registers, 'netpold_flow_table_hits_total', 'Flow-table lookups that found a live flow.', () => p()?.dataplane.table.stats.hits);
    counterFrom(registers, 'netpold_flow_table_evictions_total', 'Idle flows evicted to make room in a full table.', () => p()?.dataplane.table.stats.evictions);
    counterFrom(registers, 'netpold_flow_table_refusals_total', 'New flows refused because the table was full and no flow was idle (NETPOLD_E_FLOW_TABLE_FULL).', () => p()?.dataplane.table.stats.refusals);

    // --- snapshot --------------------------------------------------------------------------
    gaugeFrom(registers, 'netpold_snapshot_revision', 'Revision of the enforced snapshot (0: none yet).', () => p()?.dataplane.revision);
    gaugeFrom(registers, 'netpold_snapshot_pods', 'Pods in the enforced snapshot.', () => self.snap?.stats.pods);
    gaugeFrom(registers, 'netpold_snapshot_policies', 'NetworkPolicies in the enforced snapshot (invalid ones included).', () => self.snap?.stats.policies);
    gaugeFrom(registers, 'netpold_snapshot_invalid_policies', 'Invalid NetworkPolicies enforced failing closed.', () => self.snap?.stats.invalidPolicies);

    // --- source ----------------------------------------------------------------------------
    const fromSource = (name: string, help: string, get: (s: SourceStats) => number): void => {
      new Counter({
        name,
        help,
        labelNames: ['source'],
        registers,
        collect() {
          const s = p()?.source();
          if (!s) return;
          this.reset();
          this.inc({ source: s.kind }, get(s));
        },
      });
    };
    fromSource('netpold_source_updates_total', 'Policy states delivered by the source (each one compiled).', (s) => s.updates);
    fromSource('netpold_source_events_total', 'Kubernetes watch events; for manifests, file changes that caused a reload.', (s) => s.events);
    fromSource('netpold_source_relists_total', 'Kubernetes relists (after watch errors, 410 Gone, restarts).', (s) => s.relists);
    fromSource('netpold_source_errors_total', 'Kubernetes list/watch failures (NETPOLD_E_KUBE_API); for manifests, reloads that could not be read as a whole.', (s) => s.errors);
    fromSource('netpold_source_rejected_objects_total', 'Object versions the validators rejected.', (s) => s.rejected);
    new Gauge({
      name: 'netpold_source_seconds_since_last_sync',
      help: 'Seconds since the source last confirmed its state current (Kubernetes: a completed list, a watch event or bookmark; manifests: a successful load). Absent before the first.',
      labelNames: ['source'],
      registers,
      collect() {
        const s = p()?.source();
        this.reset();
        if (!s || s.lastSyncTime === 0) return;
        this.set({ source: s.kind }, Math.max(0, (Date.now() - s.lastSyncTime) / 1000));
      },
    });

    // --- native relay engine (--relay splice) ---------------------------------------------------
    const eng = (get: (c: SpliceCounters) => number) => () => {
      const f = p()?.engine;
      return f ? get(f()) : undefined;
    };
    new Counter({
      name: 'netpold_engine_accepted_total',
      help: 'TCP connections accepted by the native engine, by engine thread (each accepts on its own socket of the SO_REUSEPORT listener group).',
      labelNames: ['thread'],
      registers,
      collect() {
        const f = p()?.engine;
        if (!f) return;
        this.reset();
        f().acceptedByThread.forEach((n, i) => this.inc({ thread: String(i) }, n));
      },
    });
    counterFrom(registers, 'netpold_engine_syscalls_total', 'System calls made by the native engine (accept, connect, splice, epoll, close...): divided by accepted connections, the syscalls per connection.', eng((c) => c.syscalls));
    counterFrom(registers, 'netpold_engine_wakeups_total', 'epoll_wait returns of the native engine loops.', eng((c) => c.wakeups));
    counterFrom(registers, 'netpold_engine_splice_calls_total', 'splice(2) calls of the native engine.', eng((c) => c.spliceCalls));
    counterFrom(
      registers,
      'netpold_engine_verdict_cache_hits_total',
      'TCP connections an engine thread relayed at once from its cache of recent verdicts (each is still decided and tracked by the JavaScript thread).',
      eng((c) => c.cacheHits),
    );
    counterFrom(registers, 'netpold_engine_refused_backlog_total', 'Connections reset because too many were waiting for a verdict.', eng((c) => c.refusedBacklog));
    counterFrom(registers, 'netpold_engine_accept_errors_total', 'accept failures of the native engine (out of fds pauses a listener for 100 ms).', eng((c) => c.acceptErrors));
    counterFrom(registers, 'netpold_engine_connect_failures_total', 'Upstream connects that failed (refused, unreachable, timed out).', eng((c) => c.connectFailures + c.connectTimeouts));
    gaugeFrom(registers, 'netpold_engine_relays_active', 'TCP relays the native engine is running.', eng((c) => c.active));
    gaugeFrom(registers, 'netpold_engine_pipes_pooled', 'Empty pipes pooled by the engine loops (a relay holds a pipe only while bytes are in flight).', eng((c) => c.pipesPooled));
    gaugeFrom(registers, 'netpold_engine_threads', 'Native engine loop threads started.', eng((c) => c.threads));
    gaugeFrom(
      registers,
      'netpold_native_malloc_in_use_bytes',
      'Bytes malloc has handed out and not taken back, process-wide (glibc mallinfo2: the native engine, Node itself, ArrayBuffer contents; not the JS heap). Unlike RSS, no allocator slack.',
      eng((c) => c.mallocInUseBytes),
    );
    counterFrom(registers, 'netpold_engine_udp_flows_total', 'UDP flows the native engine saw start (their first datagrams went to JS for a verdict).', eng((c) => c.udpFlows));
    gaugeFrom(registers, 'netpold_engine_udp_flows_active', 'UDP flows held by the native engine (pending, allowed or remembered as denied).', eng((c) => c.udpActive));
    counterFrom(registers, 'netpold_engine_udp_datagrams_total', 'UDP datagrams relayed by the native engine, both directions (none of them through JS).', eng((c) => c.udpDatagrams));
    counterFrom(registers, 'netpold_engine_udp_dropped_total', 'UDP datagrams dropped by the native engine (denied flows, full send buffers, a full queue awaiting a verdict, replies from the node larger than the path MTU).', eng((c) => c.udpDropped));
    counterFrom(registers, 'netpold_engine_udp_io_calls_total', 'recvmmsg and sendmmsg calls of the native engine (datagrams per call: the batching achieved).', eng((c) => c.udpRecvCalls + c.udpSendCalls));

    // --- flow log and health ------------------------------------------------------------------
    counterFrom(registers, 'netpold_flow_log_lines_total', 'Flow-log lines written.', () => p()?.flowLog?.counters.written);
    counterFrom(registers, 'netpold_flow_log_dropped_total', 'Flow-log lines dropped because the buffer (--flow-log-buffer) was full.', () => p()?.flowLog?.counters.dropped);
    counterFrom(registers, 'netpold_flow_log_sampled_out_total', 'Allowed flows not logged (--flow-log-sample-rate).', () => p()?.flowLog?.counters.sampledOut);
    gaugeFrom(registers, 'netpold_flow_log_buffered_lines', 'Flow-log lines waiting in the buffer.', () => p()?.flowLog?.buffered);
    gaugeFrom(registers, 'netpold_event_loop_lag_seconds', 'Largest event-loop lag over the last seconds (what /healthz checks).', () => {
      const l = p()?.loop;
      return l ? l.lagMs / 1000 : undefined;
    });
  }
}

function counterFrom(registers: Registry[], name: string, help: string, get: () => number | undefined): void {
  new Counter({
    name,
    help,
    registers,
    collect() {
      const v = get();
      if (v === undefined) return;
      this.reset();
      this.inc(v);
    },
  });
}

function gaugeFrom(registers: Registry[], name: string, help: string, get: () => number | undefined): void {
  new Gauge({
    name,
    help,
    registers,
    collect() {
      const v = get();
      if (v !== undefined) this.set(v);
    },
  });
}
