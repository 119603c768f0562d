// `netpold agent`: the composition root of the running agent. Reads its flags once, builds the
// collaborators, and wires them; SIGINT/SIGTERM stop it cleanly (interception removed).
import type { Command } from 'commander';
import { pino } from 'pino';
import { Agent } from '../agent/agent.js';
import { Dataplane } from '../dataplane/dataplane.js';
import { DEFAULT_INTERCEPTION, Interception } from '../dataplane/interception.js';
import { loadNativeSockets } from '../dataplane/native.js';
import { NetpoldError } from '../errors.js';
import type { Logger } from '../log.js';
import { ManifestFolderSource } from '../source/files/watch.js';
import type { StateSource } from '../source/source.js';
import type { Io } from './common.js';

export interface AgentFlags {
  manifests?: string[];
  kubeconfig?: string;
  inCluster?: boolean;
  nodeName?: string;
  port: string;
  existingFlows: string;
  flowTableSize: string;
  udpIdleMs: string;
  connectTimeoutMs: string;
  fwmark: string;
  routeTable: string;
  table: string;
  ipv6: boolean;
  logLevel: string;
  interceptAllPods?: boolean;
}

function int(name: string, text: string, min: number, max: number): number {
  const n = Number(text);
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(text) || !Number.isInteger(n) || n < min || n > max) {
    throw new NetpoldError('NETPOLD_E_USAGE', `--${name} must be an integer from ${min} to ${max}, not ${text}`);
  }
  return n;
}

/** Validates every flag, reporting all problems together. */
export function agentConfig(f: AgentFlags) {
  const problems: string[] = [];
  const get = <T>(fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (e) {
      problems.push((e as Error).message);
      return undefined;
    }
  };
  const port = get(() => int('port', f.port, 1, 65535));
  const flowTableSize = get(() => int('flow-table-size', f.flowTableSize, 1, 10_000_000));
  const udpIdleMs = get(() => int('udp-idle-ms', f.udpIdleMs, 100, 3_600_000));
  const connectTimeoutMs = get(() => int('connect-timeout-ms', f.connectTimeoutMs, 100, 120_000));
  const mark = get(() => int('fwmark', f.fwmark, 1, 0xffffffff));
  const routeTable = get(() => int('route-table', f.routeTable, 1, 0xfffffff0));
  if (f.existingFlows !== 'revalidate' && f.existingFlows !== 'keep') problems.push(`--existing-flows must be revalidate or keep, not ${f.existingFlows}`);
  if (!/^[a-z][a-z0-9_]{0,30}$/.test(f.table)) problems.push(`--table must be a short lowercase nft table name, not ${f.table}`);
  if (!['debug', 'info', 'warn', 'error'].includes(f.logLevel)) problems.push(`--log-level must be debug, info, warn or error, not ${f.logLevel}`);
  // The state source: exactly one of a manifests folder, a kubeconfig, the in-cluster config.
  const sources = [f.manifests !== undefined ? '--manifests' : '', f.kubeconfig !== undefined ? '--kubeconfig' : '', f.inCluster === true ? '--in-cluster' : ''].filter((x) => x !== '');
  if (sources.length !== 1) {
    problems.push(sources.length === 0 ? 'give the policy state source: --manifests PATH..., --kubeconfig PATH or --in-cluster' : `give only one state source, not ${sources.join(' and ')}`);
  } else if (sources[0] !== '--manifests' && f.nodeName === undefined && f.interceptAllPods !== true) {
    problems.push(`${sources[0]} needs --node-name (the pods of this node are intercepted), or --intercept-all-pods`);
  }
  if (problems.length > 0) throw new NetpoldError('NETPOLD_E_USAGE', problems.join('; '));
  return Object.freeze({
    manifests: f.manifests ?? [],
    source:
      f.kubeconfig !== undefined
        ? ({ kind: 'kubernetes', connection: { kubeconfig: f.kubeconfig } } as const)
        : f.inCluster === true
          ? ({ kind: 'kubernetes', connection: { inCluster: true } } as const)
          : ({ kind: 'manifests', paths: f.manifests ?? [] } as const),
    nodeName: f.nodeName,
    interceptAllPods: f.interceptAllPods === true,
    dataplane: {
      port: port!,
      flowTableSize: flowTableSize!,
      udpIdleMs: udpIdleMs!,
      connectTimeoutMs: connectTimeoutMs!,
      existingFlows: f.existingFlows as 'revalidate' | 'keep',
      families: f.ipv6 ? ([4, 6] as const) : ([4] as const),
    },
    interception: { ...DEFAULT_INTERCEPTION, port: port!, mark: mark!, routeTable: routeTable!, rulePriority: routeTable!, table: f.table },
    logLevel: f.logLevel,
  });
}

