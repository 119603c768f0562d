// networking.k8s.io/v1 NetworkPolicy, validated as strictly as the API server with strict field
// validation: every field the API does not define is an error, at every level.
//
// An invalid policy is kept, fail-closed: no rules, `valid: false`, and the directions it
// declares (or both, when its policyTypes cannot be read) so the pods it selects stay isolated.
import type {
  IpBlock,
  LabelSelector,
  PolicyPeer,
  PolicyPort,
  PolicyRule,
  PolicySpec,
  PolicyType,
} from '../../model/types.js';
import { checkFields, eachRecord, type Hint, isInteger, readList, readRecord, readRequiredString, readString } from './fields.js';
import { type Cidr, parseCidr, strictlyInside } from './ip.js';
import type { Meta } from './metadata.js';
import { ianaSvcNameProblem } from './names.js';
import { readPortNumber, readProtocol } from './objects.js';
import { field, get, index, isAbsent, type Reporter, show } from './report.js';
import { readSelector } from './selectors.js';

const TOP_FIELDS = ['apiVersion', 'kind', 'metadata', 'spec'];
const SPEC_FIELDS = ['podSelector', 'policyTypes', 'ingress', 'egress'];
const INGRESS_RULE_FIELDS = ['from', 'ports'];
const EGRESS_RULE_FIELDS = ['to', 'ports'];
const PEER_FIELDS = ['podSelector', 'namespaceSelector', 'ipBlock'];
const IPBLOCK_FIELDS = ['cidr', 'except'];
const PORT_FIELDS = ['protocol', 'port', 'endPort'];
const POLICY_TYPES: readonly PolicyType[] = ['Ingress', 'Egress'];
const BOTH: readonly PolicyType[] = ['Ingress', 'Egress'];

const topHint: Hint = (key) =>
  key === 'status' ? 'status was removed from the NetworkPolicy API (Kubernetes 1.28); remove it' : undefined;

const specHint: Hint = (key) => {
  if (key === 'types') return 'did you mean policyTypes?';
  if (key === 'selector') return 'did you mean podSelector?';
  return undefined;
};

const ruleHint = (peerField: 'from' | 'to'): Hint => (key) => {
  if (key === 'to' && peerField === 'from') return 'ingress rules use from, not to';
  if (key === 'from' && peerField === 'to') return 'egress rules use to, not from';
  if (PEER_FIELDS.includes(key)) return `a peer goes inside a list under ${peerField}: (${peerField}: [{${key}: ...}])`;
  if (key === 'port' || key === 'protocol') return `ports are listed under ports: (ports: [{${key}: ...}])`;
  return undefined;
};

const peerHint: Hint = (key) => {
  if (key === 'matchLabels' || key === 'matchExpressions') return `did you mean podSelector: {${key}: ...} or namespaceSelector: {${key}: ...}?`;
  if (key === 'cidr' || key === 'except') return `did you mean ipBlock: {${key}: ...}?`;
  return undefined;
};

const portHint: Hint = (key) => (key === 'containerPort' || key === 'targetPort' ? 'did you mean port?' : undefined);

/** Reads a NetworkPolicy whose metadata was read into `meta` (its errors, if any, are in `r`). */
export function readNetworkPolicy(r: Reporter, obj: Record<string, unknown>, meta: Meta): PolicySpec {
  checkFields(r, obj, '', TOP_FIELDS, topHint);
  const spec = readSpec(r, get(obj, 'spec'));
  const namespace = meta.namespace ?? '';
  const name = meta.name ?? '';
  // Without errors podSelector and policyTypes are always defined; `?? BOTH` only narrows the type.
  const policyTypes = spec.policyTypes ?? BOTH;
  if (r.errorCount === 0) {
    noticeIgnoredRules(r, policyTypes, spec);
    return { namespace, name, podSelector: spec.podSelector, policyTypes, ingress: spec.ingress, egress: spec.egress, valid: true };
  }
  appendSentence(r, failClosedSentence(meta, spec.podSelector, policyTypes));
  return { namespace, name, podSelector: spec.podSelector, policyTypes, ingress: [], egress: [], valid: false };
}

interface ReadSpec {
  /** Undefined when missing or invalid. */
  readonly podSelector: LabelSelector | undefined;
  /** Undefined when invalid or unreadable. */
  readonly policyTypes: readonly PolicyType[] | undefined;
  readonly ingress: readonly PolicyRule[];
  readonly egress: readonly PolicyRule[];
}

