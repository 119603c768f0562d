// Computed and live reachability matrices, for the end-to-end tests that compare them.
import type { ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { computeMatrix } from '../../src/cli/matrix.js';
import type { AgentProcess } from '../../src/lab/agent-process.js';
import { Lab } from '../../src/lab/lab.js';
import { packageRoot } from '../../src/lab/sys.js';
import type { Protocol } from '../../src/model/types.js';
import { compile } from '../../src/policy/compile.js';
import { loadManifestPaths } from '../../src/source/files/load.js';

/** What netpold computes for the manifests (which must load without errors). */
export function computed(manifests: string[], port: number, protocol: Protocol, family: 4 | 6, node?: string) {
  const { state, errors } = loadManifestPaths(manifests);
  expect(errors).toEqual([]);
  return computeMatrix(compile(state, { localNode: node }), state.pods, protocol, port, family);
}

/**
 * The live matrix, with cells that disagree with `expected` probed once more with a longer
 * timeout: on a loaded 2-core machine a probe can time out although the path is open. A real
 * disagreement persists.
 */
export async function liveMatrix(lab: Lab, port: number, protocol: Protocol, family: 4 | 6, expected: Record<string, Record<string, boolean>>) {
  const live = await lab.matrix(port, protocol, { family, timeoutMs: 700 });
  for (const [a, row] of Object.entries(live)) {
    for (const b of Object.keys(row)) {
      if (row[b] !== expected[a]?.[b]) row[b] = (await lab.probe(a, b, port, protocol, { family, timeoutMs: 3000 })).result === 'connected';
    }
  }
  return live;
}

/** The demo's probes: its TCP service port and its DNS port, both families. */
export const DEMO_PROBES = [
  [8080, 'TCP', 4],
  [8080, 'TCP', 6],
  [53, 'UDP', 4],
  [53, 'UDP', 6],
] as const;

/**
 * The lab's live matrix equals the computed one, and it has allowed and denied cells (so the
 * comparison means something).
 */
export async function expectLiveMatrix(lab: Lab, manifests: string[], port: number, protocol: Protocol, family: 4 | 6, node: string): Promise<void> {
  const want = computed(manifests, port, protocol, family, node);
  const live = await liveMatrix(lab, port, protocol, family, want);
  expect(live).toEqual(want);
  const cells = Object.values(live).flatMap((row) => Object.values(row));
  expect(cells).toContain(true);
  expect(cells).toContain(false);
}

/** A copy of examples/demo in a fresh temporary folder, and a lab built from it (node-a). */
export async function upDemoLab(id: string, options: { readonly bridge?: boolean } = {}): Promise<{ lab: Lab; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'netpold-e2e-'));
  cpSync(join(packageRoot(), 'examples/demo'), dir, { recursive: true });
  const lab = await Lab.up({ id, manifests: [dir], nodeName: 'node-a', ports: [8080, 53], ...options });
  return { lab, dir };
}

/** Undoes upDemoLab and what ran in it: processes killed, the agent stopped, lab and folder gone. */
export async function downDemoLab(procs: readonly ChildProcess[], agent: AgentProcess | undefined, lab: Lab | undefined, dir: string | undefined): Promise<void> {
  for (const p of procs) p.kill('SIGKILL');
  await agent?.stop();
  await lab?.down();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
}
