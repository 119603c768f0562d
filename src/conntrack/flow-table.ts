// The connection-tracking table: every live flow the agent relays, with the verdict and the
// snapshot revision it was decided under. Only a flow's first packet is decided; later packets
// of a UDP flow find their entry here by 5-tuple (numeric hash, no string keys).
//
// Memory: an entry is a small object of numbers; its addresses (8 words) live in a column of
// the table, indexed by the entry's slot, so a tracked flow costs no typed array of its own
// (two Uint32Arrays per entry were ~400 of its ~570 heap bytes). `src`/`dst` are views made on
// access (logging, explaining: not the per-flow path); a removed entry keeps a copy of its
// addresses, taken at removal, since its slot may be reused at once.
//
// Bounded: when full, idle flows (no traffic for `idleMs`) are evicted first, oldest first;
// if none is idle the new flow is refused (counted, and the caller logs it): never a crash and
// never an allow without a decision.
import type { Family } from '../policy/addr.js';
import type { FlowKey } from '../policy/decide.js';

export type FlowState = 'pending' | 'allowed' | 'denied' | 'closed';

export class FlowEntry {
  slot = -1;
  proto = 0;
  family: Family = 4;
  srcPort = 0;
  dstPort = 0;
  state: FlowState = 'pending';
  /** Snapshot revision of the last decision. */
  revision = 0;
  lastSeen = 0;
  /** The native fast path's relay id (0: none). */
  handle = 0;
  /** Set by the relay: closes the flow's sockets (reset for TCP). */
  close: (reason: string) => void = noop;
  /** The table's address column while registered (words slot*8 .. slot*8+7)... */
  words: Uint32Array | undefined = undefined;
  /** ...else the entry's own copy: src in words 0..3, dst in 4..7. */
  base = 0;

  private addrs(): Uint32Array {
    if (this.words === undefined) {
      this.words = new Uint32Array(8);
      this.base = 0;
    }
    return this.words;
  }

  /** The source address words (a view: writes go to the entry). */
  get src(): Uint32Array {
    return this.addrs().subarray(this.base, this.base + 4);
  }

  /** The destination address words (a view: writes go to the entry). */
  get dst(): Uint32Array {
    return this.addrs().subarray(this.base + 4, this.base + 8);
  }

  /** Copies the entry's 5-tuple into a FlowKey (for re-decisions). Allocates nothing. */
  toKey(key: FlowKey): FlowKey {
    const w = this.addrs();
    const b = this.base;
    key.proto = this.proto;
    key.family = this.family;
    for (let i = 0; i < 4; i++) {
      key.src[i] = w[b + i]!;
      key.dst[i] = w[b + 4 + i]!;
    }
    key.srcPort = this.srcPort;
    key.dstPort = this.dstPort;
    return key;
  }
}

function noop(): void {}

export interface FlowTableStats {
  entries: number;
  lookups: number;
  hits: number;
  evictions: number;
  refusals: number;
}

export class FlowTable {
  private readonly entries: (FlowEntry | undefined)[];
  /** Addresses per slot: src words 0..3, dst words 4..7. */
  private readonly addrs: Uint32Array;
  private readonly next: Int32Array; // chain links per slot
  private readonly buckets: Int32Array;
  private readonly free: number[] = [];
  readonly stats: FlowTableStats = { entries: 0, lookups: 0, hits: 0, evictions: 0, refusals: 0 };

  constructor(
    readonly capacity: number,
    /** A flow with no traffic for this long may be evicted to make room. */
    readonly idleMs: number,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('flow table capacity must be a positive integer');
    this.entries = new Array(capacity);
    this.addrs = new Uint32Array(capacity * 8);
    this.next = new Int32Array(capacity).fill(-1);
    let nb = 16;
    while (nb < capacity) nb *= 2;
    this.buckets = new Int32Array(nb).fill(-1);
    for (let i = capacity - 1; i >= 0; i--) this.free.push(i);
  }

  get size(): number {
    return this.stats.entries;
  }

  /** Hash of a 5-tuple whose addresses are src = w[o..o+3], dst = w[o+4..o+7] (or src, dst arrays). */
  private static hash(proto: number, family: number, src: Uint32Array, so: number, dst: Uint32Array, d: number, sport: number, dport: number): number {
    let h = Math.imul(proto ^ (family << 8) ^ (sport << 16) ^ dport, 0x9e3779b1);
    for (let i = 0; i < 4; i++) {
      h = Math.imul(h ^ src[so + i]!, 0x85ebca6b);
      h = Math.imul(h ^ dst[d + i]!, 0xc2b2ae35);
    }
    return (h ^ (h >>> 16)) >>> 0;
  }