function readSpec(r: Reporter, v: unknown): ReadSpec {
  if (isAbsent(v)) {
    r.error('NETPOLD_E_REQUIRED', 'spec', 'spec (with spec.podSelector) is required');
    return { podSelector: undefined, policyTypes: defaultPolicyTypes(false), ingress: [], egress: [] };
  }
  const spec = readRecord(r, v, 'spec');
  if (spec === undefined) return { podSelector: undefined, policyTypes: undefined, ingress: [], egress: [] };
  checkFields(r, spec, 'spec', SPEC_FIELDS, specHint);
  const podSelector = readPodSelector(r, get(spec, 'podSelector'));
  const ingress = readRules(r, get(spec, 'ingress'), 'spec.ingress', 'from');
  const egress = readRules(r, get(spec, 'egress'), 'spec.egress', 'to');
  const policyTypes = readPolicyTypes(r, get(spec, 'policyTypes'), declaresRules(get(spec, 'egress')));
  return { podSelector, policyTypes, ingress, egress };
}

/** `len(spec.egress) != 0`, counting invalid rules too (and an unreadable value, fail-closed). */
function declaresRules(v: unknown): boolean {
  return !isAbsent(v) && !(Array.isArray(v) && v.length === 0);
}

/**
 * "podSelector selects the pods to which this NetworkPolicy object applies ... An empty
 * podSelector selects all pods in this namespace." Required by the API schema.
 */
function readPodSelector(r: Reporter, v: unknown): LabelSelector | undefined {
  if (isAbsent(v)) {
    r.error('NETPOLD_E_REQUIRED', 'spec.podSelector', 'spec.podSelector is required; write podSelector: {} to select every pod in the namespace');
    return undefined;
  }
  return readSelector(r, v, 'spec.podSelector');
}

/**
 * Valid values are Ingress and Egress, at most two, no duplicates. Defaulting, exactly as the
 * API server does it (pkg/apis/networking/v1/defaults.go):
 *
 *   if len(obj.Spec.PolicyTypes) == 0 {
 *     // Any policy that does not specify policyTypes implies at least "Ingress".
 *     obj.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
 *     if len(obj.Spec.Egress) != 0 {
 *       obj.Spec.PolicyTypes = append(obj.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
 *     }
 *   }
 *
 * So `egress: []` does not add Egress. `egressSet` is true when spec.egress is a non-empty list
 * (or something unreadable that was meant to hold rules: isolating Egress is then fail-closed).
 */
function readPolicyTypes(r: Reporter, v: unknown, egressSet: boolean): readonly PolicyType[] | undefined {
  const path = 'spec.policyTypes';
  const list = readList(r, v, path);
  if (list === undefined) return undefined;
  if (list.length === 0) return defaultPolicyTypes(egressSet);
  const before = r.errorCount;
  if (list.length > 2) r.error('NETPOLD_E_INVALID_VALUE', path, `at most 2 policyTypes (Ingress, Egress), got ${list.length}`);
  const out: PolicyType[] = [];
  list.forEach((item, i) => {
    const t = readPolicyType(r, item, index(path, i));
    if (t === undefined) return;
    if (out.includes(t)) r.error('NETPOLD_E_INVALID_VALUE', index(path, i), `duplicate policyType ${t}`);
    else out.push(t);
  });
  return r.errorCount === before ? out : undefined;
}

function defaultPolicyTypes(egressSet: boolean): readonly PolicyType[] {
  return egressSet ? ['Ingress', 'Egress'] : ['Ingress'];
}

function readPolicyType(r: Reporter, v: unknown, path: string): PolicyType | undefined {
  const s = readString(r, v, path);
  if (s === undefined) return undefined;
  const found = POLICY_TYPES.find((t) => t === s);
  if (found !== undefined) return found;
  const caseMatch = POLICY_TYPES.find((t) => t.toLowerCase() === s.toLowerCase());
  const hint = caseMatch === undefined ? '' : ` (did you mean ${caseMatch}?)`;
  r.error('NETPOLD_E_INVALID_VALUE', path, `unsupported policyType ${show(s)}${hint}; supported values: Ingress, Egress`);
  return undefined;
}

/**
 * Ingress/egress rules. "If this field is empty or missing, this rule matches all sources"
 * (resp. destinations, ports): absent, null and [] all become empty lists.
 */
