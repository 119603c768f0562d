// `NS/POD|IP` arguments resolved against a cluster state, and a pair of addresses of one family
// picked for a flow. Used by the CLI (check, explain) and by the agent's explain service.
import ipaddr from 'ipaddr.js';
import { NetpoldError } from '../errors.js';
import type { ClusterState, PodInfo } from '../model/types.js';

export function familyOf(ip: string): 4 | 6 {
  return ipaddr.parse(ip).kind() === 'ipv4' ? 4 : 6;
}

export interface Endpoint {
  readonly label: string;
  readonly pod: PodInfo | undefined;
  /** Candidate addresses (a pod's, or the IP given). */
  readonly ips: readonly string[];
}

/** Resolves `NS/POD` (a pod of the manifests) or an IP address. */
export function resolveEndpoint(state: ClusterState, text: string, flag: string): Endpoint {
  if (ipaddr.isValid(text) && !text.includes('/')) {
    const ip = ipaddr.parse(text).toString();
    const pod = state.pods.find((p) => !p.hostNetwork && p.ips.includes(ip));
    return { label: pod ? `${pod.namespace}/${pod.name}` : ip, pod, ips: [ip] };
  }
  const slash = text.indexOf('/');
  if (slash <= 0 || slash === text.length - 1) {
    throw new NetpoldError('NETPOLD_E_UNKNOWN_ENDPOINT', `${flag} ${text}: expected NAMESPACE/POD or an IP address`);
  }
  const ns = text.slice(0, slash);
  const name = text.slice(slash + 1);
  const pod = state.pods.find((p) => p.namespace === ns && p.name === name);
  if (!pod) throw new NetpoldError('NETPOLD_E_UNKNOWN_ENDPOINT', `${flag} ${text}: no pod ${name} in namespace ${ns} in the manifests`);
  if (pod.ips.length === 0) throw new NetpoldError('NETPOLD_E_UNKNOWN_ENDPOINT', `${flag} ${text}: the pod has no IP address (status.podIP)`);
  return { label: text, pod, ips: pod.ips };
}

/** Picks one address per endpoint of a common family (the requested one, else IPv4 first). */
export function pickAddresses(from: Endpoint, to: Endpoint, family: 4 | 6 | undefined): [string, string] {
  for (const fam of family ? [family] : ([4, 6] as const)) {
    const a = from.ips.find((ip) => familyOf(ip) === fam);
    const b = to.ips.find((ip) => familyOf(ip) === fam);
    if (a && b) return [a, b];
  }
  throw new NetpoldError(
    'NETPOLD_E_UNKNOWN_ENDPOINT',
    `${from.label} and ${to.label} have no addresses of ${family ? `family IPv${family}` : 'a common family'}`,
  );
}
