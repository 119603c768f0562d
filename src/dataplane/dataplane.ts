// The data plane: transparent listeners, the flow table, and the decision of each new flow
// against the current snapshot. Policy is swapped in with setSnapshot(); live flows are then
// re-evaluated and those no longer allowed are closed (unless `existingFlows` is 'keep').
// Until a first snapshot is set, every flow is refused: the agent fails closed.
//
// Observability stays off the hot path: the counters below are plain numbers and typed arrays
// that the metrics module reads when scraped; each first-packet decision is timed for the
// latency histogram, and handed to the flow log (which only queues it, bounded).
//
// Audit mode (`mode: 'audit'`, or pods of namespaces in audit mode, see src/policy/audit.ts):
// a flow the policies deny is let through like an allowed one, counted and flow-logged as an
// audited denial.
import { connect as netConnect, type Socket } from 'node:net';
import { availableParallelism, networkInterfaces } from 'node:os';
import { FlowTable, type FlowEntry } from '../conntrack/flow-table.js';
import type { FlowRecorder } from '../flowlog/flow-log.js';
import type { Logger } from '../log.js';
import { formatAddr, parseAddrInto, PROTO_TCP, PROTO_UDP, protocolName } from '../policy/addr.js';
import { auditLifts, auditMask } from '../policy/audit.js';
import { Decision, FlowKey, decide } from '../policy/decide.js';
import type { PolicySnapshot } from '../policy/snapshot.js';
import { AddrTable } from '../policy/addr-table.js';
import {
  FAST_DONE_WORDS,
  FAST_PENDING_WORDS,
  FAST_VERDICT_WORDS,
  FastAction,
  FastEnd,
  type FastTcpPath,
  type IpFamily,
  type NativeSockets,
  type TcpFlow,
  type TransparentTcpListener,
  type UdpHandle,
} from './native.js';
import { relayTcpSplice, SPLICE_PROGRESS_MS } from './splice-relay.js';
import { relayTcp, type RelayEvents, type UpstreamConnector } from './tcp-relay.js';

export interface DataplaneConfig {
  /** Port of the transparent listeners on 127.0.0.1 and [::1] (TCP and UDP). */
  readonly port: number;
  readonly flowTableSize: number;
  /** A UDP flow without datagrams for this long is closed. */
  readonly udpIdleMs: number;
  readonly existingFlows: 'revalidate' | 'keep';
  readonly connectTimeoutMs: number;
  /** Which families to listen on (a host without IPv6 can leave out 6). */
  readonly families: readonly IpFamily[];
  /** `audit`: every flow is decided and logged, and let through (default `enforce`). */
  readonly mode?: 'enforce' | 'audit';
  /**
   * How allowed TCP flows move their bytes: `splice` in the kernel on the addon's own thread
   * (falls back to `js` where the addon cannot), or `js` (stream piping in Node). Default js
   * here; the agent's --relay defaults to splice.
   */
  readonly relay?: 'js' | 'splice';
  /**
   * With `splice`: engine loops (threads) accepting and relaying TCP, each with its own socket
   * of a SO_REUSEPORT listener group (default: the number of CPUs less one, at least 1, at most 16).
   */
  readonly relayThreads?: number;
  /**
   * With `splice`: entries of each engine loop's cache of TCP relay verdicts (0 or a power of
   * two; default 0: none; the agent's --verdict-cache defaults to 4096). See decideFastBatch().
   */
  readonly verdictCacheSize?: number;
}

/** The dummy interface kube-proxy's IPVS mode puts every Service address on. */
const IPVS_INTERFACE = 'kube-ipvs0';

/** Optional collaborators: the decision-latency observer and the flow log. */
export interface DataplaneHooks {
  /** The node's own addresses (default: os.networkInterfaces()); tests substitute their own. */
  readonly localAddresses?: () => Readonly<Record<string, readonly { address: string }[] | undefined>>;
  /** Called with the duration of each first-packet decision, in seconds. */
  readonly observeDecision?: (seconds: number) => void;
  readonly flowLog?: FlowRecorder;
}

/** Flow verdicts as the data plane enforced them: index into DataplaneCounters.flows. */
export const FLOW_VERDICTS = ['allow', 'deny', 'audit'] as const;
/** Protocols the data plane relays: index into DataplaneCounters.flows. */
export const FLOW_PROTOCOLS = ['TCP', 'UDP'] as const;

