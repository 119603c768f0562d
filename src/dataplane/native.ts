// The typed surface of netpold's N-API addon (native/: C++, built by node-gyp during `npm ci`):
// the three things Node.js cannot do by itself for a TPROXY data plane.
//
// - listenTransparentTcp: a listening socket with IP_TRANSPARENT, adopted by a net.Server. Under
//   TPROXY, accepted sockets have the ORIGINAL destination as their local address; the flow the
//   connection listener receives says so explicitly (so fakes can supply it too).
// - connectTransparentTcp: an upstream TCP connection FROM a foreign source address (the client's
//   own address), made without blocking the event loop, resolved as a plain net.Socket.
// - openUdp: a UDP socket reading with recvmsg and IP_RECVORIGDSTADDR (original destination of
//   each datagram), transparent binds to foreign addresses, SO_MARK and SO_REUSEPORT.
//
// - spliceRelay (optional member): the byte path of an allowed TCP flow in the kernel: splice(2)
//   between the two sockets through a pipe per direction, on the addon's own epoll thread; JS is
//   told when the flow ends (src/dataplane/splice-relay.ts uses it). connectTransparentTcpFd is
//   connectTransparentTcp without the net.Socket, for that relay. The JS relay
//   (src/dataplane/tcp-relay.ts) over plain Node sockets stays, and is what the fake supports.
//
// Unit tests of data-plane logic use ./native-fake.ts (same interface, over loopback, no root).
import { existsSync, readFileSync, closeSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NetpoldError } from '../errors.js';

export type IpFamily = 4 | 6;

/**
 * A system error from the addon (or the fake): `code` is the errno name ('ECONNREFUSED',
 * 'ETIMEDOUT', 'EADDRINUSE', 'EPERM'...), `errno` is negative as in Node's own system errors
 * (`util.getSystemErrorName(errno) === code`), `syscall` the call that failed. Invalid arguments
 * are TypeErrors with code 'ERR_INVALID_ARG_VALUE' instead.
 */
export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

/** One TCP flow as the client sent it: its source, and the original destination it asked for. */
export interface TcpFlow {
  family: IpFamily;
  srcAddress: string;
  srcPort: number;
  /** Original destination (under TPROXY, the accepted socket's local address). */
  dstAddress: string;
  dstPort: number;
}

export interface TransparentTcpListenOptions {
  family: IpFamily;
  /** Numeric address of the family ('0.0.0.0', '127.0.0.1', '::'...). */
  address: string;
  /** 0 picks a free port. */
  port: number;
  /** listen(2) backlog; default 511. */
  backlog?: number;
}

export interface TransparentTcpListener {
  /** The net.Server that adopted the listening socket (its 'error' events are yours). */
  readonly server: net.Server;
  readonly family: IpFamily;
  /** The bound address and port (the actual port when 0 was asked for). */
  readonly address: string;
  readonly port: number;
  /** Stops accepting; resolves when the server has closed (as net.Server#close: after its connections end). */
  close(): Promise<void>;
}

export type TcpConnectionListener = (socket: net.Socket, flow: TcpFlow) => void;

export interface TransparentTcpConnectOptions {
  family: IpFamily;
  /** Source address to connect from: normally the client's (foreign) address. */
  srcAddress: string;
  /** Source port; 0 = any (picked at connect, unique for the 4-tuple). A busy port is retried once with 0 (see connectTransparentTcp). */
  srcPort: number;
  /** With srcPort 0: a port the kernel must not pick (the client's own; see native/src "Upstream ports"). */
  avoidPort?: number;
  dstAddress: string;
  dstPort: number;
  /** SO_MARK for the upstream socket (e.g. to bypass the TPROXY rules); unset = none. */
  mark?: number;
  /** Connect timeout in ms (error code 'ETIMEDOUT'); default 10000. */
  timeoutMs?: number;
}

export interface UdpOpenOptions {
  family: IpFamily;
  /** Numeric address to bind; with `transparent`, it may be a foreign address. */
  address: string;
  /** 0 picks a free port. */
  port: number;
  /** IP_TRANSPARENT / IPV6_TRANSPARENT: bind to (and send from) a foreign address. */
  transparent: boolean;
  /** Report each datagram's original destination (IP_RECVORIGDSTADDR); else the socket's local address. */
  recvOrigDst: boolean;
  /** SO_MARK for what this socket sends; unset = none. */
  mark?: number;
  /** SO_REUSEPORT too (SO_REUSEADDR is always set), so several sockets can bind one address:port. */
  reuse?: boolean;
}

