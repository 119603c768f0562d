#!/usr/bin/env node
// Entry point of the `netpold` command. The TypeScript sources are compiled to dist/ by
// `npm ci` (the package's `prepare` script) or `npm run build`.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  process.stderr.write('netpold: dist/ is missing; run `npm ci` or `npm run build` first [NETPOLD_E_USAGE]\n');
  process.exit(2);
}
const { run } = await import(main.href);
process.exitCode = await run(process.argv.slice(2));
