// Runs the real `netpold agent` (bin/netpold.js, built dist/) inside a lab's node namespace and
// follows its JSON log lines. Used by the demo and the end-to-end tests. Every wait is bounded.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
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

  private constructor(readonly proc: ChildProcess) {
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
    this.exited = new Promise((resolve) => proc.on('exit', (code) => resolve((this.exitCode = code))));
  }

  static start(nodeNamespace: string, args: readonly string[]): AgentProcess {
    const root = packageRoot();
    const bin = join(root, 'bin/netpold.js');
    if (!existsSync(join(root, 'dist/src/cli/main.js'))) throw new Error('dist/ is missing: run npm run build');
    const proc = spawn('ip', ['netns', 'exec', nodeNamespace, process.execPath, bin, 'agent', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    return new AgentProcess(proc);
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