export interface DataplaneCounters {
  /** First-packet decisions by the policies' verdict (an audited flow counts as deny). */
  decisions: { allow: number; deny: number };
  /** The same decisions by side status: index egress * 6 + ingress (Side values). */
  readonly bySides: Float64Array;
  /** Decided flows by protocol and enforced verdict: index protocol * 3 + verdict (FLOW_PROTOCOLS, FLOW_VERDICTS). */
  readonly flows: Float64Array;
  /** Denied flows let through by audit mode. */
  audited: number;
  refusedNotReady: number;
  /** New flows refused while draining at shutdown. */
  refusedDraining: number;
  refusedTableFull: number;
  closedByPolicyChange: number;
  upstreamErrors: number;
  bytesToServer: number;
  bytesToClient: number;
  udpDropped: number;
}

interface UdpFlow {
  upstream: UdpHandle | undefined;
  reply: ReplySocket | undefined;
}

interface ReplySocket {
  handle: UdpHandle;
  users: number;
  key: string;
}

export class Dataplane {
  readonly table: FlowTable;
  readonly counters: DataplaneCounters = {
    decisions: { allow: 0, deny: 0 },
    bySides: new Float64Array(36),
    flows: new Float64Array(6),
    audited: 0,
    refusedNotReady: 0,
    refusedDraining: 0,
    refusedTableFull: 0,
    closedByPolicyChange: 0,
    upstreamErrors: 0,
    bytesToServer: 0,
    bytesToClient: 0,
    udpDropped: 0,
  };
  private snapshot: PolicySnapshot | undefined;
  private readonly tcpListeners: TransparentTcpListener[] = [];
  private readonly udpListeners: UdpHandle[] = [];
  private readonly udpFlows = new Map<FlowEntry, UdpFlow>();
  private readonly replySockets = new Map<string, ReplySocket>();
  private sweeper: NodeJS.Timeout | undefined;
  private stopping = false;
  private draining = false;
  /** TCP flows being relayed (allowed, not yet closed). */
  private liveTcp = 0;
  private drained: (() => void) | undefined;
  /** Per pod of the snapshot, 1 when its namespace is in audit mode (null: none). */
  private auditPods: Uint8Array | null = null;
  /** Live flows let through by audit mode (metrics: active flows by verdict). */
  private readonly auditedFlows = new WeakSet<FlowEntry>();
  // Scratch reused by every decision: the hot path allocates no key or result per packet.
  private ipvsReported = false;
  private rawSendReported = false;
  /** The same addresses as numbers, for the fast path (value 1 = local). */
  private localTable = new AddrTable(4);
  // The TCP fast path (relay 'splice' with the real addon): see startFast().
  private fast: FastTcpPath | undefined;
  private readonly fastListeners: number[] = [];
  private readonly fastPending = new Uint32Array(256 * FAST_PENDING_WORDS);
  private readonly fastVerdictBuf = new Float64Array(256 * FAST_VERDICT_WORDS);
  private readonly fastDoneBuf = new Float64Array(256 * FAST_DONE_WORDS);
  /** Live fast-path relays by tag (the tag is an index here, freed when the relay's end is taken). */
  private fastFlows: (FlowEntry | undefined)[] = [];
  private fastFreeTags: number[] = [];
  /** Bytes of each live relay already counted (progress polls), by tag: [toServer, toClient]. */
  private fastReported = new Float64Array(2 * 256);
  private fastTicker: NodeJS.Timeout | undefined;
  /** The engine's verdict-cache generation of the current snapshot (0: verdicts are not cached). */
  private fastGen = 0;
  private fastDrainScheduled = false;
  /** Fast-path flows (TCP relays, UDP flows) whose end has not been taken yet. */
  private fastLive = 0;
  /** e.close of fast-path flows (one function for all: the relay id is on the entry). */
  private readonly fastClose: (this: FlowEntry) => void;
  private readonly key = new FlowKey();
  private readonly decision = new Decision();

  constructor(
    private readonly native: NativeSockets,
    private readonly log: Logger,
    private readonly config: DataplaneConfig,
    private readonly hooks: DataplaneHooks = {},
  ) {
    this.table = new FlowTable(config.flowTableSize, config.udpIdleMs);
    const dp = this;
    this.fastClose = function (this: FlowEntry) {
      if (this.handle > 0) dp.fast?.abort(this.handle);
    };
  }

  get mode(): 'enforce' | 'audit' {
    return this.config.mode ?? 'enforce';
  }

  /** The snapshot enforced (undefined before the first). */
  get current(): PolicySnapshot | undefined {
    return this.snapshot;
  }

