// Builds native/build/Release/netpold_native.node with node-gyp; run by the package's
// "install" script (so `npm ci` builds it) and usable by hand: `node native/build.mjs`.
//
// node-gyp must never download Node headers (machines here reach no such host), so it is
// always pointed at the headers of the running Node itself: <prefix>/include/node/node.h,
// where <prefix> is two levels above the node binary (/usr for Debian's nodejs, the install
// directory for the official tarballs). An explicit npm_config_nodedir (or --nodedir) wins.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

function headersAt(dir) {
  return dir !== undefined && dir !== '' && existsSync(join(dir, 'include', 'node', 'node.h'));
}

const candidates = [process.env.npm_config_nodedir, dirname(dirname(process.execPath))];
const nodedir = candidates.find(headersAt);
if (nodedir === undefined) {
  console.error(
    `netpold: Node.js headers not found (looked for include/node/node.h under ${candidates.filter(Boolean).join(', ')}).\n` +
      'Install a Node.js that ships its headers (the official builds and NodeSource packages do), ' +
      'or set npm_config_nodedir to a directory containing include/node/node.h.',
  );
  process.exit(1);
}

const gyp = require.resolve('node-gyp/bin/node-gyp.js');
const args = [gyp, 'rebuild', `--directory=${here}`, `--nodedir=${nodedir}`, ...process.argv.slice(2)];
const r = spawnSync(process.execPath, args, { stdio: 'inherit', env: { ...process.env, npm_config_nodedir: nodedir } });
if (r.error) {
  console.error(`netpold: could not run node-gyp: ${r.error.message}`);
  process.exit(1);
}
process.exit(r.status ?? 1);
