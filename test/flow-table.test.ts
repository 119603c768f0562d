// FlowTable (src/conntrack/flow-table.ts): the data plane's connection-tracking table.
// Table-driven checks of register/lookup/remove by 5-tuple, stats, and the capacity rules
// (evict the least recently seen idle flow, else refuse), then fast-check properties: distinct
// keys never collide, and a model test against a plain Map over random operation sequences.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FlowEntry, FlowTable, type FlowState } from '../src/conntrack/flow-table.js';
import { parseAddrInto, PROTO_SCTP, PROTO_TCP, PROTO_UDP, type Family } from '../src/policy/addr.js';
import { FlowKey } from '../src/policy/decide.js';

interface KeySpec {
  proto: number;
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  /** Forces the family (to build keys whose words are equal but whose family differs). */
  family?: Family;
}

function key(k: KeySpec): FlowKey {
  const out = new FlowKey();
  const fs = parseAddrInto(k.src, out.src);
  const fd = parseAddrInto(k.dst, out.dst);
  if (fs === 0 || fs !== fd) throw new Error(`bad test key ${JSON.stringify(k)}`);
  out.family = k.family ?? fs;
  out.proto = k.proto;
  out.srcPort = k.srcPort;
  out.dstPort = k.dstPort;
  return out;
}

/** A key from raw words (for properties). */
function rawKey(proto: number, family: Family, src: readonly number[], dst: readonly number[], srcPort: number, dstPort: number): FlowKey {
  const out = new FlowKey();
  out.proto = proto;
  out.family = family;
  // An IPv4 key has its address in word 0 and zeros elsewhere, as parseAddrInto leaves it.
  out.src.set(family === 4 ? [src[0]!, 0, 0, 0] : src);
  out.dst.set(family === 4 ? [dst[0]!, 0, 0, 0] : dst);
  out.srcPort = srcPort;
  out.dstPort = dstPort;
  return out;
}

function keyText(k: FlowKey): string {
  return `${k.proto}|${k.family}|${[...k.src].join('.')}|${[...k.dst].join('.')}|${k.srcPort}|${k.dstPort}`;
}

function entryText(e: FlowEntry): string {
  return keyText(e.toKey(new FlowKey()));
}

const V4: KeySpec = { proto: PROTO_TCP, src: '198.18.3.10', dst: '198.18.1.20', srcPort: 40000, dstPort: 8080 };
const V6: KeySpec = { proto: PROTO_TCP, src: '2001:2:0:3::a', dst: '2001:2:0:1::14', srcPort: 40000, dstPort: 8080 };

// Each variant differs from its base in exactly one field (for IPv6, in one word of one address).
const ONE_FIELD_VARIANTS: readonly [string, KeySpec, KeySpec][] = [
  ['v4 proto tcp/udp', V4, { ...V4, proto: PROTO_UDP }],
  ['v4 proto tcp/sctp', V4, { ...V4, proto: PROTO_SCTP }],
  ['v4 src', V4, { ...V4, src: '198.18.3.11' }],
  ['v4 dst', V4, { ...V4, dst: '198.18.1.21' }],
  ['v4 src and dst swapped', V4, { ...V4, src: V4.dst, dst: V4.src }],
  ['v4 srcPort', V4, { ...V4, srcPort: 40001 }],
  ['v4 dstPort', V4, { ...V4, dstPort: 8081 }],
  ['v4 ports swapped', V4, { ...V4, srcPort: V4.dstPort, dstPort: V4.srcPort }],
  ['v4 srcPort 0 / 65535', { ...V4, srcPort: 0 }, { ...V4, srcPort: 65535 }],
  // 10.0.0.1 and a00:1:: have the same four words: only the family differs.
  ['family only', { ...V4, src: '10.0.0.1', dst: '10.0.0.2' }, { ...V4, src: 'a00:1::', dst: 'a00:2::' }],
  ['v6 proto', V6, { ...V6, proto: PROTO_UDP }],
  ['v6 src word 0', V6, { ...V6, src: '2001:3:0:3::a' }],
  ['v6 src word 1', V6, { ...V6, src: '2001:2:0:4::a' }],
  ['v6 src word 2', V6, { ...V6, src: '2001:2:0:3:1::a' }],
  ['v6 src word 3', V6, { ...V6, src: '2001:2:0:3::b' }],
  ['v6 dst word 0', V6, { ...V6, dst: '2001:3:0:1::14' }],
  ['v6 dst word 1', V6, { ...V6, dst: '2001:2:0:2::14' }],
  ['v6 dst word 2', V6, { ...V6, dst: '2001:2:0:1:1::14' }],
  ['v6 dst word 3', V6, { ...V6, dst: '2001:2:0:1::15' }],
  ['v6 srcPort', V6, { ...V6, srcPort: 40001 }],
  ['v6 dstPort', V6, { ...V6, dstPort: 8081 }],
];

