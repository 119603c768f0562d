// `netpold agent`: the composition root of the running agent. Loads its configuration once
// (src/config: flags > NETPOLD_* environment > --config file > defaults), builds the
// collaborators and wires them: the state source, the data plane, interception, the flow log,
// the metrics/health listener and the explain socket.
//
// Start order: everything that can fail on a bad setting (kubeconfig, flow-log file, metrics
// listener, explain socket) comes before interception is installed, so a failed start leaves
// the node untouched. SIGTERM/SIGINT: the explain socket closes, new flows are refused while
// live TCP flows may finish (--shutdown-grace-ms; a second signal cuts it short), the rest is
// reset, interception removed, the flow log and the log flushed, then the process exits 0.
import type { Command } from 'commander';
import { openSync } from 'node:fs';
import { pino } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { Agent } from '../agent/agent.js';
import { serveExplainSocket, type ExplainSocket } from '../agent/explain-socket.js';
import { AGENT_OPTIONS, loadAgentConfig, type AgentConfig } from '../config/agent.js';
import { environment } from '../config/env.js';
import { addOptions, givenFlags } from '../config/options.js';
import { Dataplane } from '../dataplane/dataplane.js';
import { Interception } from '../dataplane/interception.js';
import { loadNativeSockets } from '../dataplane/native.js';
import { NetpoldError } from '../errors.js';
import { FlowLog } from '../flowlog/flow-log.js';
import { AsyncLineWriter, type LineSink } from '../flowlog/writer.js';
import type { Logger } from '../log.js';
import { healthCheck, readinessCheck } from '../metrics/health.js';
import { LoopMonitor } from '../metrics/loop-monitor.js';
import { AgentMetrics, type SourceStats } from '../metrics/metrics.js';
import { formatHostPort, startMetricsServer, type MetricsServer } from '../metrics/server.js';
import type { KubernetesSource } from '../source/k8s/source.js';
import type { ReadyTaint } from '../source/k8s/taint.js';
import { ManifestFolderSource } from '../source/files/watch.js';
import type { StateSource } from '../source/source.js';
import type { Io } from './common.js';

const VERSION = '0.1.0';

export function registerAgent(program: Command, io: Io, setResult: (code: number) => void): void {
  const cmd = program
    .command('agent')
    .description('enforce NetworkPolicy on this node: TPROXY interception, decisions, relaying; metrics, health, flow log, explain socket');
  addOptions(cmd, AGENT_OPTIONS);
  cmd.addHelpText(
    'after',
    '\nEvery setting can also be given as an environment variable (NETPOLD_ and the flag name in upper case,\n' +
      'dashes as underscores: NETPOLD_FLOW_LOG_SAMPLE_RATE=0.1; lists comma-separated; booleans true/false)\n' +
      'or as a key of the --config YAML file (the long flag name: `flow-log-sample-rate: 0.1`).\n' +
      'Precedence: flag > environment > config file > default. All settings are validated at start, every\n' +
      'problem reported together [NETPOLD_E_CONFIG].',
  );
  cmd.action(async () => {
    const cfg = loadAgentConfig({ flags: givenFlags(cmd, AGENT_OPTIONS), env: environment() });
    setResult(await runAgent(cfg, io));
  });
}

