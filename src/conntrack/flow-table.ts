// The connection-tracking table: every live flow the agent relays, with the verdict and the
// snapshot revision it was decided under. Only a flow's first packet is decided; later packets
// of a UDP flow find their entry here by 5-tuple (numeric hash, no string keys).
//
// Memory: a flow's fields live in a 64-byte record of the table (one ArrayBuffer of records,
// indexed by slot, read through a Float64Array and a Uint32Array view), and its FlowEntry is a
// small object of three fields (records, record index, close): the fields are accessors.
// As plain fields, an entry was 120 bytes plus a 16-byte HeapNumber each for lastSeen
// (Date.now() is no Smi) and the relay id (a double from a Float64Array): 152 heap bytes per
// flow, against 48 now and 32 more bytes of record than the address column it replaces.
// A removed entry gets a copy of its record, taken at removal, since its slot may be reused at
// once: it keeps every field (the flow log and the relays read it after removal). The copies
// go to blocks of REMOVED_BLOCK records, handed out in turn: an ArrayBuffer and its views per
// removal made remove() take about 1.4 µs (0.2 µs with blocks; 0.35 µs before the records, with
// a Uint32Array copy of the addresses). A block lives while any entry copied into it does:
// 4 KiB for the rare removed entry that is kept long.
//
// Bounded: when full, idle flows (no traffic for `idleMs`) are evicted first, oldest first;
// if none is idle the new flow is refused (counted, and the caller logs it): never a crash and
// never an allow without a decision.
import type { Family } from '../policy/addr.js';
import type { FlowKey } from '../policy/decide.js';

export type FlowState = 'pending' | 'allowed' | 'denied' | 'closed';

/** State codes as records keep them (index: the code). */
const STATES: readonly FlowState[] = ['pending', 'allowed', 'denied', 'closed'];

function stateCode(s: FlowState): number {
  switch (s) {
    case 'pending':
      return 0;
    case 'allowed':
      return 1;
    case 'denied':
      return 2;
    case 'closed':
      return 3;
  }
  throw new TypeError(`not a flow state: ${String(s)}`);
}

// A record, 64 bytes. As Float64 words (F64_PER_REC a record): numbers that need not be
// integers of 32 bits (lastSeen in ms since 1970, relay ids up to 2^53, revisions).
const F64_PER_REC = 8;
const F_LAST_SEEN = 0;
const F_HANDLE = 1;
const F_REVISION = 2;
// As Uint32 words (U32_PER_REC a record; words 0..5 are the three Float64 above): the
// addresses, the ports (src << 16 | dst; ports are 16-bit), and meta: proto (bits 0..7),
// family (4 or 6, bits 8..15), state code (bits 16..17).
const U32_PER_REC = 16;
const U_SRC = 6;
const U_DST = 10;
const U_PORTS = 14;
const U_META = 15;
/** Records in a block of removed entries' copies (see the top of this file). */
const REMOVED_BLOCK = 64;

/** Records of flows: `n` of 64 bytes in one buffer, as Float64 and Uint32 words. */
class FlowRecords {
  readonly f64: Float64Array;
  readonly u32: Uint32Array;

  constructor(
    n: number,
    /** A table's records (record index = slot), not removed entries' copies or a lone entry's own. */
    readonly table: boolean,
  ) {
    const buf = new ArrayBuffer(n * U32_PER_REC * 4);
    this.f64 = new Float64Array(buf);
    this.u32 = new Uint32Array(buf);
  }

  /** Copies record `from` into record `to` of `dst` (all 64 bytes, the doubles' bits too). */
  copy(from: number, dst: FlowRecords, to: number): void {
    const s = this.u32;
    const d = dst.u32;
    const a = from * U32_PER_REC;
    const b = to * U32_PER_REC;
    for (let i = 0; i < U32_PER_REC; i++) d[b + i] = s[a + i]!;
  }
}

