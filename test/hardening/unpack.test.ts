/**
 * Sysext images are hostile, and inspecting one unpacks part of it onto the scratch disk (erofs:
 * all of it, with fsck.erofs; squashfs: the release file, for its xattrs). An image that expands
 * hundreds of times (a compressed file of zeros) is stopped at a cap with a clean error naming the
 * image, and no scratch folder is left behind.
 */
import { readdirSync, truncateSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { kbundle } from '../helpers/cli.js';
import { cleanupTempDirs, mustRun, tempDir } from '../helpers/exec.js';

afterAll(cleanupTempDirs);

const scratchFolders = (label: string) => readdirSync(tmpdir()).filter((n) => n.startsWith(`.kbundle-${label}-`));

function nodeRoot(): string {
  const root = tempDir();
  mkdirSync(join(root, 'etc'), { recursive: true });
  writeFileSync(join(root, 'etc/os-release'), 'ID=debian\nVERSION_ID=12\n');
  return root;
}

describe('unpacking a hostile extension image is capped', () => {
  it('an erofs image of 300 MiB of zeros (about 1.5 MB packed) is refused, not unpacked whole', () => {
    const dir = tempDir();
    const tree = join(dir, 'tree');
    mkdirSync(join(tree, 'usr/lib/extension-release.d'), { recursive: true });
    writeFileSync(join(tree, 'usr/lib/extension-release.d/extension-release.bomb'), 'ID=_any\n');
    writeFileSync(join(tree, 'usr/zeros'), '');
    truncateSync(join(tree, 'usr/zeros'), 300 * 1024 * 1024);
    const image = join(dir, 'bomb.raw');
    mustRun('mkfs.erofs', ['-zlz4hc', image, tree]);
    const before = scratchFolders('erofs');
    const r = kbundle(['sysext', 'check', image, '--root', nodeRoot()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${image}: the erofs image unpacks to more than`);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(scratchFolders('erofs')).toEqual(before);
  });

  it('a plain erofs extension of the same shape, small, is still inspected', () => {
    const dir = tempDir();
    const tree = join(dir, 'tree');
    mkdirSync(join(tree, 'usr/lib/extension-release.d'), { recursive: true });
    writeFileSync(join(tree, 'usr/lib/extension-release.d/extension-release.small'), 'ID=_any\n');
    writeFileSync(join(tree, 'usr/zeros'), Buffer.alloc(1024 * 1024));
    const image = join(dir, 'small.raw');
    mustRun('mkfs.erofs', ['-zlz4hc', image, tree]);
    const r = kbundle(['sysext', 'check', image, '--root', nodeRoot()]);
    expect(r.stderr).not.toContain('unpacks to more than');
    expect(r.stdout + r.stderr).toContain('small');
  });
});