  /** Whether a live flow was let through by audit mode. */
  isAudited(e: FlowEntry): boolean {
    return this.auditedFlows.has(e);
  }

  /** Whether audit mode lets this denied decision through under the current snapshot. */
  auditApplies(d: Decision): boolean {
    return !d.allowed && (this.config.mode === 'audit' || auditLifts(this.auditPods, d));
  }

  get ready(): boolean {
    return this.snapshot !== undefined;
  }

  get revision(): number {
    return this.snapshot?.revision ?? 0;
  }

  /** The listeners start() opened, per family in config order (read-only; empty after stop()). */
  get listeners(): { readonly tcp: readonly TransparentTcpListener[]; readonly udp: readonly UdpHandle[] } {
    return { tcp: this.tcpListeners, udp: this.udpListeners };
  }

  /** Whether TCP goes through the native fast path (see startFast()). */
  get fastPath(): boolean {
    return this.fast !== undefined;
  }

  async start(): Promise<void> {
    this.refreshLocalAddresses();
    if (this.config.relay === 'splice' && this.native.fastTcpPath) this.startFast(this.native.fastTcpPath());
    for (const family of this.config.families) {
      const address = family === 4 ? '127.0.0.1' : '::1';
      if (this.fast) {
        // Default: a thread per CPU but one, which the JavaScript thread (decisions, the rest of
        // the agent) keeps. Measured on 2 CPUs shared with the load generator: 1 engine thread
        // made ~15-40% more connections/s than 2, at ~15% less agent CPU per connection.
        const threads = Math.max(1, Math.min(16, this.config.relayThreads ?? availableParallelism() - 1));
        this.fastListeners.push(this.fast.listen(family, address, this.config.port, 4096, threads, 6).id);
        // UDP: one engine loop holds every UDP flow (its table needs no lock; see the addon).
        this.fastListeners.push(this.fast.listen(family, address, this.config.port, 1, 1, 17).id);
        continue;
      }
      this.tcpListeners.push(
        await this.native.listenTransparentTcp({ family, address, port: this.config.port }, (socket, flow) => this.onTcp(socket, flow)),
      );
      this.udpListeners.push(
        this.native.openUdp({ family, address, port: this.config.port, transparent: true, recvOrigDst: true }, (m, sa, sp, da, dp) =>
          this.onDatagram(m, sa, sp, da, dp),
        ),
      );
    }
    this.sweeper = setInterval(() => this.sweepIdleUdp(), Math.max(250, Math.min(5_000, this.config.udpIdleMs / 4)));
    this.sweeper.unref();
  }

  /**
   * Swaps in a new snapshot and re-evaluates live flows under it. `auditNamespaces`: the
   * namespaces in audit mode (their pods' would-be denials are let through).
   */
  /**
   * The node's own addresses. A flow to one of them cannot be relayed from the client's address:
   * the node's reply to a pod address is routed to the pod, not to a transparent socket. Such
   * upstream connections leave from the node's own address instead (the destination is the
   * node itself, so no other host sees the difference). Refreshed with every snapshot.
   */
  private refreshLocalAddresses(): void {
    const next = new Set<string>();
    const interfaces = (this.hooks.localAddresses ?? networkInterfaces)() ?? {};
    for (const list of Object.values(interfaces)) {
      for (const a of list ?? []) next.add(a.address);
    }
    if (interfaces[IPVS_INTERFACE] !== undefined && !this.ipvsReported) {
      // IPVS translates a Service address in the input hook, after our prerouting redirect: a
      // pod's connection to a ClusterIP is taken by IPVS (or, when it reaches us, decided on the
      // Service address, a local address of the node, and relayed from the node's address).
      // Neither enforces policy; said once per start, loudly.
      this.ipvsReported = true;
      this.log.error(
        { interface: IPVS_INTERFACE, code: 'NETPOLD_E_UNSUPPORTED_NODE' },
        'kube-proxy runs in IPVS mode on this node (interface kube-ipvs0): Service traffic is translated after interception and is not enforced; run kube-proxy in iptables or nftables mode',
      );
    }
    const table = new AddrTable(next.size + 1);
    const w = new Uint32Array(4);
    for (const a of next) {
      const fam = parseAddrInto(a, w);
      if (fam !== 0) table.insert(fam, w, 1);
    }
    this.localTable = table;
  }

