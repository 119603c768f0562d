// The two TCP relays share one contract: every behaviour below runs for the JS relay
// (relayTcp, tcp-relay.ts) and for the kernel relay (relayTcpSplice, splice-relay.ts, over the
// addon's splice engine). Real sockets over loopback, in this process: clients connect to a
// transparent listener of the addon (as the agent's), each accepted connection becomes a flow
// entry whose destination is the test's upstream server, and the relay under test connects
// there with the addon's transparent connect from the client's address.
//
// Needs root (IP_TRANSPARENT) and the built addon; skipped with the reason in the suite's title
// otherwise, and failing in CI (CI=true), where every prerequisite is installed.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import net from 'node:net';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { FlowEntry } from '../src/conntrack/flow-table.js';
import { loadNativeSockets, nativeAddonPath, type NativeSockets, type SpliceRelayEnd, type TransparentTcpListener } from '../src/dataplane/native.js';
import { FakeNativeSockets } from '../src/dataplane/native-fake.js';
import { relayTcpSplice, socketFd } from '../src/dataplane/splice-relay.js';
import { relayTcp, type RelayEvents, type UpstreamConnector } from '../src/dataplane/tcp-relay.js';
import { parseAddrInto, PROTO_TCP } from '../src/policy/addr.js';
import { waitFor, within } from './support/wait.js';

const addonPath = nativeAddonPath();
const isRoot = process.getuid?.() === 0;
const haveAddon = addonPath !== undefined && existsSync(addonPath);
const skipReason = !isRoot ? 'not root' : !haveAddon ? `addon not built (${addonPath}): run npm ci` : '';
const title = (t: string): string => (skipReason ? `${t} [skipped: ${skipReason}]` : t);
if (skipReason) console.warn(`splice relay tests skipped: ${skipReason}`);


/** A loopback TCP connection, both ends half-close aware; the accepted end starts paused (unread). */
async function socketPair(): Promise<[net.Socket, net.Socket]> {
  const srv = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  const x = net.connect({ host: '127.0.0.1', port: (srv.address() as net.AddressInfo).port, allowHalfOpen: true });
  const y = await accepted;
  srv.close();
  return [x, y];
}
describe.runIf(skipReason !== '' && process.env.CI === 'true')('splice relay prerequisites in CI', () => {
  it('are all present (root, the built addon)', () => {
    expect(skipReason).toBe('');
  });
});

const MiB = 1 << 20;

// ---- helpers -------------------------------------------------------------------------------

/** One end of a test connection: what it received (hashed; kept if asked), how it ended. */
class Peer {
  readonly chunks: Buffer[] = [];
  bytes = 0;
  ended = false;
  closed = false;
  error: string | undefined;
  readonly closedP: Promise<void>;
  private readonly hash = createHash('sha256');
  private digestHex: string | undefined;

  constructor(
    readonly socket: net.Socket,
    keep = true,
  ) {
    socket.on('data', (b: Buffer) => {
      this.bytes += b.length;
      this.hash.update(b);
      if (keep) this.chunks.push(b);
    });
    socket.on('end', () => (this.ended = true));
    socket.on('error', (e: NodeJS.ErrnoException) => (this.error ??= e.code ?? e.message));
    this.closedP = new Promise((resolve) =>
      socket.on('close', () => {
        this.closed = true;
        resolve();
      }),
    );
  }

  text(): string {
    return Buffer.concat(this.chunks).toString();
  }

  digest(): string {
    this.digestHex ??= this.hash.digest('hex');
    return this.digestHex;
  }
}

