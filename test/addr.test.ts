// The address parser's fast path agrees with ipaddr.js, and the small structures built on
// addresses (address table, CIDR trie, identity sets) agree with naive models.
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { describe, expect, it } from 'vitest';
import { AddrTable } from '../src/policy/addr-table.js';
import { formatAddr, parseAddrInto, parseCidr } from '../src/policy/addr.js';
import { CidrTrie } from '../src/policy/cidr-trie.js';
import { IdSet } from '../src/policy/idset.js';

const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => new ipaddr.IPv4(o));
const v6 = fc.array(fc.oneof(fc.constant(0), fc.nat(0xffff)), { minLength: 8, maxLength: 8 }).map((p) => new ipaddr.IPv6(p));

function viaIpaddr(text: string): number[] | undefined {
  if (!ipaddr.isValid(text)) return undefined;
  const bytes = ipaddr.parse(text).toByteArray();
  const words = [0, 0, 0, 0];
  for (let i = 0; i < bytes.length; i++) words[i >> 2] = ((words[i >> 2]! << 8) | bytes[i]!) >>> 0;
  return words;
}

describe('parseAddrInto', () => {
  it('agrees with ipaddr.js on every textual form of random addresses', () => {
    fc.assert(
      fc.property(fc.oneof(v4, v6), (a) => {
        const forms = a.kind() === 'ipv4' ? [a.toString()] : [a.toString(), (a as ipaddr.IPv6).toNormalizedString(), a.toString().toUpperCase()];
        for (const text of forms) {
          const w = new Uint32Array(4);
          const fam = parseAddrInto(text, w);
          expect(fam).toBe(a.kind() === 'ipv4' ? 4 : 6);
          expect(Array.from(w)).toEqual(viaIpaddr(text));
          expect(formatAddr(fam as 4 | 6, w)).toBe(a.toString());
        }
      }),
      { numRuns: 2000 },
    );
  });

  it.each(['', '1.2.3', '1.2.3.4.5', '01.2.3.4', '256.1.1.1', '1..2.3', ':::', '1:2:3:4:5:6:7:8:9', '1::2::3', 'g::1', '12345::', '1:', ':1', 'abc'])(
    'rejects or defers %j exactly like ipaddr.js',
    (text) => {
      const w = new Uint32Array(4);
      const fam = parseAddrInto(text, w);
      const ref = viaIpaddr(text);
      if (ref === undefined) expect(fam).toBe(0);
      else expect(Array.from(w)).toEqual(ref);
    },
  );

  it('handles embedded IPv4 and zero-compressed edges through the general path', () => {
    const w = new Uint32Array(4);
    expect(parseAddrInto('::ffff:198.18.0.1', w)).toBe(6);
    expect(Array.from(w)).toEqual(viaIpaddr('::ffff:198.18.0.1'));
    expect(parseAddrInto('::', w)).toBe(6);
    expect(Array.from(w)).toEqual([0, 0, 0, 0]);
    expect(parseAddrInto('2001:2::', w)).toBe(6);
    expect(Array.from(w)).toEqual([0x20010002, 0, 0, 0]);
  });
});

describe('AddrTable', () => {
  it('maps every inserted address to its value and nothing else', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.oneof(v4, v6).map((a) => a.toString()), { maxLength: 200 }), fc.array(fc.oneof(v4, v6).map((a) => a.toString()), { maxLength: 50 }), (ins, probes) => {
        const t = new AddrTable(ins.length);
        const w = new Uint32Array(4);
        ins.forEach((ip, i) => expect(t.insert(parseAddrInto(ip, w) as 4 | 6, w, i)).toBe(-1));
        ins.forEach((ip, i) => expect(t.get(parseAddrInto(ip, w) as 4 | 6, w)).toBe(i));
        for (const ip of probes) expect(t.get(parseAddrInto(ip, w) as 4 | 6, w)).toBe(ins.indexOf(ip));
      }),
    );
  });

  it('keeps IPv4 and IPv6 apart even when the first word is equal', () => {
    const t = new AddrTable(2);
    const w = new Uint32Array(4);
    parseAddrInto('198.18.0.1', w);
    t.insert(4, w, 1);
    const w6 = new Uint32Array([w[0]!, 0, 0, 0]);
    expect(t.get(6, w6)).toBe(-1);
  });
});

describe('CidrTrie', () => {
  const cidr4 = fc.tuple(v4, fc.nat(32)).map(([a, len]) => ipaddr.parseCIDR(`${a.toString()}/${len}`)).map(([a, len]) => `${ipaddr.IPv4.networkAddressFromCIDR(`${a.toString()}/${len}`).toString()}/${len}`);
  it('stamps exactly the blocks that contain an address, minus their excepts (naive model)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(cidr4, fc.array(cidr4, { maxLength: 2 })), { maxLength: 12 }), fc.array(v4, { maxLength: 30 }), (blocks, probes) => {
        const trie = new CidrTrie(4);
        // Keep excepts strictly inside their cidr, as validation guarantees.
        const valid = blocks.map(([c, ex]) => [c, ex.filter((e) => inside(e, c))] as const);
        valid.forEach(([c, ex], id) => {
          const p = parseCidr(c)!;
          trie.add(p.words, p.prefix, id, false);
          for (const e of ex) {
            const q = parseCidr(e)!;
            trie.add(q.words, q.prefix, id, true);
          }
        });
        trie.seal();
        const marks = new Int32Array(valid.length);
        let stamp = 0;
        for (const a of probes) {
          const w = new Uint32Array(4);
          parseAddrInto(a.toString(), w);
          trie.lookup(w, marks, ++stamp);
          valid.forEach(([c, ex], id) => {
            const want = a.match(ipaddr.parseCIDR(c) as [ipaddr.IPv4, number]) && !ex.some((e) => a.match(ipaddr.parseCIDR(e) as [ipaddr.IPv4, number]));
            expect(marks[id] === stamp, `${a.toString()} in ${c} except ${ex.join(',')}`).toBe(want);
          });
        }
      }),
      { numRuns: 300 },
    );
  });

  function inside(inner: string, outer: string): boolean {
    const [ia, il] = ipaddr.parseCIDR(inner);
    const [, ol] = ipaddr.parseCIDR(outer);
    return il > ol && ia.match(ipaddr.parseCIDR(outer));
  }
});

describe('IdSet', () => {
  it('has() and with() agree with a plain Set for dense and sparse members', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.oneof(fc.nat(64), fc.nat(100_000)), { maxLength: 100 }), fc.array(fc.nat(100_000), { maxLength: 30 }), fc.nat(100_000), (ids, probes, extra) => {
        const sorted = [...ids].sort((a, b) => a - b);
        const set = IdSet.fromSorted(sorted);
        const plain = new Set(ids);
        for (const p of [...probes, ...ids]) expect(set.has(p)).toBe(plain.has(p));
        expect(set.toArray()).toEqual(sorted);
        const bigger = set.with(extra);
        plain.add(extra);
        for (const p of [...probes, extra, ...ids]) expect(bigger.has(p)).toBe(plain.has(p));
        expect(set.has(extra)).toBe(ids.includes(extra)); // the original is unchanged
      }),
    );
  });
});
