// Kernel interception: one nftables table of our own plus policy routing, so that TCP and UDP
// traffic of the pods of this node reaches the agent's transparent listeners (TPROXY), and
// the return traffic of the agent's transparent upstream sockets reaches those sockets.
//
// Where pods sit on a Linux bridge, also a netdev table and a veth pair that take their traffic
// off the bridge to be routed (bridge-redirect.ts). No other table is touched. Setup first
// replaces whatever a crashed earlier run left behind (same table names, same rule and route
// table, same veth pair), and teardown removes exactly what setup made.
import { execFile } from 'node:child_process';
import { NetpoldError } from '../errors.js';
import type { Logger } from '../log.js';
import { BridgeRedirect, DEFAULT_BRIDGE_POLL_MS, DEFAULT_POD_BRIDGES, realBridgeSystem, type BridgeSystem } from './bridge-redirect.js';

export interface InterceptionConfig {
  /** nftables table (family inet) owned by the agent. */
  readonly table: string;
  /**
   * Firewall mark bit(s) for redirected and returning packets: OR-ed into the packet's mark and
   * matched under itself as the mask, so other software's bits pass through untouched.
   */
  readonly mark: number;
  /** Routing table holding `local default dev lo`. */
  readonly routeTable: number;
  /**
   * `ip rule` priority of the fwmark rule. Low, so that it comes before CNI rules that route pod
   * addresses (AWS VPC CNI: `512: to <pod> lookup main`, `1536: from <pod> lookup eni-N`): a
   * redirected packet routed by those would be forwarded, and the kernel drops forwarded packets
   * that TPROXY gave a socket.
   */
  readonly rulePriority: number;
  /** Transparent listener ports (TCP and UDP share the number) on 127.0.0.1 and [::1]. */
  readonly port: number;
  /** Linux bridges whose ports' traffic is redirected to be routed (see bridge-redirect.ts); empty: none. */
  readonly podBridges: readonly string[];
  /** How often the bridges' ports are read. */
  readonly bridgePollMs: number;
}

/**
 * Packet-mark bits other node software is known to set or match (the public fwmark registry and
 * the projects' own documentation). The mark bit picks the route to the agent: a bit another
 * component sets on traffic we do not redirect sends that traffic to the local stack instead of
 * on its way (kube-proxy's masquerade bit on NodePort traffic to a remote pod: reset). Our
 * default, bit 13 (0x2000), is none of them and not in Istio's whole-mark value 1337 (0x539).
 */
export const KNOWN_MARK_BITS: readonly { readonly mask: number; readonly owner: string }[] = [
  { mask: 0x0000_4000, owner: 'kube-proxy and kubelet (masquerade bit 14, KUBE-MARK-MASQ)' },
  { mask: 0x0000_8000, owner: 'kube-proxy and kubelet (drop bit 15, KUBE-MARK-DROP)' },
  { mask: 0x0000_0f00, owner: 'Cilium (bits 8-11)' },
  { mask: 0xffff_0000, owner: 'Calico (its default IptablesMarkMask, bits 16-31)' },
];

export const DEFAULT_INTERCEPTION: InterceptionConfig = {
  table: 'netpold',
  mark: 0x2000,
  routeTable: 4242,
  rulePriority: 5,
  port: 15001,
  podBridges: DEFAULT_POD_BRIDGES,
  bridgePollMs: DEFAULT_BRIDGE_POLL_MS,
};

/** Runs a command with arguments (never through a shell) and optional standard input. */
export type CommandRunner = (cmd: string, args: readonly string[], input?: string) => Promise<{ code: number; stdout: string; stderr: string }>;

export const execRunner: CommandRunner = (cmd, args, input) =>
  new Promise((resolve) => {
    const child = execFile(cmd, args as string[], { timeout: 15_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) || (err && code !== 0 && !stderr ? err.message : '') });
    });
    // A child that exits without reading its input (EPIPE) must not take the agent down: its exit
    // status says what went wrong.
    child.stdin?.on('error', () => undefined);
    if (input !== undefined) child.stdin?.end(input);
  });