function readRules(r: Reporter, v: unknown, path: string, peerField: 'from' | 'to'): PolicyRule[] {
  const allowed = peerField === 'from' ? INGRESS_RULE_FIELDS : EGRESS_RULE_FIELDS;
  return eachRecord(r, v, path, (rule, rulePath) => {
    const before = r.errorCount;
    checkFields(r, rule, rulePath, allowed, ruleHint(peerField));
    const peers = eachRecord(r, get(rule, peerField), field(rulePath, peerField), (p, peerPath) => readPeer(r, p, peerPath));
    const ports = eachRecord(r, get(rule, 'ports'), field(rulePath, 'ports'), (p, portPath) => readPort(r, p, portPath));
    return r.errorCount === before ? { peers, ports } : undefined;
  });
}

/**
 * A NetworkPolicyPeer: "Exactly one of the following must be specified: podSelector and/or
 * namespaceSelector, or ipBlock" — ipBlock "may not be specified when podSelector or
 * namespaceSelector is".
 */
function readPeer(r: Reporter, peer: Record<string, unknown>, path: string): PolicyPeer | undefined {
  const before = r.errorCount;
  checkFields(r, peer, path, PEER_FIELDS, peerHint);
  const rawPod = get(peer, 'podSelector');
  const rawNs = get(peer, 'namespaceSelector');
  const rawIp = get(peer, 'ipBlock');
  const podSelector = isAbsent(rawPod) ? undefined : readSelector(r, rawPod, field(path, 'podSelector'));
  const namespaceSelector = isAbsent(rawNs) ? undefined : readSelector(r, rawNs, field(path, 'namespaceSelector'));
  const ipBlock = isAbsent(rawIp) ? undefined : readIpBlock(r, rawIp, field(path, 'ipBlock'));
  const hasSelector = !isAbsent(rawPod) || !isAbsent(rawNs);
  if (!hasSelector && isAbsent(rawIp)) {
    r.error('NETPOLD_E_INVALID_VALUE', path, 'a peer must set podSelector, namespaceSelector or ipBlock');
  } else if (hasSelector && !isAbsent(rawIp)) {
    r.error('NETPOLD_E_INVALID_VALUE', path, 'ipBlock may not be combined with podSelector or namespaceSelector; write them as separate peers');
  }
  return r.errorCount === before ? { podSelector, namespaceSelector, ipBlock } : undefined;
}

/**
 * "cidr is a string representing the IPBlock. Valid examples are "192.168.1.0/24" or
 * "2001:db8::/64"". "except is a slice of CIDRs that should not be included within an IPBlock
 * ... Except values will be rejected if they are outside the cidr range."
 */
function readIpBlock(r: Reporter, v: unknown, path: string): IpBlock | undefined {
  const block = readRecord(r, v, path);
  if (block === undefined) return undefined;
  const before = r.errorCount;
  checkFields(r, block, path, IPBLOCK_FIELDS);
  const cidrText = readRequiredString(r, get(block, 'cidr'), field(path, 'cidr'), 'ipBlock.cidr');
  const cidr = cidrText === undefined ? undefined : readCidr(r, cidrText, field(path, 'cidr'));
  const exceptPath = field(path, 'except');
  const exceptList = readList(r, get(block, 'except'), exceptPath) ?? [];
  const except: string[] = [];
  exceptList.forEach((item, i) => {
    const itemPath = index(exceptPath, i);
    const text = readString(r, item, itemPath);
    const ex = text === undefined ? undefined : readCidr(r, text, itemPath);
    if (ex === undefined || cidr === undefined) return;
    if (!strictlyInside(ex, cidr)) {
      r.error('NETPOLD_E_CIDR', itemPath, `except ${ex.text} is not strictly inside cidr ${cidr.text}: it must be contained in it and have a longer prefix`);
      return;
    }
    except.push(ex.text);
  });
  if (r.errorCount !== before || cidr === undefined) return undefined;
  return { cidr: cidr.text, except };
}

function readCidr(r: Reporter, text: string, path: string): Cidr | undefined {
  const c = parseCidr(text);
  if (!c.ok) {
    r.error('NETPOLD_E_CIDR', path, `invalid CIDR ${show(text)}: ${c.reason}`);
    return undefined;
  }
  return c;
}

