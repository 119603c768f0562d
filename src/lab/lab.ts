// The lab: a test node built from manifests out of network namespaces (no policy enforcement).
//
//   np-ID-node   the node: forwarding on, rp_filter off, its addresses on dummy `node0`
//   np-ID-p<k>   one per pod with an address (k: index in ns/name order); veth eth0 <-> npv<k>;
//                pod: its IPs (/32, /128 nodad), routes via 169.254.1.1 / fe80::1 (Calico style);
//                node: 169.254.1.1/32 and fe80::1/64 on npv<k>, host routes to the pod's IPs
//   np-ID-ext    "outside": veth eth0 <-> npext, node routes 198.19.0.0/16 and 2001:2:0:1::/64
//
// With `bridge` (Flannel style): every npv<k> is a port of the bridge `cni0` in the node, which
// holds 169.254.1.1/32 and fe80::1/64 instead; the node routes pod addresses to cni0; each pod
// has an on-link route to every other pod's address (reached by ARP/ND and switched on the
// bridge, never routed), everything else (the node, Service addresses, outside) via the gateway.
// The bridge's netfilter hooks stay on (bridge-nf-call-iptables=1, as kube-proxy needs).
//
// Each namespace runs one lab agent (src/lab/lab-agent.ts): responders for the pod's ports and a
// prober reached through a Unix socket in /run/netpold/lab-ID/. Host-network pods answer from
// the node namespace on the node's addresses.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { formatManifestError, NetpoldError } from '../errors.js';
import type { ClusterState } from '../model/types.js';
import { loadManifestPaths } from '../source/files/load.js';
import {
  canonicalIp,
  checkLabId,
  EXT_RANGES,
  GATEWAY_V4,
  GATEWAY_V6,
  inExtRanges,
  inLabRanges,
  isIpv4,
  LAB_RANGES,
  netnsPrefix,
  planLab,
  type LabPlan,
} from './plan.js';
import type { AgentConfig, LabProtocol, ListenerSpec, PingAnswer, ProbeAnswer } from './protocol.js';
import { MAX_LINE } from './protocol.js';
import { exec, type ExecOptions, type ExecResult, ip, ipn, labAgentScript, listNetns, mapLimit, netnsPids, requireLab, sleep, sysctls, which } from './sys.js';

export const LAB_STATE_ROOT = '/run/netpold';
/** How many namespaces are configured, and probes run, at once. */
export const LAB_CONCURRENCY = 8;
const AGENT_READY_TIMEOUT_MS = 20_000;
const AGENT_STOP_TIMEOUT_MS = 3_000;
const DEFAULT_PROBE_TIMEOUT_MS = 1_000;
const MAX_PROBE_TIMEOUT_MS = 60_000;

export function labStateDir(id: string): string {
  return join(LAB_STATE_ROOT, `lab-${id}`);
}

export interface LabPodState {
  readonly namespace: string;
  readonly name: string;
  /** The network namespace its responders run in (the node's for host-network pods). */
  readonly netns: string;
  readonly k: number | undefined;
  /** Its addresses (the node's for host-network pods). */
  readonly ips: readonly string[];
  readonly hostNetwork: boolean;
  /** The prober socket of its namespace. */
  readonly socket: string;
}

export interface LabAgentState {
  readonly role: 'pod' | 'node' | 'ext';
  readonly netns: string;
  readonly socket: string;
  readonly config: string;
  readonly log: string;
  pid: number | undefined;
}

/** The contents of /run/netpold/lab-ID/state.json. */
export interface LabState {
  readonly version: 1;
  readonly id: string;
  readonly stateDir: string;
  readonly createdAt: string;
  readonly nodeName: string | undefined;
  readonly nodeNamespace: string;
  readonly extNamespace: string;
  readonly nodeAddresses: readonly string[];
  readonly ports: readonly number[];
  readonly namespaces: readonly string[];
  readonly pods: readonly LabPodState[];
  readonly agents: readonly LabAgentState[];
}