/**
 * Called for each datagram: source, and destination (original destination with `recvOrigDst`,
 * else the socket's local address). Arguments are flat to avoid an allocation per datagram.
 */
export type UdpMessageListener = (
  msg: Buffer,
  srcAddress: string,
  srcPort: number,
  dstAddress: string,
  dstPort: number,
) => void;

export interface UdpCounters {
  received: number;
  sent: number;
  /** Sends dropped because the socket buffer was full (EAGAIN/ENOBUFS). */
  dropped: number;
  /** Received datagrams larger than the receive buffer, dropped. */
  truncated: number;
  /** Receive errors (ICMP errors reported on connected sockets, ...). */
  errors: number;
}

export interface UdpHandle {
  /** The socket's fd; -1 once closed (and always -1 in the fake). */
  readonly fd: number;
  readonly localAddress: string;
  readonly localPort: number;
  /**
   * Non-blocking send: to (address, port), or to the connected peer when they are omitted.
   * Returns false when the datagram was dropped because the send buffer is full (counted);
   * throws a NativeError for other failures, a TypeError for bad arguments.
   */
  send(msg: Uint8Array, address?: string, port?: number): boolean;
  /** connect(2): fixes the peer; only its datagrams are received from then on. */
  connect(address: string, port: number): void;
  /** Idempotent. A handle dropped without close() is closed by its finalizer (do not rely on it). */
  close(): void;
  counters(): UdpCounters;
}

/**
 * How a spliced relay ended: null when both directions ended with a FIN (each forwarded after
 * its bytes), 'reset-client' / 'reset-upstream' when that side failed (RST, EPIPE, timeout...)
 * and the other side was reset, 'aborted' after abort() (both sides reset).
 */
export type SpliceRelayEnd = 'reset-client' | 'reset-upstream' | 'aborted' | null;

/**
 * Called once per relay, when the engine has let go of both sockets. The byte counts are those
 * delivered to each destination; `syscalls` is the number of system calls the engine made for
 * this relay (setup, splices, teardown; not the shared epoll waits). When `end` is not null the
 * caller must resetAndDestroy() every net.Socket it still holds for the two fds (the RST leaves
 * only when the last fd of a socket is closed); when it is null, destroy() them.
 */
export type SpliceDoneListener = (end: SpliceRelayEnd, bytesToServer: number, bytesToClient: number, syscalls: number) => void;

export interface SpliceRelayOptions {
  /**
   * The relay takes the upstream fd itself instead of a dup() of it (a raw fd from
   * connectTransparentTcpFd: nothing else refers to the socket, so its RST or FIN leaves as soon
   * as the engine closes it, and one dup and one close are saved). Ownership passes only if
   * spliceRelay returns; if it throws, the fd is still the caller's.
   */
  ownUpstream?: boolean;
}

export interface SpliceRelayHandle {
  /** Process-unique relay id (as in spliceProgress). */
  readonly id: number;
  /** Resets both sides (policy change, shutdown); onDone follows with 'aborted'. Idempotent; a no-op after the end. */
  abort(): void;
}

