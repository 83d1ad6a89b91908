/**
 * `npm run sea` is byte-reproducible: two builds from the same checkout give the same
 * executables, and SHA256SUMS is what `sha256sum -c` checks.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupTempDirs } from './helpers/exec.js';
import { buildSea } from './helpers/sea.js';

afterAll(cleanupTempDirs);

describe.runIf(!process.env.KBUNDLE_SEA_DIR)('npm run sea', () => {
  it('two builds give the same SHA256SUMS, which sha256sum -c accepts', () => {
    const a = buildSea(['linux/amd64', 'linux/arm64'], { fresh: true });
    const b = buildSea(['linux/amd64', 'linux/arm64'], { fresh: true });
    const sums = readFileSync(`${a}/SHA256SUMS`, 'utf8');
    expect(sums).toMatch(/^[0-9a-f]{64} {2}kbundle-linux-amd64\n[0-9a-f]{64} {2}kbundle-linux-arm64\n$/);
    expect(readFileSync(`${b}/SHA256SUMS`, 'utf8')).toBe(sums);
    const check = spawnSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: a, encoding: 'utf8' });
    expect(check.status, check.stderr).toBe(0);
    expect(check.stdout).toBe('kbundle-linux-amd64: OK\nkbundle-linux-arm64: OK\n');
  }, 600_000);
});
