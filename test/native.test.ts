// The native addon (native/) through its TypeScript wrapper (src/dataplane/native.ts), and the
// in-memory fake (src/dataplane/native-fake.ts).
//
// The addon tests need root (IP_TRANSPARENT, SO_MARK, network namespaces) and the built addon;
// they are skipped, with the reason in the suite's title, otherwise. Foreign-address and TPROXY
// checks run in two network namespaces this file creates (npd-native-<random>-a and -b, joined
// by a veth pair) and deletes in afterAll; they use only 198.18.0.0/15 and 2001:2::/48.
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import dgram from 'node:dgram';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import ts from 'typescript';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FAST_PENDING_WORDS, loadNativeSockets, nativeAddonPath, type NativeError, type NativeSockets, type TcpFlow, type UdpHandle } from '../src/dataplane/native.js';
import { FakeNativeSockets } from '../src/dataplane/native-fake.js';
import { within } from './support/wait.js';

const root = new URL('..', import.meta.url).pathname;
const addonPath = nativeAddonPath();
const isRoot = process.getuid?.() === 0;
const haveAddon = addonPath !== undefined && existsSync(addonPath);
const haveTools = spawnSync('ip', ['-V']).status === 0 && spawnSync('nft', ['--version']).status === 0;
const skipReason = !isRoot ? 'not root' : !haveAddon ? `addon not built (${addonPath}): run npm ci` : '';
const skipNetnsReason = skipReason || (haveTools ? '' : 'ip or nft missing');
const title = (t: string, why: string): string => (why ? `${t} [skipped: ${why}]` : t);

/** Bounds a promise in time. */
function once<T extends unknown[]>(emitter: NodeJS.EventEmitter, event: string): Promise<T> {
  return new Promise((resolve) => emitter.once(event, (...args: unknown[]) => resolve(args as T)));
}

function readAll(socket: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (text += d));
    socket.once('end', () => resolve(text));
    socket.once('error', reject);
  });
}

/** A free loopback TCP port (listened on, then closed). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/**
 * A copy of the wrapper as plain JavaScript in a package named netpold, for child processes
 * (plain node, in another network namespace). With `withAddon`, native/ is linked in.
 */
function childPackage(dir: string, withAddon: boolean): void {
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'netpold', private: true, type: 'module' }));
  for (const file of ['src/errors.ts', 'src/dataplane/native.ts']) {
    const out = join(dir, file.replace(/\.ts$/, '.js'));
    mkdirSync(dirname(out), { recursive: true });
    const js = ts.transpileModule(readFileSync(join(root, file), 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    }).outputText;
    writeFileSync(out, js);
  }
  if (withAddon) symlinkSync(join(root, 'native'), join(dir, 'native'));
}

function run(cmd: string, args: string[], timeoutMs = 20_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr: stderr + (err && code === -1 ? `\n${err.message}` : '') });
    });
  });
}

