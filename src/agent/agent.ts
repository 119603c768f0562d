// The agent: a state source feeding compile, the data plane enforcing the newest good
// snapshot, and kernel interception for the pods of this node. Wired in one place (here),
// with every collaborator passed in.
//
// Fail-closed phases:
// - before the first usable state: interception redirects all forwarded TCP/UDP traffic to the
//   agent, which refuses every flow;
// - running: a state that cannot be read as a whole (broken YAML, unreadable file) is not
//   applied, the last good snapshot stays enforced; an invalid policy inside a readable state
//   is applied failing closed (its pods stay isolated, no rule of it opens anything);
// - stopping: listeners close, live flows are reset, interception is removed (traffic then
//   flows without enforcement: the node's normal forwarding).
import { formatManifestError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ClusterState } from '../model/types.js';
import { Compiler } from '../policy/compile.js';
import { renderNftEnforcement } from '../policy/nft-target.js';
import type { PolicySnapshot } from '../policy/snapshot.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import type { Interception, PodAddresses } from '../dataplane/interception.js';
import type { SourceUpdate, StateSource } from '../source/source.js';

export interface AgentOptions {
  readonly nodeName: string | undefined;
  /** Intercept every pod whatever its node (one lab node hosting a whole cluster). */
  readonly interceptAllPods: boolean;
}

export class Agent {
  private readonly compiler = new Compiler();
  private revision = 0;
  private podKey = '';
  private readyLogged = false;
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
  ) {}

  async start(): Promise<void> {
    await this.interception.setup();
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

  async stop(): Promise<void> {
    await this.source.stop();
    await this.queue;
    this.sctpNext = undefined;
    await this.sctpWork;
    await this.dataplane.stop();
    const problems = await this.interception.teardown();
    for (const p of problems) this.log.warn({ problem: p }, 'interception teardown');
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
    const snap = this.compiler.compile(u.state, { revision: ++this.revision, localNode: this.options.nodeName });
    this.dataplane.setSnapshot(snap);
    this.log.info({ revision: snap.revision, ...snap.stats }, 'snapshot enforced');
    const pods = localPodAddresses(u.state, this.options.interceptAllPods ? undefined : this.options.nodeName, this.options.interceptAllPods);
    const key = `${pods.v4.join(',')}|${pods.v6.join(',')}`;
    if (key !== this.podKey) {
      await this.interception.updatePods(pods);
      this.podKey = key;
      this.log.info({ v4: pods.v4.length, v6: pods.v6.length }, 'intercepting the pods of this node');
    }
    this.scheduleSctp(snap, pods);
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
