// A small Kubernetes API server for tests and benchmarks, in the test process: list (with
// limit/continue) and watch (resourceVersion, allowWatchBookmarks, timeoutSeconds) of Namespaces,
// Pods, Nodes and NetworkPolicies, with one global resourceVersion counter like etcd's, a
// compactable event history (a watch from a compacted resourceVersion gets 410 Gone, as an
// ERROR event or, optionally, as an HTTP status), dropped watch connections, going down and
// coming back on the same port, POST of core/v1 Events (recorded; the reply status can be
// forced, e.g. 403 as with RBAC forbidding it), and GET and JSON PATCH (RFC 6902: test, add,
// remove, replace) of one Node (the readiness taint; a status can be forced the same way, and a
// hook may change the Node just before a patch applies, as a concurrent writer would). Plain
// HTTP on 127.0.0.1; no client library.
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import type { Socket } from 'node:net';
import { join } from 'node:path';

export type FakeKind = 'Namespace' | 'Pod' | 'Node' | 'NetworkPolicy';
export const FAKE_KINDS: readonly FakeKind[] = ['Namespace', 'Pod', 'Node', 'NetworkPolicy'];

type Json = Record<string, unknown>;

const PATHS: Readonly<Record<FakeKind, string>> = {
  Namespace: '/api/v1/namespaces',
  Pod: '/api/v1/pods',
  Node: '/api/v1/nodes',
  NetworkPolicy: '/apis/networking.k8s.io/v1/networkpolicies',
};
const API_VERSIONS: Readonly<Record<FakeKind, string>> = { Namespace: 'v1', Pod: 'v1', Node: 'v1', NetworkPolicy: 'networking.k8s.io/v1' };
const KIND_OF_PATH = new Map(Object.entries(PATHS).map(([k, p]) => [p, k as FakeKind]));

interface HistoryEvent {
  readonly rv: number;
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED';
  readonly object: Json;
}

interface WatchConn {
  readonly kind: FakeKind;
  readonly res: http.ServerResponse;
  readonly bookmarks: boolean;
  timer: NodeJS.Timeout | undefined;
}

export interface RequestRecord {
  readonly method: string;
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
}

export interface FakeApiServerOptions {
  /** Answer a watch from a compacted resourceVersion with HTTP 410 instead of an ERROR event. */
  readonly goneAsHttpStatus?: boolean;
  /** Send a BOOKMARK to watches that asked for them this often (0: only on bookmark()). */
  readonly bookmarkEveryMs?: number;
}

export class FakeApiServer {
  readonly requests: RequestRecord[] = [];
  /** Bodies of POSTed core/v1 Events. */
  readonly postedEvents: Json[] = [];
  /** Reply status for Event POSTs (201 created; 403 forbidden; 409 exists...). */
  eventStatus = 201;
  /** Bodies of Node PATCHes that applied (JSON-patch operation lists). */
  readonly nodePatches: unknown[] = [];
  /** Reply status for Node GETs and PATCHes when not 200 (403 forbidden...). */
  nodeStatus = 200;
  /** Runs (once) just before the next Node PATCH is applied: a concurrent writer. */
  beforeNodePatch: ((name: string) => void) | undefined;
  goneAsHttpStatus: boolean;

  private readonly server: http.Server;
  private readonly sockets = new Set<Socket>();
  private readonly objects = new Map<FakeKind, Map<string, Json>>(FAKE_KINDS.map((k) => [k, new Map()]));
  private readonly history = new Map<FakeKind, HistoryEvent[]>(FAKE_KINDS.map((k) => [k, []]));
  /** A watch must start at or after this resourceVersion (older: 410 Gone). */
  private readonly compactedRv = new Map<FakeKind, number>(FAKE_KINDS.map((k) => [k, 0]));
  private readonly watches = new Set<WatchConn>();
  private readonly gates = new Map<FakeKind, Promise<void>>();
  private readonly listFailures = new Map<FakeKind, number[]>();
  private readonly continues = new Map<string, { items: Json[]; rv: number }>();
  private rv = 1;
  private uid = 0;
  private listening = false;
  private bookmarkTimer: NodeJS.Timeout | undefined;
  port = 0;

