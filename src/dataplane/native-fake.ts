// An in-memory stand-in for the native addon, for unit tests of data-plane logic without root.
// It implements NativeSockets with plain net/dgram sockets on 127.0.0.1; the addresses the
// data plane sees (client addresses, original destinations, foreign binds) are virtual and are
// supplied by the test through the helpers below, which play the network around the node:
//
//   TCP  redirectTcp(listener)     the TPROXY rule: clientTcp() connections go to that listener
//        clientTcp(flow)           a pod connecting from flow.src to flow.dst
//        serveTcp(at, onConn)      a pod (or any host) serving at a virtual address:port
//        blackholeTcp(addr, port)  connects there time out
//   UDP  redirectUdp(handle)       the TPROXY rule for datagrams sent by endpointUdp() handles
//        endpointUdp(at, onMsg)    a pod or server with a virtual address:port
//
// The listener's onConnection gets the flow the test asked for (src, original dst), and a
// serveTcp server sees the data plane's transparent connects as coming from their srcAddress:
// read addresses from the TcpFlow, not from the socket (its addresses are 127.0.0.1).
//
// UDP delivery of a datagram from S to D. From an endpointUdp handle (the network): to a
// data-plane handle bound to D and connected to S (an established flow socket, as the kernel's
// socket match finds it); else to the redirect handle if one is set (TPROXY); else to a handle
// bound to D. From a data-plane handle (openUdp): out to an endpoint bound to D, else to a
// data-plane handle bound to D; data-plane traffic is never redirected. "Bound to D" prefers,
// newest first: connected to S, then unconnected on D's address, then unconnected on the
// wildcard address with D's port. Otherwise the datagram is lost, as on a network.
// Each datagram carries its virtual source and destination in a small header on the loopback
// wire, so recvOrigDst reports the virtual original destination.
//
// The optional kernel byte path of NativeSockets (spliceRelay, connectTransparentTcpFd, ...) is
// left out on purpose: relayTcpSplice (splice-relay.ts) then falls back to the JS relay, so data
// plane tests over the fake exercise the same contract either way.
import dgram from 'node:dgram';
import net from 'node:net';
import { constants as osConstants } from 'node:os';
import type {
  IpFamily,
  NativeError,
  NativeSockets,
  TcpConnectionListener,
  TcpFlow,
  TransparentTcpConnectOptions,
  TransparentTcpListener,
  TransparentTcpListenOptions,
  UdpCounters,
  UdpHandle,
  UdpMessageListener,
  UdpOpenOptions,
} from './native.js';

const LOOPBACK = '127.0.0.1';
/** How long an accepted loopback connection waits for the flow its fake client registers. */
const FLOW_WAIT_MS = 2000;
/** Virtual ports for UDP handles bound to port 0. */
let fakePortSeq = 0;

export interface FakeEndpoint {
  family?: IpFamily;
  address: string;
  port: number;
}

function nativeError(code: string, syscall: string, call: string, where: string): NativeError {
  const errno = (osConstants.errno as Record<string, number | undefined>)[code] ?? 0;
  const e = new Error(`${call}: ${syscall} failed: ${code}, ${where}`) as NativeError;
  e.code = code;
  e.errno = -errno;
  e.syscall = syscall;
  return e;
}

function typeError(message: string): TypeError {
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_ARG_VALUE' });
}

function checkFamily(call: string, family: unknown): IpFamily {
  if (family !== 4 && family !== 6) throw typeError(`${call}: family must be 4 or 6`);
  return family;
}

function checkAddress(call: string, name: string, family: IpFamily, address: unknown): string {
  if (typeof address !== 'string' || net.isIP(address) !== family) {
    throw typeError(`${call}: ${name} '${String(address)}' is not an IPv${family} address`);
  }
  return address;
}

function checkInt(call: string, name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw typeError(`${call}: ${name} must be an integer from ${min} to ${max}`);
  }
  return v;
}

