// CLI fuzzing: random and mutated manifest files (broken YAML, wrong types, huge numbers, long
// strings, deep nesting, random bytes, valid objects with one field mutated, List kinds with
// garbage items) go through `check`, `matrix` and `compile --stats`, in-process.
//
// Properties, for every input and command:
//   - `run` never throws, and its exit code is 0, 1 or 2 (never 3, an internal error);
//   - stderr never contains a stack trace (/\n\s+at /) nor "internal error";
//   - every stderr line is an `error: ... [NETPOLD_E_...]` line, a `notice: ...` line or the
//     one summary line; the loader's errors are printed one line each, each naming its file;
//   - when the loader reports errors (without --allow-errors): exit 2 and nothing on stdout.
//
// Generated keys and names include control characters, line breaks and other characters that
// must not reach a terminal raw (the loader escapes user text in error and notice lines), and
// nesting goes far beyond the loader's limit (MAX_NESTING, 64 levels: deeper documents are
// rejected while parsing, before anything recurses), in-process as in a child process.
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { run } from '../src/cli/main.js';
import { loadManifestPaths } from '../src/source/files/load.js';

const tmp = mkdtempSync(join(tmpdir(), 'netpold-fuzz-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let seq = 0;

// ---------------------------------------------------------------------------------------------
// Valid objects, the material of mutations

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const BASES: Record<string, Json> = {
  namespace: { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'prod', labels: { env: 'prod', 'kubernetes.io/metadata.name': 'prod' } } },
  node: {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: 'node-a' },
    status: { addresses: [{ type: 'InternalIP', address: '198.18.255.1' }, { type: 'Hostname', address: 'node-a' }] },
  },
  pod: {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web', namespace: 'default', labels: { app: 'web', tier: 'front' } },
    spec: {
      nodeName: 'node-a',
      hostNetwork: false,
      containers: [{ name: 'web', image: 'nginx', ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }, { containerPort: 9090 }] }],
      initContainers: [{ name: 'side', restartPolicy: 'Always', ports: [{ name: 'metrics', containerPort: 9100 }] }],
    },
    status: { podIP: '198.18.0.10', podIPs: [{ ip: '198.18.0.10' }, { ip: '2001:2::10' }] },
  },
  policy: {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: 'web-policy', namespace: 'default' },
    spec: {
      podSelector: { matchLabels: { app: 'web' }, matchExpressions: [{ key: 'tier', operator: 'In', values: ['front', 'back'] }] },
      policyTypes: ['Ingress', 'Egress'],
      ingress: [
        {
          from: [
            { podSelector: { matchLabels: { app: 'db' } }, namespaceSelector: { matchExpressions: [{ key: 'env', operator: 'Exists' }] } },
            { ipBlock: { cidr: '198.18.0.0/15', except: ['198.18.1.0/24'] } },
          ],
          ports: [{ protocol: 'TCP', port: 'http' }, { protocol: 'UDP', port: 8000, endPort: 9000 }, { protocol: 'SCTP' }],
        },
      ],
      egress: [{ to: [{ ipBlock: { cidr: '2001:2::/48' } }, { namespaceSelector: {} }], ports: [{ port: 53, protocol: 'UDP' }] }],
    },
  },
};

// ---------------------------------------------------------------------------------------------
// Generators of file contents

/** Nesting depth used in-process (see deepNesting): far beyond the loader's limit of 64. */
const IN_PROCESS_DEPTH = 5000;

const CHARS = ['a', 'z', '0', '-', '.', '_', '/', ' ', 'é', 'ß', '😀', 'x.y/z', ':', '{', '"'];

/** A string of 0 to ~100 KB. */
const longString = fc
  .record({ len: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 60_000, max: 100_000 })), ch: fc.constantFrom(...CHARS) })
  .map(({ len, ch }) => ch.repeat(Math.ceil(len / ch.length)).slice(0, len));