/** Runs the agent until SIGTERM/SIGINT; returns the exit code. */
export async function runAgent(cfg: AgentConfig, io: Io): Promise<number> {
  // One asynchronous writer for standard output: the log and (with --flow-log -) the flow log
  // share it, so their lines never interleave and neither ever blocks the event loop.
  const stdout = new AsyncLineWriter(1);
  const base = pino(
    { level: cfg.logLevel, base: undefined, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } },
    { write: (s: string) => void stdout.write(s) },
  );
  const log: Logger = {
    debug: (o, m) => base.debug(o, m),
    info: (o, m) => base.info(o, m),
    warn: (o, m) => base.warn(o, m),
    error: (o, m) => base.error(o, m),
  };
  const flushOnExit = (): void => stdout.flushSync();
  process.once('exit', flushOnExit);
  for (const w of cfg.warnings) log.warn({}, w);

  const closers: (() => Promise<void>)[] = [];
  const closeAll = async (): Promise<void> => {
    for (const c of closers.splice(0).reverse()) await c().catch(() => {});
  };
  const fail = async (e: unknown): Promise<number> => {
    const code = (e as { code?: string }).code;
    log.error({ error: (e as Error).message, code }, 'start failed');
    await closeAll();
    await stdout.flush();
    process.off('exit', flushOnExit);
    io.err(`error: ${(e as Error).message}${code ? ` [${code}]` : ''}`);
    return 2;
  };

  // --- collaborators (nothing on the node is touched yet) ---------------------------------
  let flowLog: FlowLog | undefined;
  let source: StateSource;
  let sourceStats: () => SourceStats;
  let readyTaint: ReadyTaint | undefined;
  let interception: Interception;
  let dataplane: Dataplane;
  let agent: Agent;
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const metrics = new AgentMetrics(registry);
  const loop = new LoopMonitor();
  try {
    if (cfg.flowLog) {
      let sink: LineSink = stdout;
      if (cfg.flowLog.destination !== '-') {
        let fd: number;
        try {
          fd = openSync(cfg.flowLog.destination, 'a', 0o640);
        } catch (e) {
          throw new NetpoldError('NETPOLD_E_FLOW_LOG', `cannot open --flow-log ${cfg.flowLog.destination} for appending: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
        }
        const file = new AsyncLineWriter(fd, { closeFd: true, onError: (err) => log.warn({ code: 'NETPOLD_E_FLOW_LOG', error: err.code ?? err.message }, 'flow log write failed; lines dropped') });
        closers.push(() => file.close());
        sink = file;
      }
      flowLog = new FlowLog(sink, { sampleRate: cfg.flowLog.sampleRate, bufferLines: cfg.flowLog.bufferLines });
    }
    if (cfg.source.kind === 'manifests') {
      const s = new ManifestFolderSource(cfg.source.paths);
      source = s;
      sourceStats = () => ({ kind: 'manifests', updates: s.counters.loads - s.counters.unusable, events: s.counters.reloads, relists: 0, errors: s.counters.unusable, rejected: s.counters.objectErrors, lastSyncTime: s.counters.lastLoadTime });
    } else {
      // Loaded only here: the client library takes a second to import.
      const { KubernetesSource } = await import('../source/k8s/source.js');
      const s: KubernetesSource = new KubernetesSource({ connection: cfg.source.connection, log, nodeName: cfg.nodeName });
      source = s;
      if (cfg.readyTaint !== undefined && cfg.nodeName !== undefined) {
        const { ReadyTaint } = await import('../source/k8s/taint.js');
        const t = new ReadyTaint(s.kubeConfig, cfg.nodeName, cfg.readyTaint, log);
        readyTaint = t;
        closers.push(async () => t.stop());
      }
      sourceStats = () => {
        const c = s.counters;
        return { kind: 'kubernetes', updates: c.updates, events: c.events, relists: c.relists, errors: c.watchErrors + c.expired, rejected: c.rejected, lastSyncTime: Math.max(c.lastSyncTime, c.lastEventTime) };
      };
    }
    const native = loadNativeSockets();
    interception = new Interception(cfg.interception, undefined, { log });
    dataplane = new Dataplane(native, log, cfg.dataplane, { observeDecision: metrics.observeDecision, flowLog });
    agent = new Agent(
      source,
      dataplane,
      interception,
      log,
      { nodeName: cfg.nodeName, interceptAllPods: cfg.interceptAllPods, shutdownGraceMs: cfg.shutdownGraceMs },
      {
        snapshotApplied: (snap, seconds) => metrics.snapshotApplied(snap, seconds),
        phaseChanged: (phase) => {
          log.info({ phase }, `phase: ${phase}`);
          if (phase === 'enforcing') readyTaint?.start();
        },
      },
    );
    metrics.bind({ dataplane, agent, source: sourceStats, flowLog, loop, version: VERSION, engine: native.spliceCounters && (() => native.spliceCounters!()) });
  } catch (e) {
    return fail(e);
  }

  // --- listeners (still nothing on the node) ------------------------------------------------
  let server: MetricsServer | undefined;
  let explain: ExplainSocket | undefined;
  try {
    loop.start();
    closers.push(async () => loop.stop());
    if (cfg.metrics) {
      const a = agent;
      const dp = dataplane;
      server = await startMetricsServer({
        host: cfg.metrics.host,
        port: cfg.metrics.port,
        registry,
        health: () => healthCheck(loop, cfg.maxEventLoopLagMs, a),
        ready: () => readinessCheck(a, dp.revision),
      });
      const srv = server;
      closers.push(() => srv.close());
    }
    if (cfg.agentSocket) {
      const a = agent;
      explain = await serveExplainSocket(cfg.agentSocket, (req) => a.explain(req as Parameters<Agent['explain']>[0]), log);
      const ex = explain;
      closers.push(() => ex.close());
    }
  } catch (e) {
    return fail(e);
  }
  log.info(
    {
      version: VERSION,
      mode: cfg.mode,
      source: cfg.source.kind,
      metrics: server ? formatHostPort(server.host, server.port) : 'off',
      agentSocket: cfg.agentSocket ?? 'off',
      flowLog: cfg.flowLog ? { destination: cfg.flowLog.destination, sampleRate: cfg.flowLog.sampleRate, bufferLines: cfg.flowLog.bufferLines } : 'off',
      shutdownGraceMs: cfg.shutdownGraceMs,
      configFile: cfg.configFile,
    },
    'starting',
  );

  // --- run ----------------------------------------------------------------------------------
  let stopping: Promise<void> | undefined;
  let cutShort: () => void = () => {};
  const abort = new Promise<void>((r) => (cutShort = r));
  const stop = (signal: string): Promise<void> => {
    stopping ??= (async () => {
      log.info({ signal }, 'stopping');
      await explain?.close();
      await agent.stop(abort);
    })();
    return stopping;
  };
  // Signals are handled from the start: before the first state (which can take a while with
  // the Kubernetes source) a SIGTERM stops the source, which ends start(), then stops as usual,
  // so the fail-closed interception is never left behind. A second signal ends the drain.
  let onStop: ((sig: string) => void) | undefined;
  let early: string | undefined;
  const onSignal = (sig: string): void => {
    if (stopping !== undefined) {
      log.info({ signal: sig }, 'second signal: resetting the flows left now');
      cutShort();
      return;
    }
    if (onStop !== undefined) return onStop(sig);
    early ??= sig;
    void source.stop();
  };
  const sigint = (): void => onSignal('SIGINT');
  const sigterm = (): void => onSignal('SIGTERM');
  process.on('SIGINT', sigint);
  process.on('SIGTERM', sigterm);
  try {
    try {
      await agent.start();
    } catch (e) {
      log.error({ error: (e as Error).message, code: (e as { code?: string }).code }, 'start failed; removing interception');
      await interception.teardown();
      return await fail(e);
    }
    await new Promise<void>((resolve) => {
      onStop = (sig: string) => void stop(sig).then(resolve, resolve);
      if (early !== undefined) onStop(early);
    });
  } finally {
    process.off('SIGINT', sigint);
    process.off('SIGTERM', sigterm);
  }
  flowLog?.flush();
  await closeAll();
  await stdout.flush();
  process.off('exit', flushOnExit);
  return 0;
}
