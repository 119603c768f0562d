// Settings from three places, one table: command-line flags, environment variables (NETPOLD_*,
// one per flag) and a YAML config file (the long flag names as keys). Precedence: flag > env >
// file > default. Every value given anywhere is validated, also one a higher source overrides,
// and every problem is collected: the caller reports them together, once.
import type { Command } from 'commander';
import { Option } from 'commander';
import { parse as parseYaml } from 'yaml';
import type { Environment } from './env.js';

export type OptionKind = 'string' | 'int' | 'number' | 'bool' | 'list' | 'enum';
export type OptionValue = string | number | boolean | readonly string[];
export type Origin = 'flag' | 'env' | 'file' | 'default';

export interface OptionSpec {
  /** The long flag without dashes, also the config-file key: `metrics-address`. */
  readonly name: string;
  readonly kind: OptionKind;
  readonly description: string;
  /** Commander's argument placeholder: `<addr>` (`<paths...>` for lists). */
  readonly arg?: string;
  readonly default?: OptionValue;
  /** enum: the allowed values. */
  readonly values?: readonly string[];
  /** int/number: inclusive bounds. */
  readonly min?: number;
  readonly max?: number;
  /** A bool defaulting to true, turned off on the command line with --no-NAME. */
  readonly negatable?: boolean;
  /** Not a config-file key (the --config option itself). */
  readonly notInFile?: boolean;
}

export interface Resolved {
  readonly values: Readonly<Record<string, OptionValue | undefined>>;
  readonly origins: Readonly<Record<string, Origin | undefined>>;
  readonly problems: readonly string[];
  /** Not errors: NETPOLD_* variables that name no setting (reported in the log). */
  readonly warnings: readonly string[];
}

export interface Inputs {
  /** Values given on the command line, by option name (only those given). */
  readonly flags: Readonly<Record<string, unknown>>;
  readonly env: Environment;
  /** The config file's mapping, if one is used. */
  readonly file?: { readonly path: string; readonly values: Readonly<Record<string, unknown>> } | undefined;
}

export function envName(name: string): string {
  return `NETPOLD_${name.toUpperCase().replace(/-/g, '_')}`;
}

