// A quick side-by-side of the two TCP relays over loopback, in one run: the JS relay
// (relayTcp: Node streams, pipe()) and the kernel relay (relayTcpSplice: splice(2) on the
// addon's epoll thread), with the direct path (no relay) as the ceiling.
//
//   npm run -s build && sudo node dist/bench/splice-quick.js [--duration 3] [--streams 1,4] [--dirs down,up] [--repeat 1]
//
// The load generator and the bulk server are bench/c/loadgen.c (single-threaded epoll C, two
// child processes); this process runs only the relay, so its CPU time (process.cpuUsage, every
// thread: the splice engine's too) is the relay's cost. Reported per run: throughput (Gbit/s,
// loadgen's measurement window after its warm-up), the relay's CPU seconds per GB relayed
// (whole run), and js/splice ratios. Needs root (the addon's transparent sockets). On a small
// machine the three processes share the cores: compare the relays with each other, in one run.
// With --repeat N the three modes run interleaved N times (so a noisy moment hits all of them)
// and each number is the median of its N runs.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { FlowEntry } from '../src/conntrack/flow-table.js';
import { loadNativeSockets, type NativeSockets } from '../src/dataplane/native.js';
import { relayTcpSplice } from '../src/dataplane/splice-relay.js';
import { relayTcp, type UpstreamConnector } from '../src/dataplane/tcp-relay.js';
import { parseAddrInto, PROTO_TCP } from '../src/policy/addr.js';
import { ensureLoadgen, type StreamOut } from './loadgen.js';

type Mode = 'direct' | 'js' | 'splice';

