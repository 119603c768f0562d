// The process environment. This module (src/config/) is the only place netpold reads it: the
// agent's NETPOLD_* settings, NETPOLD_DEBUG, and what library code needs passed on (the
// Kubernetes in-cluster variables, PATH for the lab's tools).
export type Environment = Readonly<Record<string, string | undefined>>;

/** The live process environment (read-only view). */
export function environment(): Environment {
  return process.env;
}

/** NETPOLD_DEBUG set (and not 0/false): internal errors print their stack trace. */
export function debugEnabled(env: Environment = environment()): boolean {
  const v = env['NETPOLD_DEBUG'];
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}