export function registerAgent(program: Command, io: Io, setResult: (code: number) => void): void {
  program
    .command('agent')
    .description('enforce NetworkPolicy on this node: TPROXY interception, decisions, relaying')
    .option('--manifests <paths...>', 'YAML/JSON files or folders, watched for changes (one of --manifests, --kubeconfig, --in-cluster)')
    .option('--kubeconfig <path>', 'list and watch a Kubernetes API server with this kubeconfig')
    .option('--in-cluster', "list and watch the Kubernetes API server of the pod's own cluster (service account)")
    .option('--node-name <name>', 'this node: its pods (spec.nodeName) are intercepted; all pods when no pod names a node')
    .option('--intercept-all-pods', 'intercept every pod whatever its spec.nodeName (one lab node hosting a whole cluster)')
    .option('--port <n>', 'transparent listener port on 127.0.0.1 and [::1]', '15001')
    .option('--existing-flows <mode>', 'on a policy change: revalidate (close flows no longer allowed) or keep', 'revalidate')
    .option('--flow-table-size <n>', 'maximum tracked flows; when full, idle flows are evicted, else new flows refused', '65536')
    .option('--udp-idle-ms <n>', 'a UDP flow without datagrams for this long is closed', '30000')
    .option('--connect-timeout-ms <n>', 'upstream TCP connect timeout', '10000')
    .option('--fwmark <n>', 'firewall mark of redirected and returning packets', String(DEFAULT_INTERCEPTION.mark))
    .option('--route-table <n>', 'routing table (and ip rule priority) for the marked packets', String(DEFAULT_INTERCEPTION.routeTable))
    .option('--table <name>', 'nftables table (family inet) owned by the agent', DEFAULT_INTERCEPTION.table)
    .option('--no-ipv6', 'do not listen on IPv6')
    .option('--log-level <level>', 'debug, info, warn or error', 'info')
    .action(async (f: AgentFlags) => {
      const cfg = agentConfig(f);
      const base = pino({ level: cfg.logLevel, base: undefined, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } });
      const log: Logger = {
        debug: (o, m) => base.debug(o, m),
        info: (o, m) => base.info(o, m),
        warn: (o, m) => base.warn(o, m),
        error: (o, m) => base.error(o, m),
      };
      let source: StateSource;
      if (cfg.source.kind === 'manifests') {
        source = new ManifestFolderSource(cfg.source.paths);
      } else {
        // Loaded only here: the client library takes a second to import.
        const { KubernetesSource } = await import('../source/k8s/source.js');
        source = new KubernetesSource({ connection: cfg.source.connection, log, nodeName: cfg.nodeName });
      }
      const native = loadNativeSockets();
      const interception = new Interception(cfg.interception);
      const agent = new Agent(source, new Dataplane(native, log, cfg.dataplane), interception, log, { nodeName: cfg.nodeName, interceptAllPods: cfg.interceptAllPods });
      let stopping: Promise<void> | undefined;
      const stop = (signal: string): Promise<void> => {
        stopping ??= (async () => {
          log.info({ signal }, 'stopping');
          await agent.stop();
        })();
        return stopping;
      };
      // Signals are handled from the start: before the first state (which can take a while with
      // the Kubernetes source) a SIGTERM stops the source, which ends start(), then stops as usual,
      // so the fail-closed interception is never left behind.
      let onStop: ((sig: string) => void) | undefined;
      let early: string | undefined;
      const onSignal = (sig: string) => {
        if (onStop !== undefined) return onStop(sig);
        early ??= sig;
        void source.stop();
      };
      process.once('SIGINT', () => onSignal('SIGINT'));
      process.once('SIGTERM', () => onSignal('SIGTERM'));
      try {
        await agent.start();
      } catch (e) {
        log.error({ error: (e as Error).message, code: (e as { code?: string }).code }, 'start failed; removing interception');
        await interception.teardown();
        io.err(`error: ${(e as Error).message}${(e as { code?: string }).code ? ` [${(e as { code?: string }).code}]` : ''}`);
        setResult(2);
        return;
      }
      await new Promise<void>((resolve) => {
        onStop = (sig: string) => void stop(sig).then(resolve, resolve);
        if (early !== undefined) onStop(early);
      });
      base.flush();
      setResult(0);
    });
}