export interface LabUpOptions {
  /** `[a-z0-9]{1,8}`. */
  id: string;
  /** Manifest files or folders (used when `state` is not given). */
  manifests?: string[];
  state?: ClusterState;
  /** The Node object whose addresses the node gets (default: the first Node). */
  nodeName?: string;
  /** Extra ports every pod answers on, TCP and UDP (default [80]). */
  ports?: number[];
  /** Progress and notices (default: silent). */
  log?: (text: string) => void;
  /** Pods on a Linux bridge `cni0` (Flannel style) instead of routed veths (Calico style). */
  bridge?: boolean;
}

/** The pods' bridge in a `bridge` lab: the name Flannel and the bridge CNI plugin use. */
export const LAB_BRIDGE = 'cni0';

export interface LabProbeOptions {
  /** Default 1000 ms. */
  timeoutMs?: number;
  /** The address family, when both ends have both (default IPv4 first). */
  family?: 4 | 6;
}

export interface ProbeResult extends ProbeAnswer {
  /** The endpoints as given / resolved (`ns/pod`, `node`, `external` or an address). */
  readonly from: string;
  readonly to: string;
  /** Source and destination addresses. */
  readonly src: string;
  readonly dst: string;
  readonly port: number;
  readonly protocol: LabProtocol;
}

export interface LabDownReport {
  readonly namespaces: readonly string[];
  readonly processes: number;
  readonly stateDir: boolean;
}

/** A lab endpoint: where to probe from (agent socket and source address) and its addresses. */
interface LabEndpoint {
  readonly label: string;
  readonly socket: string;
  readonly ips: readonly string[];
  /** Bind the probe to the chosen address (node, host-network pods, external addresses). */
  readonly bind: boolean;
  readonly ext: boolean;
}

export class Lab {
  private constructor(readonly state: LabState) {}

  get id(): string {
    return this.state.id;
  }
  get nodeNamespace(): string {
    return this.state.nodeNamespace;
  }
  get extNamespace(): string {
    return this.state.extNamespace;
  }
  get stateDir(): string {
    return this.state.stateDir;
  }
  get pods(): readonly LabPodState[] {
    return this.state.pods;
  }
  get nodeAddresses(): readonly string[] {
    return this.state.nodeAddresses;
  }

  // -------------------------------------------------------------------------------------------
  // up / open / down

  /** Builds a lab. On any failure, tears down what it built and throws NETPOLD_E_LAB. */
  static async up(opts: LabUpOptions): Promise<Lab> {
    requireLab();
    checkLabId(opts.id);
    const say = opts.log ?? (() => undefined);
    const script = labAgentScript();
    const cluster = opts.state ?? loadOrThrow(opts.manifests ?? []);
    const plan = planLab(cluster, { id: opts.id, nodeName: opts.nodeName, ports: opts.ports });
    for (const n of plan.notices) say(`notice: ${n}`);

    const dir = labStateDir(plan.id);
    const exists = (): NetpoldError =>
      new NetpoldError('NETPOLD_E_LAB', `lab ${plan.id} exists already: run \`netpold lab down --id ${plan.id}\` first`);
    const leftovers = (await listNetns()).filter((n) => n.startsWith(netnsPrefix(plan.id)));
    if (leftovers.length > 0 || existsSync(dir)) throw exists();
    mkdirSync(LAB_STATE_ROOT, { recursive: true });
    try {
      mkdirSync(dir, { mode: 0o700 }); // the lab's lock: two `up` of one id cannot both get here
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw exists();
      throw e;
    }
    try {
      return await build(plan, dir, script, say, opts.bridge === true);
    } catch (e) {
      say(`lab ${plan.id}: a step failed, tearing down`);
      let cleanup = '';
      try {
        await Lab.downById(plan.id);
      } catch (e2) {
        cleanup = ` (and the teardown failed too: ${errText(e2)}; run \`netpold lab down --id ${plan.id}\`)`;
      }
      throw new NetpoldError('NETPOLD_E_LAB', `lab ${plan.id}: ${errText(e)}${cleanup}`);
    }
  }