  private bucketOfKey(key: FlowKey): number {
    return FlowTable.hash(key.proto, key.family, key.src, 0, key.dst, 0, key.srcPort, key.dstPort) & (this.buckets.length - 1);
  }

  private bucketOfSlot(e: FlowEntry, slot: number): number {
    const a = this.addrs;
    return FlowTable.hash(e.proto, e.family, a, slot * 8, a, slot * 8 + 4, e.srcPort, e.dstPort) & (this.buckets.length - 1);
  }

  /** The live entry for this 5-tuple, if any. Allocates nothing. */
  lookup(key: FlowKey, now: number): FlowEntry | undefined {
    this.stats.lookups++;
    const a = this.addrs;
    let s = this.buckets[this.bucketOfKey(key)]!;
    while (s >= 0) {
      const e = this.entries[s]!;
      const o = s * 8;
      if (
        e.proto === key.proto && e.family === key.family && e.srcPort === key.srcPort && e.dstPort === key.dstPort &&
        a[o] === key.src[0] && a[o + 4] === key.dst[0] &&
        (key.family === 4 || (a[o + 1] === key.src[1] && a[o + 2] === key.src[2] && a[o + 3] === key.src[3] &&
          a[o + 5] === key.dst[1] && a[o + 6] === key.dst[2] && a[o + 7] === key.dst[3]))
      ) {
        this.stats.hits++;
        e.lastSeen = now;
        return e;
      }
      s = this.next[s]!;
    }
    return undefined;
  }

  /**
   * Registers a new flow in state `pending`, before its first decision (so a policy change
   * that happens meanwhile re-evaluates it too). Returns undefined when the table is full and
   * nothing could be evicted: the caller must refuse the flow.
   */
  register(key: FlowKey, now: number): FlowEntry | undefined {
    if (this.free.length === 0 && !this.evictIdle(now)) {
      this.stats.refusals++;
      return undefined;
    }
    const slot = this.free.pop()!;
    const e = new FlowEntry();
    e.slot = slot;
    e.proto = key.proto;
    e.family = key.family;
    const a = this.addrs;
    const o = slot * 8;
    for (let i = 0; i < 4; i++) {
      a[o + i] = key.src[i]!;
      a[o + 4 + i] = key.dst[i]!;
    }
    e.words = a;
    e.base = o;
    e.srcPort = key.srcPort;
    e.dstPort = key.dstPort;
    e.lastSeen = now;
    const b = this.bucketOfSlot(e, slot);
    this.next[slot] = this.buckets[b]!;
    this.buckets[b] = slot;
    this.entries[slot] = e;
    this.stats.entries++;
    return e;
  }

  /** Removes an entry (idempotent). Does not close it: the relay does that. */
  remove(e: FlowEntry): void {
    const slot = e.slot;
    if (slot < 0 || this.entries[slot] !== e) return;
    const b = this.bucketOfSlot(e, slot);
    let s = this.buckets[b]!;
    let prev = -1;
    while (s >= 0 && s !== slot) {
      prev = s;
      s = this.next[s]!;
    }
    if (s === slot) {
      if (prev < 0) this.buckets[b] = this.next[slot]!;
      else this.next[prev] = this.next[slot]!;
    }
    this.next[slot] = -1;
    this.entries[slot] = undefined;
    this.free.push(slot);
    // The slot may be reused at once: the entry keeps its own copy of its addresses.
    e.words = this.addrs.slice(slot * 8, slot * 8 + 8);
    e.base = 0;
    e.slot = -1;
    this.stats.entries--;
  }

  /** Evicts the least recently seen idle flow, closing it. */
  private evictIdle(now: number): boolean {
    let victim: FlowEntry | undefined;
    for (const e of this.entries) {
      if (e && now - e.lastSeen >= this.idleMs && (!victim || e.lastSeen < victim.lastSeen)) victim = e;
    }
    if (!victim) return false;
    this.remove(victim);
    victim.state = 'closed';
    victim.close('evicted: idle while the flow table was full');
    this.stats.evictions++;
    return true;
  }

  /** Every live entry (a snapshot of the list, so callbacks may remove entries). */
  all(): FlowEntry[] {
    const out: FlowEntry[] = [];
    for (const e of this.entries) if (e) out.push(e);
    return out;
  }
}
