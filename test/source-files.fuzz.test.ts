// Fuzzing the manifests-folder source: whatever the input (random JSON-ish values, random
// mutations of valid manifests, random bytes, huge or deeply nested values), loadManifestTexts
// never throws, every error carries a catalogued code and a file, and the state it returns
// keeps the model's invariants.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { ErrorCodes } from '../src/errors.js';
import { type LoadResult, loadManifestPaths, loadManifestTexts } from '../src/source/files/load.js';

const RUNS = 300;
const CODES = new Set<string>(Object.keys(ErrorCodes));

// ---------------------------------------------------------------------------------------------
// Invariants

function loadChecked(docs: { file: string; text: string }[]): LoadResult {
  let result: LoadResult | undefined;
  expect(() => {
    result = loadManifestTexts(docs);
  }).not.toThrow();
  const r = result!;
  checkInvariants(r, new Set(docs.map((d) => d.file)));
  return r;
}

function checkInvariants(r: LoadResult, files: ReadonlySet<string>): void {
  for (const e of r.errors) {
    expect(CODES.has(e.code), `unknown code ${e.code}`).toBe(true);
    expect(files.has(e.file), `error names file ${e.file}`).toBe(true);
    expect(typeof e.message === 'string' && e.message.length > 0).toBe(true);
    expect(e.message.length).toBeLessThan(2000);
    expect(e.object === undefined || typeof e.object === 'string').toBe(true);
    expect(e.path === undefined || typeof e.path === 'string').toBe(true);
  }
  for (const n of r.notices) expect(typeof n).toBe('string');
  const namespaces = new Set(r.state.namespaces.map((n) => n.name));
  expect(namespaces.size).toBe(r.state.namespaces.length);
  const podIps = new Set<string>();
  for (const p of r.state.pods) {
    expect(namespaces.has(p.namespace)).toBe(true);
    if (p.hostNetwork) continue;
    for (const ip of p.ips) {
      expect(podIps.has(ip), `pod IP ${ip} used twice`).toBe(false);
      podIps.add(ip);
    }
  }
  for (const p of r.state.policies) {
    expect(namespaces.has(p.namespace)).toBe(true);
    expect(p.policyTypes.length).toBeGreaterThan(0);
    expect(p.policyTypes.every((t) => t === 'Ingress' || t === 'Egress')).toBe(true);
    if (!p.valid) {
      expect(p.ingress).toEqual([]);
      expect(p.egress).toEqual([]);
      expect(r.errors.some((e) => e.object?.startsWith('NetworkPolicy'))).toBe(true);
    } else {
      expect(p.podSelector).toBeDefined();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Valid manifests to mutate

const VALID: Record<string, unknown>[] = [
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'prod', labels: { env: 'prod' } } },
  {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web', namespace: 'prod', labels: { app: 'web' } },
    spec: {
      nodeName: 'n1',
      hostNetwork: false,
      containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }] }],
      initContainers: [{ name: 's', restartPolicy: 'Always', ports: [{ name: 'metrics', containerPort: 9100 }] }],
    },
    status: { podIP: '10.0.0.1', podIPs: [{ ip: '10.0.0.1' }, { ip: 'fd00::1' }] },
  },
  { apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1' }, status: { addresses: [{ type: 'InternalIP', address: '192.0.2.1' }] } },
  {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: 'p', namespace: 'prod' },
    spec: {
      podSelector: { matchLabels: { app: 'web' }, matchExpressions: [{ key: 'tier', operator: 'In', values: ['a'] }] },
      policyTypes: ['Ingress', 'Egress'],
      ingress: [
        {
          from: [{ podSelector: { matchLabels: { app: 'api' } }, namespaceSelector: {} }, { ipBlock: { cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] } }],
          ports: [{ protocol: 'TCP', port: 80, endPort: 90 }, { port: 'http' }],
        },
      ],
      egress: [{ to: [{ ipBlock: { cidr: '2001:db8::/32' } }], ports: [{ protocol: 'UDP', port: 53 }] }],
    },
  },
  { apiVersion: 'v1', kind: 'List', items: [{ apiVersion: 'v1', kind: 'Service', metadata: { name: 's' } }] },
];

type Path = (string | number)[];

/** Every path into a value (objects and arrays), the root excluded. */
function allPaths(v: unknown, prefix: Path = [], out: Path[] = []): Path[] {
  if (Array.isArray(v)) {
    v.forEach((x, i) => {
      out.push([...prefix, i]);
      allPaths(x, [...prefix, i], out);
    });
  } else if (typeof v === 'object' && v !== null) {
    for (const [k, x] of Object.entries(v)) {
      out.push([...prefix, k]);
      allPaths(x, [...prefix, k], out);
    }
  }
  return out;
}

