// Pods on a Linux bridge (Flannel's and the bridge CNI plugin's `cni0`, kubenet's `cbr0`).
//
// TPROXY cannot take traffic that enters the node through a bridge, for two reasons:
//  - Frames between two pods of one bridge are switched, never routed: no IP hook sees them.
//  - Frames the bridge hands up to the node (routed traffic, its gateway MAC) are seen by the
//    IPv4/IPv6 prerouting hooks twice over with br_netfilter (bridge-nf-call-iptables=1, which
//    kube-proxy requires): first from the bridge's own hook, where TPROXY runs and gives the
//    packet its socket, then in ip_rcv on the bridge device, which drops any socket a packet
//    carries ("Must drop socket now because of tproxy") and skips the hooks the second time.
//    The packet arrives without its socket and is reset or dropped.
// (Both seen on this project's test kernel; the second is what Flannel nodes have.)
//
// So the agent takes pod traffic off the bridge before the bridge sees it: a netdev ingress
// chain on every port of the bridge (the pods' veths) sends each IP packet, whatever MAC it was
// sent to, with its destination MAC rewritten, through a veth pair of ours (npd-fwd0 ->
// npd-in0). It arrives on npd-in0 as if routed there, and takes the same path as pod traffic on
// a routed CNI: conntrack, kube-proxy's DNAT, our divert chain and TPROXY, all once. What the
// agent relays to a pod leaves through the bridge as usual (routes to pods point at it). When
// the pair cannot be made, the chain drops the pods' IP traffic instead (closed, never open)
// and the agent reports itself not ready.
//
// Left on the bridge: ARP and other non-IP frames, and the ICMP, IGMP and ICMPv6 of multicast,
// broadcast and link-local traffic (neighbour discovery, MLD). Dropped: VLAN-tagged frames (a
// VLAN 0 tag would carry IP around the redirect), and the TCP, UDP, SCTP... of multicast,
// broadcast and IPv6 link-local traffic (no policy can be decided for them; switched, they would
// reach other pods unenforced, which they never do on a routed node). Unicast ICMP between pods
// is routed through the node instead of switched (a hop, TTL - 1): not policed either way.
//
// The bridge's ports change as pods come and go; they are read from sysfs every `pollMs` and
// the netdev table is replaced (one transaction) when the set changes. A pod's port that is not
// hooked yet (at most one poll) is switched as before: the same window as a pod whose address
// the agent has not learnt yet (the NetworkPolicy API allows that a new pod "may be started
// unprotected" until the plugin has handled it).
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { NetpoldError } from '../errors.js';
import type { Logger } from '../log.js';
import type { CommandRunner } from './interception.js';

/** The veth pair redirected frames go through: sent on OUT, received (and routed) on IN. */
export const REDIRECT_OUT = 'npd-fwd0';
export const REDIRECT_IN = 'npd-in0';
/** IN's MAC (locally administered, never seen off the node): the frames' new destination. */
export const REDIRECT_MAC = '02:6e:70:64:00:01';
/**
 * IN's IPv4 address: the IPv4 dummy address (RFC 7600), link scope. Not for use: the kernel's
 * reverse-path check drops every packet arriving on an interface without any IPv4 address
 * whenever rp_filter is on (it cannot run the loose check there).
 */
export const REDIRECT_IN_V4 = '192.0.0.8/32';
/** The default bridges watched: Flannel's and the bridge plugin's, and kubenet's. */
export const DEFAULT_POD_BRIDGES: readonly string[] = ['cni0', 'cbr0'];
export const DEFAULT_BRIDGE_POLL_MS = 250;
/**
 * Whether `name` is an interface name the kernel accepts (dev_valid_name: 1-15 bytes, not "."
 * or "..", no "/", ":" or ASCII white space) that can also be written in an nftables string
 * (no '"'; and no U+FFFD, which stands for bytes that are not UTF-8: see realBridgeSystem).
 */
