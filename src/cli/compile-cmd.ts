// `netpold compile --stats`: sizes of the compiled decision structure, compile time, heap.
import { compile } from '../policy/compile.js';
import { EXIT_INPUT, EXIT_OK, loadOrReport, type Io } from './common.js';
import { NetpoldError } from '../errors.js';

export interface CompileCmdOptions {
  manifests: string[];
  stats?: boolean;
  json?: boolean;
  allowErrors?: boolean;
  node?: string;
}

export function runCompile(io: Io, o: CompileCmdOptions): number {
  if (!o.stats) throw new NetpoldError('NETPOLD_E_USAGE', 'compile needs --stats (the nft target comes with the kernel-enforcement benchmark)');
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
