// The lab agent: one process per network namespace of a lab (`ip netns exec NS node lab-agent.js
// CONFIG.json`), started detached by src/lab/lab.ts. It is
// - a responder: on each configured listener, TCP answers `<ns>/<pod>\n` on accept, waits for the
//   client to end (the client closes first) and ends; UDP replies `<ns>/<pod>\n` to the sender;
// - a prober: on its Unix control socket, `{op: "probe", to, port, protocol, timeoutMs, from?}`
//   connects from inside its namespace and answers the outcome (see protocol.ts).
// It exits when its control socket file is removed, or on SIGTERM/SIGINT. It prints its log on
// stdout (the lab points it at a file in the state directory).
import dgram from 'node:dgram';
import { existsSync, readFileSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { AgentConfig, AgentRequest, LabProtocol, ListenerSpec, ProbeAnswer, ProbeOutcome, ProbeRequest } from './protocol.js';
import { MAX_LINE } from './protocol.js';

/** A TCP connection whose client never ends is dropped after this long. */
const SERVER_CONN_IDLE_MS = 30_000;
/** Longest probe timeout accepted. */
const MAX_PROBE_TIMEOUT_MS = 60_000;
/** After the reply is read, the client's close must complete within this time (else destroy). */
const CLOSE_GRACE_MS = 2_000;
/** How often the agent checks that its control socket file still exists. */
const WATCH_INTERVAL_MS = 500;

let cfg: AgentConfig;
const closers: (() => void)[] = [];
const listening = new Set<string>();

function log(text: string): void {
  process.stdout.write(`${new Date().toISOString()} [${cfg?.netns ?? '?'} pid ${process.pid}] ${text}\n`);
}

function familyOf(ip: string): 4 | 6 {
  return net.isIPv4(ip) ? 4 : 6;
}

function errCode(e: unknown): string {
  return (e as NodeJS.ErrnoException | undefined)?.code ?? 'UNKNOWN';
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---------------------------------------------------------------------------------------------
// Responders

function listen(spec: ListenerSpec): Promise<void> {
  const key = `${spec.protocol}/${spec.host}/${spec.port}`;
  if (listening.has(key)) return Promise.resolve();
  listening.add(key);
  const line = `${spec.reply}\n`;
  return new Promise((resolve, reject) => {
    if (spec.protocol === 'TCP') {
      const server = net.createServer({ allowHalfOpen: true }, (s) => {
        s.on('error', () => s.destroy());
        s.setTimeout(SERVER_CONN_IDLE_MS, () => s.destroy());
        s.write(line);
        s.resume(); // discard whatever the client sends
        s.on('end', () => s.end()); // the client ended first: now end our side
      });
      server.once('error', (e) => {
        listening.delete(key);
        reject(new Error(`cannot listen on TCP ${spec.host} port ${spec.port}: ${errText(e)}`));
      });
      server.listen({ host: spec.host, port: spec.port, exclusive: true }, () => {
        server.on('error', (e) => log(`TCP ${spec.host}:${spec.port}: ${errText(e)}`));
        closers.push(() => server.close());
        resolve();
      });
    } else {
      const sock = dgram.createSocket({ type: familyOf(spec.host) === 4 ? 'udp4' : 'udp6' });
      sock.once('error', (e) => {
        listening.delete(key);
        sock.close();
        reject(new Error(`cannot listen on UDP ${spec.host} port ${spec.port}: ${errText(e)}`));
      });
      sock.on('message', (_msg, rinfo) => {
        sock.send(line, rinfo.port, rinfo.address, (e) => {
          if (e) log(`UDP ${spec.host}:${spec.port} reply to ${rinfo.address}:${rinfo.port}: ${errText(e)}`);
        });
      });
      sock.bind({ address: spec.host, port: spec.port, exclusive: true }, () => {
        sock.removeAllListeners('error');
        sock.on('error', (e) => log(`UDP ${spec.host}:${spec.port}: ${errText(e)}`));
        closers.push(() => sock.close());
        resolve();
      });
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Prober

function probeTcp(req: ProbeRequest): Promise<ProbeAnswer> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let done = false;
    let established = false;
    let buf = '';
    let grace: NodeJS.Timeout | undefined;
    const finish = (result: ProbeOutcome, extra: { reply?: string; error?: string } = {}): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ result, ms: Math.round((performance.now() - t0) * 100) / 100, ...extra });
    };
    const s = net.connect({
      host: req.to,
      port: req.port,
      family: familyOf(req.to),
      allowHalfOpen: true,
      ...(req.from !== undefined ? { localAddress: req.from } : {}),
    });
    s.setEncoding('utf8');
    const timer = setTimeout(() => {
      finish('timeout', { error: established ? 'connected, but no reply line in time' : 'no connection in time' });
      s.destroy();
    }, req.timeoutMs);
    s.on('connect', () => {
      established = true;
    });
    s.on('data', (d: string) => {
      if (done) return;
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        finish('connected', { reply: buf.slice(0, nl) });
        s.end(); // the client closes first
        grace = setTimeout(() => s.destroy(), CLOSE_GRACE_MS);
      } else if (buf.length > 4096) {
        finish('error', { error: 'reply line too long' });
        s.destroy();
      }
    });
    s.on('end', () => {
      if (!done) finish('error', { error: 'the peer closed the connection before the reply line' });
      s.end();
    });
    s.on('error', (e) => {
      const code = errCode(e);
      const result: ProbeOutcome =
        code === 'ECONNREFUSED' ? 'refused' : code === 'ECONNRESET' || code === 'EPIPE' ? 'reset' : 'error';
      finish(result, { error: `${code}: ${errText(e)}` });
      s.destroy();
    });
    s.on('close', () => {
      clearTimeout(grace);
      if (!done) finish('error', { error: 'the connection closed before the reply line' });
    });
  });
}