  /** The running lab `id`, from its state file. */
  static open(id: string): Lab {
    checkLabId(id);
    const file = join(labStateDir(id), 'state.json');
    if (!existsSync(file)) throw new NetpoldError('NETPOLD_E_LAB', `no lab ${id}: run \`netpold lab up --id ${id} --manifests PATH...\``);
    let state: LabState;
    try {
      state = JSON.parse(readFileSync(file, 'utf8')) as LabState;
    } catch (e) {
      throw new NetpoldError('NETPOLD_E_LAB', `lab ${id}: unreadable state file ${file}: ${errText(e)}`);
    }
    if (state.version !== 1 || state.id !== id || !Array.isArray(state.pods) || !Array.isArray(state.agents)) {
      throw new NetpoldError('NETPOLD_E_LAB', `lab ${id}: ${file} is not a complete lab state (is \`lab up\` still running?); run \`netpold lab down --id ${id}\``);
    }
    return new Lab(state);
  }

  /**
   * Stops the lab's processes (its agents, and anything else running in its namespaces), deletes
   * every `np-ID-*` namespace (also ones the state file does not list) and the state directory.
   * Idempotent. Throws NETPOLD_E_LAB if something could not be removed.
   */
  static async downById(id: string): Promise<LabDownReport> {
    requireLab();
    checkLabId(id);
    const dir = labStateDir(id);
    const prefix = netnsPrefix(id);
    const namespaces = (await listNetns()).filter((n) => n.startsWith(prefix));

    const pids = new Set<number>();
    for (const pid of agentPidsFromState(dir)) pids.add(pid);
    for (const ns of namespaces) for (const pid of await netnsPids(ns)) pids.add(pid);
    pids.delete(process.pid);
    const processes = await stopProcesses([...pids]);

    const failed: string[] = [];
    await mapLimit(namespaces, LAB_CONCURRENCY, async (ns) => {
      for (let attempt = 0; attempt < 3; attempt++) {
        const r = await exec('ip', ['netns', 'del', ns]);
        if (r.code === 0 || !(await listNetns()).includes(ns)) return;
        if (attempt === 2) failed.push(`${ns}: ${r.stderr.trim()}`);
        await sleep(200);
      }
    });
    const hadDir = existsSync(dir);
    rmSync(dir, { recursive: true, force: true });
    const left = (await listNetns()).filter((n) => n.startsWith(prefix));
    if (left.length > 0) {
      throw new NetpoldError('NETPOLD_E_LAB', `lab ${id}: could not delete namespace(s) ${left.join(', ')}${failed.length ? `: ${failed.join('; ')}` : ''}`);
    }
    return { namespaces, processes, stateDir: hadDir };
  }

  async down(): Promise<void> {
    await Lab.downById(this.id);
  }

  // -------------------------------------------------------------------------------------------
  // queries

  /** The network namespace of pod `ns/name` (the node's for a host-network pod). */
  podNamespace(nsName: string): string {
    const pod = this.findPod(nsName);
    if (!pod) throw new NetpoldError('NETPOLD_E_UNKNOWN_ENDPOINT', `lab ${this.id}: no pod ${nsName}`);
    return pod.netns;
  }

  /** Runs `argv` in a namespace of the lab (`ip netns exec NS ...`); never throws for a non-zero exit. */
  async exec(namespace: string, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    if (!namespace.startsWith(netnsPrefix(this.id))) {
      throw new NetpoldError('NETPOLD_E_LAB', `${namespace} is not a namespace of lab ${this.id}`);
    }
    if (argv.length === 0) throw new NetpoldError('NETPOLD_E_USAGE', 'exec: empty command');
    return exec('ip', ['netns', 'exec', namespace, ...argv], opts);
  }

