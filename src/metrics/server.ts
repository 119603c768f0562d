// The metrics and health listener (--metrics-address): GET /metrics (Prometheus text format),
// /healthz (the process is alive and its event loop not stalled) and /readyz (interception
// installed and a snapshot enforced). 200 when good, 503 otherwise, with a small JSON body.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import { NetpoldError } from '../errors.js';

export interface Check {
  readonly ok: boolean;
  readonly detail: Record<string, unknown>;
}

export interface MetricsServerOptions {
  readonly host: string;
  readonly port: number;
  readonly registry: Registry;
  readonly health: () => Check;
  readonly ready: () => Check;
}

export interface MetricsServer {
  /** The address actually bound (port 0 picks one). */
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

export async function startMetricsServer(o: MetricsServerOptions): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => void handle(o, req, res));
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new NetpoldError('NETPOLD_E_LISTEN', `cannot listen on --metrics-address ${formatHostPort(o.host, o.port)}: ${e.code ?? e.message}${e.code === 'EADDRINUSE' ? ' (in use: another agent, or another program on that port)' : e.code === 'EADDRNOTAVAIL' ? ' (not an address of this host)' : ''}`)),
    );
    server.listen(o.port, o.host, () => resolve());
  });
  server.on('error', () => {});
  const a = server.address();
  const port = typeof a === 'object' && a !== null ? a.port : o.port;
  return {
    host: o.host,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

async function handle(o: MetricsServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
    return;
  }
  try {
    switch (path) {
      case '/metrics': {
        const body = await o.registry.metrics();
        res.writeHead(200, { 'content-type': o.registry.contentType }).end(req.method === 'HEAD' ? undefined : body);
        return;
      }
      case '/healthz':
      case '/readyz': {
        const c = path === '/healthz' ? o.health() : o.ready();
        res.writeHead(c.ok ? 200 : 503, { 'content-type': 'application/json' }).end(req.method === 'HEAD' ? undefined : `${JSON.stringify({ ok: c.ok, ...c.detail })}\n`);
        return;
      }
      default:
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz or /readyz\n');
    }
  } catch (e) {
    res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e instanceof Error ? e.message : String(e)}\n`);
  }
}
