// The Dataplane (src/dataplane/dataplane.ts) driven through FakeNativeSockets: no root, no
// kernel TPROXY. The fake plays the network: clientTcp/endpointUdp are pods, serveTcp/endpointUdp
// are servers at virtual addresses, and redirectTcp/redirectUdp send the clients' traffic to the
// data plane's listeners as TPROXY would. Every check is made through sockets; every wait is
// bounded.
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Dataplane, type DataplaneConfig, type DataplaneHooks } from '../src/dataplane/dataplane.js';
import { FlowLog } from '../src/flowlog/flow-log.js';
import { MemorySink } from './support/memory-sink.js';
import { FakeNativeSockets } from '../src/dataplane/native-fake.js';
import type { TcpFlow, UdpHandle } from '../src/dataplane/native.js';
import { MemoryLogger } from '../src/log.js';
import { compile } from '../src/policy/compile.js';
import type { PolicySnapshot } from '../src/policy/snapshot.js';
import { Registry } from 'prom-client';
import { AgentMetrics } from '../src/metrics/metrics.js';
import { startMetricsServer } from '../src/metrics/server.js';
import { makeCluster, makeNs, makePod, makePolicy } from './support/builders.js';
import { sleep, waitFor, within } from './support/wait.js';

// ---------------------------------------------------------------------------------------------
// The cluster: a client pod and another pod in client-ns, a web pod in server-ns. The policy
// server-ns/allow-client lets only the client pod reach web on TCP 8080-8090 and UDP 53.

const CLIENT_IP = '198.18.3.10';
const OTHER_IP = '198.18.3.11';
const WEB_IP = '198.18.1.20';
const ALLOW_POLICY = 'server-ns/allow-client';

const namespaces = [makeNs('client-ns', { team: 'a' }), makeNs('server-ns')];
const pods = [
  makePod('client-ns/client', { app: 'client' }, { ips: [CLIENT_IP] }),
  makePod('client-ns/other', { app: 'other' }, { ips: [OTHER_IP] }),
  makePod('server-ns/web', { app: 'web' }, { ips: [WEB_IP] }),
];

function allowSnapshot(revision: number): PolicySnapshot {
  return compile(
    makeCluster({
      namespaces,
      pods,
      policies: [
        makePolicy(ALLOW_POLICY, {
          podSelector: { app: 'web' },
          ingress: [
            {
              from: [{ namespaceSelector: { team: 'a' }, podSelector: { app: 'client' } }],
              ports: [{ port: 8080, endPort: 8090 }, { port: 53, protocol: 'UDP' }],
            },
          ],
        }),
      ],
    }),
    { revision },
  );
}

/** web is isolated for ingress and nothing is allowed in. */
function denySnapshot(revision: number): PolicySnapshot {
  return compile(makeCluster({ namespaces, pods, policies: [makePolicy('server-ns/deny-all', { podSelector: {} })] }), { revision });
}

// ---------------------------------------------------------------------------------------------
// Helpers

interface Outcome {
  data: Buffer;
  /** The error code the socket saw, if any ('ECONNRESET' for a reset). */
  error: string | undefined;
  /** Whether an orderly 'end' (FIN) arrived. */
  ended: boolean;
}

/** A socket whose bytes and fate are recorded from the start. */
class Conn {
  readonly chunks: Buffer[] = [];
  error: string | undefined;
  ended = false;
  closed = false;
  readonly done: Promise<Outcome>;

  constructor(readonly socket: net.Socket) {
    socket.on('data', (c: Buffer) => this.chunks.push(c));
    socket.on('end', () => (this.ended = true));
    socket.on('error', (e: NodeJS.ErrnoException) => (this.error ??= e.code ?? e.message));
    this.done = new Promise((resolve) =>
      socket.once('close', () => {
        this.closed = true;
        resolve({ data: this.data(), error: this.error, ended: this.ended });
      }),
    );
  }

  data(): Buffer {
    return Buffer.concat(this.chunks);
  }

  text(): string {
    return this.data().toString();
  }

  outcome(ms = 5000): Promise<Outcome> {
    return within(this.done, ms, 'socket close');
  }
}

/** Expects the connection to have been reset: no data, ECONNRESET (not an orderly close). */
async function expectReset(c: Conn, ms = 5000): Promise<void> {
  const o = await c.outcome(ms);
  expect(o.data.length).toBe(0);
  expect(o.ended).toBe(false);
  expect(o.error).toBe('ECONNRESET');
}

// ---------------------------------------------------------------------------------------------
// Fixture

const DEFAULTS: DataplaneConfig = {
  port: 0,
  flowTableSize: 64,
  udpIdleMs: 60_000,
  existingFlows: 'revalidate',
  connectTimeoutMs: 2000,
  families: [4],
};

let fake: FakeNativeSockets | undefined;
let dp: Dataplane | undefined;
let log: MemoryLogger;
let flowLog: FlowLog;
let sink: MemorySink;


afterEach(async () => {
  try {
    if (dp) await within(dp.stop(), 5000, 'dataplane.stop()');
  } finally {
    dp = undefined;
    if (fake) await within(fake.close(), 5000, 'fake.close()');
    fake = undefined;
  }
});