function isWildcard(address: string): boolean {
  return address === '0.0.0.0' || address === '::';
}

function show(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

interface FakeServer {
  readonly at: { address: string; port: number };
  readonly realPort: number;
}

export class FakeNativeSockets implements NativeSockets {
  /** Every connectTransparentTcp call, in order: what the data plane asked the kernel for. */
  readonly tcpConnects: TransparentTcpConnectOptions[] = [];
  /** Every openUdp call, in order. */
  readonly udpOpens: UdpOpenOptions[] = [];

  private tcpRedirect: TransparentTcpListener | undefined;
  private readonly tcpServers: FakeServer[] = [];
  private readonly blackholes = new Set<string>();
  private readonly flows = new Map<number, TcpFlow>();
  private readonly flowWaiters = new Map<number, (flow: TcpFlow) => void>();
  private pendingClients = 0;
  private readonly servers = new Set<net.Server>();
  private readonly sockets = new Set<net.Socket>();
  /** @internal UDP handles by age (newest last). */
  readonly udpHandles: FakeUdpHandle[] = [];
  /** @internal */
  udpRedirect: FakeUdpHandle | undefined;

  // ---- NativeSockets ------------------------------------------------------------------------

  async listenTransparentTcp(opts: TransparentTcpListenOptions, onConnection: TcpConnectionListener): Promise<TransparentTcpListener> {
    const call = 'tcpListen';
    const family = checkFamily(call, opts.family);
    checkAddress(call, 'address', family, opts.address);
    const port = checkInt(call, 'port', opts.port, 0, 65535);
    // Loopback listeners keep their port; any other address gets a free loopback port.
    const realPort = opts.address === LOOPBACK ? port : 0;
    const server = await this.listen(realPort, family, onConnection);
    const bound = server.address() as net.AddressInfo;
    return {
      server,
      family,
      address: LOOPBACK,
      port: bound.port,
      close: () => this.closeServer(server),
    };
  }

  async connectTransparentTcp(opts: TransparentTcpConnectOptions): Promise<net.Socket> {
    const call = 'tcpConnect';
    const family = checkFamily(call, opts.family);
    checkAddress(call, 'srcAddress', family, opts.srcAddress);
    checkAddress(call, 'dstAddress', family, opts.dstAddress);
    checkInt(call, 'srcPort', opts.srcPort, 0, 65535);
    checkInt(call, 'dstPort', opts.dstPort, 1, 65535);
    if (opts.mark !== undefined) checkInt(call, 'mark', opts.mark, 0, 0xffffffff);
    const timeoutMs = checkInt(call, 'timeoutMs', opts.timeoutMs ?? 10_000, 1, 2 ** 31 - 1);
    this.tcpConnects.push({ ...opts });
    const where = `to ${show(opts.dstAddress, opts.dstPort)} from ${show(opts.srcAddress, opts.srcPort)}`;
    if (this.blackholes.has(show(opts.dstAddress, opts.dstPort))) {
      await new Promise((r) => setTimeout(r, timeoutMs));
      throw nativeError('ETIMEDOUT', 'connect', call, where);
    }
    const target = this.findServer(opts.dstAddress, opts.dstPort);
    if (target === undefined) {
      await new Promise((r) => setImmediate(r));
      throw nativeError('ECONNREFUSED', 'connect', call, where);
    }
    return this.connectLoopback(target.realPort, (localPort) => ({
      family,
      srcAddress: opts.srcAddress,
      srcPort: opts.srcPort === 0 ? localPort : opts.srcPort,
      dstAddress: opts.dstAddress,
      dstPort: opts.dstPort,
    }), call, where);
  }

  openUdp(opts: UdpOpenOptions, onMessage: UdpMessageListener): UdpHandle {
    this.udpOpens.push({ ...opts });
    return new FakeUdpHandle(this, opts, onMessage, false);
  }

  // ---- The test's side: the network around the data plane ------------------------------------

  /** The TPROXY rule for TCP: clientTcp() connections go to this listener (null: none). */
  redirectTcp(listener: TransparentTcpListener | null): void {
    this.tcpRedirect = listener ?? undefined;
  }

  /** A host serving TCP at a virtual address:port (wildcard address: any address, that port). */
  async serveTcp(at: FakeEndpoint, onConnection: TcpConnectionListener): Promise<{ port: number; close(): Promise<void> }> {
    const family = at.family ?? (net.isIP(at.address) === 6 ? 6 : 4);
    const server = await this.listen(0, family, onConnection);
    const entry: FakeServer = { at: { address: at.address, port: at.port }, realPort: (server.address() as net.AddressInfo).port };
    this.tcpServers.push(entry);
    return {
      port: entry.realPort,
      close: async () => {
        const i = this.tcpServers.indexOf(entry);
        if (i >= 0) this.tcpServers.splice(i, 1);
        await this.closeServer(server);
      },
    };
  }

  /** Connects to this virtual address:port time out (ETIMEDOUT after timeoutMs). */
  blackholeTcp(address: string, port: number): void {
    this.blackholes.add(show(address, port));
  }

  /**
   * A client connecting from (srcAddress, srcPort) to (dstAddress, dstPort): to the redirect
   * listener when one is set (TPROXY), else to a serveTcp host at the destination.
   */
  clientTcp(flow: Omit<TcpFlow, 'family'> & { family?: IpFamily }): Promise<net.Socket> {
    const family = flow.family ?? (net.isIP(flow.dstAddress) === 6 ? 6 : 4);
    const where = `to ${show(flow.dstAddress, flow.dstPort)} from ${show(flow.srcAddress, flow.srcPort)}`;
    const realPort = this.tcpRedirect?.port ?? this.findServer(flow.dstAddress, flow.dstPort)?.realPort;
    if (realPort === undefined) return Promise.reject(nativeError('ECONNREFUSED', 'connect', 'clientTcp', where));
    return this.connectLoopback(realPort, () => ({ ...flow, family }), 'clientTcp', where);
  }

  /** The TPROXY rule for UDP: datagrams from endpointUdp() handles go to this handle (null: none). */
  redirectUdp(handle: UdpHandle | null): void {
    if (handle !== null && !(handle instanceof FakeUdpHandle)) throw new TypeError('redirectUdp: not a handle of this fake');
    this.udpRedirect = handle ?? undefined;
  }

  /** A pod or server with a virtual UDP address:port; what it sends is subject to redirectUdp. */
  endpointUdp(at: FakeEndpoint, onMessage: UdpMessageListener): UdpHandle {
    const family = at.family ?? (net.isIP(at.address) === 6 ? 6 : 4);
    return new FakeUdpHandle(this, { family, address: at.address, port: at.port, transparent: false, recvOrigDst: false }, onMessage, true);
  }

  /** Closes every socket, server and handle the fake made. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    for (const h of [...this.udpHandles]) h.close();
    await Promise.all([...this.servers].map((s) => this.closeServer(s)));
  }

  // ---- internals -------------------------------------------------------------------------------

  /** @internal Where a datagram from `sender` to (address, port) arrives, if anywhere. */
  routeUdp(sender: FakeUdpHandle, address: string, port: number): FakeUdpHandle | undefined {
    const from = sender.virtual;
    const newestFirst = [...this.udpHandles].reverse();
    const internal = newestFirst.filter((h) => !h.external);
    const external = newestFirst.filter((h) => h.external);
    const connectedToSender = (h: FakeUdpHandle): boolean =>
      h.peer !== undefined && h.peer.address === from.address && h.peer.port === from.port;
    const exact = (h: FakeUdpHandle): boolean => h.virtual.port === port && h.virtual.address === address;
    const wildcard = (h: FakeUdpHandle): boolean => h.virtual.port === port && isWildcard(h.virtual.address) && h.family === sender.family;
    const pick = (hs: FakeUdpHandle[]): FakeUdpHandle | undefined =>
      hs.find((h) => exact(h) && connectedToSender(h)) ??
      hs.find((h) => exact(h) && h.peer === undefined) ??
      hs.find((h) => wildcard(h) && h.peer === undefined);
    if (!sender.external) {
      // The data plane sends out to the network; locally only when no endpoint has the address.
      return pick(external) ?? pick(internal);
    }
    // From the network: an established flow socket of the data plane, else TPROXY, else whoever
    // has the address.
    const established = internal.find((h) => exact(h) && connectedToSender(h));
    if (established) return established;
    if (this.udpRedirect !== undefined) return this.udpRedirect;
    return pick(internal) ?? pick(external.filter((h) => h !== sender));
  }

  private findServer(address: string, port: number): FakeServer | undefined {
    for (let i = this.tcpServers.length - 1; i >= 0; i--) {
      const s = this.tcpServers[i]!;
      if (s.at.port === port && (s.at.address === address || isWildcard(s.at.address))) return s;
    }
    return undefined;
  }

  private async listen(port: number, family: IpFamily, onConnection: TcpConnectionListener): Promise<net.Server> {
    const server = net.createServer((socket) => {
      this.track(socket);
      void this.flowFor(socket, family).then((flow) => {
        if (!socket.destroyed) onConnection(socket, flow);
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, LOOPBACK, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.servers.add(server);
    return server;
  }

  private closeServer(server: net.Server): Promise<void> {
    this.servers.delete(server);
    return new Promise((resolve) => server.close(() => resolve()));
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  /** The flow a fake client registered for this accepted socket, or its real addresses. */
  private flowFor(socket: net.Socket, family: IpFamily): Promise<TcpFlow> {
    const key = socket.remotePort ?? -1;
    const actual: TcpFlow = {
      family,
      srcAddress: socket.remoteAddress ?? LOOPBACK,
      srcPort: key,
      dstAddress: socket.localAddress ?? LOOPBACK,
      dstPort: socket.localPort ?? 0,
    };
    const known = this.flows.get(key);
    if (known !== undefined) {
      this.flows.delete(key);
      return Promise.resolve(known);
    }
    if (this.pendingClients === 0) return Promise.resolve(actual);
    // The client side has not seen its 'connect' yet: wait for it to register the flow.
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.flowWaiters.delete(key);
        resolve(actual);
      }, FLOW_WAIT_MS);
      timer.unref();
      this.flowWaiters.set(key, (flow) => {
        clearTimeout(timer);
        resolve(flow);
      });
    });
  }

  private connectLoopback(realPort: number, flowOf: (localPort: number) => TcpFlow, call: string, where: string): Promise<net.Socket> {
    this.pendingClients++;
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: LOOPBACK, port: realPort });
      this.track(socket);
      const onError = (e: NodeJS.ErrnoException): void => {
        this.pendingClients--;
        reject(nativeError(e.code ?? 'EIO', 'connect', call, where));
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        this.pendingClients--;
        socket.off('error', onError);
        const localPort = socket.localPort ?? 0;
        const flow = flowOf(localPort);
        const waiter = this.flowWaiters.get(localPort);
        if (waiter !== undefined) {
          this.flowWaiters.delete(localPort);
          waiter(flow);
        } else {
          this.flows.set(localPort, flow);
        }
        resolve(socket);
      });
    });
  }
}

