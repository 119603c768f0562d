// Pure parsing and arithmetic of the memory benchmark (bench/memory.ts): /proc files, the
// agent's Prometheus text, per-flow figures and trends. No I/O here, so it is unit-tested without
// root (test/bench-memory.test.ts).

/** Fields of /proc/PID/status that the memory benchmark reads, in bytes (kB fields × 1024). */
export interface ProcStatus {
  vmRss: number;
  vmHwm: number;
  rssAnon: number;
  rssFile: number;
  rssShmem: number;
  vmSize: number;
  threads: number;
}

/** /proc/PID/status: `VmRSS:    123456 kB` lines. Missing fields are 0 (a kernel without them). */
export function parseProcStatus(text: string): ProcStatus {
  const kv = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) kv.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  const kb = (k: string): number => {
    const m = /^(\d+)\s*kB$/.exec(kv.get(k) ?? '');
    return m ? Number(m[1]) * 1024 : 0;
  };
  const threads = Number(kv.get('Threads') ?? 0);
  return {
    vmRss: kb('VmRSS'),
    vmHwm: kb('VmHWM'),
    rssAnon: kb('RssAnon'),
    rssFile: kb('RssFile'),
    rssShmem: kb('RssShmem'),
    vmSize: kb('VmSize'),
    threads: Number.isFinite(threads) ? threads : 0,
  };
}

/** The open-files limit of /proc/PID/limits (`Max open files  20000  20000  files`). */
export function parseNofileLimit(text: string): { soft: number; hard: number } | undefined {
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
  if (!m) return undefined;
  const n = (s: string): number => (s === 'unlimited' ? Number.POSITIVE_INFINITY : Number(s));
  return { soft: n(m[1]!), hard: n(m[2]!) };
}

/**
 * /proc/net/sockstat of one network namespace. `inuse` and `tw` are the namespace's own; `alloc`
 * (sockets allocated) and `mem` (pages of socket buffers charged to TCP) are machine-wide
 * counters, whichever namespace they are read in.
 */
export interface Sockstat {
  socketsUsed: number;
  tcpInuse: number;
  tcpOrphan: number;
  tcpTw: number;
  tcpAlloc: number;
  tcpMemPages: number;
  udpInuse: number;
}

export function parseSockstat(text: string): Sockstat {
  const field = (proto: string, key: string): number => {
    const line = text.split('\n').find((l) => l.startsWith(`${proto}:`));
    if (!line) return 0;
    const parts = line.slice(proto.length + 1).trim().split(/\s+/);
    const i = parts.indexOf(key);
    const v = i >= 0 ? Number(parts[i + 1]) : 0;
    return Number.isFinite(v) ? v : 0;
  };
  return {
    socketsUsed: field('sockets', 'used'),
    tcpInuse: field('TCP', 'inuse'),
    tcpOrphan: field('TCP', 'orphan'),
    tcpTw: field('TCP', 'tw'),
    tcpAlloc: field('TCP', 'alloc'),
    tcpMemPages: field('TCP', 'mem'),
    udpInuse: field('UDP', 'inuse'),
  };
}

/** /proc/meminfo fields in bytes (`Slab:  12345 kB`). */
export function parseMeminfo(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^([\w()]+):\s+(\d+)(?:\s+kB)?$/.exec(line.trim());
    if (m) out[m[1]!] = Number(m[2]) * (line.trim().endsWith('kB') ? 1024 : 1);
  }
  return out;
}

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text exposition: one sample per line that is not a comment. */
export function parsePrometheus(text: string): PromSample[] {
  const out: PromSample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    if (m[3]) for (const l of m[3].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    const value = m[4] === '+Inf' ? Number.POSITIVE_INFINITY : m[4] === '-Inf' ? Number.NEGATIVE_INFINITY : Number(m[4]);
    out.push({ name: m[1]!, labels, value });
  }
  return out;
}

/** Sum of the samples named `name` whose labels include `match`; undefined when there is none. */
export function promValue(samples: readonly PromSample[], name: string, match: Record<string, string> = {}): number | undefined {
  let sum: number | undefined;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (Object.entries(match).some(([k, v]) => s.labels[k] !== v)) continue;
    sum = (sum ?? 0) + s.value;
  }
  return sum;
}

/** (at − base) / flows, or 0 with no flows. */
export function perFlow(base: number, at: number, flows: number): number {
  return flows > 0 ? (at - base) / flows : 0;
}

/** Least-squares slope of y over x (0 with fewer than two distinct x). */
export function slope(points: readonly (readonly [number, number])[]): number {
  const n = points.length;
  if (n < 2) return 0;
  let sx = 0;
  let sy = 0;
  for (const [x, y] of points) {
    sx += x;
    sy += y;
  }
  const mx = sx / n;
  const my = sy / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) * (x - mx);
  }
  return den === 0 ? 0 : num / den;
}

/** The median of a few values (the mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return 0;
  const s = [...values].sort((a, b) => a - b);
  const h = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
}

/**
 * How many concurrent flows fit in the agent's open-files limit: what is left of `softLimit`
 * after the fds open now and a reserve, divided by the fds one flow costs (measured).
 */
export function flowsThatFit(softLimit: number, fdsNow: number, fdsPerFlow: number, reserve: number): number {
  if (!Number.isFinite(softLimit)) return Number.MAX_SAFE_INTEGER;
  if (!(fdsPerFlow > 0)) return Number.MAX_SAFE_INTEGER;
  return Math.max(0, Math.floor((softLimit - fdsNow - reserve) / fdsPerFlow));
}

/** Splits `total` into `parts` near-equal positive integers (the first ones one larger). */
export function splitEven(total: number, parts: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < parts; i++) out.push(Math.floor(total / parts) + (i < total % parts ? 1 : 0));
  return out.filter((n) => n > 0);
}
