// `netpold matrix`: the reachability truth table among all pods with an address of a family.
import type { PodInfo } from '../model/types.js';
import { compile } from '../policy/compile.js';
import { Decision, FlowKey, decide } from '../policy/decide.js';
import { flowFromText } from '../policy/explain.js';
import type { PolicySnapshot } from '../policy/snapshot.js';
import type { Protocol } from '../model/types.js';
import { EXIT_INPUT, EXIT_OK, familyOf, loadOrReport, parseFamily, parsePort, parseProtocol, type Io } from './common.js';

export interface MatrixOptions {
  manifests: string[];
  port: string;
  protocol?: string;
  family?: string;
  json?: boolean;
  allowErrors?: boolean;
  node?: string;
}

export type Matrix = Record<string, Record<string, boolean>>;

/** Computes the matrix: every ordered pair of pods with a `family` address, a pod with itself included. */
export function computeMatrix(snap: PolicySnapshot, pods: readonly PodInfo[], protocol: Protocol, port: number, family: 4 | 6): Matrix {
  const members = pods
    .filter((p) => !p.hostNetwork && p.ips.some((ip) => familyOf(ip) === family))
    .sort((a, b) => (a.namespace === b.namespace ? cmp(a.name, b.name) : cmp(a.namespace, b.namespace)));
  const ipOf = (p: PodInfo): string => p.ips.find((ip) => familyOf(ip) === family)!;
  const flow = new FlowKey();
  const d = new Decision();
  const out: Matrix = {};
  for (const a of members) {
    const row: Record<string, boolean> = {};
    for (const b of members) {
      const err = flowFromText(flow, protocol, ipOf(a), ipOf(b), port);
      if (err) throw new Error(err);
      row[`${b.namespace}/${b.name}`] = decide(snap, flow, d).allowed;
    }
    out[`${a.namespace}/${a.name}`] = row;
  }
  return out;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** An aligned grid: rows are sources, columns destinations (numbered to keep it narrow). */
export function formatMatrix(m: Matrix): string {
  const names = Object.keys(m);
  if (names.length === 0) return '(no pods with an address of this family)';
  const w = Math.max(...names.map((n) => n.length));
  const lines = ['destinations:'];
  names.forEach((n, i) => lines.push(`  ${String(i + 1).padStart(3)}  ${n}`));
  lines.push('');
  const colW = Math.max(3, String(names.length).length + 1);
  lines.push(`${'source \\ destination'.padEnd(w)} ${names.map((_, i) => String(i + 1).padStart(colW)).join('')}`);
  for (const a of names) {
    lines.push(`${a.padEnd(w)} ${names.map((b) => (m[a]![b] ? 'ok' : '--').padStart(colW)).join('')}`);
  }
  lines.push('', 'ok = allowed, -- = denied');
  return lines.join('\n');
}

export function runMatrix(io: Io, o: MatrixOptions): number {
  const protocol = parseProtocol(o.protocol);
  const port = parsePort(o.port);
  const family = parseFamily(o.family) ?? 4;
  const state = loadOrReport(io, o.manifests, o.allowErrors === true);
  if (!state) return EXIT_INPUT;
  const snap = compile(state, { localNode: o.node });
  const m = computeMatrix(snap, state.pods, protocol, port, family);
  io.out(o.json ? JSON.stringify(m) : formatMatrix(m));
  return EXIT_OK;
}
