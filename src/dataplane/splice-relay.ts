// The kernel byte path of an allowed TCP flow: the same contract as relayTcp (tcp-relay.ts),
// with the bytes moved by splice(2) on the native addon's epoll thread instead of through
// JavaScript (NativeSockets.spliceRelay; native/src/netpold_native.cc explains the engine).
//
// Same contract, checked by the same tests (test/splice-relay.test.ts runs every behaviour for
// both relays): bytes in order and complete with backpressure both ways; half-close (a FIN on
// one side becomes a FIN on the other once its bytes are through, the other direction stays
// open); a reset on either side resets the other; a refused or failed upstream connect resets
// the client and reports upstreamError; entry.close() (a policy change, shutdown) resets both;
// `closed` once at the end. Differences, by design:
//   - `bytes` events are not per chunk: totals are polled from the engine about once a second
//     while the flow lives (SPLICE_PROGRESS_MS, one native call for all relays) and the rest is
//     reported at the end. The data plane's idle tracking (lastSeen) therefore sees a busy
//     flow as busy within a second.
//   - The JS sockets stay open but idle while the engine works on its own dup()s of their fds:
//     Node never reads or writes them. At the end they are destroyed: resetAndDestroy() when
//     the relay ended in a reset (an RST leaves only when the last fd of a socket closes, and
//     the JS socket holds one), destroy() otherwise.
//
// Falls back to relayTcp (the JS relay) when the native relay is not available (the fake, an
// addon without it), when the client socket's fd cannot be read (see socketFd), when Node has
// already buffered bytes of the client (only the JS relay can forward those), or when the
// engine cannot take the flow (EMFILE...).
import net, { type Socket } from 'node:net';
import type { FlowEntry } from '../conntrack/flow-table.js';
import { formatAddr } from '../policy/addr.js';
import type { NativeSockets, SpliceDoneListener, SpliceRelayHandle } from './native.js';
import { relayTcp, type RelayEvents, type UpstreamConnector } from './tcp-relay.js';

/** A connected upstream TCP connection as a raw fd (NativeSockets.connectTransparentTcpFd). */
export type UpstreamFdConnector = (opts: Parameters<UpstreamConnector>[0]) => Promise<number>;

export interface SpliceRelayOptions {
  /**
   * Connects upstream without a net.Socket (normally `(o) =>
   * native.connectTransparentTcpFd!({ ...o, timeoutMs })`): the engine then owns the upstream
   * socket alone. Without it, `connect`'s net.Socket is used, stopped from reading, and its fd
   * is spliced (a dup of it).
   */
  connectFd?: UpstreamFdConnector;
}

/** How often byte totals of live spliced relays are polled (one native call for all of them). */
export const SPLICE_PROGRESS_MS = 1000;

/**
 * The fd of a net.Socket, or -1. This reads Node's internal libuv stream handle
 * (`socket._handle.fd`, TCPWrap's uv_fileno()): not a public API, so anything else than a
 * non-negative integer means "not available" and the caller falls back to the JS relay.
 */
export function socketFd(socket: Socket): number {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : -1;
}

/**
 * Makes sure Node does not read from the socket: stops libuv's reading if it had started
 * (Node internals again: `_handle.reading` / `readStop()`, as net.Server's pauseOnConnect does)
 * and pauses the stream so that no 'data' listener restarts it.
 */
function stopReading(socket: Socket): void {
  const handle = (socket as unknown as { _handle?: { reading?: boolean; readStop?: () => number } | null })._handle;
  if (handle?.reading === true && typeof handle.readStop === 'function') {
    handle.reading = false;
    handle.readStop();
  }
  socket.pause();
}

/** Polls byte totals of one NativeSockets' live relays while there are any. */
class ProgressTicker {
  private readonly live = new Map<number, { toServer: number; toClient: number; ev: RelayEvents }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly native: NativeSockets) {}

  add(id: number, ev: RelayEvents): void {
    this.live.set(id, { toServer: 0, toClient: 0, ev });
    if (this.timer === undefined && this.native.spliceProgress !== undefined) {
      this.timer = setInterval(() => this.tick(), SPLICE_PROGRESS_MS);
      this.timer.unref();
    }
  }

  /** Removes the relay; reports what its final totals add to what was already reported. */
  end(id: number, toServer: number, toClient: number, ev: RelayEvents): void {
    const l = this.live.get(id) ?? { toServer: 0, toClient: 0, ev };
    this.live.delete(id);
    if (this.live.size === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
    if (toServer > l.toServer) l.ev.bytes('toServer', toServer - l.toServer);
    if (toClient > l.toClient) l.ev.bytes('toClient', toClient - l.toClient);
  }

  private tick(): void {
    const a = this.native.spliceProgress!();
    for (let i = 0; i + 2 < a.length; i += 3) {
      const l = this.live.get(a[i]!);
      if (l === undefined) continue;
      const s = a[i + 1]!;
      const c = a[i + 2]!;
      if (s > l.toServer) {
        const n = s - l.toServer;
        l.toServer = s;
        l.ev.bytes('toServer', n);
      }
      if (c > l.toClient) {
        const n = c - l.toClient;
        l.toClient = c;
        l.ev.bytes('toClient', n);
      }
    }
  }
}

const tickers = new WeakMap<NativeSockets, ProgressTicker>();

function tickerOf(native: NativeSockets): ProgressTicker {
  let t = tickers.get(native);
  if (t === undefined) {
    t = new ProgressTicker(native);
    tickers.set(native, t);
  }
  return t;
}

