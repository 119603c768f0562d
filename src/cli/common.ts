// Shared pieces of the CLI commands: loading manifests, reporting their problems, resolving
// `NS/POD|IP` arguments. Commands write only through the `Io` they are given.
import { formatManifestError, NetpoldError } from '../errors.js';
import type { ClusterState, Protocol } from '../model/types.js';
import { PROTOCOLS } from '../model/types.js';
import { loadManifestPaths } from '../source/files/load.js';

export interface Io {
  out(text: string): void;
  err(text: string): void;
}

export const EXIT_OK = 0;
export const EXIT_DENIED = 1;
export const EXIT_INPUT = 2;

/**
 * Loads manifests and reports every error and notice on stderr. With `allowErrors`, invalid
 * objects are reported but evaluation goes on (invalid policies fail closed); otherwise any
 * error makes the command exit 2.
 */
export function loadOrReport(io: Io, paths: string[], allowErrors: boolean): ClusterState | undefined {
  if (paths.length === 0) throw new NetpoldError('NETPOLD_E_USAGE', 'no manifests given: pass --manifests PATH...');
  const res = loadManifestPaths(paths);
  for (const n of res.notices) io.err(`notice: ${n}`);
  for (const e of res.errors) io.err(`error: ${formatManifestError(e)}`);
  if (res.errors.length > 0) {
    if (!allowErrors) {
      io.err(`${res.errors.length} error(s) in the manifests; nothing was evaluated (use --allow-errors to evaluate anyway, with invalid policies failing closed)`);
      return undefined;
    }
  }
  return res.state;
}

export function parseProtocol(text: string | undefined): Protocol {
  const p = (text ?? 'TCP').toUpperCase();
  if (!(PROTOCOLS as readonly string[]).includes(p)) {
    throw new NetpoldError('NETPOLD_E_USAGE', `--protocol must be one of ${PROTOCOLS.join(', ')}, not ${text}`);
  }
  return p as Protocol;
}

export function parsePort(text: string | undefined): number {
  const n = Number(text);
  if (text === undefined || !/^\d+$/.test(text) || n < 1 || n > 65535) {
    throw new NetpoldError('NETPOLD_E_USAGE', `--port must be a number from 1 to 65535, not ${text ?? '(missing)'}`);
  }
  return n;
}

export function parseFamily(text: string | undefined): 4 | 6 | undefined {
  if (text === undefined) return undefined;
  if (text === '4' || text === '6') return Number(text) as 4 | 6;
  throw new NetpoldError('NETPOLD_E_USAGE', `--family must be 4 or 6, not ${text}`);
}

// Endpoint resolution moved to src/policy/endpoints.ts (the agent's explain service uses it too).
export { familyOf, pickAddresses, resolveEndpoint, type Endpoint } from '../policy/endpoints.js';