/** Starts a data plane redirected to by the fake; `snapshot` null: none set (not ready). */
async function setup(
  config: Partial<DataplaneConfig> = {},
  snapshot: PolicySnapshot | null = allowSnapshot(1),
  hooks: DataplaneHooks = {},
  flowLogOptions: { sampleRate?: number; bufferLines?: number } = {},
) {
  const f = new FakeNativeSockets();
  fake = f;
  log = new MemoryLogger();
  sink = new MemorySink();
  flowLog = new FlowLog(sink, { sampleRate: 0, bufferLines: 100, ...flowLogOptions });
  const d = new Dataplane(f, log, { ...DEFAULTS, ...config }, { flowLog, ...hooks });
  dp = d;
  await d.start();
  expect(d.listeners.tcp).toHaveLength(1);
  expect(d.listeners.udp).toHaveLength(1);
  f.redirectTcp(d.listeners.tcp[0]!);
  f.redirectUdp(d.listeners.udp[0]!);
  if (snapshot) d.setSnapshot(snapshot);
  return { fake: f, dp: d };
}

/** An echo server at WEB_IP:port that records the flows it accepted and its sockets. */
async function echoServer(f: FakeNativeSockets, port = 8080) {
  const flows: TcpFlow[] = [];
  const sockets: Conn[] = [];
  await f.serveTcp({ address: WEB_IP, port }, (s, flow) => {
    flows.push(flow);
    sockets.push(new Conn(s));
    s.pipe(s);
  });
  return { flows, sockets };
}

async function client(f: FakeNativeSockets, src: string, srcPort: number, dstPort = 8080): Promise<Conn> {
  return new Conn(await within(f.clientTcp({ srcAddress: src, srcPort, dstAddress: WEB_IP, dstPort }), 5000, 'clientTcp'));
}

async function roundTrip(c: Conn, text: string): Promise<void> {
  const before = c.text();
  c.socket.write(text);
  await waitFor(() => c.text() === before + text, 5000, `echo of ${JSON.stringify(text)}`);
}

function logged(msg: string) {
  return log.lines.filter((l) => l.msg === msg);
}

/** Flow-log lines with this msg, once the flow log has written what it buffered. */
async function flowLines(msg: string, n: number) {
  await waitFor(() => sink.lines.filter((l) => l.msg === msg).length >= n, 5000, `${n} flow-log line(s) ${msg}`);
  return sink.lines.filter((l) => l.msg === msg);
}

// ---------------------------------------------------------------------------------------------