describe('FlowTable: register, lookup, remove by 5-tuple', () => {
  it('rejects a capacity that is not a positive integer', () => {
    for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => new FlowTable(bad, 1000), String(bad)).toThrow(RangeError);
    }
    expect(new FlowTable(1, 1000).capacity).toBe(1);
  });

  it.each([
    ['IPv4 TCP', V4],
    ['IPv6 TCP', V6],
    ['IPv4 UDP', { ...V4, proto: PROTO_UDP }],
    ['IPv6 UDP, extreme ports', { ...V6, proto: PROTO_UDP, srcPort: 0, dstPort: 65535 }],
    ['IPv4 zero addresses', { ...V4, src: '0.0.0.0', dst: '0.0.0.0' }],
    ['IPv4 all-ones addresses', { ...V4, src: '255.255.255.255', dst: '255.255.255.255' }],
    ['IPv6 all-ones addresses', { ...V6, src: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', dst: '::' }],
  ] as const)('%s: a registered flow is found by an equal key (another FlowKey object), then removed', (_name, spec) => {
    const t = new FlowTable(4, 1000);
    const e = t.register(key(spec), 100)!;
    expect(e).toBeInstanceOf(FlowEntry);
    expect(e.state).toBe('pending');
    expect(e.lastSeen).toBe(100);
    expect(e.slot).toBeGreaterThanOrEqual(0);
    expect(entryText(e)).toBe(keyText(key(spec)));
    expect(t.size).toBe(1);
    expect(t.lookup(key(spec), 200)).toBe(e);
    expect(e.lastSeen).toBe(200);
    t.remove(e);
    expect(e.slot).toBe(-1);
    expect(t.size).toBe(0);
    expect(t.lookup(key(spec), 300)).toBeUndefined();
    expect(t.all()).toEqual([]);
  });

  it.each(ONE_FIELD_VARIANTS)('keys differing only in %s never collide', (_name, a, b) => {
    const ka = key(a);
    const kb = key(b);
    expect(keyText(ka)).not.toBe(keyText(kb));
    const t = new FlowTable(4, 1000);
    const ea = t.register(ka, 1)!;
    expect(t.lookup(kb, 2)).toBeUndefined();
    const eb = t.register(kb, 3)!;
    expect(eb).not.toBe(ea);
    expect(t.lookup(ka, 4)).toBe(ea);
    expect(t.lookup(kb, 5)).toBe(eb);
    t.remove(ea);
    expect(t.lookup(ka, 6)).toBeUndefined();
    expect(t.lookup(kb, 7)).toBe(eb);
    t.remove(eb);
    expect(t.lookup(kb, 8)).toBeUndefined();
    expect(t.size).toBe(0);
  });

  // The table-driven pairs above usually land in different hash buckets, which would hide a
  // missing field comparison. Here each field is swept over 256 base keys, each in a table of
  // capacity 1 (16 buckets): many variants share their base's bucket, so equality must be exact.
  const FIELDS: readonly [string, Family, (k: FlowKey) => void][] = [
    ['proto', 4, (k) => (k.proto = PROTO_UDP)],
    ['family', 6, (k) => (k.family = 4)],
    ['v4 src', 4, (k) => (k.src[0] = (k.src[0]! + 1) >>> 0)],
    ['v4 dst', 4, (k) => (k.dst[0] = (k.dst[0]! ^ 0x80000000) >>> 0)],
    // (A source port differing in its low 4 bits always changes the bucket of a 16-bucket
    // table with this hash; one differing only in higher bits can share it.)
    ['srcPort', 4, (k) => (k.srcPort ^= 0x1000)],
    ['dstPort', 6, (k) => (k.dstPort = (k.dstPort + 1) & 0xffff)],
    ['dstPort high bit', 4, (k) => (k.dstPort ^= 0x8000)],
    ...[0, 1, 2, 3].flatMap((w): [string, Family, (k: FlowKey) => void][] => [
      [`v6 src word ${w}`, 6, (k) => (k.src[w] = (k.src[w]! + 1) >>> 0)],
      [`v6 dst word ${w}`, 6, (k) => (k.dst[w] = (k.dst[w]! ^ 1) >>> 0)],
    ]),
  ];

  it.each(FIELDS)('keys differing only in %s never collide, even in one bucket', (_name, family, mutate) => {
    let seed = 12345;
    const rnd = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
    for (let i = 0; i < 256; i++) {
      const words = (): number[] => [rnd(), rnd(), rnd(), rnd()];
      const base = rawKey(PROTO_TCP, family, words(), words(), rnd() & 0xffff, rnd() & 0xffff);
      const variant = rawKey(base.proto, base.family, [...base.src], [...base.dst], base.srcPort, base.dstPort);
      mutate(variant);
      if (variant.family === 4) {
        // A family-4 key carries zeros in words 1..3 (as parseAddrInto leaves them).
        variant.src.fill(0, 1);
        variant.dst.fill(0, 1);
        base.src.fill(0, 1);
        base.dst.fill(0, 1);
      }
      expect(keyText(variant)).not.toBe(keyText(base));
      const t = new FlowTable(1, 1000);
      const e = t.register(base, 0)!;
      expect(t.lookup(variant, 1), `pair ${i}`).toBeUndefined();
      expect(t.lookup(base, 1)).toBe(e);
    }
  });

  it('the entry copies the key: changing the caller\'s FlowKey afterwards changes nothing', () => {
    const t = new FlowTable(2, 1000);
    const k = key(V6);
    const e = t.register(k, 0)!;
    k.src[3] = 99;
    k.dstPort = 1;
    expect(t.lookup(k, 1)).toBeUndefined();
    expect(t.lookup(key(V6), 1)).toBe(e);
    expect(entryText(e)).toBe(keyText(key(V6)));
  });

  it('toKey fills a FlowKey with the entry\'s 5-tuple', () => {
    const t = new FlowTable(2, 1000);
    for (const spec of [V4, V6]) {
      const e = t.register(key(spec), 0)!;
      const out = new FlowKey();
      expect(e.toKey(out)).toBe(out);
      expect(keyText(out)).toBe(keyText(key(spec)));
    }
  });

  it('remove is idempotent, and removing a stale entry does not remove the flow now in its slot', () => {
    const t = new FlowTable(1, 1000);
    const a = t.register(key(V4), 0)!;
    t.remove(a);
    t.remove(a);
    expect(t.size).toBe(0);
    const b = t.register(key(V6), 1)!;
    expect(b.slot).toBe(0); // the freed slot is reused
    t.remove(a); // a's slot is b's now: nothing happens
    expect(t.size).toBe(1);
    expect(t.lookup(key(V6), 2)).toBe(b);
    // An entry that was never registered is ignored too.
    t.remove(new FlowEntry());
    expect(t.size).toBe(1);
  });

  it('a removed entry keeps its own addresses when its slot (and address column) is reused', () => {
    const t = new FlowTable(1, 1000);
    const a = t.register(key(V6), 0)!;
    t.remove(a);
    const b = t.register(key(V4), 1)!;
    expect(b.slot).toBe(0);
    expect(entryText(a)).toBe(keyText(key(V6)));
    expect([...a.src]).toEqual([...key(V6).src]);
    expect([...a.dst]).toEqual([...key(V6).dst]);
    expect(entryText(b)).toBe(keyText(key(V4)));
  });

  it('removing from the middle of a hash chain keeps the rest of the chain reachable', () => {
    // 200 flows over 256 buckets: many chains. Remove every third, then check every flow.
    const t = new FlowTable(200, 1000);
    const keys = Array.from({ length: 200 }, (_, i) => key({ ...V4, srcPort: 1000 + i }));
    const entries = keys.map((k) => t.register(k, 0)!);
    const removed = new Set<number>();
    for (let i = 0; i < 200; i += 3) {
      t.remove(entries[i]!);
      removed.add(i);
    }
    for (let i = 0; i < 200; i++) {
      const found = t.lookup(keys[i]!, 1);
      if (removed.has(i)) expect(found, `flow ${i}`).toBeUndefined();
      else expect(found, `flow ${i}`).toBe(entries[i]);
    }
    expect(t.size).toBe(200 - removed.size);
    expect(new Set(t.all())).toEqual(new Set(entries.filter((_, i) => !removed.has(i))));
  });
});

