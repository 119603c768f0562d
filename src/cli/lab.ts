// `netpold lab up|probe|matrix|down`: a test node built from manifests out of network namespaces
// (src/lab). Needs root, iproute2 and nftables; exits 2 naming what is missing.
import { Command, Option } from 'commander';
import { NetpoldError } from '../errors.js';
import { Lab, type ProbeResult } from '../lab/lab.js';
import { DEFAULT_LAB_PORTS, EXT_RANGES } from '../lab/plan.js';
import { requireLab } from '../lab/sys.js';
import { EXIT_DENIED, EXIT_INPUT, EXIT_OK, loadOrReport, parseFamily, parsePort, parseProtocol, type Io } from './common.js';
import { formatMatrix } from './matrix.js';

const DEFAULT_ID = 'demo';

interface UpOptions {
  manifests: string[];
  id: string;
  nodeName?: string;
  ports: string;
  bridge?: boolean;
}

interface ProbeOptions {
  from: string;
  to: string;
  port: string;
  protocol?: string;
  timeout?: string;
  family?: string;
  id: string;
  json?: boolean;
}

interface MatrixOptions {
  port: string;
  protocol?: string;
  timeout?: string;
  family?: string;
  id: string;
  json?: boolean;
}

export function registerLab(program: Command, io: Io, setResult: (code: number) => void): void {
  const lab = program
    .command('lab')
    .description('a test node built from manifests out of network namespaces (needs root, iproute2 and nftables)');
  const id = (): Option => new Option('--id <id>', 'lab id, [a-z0-9]{1,8}').default(DEFAULT_ID);

  lab
    .command('up')
    .description('build the lab: a node namespace, one namespace per pod, an external namespace, responders and probers')
    .addOption(new Option('--manifests <paths...>', 'YAML/JSON files or folders (recursive)').makeOptionMandatory())
    .addOption(id())
    .option('--node-name <name>', 'the Node object whose addresses the node gets (default: the first Node)')
    .option('--ports <list>', 'extra ports every pod answers on, TCP and UDP (comma-separated)', DEFAULT_LAB_PORTS.join(','))
    .option('--bridge', 'pods on a Linux bridge cni0, Flannel style (default: a routed veth each, Calico style)')
    .action(async (o: UpOptions) => setResult(await runLabUp(io, o)));

  lab
    .command('probe')
    .description('one connection attempt inside the lab; exit 0 connected, 1 not connected, 2 error')
    .requiredOption('--from <NS/POD|IP>', 'source pod, node address or external address (198.19.0.0/16, 2001:2:0:1::/64)')
    .requiredOption('--to <NS/POD|IP>', 'destination pod or address')
    .requiredOption('--port <n>', 'destination port')
    .option('--protocol <TCP|UDP>', 'protocol', 'TCP')
    .option('--timeout <ms>', 'timeout in milliseconds', '1000')
    .option('--family <4|6>', 'address family when both endpoints have both')
    .addOption(id())
    .option('--json', 'machine-readable output on stdout')
    .action(async (o: ProbeOptions) => setResult(await runLabProbe(io, o)));

  lab
    .command('matrix')
    .description('probe every ordered pair of pods (a pod with itself included)')
    .requiredOption('--port <n>', 'destination port')
    .option('--protocol <TCP|UDP>', 'protocol', 'TCP')
    .option('--family <4|6>', 'address family', '4')
    .option('--timeout <ms>', 'timeout of each probe in milliseconds', '1000')
    .addOption(id())
    .option('--json', 'machine-readable output on stdout: {"ns/from": {"ns/to": true|false}}')
    .action(async (o: MatrixOptions) => setResult(await runLabMatrix(io, o)));

  lab
    .command('down')
    .description('stop the processes, delete every np-ID-* namespace and the state directory (idempotent)')
    .addOption(id())
    .action(async (o: { id: string }) => setResult(await runLabDown(io, o)));
}

function parsePorts(text: string): number[] {
  const parts = text.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (parts.length === 0) throw new NetpoldError('NETPOLD_E_USAGE', `--ports: expected a comma-separated list of ports, got ${JSON.stringify(text)}`);
  return parts.map((p) => {
    const n = Number(p);
    if (!/^\d+$/.test(p) || n < 1 || n > 65535) throw new NetpoldError('NETPOLD_E_USAGE', `--ports: ${p} is not a port from 1 to 65535`);
    return n;
  });
}

