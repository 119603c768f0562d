// Event-loop stall detection for /healthz, by timer drift: a timer due every `intervalMs` that
// fires late measures how long the loop was blocked. The largest lag seen within the last
// `windowMs` (and the lateness of a timer that is overdue right now) is the loop's lag.
export interface LoopMonitorOptions {
  readonly intervalMs?: number;
  readonly windowMs?: number;
  /** Milliseconds, monotonic (tests). */
  readonly now?: () => number;
}

export class LoopMonitor {
  private readonly intervalMs: number;
  private readonly windowMs: number;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private last = Number.NaN;
  /** (time, lag) samples within the window. */
  private samples: { at: number; lag: number }[] = [];

  constructor(o: LoopMonitorOptions = {}) {
    this.intervalMs = o.intervalMs ?? 250;
    this.windowMs = o.windowMs ?? 5000;
    this.now = o.now ?? (() => performance.now());
  }

  start(): void {
    if (this.timer) return;
    this.last = this.now();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One tick: records how late it came (also callable directly, with an injected clock). */
  sample(): void {
    const t = this.now();
    const lag = Number.isNaN(this.last) ? 0 : Math.max(0, t - this.last - this.intervalMs);
    this.last = t;
    this.samples.push({ at: t, lag });
    const from = t - this.windowMs;
    let drop = 0;
    while (drop < this.samples.length && this.samples[drop]!.at < from) drop++;
    if (drop > 0) this.samples = this.samples.slice(drop);
  }

  /** The largest lag within the window, in milliseconds. */
  get lagMs(): number {
    const t = this.now();
    let max = Number.isNaN(this.last) ? 0 : Math.max(0, t - this.last - this.intervalMs);
    const from = t - this.windowMs;
    for (const s of this.samples) if (s.at >= from && s.lag > max) max = s.lag;
    return max;
  }
}