describe('FlowEntry: fields kept in the table\'s records', () => {
  // Values that a plain object field would keep as doubles: Date.now() (no Smi), relay ids up to
  // 2^53, and a fractional number, which must come back exactly.
  const FIELDS = [
    { state: 'allowed', revision: 2 ** 40 + 3, lastSeen: 1_795_319_197_948, handle: 2 ** 53 - 15 },
    { state: 'denied', revision: 7, lastSeen: 0.5, handle: 1 },
    { state: 'closed', revision: 0, lastSeen: -1, handle: 0 },
    { state: 'pending', revision: 1, lastSeen: 2 ** 31, handle: 63_920 },
  ] as const;

  function fields(e: FlowEntry) {
    return { state: e.state, revision: e.revision, lastSeen: e.lastSeen, handle: e.handle };
  }

  it('every field round-trips, and entries in neighbouring slots do not disturb each other', () => {
    const t = new FlowTable(FIELDS.length, 1000);
    const specs = [V4, V6, { ...V4, proto: PROTO_UDP, srcPort: 0, dstPort: 65535 }, { ...V6, proto: PROTO_SCTP, srcPort: 65535, dstPort: 0 }];
    const entries = specs.map((spec, i) => {
      const e = t.register(key(spec), i)!;
      expect(fields(e)).toEqual({ state: 'pending', revision: 0, lastSeen: i, handle: 0 });
      return e;
    });
    entries.forEach((e, i) => Object.assign(e, FIELDS[i]));
    entries.forEach((e, i) => {
      expect(fields(e)).toEqual(FIELDS[i]);
      expect(entryText(e)).toBe(keyText(key(specs[i]!)));
      expect(t.lookup(key(specs[i]!), 1_800_000_000_000 + i)).toBe(e);
      expect(e.lastSeen).toBe(1_800_000_000_000 + i);
      expect(e.state).toBe(FIELDS[i]!.state); // a lookup changes lastSeen only
    });
  });

  it('a removed entry keeps every field, while its slot is reused and the new flow is written', () => {
    const t = new FlowTable(1, 1000);
    const a = t.register(key(V6), 5)!;
    Object.assign(a, FIELDS[0]);
    t.remove(a);
    const b = t.register(key({ ...V4, proto: PROTO_UDP }), 6)!;
    expect(b.slot).toBe(0);
    Object.assign(b, FIELDS[1]);
    expect(fields(a)).toEqual(FIELDS[0]);
    expect(entryText(a)).toBe(keyText(key(V6)));
    // And the other way round: writing the removed entry leaves the slot's new flow alone.
    a.state = 'closed';
    a.handle = 0;
    a.dst[3] = 99;
    expect(fields(b)).toEqual(FIELDS[1]);
    expect(entryText(b)).toBe(keyText(key({ ...V4, proto: PROTO_UDP })));
    expect(t.lookup(key({ ...V4, proto: PROTO_UDP }), 7)).toBe(b);
  });

  it('removed entries keep their fields across many removals (their copies fill block after block)', () => {
    const t = new FlowTable(2, 1000);
    const removed: FlowEntry[] = [];
    for (let i = 0; i < 300; i++) {
      const e = t.register(key({ ...V6, srcPort: i }), i)!;
      e.handle = 2 ** 40 + i;
      e.revision = i;
      e.state = i % 2 ? 'allowed' : 'denied';
      t.remove(e);
      removed.push(e);
    }
    removed.forEach((e, i) => {
      expect(e.slot).toBe(-1);
      expect(entryText(e)).toBe(keyText(key({ ...V6, srcPort: i })));
      expect(fields(e)).toEqual({ state: i % 2 ? 'allowed' : 'denied', revision: i, lastSeen: i, handle: 2 ** 40 + i });
    });
    // Writing one removed entry changes no other.
    removed[100]!.lastSeen = -5;
    expect(removed.map((e) => e.lastSeen)).toEqual(removed.map((_, i) => (i === 100 ? -5 : i)));
  });

  it('an entry made outside a table starts as before (family 4, the rest 0, pending) and holds what is set on it', () => {
    const e = new FlowEntry();
    expect(e.slot).toBe(-1);
    expect({ ...fields(e), proto: e.proto, family: e.family, srcPort: e.srcPort, dstPort: e.dstPort }).toEqual({
      state: 'pending', revision: 0, lastSeen: 0, handle: 0, proto: 0, family: 4, srcPort: 0, dstPort: 0,
    });
    e.proto = PROTO_UDP;
    e.family = 6;
    e.srcPort = 65535;
    e.dstPort = 53;
    e.src.set(key(V6).src);
    e.dst.set(key(V6).dst);
    Object.assign(e, FIELDS[0]);
    expect(fields(e)).toEqual(FIELDS[0]);
    expect(entryText(e)).toBe(keyText(key({ ...V6, proto: PROTO_UDP, srcPort: 65535, dstPort: 53 })));
  });

  it('rejects a state that is not one of the four', () => {
    const e = new FlowEntry();
    expect(() => {
      e.state = 'open' as FlowState;
    }).toThrow(TypeError);
    expect(e.state).toBe('pending');
  });
});