describe('Dataplane over FakeNativeSockets: TCP', () => {
  it('fails closed before the first snapshot: a TCP client is reset, a datagram dropped; both counted as not ready', async () => {
    const { fake: f, dp: d } = await setup({}, null);
    expect(d.ready).toBe(false);
    expect(d.revision).toBe(0);
    const server = await echoServer(f);
    const c = await client(f, CLIENT_IP, 40000);
    await expectReset(c);
    expect(d.counters.refusedNotReady).toBe(1);
    expect(server.flows).toEqual([]);
    expect(f.tcpConnects).toEqual([]);

    const got: string[] = [];
    f.endpointUdp({ address: WEB_IP, port: 53 }, (m) => got.push(m.toString()));
    const udpClient = f.endpointUdp({ address: CLIENT_IP, port: 40000 }, () => {});
    udpClient.send(Buffer.from('q'), WEB_IP, 53);
    await waitFor(() => d.counters.refusedNotReady === 2, 5000, 'the datagram refused');
    expect(d.table.size).toBe(0);
    expect(d.counters.decisions).toEqual({ allow: 0, deny: 0 });
    expect(got).toEqual([]);

    // Once a snapshot arrives, the same flow is relayed.
    d.setSnapshot(allowSnapshot(1));
    expect(d.ready).toBe(true);
    expect(d.revision).toBe(1);
    const c2 = await client(f, CLIENT_IP, 40001);
    await roundTrip(c2, 'ping');
    expect(d.counters.decisions.allow).toBe(1);
  });

  it('relays an allowed flow byte-exact both ways, with half-close, from the client address to the original destination', async () => {
    const { fake: f, dp: d } = await setup({ connectTimeoutMs: 1234 });
    const toServer = randomBytes(3 << 20);
    const toClient = randomBytes(2 << 20);
    const serverFlows: TcpFlow[] = [];
    let serverGot: Buffer | undefined;
    let clientEndedBeforeReply: boolean | undefined;
    let c: Conn | undefined;
    await f.serveTcp({ address: WEB_IP, port: 8080 }, (s, flow) => {
      serverFlows.push(flow);
      s.allowHalfOpen = true; // the server application keeps its side open after the client's FIN
      const chunks: Buffer[] = [];
      s.on('data', (b: Buffer) => chunks.push(b));
      s.on('end', () => {
        serverGot = Buffer.concat(chunks);
        // The client's FIN arrived; the server still writes back, a little later.
        setTimeout(() => {
          clientEndedBeforeReply = c?.ended;
          s.end(toClient);
        }, 50);
      });
    });
    c = await client(f, CLIENT_IP, 40000);
    c.socket.allowHalfOpen = true;
    c.socket.end(toServer); // write everything, then FIN
    const o = await c.outcome(20_000);
    expect(o.error).toBeUndefined();
    expect(o.ended).toBe(true);
    expect(clientEndedBeforeReply).toBe(false); // the relay did not end the client's side early
    expect(serverGot?.length).toBe(toServer.length);
    expect(serverGot!.equals(toServer)).toBe(true);
    expect(o.data.length).toBe(toClient.length);
    expect(o.data.equals(toClient)).toBe(true);

    // The server saw the client's own address; the data plane asked the kernel for a transparent
    // connect from there, with a port of its own (0: conntrack must not merge the two legs), to
    // the original destination.
    expect(serverFlows).toEqual([{ family: 4, srcAddress: CLIENT_IP, srcPort: expect.any(Number), dstAddress: WEB_IP, dstPort: 8080 }]);
    expect(f.tcpConnects).toEqual([{ family: 4, srcAddress: CLIENT_IP, srcPort: 0, avoidPort: 40000, dstAddress: WEB_IP, dstPort: 8080, timeoutMs: 1234 }]);
    await waitFor(() => d.table.size === 0, 5000, 'the flow removed from the table');
    expect(d.counters).toMatchObject({
      decisions: { allow: 1, deny: 0 },
      bytesToServer: toServer.length,
      bytesToClient: toClient.length,
      upstreamErrors: 0,
    });
  });

  it('half-close the other way: the server ends first, the client can still send', async () => {
    const { fake: f } = await setup();
    let serverConn: Conn | undefined;
    await f.serveTcp({ address: WEB_IP, port: 8080 }, (s) => {
      s.allowHalfOpen = true;
      serverConn = new Conn(s);
      s.end('hello, and bye');
    });
    const c = await client(f, CLIENT_IP, 40000);
    c.socket.allowHalfOpen = true;
    await waitFor(() => c.ended, 5000, "the server's FIN at the client");
    expect(c.text()).toBe('hello, and bye');
    expect(c.closed).toBe(false);
    c.socket.end('late data from the client');
    await waitFor(() => serverConn?.ended === true, 5000, "the client's FIN at the server");
    expect(serverConn!.text()).toBe('late data from the client');
    const o = await c.outcome();
    expect(o.error).toBeUndefined();
  });

  it('resets a denied flow, counts it, and logs the decision naming the policy', async () => {
    const { fake: f, dp: d } = await setup();
    const server = await echoServer(f);
    const c = await client(f, OTHER_IP, 40001);
    await expectReset(c);
    expect(d.counters.decisions).toEqual({ allow: 0, deny: 1 });
    expect(server.flows).toEqual([]);
    expect(f.tcpConnects).toEqual([]);
    expect(d.table.size).toBe(0);
    const lines = await flowLines('flow denied', 1);
    expect(lines).toHaveLength(1);
    expect(lines[0]!.level).toBe('info');
    expect(lines[0]).toMatchObject({ protocol: 'TCP', srcIp: OTHER_IP, srcPort: 40001, dstIp: WEB_IP, dstPort: 8080, verdict: 'deny', audit: false, revision: 1 });
    expect(lines[0]!.ingress).toEqual({ status: 'denied', policies: [ALLOW_POLICY] });
    // Decisions are no longer logged through the logger: the flow log has them.
    expect(logged('flow denied')).toEqual([]);

    // A port the policy does not allow is denied too, for the allowed client.
    const c2 = await client(f, CLIENT_IP, 40002, 9000);
    await expectReset(c2);
    expect(d.counters.decisions).toEqual({ allow: 0, deny: 2 });
  });

  it('resets the client when the upstream connect is refused', async () => {
    const { fake: f, dp: d } = await setup();
    // Nobody serves WEB_IP:8081.
    const c = await client(f, CLIENT_IP, 40000, 8081);
    await expectReset(c);
    expect(d.counters.decisions.allow).toBe(1);
    expect(d.counters.upstreamErrors).toBe(1);
    expect(f.tcpConnects).toEqual([expect.objectContaining({ srcAddress: CLIENT_IP, srcPort: 0, dstAddress: WEB_IP, dstPort: 8081 })]);
    expect(logged('upstream connect failed').map((l) => l.fields.code)).toEqual(['ECONNREFUSED']);
    await waitFor(() => d.table.size === 0, 5000, 'the flow removed');
  });

  it('resets the client when the upstream connect times out (black hole)', async () => {
    const { fake: f, dp: d } = await setup({ connectTimeoutMs: 150 });
    f.blackholeTcp(WEB_IP, 8082);
    const t0 = Date.now();
    const c = await client(f, CLIENT_IP, 40000, 8082);
    await expectReset(c, 5000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(d.counters.upstreamErrors).toBe(1);
    expect(f.tcpConnects).toEqual([expect.objectContaining({ dstAddress: WEB_IP, dstPort: 8082, timeoutMs: 150 })]);
    expect(logged('upstream connect failed').map((l) => l.fields.code)).toEqual(['ETIMEDOUT']);
    await waitFor(() => d.table.size === 0, 5000, 'the flow removed');
  });

  it("existingFlows 'revalidate': a live flow the new snapshot denies is reset, counted and logged; one it allows stays", async () => {
    const { fake: f, dp: d } = await setup({ existingFlows: 'revalidate' });
    const server = await echoServer(f);
    const c = await client(f, CLIENT_IP, 40000);
    await roundTrip(c, 'before');
    // A snapshot that still allows it: the flow stays and is stamped with the new revision.
    d.setSnapshot(allowSnapshot(2));
    await roundTrip(c, 'still');
    expect(d.table.all().map((e) => [e.state, e.revision])).toEqual([['allowed', 2]]);
    expect(d.counters.closedByPolicyChange).toBe(0);

    d.setSnapshot(denySnapshot(3));
    const o = await c.outcome();
    expect(o.error).toBe('ECONNRESET');
    expect(o.data.toString()).toBe('beforestill');
    await within(server.sockets[0]!.done, 5000, 'the upstream side closed');
    expect(server.sockets[0]!.error).toBe('ECONNRESET');
    expect(d.counters.closedByPolicyChange).toBe(1);
    expect(d.table.size).toBe(0);
    expect(logged('flow closed: no longer allowed after a policy change')).toEqual([
      expect.objectContaining({ fields: expect.objectContaining({ protocol: 'TCP', src: `${CLIENT_IP}:40000`, dst: `${WEB_IP}:8080`, revision: 3 }) }),
    ]);
    expect(logged('live flows re-evaluated')).toEqual([expect.objectContaining({ fields: { revision: 3, closed: 1 } })]);
    // New flows are decided under the new snapshot.
    await expectReset(await client(f, CLIENT_IP, 40001));
    expect(d.counters.decisions).toEqual({ allow: 1, deny: 1 });
  });

  it("existingFlows 'keep': a live flow stays open and keeps relaying; new flows follow the new snapshot", async () => {
    const { fake: f, dp: d } = await setup({ existingFlows: 'keep' });
    await echoServer(f);
    const c = await client(f, CLIENT_IP, 40000);
    await roundTrip(c, 'before');
    d.setSnapshot(denySnapshot(2));
    await sleep(50);
    await roundTrip(c, 'after');
    expect(c.closed).toBe(false);
    expect(d.counters.closedByPolicyChange).toBe(0);
    expect(logged('flow closed: no longer allowed after a policy change')).toEqual([]);
    await expectReset(await client(f, CLIENT_IP, 40001));
    expect(d.counters.decisions).toEqual({ allow: 1, deny: 1 });
  });

  it('refuses a flow when the table is full (counted, logged); the first flow still works, and its place is freed when it ends', async () => {
    const { fake: f, dp: d } = await setup({ flowTableSize: 1 });
    const server = await echoServer(f);
    const c1 = await client(f, CLIENT_IP, 40000);
    await roundTrip(c1, 'one');
    const c2 = await client(f, CLIENT_IP, 40001);
    await expectReset(c2);
    expect(d.counters.refusedTableFull).toBe(1);
    expect(d.table.stats).toMatchObject({ refusals: 1, evictions: 0 });
    expect(logged('flow refused: flow table full (NETPOLD_E_FLOW_TABLE_FULL)')).toEqual([
      expect.objectContaining({ level: 'warn', fields: { capacity: 1 } }),
    ]);
    await roundTrip(c1, 'two');
    expect(server.flows).toHaveLength(1);

    c1.socket.end();
    const o = await c1.outcome();
    expect(o.error).toBeUndefined();
    await waitFor(() => d.table.size === 0, 5000, 'the first flow removed');
    const c3 = await client(f, CLIENT_IP, 40002);
    await roundTrip(c3, 'three');
    expect(d.counters.decisions.allow).toBe(2);
  });

  it('a TCP flow carrying bytes is not idle: a full table refuses a new flow rather than evict it', async () => {
    const { fake: f, dp: d } = await setup({ flowTableSize: 1, udpIdleMs: 300 });
    await echoServer(f);
    const c1 = await client(f, CLIENT_IP, 40000);
    // Traffic every 30 ms for longer than the idle time.
    const t0 = Date.now();
    for (let i = 0; Date.now() - t0 < 500; i++) {
      await roundTrip(c1, `${i}`);
      await sleep(30);
    }
    const c2 = await client(f, CLIENT_IP, 40001);
    await expectReset(c2);
    expect(d.counters.refusedTableFull).toBe(1);
    expect(d.table.stats.evictions).toBe(0);
    await roundTrip(c1, 'still here');
  });

  it('a silent TCP flow is idle: a full table evicts it (reset) for a new flow', async () => {
    const { fake: f, dp: d } = await setup({ flowTableSize: 1, udpIdleMs: 100 });
    await echoServer(f);
    const c1 = await client(f, CLIENT_IP, 40000);
    await roundTrip(c1, 'one');
    await sleep(150);
    const c2 = await client(f, CLIENT_IP, 40001);
    const o = await c1.outcome();
    expect(o.error).toBe('ECONNRESET');
    await roundTrip(c2, 'two');
    expect(d.table.stats.evictions).toBe(1);
    expect(d.counters.refusedTableFull).toBe(0);
  });
});

describe('Dataplane over FakeNativeSockets: UDP', () => {
  /** A UDP server at WEB_IP:53 answering `answer:<query>`, and a client endpoint. */
  function udpPair(f: FakeNativeSockets, clientIp = CLIENT_IP, clientPort = 40000) {
    const serverSaw: string[] = [];
    const server: UdpHandle = f.endpointUdp({ address: WEB_IP, port: 53 }, (msg, sa, sp, da, dp) => {
      serverSaw.push(`${msg.toString()} ${sa}:${sp} -> ${da}:${dp}`);
      server.send(Buffer.from(`answer:${msg.toString()}`), sa, sp);
    });
    const clientGot: string[] = [];
    const c = f.endpointUdp({ address: clientIp, port: clientPort }, (msg, sa, sp, da, dp) => {
      clientGot.push(`${msg.toString()} ${sa}:${sp} -> ${da}:${dp}`);
    });
    return { server, serverSaw, c, clientGot, send: (text: string) => c.send(Buffer.from(text), WEB_IP, 53) };
  }

  it('relays an allowed flow from the client address; the reply comes from the original destination; later datagrams use the table', async () => {
    const { fake: f, dp: d } = await setup();
    const u = udpPair(f);
    u.send('q1');
    await waitFor(() => u.clientGot.length === 1, 5000, 'the first answer');
    // From the client's address, with a port of the upstream socket's own.
    expect(u.serverSaw).toEqual([expect.stringMatching(new RegExp(`^q1 ${CLIENT_IP}:(\\d+) -> ${WEB_IP}:53$`))]);
    const upstreamPort = u.serverSaw[0]!.split(' ')[1]!.split(':')[1];
    expect(upstreamPort).not.toBe('40000');
    expect(u.clientGot).toEqual([`answer:q1 ${WEB_IP}:53 -> ${CLIENT_IP}:40000`]);
    expect(d.counters.decisions).toEqual({ allow: 1, deny: 0 });
    expect(d.table.stats).toMatchObject({ entries: 1, lookups: 1, hits: 0 });
    // The flow's sockets: a reply socket at the original destination, an upstream socket at the
    // client's address connected to it; both transparent.
    expect(f.udpOpens.slice(1)).toEqual([
      expect.objectContaining({ family: 4, address: WEB_IP, port: 53, transparent: true }),
      expect.objectContaining({ family: 4, address: CLIENT_IP, port: 0, transparent: true }),
    ]);

    u.send('q2');
    await waitFor(() => u.clientGot.length === 2, 5000, 'the second answer');
    expect(u.serverSaw[1]).toBe(`q2 ${CLIENT_IP}:${upstreamPort} -> ${WEB_IP}:53`);
    expect(u.clientGot[1]).toBe(`answer:q2 ${WEB_IP}:53 -> ${CLIENT_IP}:40000`);
    expect(d.counters.decisions).toEqual({ allow: 1, deny: 0 }); // no new decision
    expect(d.table.stats).toMatchObject({ entries: 1, lookups: 2, hits: 1 });
    expect(f.udpOpens).toHaveLength(3); // no new sockets either
    expect(d.counters).toMatchObject({ bytesToServer: 4, bytesToClient: 'answer:q1answer:q2'.length, udpDropped: 0 });
  });

  it('drops the datagrams of a denied flow (one decision, every datagram counted) and logs the decision', async () => {
    const { fake: f, dp: d } = await setup();
    const u = udpPair(f, OTHER_IP, 40001);
    u.send('x1');
    u.send('x2');
    u.send('x3');
    await waitFor(() => d.counters.udpDropped === 3, 5000, 'three datagrams dropped');
    expect(d.counters.decisions).toEqual({ allow: 0, deny: 1 });
    expect(u.serverSaw).toEqual([]);
    expect(f.udpOpens).toHaveLength(1); // only the listener: nothing opened for the flow
    const lines = await flowLines('flow denied', 1);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ protocol: 'UDP', srcIp: OTHER_IP, srcPort: 40001, dstIp: WEB_IP, dstPort: 53, verdict: 'deny' });
    expect(lines[0]!.ingress.policies).toContain(ALLOW_POLICY);
    // An allowed client meanwhile is served (so the denied datagrams were not merely slow).
    const ok = udpPair(f);
    ok.send('q');
    await waitFor(() => ok.clientGot.length === 1, 5000, 'the allowed answer');
    expect(u.serverSaw).toEqual([]);
  });

  it('closes an idle flow after udpIdleMs; the next datagram is decided afresh', async () => {
    const { fake: f, dp: d } = await setup({ udpIdleMs: 200 });
    const u = udpPair(f);
    u.send('q1');
    await waitFor(() => u.clientGot.length === 1, 5000, 'the first answer');
    expect(d.table.size).toBe(1);
    const t0 = Date.now();
    await waitFor(() => d.table.size === 0, 3000, 'the idle flow closed');
    expect(Date.now() - t0).toBeLessThan(2000);
    // Its two sockets are closed: the fake holds only the listener and the two endpoints.
    expect(f.udpHandles.filter((h) => !h.external)).toHaveLength(1);
    u.send('q2');
    await waitFor(() => u.clientGot.length === 2, 5000, 'the second answer');
    expect(d.counters.decisions.allow).toBe(2);
    expect(f.udpOpens).toHaveLength(5);
  });

  it("policy change: an allowed flow the new snapshot denies is closed; a denied flow it allows is decided afresh", async () => {
    const { fake: f, dp: d } = await setup();
    const a = udpPair(f);
    a.send('q1');
    await waitFor(() => a.clientGot.length === 1, 5000, 'the first answer');
    d.setSnapshot(denySnapshot(2));
    expect(d.counters.closedByPolicyChange).toBe(1);
    expect(d.table.size).toBe(0);
    expect(f.udpHandles.filter((h) => !h.external)).toHaveLength(1);
    a.send('q2');
    await waitFor(() => d.counters.udpDropped === 1, 5000, 'q2 dropped');
    expect(d.counters.decisions).toEqual({ allow: 1, deny: 1 });
    expect(a.serverSaw).toHaveLength(1);

    // Allowed again: the denied entry is dropped, so the next datagram is allowed.
    d.setSnapshot(allowSnapshot(3));
    expect(d.table.size).toBe(0);
    a.send('q3');
    await waitFor(() => a.clientGot.length === 2, 5000, 'the answer under revision 3');
    expect(d.counters.decisions).toEqual({ allow: 2, deny: 1 });
  });
});

