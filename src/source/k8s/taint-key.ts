// The readiness taint's default key, apart from taint.ts so that the configuration can name it
// without importing the Kubernetes client library (a second to load; the agent imports it only
// with the Kubernetes source).
export const DEFAULT_READY_TAINT = 'netpold.io/agent-not-ready';
