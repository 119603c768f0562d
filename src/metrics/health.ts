// /healthz and /readyz decisions, from the agent's state and the loop monitor.
import type { Phase } from '../agent/agent.js';
import type { LoopMonitor } from './loop-monitor.js';
import type { Check } from './server.js';

export interface HealthView {
  readonly phase: Phase;
  readonly interceptionInstalled: boolean;
  /** Installed, but pods on a bridge are not redirected (closed instead) or a port is unhooked. */
  readonly interceptionDegraded?: boolean;
  readonly ready: boolean;
}

/** Alive, and the event loop has not been blocked longer than `maxLagMs` recently. */
export function healthCheck(loop: LoopMonitor, maxLagMs: number, agent: HealthView): Check {
  const lagMs = Math.round(loop.lagMs);
  const ok = lagMs <= maxLagMs;
  return { ok, detail: { phase: agent.phase, eventLoopLagMs: lagMs, maxEventLoopLagMs: maxLagMs, ...(ok ? {} : { problem: 'the event loop was blocked longer than allowed' }) } };
}

/** Ready: interception installed and doing its whole job, and a snapshot enforced. */
export function readinessCheck(agent: HealthView, revision: number): Check {
  return {
    ok: agent.ready,
    detail: {
      phase: agent.phase,
      interception: agent.interceptionInstalled,
      revision,
      ...(agent.ready
        ? {}
        : {
            problem:
              agent.phase === 'fail_closed'
                ? 'no policy state compiled yet: every flow is refused'
                : agent.phase === 'starting'
                  ? 'interception not installed yet'
                  : agent.interceptionDegraded === true && agent.phase === 'enforcing'
                    ? 'pods on a bridge are not redirected (their traffic is dropped, or a port cannot be hooked): see the log (NETPOLD_E_INTERCEPTION, NETPOLD_E_UNSUPPORTED_NODE)'
                    : `agent is ${agent.phase}`,
          }),
    },
  };
}
