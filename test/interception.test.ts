// The interception ruleset and its lifecycle, through a recording command runner; and, as root,
// `nft -c` checks that the kernel's nftables accepts both phases of the ruleset.
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_INTERCEPTION, Interception, renderRuleset, renderSctpFailClosed, type CommandRunner } from '../src/dataplane/interception.js';
import { labRequirementsMissing } from '../src/lab/sys.js';
import type { BridgeSystem } from '../src/dataplane/bridge-redirect.js';

function recorder(existing = ''): { run: CommandRunner; calls: string[]; inputs: string[] } {
  const calls: string[] = [];
  const inputs: string[] = [];
  const run: CommandRunner = async (cmd, args, input) => {
    calls.push(`${cmd} ${args.join(' ')}`);
    if (input !== undefined) inputs.push(input);
    if (cmd === 'nft' && args[0] === 'list') return { code: 0, stdout: existing, stderr: '' };
    if (cmd === 'ip' && (args.includes('del') || args[1] === 'show')) return { code: 2, stdout: '', stderr: 'RTNETLINK answers: No such file or directory' };
    return { code: 0, stdout: '', stderr: '' };
  };
  return { run, calls, inputs };
}

/** A node without pod bridges. */
const noBridges = (run: CommandRunner): BridgeSystem => ({ run, ports: () => undefined, ifindex: () => undefined, sysctl: () => undefined, readSysctl: () => undefined, readSysctlPath: () => undefined });

const pods = { v4: ['198.18.1.10', '198.18.1.20'], v6: ['2001:2::1:10'] };