/** @internal A UDP handle of the fake: a dgram socket on 127.0.0.1 with a virtual address. */
class FakeUdpHandle implements UdpHandle {
  readonly fd = -1;
  readonly family: IpFamily;
  readonly virtual: { address: string; port: number };
  peer: { address: string; port: number } | undefined;
  private readonly sock: dgram.Socket;
  private realPort = 0;
  private readonly ready: Promise<void>;
  private closed = false;
  private readonly stats: UdpCounters = { received: 0, sent: 0, dropped: 0, truncated: 0, errors: 0 };

  constructor(
    private readonly fake: FakeNativeSockets,
    private readonly opts: UdpOpenOptions,
    private readonly onMessage: UdpMessageListener,
    readonly external: boolean,
  ) {
    const call = 'udpOpen';
    this.family = checkFamily(call, opts.family);
    checkAddress(call, 'address', this.family, opts.address);
    const port = checkInt(call, 'port', opts.port, 0, 65535);
    if (opts.mark !== undefined) checkInt(call, 'mark', opts.mark, 0, 0xffffffff);
    if (typeof onMessage !== 'function') throw typeError(`${call}: onMessage must be a function`);
    // Port 0: a virtual port is picked below, once the loopback socket has its own.
    this.virtual = { address: opts.address, port };
    this.sock = dgram.createSocket('udp4');
    this.sock.on('message', (packet) => this.receive(packet));
    this.sock.on('error', () => this.stats.errors++);
    this.ready = new Promise((resolve) =>
      this.sock.bind(0, LOOPBACK, () => {
        this.realPort = this.sock.address().port;
        resolve();
      }),
    );
    if (port === 0) this.virtual.port = 20000 + (fakePortSeq++ % 40000);
    fake.udpHandles.push(this);
  }

