// Runs the real `netpold agent` (bin/netpold.js, built dist/) inside a lab's node namespace and
// follows its JSON log lines (the log and the flow log share standard output). Used by the demo
// and the end-to-end tests. Every wait is bounded.
//
// Each agent gets its own explain socket in a fresh temporary folder (--agent-socket, unless the
// arguments name one): network namespaces do not separate Unix socket paths, and several lab
// agents may run at once. Its metrics listener is per network namespace (the default
// 127.0.0.1:9464 of the node namespace); get() asks it from inside that namespace.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from './sys.js';

export interface LogRecord {
  level: string;
  msg: string;
  [k: string]: unknown;
}

export class AgentProcess {
  readonly lines: LogRecord[] = [];
  readonly stderr: string[] = [];
  private exitCode: number | null | undefined;
  private readonly exited: Promise<number | null>;

  private constructor(
    readonly proc: ChildProcess,
    readonly nodeNamespace: string,
    /** The agent's explain socket. */
    readonly socketPath: string,
    private readonly tmp: string | undefined,
  ) {
    let buf = '';
    proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          this.lines.push(JSON.parse(line) as LogRecord);
        } catch {
          this.stderr.push(`stdout: ${line}`);
        }
      }
    });
    proc.stderr!.setEncoding('utf8').on('data', (c: string) => this.stderr.push(c));
    this.exited = new Promise((resolve) =>
      proc.on('exit', (code) => {
        if (this.tmp) rmSync(this.tmp, { recursive: true, force: true });
        resolve((this.exitCode = code));
      }),
    );
  }

  static start(nodeNamespace: string, args: readonly string[]): AgentProcess {
    const root = packageRoot();
    const bin = join(root, 'bin/netpold.js');
    if (!existsSync(join(root, 'dist/src/cli/main.js'))) throw new Error('dist/ is missing: run npm run build');
    let tmp: string | undefined;
    let socketPath: string;
    const i = args.indexOf('--agent-socket');
    if (i >= 0 && args[i + 1] !== undefined) {
      socketPath = args[i + 1]!;
    } else {
      tmp = mkdtempSync(join(tmpdir(), 'netpold-agent-'));
      socketPath = join(tmp, 'agent.sock');
      args = [...args, '--agent-socket', socketPath];
    }
    const proc = spawn('ip', ['netns', 'exec', nodeNamespace, process.execPath, bin, 'agent', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    return new AgentProcess(proc, nodeNamespace, socketPath, tmp);
  }

  /** The metrics/health listener, from the agent's `starting` log line (host:port), once it has started. */
  get metricsAddress(): string | undefined {
    const m = this.lines.find((l) => l.msg === 'starting')?.['metrics'];
    return typeof m === 'string' && m !== 'off' ? m : undefined;
  }

  /** GET on the agent's metrics listener (/metrics, /healthz, /readyz), from inside its namespace. */
  async get(path: string, timeoutMs = 10_000): Promise<{ status: number; body: string }> {
    await this.waitFor((l) => l.msg === 'starting', timeoutMs);
    const addr = this.metricsAddress;
    if (addr === undefined) throw new Error('the agent serves no metrics (--metrics-address off)');
    const script = `fetch(${JSON.stringify(`http://${addr}${path}`)}).then(async (r) => { process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })); }, (e) => { process.stdout.write(JSON.stringify({ status: 0, body: String(e) })); });`;
    return new Promise((resolve, reject) => {
      execFile('ip', ['netns', 'exec', this.nodeNamespace, process.execPath, '-e', script], { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
        if (err) return reject(new Error(`GET ${path} failed: ${stderr || err.message}`));
        try {
          resolve(JSON.parse(stdout) as { status: number; body: string });
        } catch {
          reject(new Error(`GET ${path}: unexpected output ${stdout}`));
        }
      });
    });
  }

  /** Resolves with the first log record matching, waiting at most `timeoutMs`. */
  async waitFor(pred: (r: LogRecord) => boolean, timeoutMs = 20_000, from = 0): Promise<LogRecord> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.slice(from).find(pred);
      if (hit) return hit;
      if (this.exitCode !== undefined) throw new Error(`agent exited (${this.exitCode}) before the expected log line; stderr: ${this.stderr.join('')}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for an agent log line; last lines: ${JSON.stringify(this.lines.slice(-5))} stderr: ${this.stderr.join('')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** SIGTERM, then the exit code (SIGKILL after `timeoutMs`). */
  async stop(timeoutMs = 15_000): Promise<number | null> {
    if (this.exitCode !== undefined) return this.exitCode;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}
