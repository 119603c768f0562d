// `netpold compile`: two modes. `--stats`: sizes of the compiled decision structure, compile time,
// heap. `--target nft`: the same policies as an nftables ruleset for kernel enforcement.
import { compile } from '../policy/compile.js';
import { DEFAULT_NFT_TABLE, NFT_TABLE_RE, buildNftPlan, renderNftPlan } from '../policy/nft-target.js';
import type { Protocol } from '../model/types.js';
import { PROTOCOLS } from '../model/types.js';
import { EXIT_INPUT, EXIT_OK, loadOrReport, type Io } from './common.js';
import { NetpoldError } from '../errors.js';

export interface CompileCmdOptions {
  manifests: string[];
  stats?: boolean;
  target?: string;
  table?: string;
  protocols?: string;
  json?: boolean;
  allowErrors?: boolean;
  node?: string;
}

export function runCompile(io: Io, o: CompileCmdOptions): number {
  if (o.stats && o.target !== undefined) throw new NetpoldError('NETPOLD_E_USAGE', 'compile takes either --stats or --target nft, not both');
  if (!o.stats && o.target === undefined) throw new NetpoldError('NETPOLD_E_USAGE', 'compile needs --stats or --target nft');
  if (o.target !== undefined) return runNftTarget(io, o);
  if (o.table !== undefined || o.protocols !== undefined) throw new NetpoldError('NETPOLD_E_USAGE', '--table and --protocols go with --target nft');
  const state = loadOrReport(io, o.manifests, o.allowErrors === true);
  if (!state) return EXIT_INPUT;
  const heapBefore = process.memoryUsage().heapUsed;
  const snap = compile(state, { localNode: o.node });
  const heapAfter = process.memoryUsage().heapUsed;
  const stats = { ...snap.stats, heapUsedBytes: heapAfter, snapshotHeapDeltaBytes: Math.max(0, heapAfter - heapBefore) };
  if (o.json) {
    io.out(JSON.stringify(stats));
  } else {
    const w = Math.max(...Object.keys(stats).map((k) => k.length));
    io.out(Object.entries(stats).map(([k, v]) => `${k.padEnd(w)}  ${typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(2) : v}`).join('\n'));
  }
  return EXIT_OK;
}

/** `--target nft`: the ruleset on stdout (with `--json`, the plan it is printed from). */
function runNftTarget(io: Io, o: CompileCmdOptions): number {
  if (o.target !== 'nft') throw new NetpoldError('NETPOLD_E_USAGE', `--target must be nft, not ${o.target}`);
  const table = o.table ?? DEFAULT_NFT_TABLE;
  if (!NFT_TABLE_RE.test(table)) {
    throw new NetpoldError('NETPOLD_E_USAGE', `--table ${table}: a letter, then up to 63 letters, digits or _`);
  }
  const protocols = parseProtocols(o.protocols);
  const state = loadOrReport(io, o.manifests, o.allowErrors === true);
  if (!state) return EXIT_INPUT;
  const snap = compile(state, { localNode: o.node });
  const plan = buildNftPlan(snap, { table, protocols, localPods: o.node !== undefined ? { nodeName: o.node } : 'all' });
  if (o.json) io.out(JSON.stringify(plan));
  else io.out(renderNftPlan(plan).trimEnd());
  return EXIT_OK;
}

function parseProtocols(text: string | undefined): Protocol[] {
  if (text === undefined) return [...PROTOCOLS];
  const out: Protocol[] = [];
  for (const item of text.split(',')) {
    const p = item.trim().toUpperCase();
    if (!(PROTOCOLS as readonly string[]).includes(p)) {
      throw new NetpoldError('NETPOLD_E_USAGE', `--protocols takes a comma-separated list of ${PROTOCOLS.join(', ')}, not ${text}`);
    }
    if (!out.includes(p as Protocol)) out.push(p as Protocol);
  }
  return out;
}
