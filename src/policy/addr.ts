// Addresses as numbers. The hot path never sees address strings: a flow carries its addresses
// as 32-bit words (IPv4 in word 0; IPv6 in words 0..3, most significant first).
import ipaddr from 'ipaddr.js';
import type { Protocol } from '../model/types.js';

export type Family = 4 | 6;

/** IANA protocol numbers, the form the data plane sees. */
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const PROTO_SCTP = 132;

export function protocolNumber(p: Protocol): number {
  return p === 'TCP' ? PROTO_TCP : p === 'UDP' ? PROTO_UDP : PROTO_SCTP;
}

export function protocolName(n: number): Protocol | undefined {
  return n === PROTO_TCP ? 'TCP' : n === PROTO_UDP ? 'UDP' : n === PROTO_SCTP ? 'SCTP' : undefined;
}

/**
 * Parses a textual address into `out` (4 words) and returns its family, or 0 if invalid.
 * Compile parses every pod address, 300,000 of them at the largest benchmark size; the common
 * plain forms (dotted quad without leading zeros, IPv6 hex groups with at most one `::`) take a
 * scan of the string, anything else goes to ipaddr.js. test/addr.test.ts checks both agree.
 */
export function parseAddrInto(text: string, out: Uint32Array): Family | 0 {
  const fast = parsePlain(text, out);
  if (fast !== 0) return fast;
  return parseWithIpaddr(text, out);
}

function parsePlain(text: string, out: Uint32Array): Family | 0 {
  const n = text.length;
  if (n === 0 || n > 39) return 0;
  if (text.indexOf(':') < 0) {
    // a.b.c.d, each 0..255, no leading zeros
    let v = 0;
    let part = 0;
    let digits = 0;
    let parts = 0;
    for (let i = 0; i <= n; i++) {
      const c = i < n ? text.charCodeAt(i) : 46;
      if (c === 46) {
        if (digits === 0 || parts === 4) return 0;
        v = v * 256 + part;
        parts++;
        part = 0;
        digits = 0;
      } else if (c >= 48 && c <= 57) {
        if (digits > 0 && part === 0) return 0; // leading zero
        part = part * 10 + (c - 48);
        if (++digits > 3 || part > 255) return 0;
      } else return 0;
    }
    if (parts !== 4) return 0;
    out[0] = v >>> 0;
    out[1] = 0;
    out[2] = 0;
    out[3] = 0;
    return 4;
  }
  if (text.indexOf('.') >= 0 || text.indexOf('%') >= 0) return 0; // embedded IPv4, zone: slow path
  // Up to 8 hex groups of 1-4 digits, at most one "::".
  const groups = [0, 0, 0, 0, 0, 0, 0, 0];
  let count = 0;
  let gap = -1; // group index where "::" stands
  let i = 0;
  if (text.charCodeAt(0) === 58) {
    if (text.charCodeAt(1) !== 58) return 0;
    gap = 0;
    i = 2;
    if (i === n) return writeV6(groups, 0, 0, out);
  }
  for (;;) {
    let g = 0;
    let d = 0;
    while (i < n) {
      const c = text.charCodeAt(i);
      const h = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
      if (h < 0) break;
      g = g * 16 + h;
      if (++d > 4) return 0;
      i++;
    }
    if (d === 0 || count === 8) return 0;
    groups[count++] = g;
    if (i === n) break;
    if (text.charCodeAt(i) !== 58) return 0;
    i++;
    if (i < n && text.charCodeAt(i) === 58) {
      if (gap >= 0) return 0;
      gap = count;
      i++;
      if (i === n) break;
    } else if (i === n) return 0;
  }
  if (gap < 0 ? count !== 8 : count > 7) return 0;
  return writeV6(groups, count, gap, out);
}

function writeV6(groups: number[], count: number, gap: number, out: Uint32Array): Family {
  const full = [0, 0, 0, 0, 0, 0, 0, 0];
  if (gap < 0) {
    for (let k = 0; k < 8; k++) full[k] = groups[k]!;
  } else {
    for (let k = 0; k < gap; k++) full[k] = groups[k]!;
    const tail = count - gap;
    for (let k = 0; k < tail; k++) full[8 - tail + k] = groups[gap + k]!;
  }
  for (let k = 0; k < 4; k++) out[k] = ((full[2 * k]! << 16) | full[2 * k + 1]!) >>> 0;
  return 6;
}

function parseWithIpaddr(text: string, out: Uint32Array): Family | 0 {
  if (!ipaddr.isValid(text)) return 0;
  const a = ipaddr.parse(text);
  if (a.kind() === 'ipv4') {
    const o = (a as ipaddr.IPv4).octets;
    out[0] = ((o[0]! << 24) | (o[1]! << 16) | (o[2]! << 8) | o[3]!) >>> 0;
    out[1] = 0;
    out[2] = 0;
    out[3] = 0;
    return 4;
  }
  const p = (a as ipaddr.IPv6).parts;
  for (let i = 0; i < 4; i++) out[i] = ((p[2 * i]! << 16) | p[2 * i + 1]!) >>> 0;
  return 6;
}

export interface ParsedAddr {
  readonly family: Family;
  readonly words: Uint32Array;
}

export function parseAddr(text: string): ParsedAddr | undefined {
  const words = new Uint32Array(4);
  const family = parseAddrInto(text, words);
  return family === 0 ? undefined : { family, words };
}

export function formatAddr(family: Family, w: Uint32Array): string {
  if (family === 4) {
    const v = w[0]!;
    return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
  }
  const parts: number[] = [];
  for (let i = 0; i < 4; i++) parts.push(w[i]! >>> 16, w[i]! & 0xffff);
  return new ipaddr.IPv6(parts).toString();
}

/** Parses `a.b.c.d/len` or an IPv6 CIDR (already validated upstream). */
export function parseCidr(text: string): { family: Family; words: Uint32Array; prefix: number } | undefined {
  const slash = text.lastIndexOf('/');
  if (slash < 0) return undefined;
  const prefix = Number(text.slice(slash + 1));
  const words = new Uint32Array(4);
  const family = parseAddrInto(text.slice(0, slash), words);
  if (family === 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)) return undefined;
  return { family, words, prefix };
}

/** Bit i (0 = most significant) of a 4-word address. */
export function addrBit(w: Uint32Array, i: number): number {
  return (w[i >>> 5]! >>> (31 - (i & 31))) & 1;
}