describe('Dataplane over FakeNativeSockets: stop()', () => {
  it('resets live flows, closes the flow sockets and the listeners', async () => {
    const { fake: f, dp: d } = await setup();
    const server = await echoServer(f);
    const c = await client(f, CLIENT_IP, 40000);
    await roundTrip(c, 'hi');
    const u = (() => {
      const got: string[] = [];
      const s: UdpHandle = f.endpointUdp({ address: WEB_IP, port: 53 }, (m, sa, sp) => s.send(m, sa, sp));
      const h = f.endpointUdp({ address: CLIENT_IP, port: 40000 }, (m) => got.push(m.toString()));
      return { got, h };
    })();
    u.h.send(Buffer.from('q'), WEB_IP, 53);
    await waitFor(() => u.got.length === 1, 5000, 'the UDP answer');
    expect(d.table.size).toBe(2);

    await within(d.stop(), 5000, 'stop()');
    dp = undefined;
    const o = await c.outcome();
    expect(o.error).toBe('ECONNRESET');
    await within(server.sockets[0]!.done, 5000, 'the upstream side closed');
    expect(d.table.size).toBe(0);
    expect(d.listeners.tcp).toHaveLength(0);
    expect(d.listeners.udp).toHaveLength(0);
    expect(f.udpHandles.filter((h) => !h.external)).toHaveLength(0);
    // The TCP listener no longer accepts.
    await expect(within(f.clientTcp({ srcAddress: CLIENT_IP, srcPort: 40001, dstAddress: WEB_IP, dstPort: 8080 }), 5000, 'connect')).rejects.toMatchObject({
      code: 'ECONNREFUSED',
    });
    expect(d.counters.decisions.allow).toBe(2);
  });
});

