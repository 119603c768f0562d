// The bridge-port redirect (src/dataplane/bridge-redirect.ts) through a fake system: which
// commands it runs as bridges and ports come and go, what it refuses, what it logs; and, as
// root, that nftables accepts the rendered table. The kernel path itself is tested end to end
// in test/bridge.e2e.test.ts.
import { execFileSync } from 'node:child_process';
import { release } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BridgeRedirect, isPortName, parseFdb, PORTS_PER_CHAIN, REDIRECT_IN, REDIRECT_MAC, REDIRECT_OUT, renderBridgeRedirect, type BridgeSystem } from '../src/dataplane/bridge-redirect.js';
import type { CommandRunner } from '../src/dataplane/interception.js';
import { labRequirementsMissing } from '../src/lab/sys.js';
import { MemoryLogger } from '../src/log.js';

interface Fake {
  sys: BridgeSystem;
  calls: string[];
  inputs: string[];
  bridges: Map<string, string[]>;
  sysctls: Map<string, string>;
  /** Whether the veth pair exists. */
  pair: { exists: boolean };
  failNft: { message: string | undefined };
  /** Interface indexes (default 1 + the name's position in `bridges`). */
  ifindexes: Map<string, number>;
  /** Files under /sys. */
  sysFiles: Map<string, string>;
  /** What `bridge -j fdb show` prints. */
  fdb: { json: string };
}

function fake(bridges: Record<string, string[]> = {}, sysctls: Record<string, string> = {}): Fake {
  const f: Fake = {
    calls: [],
    inputs: [],
    bridges: new Map(Object.entries(bridges)),
    sysctls: new Map(Object.entries(sysctls)),
    pair: { exists: false },
    failNft: { message: undefined },
    ifindexes: new Map(),
    sysFiles: new Map(),
    fdb: { json: '[]' },
    sys: undefined as unknown as BridgeSystem,
  };
  const run: CommandRunner = async (cmd, args, input) => {
    f.calls.push(`${cmd} ${args.join(' ')}`);
    if (input !== undefined) f.inputs.push(input);
    if (cmd === 'nft' && args[0] === '-f' && f.failNft.message) return { code: 1, stdout: '', stderr: f.failNft.message };
    if (cmd === 'nft' && args[0] === 'list') return { code: 0, stdout: f.inputs.length > 0 ? 'table netdev netpold_bridge\n' : '', stderr: '' };
    if (cmd === 'ip' && args[1] === 'show') return f.pair.exists ? { code: 0, stdout: '', stderr: '' } : { code: 1, stdout: '', stderr: 'Device does not exist' };
    if (cmd === 'ip' && args[0] === 'link' && args[1] === 'add') f.pair.exists = true;
    if (cmd === 'ip' && args[0] === 'link' && args[1] === 'del') f.pair.exists = false;
    if (cmd === 'bridge' && args[0] === '-j') return { code: 0, stdout: f.fdb.json, stderr: '' };
    return { code: 0, stdout: '', stderr: '' };
  };
  f.sys = {
    run,
    ports: (name) => (f.bridges.has(name) ? [...f.bridges.get(name)!] : undefined),
    ifindex: (name) => (name === REDIRECT_OUT ? (f.pair.exists ? (f.ifindexes.get(name) ?? 100) : undefined) : (f.ifindexes.get(name) ?? 1)),
    sysctl: (key, value) => void f.sysctls.set(key, value),
    readSysctl: (key) => f.sysctls.get(key),
    readSysctlPath: (path) => f.sysFiles.get(path),
  };
  return f;
}

const config = { table: 'netpold_bridge', bridges: ['cni0', 'cbr0'], pollMs: 60_000 };

