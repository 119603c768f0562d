// Building and running bench/c/loadgen.c: compiled with the system C compiler on first use (and
// again when the source is newer) into bench/build/loadgen (gitignored), then run inside lab
// namespaces with `ip netns exec`. Every run is bounded by a timeout.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot, which } from '../src/lab/sys.js';

export function loadgenBinary(): string {
  return cBinary('loadgen');
}

/** bench/c/NAME.c */
function cSource(name: string): string {
  return join(packageRoot(), 'bench', 'c', `${name}.c`);
}

/** bench/build/NAME (gitignored) */
export function cBinary(name: string): string {
  return join(packageRoot(), 'bench', 'build', name);
}

/** The C compiler used (`cc`, else `gcc`, else `clang`), or undefined. */
export function cCompiler(): string | undefined {
  return which('cc') ?? which('gcc') ?? which('clang');
}

/** Compiles the load generator when missing or older than its source; returns its path. */
export function ensureLoadgen(log: (t: string) => void = () => undefined): string {
  return ensureCProgram('loadgen', log);
}

/** Compiles bench/c/NAME.c into bench/build/NAME when missing or older than its source; returns its path. */
export function ensureCProgram(name: string, log: (t: string) => void = () => undefined): string {
  const src = cSource(name);
  const bin = cBinary(name);
  if (existsSync(bin) && statSync(bin).mtimeMs >= statSync(src).mtimeMs) return bin;
  const cc = cCompiler();
  if (!cc) throw new Error(`the benchmark needs a C compiler (cc, gcc or clang) to build bench/c/${name}.c`);
  mkdirSync(join(packageRoot(), 'bench', 'build'), { recursive: true });
  // Built under a private name, then renamed: two benchmarks starting at once never run a half-written binary.
  const tmp = `${bin}.${process.pid}.tmp`;
  log(`building ${bin} with ${cc}`);
  try {
    execFileSync(cc, ['-O2', '-Wall', '-Wextra', '-o', tmp, src, '-lm'], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
    renameSync(tmp, bin);
  } catch (e) {
    rmSync(tmp, { force: true });
    const err = e as { stderr?: Buffer; message?: string };
    throw new Error(`building bench/c/${name}.c failed: ${err.stderr?.toString().trim() || err.message}`);
  }
  return bin;
}

// ---------------------------------------------------------------------------------------------
// result shapes (see bench/c/loadgen.c)

/** [upper bound in microseconds, count] per non-empty bucket (8 per octave). */
export type Hist = [number, number][];

export interface CpuTicks {
  ticksPerSec: number;
  user: number;
  nice: number;
  system: number;
  idle: number;
  iowait: number;
  irq: number;
  softirq: number;
  steal: number;
  pids: Record<string, { utime: number; stime: number }>;
}

interface TcpCounts {
  ok: number;
  started: number;
  errors: number;
  timeouts: number;
  errorKinds: Record<string, number>;
}

export interface RateOut extends TcpCounts {
  mode: 'rate';
  connPerSec: number;
  lateOk: number;
  txnP50Us: number;
  txnP99Us: number;
  txnHist: Hist;
}

export interface LatencyOut extends TcpCounts {
  mode: 'latency';
  skipped: number;
  connectP50Us: number;
  connectP90Us: number;
  connectP99Us: number;
  connectMaxUs: number;
  firstReplyP50Us: number;
  firstReplyP90Us: number;
  firstReplyP99Us: number;
  firstReplyMaxUs: number;
  connectHist: Hist;
  firstReplyHist: Hist;
}

export interface StreamOut {
  mode: 'stream';
  selfPid: number;
  streams: number;
  durationS: number;
  bytes: number;
  gbps: number;
  errors: number;
  perStreamBytes: number[];
  cpu: CpuTicks;
}

export interface UdpFlowsOut {
  mode: 'udpflows';
  udpFlowsPerSec: number;
  ok: number;
  started: number;
  timeouts: number;
  errors: number;
  bindFailures: number;
  exhausted: boolean;
  p50Us: number;
  p99Us: number;
  hist: Hist;
}

export interface UdpDgramOut {
  mode: 'udpdgram';
  selfPid: number;
  udpDgramsPerSec: number;
  received: number;
  sent: number;
  refills: number;
  errors: number;
  durationS: number;
  cpu: CpuTicks;
}

// ---------------------------------------------------------------------------------------------
// running

const running = new Set<ChildProcess>();

/** Sends SIGTERM to every load generator process this module started that still runs. */
export function stopAllLoadgens(): void {
  for (const c of running) c.kill('SIGTERM');
}

/**
 * Runs `loadgen ARGS...` in network namespace `netns` and returns its JSON result (the last line
 * of its stdout). Killed (SIGKILL) after `timeoutMs`.
 */
export function runLoadgen<T>(netns: string, args: readonly string[], timeoutMs: number): Promise<T> {
  const bin = loadgenBinary();
  return new Promise((resolve, reject) => {
    const child = spawn(which('ip') ?? 'ip', ['netns', 'exec', netns, bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      if (out.length < 4 << 20) out += d;
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      if (err.length < 64 << 10) err += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      running.delete(child);
      reject(new Error(`loadgen ${args[0]}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      running.delete(child);
      const last = out.trim().split('\n').pop() ?? '';
      if (code !== 0 || last === '') {
        return reject(new Error(`loadgen ${args.join(' ')} in ${netns}: ${signal ? `killed (${signal})` : `exit ${code}`}: ${err.trim() || last || '(no output)'}`));
      }
      try {
        resolve(JSON.parse(last) as T);
      } catch {
        reject(new Error(`loadgen ${args[0]}: not JSON: ${last.slice(0, 200)}`));
      }
    });
  });
}

/** A long-running bench process (the load generator's server, the yardstick relay). */
export interface LoadgenServer {
  readonly pid: number;
  stop(): Promise<void>;
}

/** Starts `loadgen server ARGS...` in `netns` and waits for its ready line (10 s at most). */
export function startLoadgenServer(netns: string, args: readonly string[], maxSeconds: number): Promise<LoadgenServer> {
  return startReady(netns, loadgenBinary(), ['server', ...args, '--max-seconds', String(Math.ceil(maxSeconds))], 'loadgen server');
}

/**
 * Starts bench/c/relay.c (`mode` splice or sockmap, listening on 127.0.0.1:`port`) in `netns`
 * and waits for its ready line; built by ensureCProgram('relay') beforehand.
 */
export function startRelay(netns: string, mode: 'splice' | 'sockmap', port: number, maxSeconds: number): Promise<LoadgenServer> {
  return startReady(netns, cBinary('relay'), ['--port', String(port), '--mode', mode, '--max-seconds', String(Math.ceil(maxSeconds))], `relay ${mode}`);
}

/**
 * Starts BIN ARGS... in `netns`; resolves once its first stdout line is {"ready":true,"pid":N}
 * (10 s at most). The process exits by itself after its --max-seconds, or on stop() (SIGTERM,
 * SIGKILL after 3 s).
 */
function startReady(netns: string, bin: string, args: readonly string[], label: string): Promise<LoadgenServer> {
  return new Promise((resolve, reject) => {
    const child = spawn(which('ip') ?? 'ip', ['netns', 'exec', netns, bin, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    running.add(child);
    let out = '';
    let err = '';
    let settled = false;
    const exited = new Promise<void>((r) => child.on('close', () => (running.delete(child), r())));
    const stop = async (): Promise<void> => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3_000);
      await exited;
      clearTimeout(t);
    };
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${label} in ${netns}: ${why}${err ? `: ${err.trim()}` : ''}`));
    };
    const timer = setTimeout(() => fail('not ready after 10 s'), 10_000);
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      if (err.length < 64 << 10) err += d;
    });
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      if (settled) return;
      out += d;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      try {
        const ready = JSON.parse(out.slice(0, nl)) as { ready?: boolean; pid?: number };
        if (ready.ready !== true || typeof ready.pid !== 'number') return fail(`unexpected first line ${out.slice(0, nl)}`);
        settled = true;
        clearTimeout(timer);
        resolve({ pid: ready.pid, stop });
      } catch {
        fail(`unexpected first line ${out.slice(0, nl)}`);
      }
    });
    child.on('error', (e) => fail(e.message));
    child.on('close', (code) => fail(`exited (${code})`));
  });
}
