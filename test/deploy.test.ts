// deploy/: every manifest parses, has the kinds and API versions a cluster accepts, and grants,
// mounts and passes exactly what the agent uses (no cluster needed).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { run } from '../src/cli/main.js';
import { API_PATH, KINDS } from '../src/source/k8s/convert.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const deploy = join(root, 'deploy');

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function manifests(file: string): Obj[] {
  const docs = parseAllDocuments(readFileSync(join(deploy, file), 'utf8'));
  for (const d of docs) expect(d.errors, `${file}: ${d.errors.map((e) => e.message).join('; ')}`).toEqual([]);
  return docs.map((d) => d.toJS() as Obj).filter((o) => o !== null);
}

const all = readdirSync(deploy)
  .filter((f) => /\.ya?ml$/.test(f))
  .flatMap((f) => manifests(f).map((o) => ({ file: f, o })));
const find = (kind: string): Obj => {
  const hits = all.filter((x) => x.o['kind'] === kind);
  expect(hits, kind).toHaveLength(1);
  return hits[0]!.o;
};

const API_VERSIONS: Record<string, string> = {
  ServiceAccount: 'v1',
  ClusterRole: 'rbac.authorization.k8s.io/v1',
  ClusterRoleBinding: 'rbac.authorization.k8s.io/v1',
  DaemonSet: 'apps/v1',
};

