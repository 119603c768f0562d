// The lab's topology, computed from a ClusterState before anything is built (pure: no I/O).
// Every name and address the lab will create is decided here, and every refusal (an id that is
// not [a-z0-9]{1,8}, an address outside the test ranges) happens here.
import { isIPv4 } from 'node:net';
import ipaddr from 'ipaddr.js';
import { NetpoldError } from '../errors.js';
import type { ClusterState, NodeInfo, PodInfo } from '../model/types.js';
import type { LabProtocol, ListenerSpec } from './protocol.js';

/** Pod and node addresses must be in these (RFC 2544 / RFC 5180 benchmarking ranges). */
export const LAB_RANGES = ['198.18.0.0/15', '2001:2::/48'] as const;
/** Addresses of the external namespace: any address here can be a probe's source. */
export const EXT_RANGES = ['198.19.0.0/16', '2001:2:0:1::/64'] as const;
/** The link-local gateway of every pod (and of the external namespace). */
export const GATEWAY_V4 = '169.254.1.1';
export const GATEWAY_V6 = 'fe80::1';
/** Most pods a lab builds (one network namespace and one process each). */
export const MAX_LAB_PODS = 200;
export const DEFAULT_LAB_PORTS: readonly number[] = [80];
export const LAB_ID_RE = /^[a-z0-9]{1,8}$/;

export interface PlannedPod {
  /** `ns/name`. */
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly ips: readonly string[];
  readonly hostNetwork: boolean;
  /** Index among the pods with their own namespace (sorted by ns/name); undefined for host-network pods. */
  readonly k: number | undefined;
  /** `np-ID-p<k>`, or the node namespace for host-network pods. */
  readonly netns: string;
  /** Node side of the veth pair, `npv<k>`; undefined for host-network pods. */
  readonly nodeIf: string | undefined;
  /** Responder sockets of this pod (in its own namespace, or in the node's for host-network pods). */
  readonly listeners: readonly ListenerSpec[];
}

export interface LabPlan {
  readonly id: string;
  readonly nodeName: string | undefined;
  readonly nodeAddresses: readonly string[];
  readonly nodeNamespace: string;
  readonly extNamespace: string;
  readonly ports: readonly number[];
  /** Pods with their own namespace first (by k), then host-network pods; each sorted by ns/name. */
  readonly pods: readonly PlannedPod[];
  /** Things worth telling the user (skipped pods, port collisions). */
  readonly notices: readonly string[];
}

export interface PlanOptions {
  readonly id: string;
  readonly nodeName?: string | undefined;
  readonly ports?: readonly number[] | undefined;
}

const labRanges = LAB_RANGES.map((c) => ipaddr.parseCIDR(c));
const extRanges = EXT_RANGES.map((c) => ipaddr.parseCIDR(c));

function inRanges(ip: string, ranges: readonly [ipaddr.IPv4 | ipaddr.IPv6, number][]): boolean {
  if (!ipaddr.isValid(ip)) return false;
  const a = ipaddr.parse(ip);
  return ranges.some((r) => a.kind() === r[0].kind() && a.match(r));
}

/** True for addresses in 198.18.0.0/15 or 2001:2::/48. */
export function inLabRanges(ip: string): boolean {
  return inRanges(ip, labRanges);
}

/** True for addresses of the external namespace (198.19.0.0/16, 2001:2:0:1::/64). */
export function inExtRanges(ip: string): boolean {
  return inRanges(ip, extRanges);
}

export function isIpv4(ip: string): boolean {
  return isIPv4(ip);
}

export function canonicalIp(ip: string): string {
  return ipaddr.parse(ip).toString();
}

export function checkLabId(id: string): void {
  if (!LAB_ID_RE.test(id)) throw new NetpoldError('NETPOLD_E_LAB', `invalid lab id ${JSON.stringify(id)}: use 1 to 8 of [a-z0-9]`);
}

