// A binary radix trie over address bits, one per family, holding every ipBlock of every policy.
// Each ipBlock gets a small integer id; its `cidr` node carries "+id" and each `except` node
// "-id". A lookup walks the address from the root and stamps the ids of the blocks that contain
// it: because an except is strictly inside its cidr (validated), the "+" is always met before
// the matching "-" on the path. Nodes live in typed arrays; a lookup allocates nothing.
import { addrBit, type Family } from './addr.js';

const NO_CHILD = -1;

export class CidrTrie {
  readonly family: Family;
  private readonly bits: number;
  private child: Int32Array; // 2 per node
  private markStart: Int32Array; // per node: offset into marks, -1 if none
  private markCount: Int32Array;
  private nodeCount = 1;
  private pending: Array<number[] | undefined> = [[]];
  private marks = new Int32Array(0);
  private sealed = false;

  constructor(family: Family) {
    this.family = family;
    this.bits = family === 4 ? 32 : 128;
    this.child = new Int32Array(64).fill(NO_CHILD);
    this.markStart = new Int32Array(0);
    this.markCount = new Int32Array(0);
  }

  get nodes(): number {
    return this.nodeCount;
  }

  /** Adds a mark at the node for (words, prefix): +(id+1) for a cidr, -(id+1) for an except. */
  add(words: Uint32Array, prefix: number, id: number, isExcept: boolean): void {
    if (this.sealed) throw new Error('CidrTrie is sealed');
    let node = 0;
    for (let i = 0; i < prefix; i++) {
      const slot = node * 2 + addrBit(words, i);
      let next = this.child[slot]!;
      if (next === NO_CHILD) {
        next = this.nodeCount++;
        if (next * 2 + 1 >= this.child.length) {
          const grown = new Int32Array(this.child.length * 2).fill(NO_CHILD);
          grown.set(this.child);
          this.child = grown;
        }
        this.child[slot] = next;
      }
      node = next;
    }
    const list = (this.pending[node] ??= []);
    list.push(isExcept ? -(id + 1) : id + 1);
  }

  /** Freezes the trie into flat arrays. Call once after all `add`s. */
  seal(): void {
    const n = this.nodeCount;
    this.markStart = new Int32Array(n).fill(-1);
    this.markCount = new Int32Array(n);
    let total = 0;
    for (let i = 0; i < n; i++) total += this.pending[i]?.length ?? 0;
    this.marks = new Int32Array(total);
    let off = 0;
    for (let i = 0; i < n; i++) {
      const list = this.pending[i];
      if (!list || list.length === 0) continue;
      // "+" before "-" at the same node cannot happen for one block (except is strictly longer),
      // but keep additions first anyway so that order never matters.
      list.sort((a, b) => b - a);
      this.markStart[i] = off;
      this.markCount[i] = list.length;
      for (const m of list) this.marks[off++] = m;
    }
    this.child = this.child.slice(0, n * 2);
    this.pending = [];
    this.sealed = true;
  }

  /**
   * Stamps `out[id] = stamp` for every block containing the address, and clears blocks whose
   * except contains it. Entries of `out` not touched keep older stamps (treated as "no").
   */
  lookup(words: Uint32Array, out: Int32Array, stamp: number): void {
    const child = this.child;
    const start = this.markStart;
    let node = 0;
    let i = 0;
    for (;;) {
      const s = start[node]!;
      if (s >= 0) {
        const end = s + this.markCount[node]!;
        for (let k = s; k < end; k++) {
          const m = this.marks[k]!;
          if (m > 0) out[m - 1] = stamp;
          else out[-m - 1] = 0;
        }
      }
      if (i === this.bits) return;
      node = child[node * 2 + ((words[i >>> 5]! >>> (31 - (i & 31))) & 1)]!;
      if (node === NO_CHILD) return;
      i++;
    }
  }

  /** Approximate heap bytes of the sealed arrays. */
  get bytes(): number {
    return this.child.byteLength + this.markStart.byteLength + this.markCount.byteLength + this.marks.byteLength;
  }
}