/**
 * A NetworkPolicyPort. "port represents the port on the given protocol. This can either be a
 * numerical or named port on a pod. If this field is not provided, this matches all port names
 * and numbers." "endPort ... cannot be defined if the port field is not defined or if the port
 * field is defined as a named (string) port. The endPort must be equal or greater than port."
 */
function readPort(r: Reporter, p: Record<string, unknown>, path: string): PolicyPort | undefined {
  const before = r.errorCount;
  checkFields(r, p, path, PORT_FIELDS, portHint);
  const protocol = readProtocol(r, get(p, 'protocol'), field(path, 'protocol'));
  const port = readIntOrString(r, get(p, 'port'), field(path, 'port'));
  const endPort = readEndPort(r, get(p, 'endPort'), field(path, 'endPort'), port);
  if (r.errorCount !== before || protocol === undefined) return undefined;
  return { protocol, port, endPort };
}

function readIntOrString(r: Reporter, v: unknown, path: string): number | string | undefined {
  if (isAbsent(v)) return undefined;
  if (typeof v === 'number') return readPortNumber(r, v, path);
  if (typeof v !== 'string') {
    r.error('NETPOLD_E_FIELD_TYPE', path, `expected a port number or a port name, got ${show(v)}`);
    return undefined;
  }
  const s = readString(r, v, path);
  if (s === undefined) return undefined;
  if (/^[0-9]+$/.test(s)) {
    r.error('NETPOLD_E_PORT', path, `port ${show(s)} is a string of digits, which is not a valid port name; use a number: port: ${s.length > 6 ? '...' : s}`);
    return undefined;
  }
  const problem = ianaSvcNameProblem(s);
  if (problem !== undefined) {
    r.error('NETPOLD_E_PORT', path, `invalid port name ${show(s)}: ${problem}`);
    return undefined;
  }
  return s;
}

function readEndPort(r: Reporter, v: unknown, path: string, port: number | string | undefined): number | undefined {
  if (isAbsent(v)) return undefined;
  if (typeof v !== 'number') {
    r.error('NETPOLD_E_FIELD_TYPE', path, `expected a port number, got ${show(v)}`);
    return undefined;
  }
  if (!isInteger(v) || v < 1 || v > 65535) {
    r.error('NETPOLD_E_PORT', path, `invalid endPort ${show(v)}: must be an integer from 1 to 65535`);
    return undefined;
  }
  if (typeof port === 'string') {
    r.error('NETPOLD_E_PORT', path, 'endPort cannot be used with a named port');
    return undefined;
  }
  if (port === undefined) {
    r.error('NETPOLD_E_PORT', path, 'endPort requires a numeric port');
    return undefined;
  }
  if (v < port) {
    r.error('NETPOLD_E_PORT', path, `endPort ${v} must be equal to or greater than port ${port}`);
    return undefined;
  }
  return v;
}

/** Explicit policyTypes that leave out a direction with rules: valid, but those rules do nothing. */
function noticeIgnoredRules(r: Reporter, types: readonly PolicyType[], spec: ReadSpec): void {
  const check = (dir: PolicyType, rules: readonly PolicyRule[]): void => {
    if (rules.length > 0 && !types.includes(dir)) {
      const key = dir === 'Ingress' ? 'ingress' : 'egress';
      r.notice(`spec.${key} has ${rules.length} rule(s) but spec.policyTypes [${types.join(', ')}] does not include ${dir}; those rules have no effect`);
    }
  };
  check('Ingress', spec.ingress);
  check('Egress', spec.egress);
}

/** What netpold does with an invalid policy instead of enforcing it. */
function failClosedSentence(meta: Meta, podSelector: LabelSelector | undefined, types: readonly PolicyType[]): string {
  if (meta.namespace === undefined) return 'The policy is not enforced; its namespace is invalid, so it selects no pods.';
  if (podSelector === undefined) return 'The policy is not enforced as written; its podSelector is invalid, so it selects no pods.';
  return `The policy is not enforced as written; the pods it selects stay isolated for ${types.join(' and ')}.`;
}

/** Each error of an invalid policy ends with the fail-closed sentence. */
function appendSentence(r: Reporter, sentence: string): void {
  for (let i = 0; i < r.errors.length; i++) {
    const e = r.errors[i];
    if (e === undefined) continue;
    const sep = /[.?!]$/.test(e.message) ? ' ' : '. ';
    r.errors[i] = { ...e, message: `${e.message}${sep}${sentence}` };
  }
}
