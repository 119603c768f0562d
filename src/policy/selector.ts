// Label selectors at compile time: matching one label set, a canonical key for the selector
// cache, and the label postings used to avoid testing every identity against every selector.
import type { LabelSelector, Labels } from '../model/types.js';

/**
 * metav1.LabelSelector semantics: "The requirements are ANDed." matchLabels {k: v} is the
 * requirement `k In (v)`. NotIn and DoesNotExist also match label sets without the key.
 */
export function selectorMatches(sel: LabelSelector, labels: Labels): boolean {
  for (const k in sel.matchLabels) {
    if (labels[k] !== sel.matchLabels[k]) return false;
  }
  for (const r of sel.matchExpressions) {
    const v = Object.prototype.hasOwnProperty.call(labels, r.key) ? labels[r.key] : undefined;
    switch (r.operator) {
      case 'In':
        if (v === undefined || !r.values.includes(v)) return false;
        break;
      case 'NotIn':
        if (v !== undefined && r.values.includes(v)) return false;
        break;
      case 'Exists':
        if (v === undefined) return false;
        break;
      case 'DoesNotExist':
        if (v !== undefined) return false;
        break;
    }
  }
  return true;
}

export function isEmptySelector(sel: LabelSelector): boolean {
  for (const _ in sel.matchLabels) return false;
  return sel.matchExpressions.length === 0;
}

/** A canonical string for a selector: equal selectors (in meaning) get equal keys. */
export function selectorKey(sel: LabelSelector): string {
  const parts: string[] = [];
  for (const k of Object.keys(sel.matchLabels).sort()) parts.push(`${k} In (${sel.matchLabels[k]})`);
  for (const r of sel.matchExpressions) {
    parts.push(`${r.key} ${r.operator} (${[...new Set(r.values)].sort().join(',')})`);
  }
  return parts.sort().join(';');
}

/** Canonical key of a label set (identity key part). */
export function labelsKey(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  let s = '';
  for (const k of keys) s += `${k}=${labels[k]}\u0000`;
  return s;
}

/**
 * Postings for a "positive" requirement of a selector (one every match must satisfy), used to
 * narrow candidates: `key=value` for matchLabels and single-valued In, `key` for Exists and
 * multi-valued In. Returns undefined when the selector has none (NotIn/DoesNotExist only, or empty).
 */
export function positivePostingKeys(sel: LabelSelector): string[][] {
  const out: string[][] = [];
  for (const k in sel.matchLabels) out.push([`${k}=${sel.matchLabels[k]}`]);
  for (const r of sel.matchExpressions) {
    if (r.operator === 'In') out.push(r.values.map((v) => `${r.key}=${v}`));
    else if (r.operator === 'Exists') out.push([`${r.key}`]);
  }
  return out;
}