  constructor(options: FakeApiServerOptions = {}) {
    this.goneAsHttpStatus = options.goneAsHttpStatus ?? false;
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((e: unknown) => {
        if (!res.headersSent) this.status(res, 500, 'InternalError', String(e));
        else res.destroy();
      });
    });
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    if ((options.bookmarkEveryMs ?? 0) > 0) {
      this.bookmarkTimer = setInterval(() => this.bookmark(), options.bookmarkEveryMs);
      this.bookmarkTimer.unref();
    }
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  async start(): Promise<void> {
    await this.listen(0);
  }

  /** Stops serving: every connection is cut and new ones are refused, until up(). The objects stay. */
  async down(): Promise<void> {
    if (!this.listening) return;
    this.listening = false;
    for (const w of this.watches) clearTimeout(w.timer);
    this.watches.clear();
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  /** Serves again on the same port. */
  async up(): Promise<void> {
    await this.listen(this.port);
  }

  async close(): Promise<void> {
    clearInterval(this.bookmarkTimer);
    await this.down();
  }

  /** A kubeconfig pointing at this server (or at `server`, a forwarder to it), written to `dir/kubeconfig`. */
  writeKubeconfig(dir: string, server = this.url): string {
    const path = join(dir, 'kubeconfig');
    writeFileSync(
      path,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters:',
        '- name: fake',
        '  cluster:',
        `    server: ${server}`,
        '    insecure-skip-tls-verify: true',
        'users:',
        '- name: tester',
        '  user:',
        '    token: fake-token',
        'contexts:',
        '- name: fake',
        '  context: {cluster: fake, user: tester}',
        'current-context: fake',
        '',
      ].join('\n'),
    );
    return path;
  }

  // ---------------------------------------------------------------------------------------------
  // State changes (each one is a watch event, with a new resourceVersion)

  /** Creates or replaces an object (metadata.name and, for Pods/NetworkPolicies, metadata.namespace). */
  apply(kind: FakeKind, object: Json): Json {
    const obj = structuredClone(object);
    const meta = (obj['metadata'] ??= {}) as Json;
    const key = keyOf(kind, meta);
    const prev = this.objects.get(kind)!.get(key);
    const rv = ++this.rv;
    meta['resourceVersion'] = String(rv);
    meta['uid'] = prev !== undefined ? ((prev['metadata'] as Json)['uid'] as string) : `uid-${++this.uid}`;
    meta['creationTimestamp'] ??= '2025-01-01T00:00:00Z';
    this.objects.get(kind)!.set(key, obj);
    this.emit(kind, { rv, type: prev === undefined ? 'ADDED' : 'MODIFIED', object: obj });
    return obj;
  }

  /** Changes an object in place through `fn` (a MODIFIED event). */
  modify(kind: FakeKind, namespace: string | undefined, name: string, fn: (o: Json) => void): Json {
    const cur = this.get(kind, namespace, name);
    if (cur === undefined) throw new Error(`fake apiserver: no ${kind} ${namespace ?? ''}/${name}`);
    const copy = structuredClone(cur);
    fn(copy);
    return this.apply(kind, copy);
  }

  delete(kind: FakeKind, namespace: string | undefined, name: string): void {
    const key = `${namespace ?? ''}/${name}`;
    const prev = this.objects.get(kind)!.get(key);
    if (prev === undefined) throw new Error(`fake apiserver: no ${kind} ${key}`);
    this.objects.get(kind)!.delete(key);
    const rv = ++this.rv;
    const obj = structuredClone(prev);
    (obj['metadata'] as Json)['resourceVersion'] = String(rv);
    this.emit(kind, { rv, type: 'DELETED', object: obj });
  }

  get(kind: FakeKind, namespace: string | undefined, name: string): Json | undefined {
    return this.objects.get(kind)!.get(`${namespace ?? ''}/${name}`);
  }

  /** Every object of a kind as a full manifest (apiVersion and kind included). */
  objectsOf(kind: FakeKind): Json[] {
    return [...this.objects.get(kind)!.values()].map((o) => withKind(kind, structuredClone(o)));
  }

  count(kind: FakeKind): number {
    return this.objects.get(kind)!.size;
  }

  // ---------------------------------------------------------------------------------------------
  // Fault injection

  /** Forgets the event history: a watch resuming from an older resourceVersion gets 410 Gone. */
  compact(kinds: readonly FakeKind[] = FAKE_KINDS): void {
    for (const k of kinds) {
      this.compactedRv.set(k, this.rv);
      this.history.set(k, []);
    }
  }

  /** Cuts every open watch connection (the server stays up). */
  dropWatches(kinds: readonly FakeKind[] = FAKE_KINDS): void {
    for (const w of [...this.watches]) {
      if (!kinds.includes(w.kind)) continue;
      this.watches.delete(w);
      clearTimeout(w.timer);
      w.res.socket?.destroy();
    }
  }

  /** Sends a BOOKMARK (the current resourceVersion) on every watch that asked for bookmarks. */
  bookmark(kinds: readonly FakeKind[] = FAKE_KINDS): void {
    for (const w of this.watches) {
      if (!w.bookmarks || !kinds.includes(w.kind)) continue;
      write(w.res, { type: 'BOOKMARK', object: { kind: w.kind, apiVersion: API_VERSIONS[w.kind], metadata: { resourceVersion: String(this.rv) } } });
    }
  }

  /** Holds LIST responses of `kind` until the returned function is called. */
  holdLists(kind: FakeKind): () => void {
    let release!: () => void;
    this.gates.set(kind, new Promise<void>((r) => (release = r)));
    return () => {
      this.gates.delete(kind);
      release();
    };
  }

  /** The next LISTs of `kind` fail with these HTTP statuses, one each. */
  failLists(kind: FakeKind, ...statuses: number[]): void {
    this.listFailures.set(kind, [...(this.listFailures.get(kind) ?? []), ...statuses]);
  }

  openWatches(kind?: FakeKind): number {
    let n = 0;
    for (const w of this.watches) if (kind === undefined || w.kind === kind) n++;
    return n;
  }

  lists(kind: FakeKind): number {
    return this.requests.filter((r) => r.method === 'GET' && r.path === PATHS[kind] && r.query['watch'] !== 'true' && r.query['continue'] === undefined).length;
  }

  // ---------------------------------------------------------------------------------------------

  private async listen(port: number): Promise<void> {
    this.server.listen(port, '127.0.0.1');
    await once(this.server, 'listening');
    const addr = this.server.address();
    if (addr === null || typeof addr === 'string') throw new Error('fake apiserver: no address');
    this.port = addr.port;
    this.listening = true;
  }

  private emit(kind: FakeKind, e: HistoryEvent): void {
    this.history.get(kind)!.push(e);
    for (const w of this.watches) if (w.kind === kind) write(w.res, { type: e.type, object: withKind(kind, e.object) });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const query = Object.fromEntries(url.searchParams.entries());
    this.requests.push({ method: req.method ?? '', path: url.pathname, query });
    const kind = KIND_OF_PATH.get(url.pathname);
    if (req.method === 'GET' && kind !== undefined) {
      if (query['watch'] === 'true' || query['watch'] === '1') this.watch(kind, query, res);
      else await this.list(kind, query, res);
      return;
    }
    const node = /^\/api\/v1\/nodes\/([^/]+)$/.exec(url.pathname);
    if (node !== null && (req.method === 'GET' || req.method === 'PATCH')) {
      await this.nodeRequest(req, res, decodeURIComponent(node[1]!));
      return;
    }
    const ev = /^\/api\/v1\/namespaces\/([^/]+)\/events$/.exec(url.pathname);
    if (req.method === 'POST' && ev !== null) {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Json;
      if (this.eventStatus >= 300) {
        this.status(res, this.eventStatus, this.eventStatus === 403 ? 'Forbidden' : 'Error', `events is forbidden: User "system:serviceaccount:kube-system:netpold" cannot create resource "events" in namespace "${ev[1]}"`);
        return;
      }
      this.postedEvents.push(body);
      res.writeHead(201, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
      return;
    }
    this.status(res, 404, 'NotFound', `the server could not find the requested resource (${req.method} ${url.pathname})`);
  }

  private async list(kind: FakeKind, query: Record<string, string>, res: http.ServerResponse): Promise<void> {
    const gate = this.gates.get(kind);
    if (gate !== undefined) await gate;
    const failures = this.listFailures.get(kind);
    const fail = failures?.shift();
    if (fail !== undefined) {
      this.status(res, fail, 'Error', `injected list failure ${fail}`);
      return;
    }
    let page: { items: Json[]; rv: number };
    const token = query['continue'];
    if (token !== undefined && token !== '') {
      const c = this.continues.get(token);
      if (c === undefined) {
        this.status(res, 410, 'Expired', 'The provided continue parameter is too old');
        return;
      }
      this.continues.delete(token);
      page = c;
    } else {
      page = { items: [...this.objects.get(kind)!.values()].map((o) => structuredClone(o)), rv: this.rv };
    }
    const limit = Number(query['limit'] ?? '0');
    let items = page.items;
    let next = '';
    if (limit > 0 && items.length > limit) {
      next = `c${Math.random().toString(36).slice(2)}`;
      this.continues.set(next, { items: items.slice(limit), rv: page.rv });
      items = items.slice(0, limit);
    }
    res.writeHead(200, { 'Content-Type': 'application/json' });
    // List items carry no apiVersion/kind, as with the real API server.
    res.end(JSON.stringify({ kind: `${kind}List`, apiVersion: API_VERSIONS[kind], metadata: { resourceVersion: String(page.rv), ...(next === '' ? {} : { continue: next }) }, items }));
  }

  private watch(kind: FakeKind, query: Record<string, string>, res: http.ServerResponse): void {
    const from = query['resourceVersion'] === undefined || query['resourceVersion'] === '' ? 0 : Number(query['resourceVersion']);
    const resumable = from === 0 || from >= this.compactedRv.get(kind)!;
    if (!resumable && this.goneAsHttpStatus) {
      this.status(res, 410, 'Expired', `too old resource version: ${from} (${this.compactedRv.get(kind)})`);
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    if (!resumable) {
      write(res, { type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${from} (${this.compactedRv.get(kind)})`, reason: 'Expired', code: 410 } });
      res.end();
      return;
    }
    if (from === 0) {
      for (const o of this.objects.get(kind)!.values()) write(res, { type: 'ADDED', object: withKind(kind, o) });
    } else {
      for (const e of this.history.get(kind)!) if (e.rv > from) write(res, { type: e.type, object: withKind(kind, e.object) });
    }
    const conn: WatchConn = { kind, res, bookmarks: query['allowWatchBookmarks'] === 'true', timer: undefined };
    const timeout = Number(query['timeoutSeconds'] ?? '0');
    if (timeout > 0) {
      conn.timer = setTimeout(() => {
        this.watches.delete(conn);
        res.end();
      }, timeout * 1000);
      conn.timer.unref();
    }
    this.watches.add(conn);
    res.on('close', () => {
      clearTimeout(conn.timer);
      this.watches.delete(conn);
    });
  }

  private async nodeRequest(req: http.IncomingMessage, res: http.ServerResponse, name: string): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (this.nodeStatus !== 200) {
      this.status(res, this.nodeStatus, this.nodeStatus === 403 ? 'Forbidden' : 'Error', `nodes "${name}" is forbidden: User "system:serviceaccount:kube-system:netpold" cannot ${req.method === 'GET' ? 'get' : 'patch'} resource "nodes"`);
      return;
    }
    if (req.method === 'PATCH') {
      const type = req.headers['content-type'] ?? '';
      if (!type.startsWith('application/json-patch+json')) {
        this.status(res, 415, 'UnsupportedMediaType', `the fake server applies only JSON patches, not ${type}`);
        return;
      }
      const hook = this.beforeNodePatch;
      this.beforeNodePatch = undefined;
      hook?.(name);
    }
    const current = this.get('Node', undefined, name);
    if (current === undefined) {
      this.status(res, 404, 'NotFound', `nodes "${name}" not found`);
      return;
    }
    if (req.method === 'GET') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(withKind('Node', current)));
      return;
    }
    const ops = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
    const patched = structuredClone(current);
    const problem = applyJsonPatch(patched, ops);
    if (problem !== undefined) {
      this.status(res, 422, 'Invalid', `the patch does not apply: ${problem}`);
      return;
    }
    this.nodePatches.push(ops);
    const after = this.modify('Node', undefined, name, (o) => {
      for (const k of Object.keys(o)) delete o[k];
      Object.assign(o, patched);
    });
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(withKind('Node', after)));
  }

  private status(res: http.ServerResponse, code: number, reason: string, message: string): void {
    res.writeHead(code, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code }));
  }
}

/**
 * RFC 6902 on `doc` in place (test, add, remove, replace; JSON-pointer paths); a problem, or
 * undefined. All or nothing is the caller's business (it patches a copy).
 */
function applyJsonPatch(doc: Json, ops: unknown): string | undefined {
  if (!Array.isArray(ops)) return 'not a list of operations';
  for (const op of ops as Json[]) {
    const path = String(op['path'] ?? '');
    const parts = path.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
    if (!path.startsWith('/') || parts.length === 0) return `bad path ${path}`;
    let parent: unknown = doc;
    for (const p of parts.slice(0, -1)) {
      parent = Array.isArray(parent) ? parent[Number(p)] : (parent as Json | undefined)?.[p];
      if (parent === undefined || parent === null || typeof parent !== 'object') return `no ${path}`;
    }
    const last = parts[parts.length - 1]!;
    const list = Array.isArray(parent) ? (parent as unknown[]) : undefined;
    const obj = parent as Json;
    const index = list ? (last === '-' ? list.length : Number(last)) : -1;
    if (list && !(Number.isInteger(index) && index >= 0 && index <= list.length)) return `bad index in ${path}`;
    const exists = list ? index < list.length : last in obj;
    switch (op['op']) {
      case 'test':
        if (!exists || JSON.stringify(list ? list[index] : obj[last]) !== JSON.stringify(op['value'])) return `test failed at ${path}`;
        break;
      case 'remove':
        if (!exists) return `nothing to remove at ${path}`;
        if (list) list.splice(index, 1);
        else delete obj[last];
        break;
      case 'add':
        if (list) list.splice(index, 0, op['value']);
        else obj[last] = op['value'];
        break;
      case 'replace':
        if (!exists) return `nothing to replace at ${path}`;
        if (list) list[index] = op['value'];
        else obj[last] = op['value'];
        break;
      default:
        return `unsupported op ${String(op['op'])}`;
    }
  }
  return undefined;
}

function keyOf(kind: FakeKind, meta: Json): string {
  const name = meta['name'];
  if (typeof name !== 'string') throw new Error('fake apiserver: metadata.name is required');
  const ns = kind === 'Pod' || kind === 'NetworkPolicy' ? ((meta['namespace'] as string | undefined) ?? 'default') : '';
  if (kind === 'Pod' || kind === 'NetworkPolicy') meta['namespace'] = ns;
  return `${ns}/${name}`;
}

function withKind(kind: FakeKind, o: Json): Json {
  return { apiVersion: API_VERSIONS[kind], kind, ...o };
}

function write(res: http.ServerResponse, event: Json): void {
  if (!res.writableEnded && !res.destroyed) res.write(`${JSON.stringify(event)}\n`);
}

// -------------------------------------------------------------------------------------------------
// Wire objects for tests and benchmarks

export function namespaceObject(name: string, labels: Record<string, string> = {}): Json {
  return { metadata: { name, labels: { 'kubernetes.io/metadata.name': name, ...labels } }, spec: { finalizers: ['kubernetes'] }, status: { phase: 'Active' } };
}

export interface PodSpecLite {
  readonly namespace: string;
  readonly name: string;
  readonly labels?: Record<string, string>;
  readonly ips?: readonly string[];
  readonly node?: string;
  readonly hostNetwork?: boolean;
  readonly ports?: readonly { name?: string; containerPort: number; protocol?: string }[];
  readonly phase?: string;
}

export function podObject(p: PodSpecLite): Json {
  const ips = p.ips ?? [];
  return {
    metadata: { name: p.name, namespace: p.namespace, labels: p.labels ?? {}, annotations: { 'example.com/note': 'x' } },
    spec: {
      nodeName: p.node,
      hostNetwork: p.hostNetwork,
      containers: [{ name: 'main', image: 'registry.example/app:1', ports: p.ports ?? [], resources: {} }],
      restartPolicy: 'Always',
    },
    status: {
      phase: p.phase ?? (ips.length > 0 ? 'Running' : 'Pending'),
      conditions: [{ type: 'Ready', status: 'True' }],
      ...(ips.length > 0 ? { podIP: ips[0], podIPs: ips.map((ip) => ({ ip })) } : {}),
    },
  };
}

export function nodeObject(name: string, addresses: readonly string[]): Json {
  return {
    metadata: { name, labels: { 'kubernetes.io/hostname': name } },
    spec: { podCIDR: '198.18.0.0/24' },
    status: { addresses: [...addresses.map((address) => ({ type: 'InternalIP', address })), { type: 'Hostname', address: name }], conditions: [] },
  };
}

export function policyObject(namespace: string, name: string, spec: Json): Json {
  return { metadata: { name, namespace, generation: 1 }, spec };
}
