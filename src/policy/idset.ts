// A set of small integers (identities) with one concrete class, so every `has` call site stays
// monomorphic. Dense sets are bitmaps over [base, base+32*words.length); sparse sets are sorted
// arrays searched by bisection. Which one is chosen depends only on memory: members cost 4 bytes
// each in the sparse form, the span costs 1 bit per id in the dense form.

const KIND_NONE = 0;
const KIND_ALL = 1;
const KIND_DENSE = 2;
const KIND_SORTED = 3;

const NO_WORDS = new Uint32Array(0);

export class IdSet {
  private constructor(
    private readonly kind: number,
    private readonly base: number,
    private readonly words: Uint32Array,
    private readonly ids: Uint32Array,
    /** Number of members; Infinity for ALL. */
    readonly size: number,
  ) {}

  static readonly NONE = new IdSet(KIND_NONE, 0, NO_WORDS, NO_WORDS, 0);
  static readonly ALL = new IdSet(KIND_ALL, 0, NO_WORDS, NO_WORDS, Infinity);

  /** Builds a set from ids sorted ascending without duplicates. */
  static fromSorted(ids: ArrayLike<number>): IdSet {
    const n = ids.length;
    if (n === 0) return IdSet.NONE;
    const lo = ids[0]!;
    const hi = ids[n - 1]!;
    const spanWords = ((hi - lo) >>> 5) + 1;
    if (spanWords <= n) {
      const words = new Uint32Array(spanWords);
      for (let i = 0; i < n; i++) {
        const d = ids[i]! - lo;
        words[d >>> 5]! |= 1 << (d & 31);
      }
      return new IdSet(KIND_DENSE, lo, words, NO_WORDS, n);
    }
    return new IdSet(KIND_SORTED, 0, NO_WORDS, Uint32Array.from(ids), n);
  }

  /** The members, ascending (compile-time use only). */
  toArray(): number[] {
    switch (this.kind) {
      case KIND_DENSE: {
        const out: number[] = [];
        for (let w = 0; w < this.words.length; w++) {
          let bits = this.words[w]!;
          while (bits !== 0) {
            const b = 31 - Math.clz32(bits & -bits);
            out.push(this.base + w * 32 + b);
            bits &= bits - 1;
          }
        }
        return out;
      }
      case KIND_SORTED:
        return Array.from(this.ids);
      case KIND_ALL:
        throw new Error('IdSet.ALL has no finite member list');
      default:
        return [];
    }
  }

  /** A new set with `id` added (this one is unchanged: snapshots share sets). */
  with(id: number): IdSet {
    if (this.kind === KIND_ALL || this.has(id)) return this;
    const ids = this.toArray();
    let i = ids.length;
    ids.push(id);
    while (i > 0 && ids[i - 1]! > id) {
      ids[i] = ids[i - 1]!;
      i--;
    }
    ids[i] = id;
    return IdSet.fromSorted(ids);
  }

  has(id: number): boolean {
    switch (this.kind) {
      case KIND_DENSE: {
        const d = id - this.base;
        if (d < 0) return false;
        const wi = d >>> 5;
        return wi < this.words.length && (this.words[wi]! & (1 << (d & 31))) !== 0;
      }
      case KIND_SORTED: {
        const ids = this.ids;
        let lo = 0;
        let hi = ids.length - 1;
        while (lo <= hi) {
          const mid = (lo + hi) >>> 1;
          const v = ids[mid]!;
          if (v === id) return true;
          if (v < id) lo = mid + 1;
          else hi = mid - 1;
        }
        return false;
      }
      case KIND_ALL:
        return true;
      default:
        return false;
    }
  }

  /** Heap bytes held by this set's arrays (for `compile --stats`). */
  get bytes(): number {
    return this.words.byteLength + this.ids.byteLength;
  }

  get isAll(): boolean {
    return this.kind === KIND_ALL;
  }
}
