// Differential test of kernel enforcement: the nftables ruleset of `compile --target nft`, loaded
// into a lab's node namespace (no agent), must give the live reachability matrix that decide()
// computes (`netpold matrix`), for the demo, seed fixture combinations and random clusters.
// Needs root, iproute2 and nftables; skips with a message naming what is missing otherwise (in CI,
// a missing prerequisite is a failure).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { computeMatrix } from '../src/cli/matrix.js';
import { Lab } from '../src/lab/lab.js';
import { labRequirementsMissing } from '../src/lab/sys.js';
import type { ClusterState, Protocol } from '../src/model/types.js';
import { compile } from '../src/policy/compile.js';
import { renderNftEnforcement } from '../src/policy/nft-target.js';
import { loadManifestPaths } from '../src/source/files/load.js';
import { arbCluster, arbClusterWithFlows } from './support/arbitraries.js';
import { toManifests } from '../src/model/manifests.js';

const root = new URL('..', import.meta.url).pathname;
const seeds = join(root, 'test/fixtures/seeds');
const missing = labRequirementsMissing();
const skip = missing.length > 0;
if (skip) console.warn(`kernel differential tests skipped: they need ${missing.join(', ')}`);

describe.runIf(skip && process.env.CI === 'true')('kernel-diff prerequisites in CI', () => {
  it('are all present', () => {
    expect(missing).toEqual([]);
  });
});

const TABLE = 'netpold_kdiff';
const id = () => `k${Math.floor(Math.random() * 1e7)}`;
type Probe = readonly [port: number, protocol: Protocol & ('TCP' | 'UDP'), family: 4 | 6];

function loaded(manifests: string[]): ClusterState {
  const { state, errors } = loadManifestPaths(manifests);
  expect(errors).toEqual([]);
  return state;
}

/**
 * Builds a lab from `manifests`, loads the ruleset into its node namespace, and compares the live
 * matrix with the computed one for each probe; then deletes the table. Returns the live cells.
 */
async function differential(manifests: string[], probes: readonly Probe[]): Promise<boolean[]> {
  const state = loaded(manifests);
  const snap = compile(state);
  const ruleset = renderNftEnforcement(snap, { table: TABLE, protocols: ['TCP', 'UDP', 'SCTP'], localPods: 'all' });
  const ports = [...new Set(probes.map(([p]) => p))];
  const lab = await Lab.up({ id: id(), manifests, ports });
  const cells: boolean[] = [];
  try {
    const add = await lab.exec(lab.nodeNamespace, ['nft', '-f', '-'], { input: ruleset, timeoutMs: 20_000 });
    expect(add.code, `nft -f: ${add.stderr}`).toBe(0);
    for (const [port, protocol, family] of probes) {
      const live = await lab.matrix(port, protocol, { family, timeoutMs: 700 });
      expect(live, `${protocol}/${port} IPv${family}`).toEqual(computeMatrix(snap, state.pods, protocol, port, family));
      cells.push(...Object.values(live).flatMap((row) => Object.values(row)));
    }
    const del = await lab.exec(lab.nodeNamespace, ['nft', 'delete', 'table', 'inet', TABLE], { timeoutMs: 10_000 });
    expect(del.code, del.stderr).toBe(0);
  } finally {
    await lab.down();
  }
  return cells;
}

// ---------------------------------------------------------------------------------------------
// The serializer the random cases go through (no root needed).

/** A random cluster the lab can build: valid policies only (the lab refuses manifest errors). */
const arbLabCluster = arbClusterWithFlows(0, { minPods: 3, maxPods: 6, minPolicies: 1, maxPolicies: 5 }).map(({ cluster }) => ({
  ...cluster,
  policies: cluster.policies.filter((p) => p.valid),
}));