describe('interception ruleset', () => {
  it('fail-closed phase: every forwarded flow, never traffic to the node itself', () => {
    const r = renderRuleset(DEFAULT_INTERCEPTION, undefined);
    expect(r).toContain('elements = { 0.0.0.0/0 }');
    expect(r).toContain('elements = { ::/0 }');
    expect(r).toMatch(/fib daddr type local return/);
    expect(r).toMatch(/iif lo return/);
  });

  it('pod phase: exactly the pods, TCP and UDP, both families, both directions, after DNAT', () => {
    const r = renderRuleset(DEFAULT_INTERCEPTION, pods);
    expect(r).toContain('elements = { 198.18.1.10, 198.18.1.20 }');
    expect(r).toContain('elements = { 2001:2::1:10 }');
    expect(r).not.toMatch(/fib daddr type local/);
    expect(r).toMatch(/priority dstnat \+ 10/);
    for (const l4 of ['tcp', 'udp']) {
      expect(r).toContain(`meta l4proto ${l4} ip saddr @pods_v4 tproxy ip to 127.0.0.1:15001`);
      expect(r).toContain(`meta l4proto ${l4} ip daddr @pods_v4 tproxy ip to 127.0.0.1:15001`);
      expect(r).toContain(`meta l4proto ${l4} ip6 saddr @pods_v6 tproxy ip6 to [::1]:15001`);
      expect(r).toContain(`meta l4proto ${l4} ip6 daddr @pods_v6 tproxy ip6 to [::1]:15001`);
    }
    // The transparent-socket return path comes before any redirect.
    expect(r.indexOf('socket transparent 1')).toBeLessThan(r.indexOf('tproxy'));
    // The mark bit is OR-ed in wherever it is set: other software's bits stay.
    const sets = r.match(/meta mark set [^\n]*?(?= accept)/g) ?? [];
    expect(sets.length).toBe(10); // the return path (TCP/UDP and ICMP errors) and 8 redirects
    for (const m of sets) expect(m).toBe('meta mark set meta mark | 0x2000');
    // Loading the text replaces the table atomically.
    expect(r.startsWith('table inet netpold\ndelete table inet netpold\n')).toBe(true);
  });

  it('setup replaces a crashed run\'s tables in place (never deleting them first), then its rules and routes', async () => {
    const rec = recorder('table inet netpold\ntable inet netpold_sctp\ntable inet other\n');
    const i = new Interception(DEFAULT_INTERCEPTION, rec.run, { bridgeSystem: noBridges(rec.run) });
    await i.setup();
    expect(rec.calls.filter((x) => x.startsWith('nft delete'))).toEqual([]);
    expect(rec.calls).toEqual([
      'nft -f -',
      'nft -f -',
      'ip -4 rule del iif lo fwmark 0x2000/0x2000 lookup main',
      'ip -4 rule del lookup 4242',
      'ip -4 route flush table 4242',
      'ip -6 rule del lookup 4242',
      'ip -6 route flush table 4242',
      'ip -4 rule add iif lo fwmark 0x2000/0x2000 lookup main priority 4',
      'ip -4 rule add fwmark 0x2000/0x2000 lookup 4242 priority 5',
      'ip -4 route add local 0.0.0.0/0 dev lo table 4242',
      'ip -6 rule add fwmark 0x2000/0x2000 lookup 4242 priority 5',
      'ip -6 route add local ::/0 dev lo table 4242',
      // No pod bridge here: only a crashed run's bridge redirect is looked for (and absent).
      'nft list tables netdev',
      'ip link show dev npd-fwd0',
    ]);
    expect(rec.inputs[0]).toMatch(/fib daddr type local return/);
    expect(rec.inputs[1]).toMatch(/meta l4proto sctp drop/);
    expect(i.isInstalled).toBe(true);
    await i.updatePods(pods);
    expect(rec.inputs[2]).toContain('198.18.1.20');
  });

  it('teardown removes every ip rule into our table, whatever mark and priority an earlier run gave it', async () => {
    const rec = recorder('');
    await new Interception({ ...DEFAULT_INTERCEPTION, mark: 0x10 }, rec.run, { bridgeSystem: noBridges(rec.run) }).teardown();
    expect(rec.calls).toContain('ip -4 rule del lookup 4242');
    expect(rec.calls).toContain('ip -6 rule del lookup 4242');
    // The only deletion naming a mark is the reverse-path rule's, by its whole selector: never a
    // bare `lookup main`, the system's own rule.
    expect(rec.calls.filter((c) => c.includes(' del ') && c.includes('fwmark'))).toEqual(['ip -4 rule del iif lo fwmark 0x10/0x10 lookup main']);
    expect(rec.calls.some((c) => c.endsWith('rule del lookup main'))).toBe(false);
  });

  it('a failing command is reported with its code and stderr', async () => {
    const run: CommandRunner = async (cmd, args) =>
      cmd === 'nft' && args[0] === '-f' ? { code: 1, stdout: '', stderr: 'Error: unknown expression tproxy' } : { code: 0, stdout: '', stderr: '' };
    await expect(new Interception(DEFAULT_INTERCEPTION, run, { bridgeSystem: noBridges(run) }).setup()).rejects.toMatchObject({ code: 'NETPOLD_E_INTERCEPTION', message: expect.stringContaining('unknown expression tproxy') });
  });
});

const missing = labRequirementsMissing();
describe.skipIf(missing.length > 0)('nftables accepts the rulesets (nft -c in a scratch namespace)', () => {
  const ns = `npd-icept-${process.pid}`;
  beforeAll(() => execFileSync('ip', ['netns', 'add', ns]));
  afterAll(() => execFileSync('ip', ['netns', 'del', ns]));
  const check = (text: string): void => {
    execFileSync('ip', ['netns', 'exec', ns, 'nft', '-c', '-f', '-'], { input: text.split('\n').filter((l) => !l.startsWith('delete table')).join('\n') });
  };
  it.each([
    ['fail-closed', renderRuleset(DEFAULT_INTERCEPTION, undefined)],
    ['pods', renderRuleset(DEFAULT_INTERCEPTION, pods)],
    ['no pods', renderRuleset(DEFAULT_INTERCEPTION, { v4: [], v6: [] })],
    ['sctp fail-closed', renderSctpFailClosed('netpold_sctp')],
  ])('%s', (_n, text) => {
    expect(() => check(text)).not.toThrow();
  });
});