  get localAddress(): string {
    return this.virtual.address;
  }

  get localPort(): number {
    return this.virtual.port;
  }

  send(msg: Uint8Array, address?: string, port?: number): boolean {
    const call = 'UdpHandle.send';
    if (!(msg instanceof Uint8Array)) throw typeError(`${call}: msg must be a Buffer or Uint8Array`);
    let to = this.peer;
    if (address !== undefined) {
      checkAddress(call, 'address', this.family, address);
      to = { address, port: checkInt(call, 'port', port, 1, 65535) };
    }
    if (this.closed) throw nativeError('EBADF', 'sendto', call, 'the handle is closed');
    if (to === undefined) throw nativeError('EDESTADDRREQ', 'send', call, 'not connected');
    this.stats.sent++;
    const target = this.fake.routeUdp(this, to.address, to.port);
    if (target === undefined) return true; // sent, and lost: nobody there
    const header = Buffer.from(JSON.stringify([this.virtual.address, this.virtual.port, to.address, to.port]));
    const len = Buffer.alloc(2);
    len.writeUInt16BE(header.length);
    const packet = Buffer.concat([len, header, msg]);
    void Promise.all([this.ready, target.ready]).then(() => {
      if (!this.closed && !target.closed) this.sock.send(packet, target.realPort, LOOPBACK);
    });
    return true;
  }

