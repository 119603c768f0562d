// The wire format between the lab (CLI / tests, root namespace) and its lab agents (one process
// per network namespace, reached through a Unix socket in the lab's state directory). One JSON
// object per line; one request per connection.

export type LabProtocol = 'TCP' | 'UDP';

/** A responder socket: accept on `host:port`, answer `reply` + "\n". */
export interface ListenerSpec {
  readonly host: string;
  readonly port: number;
  readonly protocol: LabProtocol;
  /** `ns/pod` (or `external/IP`), sent back without the newline. */
  readonly reply: string;
}

/** The configuration file a lab agent is started with (`lab-agent.js CONFIG.json`). */
export interface AgentConfig {
  readonly labId: string;
  /** `pod`, `node` or `ext`. */
  readonly role: 'pod' | 'node' | 'ext';
  /** The network namespace the agent runs in (for its log lines). */
  readonly netns: string;
  /** The control socket (prober). The agent exits when this file is removed. */
  readonly socket: string;
  readonly listeners: readonly ListenerSpec[];
  /** Ports an `ext` agent opens (TCP and UDP) on each address it is told to `listen` on. */
  readonly extraPorts: readonly number[];
}

export interface ProbeRequest {
  readonly op: 'probe';
  readonly to: string;
  readonly port: number;
  readonly protocol: LabProtocol;
  readonly timeoutMs: number;
  /** Source address to bind to (node and ext namespaces). */
  readonly from?: string;
}

/** Ext agent only: open the extra ports on `host` (an address just added to its eth0). Idempotent. */
export interface ListenRequest {
  readonly op: 'listen';
  readonly host: string;
}

export interface PingRequest {
  readonly op: 'ping';
}

export type AgentRequest = ProbeRequest | ListenRequest | PingRequest;

export type ProbeOutcome = 'connected' | 'refused' | 'reset' | 'timeout' | 'error';

export interface ProbeAnswer {
  readonly result: ProbeOutcome;
  /** The responder's reply line (without the newline). */
  readonly reply?: string;
  /** Milliseconds from the start of the attempt to its outcome. */
  readonly ms: number;
  readonly error?: string;
}

export interface PingAnswer {
  readonly ok: true;
  readonly pid: number;
  readonly listeners: number;
}

export interface ListenAnswer {
  readonly ok: boolean;
  readonly error?: string;
}

/** Longest request or answer line accepted on a control socket. */
export const MAX_LINE = 64 * 1024;
