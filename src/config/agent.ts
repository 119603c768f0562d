// The agent's configuration: every setting, its flag, its NETPOLD_* variable, its config-file
// key and its default, in one table; loaded once at start (flag > env > file > default),
// validated with every problem reported together (NETPOLD_E_CONFIG), then deeply frozen.
import { readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import ipaddr from 'ipaddr.js';
import { DEFAULT_AGENT_SOCKET } from '../agent/explain-socket.js';
import type { DataplaneConfig } from '../dataplane/dataplane.js';
import { DEFAULT_POD_BRIDGES, isPortName } from '../dataplane/bridge-redirect.js';
import { DEFAULT_INTERCEPTION, KNOWN_MARK_BITS, type InterceptionConfig } from '../dataplane/interception.js';
import { NetpoldError } from '../errors.js';
import type { KubeConnection } from '../source/k8s/config.js';
import { DEFAULT_READY_TAINT } from '../source/k8s/taint-key.js';
import { labelKeyProblem } from '../source/files/names.js';
import type { Environment } from './env.js';
import { envName, type OptionSpec, type OptionValue, type Origin, parseConfigFile, resolveOptions } from './options.js';

export const DEFAULT_METRICS_ADDRESS = '127.0.0.1:9464';

export const AGENT_OPTIONS: readonly OptionSpec[] = [
  { name: 'config', kind: 'string', arg: '<file>', description: 'YAML file of settings, keyed by the long flag names (flags and NETPOLD_* variables override it)', notInFile: true },
  { name: 'manifests', kind: 'list', arg: '<paths...>', description: 'YAML/JSON files or folders, watched for changes (one of --manifests, --kubeconfig, --in-cluster)' },
  { name: 'kubeconfig', kind: 'string', arg: '<path>', description: 'list and watch a Kubernetes API server with this kubeconfig' },
  { name: 'in-cluster', kind: 'bool', description: "list and watch the Kubernetes API server of the pod's own cluster (service account)" },
  { name: 'node-name', kind: 'string', arg: '<name>', description: 'this node: its pods (spec.nodeName) are intercepted; all pods when no pod names a node' },
  { name: 'intercept-all-pods', kind: 'bool', description: 'intercept every pod whatever its spec.nodeName (one lab node hosting a whole cluster)' },
  { name: 'mode', kind: 'enum', arg: '<mode>', values: ['enforce', 'audit'], default: 'enforce', description: 'enforce, or audit: decide and log every flow but let all through (namespaces opt in alone with the annotation netpold.io/mode: audit)' },
  { name: 'port', kind: 'int', arg: '<n>', min: 1, max: 65535, default: 15001, description: 'transparent listener port on 127.0.0.1 and [::1]' },
  { name: 'relay', kind: 'enum', arg: '<how>', values: ['js', 'splice'], default: 'splice', description: 'how allowed TCP flows move bytes: js (stream piping in Node) or splice (in the kernel, on the native addon\'s thread)' },
  { name: 'relay-threads', kind: 'int', arg: '<n>', min: 0, max: 16, default: 0, description: 'with --relay splice: native threads that accept, connect and relay TCP, each on its own SO_REUSEPORT listener socket (0: one per CPU but one, left to the JavaScript thread)' },
  { name: 'verdict-cache', kind: 'int', arg: '<n>', min: 0, max: 1 << 20, default: 4096, description: "with --relay splice: entries of each engine thread's cache of recent TCP relay verdicts (by source, destination and port), so that repeated connections are relayed without waiting for the JavaScript thread, which still decides and tracks each one (a power of two; 0: no cache)" },
  { name: 'existing-flows', kind: 'enum', arg: '<mode>', values: ['revalidate', 'keep'], default: 'revalidate', description: 'on a policy change: revalidate (close flows no longer allowed) or keep' },
  { name: 'flow-table-size', kind: 'int', arg: '<n>', min: 1, max: 10_000_000, default: 65536, description: 'maximum tracked flows; when full, idle flows are evicted, else new flows refused' },
  { name: 'udp-idle-ms', kind: 'int', arg: '<n>', min: 100, max: 3_600_000, default: 30000, description: 'a UDP flow without datagrams for this long is closed' },
  { name: 'connect-timeout-ms', kind: 'int', arg: '<n>', min: 100, max: 120_000, default: 10000, description: 'upstream TCP connect timeout' },
  { name: 'fwmark', kind: 'int', arg: '<n>', min: 1, max: 0xffffffff, default: `0x${DEFAULT_INTERCEPTION.mark.toString(16)}`, description: 'firewall mark bit(s) OR-ed into redirected and returning packets (pick bits no other node software uses)' },
  { name: 'route-table', kind: 'int', arg: '<n>', min: 1, max: 0xfffffff0, default: DEFAULT_INTERCEPTION.routeTable, description: 'routing table for the marked packets (local default route)' },
  { name: 'rule-priority', kind: 'int', arg: '<n>', min: 2, max: 32765, default: DEFAULT_INTERCEPTION.rulePriority, description: 'ip rule priority of the fwmark rule (one less: its reverse-path companion): before any CNI rule that routes pod addresses (AWS VPC CNI: 512 and up)' },
  { name: 'pod-bridges', kind: 'string', arg: '<names|off>', default: DEFAULT_POD_BRIDGES.join(','), description: "Linux bridges pods may sit on (comma-separated; Flannel's and the bridge plugin's cni0, kubenet's cbr0): the IP traffic of their ports is taken off the bridge and routed on the node, so that it is intercepted (see the README); off: none (pods on a bridge are then not enforced)" },
  { name: 'table', kind: 'string', arg: '<name>', default: DEFAULT_INTERCEPTION.table, description: 'nftables table (family inet) owned by the agent; NAME_sctp (inet) and NAME_bridge (netdev) are its too' },
  { name: 'ipv6', kind: 'bool', negatable: true, default: true, description: 'do not listen on IPv6' },
  { name: 'log-level', kind: 'enum', arg: '<level>', values: ['debug', 'info', 'warn', 'error'], default: 'info', description: 'debug, info, warn or error' },
  { name: 'metrics-address', kind: 'string', arg: '<host:port|off>', default: DEFAULT_METRICS_ADDRESS, description: 'listener for /metrics, /healthz and /readyz (HOST:PORT, [IPv6]:PORT, or off)' },
  { name: 'max-event-loop-lag-ms', kind: 'int', arg: '<n>', min: 10, max: 600_000, default: 2000, description: '/healthz fails when the event loop was blocked longer than this within the last 5 s' },
  { name: 'agent-socket', kind: 'string', arg: '<path|off>', default: DEFAULT_AGENT_SOCKET, description: 'Unix socket (root only) answering `netpold explain` about the enforced state, or off' },
  { name: 'flow-log', kind: 'string', arg: '<path|-|off>', default: '-', description: 'flow log: one JSON line per decided flow, to a file, - (standard output, with the log), or off' },
  { name: 'flow-log-sample-rate', kind: 'number', arg: '<0..1>', min: 0, max: 1, default: 0.01, description: 'fraction of allowed flows logged (denied flows are always logged)' },
  { name: 'flow-log-buffer', kind: 'int', arg: '<lines>', min: 1, max: 1_000_000, default: 10000, description: 'flow-log lines waiting to be written; beyond that lines are dropped (counted), never waited for' },
  { name: 'ready-taint', kind: 'string', arg: '<key|off>', default: 'off', description: `with --kubeconfig or --in-cluster and --node-name: once enforcing, remove taints with this key (such as ${DEFAULT_READY_TAINT}) from this node's Node object, so that nodes registered with it (kubelet --register-with-taints=${DEFAULT_READY_TAINT}=:NoSchedule) get no pods before the agent enforces; needs get and patch on nodes (deploy/optional/ready-taint.yaml); off by default` },
  { name: 'shutdown-grace-ms', kind: 'int', arg: '<n>', min: 0, max: 600_000, default: 10000, description: 'on SIGTERM, how long live TCP flows may finish (new flows are refused meanwhile) before the rest are reset' },
];

export type SourceConfig =
  | { readonly kind: 'manifests'; readonly paths: readonly string[] }
  | { readonly kind: 'kubernetes'; readonly connection: KubeConnection };

export interface AgentConfig {
  readonly source: SourceConfig;
  readonly nodeName: string | undefined;
  readonly interceptAllPods: boolean;
  readonly mode: 'enforce' | 'audit';
  readonly dataplane: DataplaneConfig;
  readonly interception: InterceptionConfig;
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** undefined: off. */
  readonly metrics: { readonly host: string; readonly port: number } | undefined;
  readonly maxEventLoopLagMs: number;
  /** undefined: off. */
  readonly agentSocket: string | undefined;
  /** undefined: off. */
  readonly flowLog: { readonly destination: string; readonly sampleRate: number; readonly bufferLines: number } | undefined;
  readonly shutdownGraceMs: number;
  /** The taint key removed from this node once enforcing (Kubernetes source with a node name); undefined: off. */
  readonly readyTaint: string | undefined;
  readonly configFile: string | undefined;
  /** Where each setting came from (logged at start). */
  readonly origins: Readonly<Record<string, Origin | undefined>>;
  /** Not errors: unknown NETPOLD_* variables. */
  readonly warnings: readonly string[];
}

export interface LoadInputs {
  /** Flags given on the command line, by option name. */
  readonly flags: Readonly<Record<string, unknown>>;
  readonly env: Environment;
  readonly readFile?: (path: string) => string;
}

/** Parses `HOST:PORT`, `[IPv6]:PORT` or a bare IPv6 address and port after its last colon. */
export function parseHostPort(text: string): { host: string; port: number } | undefined {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^(.+):(\d+)$/.exec(text);
  if (!m) return undefined;
  const host = m[1]!;
  const port = Number(m[2]);
  if (!ipaddr.isValid(host) || port > 65535) return undefined;
  return { host: ipaddr.parse(host).toString(), port };
}

/** Loads, validates and freezes the agent's configuration; throws NETPOLD_E_CONFIG listing every problem. */
export function loadAgentConfig(inputs: LoadInputs): AgentConfig {
  const problems: string[] = [];
  const read = inputs.readFile ?? ((p: string) => readFileSync(p, 'utf8'));
  // The config file itself: --config, else NETPOLD_CONFIG.
  const configSpec = AGENT_OPTIONS.find((o) => o.name === 'config')!;
  const pre = resolveOptions([configSpec], { flags: inputs.flags, env: inputs.env });
  problems.push(...pre.problems);
  const configFile = pre.values['config'] as string | undefined;
  let file: { path: string; values: Record<string, unknown> } | undefined;
  if (configFile !== undefined) {
    let text: string | undefined;
    try {
      text = read(configFile);
    } catch (e) {
      problems.push(`--config ${configFile}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    if (text !== undefined) {
      const r = parseConfigFile(configFile, text);
      if ('problem' in r) problems.push(r.problem);
      else file = { path: configFile, values: r.values };
    }
  }
  const r = resolveOptions(AGENT_OPTIONS, { flags: inputs.flags, env: inputs.env, file });
  // The --config value itself was checked above.
  problems.push(...r.problems.filter((p) => !pre.problems.includes(p)));
  const v = r.values;
  const get = <T extends OptionValue>(name: string): T | undefined => v[name] as T | undefined;
  const where = (name: string): string => {
    const o = r.origins[name];
    return o === 'env' ? envName(name) : o === 'file' ? `${configFile}: ${name}` : `--${name}`;
  };

  // The state source: exactly one of a manifests folder, a kubeconfig, the in-cluster config.
  const manifests = get<readonly string[]>('manifests');
  const kubeconfig = get<string>('kubeconfig');
  const inCluster = get<boolean>('in-cluster') === true;
  const nodeName = get<string>('node-name');
  const interceptAllPods = get<boolean>('intercept-all-pods') === true;
  const sources = [manifests !== undefined ? '--manifests' : '', kubeconfig !== undefined ? '--kubeconfig' : '', inCluster ? '--in-cluster' : ''].filter((x) => x !== '');
  if (sources.length !== 1) {
    problems.push(sources.length === 0 ? 'give the policy state source: --manifests PATH..., --kubeconfig PATH or --in-cluster' : `give only one state source, not ${sources.join(' and ')}`);
  } else if (sources[0] !== '--manifests' && nodeName === undefined && !interceptAllPods) {
    problems.push(`${sources[0]} needs --node-name (the pods of this node are intercepted), or --intercept-all-pods`);
  }
  const table = get<string>('table');
  if (table !== undefined && !/^[a-z][a-z0-9_]{0,30}$/.test(table)) problems.push(`${where('table')} must be a short lowercase nft table name, not ${JSON.stringify(table)}`);

  let metrics: { host: string; port: number } | undefined;
  const ma = get<string>('metrics-address');
  if (ma !== undefined && ma !== 'off') {
    metrics = parseHostPort(ma);
    if (metrics === undefined) problems.push(`${where('metrics-address')} must be HOST:PORT with an IP address (such as 127.0.0.1:9464, 0.0.0.0:9464 or [::1]:9464), or off, not ${JSON.stringify(ma)}`);
    else if (metrics.port !== 0 && metrics.port === get<number>('port') && (metrics.host === '127.0.0.1' || metrics.host === '::1' || metrics.host === '0.0.0.0' || metrics.host === '::')) {
      problems.push(`${where('metrics-address')} uses port ${metrics.port}, the transparent listener's --port`);
    }
  }
  let agentSocket = get<string>('agent-socket');
  if (agentSocket === 'off') agentSocket = undefined;
  else if (agentSocket !== undefined && (!isAbsolute(agentSocket) || Buffer.byteLength(agentSocket) > 100)) {
    problems.push(`${where('agent-socket')} must be an absolute path of at most 100 bytes (a Unix socket), or off, not ${JSON.stringify(agentSocket)}`);
  }
  const flowLogDest = get<string>('flow-log');
  const readyTaintKey = get<string>('ready-taint');
  // Only the Kubernetes source, on a named node, has a Node to remove the taint from.
  const taintApplies = (kubeconfig !== undefined || inCluster) && nodeName !== undefined;
  const notes: string[] = [];
  if (readyTaintKey !== undefined && readyTaintKey !== 'off') {
    // A taint key has the syntax of a label key.
    const p = labelKeyProblem(readyTaintKey);
    if (p !== undefined) problems.push(`${where('ready-taint')} must be a taint key (the syntax of a label key) or off: ${p}`);
    // Said, not an error: one config file may serve both kinds of agents.
    else if (!taintApplies) notes.push(`${where('ready-taint')} ${readyTaintKey} does nothing without --kubeconfig or --in-cluster and --node-name`);
  }
  const podBridgesText = get<string>('pod-bridges') ?? '';
  const podBridges = podBridgesText === 'off' ? [] : podBridgesText.split(',').map((b) => b.trim());
  const badBridges = podBridges.filter((b) => !isPortName(b));
  if (badBridges.length > 0) {
    problems.push(`${where('pod-bridges')} must be off or interface names (1-15 bytes, no white space, /, : or ") separated by commas, not ${JSON.stringify(podBridgesText)}`);
  }
  const verdictCache = get<number>('verdict-cache');
  if (verdictCache !== undefined && (verdictCache & (verdictCache - 1)) !== 0) problems.push(`${where('verdict-cache')} must be 0 or a power of two, not ${verdictCache}`);

  if (problems.length > 0) {
    throw new NetpoldError('NETPOLD_E_CONFIG', `${problems.length === 1 ? 'a problem' : `${problems.length} problems`} in the agent configuration (flags, NETPOLD_* environment, --config file): ${problems.join('; ')}`);
  }
  const port = get<number>('port')!;
  const routeTable = get<number>('route-table')!;
  const rulePriority = get<number>('rule-priority')!;
  const fwmark = Number(get('fwmark'));
  const warnings = [...r.warnings, ...notes];
  // Allowed (the operator may know the node has none of these), but said at every start: a bit
  // another component sets routes that component's traffic to the agent's local route.
  for (const k of KNOWN_MARK_BITS) {
    if ((fwmark & k.mask) !== 0) {
      warnings.push(
        `${where('fwmark')} 0x${fwmark.toString(16)} shares bits 0x${((fwmark & k.mask) >>> 0).toString(16)} with ${k.owner}: packets that software marks would be routed to the agent; pick a free bit such as the default 0x${DEFAULT_INTERCEPTION.mark.toString(16)}`,
      );
    }
  }
  const config: AgentConfig = {
    source:
      kubeconfig !== undefined
        ? { kind: 'kubernetes', connection: { kubeconfig } }
        : inCluster
          ? { kind: 'kubernetes', connection: { inCluster: true } }
          : { kind: 'manifests', paths: manifests ?? [] },
    nodeName,
    interceptAllPods,
    mode: get<'enforce' | 'audit'>('mode')!,
    dataplane: {
      port,
      flowTableSize: get<number>('flow-table-size')!,
      udpIdleMs: get<number>('udp-idle-ms')!,
      connectTimeoutMs: get<number>('connect-timeout-ms')!,
      existingFlows: get<'revalidate' | 'keep'>('existing-flows')!,
      families: get<boolean>('ipv6') === false ? [4] : [4, 6],
      mode: get<'enforce' | 'audit'>('mode')!,
      relay: get<'js' | 'splice'>('relay')!,
      ...(get<number>('relay-threads')! > 0 ? { relayThreads: get<number>('relay-threads')! } : {}),
      verdictCacheSize: verdictCache!,
    },
    interception: { ...DEFAULT_INTERCEPTION, port, mark: fwmark, routeTable, rulePriority, table: table!, podBridges: [...new Set(podBridges)] },
    logLevel: get<'debug' | 'info' | 'warn' | 'error'>('log-level')!,
    metrics,
    maxEventLoopLagMs: get<number>('max-event-loop-lag-ms')!,
    agentSocket,
    flowLog:
      flowLogDest === undefined || flowLogDest === 'off'
        ? undefined
        : { destination: flowLogDest, sampleRate: get<number>('flow-log-sample-rate')!, bufferLines: get<number>('flow-log-buffer')! },
    shutdownGraceMs: get<number>('shutdown-grace-ms')!,
    readyTaint: readyTaintKey === undefined || readyTaintKey === 'off' || !taintApplies ? undefined : readyTaintKey,
    configFile,
    origins: r.origins,
    warnings,
  };
  return deepFreeze(config);
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as Record<string, unknown>)) deepFreeze(v);
  }
  return o;
}