  connect(address: string, port: number): void {
    const call = 'UdpHandle.connect';
    checkAddress(call, 'address', this.family, address);
    checkInt(call, 'port', port, 1, 65535);
    if (this.closed) throw nativeError('EBADF', 'connect', call, 'the handle is closed');
    this.peer = { address, port };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const i = this.fake.udpHandles.indexOf(this);
    if (i >= 0) this.fake.udpHandles.splice(i, 1);
    if (this.fake.udpRedirect === this) this.fake.udpRedirect = undefined;
    void this.ready.then(() => this.sock.close());
  }

  counters(): UdpCounters {
    return { ...this.stats };
  }

  private receive(packet: Buffer): void {
    if (this.closed || packet.length < 2) return;
    const n = packet.readUInt16BE(0);
    const [srcAddress, srcPort, dstAddress, dstPort] = JSON.parse(packet.subarray(2, 2 + n).toString()) as [string, number, string, number];
    if (this.peer !== undefined && (this.peer.address !== srcAddress || this.peer.port !== srcPort)) return;
    this.stats.received++;
    const payload = packet.subarray(2 + n);
    if (this.opts.recvOrigDst) this.onMessage(payload, srcAddress, srcPort, dstAddress, dstPort);
    else this.onMessage(payload, srcAddress, srcPort, this.virtual.address, this.virtual.port);
  }
}