function deepNest(depth: number, leaf: unknown = 1): unknown {
  let v: unknown = leaf;
  for (let i = 0; i < depth; i++) v = i % 2 === 0 ? { a: v } : [v];
  return v;
}

/** Values that stress a validator: wrong types, extremes, huge and deep values. */
const weirdValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom(
    null, true, false, 0, -1, 0.5, 65535, 65536, 1e308, -1e308, 2 ** 53 + 2, Number.MAX_SAFE_INTEGER,
    Infinity, -Infinity, NaN, '', ' ', '80', 'Ingress', 'In', '10.0.0.0/8', '::ffff:1.2.3.4', '__proto__', 'constructor',
  ),
  fc.constantFrom('x'.repeat(70_000), 'a'.repeat(300), '\u0000\uffff\ud800', '{}[]&*!|>\'"%@`'),
  fc.integer({ min: 1, max: 300 }).map((d) => deepNest(d)),
  fc.string({ unit: 'binary', maxLength: 40 }),
);

type Mutation = { op: 'delete' | 'replace' | 'addKey'; at: number; value: unknown; key: string };

const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  op: fc.constantFrom('delete', 'replace', 'addKey'),
  at: fc.nat(),
  value: weirdValue,
  key: fc.oneof(fc.constantFrom('status', 'types', 'matchLabels', '__proto__', 'to', 'from', 'x'), fc.string({ maxLength: 10 })),
});

function mutate(base: unknown, m: Mutation): unknown {
  const root = structuredClone(base) as Record<string, unknown>;
  const paths = allPaths(root);
  const path = paths[m.at % Math.max(1, paths.length)];
  if (path === undefined || path.length === 0) return m.op === 'replace' ? m.value : root;
  let parent: unknown = root;
  for (const seg of path.slice(0, -1)) parent = (parent as Record<string | number, unknown>)[seg];
  const last = path[path.length - 1]!;
  const container = parent as Record<string | number, unknown>;
  if (m.op === 'delete') {
    if (Array.isArray(container)) container.splice(Number(last), 1);
    else delete container[last];
  } else if (m.op === 'replace') {
    container[last] = m.value;
  } else {
    const target = container[last];
    if (typeof target === 'object' && target !== null && !Array.isArray(target)) {
      Object.defineProperty(target, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
    }
  }
  return root;
}

/** Serialises as JSON or YAML; a value YAML cannot render falls back to JSON. */
function serialise(v: unknown, asYaml: boolean): string {
  if (asYaml) {
    try {
      return stringify(v, { aliasDuplicateObjects: false });
    } catch {
      // fall through
    }
  }
  return JSON.stringify(v) ?? 'null';
}

// ---------------------------------------------------------------------------------------------

describe('loadManifestTexts never throws', () => {
  it('the unmutated manifests are valid', () => {
    const r = loadChecked([{ file: 'base.yaml', text: VALID.map((v) => serialise(v, true)).join('---\n') }]);
    expect(r.errors).toEqual([]);
    expect(r.state.policies[0]!.valid).toBe(true);
  });

  it('random JSON values, as JSON and as YAML', () => {
    fc.assert(
      fc.property(fc.array(fc.jsonValue({ maxDepth: 6 }), { maxLength: 4 }), fc.boolean(), (values, asYaml) => {
        const text = values.map((v) => serialise(v, asYaml)).join(asYaml ? '---\n' : '\n');
        loadChecked([{ file: 'r.json', text }]);
      }),
      { numRuns: RUNS },
    );
  });

  it('random objects with apiVersion and kind of a read kind', () => {
    const kinds = fc.constantFrom(['v1', 'Namespace'], ['v1', 'Pod'], ['v1', 'Node'], ['networking.k8s.io/v1', 'NetworkPolicy'], ['v1', 'List']);
    fc.assert(
      fc.property(kinds, fc.dictionary(fc.constantFrom('metadata', 'spec', 'status', 'items', 'x'), weirdValue), ([apiVersion, kind], rest) => {
        loadChecked([{ file: 'k.yaml', text: serialise({ ...rest, apiVersion, kind }, true) }]);
      }),
      { numRuns: RUNS },
    );
  });

  it('random mutations of valid manifests', () => {
    fc.assert(
      fc.property(fc.array(mutationArb, { minLength: 1, maxLength: 3 }), fc.nat(VALID.length - 1), fc.boolean(), (muts, which, asYaml) => {
        let v: unknown = VALID[which];
        for (const m of muts) v = mutate(v, m);
        const docs = [{ file: 'a.yaml', text: VALID.map((x) => serialise(x, true)).join('---\n') }, { file: 'm.yaml', text: serialise(v, asYaml) }];
        const r1 = loadChecked(docs);
        const r2 = loadManifestTexts(docs);
        expect(JSON.stringify(r2)).toBe(JSON.stringify(r1)); // deterministic
      }),
      { numRuns: RUNS },
    );
  });

  it('random text and random bytes', () => {
    const text = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 200 }),
      fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b).toString('latin1')),
      fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b).toString('utf8')),
      fc.array(fc.constantFrom('---\n', 'a: ', '- ', '[', ']', '{', '}', '&x ', '*x', '!!set ', '? ', ': ', '\n  ', '"', "'", '#', '|', '>', '<<: ', 'kind: Pod\n', 'apiVersion: v1\n'), { maxLength: 60 }).map((a) => a.join('')),
    );
    fc.assert(
      fc.property(fc.array(text, { minLength: 1, maxLength: 3 }), (texts) => {
        loadChecked(texts.map((t, i) => ({ file: `f${i}.yaml`, text: t })));
      }),
      { numRuns: RUNS },
    );
  });

  it('nonsense arguments', () => {
    fc.assert(
      fc.property(fc.anything({ maxDepth: 2 }), (junk) => {
        expect(() => loadManifestTexts(junk as never)).not.toThrow();
        expect(() => loadManifestTexts([junk] as never)).not.toThrow();
      }),
      { numRuns: RUNS },
    );
    for (const junk of [null, undefined, 5, {}, [null], [5], [''], [{}]]) {
      expect(() => loadManifestPaths(junk as never)).not.toThrow();
    }
  });
});

