// Label maps (metadata.labels, matchLabels) and metav1.LabelSelector.
import type { ErrorCode } from '../../errors.js';
import type { LabelSelector, Labels, SelectorOperator, SelectorRequirement } from '../../model/types.js';
import { checkFields, eachRecord, type Hint, readRecord, readRequiredString, readString } from './fields.js';
import { labelKeyProblem, labelValueProblem } from './names.js';
import { field, get, index, isAbsent, mapKey, type Reporter, show } from './report.js';

/**
 * Reads a map of label keys to label values. Invalid keys/values are reported with `code`.
 * The result has no prototype, so a label named `constructor` or `toString` can never be
 * confused with an inherited property by `in` or indexing.
 */
export function readLabelMap(r: Reporter, v: unknown, path: string, code: ErrorCode): Labels | undefined {
  if (isAbsent(v)) return emptyLabels();
  const rec = readRecord(r, v, path);
  if (rec === undefined) return undefined;
  const before = r.errorCount;
  const out: Record<string, string> = emptyLabels();
  for (const key of Object.keys(rec)) {
    const keyPath = mapKey(path, key);
    const keyProblem = labelKeyProblem(key);
    if (keyProblem !== undefined) {
      r.error(code, keyPath, `invalid label key ${show(key)}: ${keyProblem}`);
    }
    const value = readString(r, get(rec, key), keyPath);
    if (value === undefined) continue;
    const valueProblem = labelValueProblem(value);
    if (valueProblem !== undefined) {
      r.error(code, keyPath, `invalid label value ${show(value)}: ${valueProblem}`);
      continue;
    }
    out[key] = value;
  }
  return r.errorCount === before ? out : undefined;
}

export function emptyLabels(): Record<string, string> {
  return Object.create(null) as Record<string, string>;
}

const SELECTOR_FIELDS = ['matchLabels', 'matchExpressions'] as const;
const REQUIREMENT_FIELDS = ['key', 'operator', 'values'] as const;
const OPERATORS: readonly SelectorOperator[] = ['In', 'NotIn', 'Exists', 'DoesNotExist'];

/** `podSelector: {color: red}` is a common mistake: labels belong under matchLabels. */
const selectorHint: Hint = (key, value) => {
  if (key.toLowerCase() === 'matchlabels' || key.toLowerCase() === 'matchexpressions') return undefined;
  const scalar = typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean';
  const example = scalar ? `matchLabels: {${show(key)}: ${show(String(value))}}` : 'matchLabels';
  return `did you mean ${example}? A selector's labels go under matchLabels`;
};

/**
 * Reads a metav1.LabelSelector: "matchLabels is a map of {key,value} pairs ... The requirements
 * are ANDed." Returns undefined if any part is invalid. The caller handles absent/null.
 */
export function readSelector(r: Reporter, v: unknown, path: string): LabelSelector | undefined {
  const rec = readRecord(r, v, path);
  if (rec === undefined) return undefined;
  const before = r.errorCount;
  checkFields(r, rec, path, SELECTOR_FIELDS, selectorHint);
  const matchLabels = readLabelMap(r, get(rec, 'matchLabels'), field(path, 'matchLabels'), 'NETPOLD_E_SELECTOR');
  const exprPath = field(path, 'matchExpressions');
  const matchExpressions = eachRecord(r, get(rec, 'matchExpressions'), exprPath, (item, itemPath) =>
    readRequirement(r, item, itemPath),
  );
  if (r.errorCount !== before || matchLabels === undefined) return undefined;
  return { matchLabels, matchExpressions };
}

/**
 * "operator represents a key's relationship to a set of values. Valid operators are In, NotIn,
 * Exists and DoesNotExist." "If the operator is In or NotIn, the values array must be non-empty.
 * If the operator is Exists or DoesNotExist, the values array must be empty."
 */
function readRequirement(r: Reporter, rec: Record<string, unknown>, path: string): SelectorRequirement | undefined {
  const before = r.errorCount;
  checkFields(r, rec, path, REQUIREMENT_FIELDS);
  const key = readRequiredString(r, get(rec, 'key'), field(path, 'key'), 'key');
  if (key !== undefined) {
    const problem = labelKeyProblem(key);
    if (problem !== undefined) r.error('NETPOLD_E_SELECTOR', field(path, 'key'), `invalid label key ${show(key)}: ${problem}`);
  }
  const operator = readOperator(r, get(rec, 'operator'), field(path, 'operator'));
  const values = readValues(r, get(rec, 'values'), field(path, 'values'));
  if (operator !== undefined && values !== undefined) checkValuesFitOperator(r, operator, values, field(path, 'values'));
  if (r.errorCount !== before || key === undefined || operator === undefined || values === undefined) return undefined;
  return { key, operator, values };
}

function readOperator(r: Reporter, v: unknown, path: string): SelectorOperator | undefined {
  const op = readRequiredString(r, v, path, 'operator');
  if (op === undefined) return undefined;
  const found = OPERATORS.find((o) => o === op);
  if (found !== undefined) return found;
  const caseMatch = OPERATORS.find((o) => o.toLowerCase() === op.toLowerCase());
  const hint = caseMatch === undefined ? '' : ` (did you mean ${caseMatch}?)`;
  r.error('NETPOLD_E_SELECTOR', path, `unknown operator ${show(op)}${hint}; valid operators are ${OPERATORS.join(', ')}`);
  return undefined;
}

function readValues(r: Reporter, v: unknown, path: string): string[] | undefined {
  if (isAbsent(v)) return [];
  if (!Array.isArray(v)) {
    r.error('NETPOLD_E_FIELD_TYPE', path, `expected a list of strings, got ${show(v)}`);
    return undefined;
  }
  const before = r.errorCount;
  const out: string[] = [];
  v.forEach((item, i) => {
    const s = readString(r, item, index(path, i));
    if (s === undefined) return;
    const problem = labelValueProblem(s);
    if (problem !== undefined) r.error('NETPOLD_E_SELECTOR', index(path, i), `invalid label value ${show(s)}: ${problem}`);
    else out.push(s);
  });
  return r.errorCount === before ? out : undefined;
}

function checkValuesFitOperator(r: Reporter, op: SelectorOperator, values: readonly string[], path: string): void {
  const needsValues = op === 'In' || op === 'NotIn';
  if (needsValues && values.length === 0) {
    r.error('NETPOLD_E_SELECTOR', path, `operator ${op} needs a non-empty list of values`);
  } else if (!needsValues && values.length > 0) {
    r.error('NETPOLD_E_SELECTOR', path, `operator ${op} must not have values (got ${values.length})`);
  }
}