  /**
   * Whether an allowed flow is relayed from the node's own address rather than the client's:
   * when its destination is the node (above), or the client itself (hairpin: a pod reaching its
   * own Service; from its own address, the pod's kernel would drop the packet as a martian, so
   * kube-proxy masquerades hairpin traffic to the node's address too).
   */
  private fromNode(key: FlowKey): boolean {
    if (this.localTable.get(key.family, key.dst) >= 0) return true;
    const n = key.family === 6 ? 4 : 1;
    for (let i = 0; i < n; i++) if (key.src[i] !== key.dst[i]) return false;
    return true;
  }

  setSnapshot(snap: PolicySnapshot, options: { readonly auditNamespaces?: ReadonlySet<string> } = {}): void {
    this.refreshLocalAddresses();
    this.snapshot = snap;
    this.auditPods = auditMask(snap, options.auditNamespaces ?? new Set());
    // Verdicts the engine cached under the old snapshot (or node addresses) are void from here.
    this.renewVerdictCache();
    if (this.config.existingFlows === 'keep') return;
    let closed = 0;
    for (const e of this.table.all()) {
      if (e.state === 'closed') continue;
      decide(snap, e.toKey(this.key), this.decision);
      const audited = this.auditApplies(this.decision);
      if (this.decision.allowed || audited) {
        if (e.state === 'denied') {
          this.dropFlow(e); // the next datagram is decided afresh
          if (e.handle > 0) e.close('re-decided'); // the engine forgets its denial
        }
        else {
          e.revision = snap.revision;
          if (audited) this.auditedFlows.add(e);
          else this.auditedFlows.delete(e);
        }
        continue;
      }
      if (e.state === 'denied') continue;
      closed++;
      this.counters.closedByPolicyChange++;
      this.log.info(this.flowFields(e, snap), 'flow closed: no longer allowed after a policy change');
      this.dropFlow(e);
      e.close('policy change');
    }
    if (closed > 0) this.log.info({ revision: snap.revision, closed }, 'live flows re-evaluated');
  }

