// The contract between cluster-state sources (a folder of manifests today, Kubernetes
// informers later) and the agent. Every source emits whole, validated states into one sink;
// nothing downstream knows which source is in use.
import type { ManifestError } from '../errors.js';
import type { ClusterState } from '../model/types.js';

export interface SourceUpdate {
  readonly state: ClusterState;
  /** Problems with individual objects (invalid policies are in `state`, failing closed). */
  readonly errors: readonly ManifestError[];
  /**
   * True when the input could not be read as a whole (unreadable file, broken YAML): the
   * update must not be applied, the last good state stays enforced.
   */
  readonly unusable: boolean;
}

export interface StateSource {
  /** Starts delivering updates; resolves after the first one was delivered. */
  start(onUpdate: (u: SourceUpdate) => void): Promise<void>;
  stop(): Promise<void>;
}