/** Process-wide counters of the splice engine (monotonic, except active and pipesPooled). */
export interface SpliceCounters {
  started: number;
  active: number;
  completed: number;
  resetClient: number;
  resetUpstream: number;
  aborted: number;
  bytesToServer: number;
  bytesToClient: number;
  /** splice(2) calls. */
  spliceCalls: number;
  /** Every system call the engine made (setup on the JS thread included). */
  syscalls: number;
  /** epoll_wait returns of the engine's loops. */
  wakeups: number;
  pipesCreated: number;
  pipesReused: number;
  pipesPooled: number;
  /** spliceRelay calls that threw (EMFILE, ...): the caller fell back or failed the flow. */
  startFailures: number;
  /** Engine loop threads started (spliceRelay: 1 by default, NETPOLD_SPLICE_THREADS; the fast path: one per listener socket). */
  threads: number;
  /** Fast path: connections accepted by the engine loops. */
  accepted: number;
  /** The same by loop (thread) index: how the SO_REUSEPORT group spread them. */
  acceptedByThread: number[];
  /** Fast path: accept4/getsockname failures (EMFILE... pauses the listener for 100 ms). */
  acceptErrors: number;
  /** Fast path: connections reset because too many were waiting for verdicts (JS not keeping up). */
  refusedBacklog: number;
  /** Fast path: upstream connects that failed (refused, unreachable...). */
  connectFailures: number;
  connectTimeouts: number;
  /** UDP fast path: flows seen, flows live (any state), datagrams relayed, dropped (denied, full buffers), receive errors (ICMP). */
  udpFlows: number;
  udpActive: number;
  udpDatagrams: number;
  udpDropped: number;
  udpErrors: number;
  /** recvmmsg and sendmmsg calls: datagrams / (recv + send calls) is the batching achieved. */
  udpRecvCalls: number;
  udpSendCalls: number;
  /** Fast path: connections relayed at once from an engine loop's verdict cache. */
  cacheHits: number;
  /** sizeof a relay and of a UDP flow in the engine (the memory benchmark's accounting). */
  relayBytes: number;
  udpFlowBytes: number;
  /**
   * Process-wide: bytes malloc has handed out and not taken back (glibc mallinfo2: all arenas,
   * mmapped blocks included): the engine's, Node's own and ArrayBuffer contents; not the JS heap.
   */
  mallocInUseBytes: number;
}

/** Words per accepted connection in FastTcpPath.takePending's buffer. */
export const FAST_PENDING_WORDS = 16;

export interface FastOpenOptions {
  connectTimeoutMs: number;
  udpIdleMs: number;
  /** Entries of each engine loop's verdict cache (0 or a power of two; 0: none). */
  verdictCacheSize?: number;
}
/** Numbers per verdict in FastTcpPath.verdicts' buffer. */
export const FAST_VERDICT_WORDS = 4;
/** Numbers per ended relay in FastTcpPath.takeDone's buffer. */
export const FAST_DONE_WORDS = 6;

/** FastTcpPath.verdicts actions. */
export const FastAction = {
  /** Refuse: the client gets an RST (TPROXY completed its handshake already). */
  Refuse: 0,
  /** Relay, upstream transparent from the client's address and port. */
  Relay: 1,
  /** Relay, upstream from the node's own address (the destination is the node itself). */
  RelayFromNode: 2,
  /** UDP only: denied and remembered; the flow's datagrams are dropped natively until it idles or is aborted. */
  Deny: 3,
} as const;

/** How a fast-path relay ended (FastTcpPath.takeDone): as SpliceRelayEnd, plus UpstreamFailed. */
export const FastEnd = {
  Done: 0,
  ResetClient: 1,
  ResetUpstream: 2,
  Aborted: 3,
  /** The upstream connect failed (the record's errno says why); the client was reset. */
  UpstreamFailed: 4,
} as const;

/**
 * The TCP fast path (native/src/netpold_native.cc, "the fast path"): the addon's engine loops
 * accept on a SO_REUSEPORT group of transparent listeners (one per loop, so on every core),
 * read each connection's original destination, and queue it for a verdict; JS drains the
 * queue in batches (takePending), decides, and answers in one call (verdicts); the engine then
 * connects upstream and splices the flow; ended relays are drained in batches (takeDone). No
 * net.Socket, JS callback or string per connection. One per process.
 */