describe('src/model/manifests: written clusters load back unchanged', () => {
  it('round-trips random clusters through YAML and the strict loader', () => {
    const dir = mkdtempSync(join(tmpdir(), 'netpold-kdiff-'));
    try {
      fc.assert(
        fc.property(arbCluster({ maxPolicies: 6 }), (c) => {
          const cluster = { ...c, policies: c.policies.filter((p) => p.valid) };
          const file = join(dir, 'cluster.yaml');
          writeFileSync(file, toManifests(cluster));
          const { state, errors } = loadManifestPaths([file]);
          expect(errors).toEqual([]);
          const byKey = <T extends { namespace?: string; name: string }>(xs: readonly T[]) =>
            [...xs].sort((a, b) => `${a.namespace ?? ''}/${a.name}`.localeCompare(`${b.namespace ?? ''}/${b.name}`));
          expect(byKey(state.pods)).toEqual(byKey(cluster.pods));
          expect(byKey(state.nodes)).toEqual(byKey(cluster.nodes));
          expect(byKey(state.policies)).toEqual(byKey(cluster.policies));
          for (const ns of cluster.namespaces) expect(state.namespaces).toContainEqual(ns);
        }),
        { numRuns: 100 },
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Live

describe.skipIf(skip)('kernel enforcement (nftables) equals netpold matrix, live', () => {
  it('the demo cluster: TCP 8080 and UDP 53, IPv4 and IPv6', async () => {
    const cells = await differential(
      [join(root, 'examples/demo')],
      [
        [8080, 'TCP', 4],
        [8080, 'TCP', 6],
        [53, 'UDP', 4],
        [53, 'UDP', 6],
        [5432, 'TCP', 4],
      ],
    );
    // Not everything allowed, nor everything denied: the comparison means something.
    expect(cells).toContain(true);
    expect(cells).toContain(false);
  }, 120_000);

  // As in test/agent.e2e.test.ts: cluster + policies, probes.
  const seedCases: [string, string[], Probe[]][] = [
    ['testweb: deny all, then allow testcurl', ['testweb', 'deny-all-for-testweb', 'allow-testcurl-for-testweb'], [[80, 'TCP', 4]]],
    ['dockercoins: other namespaces blocked, webui open', ['dockercoins', 'deny-from-other-namespaces', 'allow-webui'], [[80, 'TCP', 4]]],
    ['production: default deny + allow frontend', ['production', 'default-deny-ingress', 'allow-frontend'], [[8080, 'TCP', 4]]],
    ['production: namespace isolation', ['production', 'deny-cross-namespace'], [[8080, 'TCP', 4]]],
    ['production: database access', ['production', 'database-policy'], [[5432, 'TCP', 4]]],
    ['production: DNS egress', ['production', 'allow-dns'], [[53, 'UDP', 4], [53, 'TCP', 4]]],
    ['prod: deny external egress + customer api', ['prod', 'deny-external-egress', 'customer-api-allow-web'], [[80, 'TCP', 4]]],
    ['db: db-policy', ['db', 'db-policy'], [[3306, 'TCP', 4]]],
  ];
  it.each(seedCases)('seeds, %s', async (_name, files, probes) => {
    const manifests = [join(seeds, 'clusters', `${files[0]}.yaml`), ...files.slice(1).map((f) => join(seeds, `${f}.yaml`))];
    await differential(manifests, probes);
  }, 120_000);

  // Three random clusters (fixed seed), written as YAML: the first ones of the sample whose
  // computed matrix has both allowed and denied cells.
  const probes: Probe[] = [
    [80, 'TCP', 4],
    [53, 'UDP', 4],
    [8080, 'TCP', 6],
  ];
  const interesting = (c: ClusterState): boolean => {
    const snap = compile(c);
    const cells = probes.flatMap(([port, protocol, family]) => Object.values(computeMatrix(snap, c.pods, protocol, port, family)).flatMap((r) => Object.values(r)));
    return cells.includes(true) && cells.includes(false);
  };
  const randomClusters = fc.sample(arbLabCluster, { seed: 424242, numRuns: 40 }).filter(interesting).slice(0, 3);

  it('three random clusters were found', () => {
    expect(randomClusters.length).toBe(3);
  });

  it.each(randomClusters.map((c, i) => [i, c] as const))('random cluster %i', async (_i, cluster) => {
    const dir = mkdtempSync(join(tmpdir(), 'netpold-kdiff-'));
    try {
      writeFileSync(join(dir, 'cluster.yaml'), toManifests(cluster));
      await differential([dir], probes);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
