// The Kubernetes source: list and watch Pods (all namespaces), Namespaces, NetworkPolicies
// (networking.k8s.io/v1) and Nodes with the client library's informers (ListWatch), convert
// every object through the folder source's validators, and emit whole states into the agent,
// exactly like the manifests-folder source (src/source/source.ts).
//
// Events to updates:
// - Each kind keeps a map namespace/name -> converted object (store.ts). An event whose
//   resourceVersion is already known is not converted again; a new version that converts to an
//   equal value keeps the previous object (a pod's readiness, a node's heartbeat, an annotation
//   change nothing) and does not mark the state changed. Unchanged objects stay identical
//   across updates, which lets the compiler take its pod-only incremental path.
// - A change marks the state dirty; an update is emitted `quietMs` (20 ms) after the last change
//   of a burst, and never later than `maxDelayMs` (100 ms) after its first change. One update
//   per burst, whatever its size.
// - The first update is emitted only when the initial LIST of all four kinds has completed; the
//   agent refuses every flow until then (fail closed), and `start()` resolves after it.
// - A watch error, an expired resourceVersion (410 Gone, as an ERROR event or an HTTP status),
//   a failed list, a stalled watch or an unreachable API server (restarts included) makes that
//   kind relist from scratch, after an exponential backoff with jitter (500 ms doubling to 30 s,
//   reset once a watch has stayed up for 30 s). Meanwhile the last state stays in force: a kind's
//   map is replaced only when its new list is complete. Each such event is logged and counted.
//   A watch the server simply ends (its timeoutSeconds, a dropped connection) is resumed from
//   the last resourceVersion by the informer without a relist, with a backoff if that repeats
//   quickly.
// - An object the validators reject is reported once per change (per resourceVersion): a log
//   line, its errors in the next update's `errors`, and a best-effort core/v1 Event on it.
//   Invalid NetworkPolicies stay in the state failing closed, as in the folder source; other
//   invalid objects are left out.
//
// New pods (see README, "New pods"): a pod is in the state with the addresses its status
// reports; a pod without an address yet has no address entry (it cannot be the source or
// destination of a decided flow), and pods in phase Succeeded/Failed are left out (their address
// is released and may be reused). Between the CNI giving a new pod its address and the pod's
// status update reaching this agent, that address belongs to no known pod: flows from or to it
// are decided as external (only ipBlock rules and rules without peers can match it). Because an
// ipBlock matches pod addresses too and a named port never matches a non-pod, an unknown address
// is never allowed more by another pod's policy than the pod's real labels would allow. What is
// NOT enforced in that window is the new pod's own isolation: its own policies select it only
// once it is known, and its node intercepts it only then. The same holds for a reused address
// claimed by two pods at once (store.ts leaves out every claimant until one remains).
//
// Memory: the informer's own cache keeps only name, namespace and resourceVersion of each
// object (objects are reduced after conversion); the converted PodInfo projection is all that
// is kept of a pod.
import { ListWatch, Watch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import { formatManifestError, type ManifestError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { isRecord } from '../files/report.js';
import type { SourceUpdate, StateSource } from '../source.js';
import { loadKubeConfig, type KubeConnection } from './config.js';
import { API_PATH, type Converted, convert, describeRef, type Kind, KINDS, type ObjectRef, refOf } from './convert.js';
import { EventReporter } from './events.js';
import { listAll } from './list.js';
import { assemble, type KindStore, makeStores, type Stores, type TrimMemo } from './store.js';

export interface KubernetesSourceOptions {
  /** A kubeconfig file, or the in-cluster service account. */
  readonly connection: KubeConnection;
  readonly log: Logger;
  /** This node (Events' reporting instance). */
  readonly nodeName?: string | undefined;
  /** An update is emitted this long after the last change of a burst... */
  readonly quietMs?: number;
  /** ...and at most this long after its first change. */
  readonly maxDelayMs?: number;
  readonly backoffInitialMs?: number;
  readonly backoffMaxMs?: number;
  /** A watch up for this long resets the backoff. */
  readonly healthyMs?: number;
  readonly pageSize?: number;
  /** Timeout of each list request. */
  readonly requestTimeoutMs?: number;
  /** The server ends each watch after a random time in [T, 2T) seconds; a watch still open 30 s after that is treated as stalled. */
  readonly watchTimeoutSeconds?: number;
  /** Post core/v1 Events on rejected objects (best effort). Default true. */
  readonly postEvents?: boolean;
  /** Randomness for the backoff jitter and watch timeouts (tests). */
  readonly random?: () => number;
}

export interface KubernetesSourceCounters {
  /** LIST requests after each kind's first one (relists after errors, 410 Gone, restarts). */
  relists: number;
  /** Failed lists and watches (network errors, HTTP errors, ERROR events other than 410, stalled watches). */
  watchErrors: number;
  /** Expired resourceVersions (410 Gone). */
  expired: number;
  /** Streaming watches cut by a connection error (resumed from their resourceVersion, no relist). */
  watchDrops: number;
  /** Watch events received (ADDED, MODIFIED, DELETED). */
  events: number;
  bookmarks: number;
  /** Updates emitted. */
  updates: number;
  /** Object versions the validators rejected (each reported once). */
  rejected: number;
  /** Time (ms since the epoch) the last LIST completed; 0 before the first. */
  lastSyncTime: number;
  /** Time (ms since the epoch) of the last watch event or bookmark; 0 before the first. */
  lastEventTime: number;
}

type Obj = KubernetesObject;

/** One informer (ListWatch) instance; replaced by a new one on every failure-triggered relist. */
interface Generation {
  readonly lw: ListWatch<Obj>;
  dead: boolean;
  /** Start of the current watch request (0: none yet). */
  watchStartedAt: number;
  /** Consecutive watches that ended within a second. */
  shortWatches: number;
}

export class KubernetesSource implements StateSource {
  readonly counters: KubernetesSourceCounters = {
    relists: 0,
    watchErrors: 0,
    expired: 0,
    watchDrops: 0,
    events: 0,
    bookmarks: 0,
    updates: 0,
    rejected: 0,
    lastSyncTime: 0,
    lastEventTime: 0,
  };
  private readonly kc: KubeConfig;
  private readonly log: Logger;
  private readonly opt: Required<Omit<KubernetesSourceOptions, 'connection' | 'log' | 'nodeName'>>;
  private readonly stores: Stores = makeStores();
  private readonly trimMemo: TrimMemo = new WeakMap();
  private readonly watchers: KindWatcher[];
  private readonly eventReporter: EventReporter | undefined;
  /** Stub objects handed to the informer after a list (their add callbacks are no-ops). */
  private readonly stubs = new WeakSet<object>();
  private onUpdate: ((u: SourceUpdate) => void) | undefined;
  private started: { resolve: () => void } | undefined;
  private stopped = false;
  private firstEmitted = false;
  private dirty = false;
  private firstChangeAt: number | undefined;
  private lastChangeAt = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  private pendingErrors: ManifestError[] = [];
  /** Cross-object problems last reported, by kind/key: reported again only when they change. */
  private crossReported = new Map<string, string>();

  /** The client configuration this source uses (others talking to the same API server share it). */
  get kubeConfig(): KubeConfig {
    return this.kc;
  }

  constructor(options: KubernetesSourceOptions) {
    this.kc = loadKubeConfig(options.connection);
    this.log = options.log;
    this.opt = {
      quietMs: options.quietMs ?? 20,
      maxDelayMs: options.maxDelayMs ?? 100,
      backoffInitialMs: options.backoffInitialMs ?? 500,
      backoffMaxMs: options.backoffMaxMs ?? 30_000,
      healthyMs: options.healthyMs ?? 30_000,
      pageSize: options.pageSize ?? 500,
      requestTimeoutMs: options.requestTimeoutMs ?? 60_000,
      watchTimeoutSeconds: options.watchTimeoutSeconds ?? 300,
      postEvents: options.postEvents ?? true,
      random: options.random ?? Math.random,
    };
    this.eventReporter = this.opt.postEvents ? new EventReporter(this.kc, this.log, options.nodeName) : undefined;
    this.watchers = KINDS.map((k) => new KindWatcher(k, this));
  }

  // The counters named in the issue, as properties of the source.
  get relists(): number {
    return this.counters.relists;
  }
  get watchErrors(): number {
    return this.counters.watchErrors;
  }
  get events(): number {
    return this.counters.events;
  }
  get updates(): number {
    return this.counters.updates;
  }
  get lastSyncTime(): number {
    return this.counters.lastSyncTime;
  }
  /** True once the first update was emitted. */
  get ready(): boolean {
    return this.firstEmitted;
  }
  /** Events posted, failed, dropped (best effort). */
  get eventCounters(): Readonly<{ posted: number; failed: number; dropped: number }> {
    return this.eventReporter?.counters ?? { posted: 0, failed: 0, dropped: 0 };
  }

  start(onUpdate: (u: SourceUpdate) => void): Promise<void> {
    if (this.onUpdate !== undefined) throw new Error('KubernetesSource.start called twice');
    this.onUpdate = onUpdate;
    if (this.stopped) return Promise.resolve(); // stopped before it started (a signal at start-up)
    const server = this.kc.getCurrentCluster()?.server;
    this.log.info({ server, kinds: KINDS }, 'kubernetes source: listing and watching; no update until the first list of every kind completes');
    const first = new Promise<void>((resolve) => (this.started = { resolve }));
    for (const w of this.watchers) w.begin();
    return first;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.eventReporter?.stop();
    await Promise.all(this.watchers.map((w) => w.stop()));
    this.started?.resolve();
  }

  /** Resolves when queued Events have been posted (tests). */
  async eventsIdle(): Promise<void> {
    await this.eventReporter?.idle();
  }

  // ---------------------------------------------------------------------------------------------
  // Called by the kind watchers

  /** @internal */ get internals() {
    return { kc: this.kc, log: this.log, opt: this.opt, counters: this.counters, stopped: this.stopped };
  }

  /** @internal A completed LIST: converts it, drops what it no longer contains; returns the informer's stubs. */
  applyList(kind: Kind, items: readonly Record<string, unknown>[]): Obj[] {
    const store = this.stores[kind] as KindStore<Kind>;
    const keys = new Set<string>();
    const stubs: Obj[] = [];
    let changed = false;
    let unnamed = 0;
    for (const obj of items) {
      const ref = refOf(kind, obj);
      if (ref === undefined) {
        unnamed++;
        continue;
      }
      keys.add(ref.key);
      if (this.ingest(kind, obj, ref)) changed = true;
      const stub: Obj = { metadata: { name: ref.name, namespace: (obj['metadata'] as Record<string, unknown>)['namespace'] as string | undefined, resourceVersion: ref.resourceVersion } };
      this.stubs.add(stub);
      stubs.push(stub);
    }
    if (unnamed > 0) this.log.warn({ kind, objects: unnamed }, 'listed objects without metadata.name are ignored');
    if (store.retainOnly(keys)) changed = true;
    if (changed) this.markDirty();
    return stubs;
  }

  /** @internal An added or modified object from a watch. */
  applyObject(kind: Kind, obj: Obj): void {
    if (this.stubs.has(obj)) return;
    const ref = refOf(kind, obj);
    if (ref === undefined) {
      this.log.warn({ kind }, 'a watched object without metadata.name is ignored');
      return;
    }
    if (this.ingest(kind, obj as Record<string, unknown>, ref)) this.markDirty();
    reduceInPlace(obj);
  }

  /** @internal A deleted object. */
  applyDelete(kind: Kind, obj: Obj): void {
    const ref = refOf(kind, obj);
    if (ref === undefined) return;
    if ((this.stores[kind] as KindStore<Kind>).delete(ref.key)) this.markDirty();
  }

  /** @internal A kind finished a LIST. */
  listed(): void {
    if (this.stopped) return;
    if (!this.firstEmitted && this.watchers.every((w) => w.synced)) this.flush();
  }

  // ---------------------------------------------------------------------------------------------

  /** Converts an object unless its version is known; returns true when the state changed. */
  private ingest(kind: Kind, obj: Record<string, unknown>, ref: ObjectRef): boolean {
    const store = this.stores[kind] as KindStore<Kind>;
    if (store.current(ref.key, ref.resourceVersion) !== undefined) return false;
    const c = convert(kind, obj, ref);
    if (c.errors.length > 0) this.reject(c);
    return store.put(c);
  }

  private reject(c: Converted<Kind>): void {
    this.counters.rejected++;
    const kept = c.value !== undefined;
    const first = c.errors[0]!;
    this.log.warn(
      { kind: c.ref.kind, object: describeRef(c.ref), resourceVersion: c.ref.resourceVersion, errors: c.errors.length, code: first.code, path: first.path },
      `${describeRef(c.ref)} rejected (${kept ? 'kept failing closed: it opens nothing' : 'left out of the state'}): ${first.message}${c.errors.length > 1 ? ` (+${c.errors.length - 1} more)` : ''}`,
    );
    this.pendingErrors.push(...c.errors);
    const what = kept ? `netpold rejected this ${c.ref.kind} and enforces it failing closed` : `netpold rejected this ${c.ref.kind} and leaves it out of its state`;
    this.eventReporter?.report(c.ref, `${what}: ${c.errors.map((e) => `${e.path === undefined ? '' : `${e.path}: `}${e.message} [${e.code}]`).join('; ')}`);
  }

  private markDirty(): void {
    this.dirty = true;
    const now = performance.now();
    this.lastChangeAt = now;
    this.firstChangeAt ??= now;
    if (!this.firstEmitted || this.stopped || this.flushTimer !== undefined) return;
    this.flushTimer = setTimeout(() => this.onFlushTimer(), this.opt.quietMs);
  }

  private onFlushTimer(): void {
    this.flushTimer = undefined;
    if (this.stopped) return;
    const now = performance.now();
    const due = Math.min(this.lastChangeAt + this.opt.quietMs, (this.firstChangeAt ?? now) + this.opt.maxDelayMs);
    if (due - now >= 1) {
      this.flushTimer = setTimeout(() => this.onFlushTimer(), due - now);
      return;
    }
    this.flush();
  }

  private flush(): void {
    if (this.stopped || this.onUpdate === undefined) return;
    if (this.firstEmitted && !this.dirty) return;
    this.dirty = false;
    this.firstChangeAt = undefined;
    const { state, problems } = assemble(this.stores, this.trimMemo);
    const cross = new Map<string, string>();
    for (const p of problems) {
      const k = `${p.ref.kind}/${p.ref.key}`;
      const text = formatManifestError(p.error);
      cross.set(k, text);
      if (this.crossReported.get(k) === text) continue;
      this.log.warn({ kind: p.ref.kind, object: describeRef(p.ref), code: p.error.code }, `${describeRef(p.ref)} left out of the state: ${p.error.message}`);
      this.pendingErrors.push(p.error);
      this.eventReporter?.report(p.ref, `netpold ignores this object: ${p.error.message} [${p.error.code}]`);
    }
    this.crossReported = cross;
    const errors = this.pendingErrors;
    this.pendingErrors = [];
    this.counters.updates++;
    const first = !this.firstEmitted;
    this.firstEmitted = true;
    if (first) {
      this.log.info({ namespaces: state.namespaces.length, pods: state.pods.length, nodes: state.nodes.length, policies: state.policies.length }, 'kubernetes source: initial list of every kind complete');
    }
    try {
      this.onUpdate({ state, errors, unusable: false });
    } catch (e) {
      this.log.error({ error: errorText(e) }, 'the state update callback failed');
    }
    if (first) this.started?.resolve();
  }
}

/** Keeps only what the informer's cache needs (name, namespace, resourceVersion). */
function reduceInPlace(obj: Obj): void {
  const o = obj as Record<string, unknown>;
  const m = isRecord(o['metadata']) ? o['metadata'] : {};
  for (const k of Object.keys(o)) if (k !== 'metadata') delete o[k];
  o['metadata'] = { name: m['name'], namespace: m['namespace'], resourceVersion: m['resourceVersion'] };
}

function plural(kind: Kind): string {
  return kind === 'NetworkPolicy' ? 'NetworkPolicies' : `${kind}s`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function errorText(e: unknown): string {
  if (e instanceof Error) return e.message.slice(0, 300);
  if (isRecord(e) && typeof e['message'] === 'string') return e['message'].slice(0, 300);
  return String(e).slice(0, 300);
}

function statusOf(e: unknown): number | undefined {
  if (typeof e !== 'object' || e === null) return undefined;
  const s = (e as { statusCode?: unknown; code?: unknown }).statusCode ?? (e as { code?: unknown }).code;
  return typeof s === 'number' ? s : undefined;
}

/** List and watch of one kind; owns its informer generations and its backoff. */
class KindWatcher {
  synced = false;
  private gen: Generation | undefined;
  private failures = 0;
  private lists = 0;
  private retry: NodeJS.Timeout | undefined;
  private stopping = false;

  constructor(
    readonly kind: Kind,
    readonly src: KubernetesSource,
  ) {}

  /** Starts a new informer (a LIST, then a WATCH from its resourceVersion). */
  begin(): void {
    this.retry = undefined;
    if (this.stopping) return;
    const { kc } = this.src.internals;
    let gen: Generation | undefined;
    const watch = new GenWatch(kc, this, () => gen!);
    const lw = new ListWatch<Obj>(API_PATH[this.kind], watch, () => this.list(gen!), false);
    gen = { lw, dead: false, watchStartedAt: 0, shortWatches: 0 };
    this.gen = gen;
    const g = gen;
    // The informer swallows exceptions of these callbacks (an event would be lost silently) or
    // leaves them unhandled: none may throw. A failure relists instead.
    const guard = (fn: () => void): void => {
      if (g.dead) return;
      try {
        fn();
      } catch (e) {
        this.src.internals.log.error({ kind: this.kind, error: errorText(e) }, 'processing a watch event failed; relisting');
        this.fail(g, e);
      }
    };
    lw.on('add', (o) => guard(() => this.src.applyObject(this.kind, o)));
    lw.on('update', (o) => guard(() => this.src.applyObject(this.kind, o)));
    lw.on('delete', (o) => guard(() => this.src.applyDelete(this.kind, o)));
    lw.on('error', (e) => this.fail(g, e));
    lw.start().catch((e: unknown) => this.fail(g, e));
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.retry);
    const g = this.gen;
    if (g !== undefined) {
      g.dead = true;
      await g.lw.stop();
    }
  }

  /** Equal jitter: half the capped exponential delay, plus up to the other half at random. */
  delay(n: number): number {
    const { opt } = this.src.internals;
    if (n <= 0) return 0;
    const cap = Math.min(opt.backoffMaxMs, opt.backoffInitialMs * 2 ** Math.min(n - 1, 30));
    return Math.round(cap / 2 + opt.random() * (cap / 2));
  }

  private async list(g: Generation): Promise<KubernetesListObject<Obj>> {
    if (g.dead) throw new Error('stale informer');
    const { kc, opt, counters, log } = this.src.internals;
    const relist = this.lists++ > 0;
    if (relist) {
      counters.relists++;
      log.info({ kind: this.kind, relists: counters.relists }, `relisting ${plural(this.kind)}; the last state stays enforced meanwhile`);
    }
    const t0 = performance.now();
    const r = await listAll(kc, API_PATH[this.kind], opt.pageSize, opt.requestTimeoutMs);
    if (g.dead || this.stopping) throw new Error('stale informer');
    const items = this.src.applyList(this.kind, r.items);
    counters.lastSyncTime = Date.now();
    const first = !this.synced;
    this.synced = true;
    log.info({ kind: this.kind, objects: r.items.length, resourceVersion: r.resourceVersion, ms: Math.round(performance.now() - t0), relist }, `listed ${plural(this.kind)}`);
    if (first) this.src.listed();
    return { metadata: { resourceVersion: r.resourceVersion }, items };
  }

  /** @internal Every watch event, before the informer sees it. Returns false to withhold it. */
  onWatchEvent(g: Generation, phase: string, obj: unknown): boolean {
    const { counters } = this.src.internals;
    counters.lastEventTime = Date.now();
    if (phase === 'BOOKMARK') {
      counters.bookmarks++;
      return true;
    }
    if (phase === 'ERROR') {
      this.fail(g, isRecord(obj) ? { statusCode: obj['code'], message: obj['message'] } : { message: 'ERROR event' });
      return false;
    }
    counters.events++;
    return true;
  }

  /** @internal The current watch ended after streaming (server timeout, dropped connection). */
  watchEnded(g: Generation, err: unknown): void {
    const { counters, log } = this.src.internals;
    const ms = Date.now() - g.watchStartedAt;
    if (err) {
      counters.watchDrops++;
      log.info({ kind: this.kind, ms, error: errorText(err), watchDrops: counters.watchDrops }, `${this.kind} watch connection lost; resuming from the last resourceVersion`);
    } else {
      log.debug({ kind: this.kind, ms }, 'watch ended; resuming from the last resourceVersion');
    }
  }

  /** A failed list or watch: this informer is abandoned, a new one relists after a backoff. */
  fail(g: Generation, err: unknown): void {
    if (g.dead || this.stopping || this.src.internals.stopped) return;
    g.dead = true;
    void g.lw.stop();
    const { counters, log, opt } = this.src.internals;
    const now = Date.now();
    if (g.watchStartedAt > 0 && now - g.watchStartedAt >= opt.healthyMs) this.failures = 0;
    this.failures++;
    const status = statusOf(err);
    const expired = status === 410;
    if (expired) counters.expired++;
    else counters.watchErrors++;
    const delayMs = this.delay(this.failures);
    log.warn(
      { kind: this.kind, code: 'NETPOLD_E_KUBE_API', status, error: errorText(err), failures: this.failures, delayMs, expired: counters.expired, watchErrors: counters.watchErrors },
      expired
        ? `${this.kind} watch: resourceVersion expired (410 Gone); relisting in ${delayMs} ms, the last state stays enforced`
        : `${this.kind} list/watch failed; relisting in ${delayMs} ms, the last state stays enforced`,
    );
    this.retry = setTimeout(() => this.begin(), delayMs);
  }
}

/** The library's Watch, per informer generation: bookmarks, server timeouts, a stall watchdog, and failures routed to the watcher. */
class GenWatch extends Watch {
  constructor(
    kc: KubeConfig,
    private readonly w: KindWatcher,
    private readonly gen: () => Generation,
  ) {
    super(kc);
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: any, watchObj?: any) => void, // eslint-disable-line @typescript-eslint/no-explicit-any
    done: (err: any) => void, // eslint-disable-line @typescript-eslint/no-explicit-any
  ): Promise<AbortController> {
    const g = this.gen();
    const { opt } = this.w.src.internals;
    // A server that ends watches at once, again and again, must not be hammered.
    const now = Date.now();
    g.shortWatches = g.watchStartedAt > 0 && now - g.watchStartedAt < 1000 ? g.shortWatches + 1 : 0;
    if (g.shortWatches >= 3) await sleep(this.w.delay(g.shortWatches - 2));
    if (g.dead) return aborted();
    g.watchStartedAt = Date.now();
    const timeoutSeconds = Math.floor(opt.watchTimeoutSeconds * (1 + opt.random()));
    let ended = false;
    let established = false;
    const watchdog = setTimeout(() => {
      if (!ended) this.w.fail(g, new Error(`watch still open ${timeoutSeconds + 30} s after its ${timeoutSeconds} s timeout: treating the connection as dead`));
    }, (timeoutSeconds + 30) * 1000);
    watchdog.unref();
    let ctl: AbortController;
    try {
      ctl = await super.watch(
        path,
        { ...queryParams, allowWatchBookmarks: true, timeoutSeconds },
        (phase, obj, raw) => {
          if (g.dead || !this.w.onWatchEvent(g, phase, obj) || g.dead) return;
          callback(phase, obj, raw);
        },
        (err) => {
          ended = true;
          clearTimeout(watchdog);
          if (g.dead) return;
          // A watch that never got its response (refused, timed out, HTTP error) fails: relist.
          // One that was streaming and then ended, even by a reset connection, is resumed from the
          // last resourceVersion by the informer; if the server is really gone, that attempt fails.
          if (err && !established) {
            this.w.fail(g, err);
            return;
          }
          this.w.watchEnded(g, err);
          done(null);
        },
      );
    } catch (e) {
      // Building the request failed (credentials unreadable...): the informer would leave this
      // rejection unhandled.
      ended = true;
      clearTimeout(watchdog);
      this.w.fail(g, e);
      return aborted();
    }
    if (g.dead) ctl.abort();
    else if (!ended) established = true;
    return ctl;
  }
}

function aborted(): AbortController {
  const c = new AbortController();
  c.abort();
  return c;
}