  /**
   * One connection attempt from `from` to `to` (each `ns/pod` or an address): a pod's own
   * namespace for pods; the node namespace, bound to the node's address, for the node's addresses
   * and host-network pods; the external namespace, bound to the address, for 198.19.0.0/16 and
   * 2001:2:0:1::/64 (the address is added first).
   */
  async probe(from: string, to: string, port: number, protocol: LabProtocol | string, opts: LabProbeOptions = {}): Promise<ProbeResult> {
    const proto = checkProtocol(protocol);
    checkPort(port);
    const timeoutMs = checkTimeout(opts.timeoutMs);
    const src = this.endpoint(from, 'from', true);
    const dst = this.endpoint(to, 'to', false);
    const [srcIp, dstIp] = pickPair(src, dst, opts.family);
    if (src.ext) await this.addExtAddress(srcIp);
    if (dst.ext) {
      await this.addExtAddress(dstIp);
      const ans = (await request(this.socketOf('ext'), { op: 'listen', host: dstIp }, 10_000)) as { ok?: boolean; error?: string };
      if (ans.ok !== true) throw new NetpoldError('NETPOLD_E_LAB', `lab ${this.id}: the external namespace cannot listen on ${dstIp}: ${ans.error ?? 'no answer'}`);
    }
    const ans = (await request(
      src.socket,
      { op: 'probe', to: dstIp, port, protocol: proto, timeoutMs, ...(src.bind ? { from: srcIp } : {}) },
      timeoutMs + 10_000,
    )) as ProbeAnswer;
    if (typeof ans.result !== 'string') throw new NetpoldError('NETPOLD_E_LAB', `lab ${this.id}: bad answer from ${src.socket}: ${JSON.stringify(ans)}`);
    return { ...ans, from: src.label, to: dst.label, src: srcIp, dst: dstIp, port, protocol: proto };
  }

  /**
   * Probes every ordered pair of pods (own namespace, an address of `family`; a pod with itself
   * included), LAB_CONCURRENCY at a time. `{"ns/from": {"ns/to": connected}}`, rows and columns
   * in ns/name order (as `netpold matrix --json`).
   */
  async matrix(port: number, protocol: LabProtocol | string, opts: { family?: 4 | 6; timeoutMs?: number } = {}): Promise<Record<string, Record<string, boolean>>> {
    const family = opts.family ?? 4;
    const members = this.state.pods
      .filter((p) => !p.hostNetwork && p.ips.some((a) => isIpv4(a) === (family === 4)))
      .sort((a, b) => (a.namespace === b.namespace ? cmp(a.name, b.name) : cmp(a.namespace, b.namespace)))
      .map((p) => `${p.namespace}/${p.name}`);
    const pairs = members.flatMap((a) => members.map((b) => [a, b] as const));
    const results = await mapLimit(pairs, LAB_CONCURRENCY, ([a, b]) =>
      this.probe(a, b, port, protocol, { family, ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) }),
    );
    const out: Record<string, Record<string, boolean>> = {};
    for (const a of members) out[a] = {};
    pairs.forEach(([a, b], i) => {
      out[a]![b] = results[i]!.result === 'connected';
    });
    return out;
  }

  // -------------------------------------------------------------------------------------------

  private findPod(nsName: string): LabPodState | undefined {
    return this.state.pods.find((p) => `${p.namespace}/${p.name}` === nsName);
  }

  private socketOf(role: 'node' | 'ext'): string {
    const a = this.state.agents.find((x) => x.role === role);
    if (!a) throw new NetpoldError('NETPOLD_E_LAB', `lab ${this.id}: no ${role} agent in the state file`);
    return a.socket;
  }

  private endpoint(text: string, flag: 'from' | 'to', source: boolean): LabEndpoint {
    if (net.isIP(text) !== 0) {
      const addr = canonicalIp(text);
      if (!inLabRanges(addr)) {
        throw new NetpoldError('NETPOLD_E_LAB', `--${flag} ${text}: the lab uses only addresses in ${LAB_RANGES.join(' and ')}`);
      }
      const pod = this.state.pods.find((p) => !p.hostNetwork && p.ips.includes(addr));
      if (pod) return { label: `${pod.namespace}/${pod.name}`, socket: pod.socket, ips: [addr], bind: false, ext: false };
      if (this.state.nodeAddresses.includes(addr)) return { label: 'node', socket: this.socketOf('node'), ips: [addr], bind: true, ext: false };
      if (inExtRanges(addr)) return { label: 'external', socket: this.socketOf('ext'), ips: [addr], bind: true, ext: true };
      if (source) {
        throw new NetpoldError(
          'NETPOLD_E_UNKNOWN_ENDPOINT',
          `--from ${text}: not a pod or node address of lab ${this.id}, nor an external address (${EXT_RANGES.join(', ')})`,
        );
      }
      return { label: addr, socket: '', ips: [addr], bind: false, ext: false };
    }
    const pod = this.findPod(text);
    if (!pod) throw new NetpoldError('NETPOLD_E_UNKNOWN_ENDPOINT', `--${flag} ${text}: expected NAMESPACE/POD of lab ${this.id} or an IP address`);
    if (pod.hostNetwork) return { label: text, socket: this.socketOf('node'), ips: this.state.nodeAddresses, bind: true, ext: false };
    return { label: text, socket: pod.socket, ips: pod.ips, bind: false, ext: false };
  }

  private async addExtAddress(addr: string): Promise<void> {
    if (isIpv4(addr)) await ipn(this.extNamespace, 'addr', 'replace', `${addr}/32`, 'dev', 'eth0');
    else await ipn(this.extNamespace, '-6', 'addr', 'replace', `${addr}/128`, 'dev', 'eth0', 'nodad');
  }
}

