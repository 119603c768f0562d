// The netpold package root: the nearest folder above this module whose package.json is named
// netpold. Modules run both from src/ (vitest) and from dist/src/ (built), so paths to
// examples/, dist/ and native/ are resolved from here rather than relative to a module.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/** The package root, or undefined if this module is not inside the netpold package. */
export function findPackageRoot(): string | undefined {
  if (cached !== undefined) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 12; i++) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'netpold') return (cached = dir);
      } catch {
        // not ours: keep walking up
      }
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return undefined;
}
