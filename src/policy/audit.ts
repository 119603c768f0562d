// Audit mode: decide every flow as usual, but let would-be denials through (and log them).
//
// The rule, per flow: a denied flow is let through when every side that denies it (the source
// pod's egress, the destination pod's ingress) is a pod of a namespace in audit mode — the
// namespace that owns the denying policies (a pod is only ever isolated by policies of its own
// namespace). A flow denied by an enforcing namespace's policy stays denied, even if the other
// side's namespace is in audit mode. `--mode audit` lets every flow through.
import { Side, type Decision } from './decide.js';
import type { PolicySnapshot } from './snapshot.js';

/** Per pod index of the snapshot: 1 when its namespace is in audit mode; null when none is. */
export function auditMask(snap: PolicySnapshot, auditNamespaces: ReadonlySet<string>): Uint8Array | null {
  if (auditNamespaces.size === 0) return null;
  const mask = new Uint8Array(snap.pods.length);
  let any = false;
  for (let i = 0; i < snap.pods.length; i++) {
    if (auditNamespaces.has(snap.pods[i]!.namespace)) {
      mask[i] = 1;
      any = true;
    }
  }
  return any ? mask : null;
}

/** For a denied decision: true when audit mode lets it through (see the rule above). */
export function auditLifts(mask: Uint8Array | null, d: Decision): boolean {
  if (mask === null || d.allowed) return false;
  if (d.egress === Side.Denied && (d.srcPod < 0 || mask[d.srcPod] !== 1)) return false;
  if (d.ingress === Side.Denied && (d.dstPod < 0 || mask[d.dstPod] !== 1)) return false;
  return true;
}