export interface FastTcpPath {
  /** Sets the function called when connections wait for verdicts or relays have ended. */
  open(onWork: () => void, opts: FastOpenOptions): void;
  /**
   * A listener group of `threads` sockets (and engine loops) on address:port; proto 6 TCP, 17
   * UDP (first datagrams of new flows; an allowed flow then gets an upstream socket of its own,
   * replies leave through a reply socket per destination, and its datagrams never reach JS).
   */
  listen(family: IpFamily, address: string, port: number, backlog: number, threads: number, proto: 6 | 17): { id: number; port: number };
  closeListener(id: number): void;
  /**
   * Fills buf with up to buf.length / FAST_PENDING_WORDS new flows: [slot, family, src×4, dst×4,
   * srcPort, dstPort, proto, cachedAction, relayIdLow, relayIdHigh]. cachedAction != 0: a TCP
   * connection the engine relayed at once from its verdict cache (see verdicts()).
   */
  takePending(buf: Uint32Array): number;
  /**
   * n records [slot, action (FastAction), tag, id←] (the relay id is written back for relays).
   * For a cached connection, the action adopts its relay when it is the cached one (id←: the
   * relay's; one that ended already is adopted too, and its completion follows), else aborts it
   * (id← 0).
   * `generation` (from invalidate()): relay verdicts are cached with it; 0 or absent: not cached.
   */
  verdicts(buf: Float64Array, n: number, generation?: number): void;
  /** Forgets every cached verdict (all engine loops): returns the new generation. */
  invalidate(): number;
  /** Fills buf with up to buf.length / FAST_DONE_WORDS ended relays: [tag, end (FastEnd), errno, bytesToServer, bytesToClient, syscalls]. */
  takeDone(buf: Float64Array): number;
  /** Resets both sides of a live relay; false if it has ended. */
  abort(id: number): boolean;
  /** [tag, bytesToServer, bytesToClient, ...] of live relays whose totals changed since the last call. */
  progress(): Float64Array;
}

/** What the data plane needs from the kernel beyond Node's own sockets. */
export interface NativeSockets {
  /**
   * A transparent TCP listener (IP_TRANSPARENT, SO_REUSEADDR; IPV6_V6ONLY for v6), adopted by a
   * net.Server. Each accepted connection is passed with its flow: read addresses from `flow`
   * (not from the socket) so that fakes can stand in.
   */
  listenTransparentTcp(opts: TransparentTcpListenOptions, onConnection: TcpConnectionListener): Promise<TransparentTcpListener>;
  /** A connected upstream socket from (srcAddress, srcPort) to (dstAddress, dstPort); rejects with a NativeError. */
  connectTransparentTcp(opts: TransparentTcpConnectOptions): Promise<net.Socket>;
  /** A UDP socket; see UdpOpenOptions. */
  openUdp(opts: UdpOpenOptions, onMessage: UdpMessageListener): UdpHandle;

  // ---- the kernel byte path (optional: the fake leaves them out, and callers fall back) ----

  /** As connectTransparentTcp, but the raw connected fd (non-blocking), with no net.Socket. The caller owns it. */
  connectTransparentTcpFd?(opts: TransparentTcpConnectOptions): Promise<number>;
  /**
   * Relays bytes both ways between two connected TCP sockets in the kernel (splice through a
   * pipe per direction, on the addon's epoll thread) until both directions end or one side
   * fails; see SpliceDoneListener. The fds are dup()ed (the caller's own fds stay open and must
   * not be read or written meanwhile) unless `ownUpstream`. Throws a NativeError when it cannot
   * start (EMFILE...), with every fd still the caller's.
   */
  spliceRelay?(clientFd: number, upstreamFd: number, onDone: SpliceDoneListener, opts?: SpliceRelayOptions): SpliceRelayHandle;
  /**
   * Byte totals of this process's live spliced relays that changed since the last call, flat:
   * [id, bytesToServer, bytesToClient, id, ...].
   */
  spliceProgress?(): Float64Array;
  spliceCounters?(): SpliceCounters;
  /** close(2) of a raw fd (from connectTransparentTcpFd), with SO_LINGER {1, 0} first when `reset` (an RST). */
  closeTcpFd?(fd: number, reset: boolean): void;
  /**
   * One UDP datagram from (srcAddress, srcPort) to (dstAddress, dstPort), headers built here
   * and written to a raw socket: replies of UDP flows to the node itself, whose address and port
   * a node server may hold (a socket bound there would fail, or take that server's datagrams).
   * false: dropped (no buffer); throws a NativeError otherwise.
   */
  sendUdpRaw?(family: IpFamily, srcAddress: string, srcPort: number, dstAddress: string, dstPort: number, msg: Uint8Array): boolean;
  /** The TCP fast path (optional: the fake leaves it out and the data plane uses the listeners above). */
  fastTcpPath?(): FastTcpPath;
}