/** Control characters, line breaks, separators, bidi controls, lone surrogates, backslashes. */
const NASTY = ['\n', '\r', '\t', '\u0000', '\u001b[31m', '\u007f', '\u009b', '\u2028', '\u2029', '\u202e', '\ufeff', '\ud800', '\\', '"', '\n    at y'];
const nastyString = fc.array(fc.oneof(fc.constantFrom(...NASTY), fc.string({ maxLength: 4 })), { minLength: 1, maxLength: 5 }).map((a) => a.join(''));

/** Values that are wrong somewhere: types, edge numbers, near-miss strings. */
const weird: fc.Arbitrary<Json> = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<Json>,
  fc.constantFrom<Json>(
    null, true, false, 0, -1, 1.5, 65535, 65536, 1e308, -1e308, Number.MAX_SAFE_INTEGER + 2, '', ' ', '80', '0080', 'http', 'HTTP',
    'In', 'in', 'Ingress', 'ingress', 'tcp', 'TCP', 'ICMP', '0.0.0.0/0', '::/0', '198.18.0.0/33', '198.18.0.1', '2001:2::/129', 'not-an-ip',
    [], {}, [null], [{}], { matchLabels: null }, { '': '' },
  ),
  longString,
  nastyString,
);

/** Keys, printable or not. */
const weirdKey = fc.oneof(
  fc.string({ maxLength: 20 }),
  nastyString,
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom('status', 'types', 'selector', 'to', 'from', 'port', 'matchLabels', 'cidr', 'containerPort', '__proto__', 'constructor', 'toString', 'kind', 'items'),
);

type Mutation = { op: 'set'; value: Json } | { op: 'delete' } | { op: 'add'; key: string; value: Json } | { op: 'wrap' };
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('set' as const), value: weird }),
  fc.constant({ op: 'delete' as const }),
  fc.record({ op: fc.constant('add' as const), key: weirdKey, value: weird }),
  fc.constant({ op: 'wrap' as const }),
);

/** Every container (object or list) in `v` with the key or index of each child. */
function slots(v: Json, out: { parent: Json[] | { [k: string]: Json }; key: string | number }[] = []): typeof out {
  if (Array.isArray(v)) v.forEach((c, i) => (out.push({ parent: v, key: i }), slots(c, out)));
  else if (v !== null && typeof v === 'object') for (const k of Object.keys(v)) out.push({ parent: v, key: k }), slots(v[k]!, out);
  return out;
}

/** A valid object with one field mutated (set to a wrong value, deleted, wrapped) or one field added. */
const mutated: fc.Arbitrary<Json> = fc
  .tuple(fc.constantFrom(...Object.keys(BASES)), fc.nat(), mutation)
  .map(([base, at, m]) => {
    const obj = structuredClone(BASES[base]!);
    const all = slots(obj);
    const s = all[at % all.length]!;
    const p = s.parent as Record<string | number, Json>;
    switch (m.op) {
      case 'set':
        p[s.key] = m.value;
        break;
      case 'delete':
        if (Array.isArray(p)) (p as Json[]).splice(s.key as number, 1);
        else delete p[s.key];
        break;
      case 'add': {
        const target = p[s.key];
        if (target !== null && typeof target === 'object' && !Array.isArray(target)) target[m.key] = m.value;
        else p[s.key] = { [m.key]: m.value };
        break;
      }
      case 'wrap':
        p[s.key] = [p[s.key]!];
        break;
    }
    return obj;
  });

/** A valid object with a long string, or one that must be escaped, at one place. */
const withLongString: fc.Arbitrary<Json> = fc
  .tuple(fc.constantFrom('name', 'namespace', 'label-key', 'label-value', 'cidr', 'port-name', 'kind', 'apiVersion', 'unknown-key', 'podIP'), fc.oneof(longString, nastyString))
  .map(([where, s]) => {
    const o = structuredClone(BASES['policy']) as any;
    const p = structuredClone(BASES['pod']) as any;
    switch (where) {
      case 'name': o.metadata.name = s; return o;
      case 'namespace': p.metadata.namespace = s; return p;
      case 'label-key': p.metadata.labels = { [s]: 'x' }; return p;
      case 'label-value': p.metadata.labels = { app: s }; return p;
      case 'cidr': o.spec.ingress[0].from[1].ipBlock.cidr = s; return o;
      case 'port-name': o.spec.ingress[0].ports[0].port = s; return o;
      case 'kind': o.kind = s; return o;
      case 'apiVersion': o.apiVersion = s; return o;
      case 'unknown-key': o.spec[s] = 1; return o;
      default: p.status.podIP = s; return p;
    }
  });