describe('FlowTable: stats', () => {
  it('counts lookups, hits and entries', () => {
    const t = new FlowTable(8, 1000);
    expect(t.stats).toEqual({ entries: 0, lookups: 0, hits: 0, evictions: 0, refusals: 0 });
    const a = t.register(key(V4), 0)!;
    t.register(key(V6), 0);
    expect(t.stats).toEqual({ entries: 2, lookups: 0, hits: 0, evictions: 0, refusals: 0 });
    t.lookup(key(V4), 1); // hit
    t.lookup(key(V6), 1); // hit
    t.lookup(key({ ...V4, dstPort: 1 }), 1); // miss
    expect(t.stats).toMatchObject({ entries: 2, lookups: 3, hits: 2 });
    t.remove(a);
    t.lookup(key(V4), 2); // miss now
    expect(t.stats).toEqual({ entries: 1, lookups: 4, hits: 2, evictions: 0, refusals: 0 });
    expect(t.size).toBe(1);
  });

  it('all() is a copy: a callback may remove entries while the caller iterates', () => {
    const t = new FlowTable(8, 1000);
    for (let i = 0; i < 5; i++) t.register(key({ ...V4, srcPort: i + 1 }), 0);
    const list = t.all();
    for (const e of list) t.remove(e);
    expect(list).toHaveLength(5);
    expect(t.size).toBe(0);
    expect(t.all()).toEqual([]);
  });
});

