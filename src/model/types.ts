// Small domain types shared by sources, the policy core and the CLI.
// Wire formats (YAML, Kubernetes objects) are converted into these at the edge
// (src/source/*); nothing in src/policy ever sees a raw Kubernetes object.

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export const PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP', 'SCTP'];

export type Labels = Readonly<Record<string, string>>;

export interface NamespaceInfo {
  readonly name: string;
  /** Includes the automatic `kubernetes.io/metadata.name` label. */
  readonly labels: Labels;
  /**
   * True when the Namespace is annotated `netpold.io/mode: audit` (MODE_ANNOTATION): the agent
   * decides and logs the flows its pods' policies would deny, but lets them through. Absent
   * otherwise (enforce), also when the annotation's value is invalid (reported, fails closed).
   */
  readonly audit?: true;
}

/** The Namespace annotation that opts a namespace into audit mode (`audit` or `enforce`). */
export const MODE_ANNOTATION = 'netpold.io/mode';

export interface NamedPort {
  readonly name: string;
  readonly port: number;
  readonly protocol: Protocol;
}

export interface PodInfo {
  readonly namespace: string;
  readonly name: string;
  /** At most one address per family, canonical text form (ipaddr.js `toString()`). */
  readonly ips: readonly string[];
  readonly labels: Labels;
  /** Named container ports (containers, and sidecar init containers). */
  readonly namedPorts: readonly NamedPort[];
  /** `spec.nodeName`, or undefined when not scheduled / not given. */
  readonly node: string | undefined;
  readonly hostNetwork: boolean;
}

export interface NodeInfo {
  readonly name: string;
  /** InternalIP / ExternalIP addresses, canonical text form. */
  readonly addresses: readonly string[];
}

export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

export interface SelectorRequirement {
  readonly key: string;
  readonly operator: SelectorOperator;
  /** Non-empty for In/NotIn, empty for Exists/DoesNotExist. */
  readonly values: readonly string[];
}

/** A validated metav1.LabelSelector. An empty selector (no requirements) selects everything. */
export interface LabelSelector {
  readonly matchLabels: Labels;
  readonly matchExpressions: readonly SelectorRequirement[];
}

export interface IpBlock {
  /** Canonical network form, host bits cleared, e.g. `198.18.0.0/16` or `2001:2::/48`. */
  readonly cidr: string;
  readonly except: readonly string[];
}

/**
 * One NetworkPolicyPeer. Exactly one of the shapes below (validated):
 * - ipBlock alone;
 * - podSelector and/or namespaceSelector (absent selector = undefined).
 */
export interface PolicyPeer {
  readonly podSelector: LabelSelector | undefined;
  readonly namespaceSelector: LabelSelector | undefined;
  readonly ipBlock: IpBlock | undefined;
}

export interface PolicyPort {
  readonly protocol: Protocol;
  /** undefined = all ports of that protocol; number = port; string = named port. */
  readonly port: number | string | undefined;
  /** Only with a numeric port; inclusive upper bound. */
  readonly endPort: number | undefined;
}

export interface PolicyRule {
  /**
   * `from` (ingress) / `to` (egress). Empty = matches all peers
   * ("If this field is empty or missing, this rule matches all sources/destinations").
   */
  readonly peers: readonly PolicyPeer[];
  /** Empty = all ports ("If this field is empty or missing, this rule matches all ports"). */
  readonly ports: readonly PolicyPort[];
}

export type PolicyType = 'Ingress' | 'Egress';

export interface PolicySpec {
  readonly namespace: string;
  readonly name: string;
  /**
   * The policy's podSelector; undefined only for an invalid policy whose podSelector itself
   * could not be validated (it then selects nothing).
   */
  readonly podSelector: LabelSelector | undefined;
  /** After defaulting: Ingress always unless explicit; Egress when egress rules are present. */
  readonly policyTypes: readonly PolicyType[];
  readonly ingress: readonly PolicyRule[];
  readonly egress: readonly PolicyRule[];
  /**
   * False when the object failed validation. Such a policy is compiled fail-closed: it keeps
   * isolating the pods it selects in the directions in `policyTypes`, with no rules.
   */
  readonly valid: boolean;
}

/** Everything the policy core needs to know about the cluster. */
export interface ClusterState {
  readonly namespaces: readonly NamespaceInfo[];
  readonly pods: readonly PodInfo[];
  readonly nodes: readonly NodeInfo[];
  readonly policies: readonly PolicySpec[];
}

export const NS_NAME_LABEL = 'kubernetes.io/metadata.name';