function parseTimeout(text: string | undefined): number {
  const n = Number(text);
  if (text === undefined || !/^\d+$/.test(text) || n < 1 || n > 60_000) {
    throw new NetpoldError('NETPOLD_E_USAGE', `--timeout must be 1 to 60000 milliseconds, not ${text ?? '(missing)'}`);
  }
  return n;
}

export async function runLabUp(io: Io, o: UpOptions): Promise<number> {
  requireLab();
  const ports = parsePorts(o.ports);
  const state = loadOrReport(io, o.manifests, false);
  if (!state) return EXIT_INPUT;
  const lab = await Lab.up({ id: o.id, state, ports, ...(o.nodeName !== undefined ? { nodeName: o.nodeName } : {}), bridge: o.bridge === true, log: (t) => io.err(t) });
  const node = lab.state.nodeName ? `node ${lab.state.nodeName}: ${lab.nodeAddresses.join(', ') || 'no address'}` : 'no Node object';
  io.out(`lab ${lab.id} is up`);
  io.out(`node namespace      ${lab.nodeNamespace} (${node})`);
  io.out(`external namespace  ${lab.extNamespace} (sources ${EXT_RANGES.join(', ')})`);
  io.out(`ports               ${lab.state.ports.join(', ')} (TCP and UDP) plus each pod's declared ports`);
  io.out('');
  const rows = lab.pods.map((p) => [`${p.namespace}/${p.name}`, p.hostNetwork ? `${p.netns} (host network)` : p.netns, p.ips.join(', ') || '-']);
  const head = ['POD', 'NETNS', 'ADDRESSES'];
  const w = [0, 1].map((i) => Math.max(head[i]!.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [head, ...rows]) io.out(`${r[0]!.padEnd(w[0]!)}  ${r[1]!.padEnd(w[1]!)}  ${r[2]}`);
  io.out('');
  const first = lab.pods.find((p) => !p.hostNetwork);
  if (first) io.out(`try:  netpold lab probe --id ${lab.id} --from ${first.namespace}/${first.name} --to ${first.namespace}/${first.name} --port ${lab.state.ports[0] ?? 80}`);
  io.out(`stop: netpold lab down --id ${lab.id}`);
  return EXIT_OK;
}

export function formatProbe(r: ProbeResult): string {
  const ep = (label: string, addr: string): string => (label === addr ? addr : `${label} (${addr})`);
  const detail = r.result === 'connected' ? `reply ${JSON.stringify(r.reply ?? '')}` : (r.error ?? '');
  return `${r.result.padEnd(9)} ${ep(r.from, r.src)} -> ${ep(r.to, r.dst)} ${r.protocol}/${r.port}  ${r.ms.toFixed(1)} ms  ${detail}`.trimEnd();
}

export async function runLabProbe(io: Io, o: ProbeOptions): Promise<number> {
  requireLab();
  const protocol = parseProtocol(o.protocol);
  if (protocol === 'SCTP') throw new NetpoldError('NETPOLD_E_USAGE', '--protocol: the lab probes TCP or UDP');
  const port = parsePort(o.port);
  const family = parseFamily(o.family);
  const timeoutMs = parseTimeout(o.timeout);
  const lab = Lab.open(o.id);
  const r = await lab.probe(o.from, o.to, port, protocol, { timeoutMs, ...(family ? { family } : {}) });
  io.out(o.json ? JSON.stringify(r) : formatProbe(r));
  return r.result === 'connected' ? EXIT_OK : EXIT_DENIED;
}

export async function runLabMatrix(io: Io, o: MatrixOptions): Promise<number> {
  requireLab();
  const protocol = parseProtocol(o.protocol);
  if (protocol === 'SCTP') throw new NetpoldError('NETPOLD_E_USAGE', '--protocol: the lab probes TCP or UDP');
  const port = parsePort(o.port);
  const family = parseFamily(o.family) ?? 4;
  const timeoutMs = parseTimeout(o.timeout);
  const lab = Lab.open(o.id);
  const m = await lab.matrix(port, protocol, { family, timeoutMs });
  io.out(o.json ? JSON.stringify(m) : formatMatrix(m).replace('ok = allowed, -- = denied', 'ok = connected, -- = not connected'));
  return EXIT_OK;
}

export async function runLabDown(io: Io, o: { id: string }): Promise<number> {
  const r = await Lab.downById(o.id);
  if (r.namespaces.length === 0 && r.processes === 0 && !r.stateDir) io.out(`lab ${o.id}: nothing to remove`);
  else io.out(`lab ${o.id}: stopped ${r.processes} process(es), deleted ${r.namespaces.length} namespace(s)${r.stateDir ? ' and the state directory' : ''}`);
  return EXIT_OK;
}
