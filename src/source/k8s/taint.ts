// The node's "not ready" taint: kubelet can register a node with a taint (for example
// `--register-with-taints=netpold.io/agent-not-ready=:NoSchedule`) so that no pod is scheduled
// there before the agent enforces policy; the agent removes it from its own Node once it
// enforces its first complete state. Without that taint on the Node this does nothing but one
// GET. Nothing here touches enforcement: a failure is logged and retried, never fatal.
//
// The removal is a JSON patch that tests the key at each index it removes, so a concurrent
// change of the Node's taints (kubelet, another controller) fails the patch (422) instead of
// removing the wrong taint; the agent then reads the Node again. Several taints with the key
// (different effects) all go, highest index first so the earlier indices stay valid.
//
// Retries: network errors, 5xx, 404 (the Node object not created yet) and conflicts (422: a
// failed test) are retried with a backoff from `retryMs` doubling to `maxRetryMs`, for as long as
// the agent runs, each logged as a warning; 403 (RBAC without get or patch on nodes) and the
// server refusing the request itself (400, 405, 415) are logged once as an error,
// NETPOLD_E_TAINT, and not retried. Off by default (--ready-taint): patching Nodes is a
// permission RBAC cannot narrow to the agent's own Node (deploy/optional/ready-taint.yaml).
import { CoreV1Api, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../../log.js';

export { DEFAULT_READY_TAINT } from './taint-key.js';

export type ReadyTaintState = 'idle' | 'working' | 'removed' | 'absent' | 'forbidden' | 'rejected' | 'stopped';

export interface ReadyTaintOptions {
  readonly retryMs?: number;
  readonly maxRetryMs?: number;
}

/** One JSON-patch operation (RFC 6902), the two kinds used here. */
type PatchOp = { op: 'test'; path: string; value: string } | { op: 'remove'; path: string };

/** The patch removing every taint with `key` from `taints` (highest index first), or undefined when none has it. */
export function taintRemovalPatch(taints: readonly { key?: string }[], key: string): PatchOp[] | undefined {
  const ops: PatchOp[] = [];
  for (let i = taints.length - 1; i >= 0; i--) {
    if (taints[i]!.key !== key) continue;
    ops.push({ op: 'test', path: `/spec/taints/${i}/key`, value: key }, { op: 'remove', path: `/spec/taints/${i}` });
  }
  return ops.length > 0 ? ops : undefined;
}

export class ReadyTaint {
  private readonly api: CoreV1Api;
  private stateNow: ReadyTaintState = 'idle';
  private timer: NodeJS.Timeout | undefined;
  private delayMs: number;
  private readonly retryMs: number;
  private readonly maxRetryMs: number;
  /** API requests made (tests, metrics). */
  attempts = 0;

  constructor(
    kc: KubeConfig,
    private readonly nodeName: string,
    private readonly key: string,
    private readonly log: Logger,
    options: ReadyTaintOptions = {},
  ) {
    this.api = kc.makeApiClient(CoreV1Api);
    this.retryMs = options.retryMs ?? 1000;
    this.maxRetryMs = options.maxRetryMs ?? 60_000;
    this.delayMs = this.retryMs;
  }

  get state(): ReadyTaintState {
    return this.stateNow;
  }

  /** The agent enforces: remove the taint (returns at once; idempotent). */
  start(): void {
    if (this.stateNow !== 'idle') return;
    this.stateNow = 'working';
    void this.attempt();
  }

  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.stateNow === 'working' || this.stateNow === 'idle') this.stateNow = 'stopped';
  }

  /** Resolves once the removal is over (removed, absent, forbidden, rejected or stopped), or after `timeoutMs`. */
  async settled(timeoutMs: number): Promise<ReadyTaintState> {
    const end = Date.now() + timeoutMs;
    while (this.stateNow === 'working' && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    return this.stateNow;
  }

  private async attempt(): Promise<void> {
    if (this.stateNow !== 'working') return;
    let status: number | undefined;
    try {
      this.attempts++;
      const node = await this.api.readNode({ name: this.nodeName });
      if (this.stateNow !== 'working') return;
      const patch = taintRemovalPatch(node.spec?.taints ?? [], this.key);
      if (patch === undefined) {
        this.stateNow = 'absent';
        this.log.debug({ node: this.nodeName, taint: this.key }, 'the node has no readiness taint to remove');
        return;
      }
      this.attempts++;
      await this.api.patchNode({ name: this.nodeName, body: patch }, setHeaderOptions('Content-Type', PatchStrategy.JsonPatch));
      if (this.stateNow !== 'working') return;
      this.stateNow = 'removed';
      this.log.info({ node: this.nodeName, taint: this.key }, 'removed the readiness taint from this node: pods may be scheduled here');
      return;
    } catch (e) {
      status = typeof (e as { code?: unknown }).code === 'number' ? ((e as { code: number }).code) : undefined;
      if (this.stateNow !== 'working') return;
      if (status === 403) {
        this.stateNow = 'forbidden';
        this.log.error(
          { code: 'NETPOLD_E_TAINT', node: this.nodeName, taint: this.key, status },
          'cannot remove the readiness taint from this node (RBAC: get and patch on nodes, deploy/optional/ready-taint.yaml); the node stays tainted, enforcement is unaffected',
        );
        return;
      }
      if (status === 400 || status === 405 || status === 415) {
        // The server refuses the request itself: trying it again would not change that.
        this.stateNow = 'rejected';
        this.log.error({ code: 'NETPOLD_E_TAINT', node: this.nodeName, taint: this.key, status, error: e instanceof Error ? e.message.slice(0, 200) : String(e) }, 'the API server rejected the readiness taint patch; the node stays tainted, enforcement is unaffected');
        return;
      }
      // 422: a test failed (the taints changed since they were read); 404: no Node yet; 401: a
      // token being rotated; 5xx, 429 and network errors: transient.
      this.log.warn({ code: 'NETPOLD_E_TAINT', node: this.nodeName, taint: this.key, status, retryMs: this.delayMs, error: e instanceof Error ? e.message.slice(0, 200) : String(e) }, 'removing the readiness taint failed; retrying');
    }
    const delay = this.delayMs;
    this.delayMs = Math.min(this.maxRetryMs, this.delayMs * 2);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.attempt();
    }, delay);
    this.timer.unref();
  }
}
