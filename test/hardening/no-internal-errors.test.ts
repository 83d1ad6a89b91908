/**
 * Hardening, class 8 (issue 16): every failure a user can reach with bad local input is a clean
 * message (which path, what to do) with an exit code in 1–123 — never "internal error", never a
 * stack trace. A matrix of commands × hostile inputs: missing paths, folders where files go, files
 * where folders go, empty and garbage files, unreadable files, a file in place of a parent folder.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { kbundleAsync } from '../helpers/cli.js';
import { cleanupTempDirs, tempDir } from '../helpers/exec.js';

afterAll(() => cleanupTempDirs());

const work = tempDir();
const missing = join(work, 'missing');
const folder = join(work, 'folder');
const empty = join(work, 'empty');
const garbage = join(work, 'garbage');
const unreadable = join(work, 'unreadable');
const underFile = join(garbage, 'below');
mkdirSync(folder);
writeFileSync(empty, '');
writeFileSync(garbage, Buffer.from([0x00, 0xff, 0x1f, 0x8b, 0x08, 0x00, 0x7b, 0x0a, 0x5b, 0x22]));
writeFileSync(unreadable, 'secret');
chmodSync(unreadable, 0o000);

const inputs = { missing, folder, empty, garbage, unreadable, underFile };

/** Each command with `X` where the hostile path goes. */
const COMMANDS: string[][] = [
  ['build', 'X', '-o', `oci:${join(work, 'out')}`],
  ['build', folder, '-o', 'oci:X'],
  ['validate', 'X'],
  ['import', 'X'],
  ['install', 'container://X', '--local-file', '--root', join(work, 'root')],
  ['install', '--config', 'X', '--root', join(work, 'root')],
  ['install', 'container://127.0.0.1:1/x:1', '--root', 'X'],
  ['push', 'oci:X', '127.0.0.1:1/x:1'],
  ['copy', 'oci-archive:X', `oci:${join(work, 'copy')}`],
  ['copy', 'docker-archive:X', `oci:${join(work, 'copy2')}`],
  ['inspect', 'oci:X'],
  ['verify', 'oci:X', '--key', garbage],
  ['verify', `oci:${folder}`, '--key', 'X'],
  ['verify', `oci:${folder}`, '--policy', 'X'],
  ['policy', 'check', '127.0.0.1:1/x:1', '--policy', 'X'],
  ['sign', `oci:${folder}`, '--key', 'X'],
  ['sysext', 'build', 'X', '--name', 'n', '-o', join(work, 'sx')],
  ['sysext', 'check', 'X'],
  ['sysext', 'install', 'file:X', '--root', join(work, 'root')],
  ['sysext', 'list', '--root', 'X'],
  ['catalog', 'build', '--catalog', 'X', '-o', `oci:${join(work, 'cat')}`],
  ['sign-blob', 'X', '--bundle', join(work, 'b.json'), '--key', garbage],
  ['sign-blob', garbage, '--bundle', join(work, 'b.json'), '--key', 'X'],
  ['verify-blob', 'X', '--bundle', garbage, '--key', garbage],
  ['verify-blob', garbage, '--bundle', 'X', '--certificate-identity', 'a', '--certificate-oidc-issuer', 'b'],
  ['verify-blob', garbage, '--bundle', garbage, '--key', 'X'],
  ['verify-blob', garbage, '--bundle', garbage, '--key', garbage, '--trusted-root', 'X'],
  ['trust', 'update', '--mirror', 'http://127.0.0.1:1', '--tuf-root', 'X', '--cache-dir', join(work, 'trust')],
  ['trust', 'update', '--mirror', 'http://127.0.0.1:1', '--cache-dir', 'X'],
  ['trust', 'show', '--cache-dir', 'X'],
];

describe('no internal errors for bad local input', () => {
  const cases = COMMANDS.flatMap((cmd) =>
    Object.entries(inputs).map(([kind, path]) => ({ name: `${cmd.join(' ').replace(/\/tmp\/\S+/g, '…')} with X = ${kind}`, args: cmd.map((a) => a.replace('X', path)) })),
  );
  it.each(cases)('$name', { timeout: 60_000 }, async ({ args }) => {
    const r = await kbundleAsync(args, { env: { ...process.env, KBUNDLE_PASSWORD: 'x' } });
    expect(r.stderr, args.join(' ')).not.toMatch(/internal error|\n\s+at .*\(.*:\d+:\d+\)/);
    if (r.code !== 0) {
      expect(r.code, r.stderr).toBeGreaterThanOrEqual(1);
      expect(r.code, r.stderr).toBeLessThanOrEqual(123);
      expect(r.stderr, args.join(' ')).toMatch(/^(kbundle: error: |error: )/m);
    }
  });
});