export interface PodAddresses {
  readonly v4: readonly string[];
  readonly v6: readonly string[];
}

/** Every address: what the fail-closed phase intercepts. */
const EVERYTHING: PodAddresses = { v4: ['0.0.0.0/0'], v6: ['::/0'] };

/**
 * The ruleset. The chain hooks prerouting at `dstnat + 10`: after destination NAT, so traffic
 * sent to a Service address is redirected, and decided, with the backend pod it was translated
 * to as its destination. The text deletes and recreates the table, so loading it replaces the
 * previous one in a single transaction.
 *
 * `pods` undefined is the fail-closed phase before any state is known: all forwarded TCP/UDP is
 * redirected (and refused by the agent), but never traffic to the node's own addresses, so the
 * node stays reachable (kubelet, SSH) while it has no policy yet.
 */
export function renderRuleset(c: InterceptionConfig, pods: PodAddresses | undefined): string {
  // OR-ed in, never set whole: bits other software put on the packet earlier (Calico's,
  // kube-proxy's) stay for the chains and routing after ours.
  const bit = `0x${c.mark.toString(16)}`;
  const mark = `meta mark | ${bit}`;
  const set = pods ?? EVERYTHING;
  const v4 = set.v4.length ? `\n    elements = { ${set.v4.join(', ')} }` : '';
  const v6 = set.v6.length ? `\n    elements = { ${set.v6.join(', ')} }` : '';
  const tproxy = (l4: string, fam: 'ip' | 'ip6', dir: 'saddr' | 'daddr'): string =>
    `    meta l4proto ${l4} ${fam} ${dir} @pods_v${fam === 'ip' ? 4 : 6} tproxy ${fam} to ${fam === 'ip' ? '127.0.0.1' : '[::1]'}:${c.port} meta mark set ${mark} accept`;
  return `table inet ${c.table}
delete table inet ${c.table}
table inet ${c.table} {
  set pods_v4 {
    type ipv4_addr; flags interval;${v4}
  }
  set pods_v6 {
    type ipv6_addr; flags interval;${v6}
  }
  chain divert {
    type filter hook prerouting priority dstnat + 10; policy accept;
    # The node talking to itself (loopback, its own addresses) is never pod traffic.
    iif lo return
    # Return traffic of the agent's transparent upstream sockets: deliver it locally to them.
    meta l4proto { tcp, udp } socket transparent 1 meta mark set ${mark} accept
    # ICMP errors about the agent's own connections (fragmentation needed, packet too big), to
    # those sockets (the socket match reads the packet inside the error): path-MTU discovery
    # for relayed flows (forwarded to the pod, the error would find no connection there).
    meta l4proto { icmp, ipv6-icmp } socket transparent 1 meta mark set ${mark} accept
    # Replies to connections the node itself opened (kubelet probes, host-network pods, an API
    # server calling a webhook; marked in local_out): the node's traffic to its pods is always
    # allowed, and redirecting a reply would reset it (its socket is not the agent's). Told by
    # the mark set when the connection opened, never by the entry's direction alone: a pod can
    # create an entry "node -> pod" by forging the node's address as a source (IPv6 has no
    # martian check for it; IPv4 with accept_local=1 neither), and its own packets would then
    # pass as replies, straight to node services. The price: a connection the node opened while
    # no table of ours was loaded (before the agent's first start, in the seconds between an old
    # agent's exit and the new one's start) has no mark and is reset once; conntrack cannot tell
    # it from an entry a pod forged in that window. Marks survive agent restarts.
    ct direction reply ct mark & ${bit} == ${bit} accept${pods ? '' : `
    # Fail-closed phase: leave traffic to the node itself alone.
    fib daddr type local return`}
    # New traffic from or to a pod of this node: to the agent's transparent listeners.
${['tcp', 'udp'].flatMap((l4) => (['ip', 'ip6'] as const).flatMap((fam) => (['saddr', 'daddr'] as const).map((dir) => tproxy(l4, fam, dir)))).join('\n')}
    # tproxy finds no listener when the agent is gone (crashed, restarting) and the packet would
    # go on unenforced: refuse it instead. A graceful stop removes the whole table first.
${(['ip', 'ip6'] as const).flatMap((fam) => (['saddr', 'daddr'] as const).flatMap((dir) => [
    `    meta l4proto tcp ${fam} ${dir} @pods_v${fam === 'ip' ? 4 : 6} reject with tcp reset`,
    `    meta l4proto udp ${fam} ${dir} @pods_v${fam === 'ip' ? 4 : 6} drop`,
  ])).join('\n')}
  }
  chain local_out {
    type filter hook output priority filter; policy accept;
    # A new connection from a local socket that is not one of the agent's (all transparent,
    # its raw sockets too): the node's own. Its conntrack entry carries our bit (the same bit
    # as the packet mark: software that copies conntrack marks to packets would only route the
    # node's own replies locally, where they go anyway). skuid first: socket is only evaluated
    # on a packet that has a socket (a lookup in output, with no input device, could crash
    # kernels older than 5.18).
    ct state new meta skuid >= 0 socket transparent 0 ct mark set ct mark | ${bit}
  }
}
`;
}