// ---------------------------------------------------------------------------------------------
// building

async function build(plan: LabPlan, dir: string, script: string, say: (t: string) => void, bridge: boolean): Promise<Lab> {
  const t0 = Date.now();
  const node = plan.nodeNamespace;
  const ext = plan.extNamespace;
  const own = plan.pods.filter((p) => !p.hostNetwork);
  const namespaces = [node, ext, ...own.map((p) => p.netns)];
  const sock = (name: string): string => join(dir, `${name}.sock`);

  const agents: LabAgentState[] = [
    agentState('node', node, dir, 'node'),
    agentState('ext', ext, dir, 'ext'),
    ...own.map((p) => agentState('pod', p.netns, dir, String(p.k))),
  ];
  const state: LabState = {
    version: 1,
    id: plan.id,
    stateDir: dir,
    createdAt: new Date().toISOString(),
    nodeName: plan.nodeName,
    nodeNamespace: node,
    extNamespace: ext,
    nodeAddresses: plan.nodeAddresses,
    ports: plan.ports,
    namespaces,
    pods: plan.pods.map((p) => ({
      namespace: p.namespace,
      name: p.name,
      netns: p.netns,
      k: p.k,
      ips: p.ips,
      hostNetwork: p.hostNetwork,
      socket: p.hostNetwork ? sock('node') : sock(String(p.k)),
    })),
    agents,
  };

  // The node. Created first and alone: it also sets up /run/netns for the others.
  await ip('netns', 'add', node);
  await sysctls(node, {
    'net.ipv4.ip_forward': 1,
    'net.ipv6.conf.all.forwarding': 1,
    'net.ipv4.conf.all.rp_filter': 0,
    'net.ipv4.conf.default.rp_filter': 0,
    'net.ipv6.conf.all.accept_dad': 0,
    'net.ipv6.conf.default.accept_dad': 0,
  });
  await ipn(node, 'link', 'set', 'lo', 'up');
  const dummy = await exec('ip', ['-n', node, 'link', 'add', 'node0', 'type', 'dummy']);
  if (dummy.code !== 0) {
    if (!/unknown device type/i.test(dummy.stderr)) throw new Error(`\`ip -n ${node} link add node0 type dummy\` failed: ${dummy.stderr.trim()}`);
    // A kernel without CONFIG_DUMMY: a veth pair inside the node namespace holds the addresses
    // just as well (node0 carries them, its peer node0p stays empty).
    say(`lab ${plan.id}: no dummy interfaces in this kernel; node0 is a veth (peer node0p)`);
    await ipn(node, 'link', 'add', 'node0', 'type', 'veth', 'peer', 'name', 'node0p');
    await ipn(node, 'link', 'set', 'node0p', 'up');
  }
  await ipn(node, 'link', 'set', 'node0', 'up');
  for (const a of plan.nodeAddresses) {
    if (isIpv4(a)) await ipn(node, 'addr', 'add', `${a}/32`, 'dev', 'node0');
    else await ipn(node, '-6', 'addr', 'add', `${a}/128`, 'dev', 'node0', 'nodad');
  }

  if (bridge) {
    await ipn(node, 'link', 'add', LAB_BRIDGE, 'type', 'bridge');
    await sysctls(node, { [`net.ipv4.conf.${LAB_BRIDGE}.rp_filter`]: 0 });
    await ipn(node, 'addr', 'add', `${GATEWAY_V4}/32`, 'dev', LAB_BRIDGE);
    await ipn(node, '-6', 'addr', 'add', `${GATEWAY_V6}/64`, 'dev', LAB_BRIDGE, 'nodad');
    await ipn(node, 'link', 'set', LAB_BRIDGE, 'up');
  }
  // The external namespace and the pods, LAB_CONCURRENCY at a time.
  const hostRoutes = (ips: readonly string[]) => ips.map((a) => (isIpv4(a) ? `${a}/32` : `${a}/128`));
  const links: LinkSpec[] = [
    { netns: ext, nodeIf: 'npext', ips: [], routes: [...EXT_RANGES] },
    ...own.map((p) => ({
      netns: p.netns,
      nodeIf: p.nodeIf!,
      ips: p.ips,
      routes: hostRoutes(p.ips),
      ...(bridge ? { bridged: { peers: own.filter((o) => o !== p).flatMap((o) => hostRoutes(o.ips)) } } : {}),
    })),
  ];
  await mapLimit(links, LAB_CONCURRENCY, (l) => buildLink(node, l));
  say(`lab ${plan.id}: ${namespaces.length} namespaces in ${Date.now() - t0} ms`);

  // The agents.
  const configs = new Map<string, AgentConfig>();
  const hostListeners = plan.pods.filter((p) => p.hostNetwork).flatMap((p) => p.listeners);
  configs.set(node, agentConfig(plan, 'node', node, sock('node'), hostListeners));
  configs.set(ext, agentConfig(plan, 'ext', ext, sock('ext'), []));
  for (const p of own) configs.set(p.netns, agentConfig(plan, 'pod', p.netns, sock(String(p.k)), p.listeners));
  writeState(dir, state); // pids follow; `down` also finds processes through their namespaces
  const running = agents.map((a) => startAgent(a, configs.get(a.netns)!, script));
  writeState(dir, state);
  await waitReady(running);
  writeState(dir, state);
  say(`lab ${plan.id}: up in ${Date.now() - t0} ms`);
  return Lab.open(plan.id);
}