function must(cmd: string, args: string[], input?: string): void {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr || r.error?.message}`);
}

// ------------------------------------------------------------------------------------------------

describe('loadNativeSockets', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'npd-native-pkg-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('throws NETPOLD_E_NATIVE, naming the path, when the addon is missing', async () => {
    childPackage(tmp, false);
    const script = join(tmp, 'load.mjs');
    writeFileSync(
      script,
      "import { loadNativeSockets } from './src/dataplane/native.js';\n" +
        'try { loadNativeSockets(); console.log(JSON.stringify({ loaded: true })); }\n' +
        'catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message, isError: e instanceof Error })); }\n',
    );
    const r = await run(process.execPath, [script]);
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { code: string; message: string; isError: boolean };
    expect(out.code).toBe('NETPOLD_E_NATIVE');
    expect(out.isError).toBe(true);
    expect(out.message).toContain(join(tmp, 'native/build/Release/netpold_native.node'));
    expect(out.message).toContain('npm ci');
  });
});

describe(title('native addon on loopback (as root)', skipReason), () => {
  let ns: NativeSockets;
  const cleanup: (() => void)[] = [];
  beforeAll(() => {
    if (!skipReason) ns = loadNativeSockets();
  });
  afterEach(() => {
    for (const c of cleanup.splice(0)) c();
  });

  it.skipIf(!!skipReason)('mallocInUseBytes counts what malloc handed out (an ArrayBuffer of 64 MiB, Node allocates it with malloc)', () => {
    const before = ns.spliceCounters!().mallocInUseBytes;
    const big = Buffer.alloc(64 << 20, 1);
    const during = ns.spliceCounters!().mallocInUseBytes;
    expect(big[big.length - 1]).toBe(1);
    expect(during - before).toBeGreaterThanOrEqual(64 << 20);
    expect(during - before).toBeLessThan(80 << 20);
  });

  it.skipIf(!!skipReason)('a transparent TCP listener on 127.0.0.1 accepts a connection, with its flow', async () => {
    let accepted: (v: [net.Socket, TcpFlow]) => void = () => {};
    const got = new Promise<[net.Socket, TcpFlow]>((resolve) => (accepted = resolve));
    const listener = await ns.listenTransparentTcp({ family: 4, address: '127.0.0.1', port: 0, backlog: 16 }, (s, f) => accepted([s, f]));
    cleanup.push(() => listener.server.close());
    expect(listener.address).toBe('127.0.0.1');
    expect(listener.port).toBeGreaterThan(0);
    const client = net.connect({ host: '127.0.0.1', port: listener.port });
    cleanup.push(() => client.destroy());
    await within(once(client, 'connect'), 5000, 'connect');
    const [server, flow] = await within(got, 5000, 'accept');
    expect(flow).toEqual({ family: 4, srcAddress: '127.0.0.1', srcPort: client.localPort, dstAddress: '127.0.0.1', dstPort: listener.port });
    server.end('hello');
    expect(await within(readAll(client), 5000, 'read')).toBe('hello');
  });

  it.skipIf(!!skipReason)('connectTransparentTcp gives a connected net.Socket', async () => {
    const server = net.createServer((s) => s.end(`${s.remoteAddress}:${s.remotePort}`));
    cleanup.push(() => server.close());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const sock = await within(
      ns.connectTransparentTcp({ family: 4, srcAddress: '127.0.0.1', srcPort: 0, dstAddress: '127.0.0.1', dstPort: port, mark: 7, timeoutMs: 3000 }),
      5000,
      'connect',
    );
    cleanup.push(() => sock.destroy());
    expect(sock).toBeInstanceOf(net.Socket);
    expect(sock.remotePort).toBe(port);
    expect(await within(readAll(sock), 5000, 'read')).toBe(`127.0.0.1:${sock.localPort}`);
  });

  it.skipIf(!!skipReason)('a refused connect rejects with code ECONNREFUSED (errno, syscall, a message naming the call)', async () => {
    const port = await freePort();
    const e = (await ns
      .connectTransparentTcp({ family: 4, srcAddress: '127.0.0.1', srcPort: 0, dstAddress: '127.0.0.1', dstPort: port, timeoutMs: 3000 })
      .then(() => undefined, (err: unknown) => err)) as NativeError;
    expect(e).toBeInstanceOf(Error);
    expect(e.code).toBe('ECONNREFUSED');
    expect(e.errno).toBe(-111);
    expect(e.syscall).toBe('connect');
    expect(e.message).toMatch(/^tcpConnect: connect failed: ECONNREFUSED .*127\.0\.0\.1:\d+/);
  });

  it.skipIf(!!skipReason)('a busy source port is EADDRINUSE in the addon; the wrapper retries once from any port', async () => {
    const busy = net.createServer();
    cleanup.push(() => busy.close());
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const busyPort = (busy.address() as net.AddressInfo).port;
    const server = net.createServer((s) => s.end('ok'));
    cleanup.push(() => server.close());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const raw = createRequire(import.meta.url)(addonPath!) as {
      tcpConnect(o: object, cb: (e: NativeError | null, fd: number) => void): void;
    };
    let sync = true;
    const pending = new Promise<{ e: NativeError | null; fd: number; sync: boolean }>((resolve) =>
      raw.tcpConnect({ family: 4, srcAddress: '127.0.0.1', srcPort: busyPort, dstAddress: '127.0.0.1', dstPort: port, timeoutMs: 1000 }, (e, fd) =>
        resolve({ e, fd, sync }),
      ),
    );
    sync = false;
    const rawErr = await within(pending, 5000, 'raw connect');
    expect(rawErr.sync).toBe(false); // always called back asynchronously
    expect(rawErr.fd).toBe(-1);
    expect(rawErr.e?.code).toBe('EADDRINUSE');
    expect(rawErr.e?.syscall).toBe('bind');
    const sock = await within(
      ns.connectTransparentTcp({ family: 4, srcAddress: '127.0.0.1', srcPort: busyPort, dstAddress: '127.0.0.1', dstPort: port, timeoutMs: 3000 }),
      5000,
      'connect with retry',
    );
    cleanup.push(() => sock.destroy());
    expect(sock.localPort).not.toBe(busyPort);
    expect(await within(readAll(sock), 5000, 'read')).toBe('ok');
  });

  it.skipIf(!!skipReason)('bad arguments throw TypeError (never a crash)', async () => {
    const raw = createRequire(import.meta.url)(addonPath!) as Record<string, (...a: unknown[]) => unknown>;
    const bad: [string, unknown[]][] = [
      ['tcpListen', []],
      ['tcpListen', [5, '127.0.0.1', 0, 1]],
      ['tcpListen', [4, '::1', 0, 1]],
      ['tcpListen', [4, 'localhost', 0, 1]],
      ['tcpListen', [4, '127.0.0.1', 70000, 1]],
      ['tcpListen', [4, '127.0.0.1', 1.5, 1]],
      ['tcpListen', [4, '127.0.0.1', 0, 0]],
      ['tcpListen', [6, '1.2.3.4', 0, 1]],
      ['tcpConnect', [{}, () => {}]],
      ['tcpConnect', [null, () => {}]],
      ['tcpConnect', [{ family: 4, srcAddress: '127.0.0.1', srcPort: 0, dstAddress: '127.0.0.1', dstPort: 1, timeoutMs: 1 }, 'nope']],
      ['tcpConnect', [{ family: 4, srcAddress: '127.0.0.1', srcPort: 0, dstAddress: '127.0.0.1', dstPort: 0, timeoutMs: 1 }, () => {}]],
      ['tcpConnect', [{ family: 4, srcAddress: '127.0.0.1', srcPort: 0, dstAddress: '127.0.0.1', dstPort: 1, timeoutMs: 0 }, () => {}]],
      ['tcpConnect', [{ family: 4, srcAddress: '127.0.0.1', srcPort: 0, dstAddress: '127.0.0.1', dstPort: 1, timeoutMs: 1, mark: -1 }, () => {}]],
      ['udpOpen', [{ family: 4, address: '127.0.0.1', port: 0 }]],
      ['udpOpen', [{ family: 4, address: '127.0.0.1', port: 0, transparent: 'yes' }, () => {}]],
      ['udpOpen', [{ family: 4, address: 'x', port: 0 }, () => {}]],
    ];
    for (const [fn, args] of bad) {
      let err: unknown;
      try {
        raw[fn]!(...args);
      } catch (e) {
        err = e;
      }
      expect(err, `${fn}(${JSON.stringify(args)})`).toBeInstanceOf(TypeError);
      expect((err as NativeError).code).toBe('ERR_INVALID_ARG_VALUE');
      expect((err as Error).message.startsWith(`${fn}: `)).toBe(true);
    }
    await expect(ns.listenTransparentTcp({ family: 5 as 4, address: '127.0.0.1', port: 0 }, () => {})).rejects.toBeInstanceOf(TypeError);
    await expect(
      ns.connectTransparentTcp({ family: 4, srcAddress: '127.0.0.1', srcPort: -1, dstAddress: '127.0.0.1', dstPort: 80 }),
    ).rejects.toBeInstanceOf(TypeError);
    expect(() => ns.openUdp({ family: 4, address: '::', port: 0, transparent: false, recvOrigDst: false }, () => {})).toThrow(TypeError);
    const u = ns.openUdp({ family: 4, address: '127.0.0.1', port: 0, transparent: false, recvOrigDst: false }, () => {});
    cleanup.push(() => u.close());
    expect(() => u.send('text' as unknown as Buffer, '127.0.0.1', 9)).toThrow(TypeError);
    expect(() => u.send(Buffer.from('x'), '::1', 9)).toThrow(TypeError);
    expect(() => u.send(Buffer.from('x'), '127.0.0.1', 0)).toThrow(TypeError);
    expect(() => u.connect('127.0.0.1', 65536)).toThrow(TypeError);
  });

  /**
   * The fast-path API on loopback, driven by hand as the data plane would: a listener group of
   * `threads` engine threads, pending records polled, verdicts and completions. Every open()
   * passes the same options (the addon's channel is opened once per process).
   */
  const fastHarness = (onWork: () => void, threads: number) => {
    const fast = ns.fastTcpPath!();
    fast.open(onWork, { connectTimeoutMs: 2000, udpIdleMs: 1000, verdictCacheSize: 16 });
    const { id, port } = fast.listen(4, '127.0.0.1', 0, 64, threads, 6);
    const W = FAST_PENDING_WORDS;
    const pend = new Uint32Array(W * 16);
    const done = new Float64Array(6 * 16);
    return {
      fast,
      id,
      port,
      verdicts: new Float64Array(4 * 16),
      done,
      /** Polls (bounded) until `want` records were taken; returns them as arrays of W words. */
      async takePending(want: number): Promise<number[][]> {
        const out: number[][] = [];
        const deadline = Date.now() + 5000;
        while (out.length < want) {
          if (Date.now() > deadline) throw new Error(`only ${out.length} of ${want} pending connections`);
          const n = fast.takePending(pend);
          for (let i = 0; i < n; i++) out.push([...pend.subarray(i * W, i * W + W)]);
          if (n === 0) await new Promise((r) => setTimeout(r, 5));
        }
        return out;
      },
      /** Polls (bounded) for ended relays; returns how many. */
      async takeDone(): Promise<number> {
        const deadline = Date.now() + 5000;
        let m = 0;
        while ((m = fast.takeDone(done)) === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
        return m;
      },
      async connectClient(localAddress = '127.0.0.1'): Promise<{ sock: net.Socket; closed: Promise<string> }> {
        const sock = net.connect({ port, host: '127.0.0.1', localAddress });
        const closed = new Promise<string>((resolve) => {
          sock.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
          sock.on('close', () => resolve('close'));
        });
        await once(sock, 'connect');
        return { sock, closed };
      },
    };
  };
  const LOOPBACK = 0x7f000001;

  it.skipIf(!!skipReason)('fast path: accepted connections arrive as records on both engine threads; a refused one is reset; a relay whose upstream fails ends as a record and resets the client', async () => {
    let wakeups = 0;
    const { fast, id, port, verdicts, done, takePending, takeDone, connectClient } = fastHarness(() => void wakeups++, 2);
    expect(port).toBeGreaterThan(0);
    try {
      // Refused: the client sees its connection reset.
      const c1 = await connectClient();
      const [r1] = await takePending(1);
      expect(r1!.slice(1)).toEqual([4, LOOPBACK, 0, 0, 0, LOOPBACK, 0, 0, 0, c1.sock.localPort, port, 6, 0, 0, 0]);
      verdicts.set([r1![0]!, 0, 0, 0]);
      fast.verdicts(verdicts, 1);
      expect(await within(c1.closed, 5000, 'the refused client to be reset')).toBe('ECONNRESET');

      // Relayed from the node to its original destination, which is this listener itself: the
      // engine's upstream connection arrives as a record of its own; refusing it resets the
      // upstream, so the relay ends (tag 7, reset-upstream) and resets the client.
      const c2 = await connectClient();
      const [r2] = await takePending(1);
      verdicts.set([r2![0]!, 2, 7, 0]);
      fast.verdicts(verdicts, 1);
      const relayId = verdicts[3]!;
      expect(relayId).toBeGreaterThan(0);
      const [up] = await takePending(1);
      expect(up![10]).not.toBe(c2.sock.localPort); // a connection of its own, from the node
      verdicts.set([up![0]!, 0, 0, 0]);
      fast.verdicts(verdicts, 1);
      expect(await within(c2.closed, 5000, 'the relayed client to be reset')).toBe('ECONNRESET');
      expect(await takeDone()).toBe(1);
      expect([done[0], done[1]]).toEqual([7, 2]);
      expect(fast.abort(relayId)).toBe(false); // ended already

      // A relay slot is reused with a new generation: the ended relay's id names nothing,
      // even while a newer relay lives (in its slot, when the same engine thread took it).
      const c3 = await connectClient();
      const [r3] = await takePending(1);
      verdicts.set([r3![0]!, 2, 8, 0]);
      fast.verdicts(verdicts, 1);
      const relayId3 = verdicts[3]!;
      expect(relayId3).not.toBe(relayId);
      if (relayId3 % 16 === relayId % 16) expect(Math.floor(relayId3 / 16) % 2 ** 24).toBe(Math.floor(relayId / 16) % 2 ** 24);
      const [up3] = await takePending(1);
      expect(fast.abort(relayId)).toBe(false); // stale: the live relay is not touched
      verdicts.set([up3![0]!, 0, 0, 0]);
      fast.verdicts(verdicts, 1);
      expect(await within(c3.closed, 5000, 'the second relayed client to be reset')).toBe('ECONNRESET');
      expect(await takeDone()).toBe(1);
      expect([done[0], done[1]]).toEqual([8, 2]); // reset-upstream, not aborted
      expect(wakeups).toBeGreaterThan(0);
      const stats = ns.spliceCounters!();
      expect(stats.accepted).toBeGreaterThanOrEqual(3);
      expect(stats.acceptedByThread.length).toBeGreaterThanOrEqual(2);
      // A slot that names no pending connection is a TypeError, not a crash.
      verdicts.set([9999, 0, 0, 0]);
      expect(() => fast.verdicts(verdicts, 1)).toThrow(TypeError);
    } finally {
      fast.closeListener(id);
    }
    // Closed: the port is free for a plain listener again.
    const again = net.createServer();
    await new Promise<void>((resolve, reject) => {
      again.once('error', reject);
      again.listen(port, '127.0.0.1', () => resolve());
    });
    await new Promise<void>((r) => again.close(() => r()));
  });

  it.skipIf(!!skipReason)('verdict cache: a relay verdict given with a generation relays the next connection of the same source, destination and port at once; the caller adopts it or aborts it; invalidate() forgets it', async () => {
    // One engine thread: each thread has a cache of its own (a connection with another source
    // port may land on another thread, which has not seen the verdict yet).
    const h = fastHarness(() => undefined, 1);
    const { fast, verdicts, done } = h;
    const CLIENT = '127.0.0.2'; // the engine's own upstream connections come from 127.0.0.1: other keys
    const counters = () => ns.spliceCounters!();
    /** Refuses the engine's own upstream connection of a relay (to this listener): the relay ends reset-upstream. */
    const refuseUpstream = async (): Promise<void> => {
      const [up] = await h.takePending(1);
      expect(up![2]).toBe(LOOPBACK); // from the node, not from the client
      verdicts.set([up![0]!, 0, 0, 0]);
      fast.verdicts(verdicts, 1);
    };
    try {
      const gen = fast.invalidate();
      expect(gen).toBeGreaterThan(0);
      // A verdict with the generation: decided as usual, and cached.
      const c1 = await h.connectClient(CLIENT);
      const [r1] = await h.takePending(1);
      expect(r1![13]).toBe(0); // not from the cache: nothing is cached yet
      verdicts.set([r1![0]!, 2, 11, 0]);
      fast.verdicts(verdicts, 1, gen);
      await refuseUpstream();
      expect(await within(c1.closed, 5000, 'the first client to be reset')).toBe('ECONNRESET');
      expect(await h.takeDone()).toBe(1);
      expect([done[0], done[1]]).toEqual([11, 2]);

      // The next connection (another source port) is relayed from the cache: its upstream
      // connection arrives before any verdict. The caller's own verdict (the same action) adopts it.
      const hits0 = counters().cacheHits;
      const c2 = await h.connectClient(CLIENT);
      const [r2, up2] = await h.takePending(2);
      expect(r2![13]).toBe(2);
      const relayId = r2![14]! + r2![15]! * 2 ** 32;
      expect(relayId).toBeGreaterThan(0);
      expect(up2![2]).toBe(LOOPBACK);
      expect(counters().cacheHits).toBe(hits0 + 1);
      verdicts.set([r2![0]!, 2, 12, 0]);
      fast.verdicts(verdicts, 1, gen);
      expect(verdicts[3]).toBe(relayId); // adopted
      verdicts.set([up2![0]!, 0, 0, 0]);
      fast.verdicts(verdicts, 1);
      expect(await within(c2.closed, 5000, 'the second client to be reset')).toBe('ECONNRESET');
      expect(await h.takeDone()).toBe(1);
      expect([done[0], done[1]]).toEqual([12, 2]); // the adopted relay's completion carries the tag

      // A cached connection the caller refuses is aborted: the client is reset, and no
      // completion follows (it was never adopted).
      const c3 = await h.connectClient(CLIENT);
      const [r3] = await h.takePending(1);
      expect(r3![13]).toBe(2);
      verdicts.set([r3![0]!, 0, 0, 0]);
      fast.verdicts(verdicts, 1, gen);
      expect(verdicts[3]).toBe(0);
      expect(await within(c3.closed, 5000, 'the refused cached client to be reset')).toBe('ECONNRESET');
      // Its upstream connection may have been accepted before the abort: refuse it if so.
      const late = new Uint32Array(FAST_PENDING_WORDS * 4);
      let ended = 0;
      for (let i = 0; i < 30; i++) {
        const n = fast.takePending(late);
        for (let k = 0; k < n; k++) {
          verdicts.set([late[k * FAST_PENDING_WORDS]!, 0, 0, 0]);
          fast.verdicts(verdicts, 1);
        }
        ended += fast.takeDone(done);
        await new Promise((r) => setTimeout(r, 10));
      }
      expect(ended).toBe(0); // never adopted: no completion

      // A cached relay that is over before the caller's verdict (its upstream refused here) is
      // adopted all the same, and its completion follows with the caller's tag: the caller
      // counts its bytes and how it ended like any other relay's.
      const c5 = await h.connectClient(CLIENT);
      const [r5, up5] = await h.takePending(2);
      expect(r5![13]).toBe(2);
      const relayId5 = r5![14]! + r5![15]! * 2 ** 32;
      expect(up5![2]).toBe(LOOPBACK);
      verdicts.set([up5![0]!, 0, 0, 0]);
      fast.verdicts(verdicts, 1);
      expect(await within(c5.closed, 5000, 'the fifth client to be reset')).toBe('ECONNRESET');
      expect(fast.takeDone(done)).toBe(0); // nothing yet: the relay has no tag to report under
      verdicts.set([r5![0]!, 2, 15, 0]);
      fast.verdicts(verdicts, 1, gen);
      expect(verdicts[3]).toBe(relayId5);
      expect(await h.takeDone()).toBe(1);
      expect([done[0], done[1]]).toEqual([15, 2]); // reset-upstream
      expect(fast.abort(relayId5)).toBe(false);

      // After invalidate(), the same connection goes to the caller again.
      fast.invalidate();
      const c4 = await h.connectClient(CLIENT);
      const [r4] = await h.takePending(1);
      expect(r4![13]).toBe(0);
      verdicts.set([r4![0]!, 0, 0, 0]);
      fast.verdicts(verdicts, 1);
      expect(await within(c4.closed, 5000, 'the fourth client to be reset')).toBe('ECONNRESET');
    } finally {
      fast.closeListener(h.id);
    }
  });

  it.skipIf(!!skipReason).each([
    [4, '127.0.0.2', '127.0.0.1'],
    [6, '::1', '::1'],
  ] as const)('UDP sendUdpRaw (IPv%i): the datagram arrives from the given address and port, payload intact (the kernel drops a bad checksum)', async (family, from, to) => {
    const got: [string, string, number][] = [];
    const sock = dgram.createSocket(family === 4 ? 'udp4' : 'udp6');
    cleanup.push(() => sock.close());
    sock.on('message', (m, r) => got.push([m.toString('hex'), r.address, r.port]));
    await new Promise<void>((r) => sock.bind(0, to, () => r()));
    const port = sock.address().port;
    // Odd and even lengths (the checksum's last byte), an empty payload.
    const payloads = [Buffer.from('hello raw'), Buffer.from('even'), Buffer.alloc(0), Buffer.from(Array.from({ length: 1401 }, (_, i) => i & 0xff))];
    for (const p of payloads) expect(ns.sendUdpRaw!(family, from, 5353, to, port, p)).toBe(true);
    await within(
      (async () => {
        while (got.length < payloads.length) await new Promise((r) => setTimeout(r, 5));
      })(),
      5000,
      'the raw datagrams',
    );
    expect(got).toEqual(payloads.map((p) => [p.toString('hex'), from, 5353]));
    expect(() => ns.sendUdpRaw!(family, 'nope', 1, to, port, Buffer.alloc(1))).toThrow(TypeError);
  });

  it.skipIf(!!skipReason)('UDP: recvmsg with recvOrigDst on a plain bound socket reports its own address; send, connect, counters, close', async () => {
    const got: [string, string, number, string, number][] = [];
    const listener = ns.openUdp({ family: 4, address: '127.0.0.1', port: 0, transparent: true, recvOrigDst: true }, (msg, sa, sp, da, dp) => {
      got.push([msg.toString(), sa, sp, da, dp]);
      listener.send(Buffer.from(`re:${msg.toString()}`), sa, sp);
    });
    cleanup.push(() => listener.close());
    expect(listener.fd).toBeGreaterThan(2);
    expect(listener.localAddress).toBe('127.0.0.1');
    const replies: string[] = [];
    const client = ns.openUdp({ family: 4, address: '127.0.0.1', port: 0, transparent: false, recvOrigDst: false, reuse: true }, (msg, sa, sp, da, dp) => {
      replies.push(`${msg.toString()} from ${sa}:${sp} to ${da}:${dp}`);
    });
    cleanup.push(() => client.close());
    expect(client.send(Buffer.from('one'), '127.0.0.1', listener.localPort)).toBe(true);
    client.connect('127.0.0.1', listener.localPort);
    expect(client.send(new Uint8Array(Buffer.from('two')))).toBe(true);
    await within(
      (async () => {
        while (replies.length < 2) await new Promise((r) => setTimeout(r, 5));
      })(),
      5000,
      'UDP replies',
    );
    expect(got).toEqual([
      ['one', '127.0.0.1', client.localPort, '127.0.0.1', listener.localPort],
      ['two', '127.0.0.1', client.localPort, '127.0.0.1', listener.localPort],
    ]);
    expect(replies).toEqual([
      `re:one from 127.0.0.1:${listener.localPort} to 127.0.0.1:${client.localPort}`,
      `re:two from 127.0.0.1:${listener.localPort} to 127.0.0.1:${client.localPort}`,
    ]);
    expect(listener.counters()).toMatchObject({ received: 2, sent: 2, dropped: 0, truncated: 0 });
    expect(client.counters()).toMatchObject({ received: 2, sent: 2 });
    // several sockets on one address:port with reuse
    const twin = ns.openUdp({ family: 4, address: '127.0.0.1', port: client.localPort, transparent: false, recvOrigDst: false, reuse: true }, () => {});
    cleanup.push(() => twin.close());
    expect(twin.localPort).toBe(client.localPort);
    client.close();
    client.close();
    expect(client.fd).toBe(-1);
    let err: NativeError | undefined;
    try {
      client.send(Buffer.from('late'), '127.0.0.1', 9);
    } catch (e) {
      err = e as NativeError;
    }
    expect(err?.code).toBe('EBADF');
    expect(err?.message).toMatch(/^UdpHandle\.send: /);
  });

  it.skipIf(!!skipReason)('udpOpen errors carry code and the call: EADDRNOTAVAIL for a foreign address without transparent', () => {
    let err: NativeError | undefined;
    try {
      ns.openUdp({ family: 4, address: '198.18.200.1', port: 0, transparent: false, recvOrigDst: false }, () => {});
    } catch (e) {
      err = e as NativeError;
    }
    expect(err?.code).toBe('EADDRNOTAVAIL');
    expect(err?.syscall).toBe('bind');
    expect(err?.message).toMatch(/^udpOpen: bind failed: EADDRNOTAVAIL .*198\.18\.200\.1/);
  });
});

// ------------------------------------------------------------------------------------------------
// Network namespaces: A runs the data plane side (a child process `ip netns exec A node`), B is a
// client host joined to A by a veth pair.
//
//   B: vb 198.18.1.2/24, default via 198.18.1.1 (not forwarding: what it is sent for others is
//      dropped without an answer)
//   A: va 198.18.1.1/24; lo 198.18.0.2/32 + 2001:2::2/128 (local servers); 198.18.9.0/24 via B
//      (a black hole); the foreign sources 198.18.7.0/24 and 2001:2:7::/64 routed out of va;
//      fwmark 1 -> table 100 (local 0.0.0.0/0 and ::/0 dev lo);
//      nft: prerouting: socket transparent -> mark 1; 198.18.5.5 TCP -> TPROXY 0.0.0.0:15001,
//      198.18.5.5 UDP 5353 -> TPROXY 127.0.0.1:15353; output (route): replies to the foreign
//      sources 198.18.7.0/24, 2001:2:7::/64 and to 198.18.1.2 from UDP 7002 get mark 1, so they
//      are delivered locally to the transparent sockets (a reply from another host would come in
//      through prerouting).

const RULESET = `
table inet npd_native_test {
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto { tcp, udp } socket transparent 1 meta mark set 1 accept
    ip daddr 198.18.5.5 meta l4proto tcp tproxy ip to :15001 meta mark set 1 accept
    ip daddr 198.18.5.5 udp dport 5353 tproxy ip to 127.0.0.1:15353 meta mark set 1 accept
  }
  chain output {
    type route hook output priority mangle; policy accept;
    ip daddr 198.18.7.0/24 meta mark set 1
    ip6 daddr 2001:2:7::/64 meta mark set 1
    ip daddr 198.18.1.2 udp sport 7002 meta mark set 1
  }
}
`;

// Runs in A. Prints one JSON object: { name: { ok, value } | { ok: false, error, code } }.
const SCRIPT_A = String.raw`
import net from 'node:net';
import dgram from 'node:dgram';
import { execFile } from 'node:child_process';
import { loadNativeSockets } from './src/dataplane/native.js';