function probeUdp(req: ProbeRequest): Promise<ProbeAnswer> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let done = false;
    const fam = familyOf(req.to);
    const s = dgram.createSocket({ type: fam === 4 ? 'udp4' : 'udp6' });
    const finish = (result: ProbeOutcome, extra: { reply?: string; error?: string } = {}): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        s.close();
      } catch {
        // already closed
      }
      resolve({ result, ms: Math.round((performance.now() - t0) * 100) / 100, ...extra });
    };
    const timer = setTimeout(() => finish('timeout', { error: 'no reply in time' }), req.timeoutMs);
    s.on('error', (e) => {
      const code = errCode(e);
      finish(code === 'ECONNREFUSED' ? 'refused' : 'error', { error: `${code}: ${errText(e)}` });
    });
    s.on('message', (msg) => {
      const text = msg.toString('utf8');
      const nl = text.indexOf('\n');
      finish('connected', { reply: nl >= 0 ? text.slice(0, nl) : text });
    });
    s.bind({ address: req.from ?? (fam === 4 ? '0.0.0.0' : '::'), port: 0 }, () => {
      // A connected socket receives only the peer's datagrams, and its ICMP errors (ECONNREFUSED).
      s.connect(req.port, req.to, (e?: Error) => {
        if (e) return finish('error', { error: `${errCode(e)}: ${errText(e)}` });
        s.send('probe\n', (e2) => {
          if (e2) finish(errCode(e2) === 'ECONNREFUSED' ? 'refused' : 'error', { error: `${errCode(e2)}: ${errText(e2)}` });
        });
      });
    });
  });
}

function validProbe(r: Record<string, unknown>): ProbeRequest | string {
  const { to, port, protocol, timeoutMs, from } = r;
  if (typeof to !== 'string' || net.isIP(to) === 0) return 'to must be an IP address';
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return 'port must be 1..65535';
  if (protocol !== 'TCP' && protocol !== 'UDP') return 'protocol must be TCP or UDP';
  if (typeof timeoutMs !== 'number' || !(timeoutMs > 0) || timeoutMs > MAX_PROBE_TIMEOUT_MS) {
    return `timeoutMs must be in (0, ${MAX_PROBE_TIMEOUT_MS}]`;
  }
  if (from !== undefined && (typeof from !== 'string' || net.isIP(from) === 0)) return 'from must be an IP address';
  if (from !== undefined && familyOf(from) !== familyOf(to)) return 'from and to must be of the same family';
  return { op: 'probe', to, port, protocol: protocol as LabProtocol, timeoutMs, ...(from !== undefined ? { from } : {}) };
}

