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

/** Parses a textual address into `out` (4 words) and returns its family, or 0 if invalid. */
export function parseAddrInto(text: string, out: Uint32Array): Family | 0 {
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
