// The agent's configuration (src/config): flags, NETPOLD_* variables and a YAML file, with
// precedence flag > env > file > default, every problem reported together, the result frozen;
// src/config is the only reader of process.env; library code never prints.
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { run } from '../src/cli/main.js';
import { AGENT_OPTIONS, loadAgentConfig, parseHostPort } from '../src/config/agent.js';
import { envName } from '../src/config/options.js';
import { AsyncLineWriter } from '../src/flowlog/writer.js';

const root = new URL('..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'netpold-config-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await run(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

function load(flags: Record<string, unknown>, env: Record<string, string> = {}, file?: string) {
  return loadAgentConfig({ flags: file === undefined ? flags : { ...flags, config: '/etc/netpold.yaml' }, env, readFile: () => file ?? '' });
}

function problemsOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect((e as { code?: string }).code).toBe('NETPOLD_E_CONFIG');
    return (e as Error).message;
  }
  throw new Error('expected NETPOLD_E_CONFIG');
}

describe('agent configuration', () => {
  it('defaults: everything the help lists', () => {
    const c = load({ manifests: ['/m'] });
    expect(c).toMatchObject({
      source: { kind: 'manifests', paths: ['/m'] },
      mode: 'enforce',
      metrics: { host: '127.0.0.1', port: 9464 },
      agentSocket: '/run/netpold/agent.sock',
      flowLog: { destination: '-', sampleRate: 0.01, bufferLines: 10000 },
      shutdownGraceMs: 10000,
      maxEventLoopLagMs: 2000,
      logLevel: 'info',
      dataplane: { port: 15001, flowTableSize: 65536, udpIdleMs: 30000, connectTimeoutMs: 10000, existingFlows: 'revalidate', families: [4, 6], mode: 'enforce', verdictCacheSize: 4096 },
      interception: { table: 'netpold', mark: 0x2000, routeTable: 4242, rulePriority: 5, port: 15001, podBridges: ['cni0', 'cbr0'] },
    });
    expect(c.origins['port']).toBe('default');
  });

  it('precedence: flag > environment > config file > default, per setting', () => {
    const file = 'port: 15003\nflow-log-sample-rate: 0.5\nmode: audit\nmanifests: [/from-file]\nflow-table-size: 1000\n';
    const c = load({ port: '15001', manifests: ['/from-flag'] }, { NETPOLD_PORT: '15002', NETPOLD_FLOW_LOG_SAMPLE_RATE: '0.25', NETPOLD_IPV6: 'false' }, file);
    expect(c.dataplane.port).toBe(15001);
    expect(c.origins['port']).toBe('flag');
    expect(c.flowLog?.sampleRate).toBe(0.25);
    expect(c.origins['flow-log-sample-rate']).toBe('env');
    expect(c.mode).toBe('audit');
    expect(c.origins['mode']).toBe('file');
    expect(c.dataplane.flowTableSize).toBe(1000);
    expect(c.dataplane.families).toEqual([4]);
    expect(c.source).toEqual({ kind: 'manifests', paths: ['/from-flag'] });
    expect(c.origins['shutdown-grace-ms']).toBe('default');
    expect(c.configFile).toBe('/etc/netpold.yaml');
  });

  it('is frozen, deeply', () => {
    const c = load({ manifests: ['/m'] });
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.dataplane)).toBe(true);
    expect(Object.isFrozen(c.dataplane.families)).toBe(true);
    expect(() => {
      (c as { mode: string }).mode = 'audit';
    }).toThrow();
  });

  it('reports every problem together, each naming where it came from (flag, environment, file)', () => {
    const file = 'prot: 1\nudp-idle-ms: fast\nconfig: /other.yaml\n';
    const msg = problemsOf(() =>
      load({ port: '70000', mode: 'loud', 'metrics-address': 'localhost' }, { NETPOLD_FLOW_LOG_SAMPLE_RATE: '1.5', NETPOLD_IN_CLUSTER: 'maybe', NETPOLD_FLOW_LOG_BUFFER: '0' }, file),
    );
    const expected = [
      '--port must be an integer from 1 to 65535, not "70000"',
      '--mode must be enforce or audit, not "loud"',
      'NETPOLD_FLOW_LOG_SAMPLE_RATE (environment) must be a number from 0 to 1, not "1.5"',
      'NETPOLD_IN_CLUSTER (environment) must be true or false, not "maybe"',
      'NETPOLD_FLOW_LOG_BUFFER (environment) must be an integer from 1 to 1000000, not "0"',
      '/etc/netpold.yaml: unknown setting "prot" (did you mean port?)',
      '/etc/netpold.yaml: unknown setting "config" (it cannot be set in the config file)',
      '/etc/netpold.yaml: udp-idle-ms must be an integer from 100 to 3600000, not "fast"',
      'give the policy state source: --manifests PATH..., --kubeconfig PATH or --in-cluster',
      '--metrics-address must be HOST:PORT with an IP address',
    ];
    for (const p of expected) expect(msg).toContain(p);
    expect(msg).toMatch(/^\d+ problems in the agent configuration/);
    expect(Number(/^(\d+)/.exec(msg)![1])).toBeGreaterThanOrEqual(expected.length);
  });

  it('an unreadable or malformed config file is a problem like the others', () => {
    expect(problemsOf(() => loadAgentConfig({ flags: { config: join(tmp, 'missing.yaml'), manifests: ['/m'] }, env: {} }))).toContain('cannot read it (ENOENT)');
    expect(problemsOf(() => load({ manifests: ['/m'] }, {}, '- a\n- b\n'))).toContain('must be a mapping of settings');
    expect(problemsOf(() => load({ manifests: ['/m'] }, {}, 'a: [\n'))).toContain('not valid YAML');
  });

  it('cross-setting checks: one state source; a Kubernetes source needs --node-name; metrics off the listener port', () => {
    expect(problemsOf(() => load({ manifests: ['/m'], kubeconfig: '/k' }))).toContain('give only one state source, not --manifests and --kubeconfig');
    expect(problemsOf(() => load({ 'in-cluster': true }))).toContain('--in-cluster needs --node-name');
    expect(problemsOf(() => load({ manifests: ['/m'], 'metrics-address': '127.0.0.1:15001' }))).toContain("the transparent listener's --port");
    expect(problemsOf(() => load({ manifests: ['/m'], 'agent-socket': 'relative.sock' }))).toContain('must be an absolute path');
    expect(problemsOf(() => load({ manifests: ['/m'], 'verdict-cache': '1000' }))).toContain('--verdict-cache must be 0 or a power of two, not 1000');
    expect(load({ manifests: ['/m'], 'verdict-cache': '0' }).dataplane.verdictCacheSize).toBe(0);
  });

  it('--pod-bridges: interface names (deduplicated), or off; anything else is a problem', () => {
    expect(load({ manifests: ['/m'], 'pod-bridges': 'br-pods,cni0,br-pods' }).interception.podBridges).toEqual(['br-pods', 'cni0']);
    expect(load({ manifests: ['/m'], 'pod-bridges': 'off' }).interception.podBridges).toEqual([]);
    for (const bad of ['', 'cni0,', 'a/b', 'x'.repeat(16), 'cni0 cbr0']) {
      expect(problemsOf(() => load({ manifests: ['/m'], 'pod-bridges': bad }))).toContain('--pod-bridges must be off or interface names');
    }
  });

  it('off turns the metrics listener, the explain socket and the flow log off', () => {
    const c = load({ manifests: ['/m'], 'metrics-address': 'off', 'agent-socket': 'off', 'flow-log': 'off' });
    expect([c.metrics, c.agentSocket, c.flowLog]).toEqual([undefined, undefined, undefined]);
  });

  it('lists from the environment are comma-separated; booleans accept true/false/1/0', () => {
    const c = load({}, { NETPOLD_MANIFESTS: '/a, /b', NETPOLD_INTERCEPT_ALL_PODS: '1' });
    expect(c.source).toEqual({ kind: 'manifests', paths: ['/a', '/b'] });
    expect(c.interceptAllPods).toBe(true);
  });

  it('unknown NETPOLD_* variables are warnings, not errors (NETPOLD_DEBUG is known)', () => {
    const c = load({ manifests: ['/m'] }, { NETPOLD_FLOW_LOGG: 'x', NETPOLD_DEBUG: '1' });
    expect(c.warnings).toEqual([expect.stringContaining('NETPOLD_FLOW_LOGG is not a netpold setting (did you mean NETPOLD_FLOW_LOG?)')]);
  });

  it.each([
    [0x4000, ['0x4000 with kube-proxy and kubelet (masquerade bit 14']],
    [0xc000, ['0x4000 with kube-proxy and kubelet (masquerade bit 14', '0x8000 with kube-proxy and kubelet (drop bit 15']],
    [0x10000, ['0x10000 with Calico']],
    [0x200, ['0x200 with Cilium']],
    [0x2000, []],
    [0x1, []],
  ])('--fwmark 0x%s: a warning for each known owner of its bits, the mark kept', (mark, expected) => {
    const c = load({ manifests: ['/m'], fwmark: `0x${mark.toString(16)}` });
    expect(c.interception.mark).toBe(mark);
    expect(c.warnings.length).toBe(expected.length);
    expected.forEach((w, i) => expect(c.warnings[i]).toContain(`--fwmark 0x${mark.toString(16)} shares bits ${w}`));
  });

  it('metrics addresses: IPv4, bracketed and bare IPv6 (as $(POD_IP):9464 gives it), port 0', () => {
    expect(parseHostPort('0.0.0.0:9464')).toEqual({ host: '0.0.0.0', port: 9464 });
    expect(parseHostPort('[::1]:9464')).toEqual({ host: '::1', port: 9464 });
    expect(parseHostPort('2001:2::ff:1:9464')).toEqual({ host: '2001:2::ff:1', port: 9464 });
    expect(parseHostPort('127.0.0.1:0')).toEqual({ host: '127.0.0.1', port: 0 });
    expect(parseHostPort('localhost:9464')).toBeUndefined();
    expect(parseHostPort('127.0.0.1')).toBeUndefined();
  });

  it('`netpold agent` with several bad settings exits 2 listing them all in one message', async () => {
    const r = await cli('agent', '--port', '0', '--flow-log-sample-rate', '2', '--shutdown-grace-ms', '-1', '--existing-flows', 'maybe');
    expect(r.code).toBe(2);
    const lines = r.err.split('\n').filter((l) => l.startsWith('error:'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^error: 5 problems in the agent configuration.*\[NETPOLD_E_CONFIG\]$/);
    for (const s of ['--port', '--flow-log-sample-rate', '--shutdown-grace-ms', '--existing-flows', 'give the policy state source']) expect(lines[0]).toContain(s);
  });

  it('`netpold agent --help` lists every setting with its default and its environment variable', async () => {
    const r = await cli('agent', '--help');
    expect(r.code).toBe(0);
    const help = r.out.replace(/\s+/g, ' ');
    for (const o of AGENT_OPTIONS) {
      expect(help).toContain(o.kind === 'bool' && o.negatable ? `--no-${o.name}` : `--${o.name}`);
      expect(help).toContain(envName(o.name));
      if (o.default !== undefined && o.kind !== 'bool') expect(help).toContain(`default: ${String(o.default)}`);
    }
    expect(help).toContain('Precedence: flag > environment > config file > default');
  });
});