async function handle(line: string): Promise<unknown> {
  let req: AgentRequest;
  try {
    req = JSON.parse(line) as AgentRequest;
  } catch {
    return { result: 'error', ms: 0, error: 'the request is not JSON' };
  }
  if (typeof req !== 'object' || req === null) return { result: 'error', ms: 0, error: 'the request is not an object' };
  switch (req.op) {
    case 'ping':
      return { ok: true, pid: process.pid, listeners: listening.size };
    case 'listen': {
      if (cfg.role !== 'ext') return { ok: false, error: 'listen is for the ext agent only' };
      if (typeof req.host !== 'string' || net.isIP(req.host) === 0) return { ok: false, error: 'host must be an IP address' };
      try {
        for (const port of cfg.extraPorts) {
          for (const protocol of ['TCP', 'UDP'] as const) {
            await listen({ host: req.host, port, protocol, reply: `external/${req.host}` });
          }
        }
        return { ok: true };
      } catch (e) {
        return { ok: false, error: errText(e) };
      }
    }
    case 'probe': {
      const p = validProbe(req as unknown as Record<string, unknown>);
      if (typeof p === 'string') return { result: 'error', ms: 0, error: p };
      return p.protocol === 'TCP' ? probeTcp(p) : probeUdp(p);
    }
    default:
      return { result: 'error', ms: 0, error: `unknown op ${JSON.stringify((req as { op?: unknown }).op)}` };
  }
}

function serveControl(path: string): Promise<net.Server> {
  const server = net.createServer((c) => {
    let buf = '';
    let handled = false;
    c.setEncoding('utf8');
    c.setTimeout(MAX_PROBE_TIMEOUT_MS + 5_000, () => c.destroy());
    c.on('error', () => c.destroy());
    c.on('data', (d: string) => {
      if (handled) return;
      buf += d;
      if (buf.length > MAX_LINE) {
        handled = true;
        c.destroy();
        return;
      }
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      handled = true;
      handle(buf.slice(0, nl)).then(
        (ans) => c.end(`${JSON.stringify(ans)}\n`),
        (e) => c.end(`${JSON.stringify({ result: 'error', ms: 0, error: errText(e) })}\n`),
      );
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve(server));
  });
}

// ---------------------------------------------------------------------------------------------

let stopping = false;
function shutdown(why: string, code: number): void {
  if (stopping) return;
  stopping = true;
  log(`exiting: ${why}`);
  for (const c of closers) {
    try {
      c();
    } catch {
      // closing anyway
    }
  }
  process.exit(code);
}

async function main(): Promise<void> {
  const configPath = process.argv[2];
  if (!configPath) {
    process.stderr.write('usage: lab-agent.js CONFIG.json\n');
    process.exit(2);
  }
  cfg = JSON.parse(readFileSync(configPath, 'utf8')) as AgentConfig;
  process.on('SIGTERM', () => shutdown('SIGTERM', 0));
  process.on('SIGINT', () => shutdown('SIGINT', 0));
  for (const l of cfg.listeners) await listen(l);
  log(`${cfg.listeners.length} listener(s) up`);
  if (existsSync(cfg.socket)) unlinkSync(cfg.socket);
  const ctl = await serveControl(cfg.socket);
  closers.push(() => ctl.close());
  log(`ready on ${cfg.socket}`);
  const watch = setInterval(() => {
    if (!existsSync(cfg.socket)) shutdown('control socket removed', 0);
  }, WATCH_INTERVAL_MS);
  closers.push(() => clearInterval(watch));
}

main().catch((e: unknown) => {
  log(`fatal: ${errText(e)}`);
  process.exit(1);
});