// ---------------------------------------------------------------------------------------------
// Operating: flow log, audit mode, drain at shutdown, metrics

/** client-ns isolated for egress with no rule: the client's egress denies everything. */
function egressDenySnapshot(revision: number): PolicySnapshot {
  return compile(
    makeCluster({
      namespaces,
      pods,
      policies: [makePolicy('client-ns/deny-egress', { podSelector: {}, policyTypes: ['Egress'] }), makePolicy('server-ns/deny-all', { podSelector: {} })],
    }),
    { revision },
  );
}

describe('Dataplane: the node it runs on', () => {
  it.each([
    [{ lo: [{ address: '127.0.0.1' }], eth0: [{ address: '198.18.255.1' }] }, []],
    [{ lo: [{ address: '127.0.0.1' }], 'kube-ipvs0': [{ address: '198.18.200.1' }] }, ['kube-ipvs0']],
    // A pod bridge is the interception's to handle (bridge-redirect.ts), not a problem here.
    [{ lo: [{ address: '127.0.0.1' }], cni0: [{ address: '198.18.1.1' }] }, []],
    [{ cbr0: [{ address: '198.18.1.1' }], 'kube-ipvs0': [{ address: '198.18.200.1' }] }, ['kube-ipvs0']],
  ] as const)('a node that defeats interception (kube-proxy IPVS) is reported once at error level, not on every snapshot: %j', async (ifaces, expected) => {
    const { dp: d } = await setup({}, allowSnapshot(1), { localAddresses: () => ifaces });
    d.setSnapshot(allowSnapshot(2));
    const lines = log.lines.filter((l) => l.fields.code === 'NETPOLD_E_UNSUPPORTED_NODE');
    expect(lines.map((l) => [l.level, l.fields.interface])).toEqual(expected.map((n) => ['error', n]));
  });
});