/** List kinds whose items are anything. */
const garbageList: fc.Arbitrary<Json> = fc
  .record({
    apiVersion: fc.constantFrom<Json>('v1', 'networking.k8s.io/v1', '', 5, null),
    kind: fc.constantFrom<Json>('List', 'PodList', 'NetworkPolicyList', 'NamespaceList', 'NodeList', 'DeploymentList', 'List', 'list'),
    items: fc.oneof(fc.array(fc.oneof(weird, mutated, fc.constant(BASES['pod']!)), { maxLength: 6 }), weird) as fc.Arbitrary<Json>,
  })
  .map((r) => r as Json);

/** Lists of lists, deeper than the loader's limit. */
const nestedLists = fc.integer({ min: 1, max: 8 }).map((depth) => {
  let v: Json = BASES['pod']!;
  for (let i = 0; i < depth; i++) v = { apiVersion: 'v1', kind: 'List', items: [v, null] };
  return v;
});

const serialize = (v: Json, how: 'yaml' | 'json' | 'flow'): string =>
  how === 'json' ? JSON.stringify(v) : how === 'flow' ? stringify(v, { collectionStyle: 'flow', lineWidth: 0 }) : stringify(v);

const objectText = fc
  .tuple(fc.array(fc.oneof(mutated, withLongString, garbageList, nestedLists, fc.constantFrom(...Object.values(BASES))), { minLength: 1, maxLength: 4 }), fc.constantFrom('yaml', 'json', 'flow') as fc.Arbitrary<'yaml' | 'json' | 'flow'>)
  .map(([objs, how]) => (how === 'json' && objs.length === 1 ? JSON.stringify(objs[0]) : objs.map((o) => serialize(o, how === 'json' ? 'flow' : how)).join('\n---\n')));

const TOKENS = [
  'apiVersion: v1', 'apiVersion: networking.k8s.io/v1', 'kind: Pod', 'kind: NetworkPolicy', 'kind: List', 'kind: Namespace', 'metadata:', 'name: x',
  'spec:', 'podSelector: {}', 'items:', 'items: [*a]', '- ', '  ', '\n', '\n---\n', '\n...\n', '{', '}', '[', ']', ',', ':', ': ', '"', "'",
  '&a ', '*a', '*b', '<<: *a', '!!binary ', '!!set ', '!!omap ', '!!str ', '!!int ', '!!float ', '!custom ', '? ', '|', '>-', '#c', 'null', '~',
  'true', '%YAML 1.2\n', '%TAG ! tag:x,2000:\n', '\t', '\uFEFF', '0x1F', '1e400', '.nan', '-.inf', '\\', '@', '`', '%', 'é', '\u0000',
];
const brokenYaml = fc.array(fc.constantFrom(...TOKENS), { maxLength: 60 }).map((a) => a.join(''));

/** Numbers the YAML core schema reads as huge, infinite, NaN, fractional or negative. */
const HUGE = ['1e400', '-1e400', '99999999999999999999999999999', '0x7fffffffffffffffffff', '.inf', '-.inf', '.nan', '-0', '0o777', '+80', '80.0', '8e1', '65536', '4294967296', '-80', '1_000'];
const hugeNumbers = fc.tuple(fc.constantFrom(...HUGE), fc.bigInt().map(String), fc.constantFrom('pod', 'policy', 'endPort', 'node')).map(([h, big, where]) => {
  const n = where === 'node' ? big : h;
  switch (where) {
    case 'pod':
      return `apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {n: x}}\nspec: {containers: [{name: c, ports: [{name: p1, containerPort: ${n}}]}]}\nstatus: {podIP: 198.18.0.77}\n`;
    case 'policy':
      return `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}, ingress: [{ports: [{port: ${n}}]}]}\n`;
    case 'endPort':
      return `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}, egress: [{ports: [{port: 80, endPort: ${n}}]}]}\n`;
    default:
      return `apiVersion: v1\nkind: Node\nmetadata: {name: ${big}}\nstatus: {addresses: [{type: InternalIP, address: ${big}}]}\n`;
  }
});