interface Row {
  mode: Mode;
  dir: 'down' | 'up';
  streams: number;
  gbps: number;
  relayedBytes: number;
  cpuSeconds: number;
  cpuSecPerGB: number;
}

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1]! : dflt;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function run(bin: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${bin} ${args.join(' ')} exited ${code}: ${err}`));
    });
  });
}

async function startServer(bin: string, port: number): Promise<ChildProcess> {
  const child = spawn(bin, ['server', '--addr', '127.0.0.1', '--bulk-ports', String(port), '--max-seconds', '600'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('"ready":true')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`loadgen server exited ${code}`)));
  });
  return child;
}

/** A loopback listener relaying every connection to 127.0.0.1:upstreamPort with the given relay. */
async function relayListener(ns: NativeSockets, mode: 'js' | 'splice', upstreamPort: number) {
  let bytes = 0;
  let live = 0;
  const connect: UpstreamConnector = (o) => ns.connectTransparentTcp({ ...o, srcPort: 0, timeoutMs: 5000 });
  const listener = await ns.listenTransparentTcp({ family: 4, address: '127.0.0.1', port: 0 }, (socket, flow) => {
    socket.on('error', () => {});
    const e = new FlowEntry();
    e.proto = PROTO_TCP;
    e.family = 4;
    parseAddrInto(flow.srcAddress, e.src);
    parseAddrInto('127.0.0.1', e.dst);
    e.srcPort = flow.srcPort;
    e.dstPort = upstreamPort;
    e.state = 'allowed';
    live++;
    const ev = { bytes: (_d: string, n: number) => (bytes += n), upstreamError: () => {}, closed: () => live-- };
    if (mode === 'js') void relayTcp(socket, e, connect, ev);
    else void relayTcpSplice(socket, e, connect, ev, ns, { connectFd: (o) => ns.connectTransparentTcpFd!({ ...o, srcPort: 0, timeoutMs: 5000 }) });
  });
  return {
    port: listener.port,
    bytes: () => bytes,
    live: () => live,
    close: () => listener.close(),
  };
}

async function measure(bin: string, ns: NativeSockets, serverPort: number, mode: Mode, dir: 'down' | 'up', streams: number, duration: number): Promise<Row> {
  const relay = mode === 'direct' ? undefined : await relayListener(ns, mode, serverPort);
  const port = relay?.port ?? serverPort;
  const cpu0 = process.cpuUsage();
  const out = await run(
    bin,
    ['stream', '--addr', '127.0.0.1', '--ports', String(port), '--streams', String(streams), '--duration', String(duration), '--warmup', '0.5', '--dir', dir],
    (duration + 30) * 1000,
  );
  const t0 = Date.now();
  while (relay !== undefined && relay.live() > 0 && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 10));
  const cpu = process.cpuUsage(cpu0);
  await relay?.close();
  const s = JSON.parse(out.trim().split('\n').pop()!) as StreamOut;
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  const relayedBytes = relay?.bytes() ?? 0;
  return {
    mode,
    dir,
    streams,
    gbps: s.gbps,
    relayedBytes,
    cpuSeconds,
    cpuSecPerGB: relayedBytes > 0 ? cpuSeconds / (relayedBytes / 1e9) : 0,
  };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('splice-quick needs root (transparent sockets of the addon)');
  const duration = Number(arg('duration', '3'));
  const streamsList = arg('streams', '1,4').split(',').map(Number);
  const dirs = arg('dirs', 'down,up').split(',') as ('down' | 'up')[];
  const repeat = Math.max(1, Number(arg('repeat', '1')));
  const bin = ensureLoadgen((t) => console.error(t));
  const ns = loadNativeSockets();
  if (ns.spliceRelay === undefined) throw new Error('this addon has no spliceRelay');
  const serverPort = await freePort();
  const server = await startServer(bin, serverPort);
  const rows: Row[] = [];
  try {
    for (const streams of streamsList) {
      for (const dir of dirs) {
        for (let k = 0; k < repeat; k++) {
          for (const mode of ['direct', 'js', 'splice'] as Mode[]) {
            const row = await measure(bin, ns, serverPort, mode, dir, streams, duration);
            rows.push(row);
            console.error(`${mode.padEnd(6)} ${dir.padEnd(4)} streams=${streams}: ${row.gbps.toFixed(2)} Gbit/s, ${row.cpuSecPerGB.toFixed(3)} CPU s/GB`);
          }
        }
      }
    }
  } finally {
    server.kill('SIGTERM');
  }
  const c = ns.spliceCounters!();
  console.log(
    `\nloopback, one run${repeat > 1 ? `, medians of ${repeat} interleaved runs` : ''}; Gbit/s from loadgen (window after warm-up), CPU = this process (all threads) per GB relayed\n`,
  );
  console.log('streams dir  | direct Gbit/s | js Gbit/s  js CPU s/GB | splice Gbit/s  splice CPU s/GB | splice/js Gbit/s  js/splice CPU per GB');
  for (const streams of streamsList) {
    for (const dir of dirs) {
      const get = (m: Mode): Row => {
        const rs = rows.filter((r) => r.mode === m && r.dir === dir && r.streams === streams);
        const median = (f: (r: Row) => number): number => {
          const v = rs.map(f).sort((a, b) => a - b);
          return v.length % 2 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
        };
        return { ...rs[0]!, gbps: median((r) => r.gbps), cpuSecPerGB: median((r) => r.cpuSecPerGB) };
      };
      const d = get('direct');
      const j = get('js');
      const s = get('splice');
      console.log(
        `${String(streams).padStart(7)} ${dir.padEnd(4)} | ${d.gbps.toFixed(2).padStart(13)} | ${j.gbps.toFixed(2).padStart(9)}  ${j.cpuSecPerGB.toFixed(3).padStart(11)} | ` +
          `${s.gbps.toFixed(2).padStart(13)}  ${s.cpuSecPerGB.toFixed(3).padStart(15)} | ${(s.gbps / j.gbps).toFixed(2).padStart(16)}x  ${(j.cpuSecPerGB / s.cpuSecPerGB).toFixed(2).padStart(19)}x`,
      );
    }
  }
  console.log(
    `\nsplice engine: ${c.completed} relays, ${c.spliceCalls} splice calls, ${c.syscalls} syscalls, ` +
      `${((c.bytesToServer + c.bytesToClient) / Math.max(1, c.spliceCalls) / 1024).toFixed(1)} KiB per splice call, ${c.wakeups} loop wakeups, threads ${c.threads}`,
  );
  console.log(JSON.stringify({ rows, splice: c }));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
