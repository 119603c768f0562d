// Reading manifest paths from disk: files as given, folders recursively (*.yaml, *.yml, *.json)
// in sorted order so results are deterministic. Unreadable paths are NETPOLD_E_IO.
import { readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import type { ManifestError } from '../../errors.js';
import { MAX_FILE_CHARS } from './documents.js';
import { escapeText } from './report.js';

const MANIFEST_EXTENSIONS = ['.yaml', '.yml', '.json'];
const MAX_DEPTH = 64;

export interface ReadFiles {
  readonly docs: { file: string; text: string }[];
  readonly errors: ManifestError[];
}

export function readManifestFiles(paths: readonly string[]): ReadFiles {
  const out: ReadFiles = { docs: [], errors: [] };
  const seen = new Set<string>();
  const list = Array.isArray(paths) ? paths : [];
  for (const p of list) {
    if (typeof p !== 'string' || p === '') {
      ioError(out, String(p), 'not a path');
      continue;
    }
    visit(p, out, seen, new Set(), 0, true);
  }
  return out;
}

function visit(path: string, out: ReadFiles, seen: Set<string>, dirs: Set<string>, depth: number, explicit: boolean): void {
  let isDir: boolean;
  let isFile: boolean;
  try {
    const st = statSync(path);
    isDir = st.isDirectory();
    isFile = st.isFile();
  } catch (e) {
    ioError(out, path, reason(e));
    return;
  }
  if (isDir) {
    walk(path, out, seen, dirs, depth);
  } else if (isFile) {
    // A file named explicitly is read whatever its extension; in folders only manifests are.
    if (explicit || MANIFEST_EXTENSIONS.includes(extname(path).toLowerCase())) readOne(path, out, seen);
  } else if (explicit) {
    ioError(out, path, 'not a regular file or folder');
  }
}

function walk(dir: string, out: ReadFiles, seen: Set<string>, dirs: Set<string>, depth: number): void {
  const real = realPath(dir);
  if (dirs.has(real)) return; // a symlink loop
  if (depth >= MAX_DEPTH) {
    ioError(out, dir, `folders nested more than ${MAX_DEPTH} deep`);
    return;
  }
  let names: string[];
  try {
    names = readdirSync(dir).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  } catch (e) {
    ioError(out, dir, reason(e));
    return;
  }
  const inner = new Set(dirs).add(real);
  for (const name of names) visit(join(dir, name), out, seen, inner, depth + 1, false);
}

function readOne(file: string, out: ReadFiles, seen: Set<string>): void {
  const real = realPath(file);
  if (seen.has(real)) return; // the same file reached twice (named and inside a folder)
  seen.add(real);
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    ioError(out, file, reason(e));
    return;
  }
  if (bytes.length > MAX_FILE_CHARS) {
    ioError(out, file, `file of ${bytes.length} bytes exceeds the ${MAX_FILE_CHARS}-byte limit`);
    return;
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    out.errors.push({ code: 'NETPOLD_E_PARSE', file: escapeText(file), object: undefined, path: undefined, message: 'not UTF-8 text; manifests must be YAML or JSON in UTF-8' });
    return;
  }
  out.docs.push({ file, text });
}

function realPath(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

/** `file` and `why` (a system message, which may quote the path) are escaped: a name can hold any character. */
function ioError(out: ReadFiles, file: string, why: string): void {
  const name = escapeText(file);
  out.errors.push({ code: 'NETPOLD_E_IO', file: name, object: undefined, path: undefined, message: `cannot read ${name}: ${escapeText(why)}` });
}

function reason(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'no such file or folder';
    if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
    return e.message.split('\n', 1)[0] ?? 'unknown error';
  }
  return 'unknown error';
}