describe('Dataplane: the flow log', () => {
  it('logs every denied flow and samples allowed ones (rate 1: all), naming the policy and rule that allowed it', async () => {
    const { fake: f } = await setup({}, allowSnapshot(4), {}, { sampleRate: 1 });
    await echoServer(f);
    const ok = await client(f, CLIENT_IP, 40000);
    await roundTrip(ok, 'hi');
    await expectReset(await client(f, OTHER_IP, 40001));
    const allowed = await flowLines('flow allowed', 1);
    expect(allowed[0]).toMatchObject({
      level: 'info',
      protocol: 'TCP',
      family: 4,
      srcIp: CLIENT_IP,
      srcPort: 40000,
      dstIp: WEB_IP,
      dstPort: 8080,
      srcPod: 'client-ns/client',
      dstPod: 'server-ns/web',
      verdict: 'allow',
      audit: false,
      revision: 4,
      egress: { status: 'not-isolated' },
      ingress: { status: 'allowed', policy: ALLOW_POLICY, rule: 0, policies: [ALLOW_POLICY] },
      sampleRate: 1,
    });
    expect(Date.parse(allowed[0]!.time)).not.toBeNaN();
    const denied = await flowLines('flow denied', 1);
    expect(denied[0]).toMatchObject({ srcPod: 'client-ns/other', dstPod: 'server-ns/web', verdict: 'deny', ingress: { status: 'denied', policies: [ALLOW_POLICY] } });
    expect(denied[0]!.sampleRate).toBeUndefined();
    expect(flowLog.counters).toMatchObject({ written: 2, dropped: 0, sampledOut: 0 });
  });

  it('rate 0 logs no allowed flow (counted as sampled out), still every denied one', async () => {
    const { fake: f } = await setup({}, allowSnapshot(1), {}, { sampleRate: 0 });
    await echoServer(f);
    await roundTrip(await client(f, CLIENT_IP, 40000), 'a');
    await roundTrip(await client(f, CLIENT_IP, 40001), 'b');
    await expectReset(await client(f, OTHER_IP, 40002));
    await flowLines('flow denied', 1);
    expect(sink.lines.map((l) => l.msg)).toEqual(['flow denied']);
    expect(flowLog.counters.sampledOut).toBe(2);
  });

  it('when its buffer is full, lines are dropped and counted while enforcement goes on; the rest is written once the sink drains', async () => {
    const { fake: f, dp: d } = await setup({}, allowSnapshot(1), {}, { bufferLines: 2 });
    sink.blocked = true; // a sink that accepts one write, then never drains (until unblocked)
    for (let i = 0; i < 6; i++) await expectReset(await client(f, OTHER_IP, 41000 + i));
    expect(d.counters.decisions.deny).toBe(6); // every flow decided and reset: nothing waited on the log
    const c = flowLog.counters;
    expect(c.dropped).toBeGreaterThanOrEqual(3); // at most one line written before the block, two buffered
    expect(c.written + flowLog.buffered + c.dropped).toBe(6);
    expect(flowLog.buffered).toBeLessThanOrEqual(2);
    sink.unblock();
    await waitFor(() => flowLog.buffered === 0, 5000, 'the buffer written');
    expect(sink.lines).toHaveLength(6 - c.dropped);
    expect(sink.lines.every((l) => l.msg === 'flow denied')).toBe(true);
  });
});