export function netnsPrefix(id: string): string {
  return `np-${id}-`;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function podOrder(a: PodInfo, b: PodInfo): number {
  return a.namespace === b.namespace ? cmp(a.name, b.name) : cmp(a.namespace, b.namespace);
}

/** Declared TCP/UDP ports of a pod plus the extra ports (both protocols), deduplicated. */
function podPorts(pod: PodInfo, extra: readonly number[]): { port: number; protocol: LabProtocol }[] {
  const out: { port: number; protocol: LabProtocol }[] = [];
  const seen = new Set<string>();
  const add = (port: number, protocol: LabProtocol): void => {
    const key = `${protocol}/${port}`;
    if (seen.has(key)) return;
    seen.add(key);
    out.push({ port, protocol });
  };
  for (const p of pod.namedPorts) if (p.protocol === 'TCP' || p.protocol === 'UDP') add(p.port, p.protocol);
  for (const port of extra) {
    add(port, 'TCP');
    add(port, 'UDP');
  }
  return out;
}

export function planLab(state: ClusterState, opts: PlanOptions): LabPlan {
  const id = opts.id;
  checkLabId(id);
  const ports = [...new Set(opts.ports ?? DEFAULT_LAB_PORTS)];
  for (const p of ports) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw new NetpoldError('NETPOLD_E_LAB', `invalid port ${p}: ports are 1 to 65535`);
  }

  // Only the test ranges: the lab must never route an address someone else may own.
  const outside: string[] = [];
  for (const pod of state.pods) {
    for (const ip of pod.ips) if (!inLabRanges(ip)) outside.push(`pod ${pod.namespace}/${pod.name} has ${ip}`);
  }
  for (const n of state.nodes) {
    for (const ip of n.addresses) if (!inLabRanges(ip)) outside.push(`node ${n.name} has ${ip}`);
  }
  if (outside.length > 0) {
    throw new NetpoldError(
      'NETPOLD_E_LAB',
      `the lab accepts only addresses in ${LAB_RANGES.join(' and ')}: ${outside.slice(0, 10).join('; ')}${outside.length > 10 ? `; and ${outside.length - 10} more` : ''}`,
    );
  }

  let node: NodeInfo | undefined;
  if (opts.nodeName !== undefined) {
    node = state.nodes.find((n) => n.name === opts.nodeName);
    if (!node) throw new NetpoldError('NETPOLD_E_LAB', `--node-name ${opts.nodeName}: no Node object of that name in the manifests`);
  } else {
    node = state.nodes[0];
  }
  const nodeName = node?.name;
  const nodeAddresses = node ? [...node.addresses] : [];
  const nodeNamespace = `${netnsPrefix(id)}node`;
  const extNamespace = `${netnsPrefix(id)}ext`;
  const notices: string[] = [];

  const own = state.pods.filter((p) => !p.hostNetwork && p.ips.length > 0).sort(podOrder);
  if (own.length > MAX_LAB_PODS) {
    throw new NetpoldError('NETPOLD_E_LAB', `${own.length} pods with addresses: the lab builds at most ${MAX_LAB_PODS}`);
  }
  const noIp = state.pods.filter((p) => !p.hostNetwork && p.ips.length === 0).length;
  if (noIp > 0) notices.push(`${noIp} pod(s) without an address have no namespace in the lab`);

  const pods: PlannedPod[] = own.map((p, k) => ({
    key: `${p.namespace}/${p.name}`,
    namespace: p.namespace,
    name: p.name,
    ips: [...p.ips],
    hostNetwork: false,
    k,
    netns: `${netnsPrefix(id)}p${k}`,
    nodeIf: `npv${k}`,
    listeners: p.ips.flatMap((host) =>
      podPorts(p, ports).map(({ port, protocol }) => ({ host, port, protocol, reply: `${p.namespace}/${p.name}` })),
    ),
  }));

  // Host-network pods of this node share the node's addresses: the first one (in order) to
  // declare a port gets it.
  const taken = new Set<string>();
  for (const p of state.pods.filter((q) => q.hostNetwork).sort(podOrder)) {
    const key = `${p.namespace}/${p.name}`;
    if (p.node !== undefined && nodeName !== undefined && p.node !== nodeName) {
      notices.push(`host-network pod ${key} is on node ${p.node}, not ${nodeName}: not in the lab`);
      continue;
    }
    if (nodeAddresses.length === 0) notices.push(`host-network pod ${key}: the node has no address, so it has no responder`);
    const listeners: ListenerSpec[] = [];
    for (const { port, protocol } of podPorts(p, ports)) {
      const slot = `${protocol}/${port}`;
      if (taken.has(slot)) {
        notices.push(`host-network pod ${key}: ${slot} is already served by another host-network pod`);
        continue;
      }
      taken.add(slot);
      for (const host of nodeAddresses) listeners.push({ host, port, protocol, reply: key });
    }
    pods.push({
      key,
      namespace: p.namespace,
      name: p.name,
      ips: nodeAddresses,
      hostNetwork: true,
      k: undefined,
      netns: nodeNamespace,
      nodeIf: undefined,
      listeners,
    });
  }

  return { id, nodeName, nodeAddresses, nodeNamespace, extNamespace, ports, pods, notices };
}
