// The agent: a state source feeding compile, the data plane enforcing the newest good
// snapshot, and kernel interception for the pods of this node. Wired in one place (here),
// with every collaborator passed in.
//
// Phases (exported as the metric netpold_phase, and on /readyz):
// - starting: nothing installed yet; traffic flows as the node forwards it (unenforced);
// - fail_closed: interception redirects all forwarded TCP/UDP traffic to the agent, which
//   refuses every flow until the first usable state is compiled;
// - enforcing: a snapshot is enforced. A state that cannot be read as a whole (broken YAML,
//   unreadable file) is not applied, the last good snapshot stays enforced; an invalid policy
//   inside a readable state is applied failing closed (its pods stay isolated, no rule of it
//   opens anything);
// - draining (SIGTERM): new flows are refused, live TCP flows may finish within the grace period;
// - stopped: the rest is reset, interception removed (traffic then flows without enforcement:
//   the node's normal forwarding).
import { formatManifestError, NetpoldError } from '../errors.js';
import type { Logger } from '../log.js';
import { PROTOCOLS, type ClusterState, type Protocol } from '../model/types.js';
import { Compiler } from '../policy/compile.js';
import { Decision, FlowKey, decide } from '../policy/decide.js';
import { flowFromText } from '../policy/explain.js';
import { explainFlow, type FlowExplanation } from '../policy/explain-flow.js';
import { pickAddresses, resolveEndpoint } from '../policy/endpoints.js';
import { renderNftEnforcement } from '../policy/nft-target.js';
import type { PolicySnapshot } from '../policy/snapshot.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import type { Interception, PodAddresses } from '../dataplane/interception.js';
import type { SourceUpdate, StateSource } from '../source/source.js';

export const PHASES = ['starting', 'fail_closed', 'enforcing', 'draining', 'stopped'] as const;
export type Phase = (typeof PHASES)[number];

export interface AgentOptions {
  readonly nodeName: string | undefined;
  /** Intercept every pod whatever its node (one lab node hosting a whole cluster). */
  readonly interceptAllPods: boolean;
  /** How long live TCP flows may take to finish after stop() (default 0: reset at once). */
  readonly shutdownGraceMs?: number;
}

/** Optional observers (metrics). */
export interface AgentHooks {
  /** A snapshot was compiled and swapped in; `seconds`: its compile time. */
  snapshotApplied?(snap: PolicySnapshot, seconds: number): void;
  phaseChanged?(phase: Phase): void;
}

/** A request to explain a flow under the enforced state (the explain socket's payload). */
export interface ExplainRequest {
  readonly from: string;
  readonly to: string;
  readonly port: number;
  readonly protocol?: string;
  readonly family?: number;
}

export interface ExplainResult {
  readonly from: { readonly endpoint: string; readonly ip: string };
  readonly to: { readonly endpoint: string; readonly ip: string };
  readonly protocol: Protocol;
  readonly port: number;
  /** The agent's enforcement of this flow: a denied flow let through by audit mode is `audit`. */
  readonly enforcement: 'allow' | 'deny' | 'audit';
  readonly explanation: FlowExplanation;
}

/** Resolves `from`/`to` against a state and explains the flow under its snapshot. */
export function explainRequest(state: ClusterState, snap: PolicySnapshot, req: ExplainRequest): { from: { endpoint: string; ip: string }; to: { endpoint: string; ip: string }; protocol: Protocol; port: number; key: FlowKey; explanation: FlowExplanation } {
  if (typeof req !== 'object' || req === null) throw new NetpoldError('NETPOLD_E_USAGE', 'an explain request is a JSON object {from, to, port, protocol?, family?}');
  if (req.protocol !== undefined && typeof req.protocol !== 'string') throw new NetpoldError('NETPOLD_E_USAGE', 'protocol must be TCP, UDP or SCTP');
  const protocol = (req.protocol ?? 'TCP').toUpperCase() as Protocol;
  if (!PROTOCOLS.includes(protocol)) throw new NetpoldError('NETPOLD_E_USAGE', `protocol must be one of ${PROTOCOLS.join(', ')}, not ${String(req.protocol)}`);
  if (!Number.isInteger(req.port) || req.port < 1 || req.port > 65535) throw new NetpoldError('NETPOLD_E_USAGE', `port must be a number from 1 to 65535, not ${String(req.port)}`);
  if (req.family !== undefined && req.family !== 4 && req.family !== 6) throw new NetpoldError('NETPOLD_E_USAGE', `family must be 4 or 6, not ${String(req.family)}`);
  if (typeof req.from !== 'string' || typeof req.to !== 'string') throw new NetpoldError('NETPOLD_E_USAGE', 'from and to must be NS/POD or an IP address');
  const from = resolveEndpoint(state, req.from, '--from');
  const to = resolveEndpoint(state, req.to, '--to');
  const [srcIp, dstIp] = pickAddresses(from, to, req.family as 4 | 6 | undefined);
  const key = new FlowKey();
  const err = flowFromText(key, protocol, srcIp, dstIp, req.port);
  if (err) throw new NetpoldError('NETPOLD_E_USAGE', err);
  return { from: { endpoint: from.label, ip: srcIp }, to: { endpoint: to.label, ip: dstIp }, protocol, port: req.port, key, explanation: explainFlow(snap, key) };
}

