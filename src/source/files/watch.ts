// The manifests-folder source: loads the paths, then reloads them whenever a file below them
// changes (coalesced: one reload per burst of file events).
import { watch, type FSWatcher } from 'node:fs';
import { statSync } from 'node:fs';
import { dirname } from 'node:path';
import type { SourceUpdate, StateSource } from '../source.js';
import { loadManifestPaths } from './load.js';

/** Codes that mean the input was not read as a whole: such an update is not applied. */
const UNUSABLE = new Set(['NETPOLD_E_IO', 'NETPOLD_E_PARSE']);

export class ManifestFolderSource implements StateSource {
  private watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly paths: readonly string[],
    private readonly debounceMs = 150,
  ) {}

  load(): SourceUpdate {
    const r = loadManifestPaths([...this.paths]);
    return { state: r.state, errors: r.errors, unusable: r.errors.some((e) => UNUSABLE.has(e.code)) };
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
        this.timer = setTimeout(() => onUpdate(this.load()), this.debounceMs);
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