describe('Dataplane: audit mode', () => {
  it('--mode audit: a denied TCP flow is relayed, counted as audited and flow-logged with audit: true, verdict deny', async () => {
    const { fake: f, dp: d } = await setup({ mode: 'audit' });
    const server = await echoServer(f);
    const c = await client(f, OTHER_IP, 40001);
    await roundTrip(c, 'let me through');
    expect(server.flows).toHaveLength(1);
    expect(d.counters.decisions).toEqual({ allow: 0, deny: 1 });
    expect(d.counters.audited).toBe(1);
    expect(d.counters.flows[0 * 3 + 2]).toBe(1); // TCP, audit
    const [line] = await flowLines('flow denied', 1);
    expect(line).toMatchObject({ verdict: 'deny', audit: true, srcPod: 'client-ns/other', ingress: { status: 'denied', policies: [ALLOW_POLICY] } });
    expect(d.isAudited(d.table.all()[0]!)).toBe(true);
  });

  it('--mode audit: a denied UDP flow is relayed', async () => {
    const { fake: f, dp: d } = await setup({ mode: 'audit' });
    const got: string[] = [];
    const srv: UdpHandle = f.endpointUdp({ address: WEB_IP, port: 5353 }, (m, sa, sp) => srv.send(m, sa, sp));
    const c = f.endpointUdp({ address: OTHER_IP, port: 40000 }, (m) => got.push(m.toString()));
    c.send(Buffer.from('q'), WEB_IP, 5353);
    await waitFor(() => got.length === 1, 5000, 'the echo');
    expect(d.counters.udpDropped).toBe(0);
    expect(d.counters.flows[1 * 3 + 2]).toBe(1); // UDP, audit
  });

  it('a namespace in audit mode lifts the denials of its own pods only; back to enforce, the audited flow is closed', async () => {
    const { fake: f, dp: d } = await setup({}, null);
    await echoServer(f);
    d.setSnapshot(allowSnapshot(1), { auditNamespaces: new Set(['server-ns']) });
    // OTHER -> web is denied by server-ns's ingress policy: server-ns audits, so it goes through.
    const c = await client(f, OTHER_IP, 40001);
    await roundTrip(c, 'audited');
    expect(d.counters.audited).toBe(1);
    // Denied by client-ns's egress as well: client-ns enforces, so it stays denied.
    d.setSnapshot(egressDenySnapshot(2), { auditNamespaces: new Set(['server-ns']) });
    expect((await c.outcome()).error).toBe('ECONNRESET'); // re-evaluated: client-ns's denial is enforced
    await expectReset(await client(f, OTHER_IP, 40002));
    const lines = await flowLines('flow denied', 2);
    expect(lines.map((l) => [l.audit, l.egress.status, l.ingress.status])).toEqual([
      [true, 'not-isolated', 'denied'],
      [false, 'denied', 'denied'],
    ]);
    // With client-ns in audit mode too, both denials are lifted.
    d.setSnapshot(egressDenySnapshot(3), { auditNamespaces: new Set(['server-ns', 'client-ns']) });
    const c3 = await client(f, OTHER_IP, 40003);
    await roundTrip(c3, 'both audited');
    // Back to enforcing everywhere: the audited live flow is closed like any flow no longer allowed.
    d.setSnapshot(egressDenySnapshot(4));
    expect((await c3.outcome()).error).toBe('ECONNRESET');
    expect(d.counters.closedByPolicyChange).toBe(2);
  });
});

describe('Dataplane: drain at shutdown', () => {
  it('refuses new flows while a live flow goes on and finishes; drain resolves when it has, before the grace period', async () => {
    const { fake: f, dp: d } = await setup();
    await echoServer(f);
    const live = await client(f, CLIENT_IP, 40000);
    await roundTrip(live, 'before');
    expect(d.liveTcpFlows).toBe(1);
    const drained = d.drain(600_000);
    expect(d.isDraining).toBe(true);
    await expectReset(await client(f, CLIENT_IP, 40001));
    expect(d.counters.refusedDraining).toBe(1);
    await roundTrip(live, 'during the drain');
    live.socket.end();
    const r = await within(drained, 10_000, 'the drain to end when the flow finished');
    expect(r).toEqual({ finished: true, left: 0 });
    expect((await live.outcome()).error).toBeUndefined();
    expect(live.text()).toBe('beforeduring the drain');
  });

  it('a flow still open when the grace period ends is reset by stop()', async () => {
    const { fake: f, dp: d } = await setup();
    await echoServer(f);
    const live = await client(f, CLIENT_IP, 40000);
    await roundTrip(live, 'x');
    const r = await within(d.drain(100), 10_000, 'the grace period');
    expect(r).toEqual({ finished: false, left: 1 });
    await within(d.stop(), 5000, 'stop()');
    dp = undefined;
    expect((await live.outcome()).error).toBe('ECONNRESET');
  });

  it('a second signal (abort) ends the drain at once', async () => {
    const { fake: f, dp: d } = await setup();
    await echoServer(f);
    await roundTrip(await client(f, CLIENT_IP, 40000), 'x');
    const r = await within(d.drain(600_000, Promise.resolve()), 10_000, 'the aborted drain');
    expect(r.finished).toBe(false);
  });
});

