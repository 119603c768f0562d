// How the agent reaches the API server: a kubeconfig file (--kubeconfig) or, inside a pod, the
// service-account files and KUBERNETES_SERVICE_HOST/PORT (--in-cluster). Problems are reported
// up front as NETPOLD_E_KUBECONFIG, before any interception is installed.
import { accessSync, constants } from 'node:fs';
import { KubeConfig } from '@kubernetes/client-node';
import { environment } from '../../config/env.js';
import { NetpoldError } from '../../errors.js';

export type KubeConnection = { readonly kubeconfig: string } | { readonly inCluster: true };

/** Where Kubernetes mounts a pod's service-account credentials. */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export function loadKubeConfig(c: KubeConnection): KubeConfig {
  const kc = new KubeConfig();
  if ('inCluster' in c) {
    const missing: string[] = [];
    for (const v of ['KUBERNETES_SERVICE_HOST', 'KUBERNETES_SERVICE_PORT']) if (!environment()[v]) missing.push(`environment variable ${v}`);
    for (const f of ['token', 'ca.crt']) {
      try {
        accessSync(`${SERVICE_ACCOUNT_DIR}/${f}`, constants.R_OK);
      } catch {
        missing.push(`${SERVICE_ACCOUNT_DIR}/${f}`);
      }
    }
    if (missing.length > 0) {
      throw new NetpoldError('NETPOLD_E_KUBECONFIG', `--in-cluster works only inside a Kubernetes pod with a service account; missing: ${missing.join(', ')} (use --kubeconfig PATH outside a cluster)`);
    }
    kc.loadFromCluster();
  } else {
    try {
      kc.loadFromFile(c.kubeconfig);
    } catch (e) {
      throw new NetpoldError('NETPOLD_E_KUBECONFIG', `cannot load kubeconfig ${c.kubeconfig}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  const cluster = kc.getCurrentCluster();
  if (cluster === null || !cluster.server) {
    throw new NetpoldError('NETPOLD_E_KUBECONFIG', 'the kubeconfig has no current context with a cluster server; set current-context');
  }
  if (cluster.server.startsWith('http:') && !cluster.skipTLSVerify) {
    throw new NetpoldError('NETPOLD_E_KUBECONFIG', `the API server ${cluster.server} is plain HTTP; the client library accepts that only with insecure-skip-tls-verify: true`);
  }
  return kc;
}