describe('FlowTable: capacity', () => {
  it.each([1000, 65_536])('allocates up front what allocatedBytes says (%i slots): ArrayBuffers exactly, the entries array in the heap', (capacity) => {
    const before = process.memoryUsage();
    const t = new FlowTable(capacity, 1000);
    const after = process.memoryUsage();
    const a = t.allocatedBytes;
    expect(after.arrayBuffers - before.arrayBuffers).toBe(a.arrayBuffers);
    // 64-byte records, and a chain, a free-list and at least one bucket word per slot.
    expect(a.arrayBuffers).toBeGreaterThanOrEqual(capacity * (64 + 12));
    expect(a.arrayBuffers).toBeLessThanOrEqual(capacity * (64 + 16) + 4096);
    expect(a.entries).toBe(capacity * 8);
    if (capacity >= 65_536) expect(after.heapUsed - before.heapUsed).toBeGreaterThanOrEqual(a.entries); // small ones may fit in the young space already counted
  });

  function full(capacity: number, idleMs: number, times: readonly number[]) {
    const t = new FlowTable(capacity, idleMs);
    const closes: string[][] = [];
    const entries = times.map((now, i) => {
      const e = t.register(key({ ...V4, srcPort: 1000 + i }), now)!;
      e.state = 'allowed';
      const reasons: string[] = [];
      closes.push(reasons);
      e.close = (reason) => reasons.push(reason);
      return e;
    });
    return { t, entries, closes };
  }

  it('refuses a new flow when full and no flow is idle: undefined, counted, nothing evicted or closed', () => {
    const { t, entries, closes } = full(3, 100, [0, 10, 20]);
    const k = key({ ...V4, srcPort: 9999 });
    expect(t.register(k, 99)).toBeUndefined(); // flow 0 is idle only from 100
    expect(t.register(k, 50)).toBeUndefined();
    expect(t.stats).toMatchObject({ entries: 3, refusals: 2, evictions: 0 });
    expect(closes).toEqual([[], [], []]);
    for (const [i, e] of entries.entries()) {
      expect(e.state).toBe('allowed');
      expect(t.lookup(key({ ...V4, srcPort: 1000 + i }), 60)).toBe(e);
    }
    expect(t.lookup(k, 60)).toBeUndefined();
  });

  it('evicts the least recently seen idle flow (idle from exactly idleMs), closing it with a reason', () => {
    const { t, entries, closes } = full(3, 100, [0, 10, 20]);
    const k = key({ ...V4, srcPort: 9999 });
    const e = t.register(k, 100)!; // flow 0: 100 - 0 >= 100, the only idle one
    expect(e).toBeDefined();
    expect(closes[0]).toHaveLength(1);
    expect(closes[0]![0]).toMatch(/idle/);
    expect(closes[1]).toEqual([]);
    expect(closes[2]).toEqual([]);
    expect(entries[0]!.state).toBe('closed');
    expect(entries[0]!.slot).toBe(-1);
    expect(t.stats).toMatchObject({ entries: 3, evictions: 1, refusals: 0 });
    expect(t.lookup(key({ ...V4, srcPort: 1000 }), 101)).toBeUndefined();
    expect(t.lookup(k, 101)).toBe(e);
  });

  it('a lookup refreshes a flow: the eviction takes the least recently SEEN idle flow, not the oldest', () => {
    const { t, entries, closes } = full(3, 100, [0, 10, 20]);
    t.lookup(key({ ...V4, srcPort: 1000 }), 30); // flow 0 seen at 30
    // At 200 all three are idle; least recently seen is flow 1 (10), then flow 2 (20), then flow 0 (30).
    const order: number[] = [];
    for (let n = 0; n < 3; n++) {
      expect(t.register(key({ ...V4, srcPort: 5000 + n }), 200)).toBeDefined();
      order.push(closes.findIndex((c, i) => c.length === 1 && !order.includes(i)));
    }
    expect(order).toEqual([1, 2, 0]);
    expect(entries.every((e) => e.state === 'closed')).toBe(true);
    expect(closes.map((c) => c.length)).toEqual([1, 1, 1]);
    // The three new flows are not idle at 250: the next one is refused.
    expect(t.register(key({ ...V4, srcPort: 6000 }), 250)).toBeUndefined();
    expect(t.stats).toMatchObject({ entries: 3, evictions: 3, refusals: 1 });
  });

  it('a close callback that removes its own entry (as the relay does) is harmless', () => {
    const t = new FlowTable(1, 10);
    const a = t.register(key(V4), 0)!;
    let calls = 0;
    a.close = () => {
      calls++;
      t.remove(a);
    };
    const b = t.register(key(V6), 10)!;
    expect(calls).toBe(1);
    expect(t.size).toBe(1);
    expect(t.lookup(key(V6), 11)).toBe(b);
  });

  it('takes unused slots lowest first, and reuses the last freed slot first', () => {
    const t = new FlowTable(3, 1_000_000);
    const [a, b, c] = [1, 2, 3].map((i) => t.register(key({ ...V4, srcPort: i }), 0)!);
    expect([a!.slot, b!.slot, c!.slot]).toEqual([0, 1, 2]);
    t.remove(b!);
    t.remove(a!);
    expect(t.register(key({ ...V4, srcPort: 4 }), 0)!.slot).toBe(0);
    expect(t.register(key({ ...V4, srcPort: 5 }), 0)!.slot).toBe(1);
    expect(t.register(key({ ...V4, srcPort: 6 }), 0)).toBeUndefined();
    expect(t.stats).toMatchObject({ entries: 3, refusals: 1 });
  });

  it('a table of capacity 1 holds one flow; removal frees its place', () => {
    const t = new FlowTable(1, 1_000_000);
    const a = t.register(key(V4), 0)!;
    expect(t.register(key(V6), 1)).toBeUndefined();
    t.remove(a);
    expect(t.register(key(V6), 2)).toBeDefined();
    expect(t.stats).toMatchObject({ entries: 1, refusals: 1, evictions: 0 });
  });
});

