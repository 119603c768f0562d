// Best-effort Kubernetes Events (core/v1) on objects the agent rejects, so that whoever applied
// the object sees why with `kubectl describe` / `kubectl get events`. Never blocks or fails the
// source: posts are queued (bounded), and when RBAC forbids creating Events the agent logs that
// once and stops trying.
//
// Every node's agent sees the same rejected object. The Event's name is derived from the
// object's uid and resourceVersion, so the first agent creates it and the others get
// AlreadyExists (409), which is expected and not logged above debug.
import { createHash } from 'node:crypto';
import { CoreV1Api, type CoreV1Event, type KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../../log.js';
import { API_VERSION, describeRef, type ObjectRef } from './convert.js';

export const EVENT_REASON = 'NetpoldRejected';
const MAX_MESSAGE = 1024;
const MAX_QUEUE = 256;

export interface EventCounters {
  posted: number;
  failed: number;
  dropped: number;
}

export class EventReporter {
  private readonly api: CoreV1Api;
  private readonly queue: { ref: ObjectRef; message: string }[] = [];
  private running = false;
  private disabled = false;
  private overflowLogged = false;
  readonly counters: EventCounters = { posted: 0, failed: 0, dropped: 0 };

  constructor(
    kc: KubeConfig,
    private readonly log: Logger,
    private readonly nodeName: string | undefined,
  ) {
    this.api = kc.makeApiClient(CoreV1Api);
  }

  /** Queues an Event about `ref` (returns at once). */
  report(ref: ObjectRef, message: string): void {
    if (this.disabled) return;
    if (this.queue.length >= MAX_QUEUE) {
      this.counters.dropped++;
      if (!this.overflowLogged) {
        this.overflowLogged = true;
        this.log.warn({ queued: this.queue.length }, 'too many rejected objects at once: some Events are not posted (the log lines remain)');
      }
      return;
    }
    this.queue.push({ ref, message });
    if (!this.running) void this.drain();
  }

  /** Resolves when the queue is empty (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.running) await new Promise((r) => setTimeout(r, 5));
  }

  stop(): void {
    this.disabled = true;
    this.queue.length = 0;
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      for (let next = this.queue.shift(); next !== undefined && !this.disabled; next = this.queue.shift()) {
        await this.post(next.ref, next.message);
      }
    } finally {
      this.running = false;
    }
  }

  private async post(ref: ObjectRef, message: string): Promise<void> {
    const namespace = ref.namespace ?? 'default';
    const now = new Date();
    const body: CoreV1Event = {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: eventName(ref, message), namespace },
      involvedObject: {
        apiVersion: API_VERSION[ref.kind],
        kind: ref.kind,
        name: ref.name,
        namespace: ref.namespace,
        uid: ref.uid,
        resourceVersion: ref.resourceVersion,
      },
      reason: EVENT_REASON,
      message: message.length <= MAX_MESSAGE ? message : `${message.slice(0, MAX_MESSAGE - 1)}…`,
      type: 'Warning',
      source: { component: 'netpold', host: this.nodeName },
      reportingComponent: 'netpold',
      reportingInstance: this.nodeName ?? 'netpold',
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
    try {
      await this.api.createNamespacedEvent({ namespace, body });
      this.counters.posted++;
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      if (code === 409) return; // another node's agent reported this version already
      this.counters.failed++;
      if (code === 401 || code === 403) {
        this.disabled = true;
        this.queue.length = 0;
        this.log.warn({ status: code, object: describeRef(ref) }, 'creating Events is not allowed (RBAC: create on events); rejected objects are only logged from now on');
        return;
      }
      this.log.debug({ status: code, object: describeRef(ref), error: e instanceof Error ? e.message.slice(0, 200) : String(e) }, 'posting an Event failed');
    }
  }
}

/** `<object name>.<16 hex digits of kind/namespace/name/uid/resourceVersion/message>`: one Event per object version and problem. */
export function eventName(ref: ObjectRef, message: string): string {
  const h = createHash('sha256').update(`${ref.kind}/${ref.namespace ?? ''}/${ref.name}/${ref.uid ?? ''}/${ref.resourceVersion}/${message}`).digest('hex').slice(0, 16);
  return `${ref.name.slice(0, 200)}.${h}`;
}
