// A paginated LIST returning the API server's JSON as parsed (plain objects), so that listed
// objects and watched objects (which the library's Watch also hands over as parsed JSON) go
// through the validators in the same shape as manifest files. Authentication and TLS come from
// the KubeConfig (applyToHTTPSOptions); the request itself is node:http(s).
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { isRecord } from '../files/report.js';

export interface ListResult {
  readonly resourceVersion: string;
  readonly items: Record<string, unknown>[];
}

/** An HTTP error from the API server, with its status code and Status message. */
export class ApiStatusError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiStatusError';
  }
}

/**
 * Lists a collection page by page (`limit`/`continue`, one consistent snapshot). An expired
 * continue token (410) fails the whole list: the caller relists from scratch.
 */
export async function listAll(kc: KubeConfig, path: string, pageSize: number, timeoutMs: number): Promise<ListResult> {
  const items: Record<string, unknown>[] = [];
  let token = '';
  let resourceVersion = '';
  for (;;) {
    const q = new URLSearchParams({ limit: String(pageSize) });
    if (token !== '') q.set('continue', token);
    const page = await getJson(kc, `${path}?${q.toString()}`, timeoutMs);
    const meta = page['metadata'];
    const list = page['items'];
    if (!isRecord(meta) || !(Array.isArray(list) || list === null || list === undefined)) {
      throw new Error(`the API server's list of ${path} is not a list object`);
    }
    for (const it of list ?? []) if (isRecord(it)) items.push(it);
    resourceVersion = typeof meta['resourceVersion'] === 'string' ? meta['resourceVersion'] : '';
    token = typeof meta['continue'] === 'string' ? meta['continue'] : '';
    if (token === '') break;
  }
  return { resourceVersion, items };
}

async function getJson(kc: KubeConfig, pathAndQuery: string, timeoutMs: number): Promise<Record<string, unknown>> {
  const cluster = kc.getCurrentCluster();
  if (cluster === null) throw new Error('no current cluster in the kubeconfig');
  const url = new URL(cluster.server.replace(/\/+$/, '') + pathAndQuery);
  const opts: https.RequestOptions = { method: 'GET' };
  await kc.applyToHTTPSOptions(opts);
  const headers = { ...(opts.headers as Record<string, string> | undefined), Accept: 'application/json' };
  const agent = opts.agent;
  try {
    return await new Promise<Record<string, unknown>>((resolve, reject) => {
      const mod = url.protocol === 'http:' ? http : https;
      const req = mod.request(url, { ...opts, headers, timeout: timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown;
          try {
            body = JSON.parse(text);
          } catch {
            body = undefined;
          }
          const status = res.statusCode ?? 0;
          if (status !== 200) {
            const msg = isRecord(body) && typeof body['message'] === 'string' ? body['message'] : res.statusMessage ?? '';
            reject(new ApiStatusError(status, `GET ${url.pathname}: HTTP ${status} ${msg}`.trimEnd()));
            return;
          }
          if (!isRecord(body)) {
            reject(new Error(`GET ${url.pathname}: the response is not a JSON object`));
            return;
          }
          resolve(body);
        });
      });
      req.on('timeout', () => req.destroy(new Error(`GET ${url.pathname}: no response within ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end();
    });
  } finally {
    if (agent instanceof http.Agent) agent.destroy();
  }
}
