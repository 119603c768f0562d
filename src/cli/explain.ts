// `netpold explain`: why a flow is allowed or denied — the policies selecting each side, every
// rule considered and why it matched or not, the verdict — from manifests (--manifests) or
// from a running agent's enforced state (its explain socket, --agent-socket).
import type { Command } from 'commander';
import { explainRequest, type ExplainResult } from '../agent/agent.js';
import { askAgent, DEFAULT_AGENT_SOCKET } from '../agent/explain-socket.js';
import { environment, type Environment } from '../config/env.js';
import { envName, resolveOptions, type OptionSpec } from '../config/options.js';
import { ErrorCodes, NetpoldError, type ErrorCode } from '../errors.js';
import { auditLifts, auditMask } from '../policy/audit.js';
import { compile } from '../policy/compile.js';
import { Decision, decide } from '../policy/decide.js';
import { formatExplanation } from '../policy/explain-flow.js';
import { EXIT_DENIED, EXIT_INPUT, EXIT_OK, loadOrReport, parseFamily, parsePort, parseProtocol, type Io } from './common.js';

export interface ExplainOptions {
  from: string;
  to: string;
  port: string;
  protocol?: string;
  family?: string;
  json?: boolean;
  manifests?: string[];
  allowErrors?: boolean;
  node?: string;
  agentSocket?: string;
}

const SOCKET_OPTION: OptionSpec = { name: 'agent-socket', kind: 'string', default: DEFAULT_AGENT_SOCKET, description: '' };

export function registerExplain(program: Command, io: Io, setResult: (code: number) => void): void {
  program
    .command('explain')
    .description('why a flow is allowed or denied: the policies selecting each side, each rule checked, the verdict; from --manifests or from the running agent; exit 0 allowed, 1 denied, 2 input error')
    .requiredOption('--from <NS/POD|IP>', 'source pod or address')
    .requiredOption('--to <NS/POD|IP>', 'destination pod or address')
    .requiredOption('--port <n>', 'destination port')
    .option('--protocol <TCP|UDP|SCTP>', 'protocol', 'TCP')
    .option('--family <4|6>', 'address family when both endpoints have both')
    .option('--json', 'machine-readable output on stdout')
    .option('--manifests <paths...>', 'explain from these YAML/JSON files or folders instead of asking the agent')
    .option('--allow-errors', 'with --manifests: evaluate invalid input anyway (invalid policies fail closed)')
    .option('--node <name>', 'with --manifests: node the pods without spec.nodeName run on (node-local traffic)')
    .option('--agent-socket <path>', `the agent's explain socket (default: ${DEFAULT_AGENT_SOCKET}; env ${envName('agent-socket')})`)
    .action(async (o: ExplainOptions) => setResult(await runExplain(io, o, environment())));
}

export async function runExplain(io: Io, o: ExplainOptions, env: Environment): Promise<number> {
  const protocol = parseProtocol(o.protocol);
  const port = parsePort(o.port);
  const family = parseFamily(o.family);
  if (o.manifests !== undefined && o.agentSocket !== undefined) {
    throw new NetpoldError('NETPOLD_E_USAGE', 'give --manifests (explain from files) or --agent-socket (ask the agent), not both');
  }
  let result: ExplainResult;
  let source: string;
  if (o.manifests !== undefined) {
    const state = loadOrReport(io, o.manifests, o.allowErrors === true);
    if (!state) return EXIT_INPUT;
    const snap = compile(state, { localNode: o.node });
    const r = explainRequest(state, snap, { from: o.from, to: o.to, port, protocol, family });
    // The namespaces' own audit annotations apply as the agent would apply them (in --mode enforce).
    const d = decide(snap, r.key, new Decision());
    const audit = auditLifts(auditMask(snap, new Set(state.namespaces.filter((n) => n.audit).map((n) => n.name))), d);
    result = { from: r.from, to: r.to, protocol: r.protocol, port: r.port, enforcement: d.allowed ? 'allow' : audit ? 'audit' : 'deny', explanation: r.explanation };
    source = 'manifests';
  } else {
    const resolved = resolveOptions([SOCKET_OPTION], { flags: o.agentSocket !== undefined ? { 'agent-socket': o.agentSocket } : {}, env });
    if (resolved.problems.length > 0) throw new NetpoldError('NETPOLD_E_USAGE', resolved.problems.join('; '));
    const path = resolved.values['agent-socket'] as string;
    const answer = (await askAgent(path, { from: o.from, to: o.to, port, protocol, family })) as { ok?: boolean; result?: ExplainResult; error?: { code?: string; message?: string } };
    if (answer.ok !== true || answer.result === undefined) {
      const code = answer.error?.code;
      const message = `the agent on ${path} answered: ${answer.error?.message ?? 'an error'}`;
      if (code !== undefined && code in ErrorCodes) throw new NetpoldError(code as ErrorCode, message);
      throw new Error(message);
    }
    result = answer.result;
    source = `agent ${path}`;
  }
  if (o.json) {
    io.out(JSON.stringify({ source, ...result }));
  } else {
    io.out(formatExplanation(result.explanation, { from: result.from.endpoint, to: result.to.endpoint, audit: result.enforcement === 'audit' }));
    io.out(`(explained from ${source})`);
  }
  return result.explanation.verdict === 'allow' ? EXIT_OK : EXIT_DENIED;
}