describe('deploy/ manifests', () => {
  it('are exactly a ServiceAccount, a ClusterRole, a ClusterRoleBinding and a DaemonSet, with their API versions', () => {
    expect(all.map((x) => x.o['kind']).sort()).toEqual(Object.keys(API_VERSIONS).sort());
    for (const { o } of all) {
      expect(o['apiVersion'], o['kind']).toBe(API_VERSIONS[o['kind']]);
      expect(o['metadata']['name']).toBe('netpold');
    }
  });

  it('the ClusterRole grants list/watch on exactly the collections the source reads, plus creating Events', () => {
    const role = find('ClusterRole');
    const granted = new Set<string>();
    for (const rule of role['rules'] as Obj[]) {
      expect(Object.keys(rule).sort()).toEqual(['apiGroups', 'resources', 'verbs']);
      for (const g of rule['apiGroups']) for (const r of rule['resources']) for (const v of rule['verbs']) granted.add(`${g}/${r}:${v}`);
    }
    const expected = new Set<string>();
    for (const kind of KINDS) {
      // /api/v1/pods -> core group ""; /apis/networking.k8s.io/v1/networkpolicies -> that group.
      const m = /^\/(?:api\/v1|apis\/([^/]+)\/v1)\/([a-z]+)$/.exec(API_PATH[kind]);
      expect(m, API_PATH[kind]).not.toBeNull();
      for (const verb of ['list', 'watch']) expected.add(`${m![1] ?? ''}/${m![2]}:${verb}`);
    }
    expected.add('/events:create');
    expected.add('/events:patch');
    expect([...granted].sort()).toEqual([...expected].sort());
  });

  it('optional/ready-taint.yaml grants exactly get/patch on nodes (the readiness taint, src/source/k8s/taint.ts) to the same ServiceAccount', () => {
    const docs = parseAllDocuments(readFileSync(join(deploy, 'optional', 'ready-taint.yaml'), 'utf8')).map((d) => d.toJS() as Obj);
    expect(docs.map((o) => o['kind'])).toEqual(['ClusterRole', 'ClusterRoleBinding']);
    const [role, binding] = docs as [Obj, Obj];
    expect(role['rules']).toEqual([{ apiGroups: [''], resources: ['nodes'], verbs: ['get', 'patch'] }]);
    expect(binding['roleRef']).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role['metadata']['name'] });
    const sa = find('ServiceAccount');
    expect(binding['subjects']).toEqual([{ kind: 'ServiceAccount', name: sa['metadata']['name'], namespace: sa['metadata']['namespace'] }]);
  });

  it('binds the ClusterRole to the ServiceAccount the DaemonSet runs as', () => {
    const sa = find('ServiceAccount');
    const binding = find('ClusterRoleBinding');
    const ds = find('DaemonSet');
    expect(binding['roleRef']).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: find('ClusterRole')['metadata']['name'] });
    expect(binding['subjects']).toEqual([{ kind: 'ServiceAccount', name: sa['metadata']['name'], namespace: sa['metadata']['namespace'] }]);
    expect(ds['metadata']['namespace']).toBe(sa['metadata']['namespace']);
    expect(ds['spec']['template']['spec']['serviceAccountName']).toBe(sa['metadata']['name']);
  });

  describe('the DaemonSet', () => {
    const ds = find('DaemonSet');
    const pod = ds['spec']['template']['spec'] as Obj;
    const containers = pod['containers'] as Obj[];
    const c = containers[0]!;

    it('selects its own pods and updates one node at a time', () => {
      expect(ds['spec']['selector']['matchLabels']).toEqual(ds['spec']['template']['metadata']['labels']);
      expect(ds['spec']['updateStrategy']).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } });
      expect(pod['terminationGracePeriodSeconds']).toBeGreaterThanOrEqual(30);
    });

    it('runs in the host network with NET_ADMIN and NET_RAW only, not privileged', () => {
      expect(pod['hostNetwork']).toBe(true);
      expect(containers).toHaveLength(1);
      expect(pod['initContainers']).toBeUndefined();
      const sc = c['securityContext'];
      expect(sc['privileged']).toBe(false);
      expect(sc['allowPrivilegeEscalation']).toBe(false);
      expect(sc['capabilities']).toEqual({ drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] });
      expect(pod['securityContext']?.['privileged']).toBeUndefined();
      expect(pod['hostPID']).toBeUndefined();
      expect(pod['hostIPC']).toBeUndefined();
    });

    it('mounts nothing from the host', () => {
      for (const v of (pod['volumes'] ?? []) as Obj[]) expect(Object.keys(v).sort(), v['name']).toEqual(['emptyDir', 'name']);
      const mounts = ((c['volumeMounts'] ?? []) as Obj[]).map((m) => m['name']);
      expect(mounts.sort()).toEqual(((pod['volumes'] ?? []) as Obj[]).map((v) => v['name']).sort());
    });

    it('has resource requests and limits, and health probes on port 9464', () => {
      for (const k of ['requests', 'limits']) {
        expect(c['resources'][k]['cpu'], k).toBeDefined();
        expect(c['resources'][k]['memory'], k).toBeDefined();
      }
      expect(c['livenessProbe']['httpGet']).toEqual({ path: '/healthz', port: 9464 });
      expect(c['readinessProbe']['httpGet']).toEqual({ path: '/readyz', port: 9464 });
      expect(c['ports']).toContainEqual({ name: 'health', containerPort: 9464, protocol: 'TCP' });
    });

    it('passes only flags that `netpold agent` defines, with the node name from the downward API', async () => {
      let help = '';
      const code = await run(['agent', '--help'], { out: (t) => (help += `${t}\n`), err: (t) => (help += `${t}\n`) });
      expect(code).toBe(0);
      const defined = new Set([...help.matchAll(/(?:^|\s)(--[a-z][a-z0-9-]*)/g)].map((m) => m[1]!));
      expect(defined).toContain('--in-cluster');
      const args = c['args'] as string[];
      expect(args[0]).toBe('agent');
      const flags = args.filter((a) => a.startsWith('--'));
      for (const f of flags) expect(defined, f).toContain(f);
      expect(flags).toContain('--in-cluster');
      expect(args[args.indexOf('--node-name') + 1]).toBe('$(NODE_NAME)');
      expect(c['env']).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
      expect(c['command']).toBeUndefined(); // the image's ENTRYPOINT is netpold
    });
  });

  describe('the Dockerfile', () => {
    const text = readFileSync(join(deploy, 'Dockerfile'), 'utf8');
    const lines = text.split('\n').filter((l) => !l.trimStart().startsWith('#'));
    const stages = text.split(/^FROM /m).slice(1);

    it('builds in a builder stage with python3, make and g++, and runs from a slim stage with nftables and iproute2', () => {
      expect(stages).toHaveLength(2);
      const [build, runtime] = stages as [string, string];
      expect(build).toMatch(/^node:20[\w.-]* AS build/);
      for (const p of ['python3', 'make', 'g\\+\\+']) expect(build).toMatch(new RegExp(`apt-get install[^\\n]*\\\\?\\n?[^\\n]*\\b${p}`));
      expect(build).toMatch(/npm ci/);
      expect(runtime).toMatch(/^node:20[\w.-]*slim/);
      expect(runtime).toMatch(/nftables/);
      expect(runtime).toMatch(/iproute2/);
      expect(runtime).not.toMatch(/g\+\+|python3/);
      expect(runtime).toMatch(/COPY --from=build \/app\/native\/build\/Release\/netpold_native\.node/);
      expect(runtime).toMatch(/ENTRYPOINT \["node", "\/app\/bin\/netpold\.js"\]/);
    });

    it('copies only paths that exist in the repository', () => {
      for (const l of lines) {
        const m = /^COPY (?!--from)(.+)$/.exec(l.trim());
        if (m === null) continue;
        const parts = m[1]!.split(/\s+/);
        for (const src of parts.slice(0, -1)) expect(existsSync(join(root, src)), src).toBe(true);
      }
    });
  });
});