export class FlowEntry {
  /** Set by the relay: closes the flow's sockets (reset for TCP). */
  close: (reason: string) => void = noop;
  /** The records holding this flow's fields: the table's while registered, else its own... */
  private recs: FlowRecords;
  /** ...and the record's index in them (the slot, or 0 in its own). */
  private at: number;

  /** Without records, the entry has one of its own: proto 0, family 4, ports 0, state pending, numbers 0. */
  constructor(recs?: FlowRecords, at = 0) {
    this.at = at;
    if (recs) {
      this.recs = recs;
    } else {
      this.recs = new FlowRecords(1, false);
      this.family = 4;
    }
  }

  /** The entry's slot in its table while registered, else -1 (not a field: 8 bytes a flow). */
  get slot(): number {
    return this.recs.table ? this.at : -1;
  }

  get proto(): number {
    return this.recs.u32[this.at * U32_PER_REC + U_META]! & 0xff;
  }

  set proto(v: number) {
    this.setMeta(0xff, v & 0xff);
  }

  get family(): Family {
    return ((this.recs.u32[this.at * U32_PER_REC + U_META]! >>> 8) & 0xff) as Family;
  }

  set family(v: Family) {
    this.setMeta(0xff00, (v & 0xff) << 8);
  }

  get state(): FlowState {
    return STATES[(this.recs.u32[this.at * U32_PER_REC + U_META]! >>> 16) & 3]!;
  }

  set state(v: FlowState) {
    this.setMeta(0x30000, stateCode(v) << 16);
  }

  private setMeta(mask: number, bits: number): void {
    const u = this.recs.u32;
    const i = this.at * U32_PER_REC + U_META;
    u[i] = (u[i]! & ~mask) | bits;
  }

  get srcPort(): number {
    return this.recs.u32[this.at * U32_PER_REC + U_PORTS]! >>> 16;
  }

  set srcPort(v: number) {
    const u = this.recs.u32;
    const i = this.at * U32_PER_REC + U_PORTS;
    u[i] = ((v & 0xffff) << 16) | (u[i]! & 0xffff);
  }

  get dstPort(): number {
    return this.recs.u32[this.at * U32_PER_REC + U_PORTS]! & 0xffff;
  }

  set dstPort(v: number) {
    const u = this.recs.u32;
    const i = this.at * U32_PER_REC + U_PORTS;
    u[i] = (u[i]! & 0xffff0000) | (v & 0xffff);
  }

  /** Snapshot revision of the last decision. */
  get revision(): number {
    return this.recs.f64[this.at * F64_PER_REC + F_REVISION]!;
  }

  set revision(v: number) {
    this.recs.f64[this.at * F64_PER_REC + F_REVISION] = v;
  }

  /** When the flow last had traffic (ms, as the `now` the table was given). */
  get lastSeen(): number {
    return this.recs.f64[this.at * F64_PER_REC + F_LAST_SEEN]!;
  }

  set lastSeen(v: number) {
    this.recs.f64[this.at * F64_PER_REC + F_LAST_SEEN] = v;
  }

  /** The native fast path's relay id (0: none). */
  get handle(): number {
    return this.recs.f64[this.at * F64_PER_REC + F_HANDLE]!;
  }

  set handle(v: number) {
    this.recs.f64[this.at * F64_PER_REC + F_HANDLE] = v;
  }

  /** The source address words (a view: writes go to the entry). */
  get src(): Uint32Array {
    const o = this.at * U32_PER_REC + U_SRC;
    return this.recs.u32.subarray(o, o + 4);
  }

  /** The destination address words (a view: writes go to the entry). */
  get dst(): Uint32Array {
    const o = this.at * U32_PER_REC + U_DST;
    return this.recs.u32.subarray(o, o + 4);
  }