// ---------------------------------------------------------------------------------------------
// Properties

const arbWord = fc.oneof(fc.constantFrom(0, 1, 0xffffffff, 0x0a000001), fc.nat({ max: 0xffffffff }));
const arbAddr = fc.array(arbWord, { minLength: 4, maxLength: 4 });
const arbPort = fc.oneof(fc.constantFrom(0, 53, 80, 65535), fc.integer({ min: 0, max: 65535 }));
const arbKey = fc
  .record({
    proto: fc.constantFrom(PROTO_TCP, PROTO_UDP, PROTO_SCTP),
    family: fc.constantFrom<Family>(4, 6),
    src: arbAddr,
    dst: arbAddr,
    srcPort: arbPort,
    dstPort: arbPort,
  })
  .map((r) => rawKey(r.proto, r.family, r.src, r.dst, r.srcPort, r.dstPort));

describe('FlowTable: properties', () => {
  it('distinct keys never collide: each finds its own entry, before and after removing others', () => {
    fc.assert(
      fc.property(fc.uniqueArray(arbKey, { selector: keyText, minLength: 1, maxLength: 120 }), fc.infiniteStream(fc.boolean()), (keys, drops) => {
        const t = new FlowTable(keys.length, 1000);
        const entries = keys.map((k) => t.register(k, 0)!);
        expect(entries.every((e) => e !== undefined)).toBe(true);
        for (const [i, k] of keys.entries()) expect(t.lookup(k, 1)).toBe(entries[i]);
        const iter = drops[Symbol.iterator]();
        const dropped = keys.map(() => iter.next().value === true);
        for (const [i, e] of entries.entries()) if (dropped[i]) t.remove(e);
        for (const [i, k] of keys.entries()) expect(t.lookup(k, 2)).toBe(dropped[i] ? undefined : entries[i]);
        expect(t.size).toBe(dropped.filter((d) => !d).length);
        expect(t.stats.hits).toBe(keys.length + t.size);
      }),
      { numRuns: 200 },
    );
  });

  // A small pool of keys, several pairs differing in one field, so that operations meet the
  // same flows often and hash chains form.
  const POOL: readonly FlowKey[] = [
    key(V4),
    key({ ...V4, srcPort: V4.srcPort + 1 }),
    key({ ...V4, proto: PROTO_UDP }),
    key({ ...V4, dst: '198.18.1.21' }),
    key({ ...V4, src: '10.0.0.1', dst: '10.0.0.2' }),
    key({ ...V4, src: 'a00:1::', dst: 'a00:2::' }), // same words, family 6
    key(V6),
    key({ ...V6, src: '2001:2:0:3::b' }),
    key({ ...V6, dst: '2001:2:0:1:1::14' }),
    key({ ...V6, dstPort: 53, proto: PROTO_UDP }),
  ];

  type Op =
    | { op: 'register'; k: number }
    | { op: 'lookup'; k: number }
    | { op: 'remove'; k: number }
    | { op: 'advance'; ms: number };

  const arbOp: fc.Arbitrary<Op> = fc.oneof(
    { weight: 4, arbitrary: fc.record({ op: fc.constant('register' as const), k: fc.nat({ max: POOL.length - 1 }) }) },
    { weight: 3, arbitrary: fc.record({ op: fc.constant('lookup' as const), k: fc.nat({ max: POOL.length - 1 }) }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('remove' as const), k: fc.nat({ max: POOL.length - 1 }) }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('advance' as const), ms: fc.constantFrom(0, 1, 5, 10, 25, 60) }) },
  );

  it('behaves like a Map model over random register/lookup/remove/time-advance sequences', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 6 }), fc.constantFrom(0, 10, 50), fc.array(arbOp, { maxLength: 80 }), (capacity, idleMs, ops) => {
        const t = new FlowTable(capacity, idleMs);
        interface M {
          entry: FlowEntry;
          lastSeen: number;
          closes: string[];
        }
        const model = new Map<number, M>();
        const stats = { entries: 0, lookups: 0, hits: 0, evictions: 0, refusals: 0 };
        const closedReasons = new Map<number, string[]>();
        let now = 0;
        for (const o of ops) {
          switch (o.op) {
            case 'advance':
              now += o.ms;
              break;
            case 'lookup': {
              stats.lookups++;
              const m = model.get(o.k);
              const got = t.lookup(POOL[o.k]!, now);
              if (m) {
                stats.hits++;
                m.lastSeen = now;
                expect(got).toBe(m.entry);
              } else {
                expect(got).toBeUndefined();
              }
              break;
            }
            case 'remove': {
              const m = model.get(o.k);
              if (m) {
                t.remove(m.entry);
                model.delete(o.k);
                stats.entries--;
              }
              break;
            }
            case 'register': {
              // As the data plane does: only flows not already in the table are registered.
              if (model.has(o.k)) break;
              let victims: number[] = [];
              if (model.size === capacity) {
                const idle = [...model].filter(([, m]) => now - m.lastSeen >= idleMs);
                const oldest = Math.min(...idle.map(([, m]) => m.lastSeen));
                victims = idle.filter(([, m]) => m.lastSeen === oldest).map(([k]) => k);
              }
              const e = t.register(POOL[o.k]!, now);
              if (model.size === capacity && victims.length === 0) {
                stats.refusals++;
                expect(e).toBeUndefined();
                for (const m of model.values()) expect(m.closes).toEqual([]);
                break;
              }
              expect(e).toBeDefined();
              if (model.size === capacity) {
                // Exactly one of the least recently seen idle flows was evicted and closed.
                const evicted = victims.filter((k) => model.get(k)!.closes.length > 0);
                expect(evicted).toHaveLength(1);
                const v = evicted[0]!;
                const vm = model.get(v)!;
                expect(vm.closes).toHaveLength(1);
                expect(vm.entry.state).toBe('closed');
                closedReasons.set(v, vm.closes);
                model.delete(v);
                stats.evictions++;
                stats.entries--;
              }
              const closes: string[] = [];
              e!.close = (reason) => closes.push(reason);
              model.set(o.k, { entry: e!, lastSeen: now, closes });
              stats.entries++;
              break;
            }
          }
          // After every operation: the same stats, the same live set, and nobody else closed.
          expect(t.stats).toEqual(stats);
          expect(t.size).toBe(model.size);
          expect(new Set(t.all())).toEqual(new Set([...model.values()].map((m) => m.entry)));
          for (const m of model.values()) {
            expect(m.closes).toEqual([]);
            expect(m.entry.lastSeen).toBe(m.lastSeen);
          }
        }
        // Finally every pool key is found iff the model has it (lookups counted like any other).
        for (let k = 0; k < POOL.length; k++) {
          expect(t.lookup(POOL[k]!, now)).toBe(model.get(k)?.entry);
        }
        for (const reasons of closedReasons.values()) expect(reasons).toHaveLength(1);
      }),
      { numRuns: 500 },
    );
  });
});