const [nsB, scriptB] = process.argv.slice(2);
const ns = loadNativeSockets();
const out = {};
const within = (p, ms, what) => new Promise((res, rej) => {
  const t = setTimeout(() => rej(new Error('timed out: ' + what)), ms);
  p.then((v) => { clearTimeout(t); res(v); }, (e) => { clearTimeout(t); rej(e); });
});
async function check(name, fn) {
  try { out[name] = { ok: true, value: await within(fn(), 8000, name) }; }
  catch (e) { out[name] = { ok: false, error: String(e && e.stack || e), code: e && e.code }; }
}
const readAll = (s) => new Promise((res, rej) => { let t = ''; s.setEncoding('utf8'); s.on('data', (d) => t += d); s.once('end', () => res(t)); s.once('error', rej); });
const listen = (server, port, host) => new Promise((res, rej) => { server.once('error', rej); server.listen(port, host, res); });
const inB = (...args) => new Promise((res) => execFile('ip', ['netns', 'exec', nsB, process.execPath, scriptB, ...args], { timeout: 6000 }, (err, stdout, stderr) => res(err ? { error: String(err) + stderr } : JSON.parse(stdout))));

async function transparentConnect(family, server, src, dst) {
  const seen = new Promise((res) => server.once('connection', (s) => { res(s.remoteAddress + ' ' + s.remotePort); s.end('hello'); }));
  const sock = await ns.connectTransparentTcp({ family, srcAddress: src, srcPort: 40007, dstAddress: dst, dstPort: 7001, mark: 1, timeoutMs: 3000 });
  const local = sock.localAddress + ' ' + sock.localPort;
  const data = await readAll(sock);
  return { serverSaw: await seen, local, data };
}

