// TCP: each connection TPROXY hands to the transparent listener is one flow. Its original
// destination is the accepted socket's local address. The flow is registered in the flow
// table, decided, then either reset (denied: TPROXY has completed the handshake already, so
// the client sees a connection reset right after connecting) or relayed to the original
// destination from the client's own address.
//
// Relaying keeps TCP's meaning end to end: bytes in order and complete (stream piping with
// backpressure), half-close (a FIN on one side becomes a FIN on the other, the other
// direction stays open), resets (an RST on one side resets the other), and a refused or
// failed upstream connect resets the client.
import type { Socket } from 'node:net';
import type { FlowEntry } from '../conntrack/flow-table.js';
import { formatAddr } from '../policy/addr.js';

/** A connected upstream socket from (srcAddress, srcPort) to (dstAddress, dstPort). */
export type UpstreamConnector = (opts: {
  family: 4 | 6;
  srcAddress: string;
  srcPort: number;
  /** A port the kernel must not pick when srcPort is 0 (the client's own). */
  avoidPort?: number;
  dstAddress: string;
  dstPort: number;
}) => Promise<Socket>;

export interface RelayEvents {
  bytes(direction: 'toServer' | 'toClient', n: number): void;
  upstreamError(code: string): void;
  closed(): void;
}

/**
 * Relays an allowed flow. The entry may be closed by a policy change while the upstream
 * connect is in flight: the upstream socket is then dropped as soon as it arrives.
 */
export async function relayTcp(client: Socket, entry: FlowEntry, connect: UpstreamConnector, ev: RelayEvents): Promise<void> {
  let upstream: Socket | undefined;
  let done = false;
  const finish = (): void => {
    if (done) return;
    done = true;
    ev.closed();
  };
  entry.close = () => {
    entry.state = 'closed';
    client.resetAndDestroy();
    upstream?.resetAndDestroy();
  };
  client.on('error', () => upstream?.resetAndDestroy());
  client.on('close', (hadError) => {
    if (hadError || !upstream) upstream?.resetAndDestroy();
    if (!upstream || upstream.destroyed) finish();
  });
  // Half-close needs allowHalfOpen on both sockets (else Node ends a socket's writable side as
  // soon as its readable side ends). Set here, before any 'end', whoever made the sockets.
  client.allowHalfOpen = true;
  // Hold client bytes until upstream is there (the socket buffers; reading resumes on pipe).
  client.pause();

  try {
    // The flow's 5-tuple as registered (from the listener's TcpFlow), not the socket's own
    // addresses: NativeSockets says to read addresses from the flow (a fake's sockets differ).
    upstream = await connect({
      family: entry.family,
      srcAddress: formatAddr(entry.family, entry.src),
      srcPort: 0, // from the client's address, a port of its own: see native/src "Upstream ports"
      avoidPort: entry.srcPort,
      dstAddress: formatAddr(entry.family, entry.dst),
      dstPort: entry.dstPort,
    });
  } catch (e) {
    ev.upstreamError((e as { code?: string }).code ?? 'ERROR');
    client.resetAndDestroy();
    finish();
    return;
  }
  if (entry.state === 'closed' || client.destroyed) {
    upstream.resetAndDestroy();
    finish();
    return;
  }
  const up = upstream;
  up.allowHalfOpen = true;
  up.on('error', () => client.resetAndDestroy());
  up.on('close', (hadError) => {
    if (hadError) client.resetAndDestroy();
    if (client.destroyed) finish();
  });
  client.on('close', () => {
    if (up.destroyed) finish();
  });
  client.on('data', (b: Buffer) => ev.bytes('toServer', b.length));
  up.on('data', (b: Buffer) => ev.bytes('toClient', b.length));
  // pipe(): backpressure both ways, and `end()` of the destination when the source ends —
  // with allowHalfOpen on both sockets that is exactly a half-close.
  client.pipe(up);
  up.pipe(client);
  client.resume();
}