/** The raw addon (native/src/netpold_native.cc). */
interface NativeBinding {
  tcpListen(family: IpFamily, address: string, port: number, backlog: number): number;
  tcpConnect(
    opts: {
      family: IpFamily;
      srcAddress: string;
      srcPort: number;
      dstAddress: string;
      dstPort: number;
      mark?: number;
      avoidPort?: number;
      timeoutMs: number;
    },
    cb: (err: NativeError | null, fd: number) => void,
  ): void;
  udpOpen(opts: UdpOpenOptions, onMessage: UdpMessageListener): UdpHandle;
  /** flags: 1 = take clientFd, 2 = take upstreamFd (else dup). Returns the relay id. */
  spliceRelay(clientFd: number, upstreamFd: number, flags: number, onDone: SpliceDoneListener): number;
  spliceAbort(id: number): boolean;
  spliceProgress(): Float64Array;
  spliceStats(): SpliceCounters;
  tcpClose(fd: number, reset: boolean): void;
  udpSendRaw(family: IpFamily, srcAddress: string, srcPort: number, dstAddress: string, dstPort: number, msg: Uint8Array): boolean;
  fastOpen(onWork: () => void, opts: FastOpenOptions): void;
  fastListen(family: IpFamily, address: string, port: number, backlog: number, threads: number, proto: number): { id: number; port: number };
  fastListenerClose(id: number): boolean;
  fastTakePending(buf: Uint32Array): number;
  fastVerdicts(buf: Float64Array, n: number, generation?: number): void;
  fastInvalidate(): number;
  fastTakeDone(buf: Float64Array): number;
  fastAbort(id: number): boolean;
  fastProgress(): Float64Array;
}

const ADDON = join('native', 'build', 'Release', 'netpold_native.node');
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_BACKLOG = 511;

/** The package root: the nearest ancestor directory whose package.json is named netpold. */
function packageRoot(): string | undefined {
  // This module runs from src/dataplane (vitest) and from dist/src/dataplane (built).
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'netpold') return dir;
      } catch {
        // not ours: keep walking up
      }
    }
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

/** Where the addon is (or would be) built; undefined if the package root cannot be found. */
export function nativeAddonPath(): string | undefined {
  const root = packageRoot();
  return root === undefined ? undefined : join(root, ADDON);
}

let binding: NativeBinding | undefined;

function loadBinding(): NativeBinding {
  if (binding !== undefined) return binding;
  const path = nativeAddonPath();
  if (path === undefined) {
    throw new NetpoldError('NETPOLD_E_NATIVE', 'native addon: cannot find the netpold package root (package.json named netpold) above this module');
  }
  if (!existsSync(path)) {
    throw new NetpoldError(
      'NETPOLD_E_NATIVE',
      `native addon missing: ${path} does not exist. Build it with \`npm ci\` (or \`node native/build.mjs\`); it needs python3, make and g++.`,
    );
  }
  try {
    binding = createRequire(import.meta.url)(path) as NativeBinding;
  } catch (e) {
    throw new NetpoldError('NETPOLD_E_NATIVE', `native addon ${path} could not be loaded (rebuild it with \`node native/build.mjs\`): ${(e as Error).message}`);
  }
  return binding;
}

function tcpConnectFd(b: NativeBinding, opts: TransparentTcpConnectOptions, srcPort: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const raw: Parameters<NativeBinding['tcpConnect']>[0] = {
      family: opts.family,
      srcAddress: opts.srcAddress,
      srcPort,
      dstAddress: opts.dstAddress,
      dstPort: opts.dstPort,
      timeoutMs: opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    };
    if (opts.mark !== undefined) raw.mark = opts.mark;
    if (opts.avoidPort !== undefined) raw.avoidPort = opts.avoidPort;
    b.tcpConnect(raw, (err, fd) => (err ? reject(err) : resolve(fd)));
  });
}

function flowOf(family: IpFamily, socket: net.Socket): TcpFlow {
  return {
    family,
    srcAddress: socket.remoteAddress ?? '',
    srcPort: socket.remotePort ?? 0,
    dstAddress: socket.localAddress ?? '',
    dstPort: socket.localPort ?? 0,
  };
}

class RealNativeSockets implements NativeSockets {
  constructor(private readonly b: NativeBinding) {}