/**
 * Deep nesting, closed or not, in flow and block style, around and far beyond the loader's limit
 * of 64 levels (the YAML parser would overflow the stack at ~780 levels of `[`; the loader stops
 * it at 65, see also "5,000 levels of nesting" below, run in a child process). `a: b: c` lines
 * nest through the parser's error recovery, without indentation.
 */
const deepNesting = fc.tuple(fc.constantFrom('[', '{a: ', 'labels', 'block', 'list', 'a: b: c'), fc.integer({ min: 50, max: IN_PROCESS_DEPTH }), fc.boolean()).map(([kind, n, closed]) => {
  switch (kind) {
    case '[':
      return '['.repeat(n) + (closed ? ']'.repeat(n) : '');
    case '{a: ':
      return '{a: '.repeat(n) + (closed ? '1' + '}'.repeat(n) : '');
    case 'labels':
      return `apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: ${'['.repeat(n)}${closed ? ']'.repeat(n) : ''}\n`;
    case 'list':
      return `${'{apiVersion: v1, kind: List, items: ['.repeat(n)}${closed ? ']}'.repeat(n) : ''}`;
    case 'a: b: c':
      return 'a: b: c\n'.repeat(n) + (closed ? 'd: 1\n' : '');
    default:
      return Array.from({ length: n }, (_, i) => `${' '.repeat(i)}- `).join('\n') + (closed ? 'x' : '');
  }
});

const randomText = fc.string({ unit: 'binary', maxLength: 400 });
const randomBytes = fc.uint8Array({ maxLength: 4096 });

const content: fc.Arbitrary<string | Uint8Array> = fc.oneof(
  { arbitrary: objectText, weight: 6 },
  { arbitrary: brokenYaml, weight: 3 },
  { arbitrary: hugeNumbers, weight: 2 },
  { arbitrary: deepNesting, weight: 1 },
  { arbitrary: randomText, weight: 1 },
  { arbitrary: randomBytes, weight: 1 },
);

// ---------------------------------------------------------------------------------------------
// A case: files on disk and the command line flags

const CLUSTER = join(tmp, 'cluster.yaml');
writeFileSync(
  CLUSTER,
  [BASES['namespace'], BASES['node'], BASES['pod'], { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'db', labels: { app: 'db' } }, status: { podIP: '198.18.0.20' } }, BASES['policy']]
    .map((o) => stringify(o))
    .join('---\n'),
);

interface FileCase {
  ext: string;
  inFolder: boolean;
  data: string | Uint8Array;
}

const fileCase: fc.Arbitrary<FileCase> = fc.record({
  ext: fc.constantFrom('.yaml', '.yml', '.json', '.txt'),
  inFolder: fc.boolean(),
  data: content,
});

const ENDPOINTS = ['default/web', 'default/db', '198.18.0.10', '198.18.0.20', '198.19.0.1', '2001:2::10', 'prod/web', 'nope', '198.18.255.1'];

const caseArb = fc.record({
  files: fc.array(fileCase, { minLength: 1, maxLength: 3 }),
  withCluster: fc.boolean(),
  missingPath: fc.boolean(),
  allowErrors: fc.boolean(),
  json: fc.boolean(),
  family: fc.constantFrom(undefined, '4', '6'),
  node: fc.constantFrom(undefined, 'node-a'),
  protocol: fc.constantFrom('TCP', 'UDP', 'SCTP', 'udp'),
  port: fc.integer({ min: 1, max: 65535 }),
  from: fc.constantFrom(...ENDPOINTS),
  to: fc.constantFrom(...ENDPOINTS),
});
type Case = typeof caseArb extends fc.Arbitrary<infer T> ? T : never;

