// The manifests-folder source: loads the paths, then reloads them whenever a file below them
// changes (coalesced: one reload per burst of file events).
import { watch, type FSWatcher } from 'node:fs';
import { statSync } from 'node:fs';
import { dirname } from 'node:path';
import type { SourceUpdate, StateSource } from '../source.js';
import { loadManifestPaths } from './load.js';

/** Codes that mean the input was not read as a whole: such an update is not applied. */
const UNUSABLE = new Set(['NETPOLD_E_IO', 'NETPOLD_E_PARSE']);

export interface ManifestFolderCounters {
  /** Loads delivered (the first one and every reload). */
  loads: number;
  /** Reloads caused by file changes. */
  reloads: number;
  /** Loads that could not be read as a whole (not applied). */
  unusable: number;
  /** Object errors reported in loads. */
  objectErrors: number;
  /** When the last usable load completed (ms since the epoch); 0 before. */
  lastLoadTime: number;
}

export class ManifestFolderSource implements StateSource {
  readonly counters: ManifestFolderCounters = { loads: 0, reloads: 0, unusable: 0, objectErrors: 0, lastLoadTime: 0 };
  private watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly paths: readonly string[],
    private readonly debounceMs = 150,
  ) {}

  load(): SourceUpdate {
    const r = loadManifestPaths([...this.paths]);
    const unusable = r.errors.some((e) => UNUSABLE.has(e.code));
    this.counters.loads++;
    this.counters.objectErrors += r.errors.length;
    if (unusable) this.counters.unusable++;
    else this.counters.lastLoadTime = Date.now();
    return { state: r.state, errors: r.errors, unusable };
  }

  async start(onUpdate: (u: SourceUpdate) => void): Promise<void> {
    onUpdate(this.load());
    for (const p of this.paths) {
      let dir = p;
      try {
        if (!statSync(p).isDirectory()) dir = dirname(p);
      } catch {
        dir = dirname(p);
      }
      // Recursive watching is supported on Linux from Node 20.
      const w = watch(dir, { recursive: true, persistent: false }, () => {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => {
          this.counters.reloads++;
          onUpdate(this.load());
        }, this.debounceMs);
      });
      w.on('error', () => {});
      this.watchers.push(w);
    }
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    for (const w of this.watchers) w.close();
    this.watchers = [];
  }
}
