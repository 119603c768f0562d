// Shell-outs of the lab: argument arrays only (never a shell string), each with a timeout.
import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { findPackageRoot } from '../package-root.js';
import { environment } from '../config/env.js';
import { NetpoldError } from '../errors.js';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Default 10 s. */
  timeoutMs?: number;
  /** Text written to the command's stdin. */
  input?: string;
  env?: NodeJS.ProcessEnv;
}

const DEFAULT_TIMEOUT_MS = 10_000;

/** Runs a command; never throws for a non-zero exit (code 124 on timeout, 127 when not found). */
export function exec(file: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = execFile(
      file,
      args,
      { timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024, encoding: 'utf8', env: opts.env ?? environment() },
      (err, stdout, stderr) => {
        if (!err) return resolve({ code: 0, stdout, stderr });
        const e = err as NodeJS.ErrnoException & { code?: number | string; killed?: boolean };
        if (e.code === 'ENOENT') return resolve({ code: 127, stdout, stderr: `${file}: command not found` });
        if (e.killed) return resolve({ code: 124, stdout, stderr: `${stderr}${file}: timed out after ${opts.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms` });
        resolve({ code: typeof e.code === 'number' ? e.code : 1, stdout, stderr: stderr || e.message });
      },
    );
    child.stdin?.on('error', () => undefined);
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

/** Runs a command that must succeed; throws an Error naming the command and its stderr. */
export async function run(file: string, args: readonly string[], opts: ExecOptions = {}): Promise<string> {
  const r = await exec(file, args, opts);
  if (r.code !== 0) throw new Error(`\`${[file, ...args].join(' ')}\` failed (exit ${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** `ip ARGS...` that must succeed. */
export function ip(...args: string[]): Promise<string> {
  return run('ip', args);
}

/** `ip -n NS ARGS...` that must succeed. */
export function ipn(netns: string, ...args: string[]): Promise<string> {
  return run('ip', ['-n', netns, ...args]);
}

/** Sets sysctls inside a network namespace (`ip netns exec NS sysctl -q -w k=v...`). */
export function sysctls(netns: string, settings: Readonly<Record<string, string | number>>): Promise<string> {
  return run('ip', ['netns', 'exec', netns, 'sysctl', '-q', '-w', ...Object.entries(settings).map(([k, v]) => `${k}=${v}`)]);
}

/** Names of all network namespaces (`ip netns list`). */
export async function listNetns(): Promise<string[]> {
  const out = await run('ip', ['netns', 'list']);
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');
}

/** Pids of the processes in a network namespace (`ip netns pids NS`); empty if it is gone. */
export async function netnsPids(netns: string): Promise<number[]> {
  const r = await exec('ip', ['netns', 'pids', netns]);
  if (r.code !== 0) return [];
  return r.stdout
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number);
}

/** The absolute path of an executable found in PATH (plus the sbin folders), or undefined. */
export function which(name: string): string | undefined {
  const dirs = [...(environment()['PATH'] ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const d of dirs) {
    if (d === '') continue;
    const p = join(d, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * What the lab needs and is missing: root, `ip` (iproute2), `nft` (nftables, for the agent run
 * inside the lab), `sysctl` (procps). Empty when everything is there.
 */
export function labRequirementsMissing(): string[] {
  const missing: string[] = [];
  if (process.platform !== 'linux') missing.push('Linux');
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) missing.push('root (run as uid 0)');
  if (!which('ip')) missing.push('the `ip` command (iproute2)');
  if (!which('nft')) missing.push('the `nft` command (nftables)');
  if (!which('sysctl')) missing.push('the `sysctl` command (procps)');
  return missing;
}

export function requireLab(): void {
  const missing = labRequirementsMissing();
  if (missing.length > 0) throw new NetpoldError('NETPOLD_E_LAB', `the lab needs ${missing.join(', ')}`);
}

/** The netpold package root (see src/package-root.ts). */
export function packageRoot(): string {
  const root = findPackageRoot();
  if (root === undefined) throw new NetpoldError('NETPOLD_E_LAB', 'cannot find the netpold package root (a package.json named netpold above this module)');
  return root;
}

/** The compiled lab agent script, `dist/src/lab/lab-agent.js` under the package root. */
export function labAgentScript(): string {
  const p = join(packageRoot(), 'dist', 'src', 'lab', 'lab-agent.js');
  if (!existsSync(p)) throw new NetpoldError('NETPOLD_E_LAB', `the lab agent script ${p} is missing: run npm run build`);
  return p;
}

/**
 * Runs `fn` over `items` with at most `limit` in flight; results in input order. After a failure
 * no new item starts; it waits for the ones in flight to settle, then throws the first error.
 */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]!, i);
      } catch (e) {
        failed = true;
        throw e;
      }
    }
  };
  const settled = await Promise.allSettled(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  const bad = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (bad) throw bad.reason;
  return out;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