await check('tcp4Foreign', async () => {
  const server = net.createServer();
  await listen(server, 7001, '198.18.0.2');
  try { return await transparentConnect(4, server, '198.18.7.7', '198.18.0.2'); } finally { server.close(); }
});

await check('tcp6Foreign', async () => {
  const server = net.createServer();
  await listen(server, 7001, '2001:2::2');
  try { return await transparentConnect(6, server, '2001:2:7::7', '2001:2::2'); } finally { server.close(); }
});

await check('tcpRefused', async () => {
  try { await ns.connectTransparentTcp({ family: 4, srcAddress: '198.18.7.7', srcPort: 0, dstAddress: '198.18.0.2', dstPort: 7999, timeoutMs: 3000 }); return 'connected?'; }
  catch (e) { return { code: e.code, errno: e.errno, syscall: e.syscall, message: e.message }; }
});

await check('tcpTimeout', async () => {
  let ticks = 0;
  const tick = setInterval(() => ticks++, 10);
  const t0 = Date.now();
  try { await ns.connectTransparentTcp({ family: 4, srcAddress: '198.18.7.7', srcPort: 0, dstAddress: '198.18.9.9', dstPort: 7, timeoutMs: 300 }); return 'connected?'; }
  catch (e) { return { code: e.code, elapsed: Date.now() - t0, ticks }; }
  finally { clearInterval(tick); }
});