  /**
   * Shutdown, first step: refuses new flows (reset / dropped, counted) and lets live TCP flows
   * finish, for at most `graceMs`. Resolves when no TCP flow is left or the time is up (or at
   * once with `abort`); stop() then closes what is left. UDP flows, which end only by idling,
   * keep relaying meanwhile and are closed by stop().
   */
  async drain(graceMs: number, abort?: Promise<void>): Promise<{ finished: boolean; left: number }> {
    this.draining = true;
    this.renewVerdictCache();
    if (this.liveTcp > 0 && graceMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => (this.drained = resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs))),
        ...(abort ? [abort] : []),
      ]);
      clearTimeout(timer);
      this.drained = undefined;
    }
    return { finished: this.liveTcp === 0, left: this.liveTcp };
  }

  /** True from drain() on. */
  get isDraining(): boolean {
    return this.draining;
  }

  /** TCP flows being relayed. */
  get liveTcpFlows(): number {
    return this.liveTcp;
  }

  /** Stops accepting, closes every flow (reset), closes the listeners. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.renewVerdictCache();
    clearInterval(this.sweeper);
    for (const e of this.table.all()) {
      this.dropFlow(e);
      e.close('agent stopping');
    }
    for (const u of this.udpListeners) u.close();
    this.udpListeners.length = 0;
    for (const id of this.fastListeners) this.fast?.closeListener(id);
    this.fastListeners.length = 0;
    clearInterval(this.fastTicker);
    await Promise.all(this.tcpListeners.map((l) => l.close()));
    this.tcpListeners.length = 0;
  }

  // --- TCP -------------------------------------------------------------------------------

  private onTcp(socket: Socket, flow: TcpFlow): void {
    socket.on('error', () => {}); // resets from the client are normal; the relay handles them
    const key = this.key;
    if (!this.fillKey(PROTO_TCP, flow.srcAddress, flow.srcPort, flow.dstAddress, flow.dstPort)) {
      socket.resetAndDestroy();
      return;
    }
    const snap = this.snapshot;
    if (!snap || this.stopping || this.draining) {
      if (this.draining && !this.stopping) this.counters.refusedDraining++;
      else this.counters.refusedNotReady++;
      socket.resetAndDestroy();
      return;
    }
    // Register before deciding: a policy change from here on re-evaluates this flow too.
    const e = this.table.register(key, Date.now());
    if (!e) {
      this.counters.refusedTableFull++;
      this.log.warn({ capacity: this.table.capacity }, 'flow refused: flow table full (NETPOLD_E_FLOW_TABLE_FULL)');
      socket.resetAndDestroy();
      return;
    }
    this.decideFirst(snap, key, e, 0);
    if (e.state === 'denied') {
      this.table.remove(e);
      // TPROXY completed the handshake already: the client sees a reset right after connecting.
      socket.resetAndDestroy();
      return;
    }
    this.liveTcp++;
    const toNode = this.fromNode(key);
    const connect: UpstreamConnector = toNode
      ? (o) => connectPlain(o.dstAddress, o.dstPort, this.config.connectTimeoutMs)
      : (o) => this.native.connectTransparentTcp({ ...o, timeoutMs: this.config.connectTimeoutMs });
    const events: RelayEvents = {
      bytes: (dir, n) => {
        e.lastSeen = Date.now(); // traffic: not idle, so not evicted when the table is full
        if (dir === 'toServer') this.counters.bytesToServer += n;
        else this.counters.bytesToClient += n;
      },
      upstreamError: (code) => {
        this.counters.upstreamErrors++;
        this.log.debug({ ...this.flowFields(e, snap), code }, 'upstream connect failed');
      },
      closed: () => {
        this.table.remove(e);
        if (--this.liveTcp === 0) this.drained?.();
      },
    };
    if (this.config.relay === 'splice') {
      const connectFd = toNode ? undefined : this.native.connectTransparentTcpFd;
      void relayTcpSplice(socket, e, connect, events, this.native, {
        connectFd: connectFd && ((o) => connectFd.call(this.native, { ...o, timeoutMs: this.config.connectTimeoutMs })),
      });
    } else {
      void relayTcp(socket, e, connect, events);
    }
  }

  // --- TCP, fast path ------------------------------------------------------------------------
  //
  // With relay 'splice' and the real addon, TCP never meets a net.Socket: the addon's engine
  // loops accept (one SO_REUSEPORT listener socket per loop, so on every core), queue each
  // connection with its addresses, and wake this thread once per batch. onFastWork() then drains
  // the queue in batches of up to 256: one decision per connection against the snapshot, one
  // native call with all the verdicts; the engine connects upstream and splices. Ended relays
  // come back the same way. The decision stays on this thread, with the one compiled snapshot:
  // at well under a microsecond per decision it is not what limits the connection rate; accept,
  // connect and relaying (the syscalls) are, and they run on every core.

  private startFast(fast: FastTcpPath): void {
    this.fast = fast;
    fast.open(() => this.onFastWork(), {
      connectTimeoutMs: this.config.connectTimeoutMs,
      udpIdleMs: this.config.udpIdleMs,
      verdictCacheSize: this.config.verdictCacheSize ?? 0,
    });
    this.renewVerdictCache();
  }

  /**
   * Whenever a verdict may change (a snapshot, with the node's addresses; draining; stopping):
   * the engine forgets its cached verdicts, and the next ones are cached under a new generation;
   * none while there is no snapshot or new connections are refused.
   */
  private renewVerdictCache(): void {
    if (!this.fast) return;
    const gen = this.fast.invalidate();
    this.fastGen = this.snapshot && !this.draining && !this.stopping ? gen : 0;
  }

  private onFastWork(): void {
    const fast = this.fast;
    if (!fast) return;
    this.fastDrainScheduled = false;
    // Bounded per turn of the event loop, so that a flood of connections cannot starve the
    // rest of the agent (metrics, the policy source); the remainder is taken next turn.
    for (let round = 0; round < 16; round++) {
      const n = fast.takePending(this.fastPending);
      if (n > 0) this.decideFastBatch(fast, n);
      const m = fast.takeDone(this.fastDoneBuf);
      if (m > 0) this.finishFastBatch(m);
      if (n === 0 && m === 0) return;
    }
    if (!this.fastDrainScheduled) {
      this.fastDrainScheduled = true;
      setImmediate(() => this.onFastWork());
    }
  }

  private decideFastBatch(fast: FastTcpPath, n: number): void {
    const p = this.fastPending;
    const v = this.fastVerdictBuf;
    const key = this.key;
    const snap = this.snapshot;
    const now = Date.now();
    for (let i = 0; i < n; i++) {
      const o = i * FAST_PENDING_WORDS;
      const r = i * FAST_VERDICT_WORDS;
      v[r] = p[o]!;
      v[r + 1] = FastAction.Refuse;
      v[r + 2] = 0;
      if (!snap || this.stopping || this.draining) {
        if (this.draining && !this.stopping) this.counters.refusedDraining++;
        else this.counters.refusedNotReady++;
        continue;
      }
      const udp = p[o + 12] === PROTO_UDP;
      key.family = p[o + 1] === 6 ? 6 : 4;
      key.proto = udp ? PROTO_UDP : PROTO_TCP;
      key.src[0] = p[o + 2]!;
      key.src[1] = p[o + 3]!;
      key.src[2] = p[o + 4]!;
      key.src[3] = p[o + 5]!;
      key.dst[0] = p[o + 6]!;
      key.dst[1] = p[o + 7]!;
      key.dst[2] = p[o + 8]!;
      key.dst[3] = p[o + 9]!;
      key.srcPort = p[o + 10]!;
      key.dstPort = p[o + 11]!;
      const e = this.table.register(key, now);
      if (!e) {
        this.counters.refusedTableFull++;
        this.log.warn({ capacity: this.table.capacity }, 'flow refused: flow table full (NETPOLD_E_FLOW_TABLE_FULL)');
        continue;
      }
      this.decideFirst(snap, key, e, udp ? 1 : 0);
      if (e.state === 'denied' && !udp) {
        // TPROXY completed the handshake already: the client sees a reset right after connecting.
        this.table.remove(e);
        continue;
      }
      // A denied UDP flow is remembered (natively: its datagrams are dropped there) until it
      // idles or a policy change re-decides it.
      let tag = this.fastFreeTags.pop();
      if (tag === undefined) {
        tag = this.fastFlows.length;
        this.fastFlows.push(undefined);
        if (2 * this.fastFlows.length > this.fastReported.length) {
          const grown = new Float64Array(this.fastReported.length * 2);
          grown.set(this.fastReported);
          this.fastReported = grown;
        }
      }
      this.fastFlows[tag] = e;
      this.fastReported[2 * tag] = 0;
      this.fastReported[2 * tag + 1] = 0;
      e.close = this.fastClose;
      v[r + 1] =
        e.state === 'denied' ? FastAction.Deny : this.fromNode(key) ? FastAction.RelayFromNode : FastAction.Relay;
      v[r + 2] = tag;
      this.fastLive++;
      if (!udp) this.liveTcp++;
    }
    // Relay verdicts are cached in the engine under this snapshot's generation. A connection
    // the engine relayed from its cache already (cachedAction != 0) was decided above all the
    // same: that verdict is the one that counts (flow log, counters, tracking); the engine
    // adopts the relay when it agrees and aborts it when not (a refusal, a denial).
    fast.verdicts(v, n, this.fastGen);
    for (let i = 0; i < n; i++) {
      const r = i * FAST_VERDICT_WORDS;
      if (v[r + 1] === FastAction.Refuse) continue;
      const tag = v[r + 2]!;
      const e = this.fastFlows[tag]!;
      e.handle = v[r + 3]!;
      if (e.handle === 0) {
        // Nothing runs for it, and no completion follows: (never in practice) the engine had no
        // relay slot left and reset it. (A relay from the verdict cache that ended before this
        // verdict is adopted all the same; its completion follows.)
        this.fastFlows[tag] = undefined;
        this.fastFreeTags.push(tag);
        this.fastLive--;
        if (e.proto === PROTO_TCP && --this.liveTcp === 0) this.drained?.();
        e.state = 'closed';
        this.table.remove(e);
      }
    }
    if (this.fastLive === 0 && this.fastTicker !== undefined) {
      clearInterval(this.fastTicker);
      this.fastTicker = undefined;
    }
    if (this.fastTicker === undefined && this.fastLive > 0) {
      this.fastTicker = setInterval(() => this.tickFast(), SPLICE_PROGRESS_MS);
      this.fastTicker.unref();
    }
  }

  private finishFastBatch(m: number): void {
    const d = this.fastDoneBuf;
    for (let i = 0; i < m; i++) {
      const o = i * FAST_DONE_WORDS;
      const tag = d[o]!;
      const e = this.fastFlows[tag];
      if (e === undefined) continue;
      this.fastFlows[tag] = undefined;
      this.fastFreeTags.push(tag);
      this.counters.bytesToServer += Math.max(0, d[o + 3]! - this.fastReported[2 * tag]!);
      this.counters.bytesToClient += Math.max(0, d[o + 4]! - this.fastReported[2 * tag + 1]!);
      if (d[o + 1] === FastEnd.UpstreamFailed) {
        this.counters.upstreamErrors++;
        this.log.debug({ ...this.flowFields(e, this.snapshot), errno: d[o + 2] }, 'upstream connect failed');
      }
      e.handle = 0;
      e.state = 'closed';
      this.table.remove(e);
      this.fastLive--;
      if (e.proto === PROTO_TCP && --this.liveTcp === 0) this.drained?.();
    }
    if (this.fastLive === 0 && this.fastTicker !== undefined) {
      clearInterval(this.fastTicker);
      this.fastTicker = undefined;
    }
  }

  /** Byte totals of live relays, about once a second: counters, and lastSeen of busy flows. */
  private tickFast(): void {
    const a = this.fast?.progress();
    if (!a) return;
    const now = Date.now();
    for (let i = 0; i + 2 < a.length; i += 3) {
      const tag = a[i]!;
      const e = this.fastFlows[tag];
      if (e === undefined) continue;
      e.lastSeen = now;
      this.counters.bytesToServer += Math.max(0, a[i + 1]! - this.fastReported[2 * tag]!);
      this.counters.bytesToClient += Math.max(0, a[i + 2]! - this.fastReported[2 * tag + 1]!);
      this.fastReported[2 * tag] = a[i + 1]!;
      this.fastReported[2 * tag + 1] = a[i + 2]!;
    }
  }

  /**
   * The first packet's decision: timed, counted, flow-logged; sets the entry's state
   * (`allowed`, also for an audited denial, or `denied`). `proto`: 0 TCP, 1 UDP.
   */
  private decideFirst(snap: PolicySnapshot, key: FlowKey, e: FlowEntry, proto: 0 | 1): void {
    const observe = this.hooks.observeDecision;
    const t0 = observe ? process.hrtime.bigint() : 0n;
    const d = decide(snap, key, this.decision);
    if (observe) observe(Number(process.hrtime.bigint() - t0) / 1e9);
    e.revision = snap.revision;
    const c = this.counters;
    c.bySides[d.egress * 6 + d.ingress]!++;
    let verdict: 0 | 1 | 2;
    if (d.allowed) {
      c.decisions.allow++;
      verdict = 0;
      e.state = 'allowed';
    } else {
      c.decisions.deny++;
      if (this.auditApplies(d)) {
        c.audited++;
        verdict = 2;
        e.state = 'allowed';
        this.auditedFlows.add(e);
      } else {
        verdict = 1;
        e.state = 'denied';
      }
    }
    c.flows[proto * 3 + verdict]!++;
    this.hooks.flowLog?.record(e, snap, d, verdict === 2);
  }

  // --- UDP -------------------------------------------------------------------------------

  private onDatagram(msg: Buffer, srcAddr: string, srcPort: number, dstAddr: string, dstPort: number): void {
    if (!this.fillKey(PROTO_UDP, srcAddr, srcPort, dstAddr, dstPort)) return;
    const key = this.key;
    const now = Date.now();
    let e = this.table.lookup(key, now);
    if (e === undefined) {
      const snap = this.snapshot;
      if (!snap || this.stopping || this.draining) {
        if (this.draining && !this.stopping) this.counters.refusedDraining++;
        else this.counters.refusedNotReady++;
        return;
      }
      e = this.table.register(key, now);
      if (!e) {
        this.counters.refusedTableFull++;
        this.log.warn({ capacity: this.table.capacity }, 'flow refused: flow table full (NETPOLD_E_FLOW_TABLE_FULL)');
        return;
      }
      this.decideFirst(snap, key, e, 1);
      if (e.state === 'allowed') {
        if (!this.openUdpFlow(e, this.fromNode(key), srcAddr, srcPort, dstAddr, dstPort)) {
          this.table.remove(e);
          return;
        }
      }
    }
    if (e.state !== 'allowed') {
      this.counters.udpDropped++;
      return;
    }
    const f = this.udpFlows.get(e);
    if (f?.upstream && f.upstream.send(msg)) this.counters.bytesToServer += msg.length;
  }

  /**
   * Opens the flow's sockets: upstream from the client's address (from the node's when
   * `toNode`, see fromNode), reply from the server's.
   */
  private openUdpFlow(e: FlowEntry, toNode: boolean, srcAddr: string, srcPort: number, dstAddr: string, dstPort: number): boolean {
    const family = e.family;
    const flow: UdpFlow = { upstream: undefined, reply: undefined };
    try {
      // Replies are sent from the original destination's address and port: through a raw
      // socket when that is the node (a node server may hold the address and port: see
      // sendUdpRaw), else through a socket bound there, which also receives client datagrams the
      // kernel delivers to it (the socket match comes before TPROXY), so it feeds the same
      // handler. The fake has no raw sockets: it takes the bound socket in every case.
      let sendReply: (m: Buffer) => boolean;
      const raw = toNode ? this.native.sendUdpRaw?.bind(this.native) : undefined;
      if (raw) {
        sendReply = (m) => {
          try {
            if (raw(family, dstAddr, dstPort, srcAddr, srcPort, m)) return true;
          } catch (err) {
            // No raw socket (NET_RAW missing) or larger than the path MTU (a raw socket does not
            // fragment): dropped, counted, said once.
            if (!this.rawSendReported) {
              this.rawSendReported = true;
              this.log.warn({ error: (err as Error).message, code: (err as { code?: string }).code }, 'udp reply to a pod could not be sent through the raw socket (dropped; counted in udp drops)');
            }
          }
          this.counters.udpDropped++;
          return false;
        };
      } else {
        const rkey = `${family}|${dstAddr}|${dstPort}`;
        let reply = this.replySockets.get(rkey);
        if (!reply) {
          const handle = this.native.openUdp(
            { family, address: dstAddr, port: dstPort, transparent: true, recvOrigDst: true, reuse: true },
            (m, sa, sp, da, dp) => this.onDatagram(m, sa, sp, da, dp),
          );
          reply = { handle, users: 0, key: rkey };
          this.replySockets.set(rkey, reply);
        }
        reply.users++;
        flow.reply = reply;
        const r = reply;
        sendReply = (m) => r.handle.send(m, srcAddr, srcPort);
      }
      const open = (): UdpHandle =>
        this.native.openUdp(
          toNode
            ? { family, address: family === 4 ? '0.0.0.0' : '::', port: 0, transparent: false, recvOrigDst: false }
            : { family, address: srcAddr, port: 0, transparent: true, recvOrigDst: false }, // a port of its own: native/src "Upstream ports"
          (m) => {
            e.lastSeen = Date.now();
            if (sendReply(m)) this.counters.bytesToClient += m.length;
          },
        );
      let upstream = open();
      if (!toNode && upstream.localPort === srcPort) {
        // The client's own port, the one 4-tuple that must not be: another, picked while this
        // one is still held.
        const other = open();
        upstream.close();
        upstream = other;
      }
      upstream.connect(dstAddr, dstPort);
      flow.upstream = upstream;
    } catch (err) {
      this.counters.upstreamErrors++;
      this.log.warn({ ...this.flowFields(e, this.snapshot), error: (err as Error).message }, 'udp flow could not be opened');
      this.releaseUdp(flow);
      return false;
    }
    this.udpFlows.set(e, flow);
    e.close = () => {
      e.state = 'closed';
      this.releaseUdp(flow);
    };
    return true;
  }

  private releaseUdp(flow: UdpFlow): void {
    flow.upstream?.close();
    flow.upstream = undefined;
    const r = flow.reply;
    flow.reply = undefined;
    if (r && --r.users === 0) {
      r.handle.close();
      this.replySockets.delete(r.key);
    }
  }

  private sweepIdleUdp(): void {
    const now = Date.now();
    for (const e of this.table.all()) {
      // Fast-path flows (handle > 0) are ended by the engine, which sees their every datagram.
      if (e.proto === PROTO_UDP && e.handle === 0 && now - e.lastSeen >= this.config.udpIdleMs) {
        this.dropFlow(e);
        e.close('idle');
      }
    }
  }

  private dropFlow(e: FlowEntry): void {
    this.table.remove(e);
    this.udpFlows.delete(e);
  }

  // --- helpers ---------------------------------------------------------------------------

  private fillKey(proto: number, src: string, sport: number, dst: string, dport: number): boolean {
    const key = this.key;
    const fs = parseAddrInto(src, key.src);
    const fd = parseAddrInto(dst, key.dst);
    if (fs === 0 || fs !== fd) return false;
    key.family = fs;
    key.proto = proto;
    key.srcPort = sport;
    key.dstPort = dport;
    return true;
  }

  private flowFields(e: FlowEntry, snap: PolicySnapshot | undefined): Record<string, unknown> {
    return {
      protocol: protocolName(e.proto),
      src: `${formatAddr(e.family, e.src)}:${e.srcPort}`,
      dst: `${formatAddr(e.family, e.dst)}:${e.dstPort}`,
      revision: snap?.revision,
    };
  }
}

/** A plain (not transparent) TCP connect, for flows whose destination is the node itself. */
function connectPlain(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ host, port, allowHalfOpen: true });
    const timer = setTimeout(() => s.destroy(Object.assign(new Error(`connect ${host}:${port} timed out`), { code: 'ETIMEDOUT' })), timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}
