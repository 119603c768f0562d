// An open-addressing hash table from an address (4 words) to an int32 value.
// Lookups allocate nothing and use no string keys: this is the hot path's IP -> endpoint index.
import type { Family } from './addr.js';

const EMPTY = -1;

export class AddrTable {
  private readonly mask: number;
  private readonly keys: Uint32Array; // 4 words per slot
  private readonly vals: Int32Array; // EMPTY = free slot
  private readonly fams: Uint8Array;
  size = 0;

  constructor(capacityHint: number) {
    let cap = 16;
    while (cap < capacityHint * 2) cap *= 2; // load factor <= 0.5 keeps probes short
    this.mask = cap - 1;
    this.keys = new Uint32Array(cap * 4);
    this.vals = new Int32Array(cap).fill(EMPTY);
    this.fams = new Uint8Array(cap);
  }

  /** Hash of the address in w[off..off+3] (IPv4: w[off] only). */
  private static hash(family: Family, w: Uint32Array, off: number): number {
    let h = Math.imul(w[off]! ^ family, 0x9e3779b1);
    if (family === 6) {
      h = Math.imul(h ^ w[off + 1]!, 0x85ebca6b);
      h = Math.imul(h ^ w[off + 2]!, 0xc2b2ae35);
      h = Math.imul(h ^ w[off + 3]!, 0x27d4eb2f);
    }
    return (h ^ (h >>> 15)) >>> 0;
  }

  private matches(slot: number, family: Family, w: Uint32Array, off: number): boolean {
    const k = slot * 4;
    const keys = this.keys;
    if (this.fams[slot] !== family || keys[k] !== w[off]) return false;
    return family === 4 || (keys[k + 1] === w[off + 1] && keys[k + 2] === w[off + 2] && keys[k + 3] === w[off + 3]);
  }

  /**
   * Inserts the address in w[off..off+3] if absent; returns the value already present, or
   * EMPTY (-1) if inserted.
   */
  insert(family: Family, w: Uint32Array, value: number, off = 0): number {
    if (value < 0) throw new RangeError('AddrTable values must be >= 0');
    if ((this.size + 1) * 2 > this.mask + 1) throw new RangeError('AddrTable over capacity');
    let slot = AddrTable.hash(family, w, off) & this.mask;
    for (;;) {
      const v = this.vals[slot]!;
      if (v === EMPTY) {
        const k = slot * 4;
        this.keys[k] = w[off]!;
        this.keys[k + 1] = family === 6 ? w[off + 1]! : 0;
        this.keys[k + 2] = family === 6 ? w[off + 2]! : 0;
        this.keys[k + 3] = family === 6 ? w[off + 3]! : 0;
        this.fams[slot] = family;
        this.vals[slot] = value;
        this.size++;
        return EMPTY;
      }
      if (this.matches(slot, family, w, off)) return v;
      slot = (slot + 1) & this.mask;
    }
  }

  /** Every entry (compile-time use, e.g. rendering kernel rules; allocates). */
  entries(): { family: Family; words: Uint32Array; value: number }[] {
    const out: { family: Family; words: Uint32Array; value: number }[] = [];
    for (let slot = 0; slot < this.vals.length; slot++) {
      const value = this.vals[slot]!;
      if (value !== EMPTY) out.push({ family: this.fams[slot] as Family, words: this.keys.slice(slot * 4, slot * 4 + 4), value });
    }
    return out;
  }

  /** The value for an address, or -1. */
  get(family: Family, w: Uint32Array): number {
    let slot = AddrTable.hash(family, w, 0) & this.mask;
    for (;;) {
      const v = this.vals[slot]!;
      if (v === EMPTY) return EMPTY;
      if (this.matches(slot, family, w, 0)) return v;
      slot = (slot + 1) & this.mask;
    }
  }
}