  async listenTransparentTcp(opts: TransparentTcpListenOptions, onConnection: TcpConnectionListener): Promise<TransparentTcpListener> {
    const fd = this.b.tcpListen(opts.family, opts.address, opts.port, opts.backlog ?? DEFAULT_BACKLOG);
    const family = opts.family;
    // allowHalfOpen: a client's FIN must not end our side; the relay forwards it as a FIN
    // upstream and keeps the other direction open. pauseOnConnect: nothing is read before the
    // flow is decided.
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => {
      // A connection reset before we look has no addresses: nothing to relay.
      if (socket.remoteAddress === undefined || socket.localAddress === undefined) {
        socket.destroy();
        return;
      }
      onConnection(socket, flowOf(family, socket));
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ fd }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      // Not reached in practice (a fresh listening TCP fd is always adoptable). The fd is not
      // closed here: whether Node adopted (and closed) it cannot be told apart, and closing a
      // number that may already be reused would be worse than this theoretical leak.
      server.close();
      throw e;
    }
    const bound = server.address() as net.AddressInfo;
    return {
      server,
      family,
      address: bound.address,
      port: bound.port,
      close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    };
  }

  async connectTransparentTcpFd(opts: TransparentTcpConnectOptions): Promise<number> {
    try {
      return await tcpConnectFd(this.b, opts, opts.srcPort);
    } catch (e) {
      // The client's port is preserved when possible: if it is taken on this host (another
      // flow from the same client port, a TIME_WAIT), connect once more from any port.
      const code = (e as Partial<NativeError>).code;
      if (opts.srcPort === 0 || (code !== 'EADDRINUSE' && code !== 'EADDRNOTAVAIL')) throw e;
      return await tcpConnectFd(this.b, opts, 0);
    }
  }

  async connectTransparentTcp(opts: TransparentTcpConnectOptions): Promise<net.Socket> {
    const fd = await this.connectTransparentTcpFd(opts);
    try {
      return new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  openUdp(opts: UdpOpenOptions, onMessage: UdpMessageListener): UdpHandle {
    return this.b.udpOpen(opts, onMessage);
  }

  spliceRelay(clientFd: number, upstreamFd: number, onDone: SpliceDoneListener, opts?: SpliceRelayOptions): SpliceRelayHandle {
    const b = this.b;
    const id = b.spliceRelay(clientFd, upstreamFd, opts?.ownUpstream === true ? 2 : 0, onDone);
    return {
      id,
      abort: () => {
        b.spliceAbort(id);
      },
    };
  }

  spliceProgress(): Float64Array {
    return this.b.spliceProgress();
  }

  spliceCounters(): SpliceCounters {
    return this.b.spliceStats();
  }

  closeTcpFd(fd: number, reset: boolean): void {
    this.b.tcpClose(fd, reset);
  }

  sendUdpRaw(family: IpFamily, srcAddress: string, srcPort: number, dstAddress: string, dstPort: number, msg: Uint8Array): boolean {
    return this.b.udpSendRaw(family, srcAddress, srcPort, dstAddress, dstPort, msg);
  }

  private fast: FastTcpPath | undefined;

  fastTcpPath(): FastTcpPath {
    if (this.fast) return this.fast;
    const b = this.b;
    // The addon's channel is opened once per process; open() only retargets it.
    let handler: () => void = () => undefined;
    let opened = false;
    this.fast = {
      open: (onWork, opts) => {
        handler = onWork;
        if (!opened) {
          b.fastOpen(() => handler(), opts);
          opened = true;
        }
      },
      listen: (family, address, port, backlog, threads, proto) => b.fastListen(family, address, port, backlog, threads, proto),
      closeListener: (id) => {
        b.fastListenerClose(id);
      },
      takePending: (buf) => b.fastTakePending(buf),
      verdicts: (buf, n, generation) => b.fastVerdicts(buf, n, generation),
      invalidate: () => b.fastInvalidate(),
      takeDone: (buf) => b.fastTakeDone(buf),
      abort: (id) => b.fastAbort(id),
      progress: () => b.fastProgress(),
    };
    return this.fast;
  }
}

let sockets: NativeSockets | undefined;

/**
 * The addon-backed NativeSockets. Throws a NetpoldError with code NETPOLD_E_NATIVE when the
 * addon is missing or cannot be loaded. Most calls need CAP_NET_ADMIN (IP_TRANSPARENT, SO_MARK).
 */
export function loadNativeSockets(): NativeSockets {
  sockets ??= new RealNativeSockets(loadBinding());
  return sockets;
}
