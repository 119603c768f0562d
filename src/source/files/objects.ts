// Namespace, Pod and Node (core/v1).
//
// Deliberate decision: for these kinds only the top-level keys and the fields netpold reads are
// validated (type and value). Everything else inside spec and status (images, volumes,
// conditions, resources...) is ignored: its meaning does not affect enforcement, and checking
// the whole core/v1 schema here would only make netpold reject manifests the cluster accepts.
import type { NamedPort, NamespaceInfo, NodeInfo, PodInfo, Protocol } from '../../model/types.js';
import { MODE_ANNOTATION, NS_NAME_LABEL, PROTOCOLS } from '../../model/types.js';
import {
  checkFields,
  eachRecord,
  isInteger,
  readOptionalBool,
  readOptionalString,
  readRecord,
  readString,
} from './fields.js';
import { type Family, parseIp } from './ip.js';
import type { Meta } from './metadata.js';
import { dns1123SubdomainProblem, ianaSvcNameProblem } from './names.js';
import { field, get, isAbsent, isRecord, mapKey, type Reporter, show } from './report.js';

const TOP_LEVEL_FIELDS = ['apiVersion', 'kind', 'metadata', 'spec', 'status'];

export function checkTopLevel(r: Reporter, obj: Record<string, unknown>): void {
  checkFields(r, obj, '', TOP_LEVEL_FIELDS);
}

/** Optional mapping: absent/null -> empty. */
function optionalRecord(r: Reporter, v: unknown, path: string): Record<string, unknown> | undefined {
  return isAbsent(v) ? {} : readRecord(r, v, path);
}

// ---------------------------------------------------------------------------------------------
// Namespace

/** Returns the namespace, or undefined if the object has errors (they are in `r`). */
export function readNamespace(r: Reporter, obj: Record<string, unknown>, meta: Meta): NamespaceInfo | undefined {
  checkTopLevel(r, obj);
  optionalRecord(r, get(obj, 'spec'), 'spec');
  optionalRecord(r, get(obj, 'status'), 'status');
  if (meta.name === undefined || !meta.nameValid || meta.labels === undefined) return undefined;
  // "The control plane sets an immutable label kubernetes.io/metadata.name on all namespaces.
  // The value of the label is the namespace name."
  const declared = meta.labels[NS_NAME_LABEL];
  if (declared !== undefined && declared !== meta.name) {
    r.error(
      'NETPOLD_E_INVALID_VALUE',
      mapKey('metadata.labels', NS_NAME_LABEL),
      `label ${NS_NAME_LABEL} must equal the namespace name ${show(meta.name)}, got ${show(declared)} (the API server sets it to the name)`,
    );
  }
  if (r.errorCount > 0) return undefined;
  const ns: NamespaceInfo = { name: meta.name, labels: withLabel(meta.labels, NS_NAME_LABEL, meta.name) };
  // Read after the checks above: an invalid mode annotation is reported, but the namespace is
  // kept, enforced (failing closed), rather than dropped with its pods and policies.
  return readModeAnnotation(r, get(obj, 'metadata')) ? { ...ns, audit: true } : ns;
}

/**
 * `metadata.annotations["netpold.io/mode"]`: `audit` (true) or `enforce` (false); absent is
 * enforce. Other annotations are not read (they do not affect enforcement).
 */
function readModeAnnotation(r: Reporter, metadata: unknown): boolean {
  if (!isRecord(metadata)) return false;
  const annotations = get(metadata, 'annotations');
  if (!isRecord(annotations)) return false;
  const v = get(annotations, MODE_ANNOTATION);
  if (isAbsent(v) || v === 'enforce') return false;
  if (v === 'audit') return true;
  r.error(
    'NETPOLD_E_INVALID_VALUE',
    mapKey('metadata.annotations', MODE_ANNOTATION),
    `annotation ${MODE_ANNOTATION} must be "audit" or "enforce", not ${show(v)}; the namespace is enforced`,
  );
  return false;
}

function withLabel(labels: Readonly<Record<string, string>>, key: string, value: string): Record<string, string> {
  const out = Object.create(null) as Record<string, string>;
  Object.assign(out, labels);
  out[key] = value;
  return out;
}

/** A built-in namespace the API server always has, with only its name label. */
export function impliedNamespace(name: string): NamespaceInfo {
  return { name, labels: withLabel({}, NS_NAME_LABEL, name) };
}

// ---------------------------------------------------------------------------------------------
// Pod

