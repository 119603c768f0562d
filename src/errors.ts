// One catalogue of stable error codes. Every code here is documented in the README's error
// table (test/errors.test.ts fails otherwise). Codes never change meaning once released.

export const ErrorCodes = {
  NETPOLD_E_USAGE: 'Command-line usage error: a missing or malformed flag. Run the command with --help.',
  NETPOLD_E_IO: 'A manifest path could not be read. Check that it exists and is readable.',
  NETPOLD_E_PARSE: 'A manifest file is not valid YAML or JSON. Fix the syntax at the reported line.',
  NETPOLD_E_OBJECT: 'A document is not a Kubernetes object (missing apiVersion/kind, or not a mapping). Give every document apiVersion, kind and metadata.',
  NETPOLD_E_UNKNOWN_FIELD: 'A field the API does not define. Remove it or fix its spelling; netpold never ignores fields.',
  NETPOLD_E_FIELD_TYPE: 'A field has the wrong type (for example a string where a list is expected). Write it with the type the API reference gives.',
  NETPOLD_E_REQUIRED: 'A required field is missing. Add it (the message names its path).',
  NETPOLD_E_INVALID_VALUE: 'A field has a value the API rejects (name, label, protocol, policyType, the netpold.io/mode annotation...). Use one of the values the message lists.',
  NETPOLD_E_SELECTOR: 'An invalid label selector: bad key or value, unknown operator, or values that do not fit the operator. Fix the selector at the reported path.',
  NETPOLD_E_CIDR: 'An invalid ipBlock: malformed CIDR, or an except entry that is not strictly inside its cidr. Write the network address with its prefix length and keep excepts inside it.',
  NETPOLD_E_PORT: 'An invalid port: out of range, bad named port, endPort without a numeric port or below it. Use 1-65535, an IANA service name, and endPort >= port.',
  NETPOLD_E_DUPLICATE: 'The same object (kind, namespace, name) appears twice; the first one is kept. Remove or rename the other.',
  NETPOLD_E_UNKNOWN_NAMESPACE: 'An object refers to a namespace no manifest declares (built-in namespaces are implied). Add a Namespace object or fix metadata.namespace.',
  NETPOLD_E_IP_CONFLICT: 'Two pods or nodes claim the same IP address; the first one is kept. Give each its own address.',
  NETPOLD_E_UNKNOWN_ENDPOINT: 'A --from/--to argument names no known pod and is not an IP address. Write NAMESPACE/POD of a pod with an address, or an IP address.',
  NETPOLD_E_NATIVE: 'The native addon (native/build/Release/netpold_native.node) is missing or cannot be loaded. Run npm ci (needs python3, make, g++).',
  NETPOLD_E_LAB: 'The network-namespace lab failed: missing root, ip or nft, addresses outside the test ranges, an existing lab, or a step that failed. Run as root with iproute2 and nftables, or `netpold lab down --id ID` first.',
  NETPOLD_E_INTERCEPTION: 'Installing or updating the nftables table or the policy routing failed. Run as root (or with NET_ADMIN) on a kernel with nftables tproxy and socket expressions, with iproute2 installed.',
  NETPOLD_E_FLOW_TABLE_FULL: 'A new flow was refused because the flow table is full and no flow was idle; raise --flow-table-size.',
  NETPOLD_E_KUBECONFIG: 'The Kubernetes client configuration could not be loaded: an unreadable or invalid --kubeconfig, or --in-cluster outside a pod (service-account files or KUBERNETES_SERVICE_HOST/PORT missing). Fix the file, or use --kubeconfig outside a cluster.',
  NETPOLD_E_KUBE_API: 'A list or watch request to the Kubernetes API server failed (network, HTTP error, 410 Gone, stalled watch); the agent relists with backoff and keeps enforcing the last state. If it persists, check the API server, the network path and the RBAC of the netpold service account.',
  NETPOLD_E_CONFIG: 'The agent configuration is invalid: every problem of the flags, NETPOLD_* environment variables and --config file is listed, each naming where it came from. Fix them; `netpold agent --help` lists every setting with its default.',
  NETPOLD_E_LISTEN: 'The agent could not open its metrics/health listener (--metrics-address) or its explain socket (--agent-socket): the address is in use (another agent?), not local, or the path is not writable. Choose another address or path, or stop the other agent.',
  NETPOLD_E_AGENT_UNREACHABLE: 'No agent answered on the explain socket: run `netpold explain` as root on a node where `netpold agent` runs (inside its pod: kubectl exec), pass --agent-socket PATH, or explain from files with --manifests.',
  NETPOLD_E_FLOW_LOG: 'The flow log (--flow-log PATH) could not be opened for appending. Give a writable path, - for standard output, or off.',
  NETPOLD_E_TAINT: 'The agent could not remove its readiness taint (--ready-taint) from its Node: RBAC without get and patch on nodes or a request the server refuses (not retried), or the API server failed or the Node does not exist yet (retried with backoff). Enforcement is unaffected; apply deploy/optional/ready-taint.yaml or remove the taint by hand.',
  NETPOLD_E_UNSUPPORTED_NODE: 'The node runs something that defeats interception: kube-proxy in IPVS mode (interface kube-ipvs0) translates Service addresses after the agent redirects traffic, so Service traffic is not enforced; or pods sit on a Linux bridge (cni0, cbr0) while --pod-bridges is off, so their traffic on the bridge is not enforced. Run kube-proxy in iptables or nftables mode; leave --pod-bridges at its default or name the bridge.',
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

/** An error with a stable code. `message` says what is wrong and, where possible, what to do. */
export class NetpoldError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'NetpoldError';
    this.code = code;
  }
}

/** A problem found in manifest input, located as precisely as possible. */
export interface ManifestError {
  readonly code: ErrorCode;
  /** File the object came from ('-' when not from a file). */
  readonly file: string;
  /** `Kind namespace/name`, or `Kind name` for cluster-scoped kinds; undefined if not known. */
  readonly object: string | undefined;
  /** Field path such as `spec.ingress[0].from[1].ipBlock.except[0]`; undefined for whole-object errors. */
  readonly path: string | undefined;
  readonly message: string;
}

export function formatManifestError(e: ManifestError): string {
  const where = [e.file, e.object, e.path].filter((s) => s !== undefined && s !== '').join(': ');
  return `${where}: ${e.message} [${e.code}]`;
}