interface LinkSpec {
  readonly netns: string;
  readonly nodeIf: string;
  readonly ips: readonly string[];
  /** Routed by the node to nodeIf (to the bridge when bridged). */
  readonly routes: readonly string[];
  /** A port of the lab bridge; `peers`: the other pods' addresses, on-link. */
  readonly bridged?: { readonly peers: readonly string[] };
}

async function buildLink(node: string, l: LinkSpec): Promise<void> {
  const { netns, nodeIf, ips, routes: nodeRoutes, bridged } = l;
  await ip('netns', 'add', netns);
  // Before the veth exists, so eth0 inherits them (no DAD delay on its link-local address).
  await sysctls(netns, {
    'net.ipv4.conf.all.rp_filter': 0,
    'net.ipv4.conf.default.rp_filter': 0,
    'net.ipv6.conf.all.accept_dad': 0,
    'net.ipv6.conf.default.accept_dad': 0,
  });
  await ipn(netns, 'link', 'set', 'lo', 'up');
  await ipn(node, 'link', 'add', nodeIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns);
  await sysctls(node, { [`net.ipv4.conf.${nodeIf}.rp_filter`]: 0 });
  if (bridged) {
    await ipn(node, 'link', 'set', nodeIf, 'master', LAB_BRIDGE);
  } else {
    await ipn(node, 'addr', 'add', `${GATEWAY_V4}/32`, 'dev', nodeIf);
    await ipn(node, '-6', 'addr', 'add', `${GATEWAY_V6}/64`, 'dev', nodeIf, 'nodad');
  }
  await ipn(node, 'link', 'set', nodeIf, 'up');
  await ipn(netns, 'link', 'set', 'eth0', 'up');
  for (const a of ips) {
    if (isIpv4(a)) await ipn(netns, 'addr', 'add', `${a}/32`, 'dev', 'eth0');
    else await ipn(netns, '-6', 'addr', 'add', `${a}/128`, 'dev', 'eth0', 'nodad');
  }
  await ipn(netns, 'route', 'add', GATEWAY_V4, 'dev', 'eth0', 'scope', 'link');
  await ipn(netns, 'route', 'add', 'default', 'via', GATEWAY_V4, 'dev', 'eth0');
  await ipn(netns, '-6', 'route', 'add', 'default', 'via', GATEWAY_V6, 'dev', 'eth0');
  if (bridged && bridged.peers.length > 0) {
    // One `ip -batch` per pod: a lab of n pods has n * (n - 1) such routes.
    const input = bridged.peers.map((r) => `route add ${r} dev eth0\n`).join('');
    const r = await exec('ip', ['-n', netns, '-batch', '-'], { input });
    if (r.code !== 0) throw new Error(`on-link routes in ${netns}: ${r.stderr.trim()}`);
  }
  const nodeDev = bridged ? LAB_BRIDGE : nodeIf;
  for (const r of nodeRoutes) {
    if (r.includes(':')) await ipn(node, '-6', 'route', 'add', r, 'dev', nodeDev);
    else await ipn(node, 'route', 'add', r, 'dev', nodeDev);
  }
}