export function readPod(r: Reporter, obj: Record<string, unknown>, meta: Meta): PodInfo | undefined {
  checkTopLevel(r, obj);
  const spec = optionalRecord(r, get(obj, 'spec'), 'spec') ?? {};
  const status = optionalRecord(r, get(obj, 'status'), 'status') ?? {};
  const node = readNodeName(r, get(spec, 'nodeName'));
  const hostNetwork = readOptionalBool(r, get(spec, 'hostNetwork'), 'spec.hostNetwork') ?? false;
  const namedPorts = readPodPorts(r, spec);
  const ips = readPodIps(r, status);
  // The reporter holds this object's errors only: any error (metadata included) drops the pod.
  if (r.errorCount > 0 || meta.name === undefined || meta.namespace === undefined || meta.labels === undefined) {
    return undefined;
  }
  return { namespace: meta.namespace, name: meta.name, ips, labels: meta.labels, namedPorts, node, hostNetwork };
}

function readNodeName(r: Reporter, v: unknown): string | undefined {
  const path = 'spec.nodeName';
  const name = readOptionalString(r, v, path);
  if (name === undefined) return undefined;
  const problem = dns1123SubdomainProblem(name);
  if (problem !== undefined) {
    r.error('NETPOLD_E_INVALID_VALUE', path, `invalid node name ${show(name)}: ${problem}`);
    return undefined;
  }
  return name;
}

/**
 * Named ports of the containers and of sidecar init containers (`restartPolicy: Always`).
 * Ports of regular init containers do not count: they run to completion before the pod's
 * containers start, so nothing can connect to them once the pod serves traffic. Their ports
 * are still validated, as the API server does. "Each named port in a pod must have a unique name."
 */
function readPodPorts(r: Reporter, spec: Record<string, unknown>): NamedPort[] {
  const counted: { port: NamedPort; path: string }[] = [];
  eachRecord(r, get(spec, 'containers'), 'spec.containers', (c, path) => {
    counted.push(...readContainerPorts(r, c, path));
    return undefined;
  });
  eachRecord(r, get(spec, 'initContainers'), 'spec.initContainers', (c, path) => {
    const restartPolicy = readOptionalString(r, get(c, 'restartPolicy'), field(path, 'restartPolicy'));
    const ports = readContainerPorts(r, c, path);
    if (restartPolicy === 'Always') counted.push(...ports);
    return undefined;
  });
  const seen = new Map<string, string>();
  for (const { port, path } of counted) {
    const first = seen.get(port.name);
    if (first !== undefined) {
      r.error('NETPOLD_E_PORT', path, `port name ${show(port.name)} is already used at ${first}; port names must be unique within a pod`);
    } else {
      seen.set(port.name, path);
    }
  }
  return counted.map((c) => c.port);
}

function readContainerPorts(r: Reporter, container: Record<string, unknown>, path: string): { port: NamedPort; path: string }[] {
  return eachRecord(r, get(container, 'ports'), field(path, 'ports'), (p, portPath) => {
    const port = readContainerPort(r, p, portPath);
    return port === undefined ? undefined : { port, path: field(portPath, 'name') };
  });
}

/** Returns the port if it is named and valid; unnamed ports are validated and dropped. */
function readContainerPort(r: Reporter, p: Record<string, unknown>, path: string): NamedPort | undefined {
  const before = r.errorCount;
  const port = readContainerPortNumber(r, get(p, 'containerPort'), field(path, 'containerPort'));
  const protocol = readProtocol(r, get(p, 'protocol'), field(path, 'protocol'));
  const name = readOptionalString(r, get(p, 'name'), field(path, 'name'));
  if (name !== undefined) {
    const problem = ianaSvcNameProblem(name);
    if (problem !== undefined) r.error('NETPOLD_E_PORT', field(path, 'name'), `invalid port name ${show(name)}: ${problem}`);
  }
  if (r.errorCount !== before || name === undefined || port === undefined || protocol === undefined) return undefined;
  return { name, port, protocol };
}

function readContainerPortNumber(r: Reporter, v: unknown, path: string): number | undefined {
  if (isAbsent(v)) {
    r.error('NETPOLD_E_REQUIRED', path, 'containerPort is required');
    return undefined;
  }
  return readPortNumber(r, v, path);
}