/** Writes `total` random bytes with backpressure (no end); resolves with their sha256. */
async function sendRandom(socket: net.Socket, total: number, progress: { sent: number } = { sent: 0 }, chunk = 256 * 1024): Promise<string> {
  const h = createHash('sha256');
  let sent = 0;
  while (sent < total) {
    const b = randomBytes(Math.min(chunk, total - sent));
    h.update(b);
    sent += b.length;
    progress.sent = sent;
    if (!socket.write(b)) {
      await new Promise<void>((resolve, reject) => {
        const onErr = (e: Error): void => reject(e);
        socket.once('error', onErr);
        socket.once('drain', () => {
          socket.off('error', onErr);
          resolve();
        });
      });
    }
  }
  return h.digest('hex');
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

// ---- the harness: listener -> relay under test -> upstream server -----------------------------

type Relay = (client: net.Socket, entry: FlowEntry, connect: UpstreamConnector, ev: RelayEvents) => Promise<void>;

/** What the relay reported for one flow. */
interface FlowRecord {
  entry: FlowEntry;
  toServer: number;
  toClient: number;
  bytesEvents: number;
  upstreamErrors: string[];
  closed: number;
  closedP: Promise<void>;
}

interface Harness {
  front: TransparentTcpListener;
  upstreamPort: number;
  flows: FlowRecord[];
  /** Resolves with the server side of the next upstream connection. */
  connectClient(): Promise<net.Socket>;
  close(): Promise<void>;
}

function makeEntry(src: string, srcPort: number, dst: string, dstPort: number): FlowEntry {
  const e = new FlowEntry();
  e.proto = PROTO_TCP;
  e.family = 4;
  parseAddrInto(src, e.src);
  parseAddrInto(dst, e.dst);
  e.srcPort = srcPort;
  e.dstPort = dstPort;
  e.state = 'allowed';
  return e;
}

async function harness(
  ns: NativeSockets,
  relay: Relay,
  onUpstream: ((s: net.Socket) => void) | { port: number },
): Promise<Harness> {
  let upstreamPort: number;
  let server: net.Server | undefined;
  const served = new Set<net.Socket>();
  if (typeof onUpstream === 'function') {
    const handler = onUpstream;
    server = net.createServer({ allowHalfOpen: true }, (s) => {
      served.add(s);
      handler(s);
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    upstreamPort = (server.address() as net.AddressInfo).port;
  } else {
    upstreamPort = onUpstream.port;
  }
  const flows: FlowRecord[] = [];
  const connect: UpstreamConnector = (o) => ns.connectTransparentTcp({ ...o, timeoutMs: 5000 });
  const front = await ns.listenTransparentTcp({ family: 4, address: '127.0.0.1', port: 0, backlog: 1024 }, (socket, flow) => {
    socket.on('error', () => {}); // as the data plane does: the relay handles resets
    let resolveClosed: () => void = () => {};
    const rec: FlowRecord = {
      entry: makeEntry(flow.srcAddress, flow.srcPort, '127.0.0.1', upstreamPort),
      toServer: 0,
      toClient: 0,
      bytesEvents: 0,
      upstreamErrors: [],
      closed: 0,
      closedP: new Promise<void>((r) => (resolveClosed = r)),
    };
    flows.push(rec);
    void relay(socket, rec.entry, connect, {
      bytes: (dir, n) => {
        rec.bytesEvents++;
        if (dir === 'toServer') rec.toServer += n;
        else rec.toClient += n;
      },
      upstreamError: (code) => rec.upstreamErrors.push(code),
      closed: () => {
        rec.closed++;
        resolveClosed();
      },
    });
  });
  const clients = new Set<net.Socket>();
  return {
    front,
    upstreamPort,
    flows,
    connectClient: () =>
      new Promise((resolve, reject) => {
        const c = net.connect({ host: '127.0.0.1', port: front.port, allowHalfOpen: true });
        clients.add(c);
        c.once('connect', () => resolve(c));
        c.once('error', reject);
      }),
    close: async () => {
      for (const c of clients) c.destroy();
      for (const s of served) s.destroy();
      server?.close();
      await front.close();
    },
  };
}

// ---- the shared contract ---------------------------------------------------------------------

let ns: NativeSockets;

const RELAYS: { name: string; relay: () => Relay }[] = [
  { name: 'js', relay: () => relayTcp },
  {
    name: 'splice',
    relay: () => (client, entry, connect, ev) =>
      relayTcpSplice(client, entry, connect, ev, ns, { connectFd: (o) => ns.connectTransparentTcpFd!({ ...o, timeoutMs: 5000 }) }),
  },
];

describe.skipIf(skipReason !== '').each(RELAYS)(title('TCP relay contract: $name'), ({ name, relay }) => {
  let h: Harness | undefined;
  let startedBefore = 0;
  beforeAll(() => {
    ns = loadNativeSockets();
    if (name === 'splice') expect(ns.spliceRelay).toBeTypeOf('function');
  });
  beforeEach(() => {
    startedBefore = ns.spliceCounters?.().started ?? 0;
  });
  afterEach(async () => {
    // The splice runs really went through the engine (no silent fallback to the JS relay).
    const connected = h?.flows.filter((f) => f.upstreamErrors.length === 0).length ?? 0;
    const started = (ns.spliceCounters?.().started ?? 0) - startedBefore;
    await h?.close();
    h = undefined;
    if (name === 'splice') expect(started).toBeGreaterThanOrEqual(connected);
    else expect(started).toBe(0);
  });

  it('relays 64 MiB each way at once, byte-exact (sha256), then a FIN each way', async () => {
    const SIZE = 64 * MiB;
    let serverPeer: Peer | undefined;
    let serverSent: Promise<string> | undefined;
    h = await harness(ns, relay(), (s) => {
      serverPeer = new Peer(s, false);
      serverSent = sendRandom(s, SIZE).then((hex) => {
        s.end();
        return hex;
      });
    });
    const c = await h.connectClient();
    const clientPeer = new Peer(c, false);
    const clientSent = await within(sendRandom(c, SIZE), 60_000, 'client sends 64 MiB');
    c.end();
    await within(clientPeer.closedP, 60_000, 'the client connection closes');
    await waitFor(() => serverPeer?.closed === true, 10_000, 'the server connection closes');
    expect(clientPeer.error).toBeUndefined();
    expect(serverPeer!.error).toBeUndefined();
    expect(clientPeer.ended && serverPeer!.ended).toBe(true);
    expect(serverPeer!.bytes).toBe(SIZE);
    expect(serverPeer!.digest()).toBe(clientSent);
    expect(clientPeer.bytes).toBe(SIZE);
    expect(clientPeer.digest()).toBe(await serverSent!);
    const rec = h.flows[0]!;
    await within(rec.closedP, 5000, 'closed');
    expect(rec).toMatchObject({ toServer: SIZE, toClient: SIZE, upstreamErrors: [], closed: 1 });
  });

  it('half-close: the client ends first, the server still writes 4 MiB, then ends', async () => {
    const reply = randomBytes(4 * MiB);
    let serverSawEndFirst: boolean | undefined;
    let serverPeer: Peer | undefined;
    h = await harness(ns, relay(), (s) => {
      const p = (serverPeer = new Peer(s));
      s.on('end', () => {
        // The client's FIN is here; the other direction is still open.
        setTimeout(() => {
          serverSawEndFirst = p.ended && p.text() === 'the whole request';
          s.end(reply);
        }, 50);
      });
    });
    const c = await h.connectClient();
    const cp = new Peer(c);
    c.end('the whole request');
    await within(cp.closedP, 20_000, 'the client connection closes');
    expect(serverSawEndFirst).toBe(true);
    expect(cp.error).toBeUndefined();
    expect(cp.ended).toBe(true);
    expect(cp.bytes).toBe(reply.length);
    expect(sha(Buffer.concat(cp.chunks))).toBe(sha(reply));
    await waitFor(() => serverPeer?.closed === true, 5000, 'server closed');
    expect(serverPeer!.error).toBeUndefined();
    await within(h.flows[0]!.closedP, 5000, 'closed');
    expect(h.flows[0]).toMatchObject({ toServer: 17, toClient: reply.length, closed: 1 });
  });

  it('half-close the other way: the server ends first, the client still sends 1 MiB', async () => {
    const late = randomBytes(MiB);
    let serverPeer: Peer | undefined;
    h = await harness(ns, relay(), (s) => {
      serverPeer = new Peer(s);
      s.end('hello, and bye');
    });
    const c = await h.connectClient();
    const cp = new Peer(c);
    await waitFor(() => cp.ended, 5000, "the server's FIN at the client");
    expect(cp.text()).toBe('hello, and bye');
    expect(cp.closed).toBe(false);
    c.end(late);
    await waitFor(() => serverPeer?.ended === true, 10_000, "the client's FIN at the server");
    expect(sha(Buffer.concat(serverPeer!.chunks))).toBe(sha(late));
    await within(cp.closedP, 5000, 'client closed');
    expect(cp.error).toBeUndefined();
    expect(serverPeer!.error).toBeUndefined();
    await within(h.flows[0]!.closedP, 5000, 'closed');
    expect(h.flows[0]).toMatchObject({ toServer: late.length, toClient: 14, closed: 1 });
  });

  it('backpressure: a server that does not read stalls the client (bounded bytes in flight); then all of it arrives', async () => {
    const SIZE = 64 * MiB;
    let server: net.Socket | undefined;
    h = await harness(ns, relay(), (s) => {
      server = s;
      s.pause(); // not reading yet
    });
    const c = await h.connectClient();
    const progress = { sent: 0 };
    const sent = sendRandom(c, SIZE, progress);
    await new Promise((r) => setTimeout(r, 800));
    const stalledAt = progress.sent;
    await new Promise((r) => setTimeout(r, 400));
    expect(progress.sent).toBe(stalledAt); // no more accepted: the window is closed end to end
    expect(stalledAt).toBeLessThan(48 * MiB); // socket buffers and the relay's pipe, not the whole stream
    const sp = new Peer(server!, false);
    server!.on('end', () => server!.end());
    server!.resume();
    const hex = await within(sent, 30_000, 'the rest of the stream');
    c.end();
    const cp = new Peer(c);
    await within(cp.closedP, 10_000, 'client closed');
    expect(sp.bytes).toBe(SIZE);
    expect(sp.digest()).toBe(hex);
  });

  it('many tiny writes (20,000 of 7 bytes, no Nagle) against a slow reader arrive in order', async () => {
    let sp: Peer | undefined;
    h = await harness(ns, relay(), (s) => {
      s.pause();
      sp = new Peer(s);
      setTimeout(() => s.resume(), 200);
      s.on('end', () => s.end());
    });
    const c = await h.connectClient();
    c.setNoDelay(true);
    const cp = new Peer(c);
    const parts: string[] = [];
    for (let i = 0; i < 20_000; i++) {
      const p = `${String(i).padStart(6, '0')}|`;
      parts.push(p);
      c.write(p);
      if (i % 500 === 0) await new Promise((r) => setImmediate(r)); // let them leave as separate segments
    }
    c.end();
    await within(cp.closedP, 20_000, 'client closed');
    expect(sp!.text()).toBe(parts.join(''));
  });

  it('an upstream that writes 1 MiB and then resets: the client is reset (ECONNRESET)', async () => {
    h = await harness(ns, relay(), (s) => {
      s.on('error', () => {});
      s.write(randomBytes(MiB), () => s.resetAndDestroy());
    });
    const c = await h.connectClient();
    const cp = new Peer(c, false);
    await within(cp.closedP, 5000, 'client closed');
    expect(cp.error).toBe('ECONNRESET');
    await within(h.flows[0]!.closedP, 5000, 'closed');
  });

  it('a client reset resets the upstream connection (ECONNRESET at the server)', async () => {
    let serverPeer: Peer | undefined;
    h = await harness(ns, relay(), (s) => {
      serverPeer = new Peer(s);
    });
    const c = await h.connectClient();
    c.on('error', () => {});
    c.write('some bytes first');
    await waitFor(() => (serverPeer?.bytes ?? 0) === 16, 5000, 'the first bytes at the server');
    c.resetAndDestroy();
    await waitFor(() => serverPeer?.closed === true, 5000, 'the server connection closes');
    expect(serverPeer!.error).toBe('ECONNRESET');
    await within(h.flows[0]!.closedP, 5000, 'closed');
    expect(h.flows[0]!.closed).toBe(1);
  });

  it('an upstream reset resets the client (ECONNRESET at the client)', async () => {
    h = await harness(ns, relay(), (s) => {
      s.once('data', () => s.resetAndDestroy());
      s.on('error', () => {});
    });
    const c = await h.connectClient();
    const cp = new Peer(c);
    c.write('hello');
    await within(cp.closedP, 5000, 'the client connection closes');
    expect(cp.error).toBe('ECONNRESET');
    await within(h.flows[0]!.closedP, 5000, 'closed');
    expect(h.flows[0]!.closed).toBe(1);
  });

  it('entry.close() (a policy change) resets both sides', async () => {
    let serverPeer: Peer | undefined;
    h = await harness(ns, relay(), (s) => {
      serverPeer = new Peer(s);
      s.on('data', (b: Buffer) => s.write(b)); // echo
    });
    const c = await h.connectClient();
    const cp = new Peer(c);
    c.write('ping');
    await waitFor(() => cp.text() === 'ping', 5000, 'the echo');
    const rec = h.flows[0]!;
    rec.entry.close('policy change');
    expect(rec.entry.state).toBe('closed');
    await within(cp.closedP, 5000, 'the client connection closes');
    await waitFor(() => serverPeer?.closed === true, 5000, 'the server connection closes');
    expect(cp.error).toBe('ECONNRESET');
    expect(serverPeer!.error).toBe('ECONNRESET');
    await within(rec.closedP, 5000, 'closed');
    expect(rec.closed).toBe(1);
  });

  it('a refused upstream connect resets the client and reports ECONNREFUSED', async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    h = await harness(ns, relay(), { port });
    const c = await h.connectClient();
    const cp = new Peer(c);
    await within(cp.closedP, 5000, 'the client connection closes');
    expect(cp.error).toBe('ECONNRESET');
    await within(h.flows[0]!.closedP, 5000, 'closed');
    expect(h.flows[0]).toMatchObject({ upstreamErrors: ['ECONNREFUSED'], closed: 1, toServer: 0, toClient: 0 });
  });

  it('200 concurrent relays (echo of 32 KiB each) all complete byte-exact', async () => {
    const N = 200;
    h = await harness(ns, relay(), (s) => s.pipe(s));
    const results = await within(
      Promise.all(
        Array.from({ length: N }, async () => {
          const payload = randomBytes(32 * 1024);
          const c = await h!.connectClient();
          const cp = new Peer(c);
          c.end(payload);
          await cp.closedP;
          return cp.error === undefined && cp.ended && Buffer.concat(cp.chunks).equals(payload);
        }),
      ),
      50_000,
      `${N} echoes`,
    );
    expect(results.filter((ok) => !ok)).toHaveLength(0);
    await within(Promise.all(h.flows.map((f) => f.closedP)), 10_000, 'every flow closed');
    expect(h.flows).toHaveLength(N);
    expect(h.flows.every((f) => f.closed === 1 && f.toServer === 32 * 1024 && f.toClient === 32 * 1024)).toBe(true);
  });

  it('leaks no fd: after 60 flows (clean, client reset, upstream reset) the fd count is back', async () => {
    const pooledFds = (): number => 2 * (ns.spliceCounters?.().pipesPooled ?? 0); // the engine's reusable pipes
    const round = async (): Promise<void> => {
      const h2 = await harness(ns, relay(), (s) => {
        s.on('error', () => {});
        s.once('data', (b: Buffer) => (b.toString() === 'reset me' ? s.resetAndDestroy() : s.end('bye')));
      });
      try {
        await Promise.all(
          Array.from({ length: 60 }, async (_, i) => {
            const c = await h2.connectClient();
            const cp = new Peer(c);
            if (i % 3 === 0) c.end('hello');
            else if (i % 3 === 1) c.write('reset me');
            else {
              c.write('x');
              await waitFor(() => cp.bytes > 0, 5000, 'bye');
              c.resetAndDestroy();
            }
            await cp.closedP;
          }),
        );
        await within(Promise.all(h2.flows.map((f) => f.closedP)), 10_000, 'every flow closed');
      } finally {
        await h2.close();
      }
    };
    await round(); // warm-up: engine thread, epoll, pipe pool
    await new Promise((r) => setTimeout(r, 100));
    const before = openFds() - pooledFds();
    await round();
    await waitFor(() => openFds() - pooledFds() <= before, 5000, `fds back to ${before} (now ${openFds() - pooledFds()})`);
    expect(openFds() - pooledFds()).toBe(before);
    if (name === 'splice') expect(ns.spliceCounters!().active).toBe(0);
  });
});

// ---- the kernel relay only ------------------------------------------------------------------

describe.skipIf(skipReason !== '')(title('splice relay specifics'), () => {
  beforeAll(() => {
    ns = loadNativeSockets();
  });

  /**
   * Starts the engine relaying b <-> c; the function returned waits for its completion, then
   * closes b and c and waits until both far ends (`peers`) have seen the end.
   */
  const relayBetween = (b: net.Socket, c: net.Socket, peers: Peer[]) => {
    const done = new Promise<[SpliceRelayEnd, number, number, number]>((resolve) => {
      ns.spliceRelay!(socketFd(b), socketFd(c), (...args) => resolve(args));
    });
    return async (): Promise<[SpliceRelayEnd, number, number, number]> => {
      const r = await within(done, 5000, 'completion');
      b.destroy();
      c.destroy();
      await within(Promise.all(peers.map((p) => p.closedP)), 5000, 'both ends closed');
      return r;
    };
  };

  it('spliceRelay on two socket pairs: bytes, FINs, and the completion (null, counts, syscalls)', async () => {
    // Two loopback connections: a <-> b (the "client" side) and c <-> d (the "upstream" side);
    // the engine relays b <-> c; the test talks through a and d.
    const [a, b] = await socketPair();
    const [d, c] = await socketPair();
    const before = ns.spliceCounters!();
    const ap = new Peer(a);
    const dp = new Peer(d);
    const finished = relayBetween(b, c, [ap, dp]);
    a.end('to the server');
    d.end('to the client!');
    const [end, toServer, toClient, syscalls] = await finished();
    expect(end).toBeNull();
    expect([toServer, toClient]).toEqual([13, 14]);
    expect(dp.text()).toBe('to the server');
    expect(ap.text()).toBe('to the client!');
    expect(syscalls).toBeGreaterThan(8);
    expect(syscalls).toBeLessThan(60);
    const after = ns.spliceCounters!();
    expect(after.started - before.started).toBe(1);
    expect(after.completed - before.completed).toBe(1);
    // 13 and 14 bytes: each read into the engine's buffer and sent on (no pipe, no splice).
    expect(after.spliceCalls).toBe(before.spliceCalls);
    expect(after.bytesToServer - before.bytesToServer).toBe(13);
    expect(after.threads).toBeGreaterThanOrEqual(1);
  });

  it('bytes and the FIN already queued when the relay starts (one readiness edge for both) still end the flow', async () => {
    // The engine reads a short message and takes a short read as "empty, wait for the next
    // edge"; a FIN that arrived with those bytes brings no edge of its own, so the relay must
    // notice it (EPOLLRDHUP) and read on to the end. Here both are queued before it starts, and
    // nothing else happens on that socket until the FIN is through: the upstream answers only
    // after its end.
    const [a, b] = await socketPair();
    const [d, c] = await socketPair();
    const ap = new Peer(a);
    const dp = new Peer(d);
    a.end('queued with its FIN');
    d.on('end', () => d.end('and the other way'));
    await new Promise((r) => setTimeout(r, 100)); // they arrive at b (paused: unread)
    const [end, toServer, toClient] = await relayBetween(b, c, [ap, dp])();
    expect(end).toBeNull();
    expect([toServer, toClient]).toEqual([19, 17]);
    expect(dp.text()).toBe('queued with its FIN');
    expect(ap.text()).toBe('and the other way');
  });

  it('reports bytes while a long flow lives (progress), not only at its end', async () => {
    let serverPeer: Peer | undefined;
    const h = await harness(
      ns,
      (client, entry, connect, ev) => relayTcpSplice(client, entry, connect, ev, ns, { connectFd: (o) => ns.connectTransparentTcpFd!({ ...o, timeoutMs: 5000 }) }),
      (s) => {
        serverPeer = new Peer(s, false);
        s.on('end', () => s.end());
      },
    );
    try {
      const c = await h.connectClient();
      const splices0 = ns.spliceCounters!().spliceCalls;
      await within(sendRandom(c, 2 * MiB), 5000, "send 2 MiB");
      await waitFor(() => serverPeer?.bytes === 2 * MiB, 5000, 'bytes at the server');
      // A bulk direction (the engine's 8 KiB copy buffer filled) moves by splice.
      expect(ns.spliceCounters!().spliceCalls).toBeGreaterThan(splices0);
      await waitFor(() => h.flows[0]!.toServer === 2 * MiB, 3000, 'a progress report');
      expect(h.flows[0]!.closed).toBe(0);
      c.end();
      await within(h.flows[0]!.closedP, 5000, 'closed');
      expect(h.flows[0]!.toServer).toBe(2 * MiB); // the end adds only what was not reported yet
    } finally {
      await h.close();
    }
  });

  it('works with a net.Socket upstream too (no connectFd): byte-exact, then an upstream reset', async () => {
    let n = 0;
    const h = await harness(
      ns,
      (client, entry, connect, ev) => relayTcpSplice(client, entry, connect, ev, ns),
      (s) => {
        s.on('error', () => {});
        if (n++ === 0) s.pipe(s);
        else s.once('data', () => s.resetAndDestroy());
      },
    );
    try {
      const payload = randomBytes(3 * MiB);
      const c1 = await h.connectClient();
      const p1 = new Peer(c1);
      c1.end(payload);
      await within(p1.closedP, 10_000, 'echo');
      expect(p1.error).toBeUndefined();
      expect(sha(Buffer.concat(p1.chunks))).toBe(sha(payload));
      const c2 = await h.connectClient();
      const p2 = new Peer(c2);
      c2.write('x');
      await within(p2.closedP, 5000, 'reset');
      expect(p2.error).toBe('ECONNRESET');
      await within(Promise.all(h.flows.map((f) => f.closedP)), 5000, 'closed');
      expect(ns.spliceCounters!().active).toBe(0);
    } finally {
      await h.close();
    }
  });

  it('bad arguments throw TypeError, and a bad fd a NativeError with every fd still the caller’s', () => {
    expect(() => ns.spliceRelay!(-1, 5, () => {})).toThrow(TypeError);
    expect(() => ns.spliceRelay!(5, 5, () => {})).toThrow(TypeError);
    expect(() => ns.spliceRelay!(5, 6, 'x' as unknown as () => void)).toThrow(TypeError);
    const before = ns.spliceCounters!().startFailures;
    expect(() => ns.spliceRelay!(999_999, 999_998, () => {})).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'fcntl' }));
    expect(ns.spliceCounters!().startFailures).toBe(before + 1);
  });
});