describe('bridge redirect: the netdev table', () => {
  it('hooks every port; drops VLAN tags and non-ICMP group and link-local traffic; leaves ICMP of those, and neighbour discovery, on the bridge; sends every other IP packet through the pair', () => {
    const t = renderBridgeRedirect('netpold_bridge', ['veth1', 'veth2']);
    expect(t.startsWith('table netdev netpold_bridge\ndelete table netdev netpold_bridge\n')).toBe(true);
    expect(t).toContain('type filter hook ingress devices = { "veth1", "veth2" }');
    expect(t).toContain('jump reroute');
    const rules = t.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    const fwd = rules.findIndex((l) => l.includes(`fwd to "${REDIRECT_OUT}"`));
    // Whatever the frame's destination MAC: no match on it before the redirect.
    expect(rules[fwd]).toBe(`ether type { ip, ip6 } ether daddr set ${REDIRECT_MAC} fwd to "${REDIRECT_OUT}"`);
    for (const before of [
      'ether type { 8021q, 8021ad } drop',
      'ip daddr { 224.0.0.0/4, 255.255.255.255 } meta l4proto { icmp, igmp } return',
      'ip daddr { 224.0.0.0/4, 255.255.255.255 } drop',
      'ip6 daddr ff00::/8 meta l4proto ipv6-icmp return',
      'ip6 daddr ff00::/8 drop',
      'ip6 saddr fe80::/10 meta l4proto ipv6-icmp return',
      'ip6 daddr fe80::/10 meta l4proto ipv6-icmp return',
      'ip6 saddr fe80::/10 drop',
      'ip6 daddr fe80::/10 drop',
    ]) {
      const i = rules.indexOf(before);
      expect(i, before).toBeGreaterThanOrEqual(0);
      expect(i).toBeLessThan(fwd);
    }
    // Each group's ICMP is let through before the rest of the group is dropped.
    expect(rules.indexOf('ip6 saddr fe80::/10 meta l4proto ipv6-icmp return')).toBeLessThan(rules.indexOf('ip6 saddr fe80::/10 drop'));
    expect(rules.indexOf('ip6 daddr ff00::/8 meta l4proto ipv6-icmp return')).toBeLessThan(rules.indexOf('ip6 daddr ff00::/8 drop'));
    expect(rules.findIndex((l) => l.startsWith('icmpv6 type { nd-router-solicit') && l.endsWith('return'))).toBeLessThan(fwd);
    expect(rules.some((l) => l.includes('ether daddr &'))).toBe(false);
  });

  it('more ports than one chain may hook (the kernel takes 255): several base chains, each port in exactly one', () => {
    const ports = Array.from({ length: 2 * PORTS_PER_CHAIN + 1 }, (_, i) => `veth${i}`);
    const t = renderBridgeRedirect('netpold_bridge', ports);
    const lists = [...t.matchAll(/devices = \{ ([^}]*) \}/g)].map((m) => m[1]!.split(', ').map((d) => d.replace(/"/g, '')));
    expect(lists.map((l) => l.length)).toEqual([PORTS_PER_CHAIN, PORTS_PER_CHAIN, 1]);
    expect(lists.flat()).toEqual(ports);
    expect(t.match(/jump reroute/g)?.length).toBe(3);
  });

  it('no ports: an empty table (no chain: a netdev chain needs a device)', () => {
    const t = renderBridgeRedirect('netpold_bridge', []);
    expect(t).not.toContain('chain');
    expect(t).toContain('table netdev netpold_bridge {\n}');
  });
});

describe('bridge redirect: following the bridges', () => {
  it('a node without a bridge: nothing is created, a crashed run\'s table and pair are removed', async () => {
    const f = fake();
    f.pair.exists = true;
    f.inputs.push('(a crashed run loaded a table)');
    const r = new BridgeRedirect(config, f.sys, undefined);
    await r.start();
    await r.sync();
    expect(f.calls).toEqual(['nft list tables netdev', 'nft delete table netdev netpold_bridge', `ip link show dev ${REDIRECT_OUT}`, `ip link del dev ${REDIRECT_OUT}`]);
    expect(r.hooked).toEqual([]);
    await r.stop();
  });

  it('a bridge with ports: the pair (MTU, MAC, an IPv4 address, loose rp_filter, up), then the table; nothing again until the ports change', async () => {
    // The pair inherits strict from net.ipv4.conf.default ("all" is off): set to loose.
    const f = fake({ cni0: ['vethb', 'vetha'] }, { 'net/ipv4/conf/all/rp_filter': '0', [`net/ipv4/conf/${REDIRECT_IN}/rp_filter`]: '1' });
    const log = new MemoryLogger();
    const r = new BridgeRedirect(config, f.sys, log);
    await r.start();
    expect(f.calls).toEqual([
      `ip link show dev ${REDIRECT_OUT}`,
      `ip link add ${REDIRECT_OUT} type veth peer name ${REDIRECT_IN}`,
      `ip link set dev ${REDIRECT_OUT} mtu 65535`,
      `ip link set dev ${REDIRECT_IN} mtu 65535`,
      `ip link set dev ${REDIRECT_IN} address ${REDIRECT_MAC}`,
      `ip addr replace 192.0.0.8/32 dev ${REDIRECT_IN} scope link`,
      `ip link set dev ${REDIRECT_OUT} up`,
      `ip link set dev ${REDIRECT_IN} up`,
      'nft -f -',
      'bridge -j fdb show br cni0', // forwarding entries to keep alive (none here)
    ]);
    expect(f.sysctls.get(`net/ipv4/conf/${REDIRECT_IN}/rp_filter`)).toBe('2');
    expect(f.inputs.at(-1)).toContain('devices = { "vetha", "vethb" }');
    expect(r.hooked).toEqual(['vetha', 'vethb']);
    expect(log.lines.some((l) => l.level === 'info' && l.msg.startsWith('pods on bridge cni0'))).toBe(true);

    const n = f.calls.length;
    await r.sync();
    expect(f.calls.length).toBe(n); // unchanged ports: no reload

    // A pod comes (on the other bridge too), one goes: one reload with the new set.
    f.bridges.set('cni0', ['vethb', 'vethc']);
    f.bridges.set('cbr0', ['cbrport']);
    await r.sync();
    expect(f.calls.slice(n)).toEqual(['nft -f -']); // the forwarding entries are refreshed beside, by the poll
    expect(f.inputs.at(-1)).toContain('devices = { "cbrport", "vethb", "vethc" }');

    // Every pod gone: an empty table, the pair kept for the next.
    f.bridges.set('cni0', []);
    f.bridges.delete('cbr0');
    await r.sync();
    expect(f.inputs.at(-1)).not.toContain('chain');
    expect(r.hooked).toEqual([]);

    expect(await r.stop()).toEqual([]);
    expect(f.calls.slice(-4)).toEqual(['nft list tables netdev', 'nft delete table netdev netpold_bridge', `ip link show dev ${REDIRECT_OUT}`, `ip link del dev ${REDIRECT_OUT}`]);
    expect(f.pair.exists).toBe(false);
  });

  it('a bridge that appears after start (Flannel makes cni0 with the first pod) is picked up', async () => {
    const f = fake();
    const r = new BridgeRedirect(config, f.sys, undefined);
    await r.start();
    f.calls.length = 0;
    await r.sync();
    expect(f.calls).toEqual([]); // still nothing
    f.bridges.set('cni0', ['veth1']);
    await r.sync();
    expect(f.calls).toContain('nft -f -');
    expect(r.hooked).toEqual(['veth1']);
    await r.stop();
  });

  it('port names that are not interface names are never written into the ruleset', async () => {
    const f = fake({ cni0: ['veth1', 'bad"name', 'x'.repeat(16)] });
    const r = new BridgeRedirect(config, f.sys, undefined);
    await r.start();
    expect(r.hooked).toEqual(['veth1']);
    expect(f.inputs.at(-1)).not.toContain('bad');
    await r.stop();
  });

  it.each([
    // [all, the pair's own (from default)], whether the agent writes 2
    ['0', '0', false],
    ['2', '0', false],
    ['2', '1', false], // the larger applies: loose already
    ['0', '1', true],
    ['1', '0', true], // strict "all": the pair's own 2 makes it loose
    ['1', '1', true],
  ] as const)('rp_filter all=%s, the pair\'s own=%s: written to 2 only when the effective value (the larger) is strict: %s', async (all, own, writes) => {
    const f = fake({ cni0: ['veth1'] }, { 'net/ipv4/conf/all/rp_filter': all, [`net/ipv4/conf/${REDIRECT_IN}/rp_filter`]: own });
    const r = new BridgeRedirect(config, f.sys, undefined);
    await r.start();
    expect(f.sysctls.get(`net/ipv4/conf/${REDIRECT_IN}/rp_filter`)).toBe(writes ? '2' : own);
    expect(r.ok).toBe(true);
    await r.stop();
  });

  it('a strict reverse-path filter that cannot be changed (read-only /proc/sys, as in the DaemonSet): start refused naming the fix; the ports closed, not open', async () => {
    const f = fake({ cni0: ['veth1'] }, { [`net/ipv4/conf/${REDIRECT_IN}/rp_filter`]: '1' });
    f.sys = { ...f.sys, sysctl: () => { throw Object.assign(new Error('read-only'), { code: 'EROFS' }); } };
    await expect(new BridgeRedirect(config, f.sys, undefined).start()).rejects.toMatchObject({ message: expect.stringContaining('Set net.ipv4.conf.default.rp_filter to 2') });
    expect(f.inputs.at(-1)).toContain('ether type { ip, ip6 } drop');
    expect(f.inputs.at(-1)).not.toContain('fwd to');
  });

  it('a bridge that appears after start where the pair cannot be made: its ports dropped (closed), not ready, until it can', async () => {
    const f = fake({}, { [`net/ipv4/conf/${REDIRECT_IN}/rp_filter`]: '1' });
    let writable = false;
    f.sys = { ...f.sys, sysctl: (k, v) => { if (!writable) throw Object.assign(new Error('read-only'), { code: 'EROFS' }); f.sysctls.set(k, v); } };
    const r = new BridgeRedirect({ ...config, pairRetryMs: 0 }, f.sys, undefined);
    await r.start();
    f.bridges.set('cni0', ['veth1']);
    await expect(r.sync()).rejects.toMatchObject({ code: 'NETPOLD_E_INTERCEPTION' });
    expect(f.inputs.at(-1)).toContain('ether type { ip, ip6 } drop');
    expect(r.hooked).toEqual(['veth1']);
    expect(r.ok).toBe(false);
    writable = true;
    await r.sync();
    expect(f.inputs.at(-1)).toContain(`fwd to "${REDIRECT_OUT}"`);
    expect(r.ok).toBe(true);
    await r.stop();
  });

  it.each([
    [0, 3],
    [undefined, 1], // the default: one attempt per 5 s (each makes and removes a veth pair)
  ])('while the pair cannot be made (retry every %s ms): closed once (not reloaded every poll), the half-made pair removed at each of %i attempts; the bridge gone: open and ready again', async (pairRetryMs, attempts) => {
    const f = fake({}, { [`net/ipv4/conf/${REDIRECT_IN}/rp_filter`]: '1' });
    f.sys = { ...f.sys, sysctl: () => { throw Object.assign(new Error('read-only'), { code: 'EROFS' }); } };
    const r = new BridgeRedirect({ ...config, ...(pairRetryMs === undefined ? {} : { pairRetryMs }) }, f.sys, undefined);
    await r.start();
    f.bridges.set('cni0', ['veth1']);
    for (let i = 0; i < 3; i++) await expect(r.sync()).rejects.toMatchObject({ code: 'NETPOLD_E_INTERCEPTION' });
    expect(f.calls.filter((c) => c === 'nft -f -').length).toBe(1);
    expect(f.calls.filter((c) => c === `ip link del dev ${REDIRECT_OUT}`).length).toBe(attempts);
    expect(r.ok).toBe(false);
    f.bridges.delete('cni0');
    await r.sync();
    expect(f.inputs.at(-1)).not.toContain('chain');
    expect(r.ok).toBe(true);
    await r.stop();
  });

  it('"all" made strict after the pair was made (its own value 0): set to loose at the next sync; closed if it cannot be', async () => {
    const f = fake({ cni0: ['veth1'] }, { 'net/ipv4/conf/all/rp_filter': '0', [`net/ipv4/conf/${REDIRECT_IN}/rp_filter`]: '0' });
    let writable = true;
    f.sys = { ...f.sys, sysctl: (k, v) => { if (!writable) throw Object.assign(new Error('read-only'), { code: 'EROFS' }); f.sysctls.set(k, v); } };
    const r = new BridgeRedirect({ ...config, pairRetryMs: 0 }, f.sys, undefined);
    await r.start();
    f.sysctls.set('net/ipv4/conf/all/rp_filter', '1');
    await r.sync();
    expect(f.sysctls.get(`net/ipv4/conf/${REDIRECT_IN}/rp_filter`)).toBe('2');
    expect(r.ok).toBe(true);
    f.sysctls.set(`net/ipv4/conf/${REDIRECT_IN}/rp_filter`, '0');
    writable = false;
    await expect(r.sync()).rejects.toMatchObject({ message: expect.stringContaining('Set net.ipv4.conf.default.rp_filter to 2 on the node') });
    expect(f.inputs.at(-1)).toContain('ether type { ip, ip6 } drop');
    expect(r.ok).toBe(false);
    await r.stop();
  });

  it('a pair deleted under the agent is made again and the table reloaded (its fwd rule names the old device)', async () => {
    const f = fake({ cni0: ['veth1'] });
    const r = new BridgeRedirect(config, f.sys, undefined);
    await r.start();
    const adds = () => f.calls.filter((c) => c.startsWith(`ip link add ${REDIRECT_OUT}`)).length;
    const loads = () => f.calls.filter((c) => c === 'nft -f -').length;
    expect([adds(), loads()]).toEqual([1, 1]);
    f.pair.exists = false;
    f.ifindexes.set(REDIRECT_OUT, 101);
    await r.sync();
    expect([adds(), loads()]).toEqual([2, 2]);
    await r.sync();
    expect([adds(), loads()]).toEqual([2, 2]);
    await r.stop();
  });

  it('names: what the kernel allows and a ruleset can say, nothing else', () => {
    for (const ok of ['veth1a2b3c4d', 'a+b$c;d', 'x{y}#z', 'a\u3000b', 'é'.repeat(7)]) expect(isPortName(ok), ok).toBe(true);
    for (const bad of ['', '.', '..', 'a/b', 'a:b', 'a b', 'a\tb', 'we"ird', '\uFFFDff', 'x'.repeat(16), 'é'.repeat(8)]) expect(isPortName(bad), bad).toBe(false);
  });

  it('failing to keep forwarding entries alive is logged once and retried; the hooks stay, and so does readiness', async () => {
    const log = new MemoryLogger();
    const base = fake({ cni0: ['veth1'] });
    const f = { sys: { ...base.sys, run: async (cmd, args, input) => (cmd === 'bridge' ? { code: 1, stdout: '', stderr: 'boom' } : base.sys.run(cmd, args, input)) } as BridgeSystem };
    const r = new BridgeRedirect({ ...config, pollMs: 5 }, f.sys, log);
    await r.start();
    expect(r.hooked).toEqual(['veth1']);
    const deadline = Date.now() + 3_000;
    while (Date.now() < deadline && log.lines.length < 3) await new Promise((res) => setTimeout(res, 20));
    await new Promise((res) => setTimeout(res, 1_100)); // the next refresh is due after 1 s at the earliest
    const errors = log.lines.filter((l) => l.level === 'error');
    expect(errors.map((l) => l.fields.error)).toEqual(['bridge -j fdb show br cni0 failed: boom']);
    expect(r.ok).toBe(true);
    await r.stop();
  });

  it('nft refusing the table: start fails (after retries); a later failure is logged once and retried, never thrown', async () => {
    const f = fake({ cni0: ['veth1'] });
    f.failNft.message = 'Error: Could not process rule: No such file or directory';
    await expect(new BridgeRedirect(config, f.sys, undefined).start()).rejects.toMatchObject({ code: 'NETPOLD_E_INTERCEPTION' });
    expect(f.calls.filter((c) => c === 'nft -f -').length).toBe(3);

    const g = fake({ cni0: ['veth1'] });
    const log = new MemoryLogger();
    const r = new BridgeRedirect({ ...config, pollMs: 5 }, g.sys, log);
    await r.start();
    g.failNft.message = 'Error: boom';
    g.bridges.set('cni0', ['veth1', 'veth2']);
    const deadline = Date.now() + 5_000;
    while (g.calls.filter((c) => c === 'nft -f -').length < 4 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 5));
    expect(log.lines.filter((l) => l.fields.code === 'NETPOLD_E_INTERCEPTION').length).toBe(1);
    g.failNft.message = undefined;
    while (r.hooked.length < 2 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 5));
    expect(r.hooked).toEqual(['veth1', 'veth2']);
    expect(log.lines.some((l) => l.msg === 'bridge ports hooked again')).toBe(true);
    await r.stop();
  });

  it('a table that could not be loaded for a bridge that then went away: ready again (nothing left to hook)', async () => {
    const f = fake();
    const r = new BridgeRedirect(config, f.sys, undefined);
    await r.start();
    f.bridges.set('cni0', ['veth1']);
    f.failNft.message = 'Error: boom';
    await expect(r.sync()).rejects.toMatchObject({ code: 'NETPOLD_E_INTERCEPTION' });
    expect(r.ok).toBe(false);
    f.bridges.delete('cni0');
    await r.sync();
    expect(r.ok).toBe(true);
    await r.stop();
  });

  it('a forwarding-entry refresh that hangs does not hold up hooking a new port', async () => {
    const base = fake({ cni0: ['veth1'] });
    let release: () => void = () => undefined;
    const hung = new Promise<{ code: number; stdout: string; stderr: string }>((res) => (release = () => res({ code: 0, stdout: '[]', stderr: '' })));
    const sys: BridgeSystem = { ...base.sys, run: async (cmd, args, input) => (cmd === 'bridge' ? hung : base.sys.run(cmd, args, input)) };
    const r = new BridgeRedirect({ ...config, pollMs: 5 }, sys, undefined);
    await r.start();
    base.bridges.set('cni0', ['veth1', 'veth2']);
    const deadline = Date.now() + 3_000;
    while (r.hooked.length < 2 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
    expect(r.hooked).toEqual(['veth1', 'veth2']);
    release();
    await r.stop();
  });

  it('off (no bridges configured): nothing is hooked; a bridge of the usual names is reported as unenforced; a crashed run\'s table and pair are removed', async () => {
    const f = fake({ cni0: ['veth1'] });
    f.pair.exists = true;
    f.inputs.push('(a crashed run loaded a table)');
    const log = new MemoryLogger();
    const r = new BridgeRedirect({ ...config, bridges: [] }, f.sys, log);
    await r.start();
    expect(f.calls).toEqual(['nft list tables netdev', 'nft delete table netdev netpold_bridge', `ip link show dev ${REDIRECT_OUT}`, `ip link del dev ${REDIRECT_OUT}`]);
    expect(r.hooked).toEqual([]);
    expect(log.lines.filter((l) => l.level === 'error').map((l) => l.fields.code)).toEqual(['NETPOLD_E_UNSUPPORTED_NODE']);
  });

  it('a port made again under the same name (a new interface index) is hooked again', async () => {
    const f = fake({ cni0: ['veth1'] });
    f.ifindexes.set('veth1', 7);
    const r = new BridgeRedirect(config, f.sys, undefined);
    await r.start();
    const loads = () => f.calls.filter((c) => c === 'nft -f -').length;
    expect(loads()).toBe(1);
    await r.sync();
    expect(loads()).toBe(1);
    f.ifindexes.set('veth1', 9);
    await r.sync();
    expect(loads()).toBe(2);
    await r.stop();
  });

  it('a port whose name cannot be written in a ruleset is reported, once, as not enforced; the others are hooked', async () => {
    const f = fake({ cni0: ['veth1', 'we"ird', 'a+b$c;d'] });
    const log = new MemoryLogger();
    const r = new BridgeRedirect(config, f.sys, log);
    await r.start();
    await r.sync();
    expect(r.hooked).toEqual(['a+b$c;d', 'veth1']);
    expect(f.inputs.at(-1)).not.toContain('we"ird');
    const errors = log.lines.filter((l) => l.level === 'error');
    expect(errors.map((l) => [l.fields.code, l.fields.interface])).toEqual([['NETPOLD_E_UNSUPPORTED_NODE', 'we"ird']]);
    expect(r.ok).toBe(false); // a pod not enforced: not ready
    f.bridges.set('cni0', ['veth1', 'a+b$c;d']);
    await r.sync();
    expect(r.ok).toBe(true);
    await r.stop();
  });

  it('keeps the learned forwarding entries of hooked ports alive at a third of the bridge\'s ageing time, and only those', async () => {
    const f = fake({ cni0: ['veth1', 'veth2'] });
    f.sysFiles.set('/sys/class/net/cni0/bridge/ageing_time', '30000'); // 300 s: every 100 s
    f.fdb.json = JSON.stringify([
      { mac: '02:00:00:00:00:01', ifname: 'veth1', state: '' },
      { mac: '02:00:00:00:00:02', ifname: 'veth2', vlan: 1, state: '' },
      { mac: '02:00:00:00:00:03', ifname: 'veth1', state: 'permanent' },
      { mac: '02:00:00:00:00:04', ifname: 'veth1', state: 'static' },
      { mac: '02:00:00:00:00:05', ifname: 'veth1', flags: ['self'], state: 'permanent' },
      { mac: '02:00:00:00:00:06', ifname: 'othr0', state: '' },
      { mac: '33:33:00:00:00:01', ifname: 'veth1', flags: ['self'], state: 'permanent' },
    ]);
    const r = new BridgeRedirect(config, f.sys, undefined);
    await r.start();
    await r.refresh(); // the one start set going
    const batch = f.calls.indexOf('bridge -force -batch -');
    expect(f.calls.slice(batch - 1, batch + 1)).toEqual(['bridge -j fdb show br cni0', 'bridge -force -batch -']);
    expect(f.inputs.at(-1)).toBe('fdb replace 02:00:00:00:00:01 dev veth1 master use\nfdb replace 02:00:00:00:00:02 dev veth2 master use vlan 1\n');
    const n = f.calls.length;
    await r.refresh();
    expect(f.calls.length).toBe(n); // not again within the period (100 s)
    f.sysFiles.set('/sys/class/net/cni0/bridge/ageing_time', '0'); // a hub: nothing to keep
    await r.refresh();
    expect(f.calls.length).toBe(n);
    await r.stop();
    expect(parseFdb('not json')).toEqual([]);
    expect(parseFdb('{"mac": 1}')).toEqual([]);
  });
});

const missing = labRequirementsMissing();
function kernelAtLeast(major: number, minor: number): boolean {
  const [a, b] = release().split('.').map((x) => Number.parseInt(x, 10));
  return a! > major || (a === major && b! >= minor);
}
describe.skipIf(missing.length > 0)('nftables accepts the bridge table (nft -c in a scratch namespace)', () => {
  const ns = `npd-brr-${process.pid}`;
  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', ns]);
    // fwd names an existing device; chains name ports that exist (kernels before 6.16 insist).
    for (const [a, b] of [[REDIRECT_OUT, REDIRECT_IN], ['vetha', 'vethap'], ['vethb', 'vethbp']]) execFileSync('ip', ['-n', ns, 'link', 'add', a!, 'type', 'veth', 'peer', 'name', b!]);
  });
  afterAll(() => execFileSync('ip', ['netns', 'del', ns]));
  it.each([
    ['two ports', ['vetha', 'vethb']],
    ['no port', []],
    // Not created: hooks by name are taken for devices that do not exist yet since Linux 6.16.
    ...(kernelAtLeast(6, 16) ? [['more ports than one chain takes', Array.from({ length: PORTS_PER_CHAIN + 60 }, (_, i) => `vx${i}`)] as [string, string[]]] : []),
  ])('%s', (_n, ports) => {
    const text = renderBridgeRedirect('netpold_bridge', ports);
    expect(() => execFileSync('ip', ['netns', 'exec', ns, 'nft', '-c', '-f', '-'], { input: text.split('\n').filter((l) => !l.startsWith('delete table')).join('\n') })).not.toThrow();
  });
});