export class Agent {
  private readonly compiler = new Compiler();
  private revision = 0;
  private podKey = '';
  private readyLogged = false;
  private phaseNow: Phase = 'starting';
  /** The state the enforced snapshot was compiled from (for explain requests). */
  private state: ClusterState | undefined;
  private auditNamespaces: ReadonlySet<string> = new Set();
  private queue: Promise<void> = Promise.resolve();
  // SCTP is enforced in the kernel from the same snapshot. Rendering and loading that table
  // takes longer than swapping a snapshot, so it runs beside the update queue, coalesced: only
  // the newest snapshot waiting is rendered.
  private sctpNext: PolicySnapshot | undefined;
  private sctpWork: Promise<void> = Promise.resolve();
  private sctpBusy = false;

  constructor(
    private readonly source: StateSource,
    private readonly dataplane: Dataplane,
    private readonly interception: Interception,
    private readonly log: Logger,
    private readonly options: AgentOptions,
    private readonly hooks: AgentHooks = {},
  ) {}

  get phase(): Phase {
    return this.phaseNow;
  }

  /** Interception is in place (its nftables table and policy routing). */
  get interceptionInstalled(): boolean {
    return this.interception.isInstalled;
  }

  /**
   * Ready: interception installed and doing its whole job (pods on a bridge redirected), and a
   * snapshot enforced.
   */
  get ready(): boolean {
    return this.phaseNow === 'enforcing' && this.interception.healthy && this.dataplane.ready;
  }

  /** Bridge ports whose traffic is redirected now. */
  get bridgePorts(): number {
    return this.interception.bridgePorts.length;
  }

  /** Interception installed but not doing its whole job (see Interception.healthy). */
  get interceptionDegraded(): boolean {
    return this.interception.isInstalled && !this.interception.healthy;
  }

  /** Namespaces in audit mode under the enforced state. */
  get auditNamespaceCount(): number {
    return this.auditNamespaces.size;
  }

  private setPhase(p: Phase): void {
    if (p === this.phaseNow) return;
    this.phaseNow = p;
    this.hooks.phaseChanged?.(p);
  }

  /** Explains a flow under the enforced state (the explain socket). Throws NetpoldError. */
  explain(req: ExplainRequest): ExplainResult {
    const snap = this.dataplane.current;
    const state = this.state;
    if (!snap || !state) throw new NetpoldError('NETPOLD_E_USAGE', 'no policy state is enforced yet: the agent refuses every flow until its first state is compiled');
    const r = explainRequest(state, snap, req);
    const d = decide(snap, r.key, new Decision());
    const enforcement = d.allowed ? 'allow' : this.dataplane.auditApplies(d) ? 'audit' : 'deny';
    return { from: r.from, to: r.to, protocol: r.protocol, port: r.port, enforcement, explanation: r.explanation };
  }

  async start(): Promise<void> {
    await this.interception.setup();
    this.setPhase('fail_closed');
    await this.dataplane.start();
    this.log.info({ port: 'listening' }, 'interception installed; refusing all flows until a policy state is compiled');
    await this.source.start((u) => {
      // Updates are applied one at a time, in order.
      this.queue = this.queue.then(() => this.apply(u)).catch((e: unknown) => {
        this.log.error({ error: e instanceof Error ? e.message : String(e) }, 'applying a state update failed; the last good snapshot stays enforced');
      });
    });
    await this.queue;
  }

