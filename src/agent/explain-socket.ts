// The agent's explain service: a local Unix socket (--agent-socket, default
// /run/netpold/agent.sock, mode 0600: root only) speaking JSON lines. Each request line
//   {"from":"NS/POD|IP","to":"NS/POD|IP","port":8080,"protocol":"TCP","family":4}
// gets one response line
//   {"ok":true,"result":{...ExplainResult}}   or   {"ok":false,"error":{"code":"NETPOLD_E_...","message":"..."}}
// A socket file left by a crashed agent is replaced; one another live agent answers on is not.
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { NetpoldError } from '../errors.js';
import type { Logger } from '../log.js';

/** Longest request line accepted. */
const MAX_LINE = 64 * 1024;
export const DEFAULT_AGENT_SOCKET = '/run/netpold/agent.sock';

export type ExplainHandler = (request: unknown) => unknown;

export interface ExplainSocket {
  readonly path: string;
  close(): Promise<void>;
}

export async function serveExplainSocket(path: string, handler: ExplainHandler, log: Logger): Promise<ExplainSocket> {
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  } catch (e) {
    throw new NetpoldError('NETPOLD_E_LISTEN', `cannot create the directory of --agent-socket ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  await removeStale(path);
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    serveConnection(s, handler, log);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new NetpoldError('NETPOLD_E_LISTEN', `cannot listen on --agent-socket ${path}: ${e.code ?? e.message}`)));
    server.listen(path, () => resolve());
  });
  server.on('error', (e) => log.warn({ error: e.message }, 'explain socket error'));
  chmodSync(path, 0o600);
  const ino = lstatSync(path).ino;
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => {
          // Node removes the file on close; make sure, but never someone else's.
          try {
            if (lstatSync(path).ino === ino) unlinkSync(path);
          } catch {
            // gone already
          }
          resolve();
        });
      }),
  };
}

/** A socket file nobody answers on (a crashed agent's) is removed; a live one is an error. */
async function removeStale(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new NetpoldError('NETPOLD_E_LISTEN', `--agent-socket ${path} exists and is not a socket; remove it or choose another path`);
  const live = await new Promise<boolean>((resolve) => {
    const c = connect(path);
    const t = setTimeout(() => (c.destroy(), resolve(true)), 1000);
    c.once('connect', () => (clearTimeout(t), c.destroy(), resolve(true)));
    c.once('error', () => (clearTimeout(t), resolve(false)));
  });
  if (live) throw new NetpoldError('NETPOLD_E_LISTEN', `another agent answers on --agent-socket ${path}; stop it or choose another path`);
  unlinkSync(path);
}

function serveConnection(s: Socket, handler: ExplainHandler, log: Logger): void {
  let buf = '';
  s.setEncoding('utf8');
  s.on('error', () => {});
  s.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line !== '') s.write(`${JSON.stringify(answer(line, handler, log))}\n`);
    }
    if (buf.length > MAX_LINE) {
      s.end(`${JSON.stringify({ ok: false, error: { code: 'NETPOLD_E_USAGE', message: `request line longer than ${MAX_LINE} bytes` } })}\n`);
      buf = '';
    }
  });
  s.on('end', () => {
    const line = buf.trim();
    if (line !== '') s.write(`${JSON.stringify(answer(line, handler, log))}\n`);
    s.end();
  });
}

function answer(line: string, handler: ExplainHandler, log: Logger): unknown {
  let req: unknown;
  try {
    req = JSON.parse(line);
  } catch {
    return { ok: false, error: { code: 'NETPOLD_E_USAGE', message: 'a request is one JSON object per line' } };
  }
  try {
    return { ok: true, result: handler(req) };
  } catch (e) {
    if (e instanceof NetpoldError) return { ok: false, error: { code: e.code, message: e.message } };
    log.error({ error: e instanceof Error ? e.message : String(e) }, 'explain request failed');
    return { ok: false, error: { code: 'NETPOLD_E_INTERNAL', message: e instanceof Error ? e.message : String(e) } };
  }
}

/** Sends one request to an agent's explain socket and returns its response object. */
export function askAgent(path: string, request: unknown, timeoutMs = 10_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const c = connect(path);
    let buf = '';
    let done = false;
    const fail = (why: string): void => {
      if (done) return;
      done = true;
      c.destroy();
      reject(new NetpoldError('NETPOLD_E_AGENT_UNREACHABLE', `no agent answered on ${path}: ${why}`));
    };
    const t = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    c.setEncoding('utf8');
    c.on('connect', () => c.write(`${JSON.stringify(request)}\n`));
    c.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0 || done) return;
      done = true;
      clearTimeout(t);
      c.end();
      try {
        resolve(JSON.parse(buf.slice(0, nl)));
      } catch {
        reject(new NetpoldError('NETPOLD_E_AGENT_UNREACHABLE', `the agent on ${path} answered something that is not JSON`));
      }
    });
    c.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      fail(e.code === 'ENOENT' ? 'the socket does not exist (is the agent running here? pass --agent-socket or --manifests)' : e.code === 'EACCES' ? 'permission denied (run as root)' : e.code === 'ECONNREFUSED' ? 'connection refused (a stale socket: the agent is not running)' : (e.code ?? e.message));
    });
    c.on('close', () => {
      clearTimeout(t);
      fail('the connection closed without an answer');
    });
  });
}