  /** Copies the entry's 5-tuple into a FlowKey (for re-decisions). Allocates nothing. */
  toKey(key: FlowKey): FlowKey {
    const u = this.recs.u32;
    const o = this.at * U32_PER_REC;
    key.proto = this.proto;
    key.family = this.family;
    for (let i = 0; i < 4; i++) {
      key.src[i] = u[o + U_SRC + i]!;
      key.dst[i] = u[o + U_DST + i]!;
    }
    key.srcPort = this.srcPort;
    key.dstPort = this.dstPort;
    return key;
  }

  /** For FlowTable.remove only: the entry's record is copied to record `at` of `to` (not a table's): it leaves its slot. */
  detach(to: FlowRecords, at: number): void {
    this.recs.copy(this.at, to, at);
    this.recs = to;
    this.at = at;
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
  /** Every slot's flow record (see FlowRecords). */
  private readonly recs: FlowRecords;
  private readonly next: Int32Array; // chain links per slot
  private readonly buckets: Int32Array;
  // Free slots: those freed by remove(), a stack in `free` (last freed, first reused), then
  // those never used, from `fresh` up (the same order as a list of every slot, lowest first).
  // An Int32Array, not a number[] filled with every slot: that was 8 JS heap bytes a slot from
  // the start (2 MiB at 262,144 slots); this is 4 a slot, its pages touched only as slots are freed.
  private readonly free: Int32Array;
  private freeCount = 0;
  private fresh = 0;
  /** Where removed entries' records are copied: the block being filled, and records used in it. */
  private removed = new FlowRecords(REMOVED_BLOCK, false);
  private removedUsed = 0;
  readonly stats: FlowTableStats = { entries: 0, lookups: 0, hits: 0, evictions: 0, refusals: 0 };

  constructor(
    readonly capacity: number,
    /** A flow with no traffic for this long may be evicted to make room. */
    readonly idleMs: number,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('flow table capacity must be a positive integer');
    this.entries = new Array(capacity);
    this.recs = new FlowRecords(capacity, true);
    this.next = new Int32Array(capacity).fill(-1);
    let nb = 16;
    while (nb < capacity) nb *= 2;
    this.buckets = new Int32Array(nb).fill(-1);
    this.free = new Int32Array(capacity);
  }

  get size(): number {
    return this.stats.entries;
  }

  /**
   * What the table allocates up front for its `capacity` slots, whether used or not: its
   * ArrayBuffers (records, chains, buckets, free list, the first block for removed entries'
   * copies) and the entries array (one pointer a
   * slot: 8 bytes, as Node 20's V8 runs without pointer compression). A flow's own objects come
   * on top (see the top of this file); the memory benchmark adds this per slot to what it
   * measures per flow, since its baseline already holds the table.
   */
  get allocatedBytes(): { arrayBuffers: number; entries: number } {
    return {
      arrayBuffers: this.recs.u32.byteLength + this.next.byteLength + this.buckets.byteLength + this.free.byteLength + REMOVED_BLOCK * U32_PER_REC * 4,
      entries: this.capacity * 8,
    };
  }

  /**
   * Hash of a 5-tuple: `ports` is src << 16 | dst, `meta` proto | family << 8 (no state), the
   * addresses src = w[o..o+3], dst = w[d..d+3].
   */
  private static hash(meta: number, ports: number, src: Uint32Array, so: number, dst: Uint32Array, d: number): number {
    let h = Math.imul(meta ^ ports, 0x9e3779b1);
    for (let i = 0; i < 4; i++) {
      h = Math.imul(h ^ src[so + i]!, 0x85ebca6b);
      h = Math.imul(h ^ dst[d + i]!, 0xc2b2ae35);
    }
    return (h ^ (h >>> 16)) >>> 0;
  }

  private bucketOfKey(key: FlowKey): number {
    return FlowTable.hash(keyMeta(key), keyPorts(key), key.src, 0, key.dst, 0) & (this.buckets.length - 1);
  }

  private bucketOfSlot(slot: number): number {
    const u = this.recs.u32;
    const o = slot * U32_PER_REC;
    return FlowTable.hash(u[o + U_META]! & 0xffff, u[o + U_PORTS]!, u, o + U_SRC, u, o + U_DST) & (this.buckets.length - 1);
  }

  /** The live entry for this 5-tuple, if any. Allocates nothing. */
  lookup(key: FlowKey, now: number): FlowEntry | undefined {
    this.stats.lookups++;
    const u = this.recs.u32;
    const meta = keyMeta(key);
    const ports = keyPorts(key);
    let s = this.buckets[this.bucketOfKey(key)]!;
    while (s >= 0) {
      const o = s * U32_PER_REC;
      if (
        (u[o + U_META]! & 0xffff) === meta && u[o + U_PORTS] === ports &&
        u[o + U_SRC] === key.src[0] && u[o + U_DST] === key.dst[0] &&
        (key.family === 4 || (u[o + U_SRC + 1] === key.src[1] && u[o + U_SRC + 2] === key.src[2] && u[o + U_SRC + 3] === key.src[3] &&
          u[o + U_DST + 1] === key.dst[1] && u[o + U_DST + 2] === key.dst[2] && u[o + U_DST + 3] === key.dst[3]))
      ) {
        this.stats.hits++;
        this.recs.f64[s * F64_PER_REC + F_LAST_SEEN] = now;
        return this.entries[s]!;
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
    if (this.freeCount === 0 && this.fresh === this.capacity && !this.evictIdle(now)) {
      this.stats.refusals++;
      return undefined;
    }
    const slot = this.freeCount > 0 ? this.free[--this.freeCount]! : this.fresh++;
    // The whole record is written: nothing of the slot's previous flow remains.
    const u = this.recs.u32;
    const o = slot * U32_PER_REC;
    for (let i = 0; i < 4; i++) {
      u[o + U_SRC + i] = key.src[i]!;
      u[o + U_DST + i] = key.dst[i]!;
    }
    u[o + U_PORTS] = keyPorts(key);
    u[o + U_META] = keyMeta(key); // state 0: pending
    const f = this.recs.f64;
    const fo = slot * F64_PER_REC;
    f[fo + F_LAST_SEEN] = now;
    f[fo + F_HANDLE] = 0;
    f[fo + F_REVISION] = 0;
    const e = new FlowEntry(this.recs, slot);
    const b = this.bucketOfSlot(slot);
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
    const b = this.bucketOfSlot(slot);
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
    this.free[this.freeCount++] = slot;
    // The slot may be reused at once: the entry keeps a copy of its record.
    if (this.removedUsed === REMOVED_BLOCK) {
      this.removed = new FlowRecords(REMOVED_BLOCK, false);
      this.removedUsed = 0;
    }
    e.detach(this.removed, this.removedUsed++);
    this.stats.entries--;
  }

  /** Evicts the least recently seen idle flow, closing it. */
  private evictIdle(now: number): boolean {
    const f = this.recs.f64;
    let victim = -1;
    let oldest = 0;
    for (let s = 0; s < this.capacity; s++) {
      if (this.entries[s] === undefined) continue;
      const seen = f[s * F64_PER_REC + F_LAST_SEEN]!;
      if (now - seen >= this.idleMs && (victim < 0 || seen < oldest)) {
        victim = s;
        oldest = seen;
      }
    }
    if (victim < 0) return false;
    const e = this.entries[victim]!;
    this.remove(e);
    e.state = 'closed';
    e.close('evicted: idle while the flow table was full');
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

/** A key's proto and family as in a record's meta word (state 0). */
function keyMeta(key: FlowKey): number {
  return (key.proto & 0xff) | ((key.family & 0xff) << 8);
}

/** A key's ports as in a record's ports word. */
function keyPorts(key: FlowKey): number {
  return (((key.srcPort & 0xffff) << 16) | (key.dstPort & 0xffff)) >>> 0;
}