await check('tcpV6Only', async () => {
  const flows = [];
  const l = await ns.listenTransparentTcp({ family: 6, address: '::', port: 7100 }, (s, f) => { flows.push(f); s.end(); });
  try {
    const v4 = await new Promise((res) => { const c = net.connect(7100, '198.18.0.2'); c.on('connect', () => { c.destroy(); res('connected'); }); c.on('error', (e) => res(e.code)); });
    const c6 = net.connect(7100, '2001:2::2');
    await readAll(c6);
    return { v4, flows, address: l.address, port: l.port };
  } finally { l.server.close(); }
});

await check('tcpTproxy', async () => {
  let flow;
  const l = await ns.listenTransparentTcp({ family: 4, address: '0.0.0.0', port: 15001 }, (s, f) => { flow = { ...f, local: s.localAddress + ':' + s.localPort }; s.end('served by the data plane'); });
  try { const client = await inB('tcp', '198.18.5.5', '80'); return { flow, client }; } finally { l.server.close(); }
});

await check('udpTproxy', async () => {
  const seen = { listener: [], upstream: [], server: [] };
  const server = dgram.createSocket('udp4');
  server.on('message', (m, r) => { seen.server.push(m.toString() + ' from ' + r.address + ':' + r.port); server.send('echo:' + m, r.port, r.address); });
  await new Promise((res) => server.bind(7002, '198.18.0.2', res));
  const handles = [];
  const listener = ns.openUdp({ family: 4, address: '127.0.0.1', port: 15353, transparent: true, recvOrigDst: true }, (msg, sa, sp, da, dp) => {
    seen.listener.push([msg.toString(), sa, sp, da, dp]);
    // reply socket: FROM the original destination
    const reply = ns.openUdp({ family: 4, address: da, port: dp, transparent: true, recvOrigDst: false, reuse: true }, () => {});
    // a second one on the same foreign address:port, as several flows would
    const twin = ns.openUdp({ family: 4, address: da, port: dp, transparent: true, recvOrigDst: false, reuse: true }, () => {});
    // upstream socket: FROM the client's address:port, marked
    const up = ns.openUdp({ family: 4, address: sa, port: sp, transparent: true, recvOrigDst: true, mark: 1, reuse: true }, (m, a, p, d, q) => {
      seen.upstream.push([m.toString(), a, p, d, q]);
      reply.send(Buffer.from('pong:' + m), sa, sp);
    });
    up.connect('198.18.0.2', 7002);
    up.send(msg);
    handles.push(reply, twin, up);
  });
  handles.push(listener);
  try {
    const client = await inB('udp', '198.18.5.5', '5353');
    return { ...seen, client, counters: listener.counters() };
  } finally { for (const h of handles) h.close(); server.close(); }
});

