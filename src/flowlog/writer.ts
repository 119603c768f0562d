// An asynchronous line writer over a file descriptor: the agent's standard output (its log and,
// by default, its flow log) and flow-log files. Writes run on libuv's thread pool (fs.write),
// one at a time and in order, so the event loop — and with it enforcement — never blocks on a
// slow reader, and lines from the logger and the flow log never interleave mid-line.
//
// write() queues and returns false once more than `highWaterBytes` are queued or in flight
// (the flow log then stops handing lines over and drops at its own bound); the logger ignores
// that and is never dropped. A file descriptor in non-blocking mode (EAGAIN) is retried after
// a short pause; other write errors (EPIPE: the reader is gone) drop the data and are counted.
import { closeSync, fsync, write as fsWrite, writeSync } from 'node:fs';

export interface LineSink {
  /** Queues text (whole lines). Returns false when the caller should wait for onDrain. */
  write(text: string): boolean;
  /** Calls `cb` once, when the queue is below the high-water mark again. */
  onDrain(cb: () => void): void;
}

export interface WriterCounters {
  bytesWritten: number;
  writeErrors: number;
  bytesDropped: number;
}

export class AsyncLineWriter implements LineSink {
  readonly counters: WriterCounters = { bytesWritten: 0, writeErrors: 0, bytesDropped: 0 };
  private queue: string[] = [];
  private queuedBytes = 0;
  private inFlightBytes = 0;
  private writing = false;
  private drainWaiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];
  private closed = false;

  constructor(
    readonly fd: number,
    private readonly options: { readonly highWaterBytes?: number; readonly closeFd?: boolean; readonly onError?: (e: NodeJS.ErrnoException) => void } = {},
  ) {}

  private get highWater(): number {
    return this.options.highWaterBytes ?? 1 << 20;
  }

  /** Bytes queued or being written. */
  get pendingBytes(): number {
    return this.queuedBytes + this.inFlightBytes;
  }

  write(text: string): boolean {
    if (this.closed) return true;
    this.queue.push(text);
    this.queuedBytes += text.length;
    if (!this.writing) this.next();
    return this.pendingBytes < this.highWater;
  }

  onDrain(cb: () => void): void {
    if (this.pendingBytes < this.highWater) queueMicrotask(cb);
    else this.drainWaiters.push(cb);
  }

  /** Resolves once everything queued so far has been written (or dropped on error). */
  flush(): Promise<void> {
    if (!this.writing && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Writes whatever is queued synchronously (last resort at exit); best effort. */
  flushSync(): void {
    if (this.writing || this.queue.length === 0) return;
    const buf = Buffer.from(this.queue.join(''));
    this.queue = [];
    this.queuedBytes = 0;
    let off = 0;
    for (let tries = 0; off < buf.length && tries < 1000; tries++) {
      try {
        off += writeSync(this.fd, buf, off, buf.length - off);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') break;
      }
    }
  }

  /** Flushes, then closes the descriptor if the writer owns it. Later writes are ignored. */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    if (this.options.closeFd) {
      await new Promise<void>((r) => fsync(this.fd, () => r()));
      try {
        closeSync(this.fd);
      } catch {
        // already closed
      }
    }
  }

  private next(): void {
    if (this.queue.length === 0) {
      this.writing = false;
      const idle = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of idle) w();
      return;
    }
    this.writing = true;
    const buf = Buffer.from(this.queue.join(''));
    this.inFlightBytes = this.queuedBytes;
    this.queue = [];
    this.queuedBytes = 0;
    this.writeAll(buf, 0);
  }

  private writeAll(buf: Buffer, off: number): void {
    fsWrite(this.fd, buf, off, buf.length - off, null, (err, n) => {
      if (err) {
        if (err.code === 'EAGAIN') {
          setTimeout(() => this.writeAll(buf, off), 5).unref();
          return;
        }
        this.counters.writeErrors++;
        this.counters.bytesDropped += buf.length - off;
        this.options.onError?.(err);
        this.done();
        return;
      }
      this.counters.bytesWritten += n;
      if (off + n < buf.length) {
        this.writeAll(buf, off + n);
        return;
      }
      this.done();
    });
  }

  private done(): void {
    this.inFlightBytes = 0;
    if (this.drainWaiters.length > 0 && this.pendingBytes < this.highWater) {
      const w = this.drainWaiters;
      this.drainWaiters = [];
      for (const cb of w) cb();
    }
    this.next();
  }
}