/** A port number 1..65535; non-numbers are type errors, other numbers port errors. */
export function readPortNumber(r: Reporter, v: unknown, path: string): number | undefined {
  if (typeof v !== 'number') {
    r.error('NETPOLD_E_FIELD_TYPE', path, `expected a port number, got ${show(v)}`);
    return undefined;
  }
  if (!isInteger(v) || v < 1 || v > 65535) {
    r.error('NETPOLD_E_PORT', path, `invalid port ${show(v)}: must be an integer from 1 to 65535`);
    return undefined;
  }
  return v;
}

/** "The protocol (TCP, UDP, or SCTP) ... If not specified, this field defaults to TCP." */
export function readProtocol(r: Reporter, v: unknown, path: string): Protocol | undefined {
  if (isAbsent(v)) return 'TCP';
  const s = readString(r, v, path);
  if (s === undefined) return undefined;
  const found = PROTOCOLS.find((p) => p === s);
  if (found !== undefined) return found;
  const caseMatch = PROTOCOLS.find((p) => p === s.toUpperCase());
  const hint = caseMatch === undefined ? '' : ` (did you mean ${caseMatch}?)`;
  r.error('NETPOLD_E_INVALID_VALUE', path, `unsupported protocol ${show(s)}${hint}; supported values: ${PROTOCOLS.join(', ')}`);
  return undefined;
}

/**
 * status.podIP and status.podIPs: "If this field is specified, the 0th entry must match the
 * podIP field. Pods may be allocated at most 1 value for each of IPv4 and IPv6."
 */
function readPodIps(r: Reporter, status: Record<string, unknown>): string[] {
  const podIP = readIpField(r, get(status, 'podIP'), 'status.podIP');
  const list = eachRecord(r, get(status, 'podIPs'), 'status.podIPs', (item, path) => {
    const ip = readIpField(r, get(item, 'ip'), field(path, 'ip'));
    return ip === undefined ? undefined : { ...ip, path: field(path, 'ip') };
  });
  const first = list[0];
  if (podIP !== undefined && first !== undefined && first.text !== podIP.text) {
    r.error('NETPOLD_E_INVALID_VALUE', 'status.podIPs[0].ip', `must equal status.podIP (${podIP.text}), got ${first.text}`);
  }
  if (list.length === 0) return podIP === undefined ? [] : [podIP.text];
  const families = new Map<Family, string>();
  for (const ip of list) {
    const other = families.get(ip.family);
    if (other !== undefined) {
      r.error('NETPOLD_E_INVALID_VALUE', ip.path, `a pod has at most one IPv${ip.family} address; ${ip.text} repeats the family of ${other}`);
    } else {
      families.set(ip.family, ip.text);
    }
  }
  return list.map((ip) => ip.text);
}

function readIpField(r: Reporter, v: unknown, path: string): { text: string; family: Family } | undefined {
  const s = readOptionalString(r, v, path);
  // An empty podIP is what the API server reports for a pod that has no address yet.
  if (s === undefined || s === '') return undefined;
  const ip = parseIp(s);
  if (!ip.ok) {
    r.error('NETPOLD_E_INVALID_VALUE', path, `invalid IP address ${show(s)}: ${ip.reason}`);
    return undefined;
  }
  return { text: ip.text, family: ip.family };
}

// ---------------------------------------------------------------------------------------------
// Node

const NODE_ADDRESS_TYPES = ['InternalIP', 'ExternalIP'];

export function readNode(r: Reporter, obj: Record<string, unknown>, meta: Meta): NodeInfo | undefined {
  checkTopLevel(r, obj);
  optionalRecord(r, get(obj, 'spec'), 'spec');
  const status = optionalRecord(r, get(obj, 'status'), 'status') ?? {};
  const addresses: string[] = [];
  eachRecord(r, get(status, 'addresses'), 'status.addresses', (a, path) => {
    const type = readOptionalString(r, get(a, 'type'), field(path, 'type'));
    // Hostname, InternalDNS, ExternalDNS... are names, not addresses traffic comes from.
    if (type === undefined || !NODE_ADDRESS_TYPES.includes(type)) return undefined;
    const ip = readIpField(r, get(a, 'address'), field(path, 'address'));
    if (ip === undefined) {
      if (isAbsent(get(a, 'address')) || get(a, 'address') === '') {
        r.error('NETPOLD_E_REQUIRED', field(path, 'address'), `an ${type} address needs an address`);
      }
      return undefined;
    }
    if (!addresses.includes(ip.text)) addresses.push(ip.text);
    return undefined;
  });
  if (r.errorCount > 0 || meta.name === undefined || meta.labels === undefined) return undefined;
  return { name: meta.name, addresses };
}