/** Writes the files of a case; returns the --manifests paths. */
function materialize(c: Case): string[] {
  const dir = join(tmp, `case-${seq++}`);
  const folder = join(dir, 'folder');
  mkdirSync(folder, { recursive: true });
  const paths: string[] = [];
  c.files.forEach((f, i) => {
    const file = join(f.inFolder ? folder : dir, `m${i}${f.ext}`);
    writeFileSync(file, f.data);
    if (!f.inFolder) paths.push(file);
  });
  if (c.files.some((f) => f.inFolder)) paths.push(folder);
  if (c.withCluster) paths.unshift(CLUSTER);
  if (c.missingPath) paths.push(join(dir, 'missing.yaml'));
  return paths;
}

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await run(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const ERROR_LINE = /^error: .* \[NETPOLD_E_[A-Z_]+\]$/;
const SUMMARY_LINE = /^\d+ error\(s\) in the manifests; nothing was evaluated/;

/** The properties, for one case and one command. */
async function checkCommand(c: Case, paths: string[], loaderErrors: number, argv: string[]): Promise<void> {
  const what = `${argv.join(' ')}`;
  let r: { code: number; out: string; err: string };
  try {
    r = await cli(argv);
  } catch (e) {
    throw new Error(`run threw on ${what}: ${String(e)}`);
  }
  expect([0, 1, 2], `${what}\n${r.err}`).toContain(r.code);
  expect(r.err, what).not.toMatch(/\n\s+at /);
  expect(r.err, what).not.toContain('internal error');
  const lines = r.err === '' ? [] : r.err.split('\n');
  for (const line of lines) {
    expect(ERROR_LINE.test(line) || line.startsWith('notice: ') || SUMMARY_LINE.test(line), `${what}: unexpected stderr line ${JSON.stringify(line.slice(0, 300))}`).toBe(true);
  }
  const errorLines = lines.filter((l) => ERROR_LINE.test(l));
  const fileLines = errorLines.filter((l) => paths.some((p) => l.startsWith(`error: ${p}`)));
  // One line per loader error, each naming its file; at most one more (a --from/--to that names
  // no pod), and only when evaluation went on.
  expect(fileLines.length, `${what}\n${r.err}`).toBe(loaderErrors);
  if (loaderErrors > 0 && !c.allowErrors) {
    expect(r.code, what).toBe(2);
    expect(r.out, what).toBe('');
    expect(errorLines.length, what).toBe(loaderErrors);
    expect(r.err, what).toMatch(new RegExp(`^${loaderErrors} error\\(s\\) in the manifests`, 'm'));
  } else {
    expect(errorLines.length - fileLines.length, what).toBeLessThanOrEqual(1);
    if (argv[0] !== 'check') expect(r.code, `${what}\n${r.err}`).toBe(0);
    if (r.code === 2) expect(r.err, what).toContain('[NETPOLD_E_UNKNOWN_ENDPOINT]');
    if (c.json && r.code !== 2) expect(() => JSON.parse(r.out), what).not.toThrow();
  }
}

async function checkCase(c: Case): Promise<void> {
  const paths = materialize(c);
  const loaded = loadManifestPaths(paths); // never throws
  const common = ['--manifests', ...paths];
  if (c.allowErrors) common.push('--allow-errors');
  if (c.json) common.push('--json');
  if (c.node) common.push('--node', c.node);
  const fam = c.family ? ['--family', c.family] : [];
  const n = loaded.errors.length;
  await checkCommand(c, paths, n, ['check', ...common, '--from', c.from, '--to', c.to, '--port', String(c.port), '--protocol', c.protocol, ...fam]);
  await checkCommand(c, paths, n, ['matrix', ...common, '--port', String(c.port), '--protocol', c.protocol, ...fam]);
  await checkCommand(c, paths, n, ['compile', ...common, '--stats']);
}

const baseCase: Case = {
  files: [],
  withCluster: true,
  missingPath: false,
  allowErrors: false,
  json: true,
  family: undefined,
  node: 'node-a',
  protocol: 'TCP',
  port: 80,
  from: 'default/web',
  to: 'default/db',
};

const one = (data: string | Uint8Array, ext = '.yaml'): FileCase[] => [{ ext, inFolder: false, data }];

// ---------------------------------------------------------------------------------------------

describe('CLI fuzz: check, matrix and compile --stats on random and mutated manifests', () => {
  it('never throw, exit 0/1/2, one coded line per loader error naming its file, no stack trace', async () => {
    await fc.assert(fc.asyncProperty(caseArb, checkCase), { numRuns: 150 });
  });

  it.each([
    [`${IN_PROCESS_DEPTH} levels of [`, '['.repeat(IN_PROCESS_DEPTH)],
    [`${IN_PROCESS_DEPTH} levels of [ closed`, '['.repeat(IN_PROCESS_DEPTH) + ']'.repeat(IN_PROCESS_DEPTH)],
    [`${IN_PROCESS_DEPTH} levels of {a:`, '{a: '.repeat(IN_PROCESS_DEPTH) + '1' + '}'.repeat(IN_PROCESS_DEPTH)],
    [`labels nested ${IN_PROCESS_DEPTH} deep`, `apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: ${'['.repeat(IN_PROCESS_DEPTH)}${']'.repeat(IN_PROCESS_DEPTH)}}\n`],
    ['a 100 KB name', `apiVersion: v1\nkind: Pod\nmetadata: {name: ${'a'.repeat(100_000)}}\n`],
    ['a 100 KB unknown key', `apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n${'k'.repeat(100_000)}: 1\n`],
    ['a 100 KB kind', `apiVersion: v1\nkind: ${'K'.repeat(100_000)}\n`],
    ['alias bomb', `a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n`],
    ['a List containing itself', `&l {apiVersion: v1, kind: List, items: [*l, *l]}\n`],
    ['merge key into a Pod', `base: &b {name: p}\n---\napiVersion: v1\nkind: Pod\nmetadata: {<<: *b, labels: {a: b}}\nstatus: {podIP: 198.18.0.99}\n`],
    ['!!binary, !!set, !!omap values', `apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: !!set {a, b}}\nspec: !!omap [{a: 1}]\nstatus: {podIP: !!binary aGVsbG8=}\n`],
    ['duplicate keys', `apiVersion: v1\nkind: Pod\nkind: Pod\nmetadata: {name: p}\n`],
    ['a NUL byte', 'apiVersion: v1\u0000\nkind: Pod\n'],
    ['random bytes (invalid UTF-8)', new Uint8Array([0xff, 0xfe, 0x00, 0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1])],
    ['a __proto__ key', `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"__proto__": "x"}, "__proto__": {"name": "q"}}}`],
  ] as const)('edge case: %s', async (_name, data) => {
    for (const allowErrors of [false, true]) await checkCase({ ...baseCase, allowErrors, files: one(data) });
  });

  it('a folder of many broken files and a missing path: every error reported, each naming its file', async () => {
    await checkCase({
      ...baseCase,
      missingPath: true,
      files: [
        { ext: '.yaml', inFolder: true, data: '{' },
        { ext: '.json', inFolder: true, data: '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "status": {"podIP": 5}}' },
        { ext: '.txt', inFolder: true, data: 'not read: not a manifest extension inside a folder [' },
        { ext: '.yml', inFolder: false, data: 'apiVersion: v1\nkind: PodList\nitems: [1, null, {metadata: {name: y}}, [], "s"]\n' },
      ],
    });
  });

  // Regression: user text that contains a line break was printed raw in an error line (field
  // paths carry unknown keys and label keys, the object reference carries metadata.name) and in
  // the skipped-kind notice (the kind), so one error spanned several lines, and a value such as
  // "x\n    at y" made stderr look like a stack trace. The loader now escapes it.
  it('user text with a line break or a terminal escape stays on one error line, escaped', async () => {
    const data =
      'apiVersion: v1\nkind: Pod\nmetadata:\n  name: "a\\n    at b"\n  labels: {"k\\n    at c": v}\n"x\\n    at y": 1\n"\\e[31mred": 2\n---\napiVersion: v1\nkind: "Foo\\n    at Bar\\u2028"\n';
    await checkCase({ ...baseCase, files: one(data) });
    const r = await cli(['check', '--manifests', CLUSTER, materialize({ ...baseCase, withCluster: false, files: one(data) })[0]!, '--from', 'default/web', '--to', 'default/db', '--port', '80']);
    expect(r.err).toContain('Pod default/a\\n    at b: metadata.labels[k\\n    at c]: ');
    expect(r.err).toContain(': x\\n    at y: unknown field "x\\n    at y"');
    expect(r.err).toContain(': \\u001b[31mred: unknown field "\\u001b[31mred"');
    expect(r.err).toContain('notice: skipped 1 object of kind Foo\\n    at Bar\\u2028 (v1)');
    expect(r.err).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029]/);
  });
});