// Last (it narrows this namespace's ephemeral ports): with srcPort 0 and avoidPort, the kernel's
// pick is never that port; without avoidPort it is, now and then (8 ports, 4 held at a time).
await check('tcpAvoidPort', async () => {
  await new Promise((res, rej) => execFile('sysctl', ['-qw', 'net.ipv4.ip_local_port_range=40100 40107'], (e) => (e ? rej(e) : res())));
  const server = net.createServer((s) => { s.on('error', () => {}); s.resume(); });
  await listen(server, 7002, '198.18.0.2');
  const picked = { avoid: [], plain: [] };
  try {
    for (const mode of ['plain', 'avoid']) {
      for (let t = 0; t < 6; t++) {
        const held = [];
        for (let i = 0; i < 4; i++) {
          const s = await ns.connectTransparentTcp({ family: 4, srcAddress: '198.18.7.7', srcPort: 0, ...(mode === 'avoid' ? { avoidPort: 40100 } : {}), dstAddress: '198.18.0.2', dstPort: 7002, mark: 1, timeoutMs: 3000 });
          picked[mode].push(s.localPort);
          held.push(s);
        }
        for (const s of held) s.resetAndDestroy();
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  } finally { server.close(); }
  return picked;
});

console.log(JSON.stringify(out));
process.exit(0);
`;

// Runs in B: a plain client. tcp: connect and read everything; udp: send 'ping', wait for one reply.
const SCRIPT_B = String.raw`
import net from 'node:net';
import dgram from 'node:dgram';
const [mode, host, port] = process.argv.slice(2);
const done = (v) => { console.log(JSON.stringify(v)); process.exit(0); };
setTimeout(() => done({ error: 'timeout' }), 4000).unref();
if (mode === 'tcp') {
  const c = net.connect(Number(port), host);
  let t = '';
  c.setEncoding('utf8');
  c.on('connect', () => { t += ''; });
  c.on('data', (d) => t += d);
  c.on('end', () => done({ local: c.localAddress + ':' + c.localPort, remote: c.remoteAddress + ':' + c.remotePort, data: t }));
  c.on('error', (e) => done({ error: e.code }));
} else {
  const s = dgram.createSocket('udp4');
  s.on('message', (m, r) => done({ reply: m.toString(), from: r.address + ':' + r.port, local: '198.18.1.2:' + s.address().port }));
  s.bind(40053, '198.18.1.2', () => s.send('ping', Number(port), host));
}
`;

interface Check {
  ok: boolean;
  value?: unknown;
  error?: string;
  code?: string;
}

describe(title('native addon in network namespaces (as root)', skipNetnsReason), () => {
  const tag = Math.random().toString(16).slice(2, 8);
  const nsA = `npd-native-${tag}-a`;
  const nsB = `npd-native-${tag}-b`;
  const tmp = mkdtempSync(join(tmpdir(), 'npd-native-ns-'));
  let results: Record<string, Check> = {};
  let runError = '';

  beforeAll(async () => {
    if (skipNetnsReason) return;
    must('ip', ['netns', 'add', nsA]);
    must('ip', ['netns', 'add', nsB]);
    const inA = (...args: string[]): void => must('ip', ['-n', nsA, ...args]);
    const inB = (...args: string[]): void => must('ip', ['-n', nsB, ...args]);
    inA('link', 'set', 'lo', 'up');
    inB('link', 'set', 'lo', 'up');
    inA('link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb', 'netns', nsB);
    inA('addr', 'add', '198.18.1.1/24', 'dev', 'va');
    inA('link', 'set', 'va', 'up');
    inB('addr', 'add', '198.18.1.2/24', 'dev', 'vb');
    inB('link', 'set', 'vb', 'up');
    inB('route', 'add', 'default', 'via', '198.18.1.1');
    inA('addr', 'add', '198.18.0.2/32', 'dev', 'lo');
    inA('-6', 'addr', 'add', '2001:2::2/128', 'dev', 'lo', 'nodad');
    inA('route', 'add', '198.18.9.0/24', 'via', '198.18.1.2');
    inA('route', 'add', '198.18.7.0/24', 'dev', 'va');
    inA('-6', 'route', 'add', '2001:2:7::/64', 'dev', 'va');
    inA('rule', 'add', 'fwmark', '1', 'lookup', '100');
    inA('route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '100');
    inA('-6', 'rule', 'add', 'fwmark', '1', 'lookup', '100');
    inA('-6', 'route', 'add', 'local', '::/0', 'dev', 'lo', 'table', '100');
    must('ip', ['netns', 'exec', nsA, 'nft', '-f', '-'], RULESET);

    const pkg = join(tmp, 'pkg');
    mkdirSync(pkg);
    childPackage(pkg, true);
    writeFileSync(join(pkg, 'a.mjs'), SCRIPT_A);
    writeFileSync(join(pkg, 'b.mjs'), SCRIPT_B);
    const r = await run('ip', ['netns', 'exec', nsA, process.execPath, join(pkg, 'a.mjs'), nsB, join(pkg, 'b.mjs')], 90_000);
    if (r.code !== 0) runError = `script in ${nsA} exited ${r.code}: ${r.stderr}`;
    else results = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, Check>;
  }, 120_000);

  afterAll(() => {
    // Deleting the namespaces removes their links, addresses, rules, routes and nft tables.
    spawnSync('ip', ['netns', 'del', nsA], { timeout: 10_000 });
    spawnSync('ip', ['netns', 'del', nsB], { timeout: 10_000 });
    rmSync(tmp, { recursive: true, force: true });
  });

  const value = (name: string): any => {
    expect(runError).toBe('');
    const c = results[name];
    expect(c, `no result for ${name}`).toBeDefined();
    expect(c!.error, name).toBeUndefined();
    return c!.value;
  };

  it.skipIf(!!skipNetnsReason)('tcpConnect from a foreign IPv4 source: the server sees 198.18.7.7', () => {
    const v = value('tcp4Foreign');
    expect(v.serverSaw).toBe('198.18.7.7 40007');
    expect(v.local).toBe('198.18.7.7 40007');
    expect(v.data).toBe('hello');
  });

  it.skipIf(!!skipNetnsReason)('tcpConnect from a foreign IPv6 source: the server sees 2001:2:7::7', () => {
    const v = value('tcp6Foreign');
    expect(v.serverSaw).toBe('2001:2:7::7 40007');
    expect(v.data).toBe('hello');
  });

  it.skipIf(!!skipNetnsReason)('tcpConnect with srcPort 0 and avoidPort never takes that port (the client\'s own: one conntrack entry for two legs); without avoidPort the kernel does take it', () => {
    const v = value('tcpAvoidPort') as { avoid: number[]; plain: number[] };
    expect(v.avoid).toHaveLength(24);
    expect(v.avoid.every((p) => p >= 40101 && p <= 40107)).toBe(true);
    // The control: the same load without avoidPort uses the port (so the check above can fail).
    expect(v.plain).toContain(40100);
  });

  it.skipIf(!!skipNetnsReason)('a refused transparent connect is ECONNREFUSED', () => {
    expect(value('tcpRefused')).toMatchObject({ code: 'ECONNREFUSED', errno: -111, syscall: 'connect' });
  });

  it.skipIf(!!skipNetnsReason)('a connect that gets no answer is ETIMEDOUT after timeoutMs, without blocking the event loop', () => {
    const v = value('tcpTimeout');
    expect(v.code).toBe('ETIMEDOUT');
    expect(v.elapsed).toBeGreaterThanOrEqual(280);
    expect(v.elapsed).toBeLessThan(3000);
    expect(v.ticks).toBeGreaterThan(5);
  });

  it.skipIf(!!skipNetnsReason)('an IPv6 listener is IPv6-only (an IPv4 connect to its port is refused)', () => {
    const v = value('tcpV6Only');
    expect(v.v4).toBe('ECONNREFUSED');
    expect(v.address).toBe('::');
    expect(v.port).toBe(7100);
    expect(v.flows).toHaveLength(1);
    expect(v.flows[0]).toMatchObject({ family: 6, srcAddress: '2001:2::2', dstAddress: '2001:2::2', dstPort: 7100 });
  });

  it.skipIf(!!skipNetnsReason)('under TCP TPROXY, an accepted socket has the original destination as its local address', () => {
    const v = value('tcpTproxy');
    expect(v.client).toMatchObject({ remote: '198.18.5.5:80', data: 'served by the data plane' });
    const [, clientPort] = (v.client.local as string).split(':');
    expect(v.flow).toEqual({ family: 4, srcAddress: '198.18.1.2', srcPort: Number(clientPort), dstAddress: '198.18.5.5', dstPort: 80, local: '198.18.5.5:80' });
  });

  it.skipIf(!!skipNetnsReason)('UDP TPROXY: recvOrigDst gives the original destination; replies go out from it, upstream from the client address', () => {
    const v = value('udpTproxy');
    expect(v.listener).toEqual([['ping', '198.18.1.2', 40053, '198.18.5.5', 5353]]);
    expect(v.server).toEqual(['ping from 198.18.1.2:40053']);
    expect(v.upstream).toEqual([['echo:ping', '198.18.0.2', 7002, '198.18.1.2', 40053]]);
    expect(v.client).toEqual({ reply: 'pong:echo:ping', from: '198.18.5.5:5353', local: '198.18.1.2:40053' });
    expect(v.counters).toMatchObject({ received: 1, dropped: 0 });
  });
});

// ------------------------------------------------------------------------------------------------

describe('FakeNativeSockets (no root)', () => {
  let fake: FakeNativeSockets;
  afterEach(async () => {
    await fake.close();
  });

  it('TCP: a redirected client reaches the listener with its flow; a transparent connect reaches the server from the client address', async () => {
    fake = new FakeNativeSockets();
    const serverSaw: string[] = [];
    await fake.serveTcp({ address: '198.18.1.20', port: 8080 }, (s, flow) => {
      serverSaw.push(`${flow.srcAddress}:${flow.srcPort} -> ${flow.dstAddress}:${flow.dstPort}`);
      s.end('from backend');
    });
    const flows: unknown[] = [];
    // A miniature data plane: accept, connect upstream from the client's address, relay.
    const listener = await fake.listenTransparentTcp({ family: 4, address: '0.0.0.0', port: 15001 }, (client, flow) => {
      flows.push(flow);
      void fake
        .connectTransparentTcp({ family: flow.family, srcAddress: flow.srcAddress, srcPort: flow.srcPort, dstAddress: flow.dstAddress, dstPort: flow.dstPort, mark: 1 })
        .then((up) => {
          up.pipe(client);
          client.pipe(up);
        });
    });
    fake.redirectTcp(listener);
    const client = await fake.clientTcp({ srcAddress: '198.18.3.10', srcPort: 40000, dstAddress: '198.18.1.20', dstPort: 8080 });
    expect(await within(readAll(client), 5000, 'relay')).toBe('from backend');
    expect(flows).toEqual([{ family: 4, srcAddress: '198.18.3.10', srcPort: 40000, dstAddress: '198.18.1.20', dstPort: 8080 }]);
    expect(serverSaw).toEqual(['198.18.3.10:40000 -> 198.18.1.20:8080']);
    expect(fake.tcpConnects).toEqual([
      { family: 4, srcAddress: '198.18.3.10', srcPort: 40000, dstAddress: '198.18.1.20', dstPort: 8080, mark: 1 },
    ]);
  });

  it('TCP errors: ECONNREFUSED where nobody listens, ETIMEDOUT into a black hole, TypeError for bad arguments', async () => {
    fake = new FakeNativeSockets();
    const base = { family: 4 as const, srcAddress: '198.18.3.10', srcPort: 0, dstAddress: '198.18.1.21', dstPort: 80 };
    await expect(fake.connectTransparentTcp(base)).rejects.toMatchObject({ code: 'ECONNREFUSED', errno: -111, syscall: 'connect' });
    fake.blackholeTcp('198.18.1.22', 80);
    await expect(fake.connectTransparentTcp({ ...base, dstAddress: '198.18.1.22', timeoutMs: 50 })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    await expect(fake.connectTransparentTcp({ ...base, family: 5 as 4 })).rejects.toBeInstanceOf(TypeError);
    await expect(fake.connectTransparentTcp({ ...base, dstAddress: '::1' })).rejects.toBeInstanceOf(TypeError);
    await expect(fake.clientTcp({ srcAddress: '198.18.3.10', srcPort: 1, dstAddress: '198.18.1.21', dstPort: 80 })).rejects.toMatchObject({
      code: 'ECONNREFUSED',
    });
  });

  it('UDP: TPROXY to a listener with the original destination; upstream from the client address; the reply from the original destination', async () => {
    fake = new FakeNativeSockets();
    const handles: UdpHandle[] = [];
    const server: UdpHandle = fake.endpointUdp({ address: '198.18.1.20', port: 53 }, (msg, sa, sp) => {
      server.send(Buffer.from(`answer:${msg.toString()}`), sa, sp);
    });
    const seen: unknown[] = [];
    const listener = fake.openUdp({ family: 4, address: '0.0.0.0', port: 15353, transparent: true, recvOrigDst: true }, (msg, sa, sp, da, dp) => {
      seen.push(['listener', msg.toString(), sa, sp, da, dp]);
      const reply = fake.openUdp({ family: 4, address: da, port: dp, transparent: true, recvOrigDst: false, reuse: true }, () => {});
      const up = fake.openUdp({ family: 4, address: sa, port: sp, transparent: true, recvOrigDst: true, reuse: true, mark: 1 }, (m, a, p, d, q) => {
        seen.push(['upstream', m.toString(), a, p, d, q]);
        reply.send(m, sa, sp);
      });
      up.connect(da, dp);
      up.send(msg);
      handles.push(reply, up);
    });
    fake.redirectUdp(listener);
    const answers: string[] = [];
    const client = fake.endpointUdp({ address: '198.18.3.10', port: 40000 }, (msg, sa, sp, da, dp) => answers.push(`${msg.toString()} ${sa}:${sp} -> ${da}:${dp}`));
    client.send(Buffer.from('query'), '198.18.1.20', 53);
    await within(
      (async () => {
        while (answers.length === 0) await new Promise((r) => setTimeout(r, 5));
      })(),
      5000,
      'answer',
    );
    expect(seen).toEqual([
      ['listener', 'query', '198.18.3.10', 40000, '198.18.1.20', 53],
      ['upstream', 'answer:query', '198.18.1.20', 53, '198.18.3.10', 40000],
    ]);
    expect(answers).toEqual(['answer:query 198.18.1.20:53 -> 198.18.3.10:40000']);
    expect(fake.udpOpens.map((o) => o.address)).toEqual(['0.0.0.0', '198.18.1.20', '198.18.3.10']);
    expect(listener.counters()).toMatchObject({ received: 1, sent: 0 });
    expect(listener.fd).toBe(-1);
    listener.close();
    listener.close();
    expect(() => listener.send(Buffer.from('x'), '198.18.3.10', 1)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => client.send('x' as unknown as Buffer, '198.18.1.20', 53)).toThrow(TypeError);
    expect(() => fake.openUdp({ family: 4, address: '::', port: 0, transparent: false, recvOrigDst: false }, () => {})).toThrow(TypeError);
  });
});