function agentState(role: LabAgentState['role'], netns: string, dir: string, name: string): LabAgentState {
  return { role, netns, socket: join(dir, `${name}.sock`), config: join(dir, `${name}.json`), log: join(dir, `${name}.log`), pid: undefined };
}

function agentConfig(plan: LabPlan, role: AgentConfig['role'], netns: string, socket: string, listeners: readonly ListenerSpec[]): AgentConfig {
  return { labId: plan.id, role, netns, socket, listeners, extraPorts: role === 'ext' ? plan.ports : [] };
}

interface RunningAgent {
  readonly agent: LabAgentState;
  exited: string | undefined;
}

function startAgent(agent: LabAgentState, config: AgentConfig, script: string): RunningAgent {
  writeFileSync(agent.config, `${JSON.stringify(config, null, 2)}\n`);
  const fd = openSync(agent.log, 'a');
  const running: RunningAgent = { agent, exited: undefined };
  try {
    const child = spawn(which('ip') ?? 'ip', ['netns', 'exec', agent.netns, process.execPath, script, agent.config], {
      detached: true,
      stdio: ['ignore', fd, fd],
    });
    agent.pid = child.pid;
    child.on('error', (e) => (running.exited = `cannot start: ${errText(e)}`));
    child.on('exit', (code, signal) => (running.exited = `exited (${signal ?? `code ${code}`})`));
    child.unref();
  } finally {
    closeSync(fd);
  }
  return running;
}

async function waitReady(agents: readonly RunningAgent[]): Promise<void> {
  const deadline = Date.now() + AGENT_READY_TIMEOUT_MS;
  const pending = new Set(agents);
  while (pending.size > 0) {
    for (const r of [...pending]) {
      if (r.exited !== undefined) {
        throw new Error(`the lab agent in ${r.agent.netns} ${r.exited}: ${logTail(r.agent.log)}`);
      }
      if (!existsSync(r.agent.socket)) continue;
      try {
        const ans = (await request(r.agent.socket, { op: 'ping' }, 2_000)) as PingAnswer;
        if (ans.ok === true) pending.delete(r);
      } catch {
        // not listening yet
      }
    }
    if (pending.size === 0) break;
    if (Date.now() > deadline) {
      const first = [...pending][0]!;
      throw new Error(`the lab agent in ${first.agent.netns} is not ready after ${AGENT_READY_TIMEOUT_MS} ms: ${logTail(first.agent.log)}`);
    }
    await sleep(25);
  }
}

function logTail(file: string): string {
  try {
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    return lines.slice(-5).join(' | ') || '(empty log)';
  } catch {
    return '(no log)';
  }
}