describe('code base rules', () => {
  const files = (dir: string): string[] =>
    readdirSync(dir).flatMap((f) => {
      const p = join(dir, f);
      return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
    });
  const src = files(join(root, 'src'));

  it('src/config is the only module that reads process.env', () => {
    const readers = src.filter((f) => /process\.env/.test(readFileSync(f, 'utf8'))).map((f) => f.slice(root.length));
    expect(readers).toEqual(['src/config/env.ts']);
  });

  it('no console.log (or console.*) in library code: the CLI prints through its Io, the agent logs through pino', () => {
    const printers = src.filter((f) => /\bconsole\.(log|info|warn|error|debug)\(/.test(readFileSync(f, 'utf8').replace(/`[^`]*`/g, '').replace(/'[^'\n]*'/g, ''))).map((f) => f.slice(root.length));
    expect(printers).toEqual([]);
  });
});

describe('the asynchronous line writer', () => {
  it('writes lines in order to a file and flushes; signals backpressure above its high-water mark', async () => {
    const { openSync } = await import('node:fs');
    const path = join(tmp, 'lines.log');
    const w = new AsyncLineWriter(openSync(path, 'a'), { closeFd: true, highWaterBytes: 64 });
    const accepted: boolean[] = [];
    for (let i = 0; i < 20; i++) accepted.push(w.write(`line ${i} ${'x'.repeat(10)}\n`));
    expect(accepted).toContain(false); // over 64 bytes pending: the caller should wait
    let drained = false;
    w.onDrain(() => (drained = true));
    await w.close();
    expect(drained).toBe(true);
    const lines = readFileSync(path, 'utf8').trim().split('\n');
    expect(lines).toEqual(Array.from({ length: 20 }, (_, i) => `line ${i} ${'x'.repeat(10)}`));
    expect(w.counters.bytesWritten).toBe(readFileSync(path).length);
  });
});

describe('deploy/daemonset.yaml and the agent agree', () => {
  it('the DaemonSet binds the metrics listener to the pod (node) IP on the probed port and waits longer than the shutdown grace', async () => {
    const { parse } = await import('yaml');
    const ds = parse(readFileSync(join(root, 'deploy/daemonset.yaml'), 'utf8'));
    const pod = ds.spec.template.spec;
    const c = pod.containers[0];
    const args: string[] = c.args;
    const addr = args[args.indexOf('--metrics-address') + 1]!;
    expect(addr).toBe('$(POD_IP):9464');
    expect(c.env).toContainEqual({ name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } });
    expect(c.livenessProbe.httpGet.port).toBe(9464);
    expect(c.readinessProbe.httpGet.port).toBe(9464);
    const grace = Number(args[args.indexOf('--shutdown-grace-ms') + 1]);
    expect(pod.terminationGracePeriodSeconds * 1000).toBeGreaterThan(grace + 5000);
    expect(pod.enableServiceLinks).toBe(false);
    expect(c.volumeMounts).toContainEqual({ name: 'run', mountPath: '/run/netpold' });
    // The config accepts what the DaemonSet passes (with a node IP for $(POD_IP)).
    const flags: Record<string, unknown> = { 'in-cluster': true };
    for (let i = 1; i < args.length; i++) {
      if (!args[i]!.startsWith('--')) continue;
      const name = args[i]!.slice(2);
      const next = args[i + 1];
      if (name === 'in-cluster') continue;
      flags[name] = next!.replace('$(NODE_NAME)', 'node-a').replace('$(POD_IP)', '198.18.255.1');
    }
    const cfg = loadAgentConfig({ flags, env: {} });
    expect(cfg.metrics).toEqual({ host: '198.18.255.1', port: 9464 });
  });
});
