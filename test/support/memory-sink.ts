// A flow-log sink in memory for tests.
import type { LineSink } from '../../src/flowlog/writer.js';

/** A flow-log sink in memory: the lines written, parsed; can be blocked (write() false, no drain). */
export class MemorySink implements LineSink {
  readonly lines: Record<string, any>[] = []; // eslint-disable-line @typescript-eslint/no-explicit-any
  blocked = false;
  private waiters: (() => void)[] = [];
  write(text: string): boolean {
    for (const l of text.split('\n')) if (l !== '') this.lines.push(JSON.parse(l));
    return !this.blocked;
  }
  onDrain(cb: () => void): void {
    if (this.blocked) this.waiters.push(cb);
    else queueMicrotask(cb);
  }
  unblock(): void {
    this.blocked = false;
    const w = this.waiters;
    this.waiters = [];
    for (const cb of w) cb();
  }
}