/** SCTP before the first snapshot: established associations pass, new ones are dropped. */
export function renderSctpFailClosed(table: string): string {
  return `table inet ${table}
delete table inet ${table}
table inet ${table} {
  chain forward {
    type filter hook forward priority filter; policy accept;
    ct state established,related accept
    meta l4proto sctp drop
  }
}
`;
}

function markSelector(c: InterceptionConfig): string {
  return `0x${c.mark.toString(16)}/0x${c.mark.toString(16)}`;
}

/** Our reverse-path rule's selector and action (see setup()). */
function reversePathSelector(c: InterceptionConfig): string[] {
  return ['iif', 'lo', 'fwmark', markSelector(c), 'lookup', 'main'];
}

export class Interception {
  private installed = false;
  private readonly bridge: BridgeRedirect;

  constructor(
    private readonly config: InterceptionConfig,
    private readonly run: CommandRunner = execRunner,
    options: { readonly bridgeSystem?: BridgeSystem; readonly log?: Logger } = {},
  ) {
    this.bridge = new BridgeRedirect(
      { table: this.bridgeTable, bridges: config.podBridges, pollMs: config.bridgePollMs },
      options.bridgeSystem ?? realBridgeSystem(run),
      options.log,
    );
  }

  /** The netdev table redirecting the ports of pod bridges. */
  get bridgeTable(): string {
    return `${this.config.table}_bridge`;
  }

  /**
   * Whether interception does its whole job: false while pods on a bridge cannot be redirected
   * (their traffic is dropped instead) or a new bridge port could not be hooked.
   */
  get healthy(): boolean {
    return this.installed && this.bridge.ok;
  }

  /** Bridge ports whose traffic is redirected now. */
  get bridgePorts(): readonly string[] {
    return this.bridge.hooked;
  }

  get isInstalled(): boolean {
    return this.installed;
  }

