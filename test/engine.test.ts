// The compiled engine (compile + decide) against the hand-derived table and against the
// spec-literal reference evaluator on random clusters: any disagreement fails.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ClusterState } from '../src/model/types.js';
import { Compiler, compile } from '../src/policy/compile.js';
import { Decision, FlowKey, decide } from '../src/policy/decide.js';
import { flowFromText, reportDecision, type DecisionReport } from '../src/policy/explain.js';
import { referenceDecide, type RefFlow, type RefResult } from '../src/policy/reference.js';
import { POD_LABEL_VOCAB, arbClusterWithFlows, arbLabels } from './support/arbitraries.js';
import { cases } from './support/cases.js';

function engineReport(state: ClusterState, f: RefFlow, localNode?: string): DecisionReport {
  const snap = compile(state, { localNode });
  const key = new FlowKey();
  const err = flowFromText(key, f.protocol, f.srcIp, f.dstIp, f.dstPort);
  if (err) throw new Error(err);
  return reportDecision(snap, decide(snap, key, new Decision()));
}

/** The engine's answer in the reference's terms: verdict, each side, the first allowing rule. */
function asRef(r: DecisionReport): Partial<RefResult> {
  const out: Partial<RefResult> = { allowed: r.verdict === 'allow', egress: r.egress.status, ingress: r.ingress.status };
  if (r.egress.status === 'allowed') out.egressBy = [{ policy: r.egress.policy!, rule: r.egress.rule! }];
  if (r.ingress.status === 'allowed') out.ingressBy = [{ policy: r.ingress.policy!, rule: r.ingress.rule! }];
  return out;
}

/** The reference's answer reduced the same way (the engine names the first allowing rule). */
function refReduced(r: RefResult): Partial<RefResult> {
  const out: Partial<RefResult> = { allowed: r.allowed, egress: r.egress, ingress: r.ingress };
  if (r.egressBy) out.egressBy = r.egressBy.slice(0, 1);
  if (r.ingressBy) out.ingressBy = r.ingressBy.slice(0, 1);
  return out;
}

describe('engine: named table (same cases as the reference)', () => {
  it.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    for (const check of c.checks) {
      const label = `${check.flow.srcIp} -> ${check.flow.dstIp}:${check.flow.dstPort}/${check.flow.protocol}`;
      const got = asRef(engineReport(c.state, check.flow, check.opts?.localNode));
      // The hand-derived expectation, on the fields the case states...
      const want: Partial<RefResult> = { ...check.expect };
      if (want.egressBy) want.egressBy = want.egressBy.slice(0, 1);
      if (want.ingressBy) want.ingressBy = want.ingressBy.slice(0, 1);
      for (const k of Object.keys(want) as (keyof RefResult)[]) expect(got[k], `${label} ${k}`).toEqual(want[k]);
      // ...and everything the reference says.
      expect(got, label).toEqual(refReduced(referenceDecide(c.state, check.flow, check.opts)));
    }
  });
});

describe('engine: property test against the reference evaluator', () => {
  it('agrees on verdict, both sides and the allowing rule for random clusters and flows', () => {
    fc.assert(
      fc.property(arbClusterWithFlows(24), fc.option(fc.constantFrom('n1', 'n2'), { nil: undefined }), ({ cluster, flows }, localNode) => {
        const snap = compile(cluster, { localNode });
        const key = new FlowKey();
        const d = new Decision();
        for (const f of flows) {
          const err = flowFromText(key, f.protocol, f.srcIp, f.dstIp, f.dstPort);
          if (err) throw new Error(err);
          const got = asRef(reportDecision(snap, decide(snap, key, d)));
          const want = refReduced(referenceDecide(cluster, f, { localNode }));
          expect(got, `${f.srcIp} -> ${f.dstIp}:${f.dstPort}/${f.protocol}`).toEqual(want);
        }
      }),
      { numRuns: 400 },
    );
  });

  it('one snapshot answers the same flow the same way every time (scratch state does not leak)', () => {
    fc.assert(
      fc.property(arbClusterWithFlows(16), ({ cluster, flows }) => {
        const snap = compile(cluster);
        const key = new FlowKey();
        const first = flows.map((f) => {
          flowFromText(key, f.protocol, f.srcIp, f.dstIp, f.dstPort);
          return decide(snap, key, new Decision()).allowed;
        });
        const again = flows.map((f) => {
          flowFromText(key, f.protocol, f.srcIp, f.dstIp, f.dstPort);
          return decide(snap, key, new Decision()).allowed;
        }).reverse();
        expect(again.reverse()).toEqual(first);
      }),
      { numRuns: 100 },
    );
  });
});

describe('engine: pod-only recompiles reuse the previous compile and agree with a fresh one', () => {
  it('relabelled and removed pods give the same decisions as compiling from scratch', () => {
    const edit = fc.array(fc.oneof(fc.constant<'keep'>('keep'), fc.constant<'drop'>('drop'), arbLabels(POD_LABEL_VOCAB)), { maxLength: 12 });
    fc.assert(
      fc.property(arbClusterWithFlows(24), fc.array(edit, { minLength: 1, maxLength: 3 }), ({ cluster, flows }, steps) => {
        const compiler = new Compiler();
        compiler.compile(cluster);
        let current = cluster;
        for (const step of steps) {
          const pods = current.pods.flatMap((p, i) => {
            const e = step[i] ?? 'keep';
            if (e === 'keep') return [p];
            if (e === 'drop') return [];
            return [{ ...p, labels: e }];
          });
          current = { ...current, pods };
          const inc = compiler.compile(current);
          expect(inc.stats.incremental).toBe(true);
          const fresh = compile(current);
          const key = new FlowKey();
          for (const f of flows) {
            flowFromText(key, f.protocol, f.srcIp, f.dstIp, f.dstPort);
            const a = asRef(reportDecision(inc, decide(inc, key, new Decision())));
            const b = asRef(reportDecision(fresh, decide(fresh, key, new Decision())));
            expect(a, `${f.srcIp} -> ${f.dstIp}:${f.dstPort}/${f.protocol}`).toEqual(b);
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('a namespace or policy change takes the full path', () => {
    fc.assert(
      fc.property(arbClusterWithFlows(1), ({ cluster }) => {
        const compiler = new Compiler();
        compiler.compile(cluster);
        expect(compiler.compile({ ...cluster, policies: cluster.policies.slice().reverse() }).stats.incremental).toBe(cluster.policies.length <= 1);
        expect(compiler.compile({ ...cluster, namespaces: cluster.namespaces.map((n) => ({ ...n })) }).stats.incremental).toBe(false);
      }),
      { numRuns: 50 },
    );
  });
});