// ---------------------------------------------------------------------------------------------
// 5,000 levels of nesting, through the installed command in a child process (dist/, built by
// `npm test`). The YAML parser recurses once per level: unbounded, it overflowed the stack, and
// when an overflow landed in V8's RegExp compiler the whole process aborted (a V8 fatal error,
// exit 134), which in-process would take the test runner down with it. The loader now stops
// parsing at 65 levels with one NETPOLD_E_PARSE error per file.

const root = new URL('..', import.meta.url).pathname;
const bin = join(root, 'bin/netpold.js');
const built = existsSync(join(root, 'dist/src/cli/main.js'));

function spawnCli(argv: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...argv], { encoding: 'utf8', timeout: 30_000, maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const DEEP: [string, string][] = [
  ['5,000 levels of [', '['.repeat(5000)],
  ['5,000 levels of [ closed', '['.repeat(5000) + ']'.repeat(5000)],
  ['5,000 levels of {a:', '{a: '.repeat(5000) + '1' + '}'.repeat(5000)],
  ['labels nested 5,000 deep', `apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: ${'['.repeat(5000)}${']'.repeat(5000)}}\n`],
];

describe.skipIf(!built)('5,000 levels of nesting (the installed command, in a child process)', () => {
  it.each(DEEP)('%s, one file: exit 2, one coded error naming the file, the line and the limit', (name, data) => {
    const dir = join(tmp, `deep-${seq++}`);
    mkdirSync(dir);
    const file = join(dir, 'deep.yaml');
    writeFileSync(file, data);
    const r = spawnCli(['compile', '--manifests', file, '--stats']);
    expect(r.status, `${name}\n${r.stderr.slice(0, 2000)}`).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).not.toMatch(/\n\s+at /);
    const lines = r.stderr.trimEnd().split('\n');
    const errors = lines.filter((l) => ERROR_LINE.test(l));
    expect(errors).toHaveLength(1);
    expect(errors[0]!.startsWith(`error: ${file}: document 1 nests lists and mappings more than 64 levels deep at line `), errors[0]).toBe(true);
    expect(errors[0]).toMatch(/ at line \d+, column \d+; netpold reads at most 64 levels, so the rest of the file is not read \[NETPOLD_E_PARSE\]$/);
    for (const l of lines) expect(ERROR_LINE.test(l) || SUMMARY_LINE.test(l), l).toBe(true);
  });

  // Regression: the second deeply nested file of one invocation aborted the process: "FATAL
  // ERROR: RegExpCompiler Allocation failed - process out of memory", exit 134, instead of exit 2
  // with NETPOLD_E_PARSE errors.
  it('two files of 5,000 levels of [: exit 2, one error per file (the process used to abort)', () => {
    const dir = join(tmp, `deep-${seq++}`);
    mkdirSync(dir);
    const a = join(dir, 'a.yaml');
    const b = join(dir, 'b.yaml');
    writeFileSync(a, '['.repeat(5000));
    writeFileSync(b, '['.repeat(5000));
    const r = spawnCli(['compile', '--manifests', a, b, '--stats']);
    expect(r.stderr).not.toContain('FATAL ERROR');
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    const errors = r.stderr.split('\n').filter((l) => ERROR_LINE.test(l));
    expect(errors.map((l) => l.slice(0, `error: ${a}`.length))).toEqual([`error: ${a}`, `error: ${b}`]);
    for (const l of errors) expect(l).toContain('more than 64 levels deep at line 1, column 65');
  });
});

