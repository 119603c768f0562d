// Strict IP and CIDR parsing. ipaddr.js accepts forms the Kubernetes API and most humans would
// read differently (IPv4 with leading zeros, octal or hex parts, fewer than four parts; IPv6
// zone ids); those are rejected here. The canonical text form is ipaddr.js `toString()`.
import ipaddr from 'ipaddr.js';

export type Family = 4 | 6;

export type IpResult = { ok: true; family: Family; text: string; bytes: number[] } | { ok: false; reason: string };

export interface Cidr {
  readonly family: Family;
  /** Network bytes, host bits cleared. */
  readonly bytes: readonly number[];
  readonly prefix: number;
  /** Canonical `network/prefix`. */
  readonly text: string;
}

export type CidrResult = ({ ok: true } & Cidr) | { ok: false; reason: string };

const MAX_ADDR_TEXT = 64;

/** Parses one IP address, rejecting non-canonical IPv4 forms, zone ids and IPv4-mapped IPv6. */
export function parseIp(text: string): IpResult {
  if (text.length === 0 || text.length > MAX_ADDR_TEXT) return { ok: false, reason: 'not an IP address' };
  if (!text.includes(':')) {
    if (!ipaddr.IPv4.isValidFourPartDecimal(text)) {
      return { ok: false, reason: 'not an IPv4 address in dotted-decimal form (four parts, no leading zeros)' };
    }
    const a = ipaddr.IPv4.parse(text);
    return { ok: true, family: 4, text: a.toString(), bytes: a.toByteArray() };
  }
  if (text.includes('%')) return { ok: false, reason: 'IPv6 zone ids (%...) are not allowed' };
  if (!ipaddr.IPv6.isValid(text)) return { ok: false, reason: 'not an IPv6 address' };
  const embedded = /[:]([^:]*\.[^:]*)$/.exec(text)?.[1];
  if (embedded !== undefined && !ipaddr.IPv4.isValidFourPartDecimal(embedded)) {
    return { ok: false, reason: 'the embedded IPv4 part is not in dotted-decimal form' };
  }
  const a = ipaddr.IPv6.parse(text);
  if (a.isIPv4MappedAddress()) {
    return { ok: false, reason: 'IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are not allowed; write the IPv4 address' };
  }
  return { ok: true, family: 6, text: a.toString(), bytes: a.toByteArray() };
}

/**
 * Parses `address/prefix`. Host bits may be set and are cleared, as the API server's legacy
 * CIDR parser (netutils.ParseCIDRSloppy) does: `198.18.1.5/16` is `198.18.0.0/16`.
 */
export function parseCidr(text: string): CidrResult {
  const slash = text.indexOf('/');
  if (slash < 0) return { ok: false, reason: 'not a CIDR: missing /prefix-length' };
  const ip = parseIp(text.slice(0, slash));
  if (!ip.ok) return ip;
  const prefixText = text.slice(slash + 1);
  const max = ip.family === 4 ? 32 : 128;
  if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > max) {
    return { ok: false, reason: `the prefix length must be a number from 0 to ${max}` };
  }
  const prefix = Number(prefixText);
  const bytes = maskBytes(ip.bytes, prefix);
  const network = ipaddr.fromByteArray(bytes).toString();
  return { ok: true, family: ip.family, bytes, prefix, text: `${network}/${prefix}` };
}

function maskBytes(bytes: readonly number[], prefix: number): number[] {
  return bytes.map((b, i) => {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    return b & ((0xff << (8 - bits)) & 0xff);
  });
}

/** True when `inner` is strictly inside `outer`: same family, longer prefix, contained. */
export function strictlyInside(inner: Cidr, outer: Cidr): boolean {
  if (inner.family !== outer.family || inner.prefix <= outer.prefix) return false;
  const masked = maskBytes(inner.bytes, outer.prefix);
  return masked.every((b, i) => b === outer.bytes[i]);
}