function writeState(dir: string, state: LabState): void {
  const tmp = join(dir, 'state.json.tmp');
  writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`);
  renameSync(tmp, join(dir, 'state.json'));
}

// ---------------------------------------------------------------------------------------------
// teardown

/** Agent pids recorded in the state file that still run the lab agent with this state dir. */
function agentPidsFromState(dir: string): number[] {
  const file = join(dir, 'state.json');
  if (!existsSync(file)) return [];
  try {
    const state = JSON.parse(readFileSync(file, 'utf8')) as Partial<LabState>;
    return (state.agents ?? [])
      .map((a) => a.pid)
      .filter((pid): pid is number => typeof pid === 'number' && isLabAgent(pid, dir));
  } catch {
    return [];
  }
}

function isLabAgent(pid: number, dir: string): boolean {
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmd.includes('lab-agent') && cmd.includes(dir);
  } catch {
    return false;
  }
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The state follows the command name in parentheses; a zombie has exited.
    const st = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return st !== 'Z' && st !== 'X';
  } catch {
    return false;
  }
}

/** SIGTERM, then SIGKILL after AGENT_STOP_TIMEOUT_MS; returns how many were running. */
async function stopProcesses(pids: readonly number[]): Promise<number> {
  const running = pids.filter(alive);
  for (const pid of running) signal(pid, 'SIGTERM');
  const deadline = Date.now() + AGENT_STOP_TIMEOUT_MS;
  while (running.some(alive) && Date.now() < deadline) await sleep(25);
  const stubborn = running.filter(alive);
  for (const pid of stubborn) signal(pid, 'SIGKILL');
  const hard = Date.now() + AGENT_STOP_TIMEOUT_MS;
  while (stubborn.some(alive) && Date.now() < hard) await sleep(25);
  return running.length;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone already
  }
}

// ---------------------------------------------------------------------------------------------
// helpers

function loadOrThrow(paths: string[]): ClusterState {
  if (paths.length === 0) throw new NetpoldError('NETPOLD_E_USAGE', 'no manifests given: pass manifests or state');
  const res = loadManifestPaths(paths);
  if (res.errors.length > 0) {
    throw new NetpoldError(
      'NETPOLD_E_LAB',
      `${res.errors.length} error(s) in the manifests; nothing was built:\n${res.errors.map((e) => `  ${formatManifestError(e)}`).join('\n')}`,
    );
  }
  return res.state;
}

/** One request on an agent's control socket; resolves with its JSON answer. */
export function request(socket: string, body: unknown, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    if (socket === '') return reject(new NetpoldError('NETPOLD_E_LAB', 'no agent for this endpoint'));
    let buf = '';
    let settled = false;
    const c = net.connect(socket);
    const finish = (err: Error | undefined, value?: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      c.destroy();
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(() => finish(new Error(`no answer from ${socket} within ${timeoutMs} ms`)), timeoutMs);
    c.setEncoding('utf8');
    c.on('connect', () => c.write(`${JSON.stringify(body)}\n`));
    c.on('data', (d: string) => {
      buf += d;
      if (buf.length > MAX_LINE) return finish(new Error(`answer from ${socket} too long`));
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      try {
        finish(undefined, JSON.parse(buf.slice(0, nl)));
      } catch (e) {
        finish(new Error(`bad answer from ${socket}: ${errText(e)}`));
      }
    });
    c.on('error', (e) => finish(new Error(`${socket}: ${errText(e)}`)));
    c.on('close', () => finish(new Error(`${socket} closed without an answer`)));
  });
}

function pickPair(src: LabEndpoint, dst: LabEndpoint, family: 4 | 6 | undefined): [string, string] {
  for (const fam of family ? [family] : ([4, 6] as const)) {
    const a = src.ips.find((x) => isIpv4(x) === (fam === 4));
    const b = dst.ips.find((x) => isIpv4(x) === (fam === 4));
    if (a && b) return [a, b];
  }
  throw new NetpoldError(
    'NETPOLD_E_UNKNOWN_ENDPOINT',
    `${src.label} and ${dst.label} have no addresses of ${family ? `family IPv${family}` : 'a common family'} in the lab`,
  );
}

function checkProtocol(p: string): LabProtocol {
  const u = p.toUpperCase();
  if (u !== 'TCP' && u !== 'UDP') throw new NetpoldError('NETPOLD_E_USAGE', `the lab probes TCP or UDP, not ${p}`);
  return u;
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new NetpoldError('NETPOLD_E_USAGE', `port must be 1 to 65535, not ${port}`);
}

function checkTimeout(ms: number | undefined): number {
  const t = ms ?? DEFAULT_PROBE_TIMEOUT_MS;
  if (!Number.isFinite(t) || t <= 0 || t > MAX_PROBE_TIMEOUT_MS) {
    throw new NetpoldError('NETPOLD_E_USAGE', `timeout must be 1 to ${MAX_PROBE_TIMEOUT_MS} ms, not ${ms}`);
  }
  return t;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