/**
 * Relays an allowed flow in the kernel; exactly relayTcp's contract (see the top of this file
 * for the two visible differences). `client` is the accepted socket, not read from yet
 * (pauseOnConnect). The entry may be closed by a policy change while the upstream connect is
 * in flight: the upstream connection is then reset as soon as it arrives.
 */
export async function relayTcpSplice(
  client: Socket,
  entry: FlowEntry,
  connect: UpstreamConnector,
  ev: RelayEvents,
  native: NativeSockets,
  opts: SpliceRelayOptions = {},
): Promise<void> {
  if (native.spliceRelay === undefined || socketFd(client) < 0 || client.readableLength > 0 || client.writableLength > 0) {
    return relayTcp(client, entry, connect, ev);
  }
  let done = false;
  const finish = (): void => {
    if (done) return;
    done = true;
    ev.closed();
  };
  let relay: SpliceRelayHandle | undefined;
  entry.close = () => {
    entry.state = 'closed';
    // While connecting: reset the client now, the upstream when it arrives (below). While
    // splicing: the engine resets both and the completion ends the flow. The client's JS
    // socket is reset right away too; its RST leaves when the engine closes its own fd.
    if (!client.destroyed) client.resetAndDestroy();
    relay?.abort();
  };
  // Node must not read from the client: the engine does (pauseOnConnect already kept libuv off it).
  stopReading(client);
  // Destroyed while the upstream connect is in flight (entry.close, or anyone): the flow ends.
  const onEarlyClose = (): void => finish();
  client.once('close', onEarlyClose);

  const target = {
    family: entry.family,
    srcAddress: formatAddr(entry.family, entry.src),
    srcPort: 0, // from the client's address, a port of its own: see native/src "Upstream ports"
    avoidPort: entry.srcPort,
    dstAddress: formatAddr(entry.family, entry.dst),
    dstPort: entry.dstPort,
  };
  let upFd = -1;
  let upSocket: Socket | undefined;
  try {
    if (opts.connectFd !== undefined) upFd = await opts.connectFd(target);
    else upSocket = await connect(target);
  } catch (e) {
    client.off('close', onEarlyClose);
    ev.upstreamError((e as { code?: string }).code ?? 'ERROR');
    if (!client.destroyed) client.resetAndDestroy();
    finish();
    return;
  }
  client.off('close', onEarlyClose);
  if (upSocket !== undefined) {
    upSocket.on('error', () => {}); // never read or written by Node; resets are the engine's to see
    stopReading(upSocket);
    upFd = socketFd(upSocket);
  }
  if (upSocket === undefined && !(Number.isInteger(upFd) && upFd >= 0)) {
    // A connectFd that resolved with no fd: a failed connect as far as the flow is concerned.
    ev.upstreamError('EBADF');
    if (!client.destroyed) client.resetAndDestroy();
    finish();
    return;
  }
  const dropUpstream = (): void => {
    if (upSocket !== undefined) upSocket.resetAndDestroy();
    else closeRaw(native, upFd, true);
  };
  if (entry.state === 'closed' || client.destroyed) {
    dropUpstream();
    finish();
    return;
  }
  if (upFd < 0 || (upSocket?.readableLength ?? 0) > 0) {
    // A net.Socket without a readable fd (not expected from a TCP connect), or one Node already
    // read from: new net.Socket({ fd }) starts reading at once, and connectTransparentTcp's
    // promise reaches us through microtasks only (no I/O turn in between), but a connector that
    // waits on anything else could let bytes in. Only the JS relay can forward those.
    const up = upSocket!;
    return relayTcp(client, entry, () => Promise.resolve(up), ev);
  }

  const ticker = tickerOf(native);
  const onDone: SpliceDoneListener = (end, toServer, toClient) => {
    ticker.end(relay?.id ?? -1, toServer, toClient, ev);
    // The engine has closed its fds. An RST for a side it reset leaves when the last fd of
    // that socket closes: ours (resetAndDestroy). A clean end: plain close.
    if (end === null) {
      client.destroy();
      upSocket?.destroy();
    } else {
      if (!client.destroyed) client.resetAndDestroy();
      if (upSocket !== undefined && !upSocket.destroyed) upSocket.resetAndDestroy();
    }
    finish();
  };
  const clientFd = socketFd(client);
  try {
    relay = native.spliceRelay(clientFd, upFd, onDone, { ownUpstream: upSocket === undefined });
  } catch {
    // The engine could not take the flow (EMFILE, ENFILE...): the fds are still ours. The JS
    // relay needs no extra fds, so the flow goes on there.
    const up = upSocket ?? adoptRaw(upFd);
    if (up === undefined) {
      closeRaw(native, upFd, true);
      if (!client.destroyed) client.resetAndDestroy();
      finish();
      return;
    }
    return relayTcp(client, entry, () => Promise.resolve(up), ev);
  }
  ticker.add(relay.id, ev);
}

function closeRaw(native: NativeSockets, fd: number, reset: boolean): void {
  if (native.closeTcpFd !== undefined) {
    try {
      native.closeTcpFd(fd, reset);
      return;
    } catch {
      // EBADF: nothing left to close
      return;
    }
  }
  adoptRaw(fd)?.resetAndDestroy();
}

/** A raw connected fd as a net.Socket (as connectTransparentTcp makes it), or undefined. */
function adoptRaw(fd: number): Socket | undefined {
  try {
    const s = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    s.on('error', () => {});
    return s;
  } catch {
    return undefined;
  }
}