describe('huge and deep input', () => {
  const DEPTH = 10_000;
  const policyWith = (selector: string): string =>
    `{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p"}, "spec": {"podSelector": ${selector}}}`;

  it.each([
    { name: 'JSON objects', text: `${'{"a": '.repeat(DEPTH)}1${'}'.repeat(DEPTH)}` },
    { name: 'JSON arrays', text: `${'['.repeat(DEPTH)}${']'.repeat(DEPTH)}` },
    { name: 'a selector inside a manifest', text: policyWith(`${'{"matchLabels": '.repeat(DEPTH)}{}${'}'.repeat(DEPTH)}`) },
    { name: 'YAML block mappings', text: Array.from({ length: DEPTH }, (_, i) => `${' '.repeat(i)}k${i}:`).join('\n') },
    { name: 'YAML block sequences', text: Array.from({ length: 3000 }, (_, i) => `${' '.repeat(i)}- `).join('\n') },
  ])('$name nested thousands of levels deep', ({ text }) => {
    const r = loadChecked([{ file: 'deep.json', text }]);
    expect(r.errors.length).toBeGreaterThan(0);
  });

  it('deep but valid YAML anchors are bounded', () => {
    const lines = ['a: &a [x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 12; i++) lines.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(9).fill(`*${String.fromCharCode(96 + i)}`).join(', ')}]`);
    const r = loadChecked([{ file: 'bomb.yaml', text: lines.join('\n') }]);
    expect(r.errors.map((e) => e.code)).toEqual(['NETPOLD_E_PARSE']);
  });

  it('many objects with strings over the 64 KiB limit', () => {
    const pods = Array.from({ length: 50 }, (_, i) => `{apiVersion: v1, kind: Pod, metadata: {name: p${i}, labels: {a: "${'v'.repeat(70_000)}"}}}`);
    const r = loadChecked([{ file: 'many.yaml', text: pods.join('\n---\n') }]);
    expect(r.errors).toHaveLength(50);
    expect(r.errors.every((e) => e.code === 'NETPOLD_E_INVALID_VALUE' && e.path === 'metadata.labels[a]')).toBe(true);
    expect(r.state.pods).toEqual([]);
  });

  it('a file over the size limit is one parse error', () => {
    const r = loadChecked([{ file: 'huge.yaml', text: `a: "${'x'.repeat(33 * 1024 * 1024)}"` }]);
    expect(r.errors.map((e) => e.code)).toEqual(['NETPOLD_E_PARSE']);
  });
});