  /**
   * Stops: no more state updates; new flows refused while live TCP flows may finish (for at
   * most `shutdownGraceMs`, or until `abort` resolves); then the rest is reset and interception
   * removed. Interception stays in place during the drain: the relayed flows need it.
   */
  async stop(abort?: Promise<void>): Promise<void> {
    const wasEnforcing = this.phaseNow === 'enforcing';
    this.setPhase('draining');
    await this.source.stop();
    await this.queue;
    this.sctpNext = undefined;
    await this.sctpWork;
    if (wasEnforcing) {
      const grace = this.options.shutdownGraceMs ?? 0;
      const live = this.dataplane.liveTcpFlows;
      if (live > 0 && grace > 0) this.log.info({ flows: live, graceMs: grace }, 'draining: new flows are refused; live TCP flows may finish');
      const r = await this.dataplane.drain(grace, abort);
      if (live > 0) this.log.info({ finished: r.finished, reset: r.left }, r.finished ? 'drained: every live flow finished' : 'drain ended: resetting the flows left');
    }
    await this.dataplane.stop();
    const problems = await this.interception.teardown();
    for (const p of problems) this.log.warn({ problem: p }, 'interception teardown');
    this.setPhase('stopped');
    this.log.info({}, 'stopped: interception removed');
  }

  private scheduleSctp(snap: PolicySnapshot, pods: PodAddresses): void {
    this.sctpNext = snap;
    if (this.sctpBusy) return;
    this.sctpBusy = true;
    const all = this.options.interceptAllPods || this.options.nodeName === undefined;
    this.sctpWork = (async () => {
      while (this.sctpNext) {
        const s = this.sctpNext;
        this.sctpNext = undefined;
        try {
          const t0 = performance.now();
          const text = renderNftEnforcement(s, {
            table: this.interception.sctpTable,
            protocols: ['SCTP'],
            localPods: all ? 'all' : { nodeName: this.options.nodeName! },
          });
          await this.interception.applySctp(text);
          this.log.info({ revision: s.revision, ms: Math.round(performance.now() - t0), localPods: pods.v4.length + pods.v6.length }, 'sctp kernel rules enforced');
        } catch (e) {
          this.log.error({ revision: s.revision, error: (e as Error).message }, 'sctp kernel rules could not be loaded; the previous ones stay');
        }
      }
      this.sctpBusy = false;
    })();
  }

  private async apply(u: SourceUpdate): Promise<void> {
    for (const e of u.errors) this.log.error({ code: e.code, file: e.file, object: e.object, path: e.path }, formatManifestError(e));
    if (u.unusable) {
      this.log.error({ errors: u.errors.length, revision: this.dataplane.revision }, 'manifests could not be read as a whole; keeping the last good snapshot');
      return;
    }
    const t0 = performance.now();
    const snap = this.compiler.compile(u.state, { revision: ++this.revision, localNode: this.options.nodeName });
    const seconds = (performance.now() - t0) / 1000;
    const audit = new Set(u.state.namespaces.filter((n) => n.audit === true).map((n) => n.name));
    this.dataplane.setSnapshot(snap, { auditNamespaces: audit });
    this.state = u.state;
    if (audit.size > 0 || this.auditNamespaces.size > 0) {
      if ([...audit].sort().join(',') !== [...this.auditNamespaces].sort().join(',')) this.log.info({ namespaces: [...audit].sort() }, 'namespaces in audit mode (their would-be denials are let through and logged)');
    }
    this.auditNamespaces = audit;
    this.hooks.snapshotApplied?.(snap, seconds);
    this.log.info({ revision: snap.revision, ...snap.stats }, 'snapshot enforced');
    const pods = localPodAddresses(u.state, this.options.interceptAllPods ? undefined : this.options.nodeName, this.options.interceptAllPods);
    const key = `${pods.v4.join(',')}|${pods.v6.join(',')}`;
    if (key !== this.podKey) {
      await this.interception.updatePods(pods);
      this.podKey = key;
      this.log.info({ v4: pods.v4.length, v6: pods.v6.length }, 'intercepting the pods of this node');
    }
    this.scheduleSctp(snap, pods);
    if (this.phaseNow === 'fail_closed') this.setPhase('enforcing');
    if (!this.readyLogged) {
      this.readyLogged = true;
      this.log.info({ revision: snap.revision }, 'ready');
    }
  }
}

/**
 * The pods whose traffic this node intercepts: pods with `spec.nodeName` equal to the node's
 * name, or every pod when no pod names a node (a single-node setup from manifests).
 */
export function localPodAddresses(state: ClusterState, nodeName: string | undefined, all = false): PodAddresses {
  const anyNode = !all && state.pods.some((p) => p.node !== undefined);
  const v4: string[] = [];
  const v6: string[] = [];
  for (const p of state.pods) {
    if (p.hostNetwork) continue;
    if (anyNode && p.node !== nodeName) continue;
    for (const ip of p.ips) (ip.includes(':') ? v6 : v4).push(ip);
  }
  v4.sort();
  v6.sort();
  return { v4, v6 };
}
