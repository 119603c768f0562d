// Every error code of the catalogue is documented in the README's error table.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';

describe('error catalogue', () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  it.each(Object.keys(ErrorCodes))('%s is in the README error table', (code) => {
    expect(readme).toMatch(new RegExp(`^\\| \`${code}\` \\|`, 'm'));
  });
  it('codes used in the source all exist in the catalogue', () => {
    expect(Object.keys(ErrorCodes).every((c) => /^NETPOLD_E_[A-Z_]+$/.test(c))).toBe(true);
  });
});
