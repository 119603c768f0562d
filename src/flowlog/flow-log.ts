// The flow log: one JSON line per decided flow. Denied flows (and would-be denials let through
// by audit mode) are always logged; allowed flows are sampled at `sampleRate`.
//
// Enforcement never waits on it. record() runs on the data plane's hot path and only copies
// what the line needs (the flow entry, the snapshot, a copy of the decision) into a bounded
// queue of `bufferLines` records; when the queue is full the record is dropped and counted. The
// lines are formatted later, off the hot path (setImmediate), and handed to an asynchronous
// sink; while the sink is backed up the queue fills and then drops.
//
// A line (keys in this order):
//   {"level":"info","time":"…","msg":"flow denied"|"flow allowed",
//    "protocol":"TCP","family":4,"srcIp":"198.18.3.10","srcPort":40000,"dstIp":"198.18.1.20","dstPort":8080,
//    "srcPod":"ns/pod"|null,"dstPod":"ns/pod"|null,"verdict":"allow"|"deny","audit":false,"revision":3,
//    "egress":{"status":"not-isolated"},
//    "ingress":{"status":"denied","policies":["ns/a","ns/b"]}}
// A side that allowed it names {"status":"allowed","policy":"ns/p","rule":0,"policies":[...]}.
// `verdict` is the policies' verdict; `"audit": true` marks a denial that audit mode let through.
// Sampled allowed lines carry "sampleRate".
import type { FlowEntry } from '../conntrack/flow-table.js';
import { formatAddr, protocolName } from '../policy/addr.js';
import { Decision } from '../policy/decide.js';
import { reportDecision, type SideReport } from '../policy/explain.js';
import type { PolicySnapshot } from '../policy/snapshot.js';
import type { LineSink } from './writer.js';

export interface FlowLogOptions {
  /** Fraction of allowed flows logged, 0..1. */
  readonly sampleRate: number;
  /** Records waiting to be written; beyond that, records are dropped (counted). */
  readonly bufferLines: number;
  /** Randomness for sampling (tests). */
  readonly random?: () => number;
}

export interface FlowLogCounters {
  /** Records queued for writing (denied, audited, and sampled allowed flows). */
  queued: number;
  /** Lines handed to the sink. */
  written: number;
  /** Records dropped because the buffer was full. */
  dropped: number;
  /** Allowed flows not sampled. */
  sampledOut: number;
}

/** What the data plane calls for each decided flow. */
export interface FlowRecorder {
  record(e: FlowEntry, snap: PolicySnapshot, d: Decision, audit: boolean): void;
}

interface FlowRecord {
  time: number;
  e: FlowEntry;
  snap: PolicySnapshot;
  d: Decision;
  audit: boolean;
}

export class FlowLog implements FlowRecorder {
  readonly counters: FlowLogCounters = { queued: 0, written: 0, dropped: 0, sampledOut: 0 };
  private queue: FlowRecord[] = [];
  private head = 0;
  private scheduled = false;
  private waitingForDrain = false;
  private readonly random: () => number;

  constructor(
    private readonly sink: LineSink,
    private readonly options: FlowLogOptions,
  ) {
    if (!(options.sampleRate >= 0 && options.sampleRate <= 1)) throw new RangeError('sampleRate must be within 0..1');
    if (!Number.isInteger(options.bufferLines) || options.bufferLines < 1) throw new RangeError('bufferLines must be a positive integer');
    this.random = options.random ?? Math.random;
  }

  /** Records waiting in the buffer. */
  get buffered(): number {
    return this.queue.length - this.head;
  }

  get capacity(): number {
    return this.options.bufferLines;
  }

  record(e: FlowEntry, snap: PolicySnapshot, d: Decision, audit: boolean): void {
    if (d.allowed) {
      const rate = this.options.sampleRate;
      if (rate < 1 && !(rate > 0 && this.random() < rate)) {
        this.counters.sampledOut++;
        return;
      }
    }
    if (this.buffered >= this.options.bufferLines) {
      this.counters.dropped++;
      return;
    }
    this.queue.push({ time: Date.now(), e, snap, d: copyDecision(d), audit });
    this.counters.queued++;
    if (!this.scheduled && !this.waitingForDrain) {
      this.scheduled = true;
      setImmediate(() => this.pump());
    }
  }

  /** Hands every buffered line to the sink now (ignoring its backpressure). */
  flush(): void {
    this.scheduled = false;
    while (this.head < this.queue.length) this.writeOne();
    this.compact();
  }

  private pump(): void {
    this.scheduled = false;
    while (this.head < this.queue.length) {
      if (!this.writeOne()) {
        this.waitingForDrain = true;
        this.sink.onDrain(() => {
          this.waitingForDrain = false;
          this.pump();
        });
        break;
      }
    }
    this.compact();
  }

  private writeOne(): boolean {
    const r = this.queue[this.head]!;
    this.queue[this.head] = undefined as unknown as FlowRecord;
    this.head++;
    this.counters.written++;
    return this.sink.write(`${formatFlowLine(r.time, r.e, r.snap, r.d, r.audit, this.options.sampleRate)}\n`);
  }

  private compact(): void {
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }
}

function copyDecision(d: Decision): Decision {
  const c = new Decision();
  c.allowed = d.allowed;
  c.revision = d.revision;
  c.egress = d.egress;
  c.ingress = d.ingress;
  c.egressRule = d.egressRule;
  c.ingressRule = d.ingressRule;
  c.egressGroup = d.egressGroup;
  c.ingressGroup = d.ingressGroup;
  c.srcPod = d.srcPod;
  c.dstPod = d.dstPod;
  return c;
}

function side(s: SideReport): Record<string, unknown> {
  const o: Record<string, unknown> = { status: s.status };
  if (s.policy !== undefined) {
    o['policy'] = s.policy;
    o['rule'] = s.rule;
  }
  if (s.policies.length > 0) o['policies'] = s.policies;
  return o;
}

/** One flow-log line (no trailing newline). */
export function formatFlowLine(time: number, e: FlowEntry, snap: PolicySnapshot, d: Decision, audit: boolean, sampleRate: number): string {
  const r = reportDecision(snap, d);
  const line: Record<string, unknown> = {
    level: 'info',
    time: new Date(time).toISOString(),
    msg: d.allowed ? 'flow allowed' : 'flow denied',
    protocol: protocolName(e.proto) ?? e.proto,
    family: e.family,
    srcIp: formatAddr(e.family, e.src),
    srcPort: e.srcPort,
    dstIp: formatAddr(e.family, e.dst),
    dstPort: e.dstPort,
    srcPod: r.egress.pod ?? null,
    dstPod: r.ingress.pod ?? null,
    verdict: r.verdict,
    audit,
    revision: r.revision,
    egress: side(r.egress),
    ingress: side(r.ingress),
  };
  if (d.allowed) line['sampleRate'] = sampleRate;
  return JSON.stringify(line);
}