export function isPortName(name: string): boolean {
  return name !== '.' && name !== '..' && Buffer.byteLength(name) <= 15 && /^[^\t\n\v\f\r /:"\uFFFD]+$/.test(name);
}

export interface BridgeRedirectConfig {
  /** The netdev table of ours. */
  readonly table: string;
  /** Bridges whose ports are redirected; empty: none (pods on them are not enforced: logged). */
  readonly bridges: readonly string[];
  readonly pollMs: number;
  /** While the pair cannot be made: how long between attempts (default 5 s; each makes and removes a veth pair). */
  readonly pairRetryMs?: number;
}

/** What the redirect needs from the system (real by default; fakes in tests). */
export interface BridgeSystem {
  readonly run: CommandRunner;
  /** The ports of bridge `name`, or undefined when there is no such bridge. */
  readonly ports: (name: string) => string[] | undefined;
  /** An interface's index, or undefined (gone). */
  readonly ifindex: (name: string) => number | undefined;
  /** Writes a sysctl (`net/ipv4/conf/X/rp_filter` form, under /proc/sys). */
  readonly sysctl: (key: string, value: string) => void;
  /** Reads one (trimmed), or undefined. */
  readonly readSysctl: (key: string) => string | undefined;
  /** Reads a file under /sys (trimmed), or undefined. */
  readonly readSysctlPath: (path: string) => string | undefined;
}

export const realBridgeSystem = (run: CommandRunner): BridgeSystem => ({
  run,
  ports: (name) => {
    try {
      // As bytes: a name that is not UTF-8 cannot be written in a ruleset, and decoded it would
      // name another (absent) device. Such names come back with U+FFFD, which isPortName refuses.
      return readdirSync(`/sys/class/net/${name}/brif`, { encoding: 'buffer' }).map((b) => {
        const text = b.toString('utf8');
        return Buffer.from(text, 'utf8').equals(b) ? text : `\uFFFD${b.toString('hex')}`;
      });
    } catch {
      return undefined;
    }
  },
  ifindex: (name) => {
    try {
      return Number.parseInt(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8'), 10);
    } catch {
      return undefined;
    }
  },
  sysctl: (key, value) => writeFileSync(`/proc/sys/${key}`, value),
  readSysctl: (key) => readTrimmed(`/proc/sys/${key}`),
  readSysctlPath: (path) => readTrimmed(path),
});

function readTrimmed(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/**
 * Devices per base chain: the kernel takes at most 255 in one chain's hook (NFT_NETDEVICE_MAX
 * 256, exclusive); nodes may run more pods than that (--max-pods).
 */
export const PORTS_PER_CHAIN = 200;

/**
 * The netdev table: ingress chains hooked on every port (none when `ports` is empty), each
 * jumping to one chain of rules. `pairUsable` false: the pods' IP traffic is dropped instead of
 * redirected (the pair could not be made: pods on the bridge stay closed, never open). The text deletes and recreates the table, so loading it
 * replaces the previous one in a single transaction (the old chains stay hooked until the new
 * ones are).
 */
export function renderBridgeRedirect(table: string, ports: readonly string[], pairUsable = true): string {
  const head = `table netdev ${table}\ndelete table netdev ${table}\n`;
  if (ports.length === 0) return `${head}table netdev ${table} {\n}\n`;
  const hooks: string[] = [];
  for (let i = 0; i < ports.length; i += PORTS_PER_CHAIN) {
    const devices = ports.slice(i, i + PORTS_PER_CHAIN).map((p) => `"${p}"`).join(', ');
    hooks.push(`  chain ports${i / PORTS_PER_CHAIN} {
    type filter hook ingress devices = { ${devices} } priority filter; policy accept;
    jump reroute
  }
`);
  }
  return `${head}table netdev ${table} {
  chain reroute {
    # VLAN-tagged frames: pods have no VLANs on a pod bridge, and a receiver takes a frame
    # tagged with VLAN 0 (priority only) as untagged. Switched, one would pass around what
    # follows: dropped.
    ether type { 8021q, 8021ad } drop
    # Multicast and broadcast: ICMP, IGMP and ICMPv6 (neighbour discovery, MLD) stay on the
    # bridge; the rest (TCP, UDP, SCTP...) is dropped: no policy can be decided for a group,
    # and on a routed node a group packet never reaches another pod either.
    ip daddr { 224.0.0.0/4, 255.255.255.255 } meta l4proto { icmp, igmp } return
    ip daddr { 224.0.0.0/4, 255.255.255.255 } drop
    ip6 daddr ff00::/8 meta l4proto ipv6-icmp return
    ip6 daddr ff00::/8 drop
    # Link-local unicast: ICMPv6 (neighbour discovery, ping) stays on the bridge; the rest is
    # dropped: neither end has a pod address to decide it by, and switched, a pod's fe80::
    # address would reach any service of its neighbours that listens on all addresses.
    ip6 saddr fe80::/10 meta l4proto ipv6-icmp return
    ip6 daddr fe80::/10 meta l4proto ipv6-icmp return
    ip6 saddr fe80::/10 drop
    ip6 daddr fe80::/10 drop
    # Unicast neighbour discovery between global addresses: the bridge's link too.
    icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } return
    # Every other IP packet from a pod, whatever MAC it was sent to (a unicast packet in a
    # broadcast frame reaches UDP sockets too): routed on the node, and so intercepted,
    # instead of switched or handed up through the bridge.
    ${pairUsable ? `ether type { ip, ip6 } ether daddr set ${REDIRECT_MAC} fwd to "${REDIRECT_OUT}"` : '# The veth pair cannot be used (see the agent\'s log): closed rather than switched.\n    ether type { ip, ip6 } drop'}
  }
${hooks.join('')}}
`;
}

interface FdbEntry {
  readonly mac: string;
  readonly ifname: string;
  readonly vlan: number | undefined;
  /** "" for a learned (dynamic) entry; "permanent", "static"... otherwise. */
  readonly state: string;
  /** "self", "extern_learn", "offload", "sticky"...: none for the bridge's own learning. */
  readonly flags: readonly string[];
}

/** `bridge -j fdb show` output; malformed input gives no entries. */
export function parseFdb(json: string): FdbEntry[] {
  let rows: unknown;
  try {
    rows = JSON.parse(json);
  } catch {
    return [];
  }
  if (!Array.isArray(rows)) return [];
  const out: FdbEntry[] = [];
  for (const r of rows as Record<string, unknown>[]) {
    if (typeof r?.mac !== 'string' || typeof r.ifname !== 'string') continue;
    out.push({
      mac: r.mac,
      ifname: r.ifname,
      vlan: typeof r.vlan === 'number' ? r.vlan : undefined,
      state: typeof r.state === 'string' ? r.state : '',
      flags: Array.isArray(r.flags) ? r.flags.filter((f): f is string => typeof f === 'string') : [],
    });
  }
  return out;
}

export class BridgeRedirect {
  private timer: NodeJS.Timeout | undefined;
  private pairReady = false;
  private lastError: string | undefined;
  private reportedBridges = '';
  private syncing: Promise<void> | undefined;
  private hookedPorts: readonly string[] = [];
  /** What the loaded table was made for (see syncOnce); undefined: no table of ours loaded. */
  private loadedKey: string | undefined;
  /** The bridges found by the last sync. */
  private present: readonly string[] = [];
  private refreshing: Promise<void> | undefined;
  /** The pair's last failure while closed, and when to try again. */
  private pairError: unknown;
  private pairRetryAt = 0;
  /** False while the pods' traffic cannot be redirected (closed instead) or the table not updated. */
  private healthy = true;
  /** Ports reported as unhookable (each once). */
  private readonly unhookable = new Set<string>();
  private readonly fdbRefreshedAt = new Map<string, number>();
  private readonly fdbError = new Map<string, string>();

  constructor(
    private readonly config: BridgeRedirectConfig,
    private readonly sys: BridgeSystem,
    private readonly log: Logger | undefined,
  ) {}

  /**
   * Whether the redirect does its job: false while the pair cannot be made (the pods' IP
   * traffic dropped instead) or the table could not follow the ports (a new port unhooked).
   */
  get ok(): boolean {
    return this.healthy && this.lastError === undefined;
  }

  /** The ports hooked now (sorted). */
  get hooked(): readonly string[] {
    return this.hookedPorts;
  }

  /**
   * Hooks the bridges' ports as they are now (failing loudly: pods on a bridge would otherwise
   * be switched unenforced), then follows their changes.
   */
  async start(): Promise<void> {
    if (this.config.bridges.length === 0) {
      // Off: said once, when a bridge of the usual names is there.
      const present = DEFAULT_POD_BRIDGES.filter((b) => this.sys.ports(b) !== undefined);
      if (present.length > 0) {
        this.log?.error(
          { interface: present.join(','), code: 'NETPOLD_E_UNSUPPORTED_NODE' },
          `pods are on a Linux bridge on this node (${present.join(', ')}) and --pod-bridges is off: their traffic on the bridge is not enforced`,
        );
      }
    }
    // A crashed run's table and pair, where there is no bridge to follow (or following them is
    // off): removed. Where a bridge is, the first sync replaces the table.
    if (this.config.bridges.every((b) => this.sys.ports(b) === undefined)) {
      const problems = await this.remove();
      if (problems.length > 0) throw new NetpoldError('NETPOLD_E_INTERCEPTION', problems.join('; '));
    }
    // A port can vanish between reading the list and loading the table (kernels before 6.16
    // refuse a chain on a device that does not exist): read again and retry.
    let err: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await this.sync();
        err = undefined;
        break;
      } catch (e) {
        err = e;
      }
    }
    if (err !== undefined) throw err;
    if (this.config.bridges.length === 0) return;
    void this.refresh();
    this.timer = setInterval(() => void this.tick(), this.config.pollMs);
    this.timer.unref();
  }

  /** Reads the ports and replaces the table if they changed. Throws NETPOLD_E_INTERCEPTION. */
  async sync(): Promise<void> {
    // One at a time: a tick never overlaps another or start().
    while (this.syncing) await this.syncing;
    const p = this.syncOnce();
    this.syncing = p;
    try {
      await p;
    } finally {
      this.syncing = undefined;
    }
  }

  private async syncOnce(): Promise<void> {
    const present: string[] = [];
    const all = new Set<string>();
    const unhookable = new Set<string>();
    for (const b of this.config.bridges) {
      const ports = this.sys.ports(b);
      if (ports === undefined) continue;
      present.push(b);
      for (const p of ports) {
        if (isPortName(p)) {
          all.add(p);
          continue;
        }
        unhookable.add(p);
        if (!this.unhookable.has(p)) {
          // Said, not skipped in silence: its pod's traffic on the bridge is not enforced.
          this.unhookable.add(p);
          this.log?.error(
            { interface: p, bridge: b, code: 'NETPOLD_E_UNSUPPORTED_NODE' },
            `bridge port ${JSON.stringify(p)} cannot be named in an nftables ruleset (a '"' in its name, or bytes that are not UTF-8, shown as hex after U+FFFD): the traffic of its pod on ${b} is not enforced`,
          );
        }
      }
    }
    const ports = [...all].sort();
    this.present = present;
    // Reported again if one comes back after it went.
    for (const p of [...this.unhookable]) if (!unhookable.has(p)) this.unhookable.delete(p);
    if (present.join(',') !== this.reportedBridges) {
      this.reportedBridges = present.join(',');
      if (present.length > 0) {
        this.log?.info(
          { bridges: present, via: `${REDIRECT_OUT} -> ${REDIRECT_IN}` },
          `pods on bridge ${present.join(', ')}: their ports' IP traffic is routed through ${REDIRECT_IN} and intercepted there`,
        );
        this.log?.warn(
          { bridges: present, code: 'NETPOLD_E_UNSUPPORTED_NODE' },
          'on a bridge, a pod\'s source address is not tied to its port: a pod with NET_RAW (a default container capability) can send as a neighbour and, spoofing ARP to the node, hold connections as that neighbour; drop NET_RAW from pods or use a routed CNI (README, "Pods on a bridge")',
        );
      }
    }
    // Nothing of ours is loaded and there is no bridge: nothing to do (a crashed run's leftovers
    // went in start()). Otherwise the table follows the ports, an empty one included.
    if (present.length === 0 && this.loadedKey === undefined) {
      this.healthy = true;
      return;
    }

    // The pair, while there are ports: made when missing (deleted by hand or by a network
    // manager: made again), and its reverse-path filter checked every time ("all" may change).
    let pairError: unknown;
    if (ports.length > 0) {
      if (this.sys.ifindex(REDIRECT_OUT) === undefined) {
        if (this.pairReady) this.log?.warn({ interface: REDIRECT_OUT }, 'the veth pair of the bridge redirect is gone: making it again');
        this.pairReady = false;
      }
      if (!this.pairReady && this.pairError !== undefined && Date.now() < this.pairRetryAt) {
        pairError = this.pairError; // closed until the next attempt
      } else {
        try {
          if (!this.pairReady) await this.ensurePair();
          else this.ensureLooseRpFilter();
          this.pairError = undefined;
        } catch (e) {
          pairError = e;
          // Not kept half made: the next attempt starts afresh (and takes the current defaults).
          if (!this.pairReady) await this.sys.run('ip', ['link', 'del', 'dev', REDIRECT_OUT]);
          this.pairReady = false;
          this.pairError = e;
          this.pairRetryAt = Date.now() + (this.config.pairRetryMs ?? 5_000);
        }
      }
    }
    const usable = pairError === undefined;
    // What is loaded: the ports (names and indexes: a port made again under its name is a new
    // device, and kernels before 6.16 drop a hook with its device), and the pair's index (the
    // fwd rule holds it), or "closed" when the pods' traffic is dropped instead.
    const portsKey = ports.map((p) => `${p}#${this.sys.ifindex(p) ?? 0}`).join(',');
    const key = ports.length === 0 ? '' : `${portsKey}|${usable ? (this.sys.ifindex(REDIRECT_OUT) ?? 0) : 'closed'}`;
    if (key !== this.loadedKey) {
      try {
        await this.must('nft', ['-f', '-'], renderBridgeRedirect(this.config.table, ports, usable));
      } catch (e) {
        this.healthy = false;
        if (pairError === undefined) throw e;
        throw new NetpoldError('NETPOLD_E_INTERCEPTION', `${(pairError as Error).message}; and closing the bridge ports instead failed too: ${(e as Error).message}`);
      }
      this.loadedKey = key;
      this.hookedPorts = ports;
      this.log?.debug({ ports, closed: !usable }, 'bridge ports hooked');
    }
    // Ready only when every port is redirected: none closed, none unhookable.
    this.healthy = usable && unhookable.size === 0;
    if (!usable) throw pairError;
  }

  /**
   * Keeps the bridges' forwarding entries alive when due (see refreshFdb): beside the sync, never
   * holding it up, one at a time; never rejects.
   */
  refresh(): Promise<void> {
    if (this.refreshing) return this.refreshing;
    const p = this.refreshFdb(this.present)
      .catch((e: unknown) => this.log?.error({ code: 'NETPOLD_E_INTERCEPTION', error: e instanceof Error ? e.message : String(e) }, "keeping the bridge's forwarding entries alive failed"))
      .finally(() => {
        this.refreshing = undefined;
      });
    this.refreshing = p;
    return p;
  }

  /**
   * Keeps the bridges' forwarding entries for the pods alive. The bridge learns a pod's MAC
   * from the frames it switches, and the redirect takes the pods' IP frames before it sees
   * them: only ARP and the like still teach it, and a pod whose neighbour entries the node keeps
   * confirmed (TCP traffic does) sends no more ARP. Aged out, the entry is missing, and the
   * node's frames to that pod (relayed data included) are flooded to every port of the bridge,
   * where a neighbour with NET_RAW can read them. So every learned entry on a hooked port is
   * marked used ("bridge fdb replace ... master use": what a received frame would do) at a third
   * of the bridge's ageing time. Entries follow the kernel's own learning (a MAC that moves,
   * moves); static and local ones are left alone.
   */
  private async refreshFdb(present: readonly string[]): Promise<void> {
    if (this.hookedPorts.length === 0) return;
    for (const b of present) {
      const ageingCs = Number(this.sys.readSysctlPath(`/sys/class/net/${b}/bridge/ageing_time`) ?? '30000');
      // Ageing 0: the bridge floods everything anyway (a hub); nothing to keep.
      if (!(ageingCs > 0)) continue;
      const every = Math.max(1_000, (ageingCs * 10) / 3);
      if (Date.now() - (this.fdbRefreshedAt.get(b) ?? 0) < every) continue;
      // Failures are logged here (once per distinct message) and retried at the next poll: the
      // hooks do not depend on it, and one bridge failing does not stop the others.
      const problem = await this.refreshFdbOf(b);
      if (problem === undefined) {
        this.fdbRefreshedAt.set(b, Date.now());
        if (this.fdbError.has(b)) this.log?.info({ bridge: b }, 'bridge forwarding entries kept alive again');
        this.fdbError.delete(b);
      } else if (this.fdbError.get(b) !== problem) {
        this.fdbError.set(b, problem);
        this.log?.error({ bridge: b, code: 'NETPOLD_E_INTERCEPTION', error: problem }, "keeping the bridge's forwarding entries of pods alive failed (frames to a pod whose entry ages out are flooded to its neighbours); retrying");
      }
    }
  }

  /** One bridge's refresh; a problem, or undefined. */
  private async refreshFdbOf(b: string): Promise<string | undefined> {
    const shown = await this.sys.run('bridge', ['-j', 'fdb', 'show', 'br', b]);
    if (shown.code !== 0) return `bridge -j fdb show br ${b} failed: ${shown.stderr.trim() || `exit ${shown.code}`}`;
    const hooked = new Set(this.hookedPorts);
    const lines: string[] = [];
    for (const e of parseFdb(shown.stdout)) {
      if (!hooked.has(e.ifname) || e.state !== '' || e.flags.length > 0 || !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(e.mac)) continue;
      lines.push(`fdb replace ${e.mac} dev ${e.ifname} master use${e.vlan !== undefined ? ` vlan ${e.vlan}` : ''}\n`);
    }
    if (lines.length === 0) return undefined;
    // -force: an entry that went away meanwhile does not stop the rest.
    const r = await this.sys.run('bridge', ['-force', '-batch', '-'], lines.join(''));
    if (r.code !== 0 && !/No such file|not found|does not exist/i.test(r.stderr)) return `refreshing the forwarding entries of ${b} failed: ${r.stderr.trim() || `exit ${r.code}`}`;
    return undefined;
  }


  private async tick(): Promise<void> {
    // A sync still running (slow nft): this tick is skipped, not queued behind it.
    if (this.syncing) return;
    void this.refresh();
    try {
      await this.sync();
      if (this.lastError !== undefined) this.log?.info({}, 'bridge ports hooked again');
      this.lastError = undefined;
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      // Once per distinct error, not every poll.
      if (msg !== this.lastError) this.log?.error({ code: 'NETPOLD_E_INTERCEPTION', error: msg }, 'updating the bridge port redirect failed; retrying');
      this.lastError = msg;
    }
  }

  /**
   * Reverse-path filtering on IN at most loose: a pod's source address is routed via the
   * bridge, not IN, which strict mode rejects; loose only asks that it be routable at all.
   * The kernel applies the larger of "all" and IN's own value (IN starts with "default"'s),
   * so IN set to 2 is loose whatever "all" says. Written only when the effective value is
   * strict: the DaemonSet's /proc/sys is read-only, and the usual settings need nothing.
   */
  private ensureLooseRpFilter(): void {
    const key = `net/ipv4/conf/${REDIRECT_IN}/rp_filter`;
    const all = Number(this.sys.readSysctl('net/ipv4/conf/all/rp_filter') ?? '0');
    const own = Number(this.sys.readSysctl(key) ?? '0');
    if (Math.max(all, own) === 1) {
      try {
        this.sys.sysctl(key, '2');
      } catch (e) {
        throw new NetpoldError(
          'NETPOLD_E_INTERCEPTION',
          `${REDIRECT_IN}'s reverse-path filter is strict (net.ipv4.conf.all.rp_filter ${all}, its own ${own}, from net.ipv4.conf.default.rp_filter) and setting net.ipv4.conf.${REDIRECT_IN}.rp_filter to 2 failed (${(e as NodeJS.ErrnoException).code ?? String(e)}): pod traffic taken off the bridge would be dropped. Set net.ipv4.conf.default.rp_filter to 2${all === 1 ? '' : ' (or 0)'} on the node, or give the agent a writable /proc/sys; or run with --pod-bridges off (pods on the bridge are then not enforced)`,
        );
      }
    }
  }

  /** Creates (or reuses, after a crash) the veth pair and makes its receiving end route. */
  private async ensurePair(): Promise<void> {
    const have = await this.sys.run('ip', ['link', 'show', 'dev', REDIRECT_OUT]);
    if (have.code !== 0) await this.must('ip', ['link', 'add', REDIRECT_OUT, 'type', 'veth', 'peer', 'name', REDIRECT_IN]);
    // Any frame a pod can send must fit (a veth drops what exceeds its MTU, GSO aside).
    for (const dev of [REDIRECT_OUT, REDIRECT_IN]) await this.must('ip', ['link', 'set', 'dev', dev, 'mtu', '65535']);
    await this.must('ip', ['link', 'set', 'dev', REDIRECT_IN, 'address', REDIRECT_MAC]);
    await this.must('ip', ['addr', 'replace', REDIRECT_IN_V4, 'dev', REDIRECT_IN, 'scope', 'link']);
    this.ensureLooseRpFilter();
    for (const dev of [REDIRECT_OUT, REDIRECT_IN]) await this.must('ip', ['link', 'set', 'dev', dev, 'up']);
    this.pairReady = true;
  }

  /** Stops following the ports; removes the table and the veth pair. Never throws. */
  async stop(): Promise<string[]> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    while (this.syncing) await this.syncing.catch(() => undefined);
    while (this.refreshing) await this.refreshing.catch(() => undefined);
    return this.remove();
  }

  private async remove(): Promise<string[]> {
    const problems: string[] = [];
    const list = await this.sys.run('nft', ['list', 'tables', 'netdev']);
    if (list.code === 0 && new RegExp(`^table netdev ${this.config.table}$`, 'm').test(list.stdout)) {
      const r = await this.sys.run('nft', ['delete', 'table', 'netdev', this.config.table]);
      if (r.code !== 0) problems.push(`nft delete table netdev ${this.config.table}: ${r.stderr.trim()}`);
    }
    const have = await this.sys.run('ip', ['link', 'show', 'dev', REDIRECT_OUT]);
    if (have.code === 0) {
      const r = await this.sys.run('ip', ['link', 'del', 'dev', REDIRECT_OUT]);
      if (r.code !== 0) problems.push(`ip link del ${REDIRECT_OUT}: ${r.stderr.trim()}`);
    }
    this.loadedKey = undefined;
    this.hookedPorts = [];
    this.pairReady = false;
    return problems;
  }

  private async must(cmd: string, args: string[], input?: string): Promise<void> {
    const r = await this.sys.run(cmd, args, input);
    if (r.code !== 0) {
      throw new NetpoldError('NETPOLD_E_INTERCEPTION', `${cmd} ${args.join(' ')} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
    }
  }
}