export function propName(name: string): string {
  return name.replace(/-([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

/** Environment variables that are not settings (read elsewhere, or never an error). */
const OTHER_ENV = new Set(['NETPOLD_DEBUG']);

export function resolveOptions(specs: readonly OptionSpec[], inputs: Inputs): Resolved {
  const values: Record<string, OptionValue | undefined> = {};
  const origins: Record<string, Origin | undefined> = {};
  const problems: string[] = [];
  const warnings: string[] = [];
  const file = inputs.file;
  if (file) {
    const known = new Set(specs.filter((s) => !s.notInFile).map((s) => s.name));
    for (const key of Object.keys(file.values)) {
      if (known.has(key)) continue;
      const spec = specs.find((s) => s.name === key);
      const hint = spec?.notInFile ? ' (it cannot be set in the config file)' : suggest(key, [...known]);
      problems.push(`${file.path}: unknown setting ${JSON.stringify(key)}${hint}`);
    }
  }
  const envNames = new Set(specs.map((s) => envName(s.name)));
  for (const k of Object.keys(inputs.env)) {
    if (k.startsWith('NETPOLD_') && !envNames.has(k) && !OTHER_ENV.has(k)) warnings.push(`environment variable ${k} is not a netpold setting${suggest(k, [...envNames])}; ignored`);
  }
  for (const spec of specs) {
    const candidates: [Origin, unknown, string][] = [];
    if (Object.prototype.hasOwnProperty.call(inputs.flags, spec.name)) candidates.push(['flag', inputs.flags[spec.name], spec.negatable && inputs.flags[spec.name] === false ? `--no-${spec.name}` : `--${spec.name}`]);
    const ev = inputs.env[envName(spec.name)];
    if (ev !== undefined && ev !== '') candidates.push(['env', ev, `${envName(spec.name)} (environment)`]);
    if (file && !spec.notInFile && Object.prototype.hasOwnProperty.call(file.values, spec.name)) candidates.push(['file', file.values[spec.name], `${file.path}: ${spec.name}`]);
    let chosen = false;
    for (const [origin, raw, where] of candidates) {
      const r = parseValue(spec, raw, origin);
      if ('problem' in r) {
        problems.push(`${where} ${r.problem}`);
        continue;
      }
      if (!chosen) {
        values[spec.name] = r.value;
        origins[spec.name] = origin;
        chosen = true;
      }
    }
    // A value given but invalid does not fall back to a lower source: the problem is reported.
    if (!chosen && candidates.length === 0 && spec.default !== undefined) {
      values[spec.name] = spec.default;
      origins[spec.name] = 'default';
    }
  }
  return { values, origins, problems, warnings };
}

function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return String(v);
}

const INT_TEXT = /^(0x[0-9a-f]+|\d+)$/i;
const NUMBER_TEXT = /^(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?$/i;
const TRUE = ['true', '1', 'yes', 'on'];
const FALSE = ['false', '0', 'no', 'off'];

function parseValue(spec: OptionSpec, raw: unknown, origin: Origin): { value: OptionValue } | { problem: string } {
  const range = (): string => `${spec.min ?? 0} to ${spec.max ?? Number.MAX_SAFE_INTEGER}`;
  switch (spec.kind) {
    case 'string': {
      if (typeof raw !== 'string' || raw === '') return { problem: `must be a non-empty string, not ${show(raw)}` };
      return { value: raw };
    }
    case 'enum': {
      if (typeof raw !== 'string' || !spec.values!.includes(raw)) return { problem: `must be ${orList(spec.values!)}, not ${show(raw)}` };
      return { value: raw };
    }
    case 'int': {
      let n: number;
      if (typeof raw === 'number' && origin === 'file') n = raw;
      else if (typeof raw === 'string' && INT_TEXT.test(raw)) n = Number(raw);
      else return { problem: `must be an integer from ${range()}, not ${show(raw)}` };
      if (!Number.isSafeInteger(n) || (spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) return { problem: `must be an integer from ${range()}, not ${show(raw)}` };
      return { value: n };
    }
    case 'number': {
      let n: number;
      if (typeof raw === 'number' && origin === 'file') n = raw;
      else if (typeof raw === 'string' && NUMBER_TEXT.test(raw)) n = Number(raw);
      else return { problem: `must be a number from ${range()}, not ${show(raw)}` };
      if (!Number.isFinite(n) || (spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) return { problem: `must be a number from ${range()}, not ${show(raw)}` };
      return { value: n };
    }
    case 'bool': {
      if (typeof raw === 'boolean') return { value: raw };
      if (typeof raw === 'string' && origin !== 'file') {
        if (TRUE.includes(raw.toLowerCase())) return { value: true };
        if (FALSE.includes(raw.toLowerCase())) return { value: false };
      }
      return { problem: `must be true or false, not ${show(raw)}` };
    }
    case 'list': {
      let items: unknown[];
      if (Array.isArray(raw)) items = raw;
      else if (typeof raw === 'string') items = origin === 'env' ? raw.split(',').map((s) => s.trim()) : [raw];
      else return { problem: `must be a list of strings${origin === 'env' ? ' (comma-separated)' : ''}, not ${show(raw)}` };
      if (items.length === 0 || items.some((i) => typeof i !== 'string' || i === '')) return { problem: `must be a non-empty list of non-empty strings${origin === 'env' ? ' (comma-separated)' : ''}` };
      return { value: items as string[] };
    }
  }
}

function orList(v: readonly string[]): string {
  return v.length <= 2 ? v.join(' or ') : `${v.slice(0, -1).join(', ')} or ${v[v.length - 1]}`;
}

/** ` (did you mean x?)` for a near miss, else ''. */
function suggest(key: string, known: string[]): string {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const d = distance(key.toLowerCase(), k.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(key.length / 4)) ? ` (did you mean ${best}?)` : '';
}

function distance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length]!;
}

/** Parses a config file's text: a YAML mapping. Returns its values or a problem. */
export function parseConfigFile(path: string, text: string): { values: Record<string, unknown> } | { problem: string } {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    return { problem: `${path}: not valid YAML: ${(e as Error).message.split('\n')[0]}` };
  }
  if (doc === null || doc === undefined) return { values: {} };
  if (typeof doc !== 'object' || Array.isArray(doc)) return { problem: `${path}: must be a mapping of settings (the long flag names as keys)` };
  return { values: doc as Record<string, unknown> };
}

// ---------------------------------------------------------------------------------------------
// Commander

function defaultText(spec: OptionSpec): string {
  const env = envName(spec.name);
  if (spec.kind === 'bool') return spec.negatable ? ` (env ${env}=false)` : ` (env ${env}=true)`;
  const d = spec.default;
  const shown = d === undefined ? '' : `default: ${Array.isArray(d) ? d.join(',') : String(d)}; `;
  return ` (${shown}env ${env})`;
}

/** Adds the options to a command, with their defaults and variables in the help. No commander defaults: what was not given stays unset. */
export function addOptions(cmd: Command, specs: readonly OptionSpec[]): Command {
  for (const s of specs) {
    const flags = s.kind === 'bool' ? (s.negatable ? `--no-${s.name}` : `--${s.name}`) : `--${s.name} ${s.arg ?? (s.kind === 'list' ? '<values...>' : '<value>')}`;
    const o = new Option(flags, `${s.description}${defaultText(s)}`);
    cmd.addOption(o);
  }
  return cmd;
}

/** The values given on the command line (not commander's implied ones). */
export function givenFlags(cmd: Command, specs: readonly OptionSpec[]): Record<string, unknown> {
  const opts = cmd.opts() as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const s of specs) {
    const prop = propName(s.name);
    if (cmd.getOptionValueSource(prop) === 'cli') out[s.name] = opts[prop];
  }
  return out;
}