  /**
   * Installs the table (in its fail-closed phase: every forwarded flow to the agent, which
   * refuses it until it has a snapshot) and the policy routing, replacing an earlier run's.
   * A crashed run's tables stay in force until ours replace them, each in one transaction (the
   * texts delete and recreate their table): there is no moment without interception. Its
   * rules and routes are replaced after that; in between, a redirected packet is dropped (the
   * kernel does not forward a packet TPROXY gave a socket), never passed.
   */
  async setup(): Promise<void> {
    const c = this.config;
    await this.must('nft', ['-f', '-'], renderRuleset(c, undefined));
    // Until the first snapshot's SCTP rules replace it: no new forwarded SCTP association.
    await this.must('nft', ['-f', '-'], renderSctpFailClosed(this.sctpTable));
    this.installed = true;
    await this.removeRouting();
    const mark = markSelector(c);
    // The reverse-path check of a redirected packet: with src_valid_mark=1 (set by Tailscale,
    // wg-quick), the kernel validates its source with a lookup carrying the packet's mark (and
    // iif lo), which our rule would answer with the local route: the packet dropped as a
    // martian. That lookup goes to the main table instead. IPv4 only (IPv6 has no such check).
    await this.must('ip', ['-4', 'rule', 'add', ...reversePathSelector(c), 'priority', String(c.rulePriority - 1)]);
    for (const fam of ['-4', '-6']) {
      await this.must('ip', [fam, 'rule', 'add', 'fwmark', mark, 'lookup', String(c.routeTable), 'priority', String(c.rulePriority)]);
      await this.must('ip', [fam, 'route', 'add', 'local', fam === '-4' ? '0.0.0.0/0' : '::/0', 'dev', 'lo', 'table', String(c.routeTable)]);
    }
    // Last: what it sends to be routed meets the rules and routes above.
    await this.bridge.start();
  }

  /** The table enforcing SCTP in the kernel (TPROXY cannot redirect SCTP). */
  get sctpTable(): string {
    return `${this.config.table}_sctp`;
  }

  /**
   * Replaces the SCTP enforcement table with `ruleset` (rendered by compile's nft target for
   * SCTP; it deletes and recreates its table in one transaction).
   */
  async applySctp(ruleset: string): Promise<void> {
    await this.must('nft', ['-f', '-'], ruleset);
  }

  /** Intercepts exactly these pods' traffic from now on (one atomic table replacement). */
  async updatePods(pods: PodAddresses): Promise<void> {
    await this.must('nft', ['-f', '-'], renderRuleset(this.config, pods));
  }

  /** Removes our table, rules and routes; tolerates their absence. Never throws. */
  async teardown(): Promise<string[]> {
    const c = this.config;
    // First: the pods' ports go back to plain switching before the tables they feed go away.
    const problems: string[] = await this.bridge.stop();
    const list = await this.run('nft', ['list', 'tables', 'inet']);
    for (const table of [c.table, this.sctpTable]) {
      if (list.code === 0 && new RegExp(`^table inet ${table}$`, 'm').test(list.stdout)) {
        const r = await this.run('nft', ['delete', 'table', 'inet', table]);
        if (r.code !== 0) problems.push(`nft delete table inet ${table}: ${r.stderr.trim()}`);
      }
    }
    await this.removeRouting();
    this.installed = false;
    return problems;
  }

  /** Removes every rule into our route table and the table's routes; tolerates their absence. */
  private async removeRouting(): Promise<void> {
    const c = this.config;
    // The reverse-path rule, by its whole selector (never a bare `lookup main`: that is the
    // system's own rule). Bounded: at most a few can exist.
    for (let i = 0; i < 8; i++) {
      const r = await this.run('ip', ['-4', 'rule', 'del', ...reversePathSelector(c)]);
      if (r.code !== 0) break;
    }
    for (const fam of ['-4', '-6']) {
      // Every rule into our table, whatever its mark and priority: an earlier run with another
      // --fwmark or --rule-priority (or an earlier version's defaults, 0x4000 at 4242) left one
      // that would still route that bit to us. Bounded: at most a few can exist.
      for (let i = 0; i < 8; i++) {
        const r = await this.run('ip', [fam, 'rule', 'del', 'lookup', String(c.routeTable)]);
        if (r.code !== 0) break;
      }
      await this.run('ip', [fam, 'route', 'flush', 'table', String(c.routeTable)]);
    }
  }

  private async must(cmd: string, args: string[], input?: string): Promise<void> {
    const r = await this.run(cmd, args, input);
    if (r.code !== 0) {
      throw new NetpoldError('NETPOLD_E_INTERCEPTION', `${cmd} ${args.join(' ')} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
    }
  }
}