// ---- without the kernel path (no root needed) -------------------------------------------------

describe('relayTcpSplice without spliceRelay (FakeNativeSockets) falls back to the JS relay', () => {
  it('relays byte-exact with half-close over the fake', async () => {
    const fake = new FakeNativeSockets();
    try {
      await fake.serveTcp({ address: '198.18.1.20', port: 8080 }, (s) => {
        s.allowHalfOpen = true;
        s.pipe(s);
      });
      let closed = 0;
      let toServer = 0;
      const listener = await fake.listenTransparentTcp({ family: 4, address: '0.0.0.0', port: 15001 }, (socket, flow) => {
        const e = makeEntry(flow.srcAddress, flow.srcPort, flow.dstAddress, flow.dstPort);
        void relayTcpSplice(
          socket,
          e,
          (o) => fake.connectTransparentTcp(o),
          { bytes: (d, n) => (toServer += d === 'toServer' ? n : 0), upstreamError: () => {}, closed: () => closed++ },
          fake,
        );
      });
      fake.redirectTcp(listener);
      const c = await fake.clientTcp({ srcAddress: '198.18.3.10', srcPort: 40000, dstAddress: '198.18.1.20', dstPort: 8080 });
      const cp = new Peer(c);
      const payload = randomBytes(256 * 1024);
      c.end(payload);
      await within(cp.closedP, 5000, 'echo');
      expect(Buffer.concat(cp.chunks).equals(payload)).toBe(true);
      await waitFor(() => closed === 1, 5000, 'closed');
      expect(toServer).toBe(payload.length);
    } finally {
      await fake.close();
    }
  });
});