describe('Dataplane: metrics', () => {
  async function scrape(url: string): Promise<string> {
    const res = await fetch(url);
    expect(res.status).toBe(200);
    return res.text();
  }
  function value(text: string, series: string): number | undefined {
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  }

  it('are served on /metrics and change as flows are decided', async () => {
    const registry = new Registry();
    const metrics = new AgentMetrics(registry);
    const { fake: f, dp: d } = await setup({}, null, { observeDecision: metrics.observeDecision }, { sampleRate: 1 });
    const agentView = { phase: 'fail_closed' as const, interceptionInstalled: true, auditNamespaceCount: 0 };
    metrics.bind({
      dataplane: d,
      agent: agentView,
      flowLog,
      source: () => ({ kind: 'manifests', updates: 1, events: 0, relists: 0, errors: 0, rejected: 0, lastSyncTime: Date.now() }),
      version: 'test',
    });
    const server = await startMetricsServer({ host: '127.0.0.1', port: 0, registry, health: () => ({ ok: true, detail: {} }), ready: () => ({ ok: false, detail: {} }) });
    try {
      const url = `http://127.0.0.1:${server.port}/metrics`;
      const before = await scrape(url);
      expect(value(before, 'netpold_phase{phase="fail_closed"}')).toBe(1);
      expect(value(before, 'netpold_phase{phase="enforcing"}')).toBe(0);
      expect(value(before, 'netpold_decision_duration_seconds_count')).toBe(0);
      expect(value(before, 'netpold_flows_total{protocol="tcp",verdict="allow"}')).toBe(0);
      expect(value(before, 'netpold_snapshot_revision')).toBe(0);

      // Not ready: refused without a decision.
      await expectReset(await client(f, CLIENT_IP, 39999));
      d.setSnapshot(allowSnapshot(7));
      const server2 = await echoServer(f);
      const ok = await client(f, CLIENT_IP, 40000);
      await roundTrip(ok, 'hello');
      await expectReset(await client(f, OTHER_IP, 40001));
      const u = f.endpointUdp({ address: OTHER_IP, port: 40002 }, () => {});
      f.endpointUdp({ address: WEB_IP, port: 53 }, () => {});
      u.send(Buffer.from('a'), WEB_IP, 53);
      u.send(Buffer.from('b'), WEB_IP, 53);
      await waitFor(() => d.counters.udpDropped === 2, 5000, 'datagrams dropped');
      await flowLines('flow denied', 2);

      const after = await scrape(url);
      expect(value(after, 'netpold_decisions_total{verdict="allow",egress="not-isolated",ingress="allowed"}')).toBe(1);
      expect(value(after, 'netpold_decisions_total{verdict="deny",egress="not-isolated",ingress="denied"}')).toBe(2);
      expect(value(after, 'netpold_decision_duration_seconds_count')).toBe(3);
      expect(value(after, 'netpold_decision_duration_seconds_bucket{le="+Inf"}')).toBe(3);
      expect(value(after, 'netpold_flows_total{protocol="tcp",verdict="allow"}')).toBe(1);
      expect(value(after, 'netpold_flows_total{protocol="tcp",verdict="deny"}')).toBe(1);
      expect(value(after, 'netpold_flows_total{protocol="udp",verdict="deny"}')).toBe(1);
      expect(value(after, 'netpold_flows_active{protocol="tcp",verdict="allow"}')).toBe(1); // the echo connection is still open
      expect(value(after, 'netpold_flows_active{protocol="udp",verdict="deny"}')).toBe(1);
      expect(value(after, 'netpold_flows_refused_total{reason="not_ready"}')).toBe(1);
      expect(value(after, 'netpold_relayed_bytes_total{direction="to_server"}')).toBe(5);
      expect(value(after, 'netpold_relayed_bytes_total{direction="to_client"}')).toBe(5);
      expect(value(after, 'netpold_udp_datagrams_dropped_total')).toBe(2);
      expect(value(after, 'netpold_flow_table_entries')).toBe(2);
      expect(value(after, 'netpold_flow_table_capacity')).toBe(64);
      expect(value(after, 'netpold_flow_table_lookups_total')).toBe(2);
      expect(value(after, 'netpold_flow_table_hits_total')).toBe(1);
      expect(value(after, 'netpold_snapshot_revision')).toBe(7);
      expect(value(after, 'netpold_flow_log_lines_total')).toBe(3);
      expect(value(after, 'netpold_flow_log_dropped_total')).toBe(0);
      expect(value(after, 'netpold_source_updates_total{source="manifests"}')).toBe(1);
      expect(value(after, 'netpold_build_info{version="test"}')).toBe(1);
      // No address or pod name in any label.
      for (const l of after.split('\n').filter((x) => x.startsWith('netpold_'))) expect(l).not.toMatch(/198\.18|client-ns|server-ns/);
      expect(server2.flows).toHaveLength(1);
    } finally {
      await server.close();
    }
  });
});
