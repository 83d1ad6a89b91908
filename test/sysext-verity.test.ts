import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkVerity, computeVerity, LeafHashers, verityHashSize } from '../src/sysext/verity.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { requireTools } from './fixtures/sysext/helpers.js';

afterAll(cleanupTempDirs);

const salt = Buffer.from('5a'.repeat(32), 'hex');
const uuid = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';

/** veritysetup's hash file for `data` with the same salt and UUID: the reference tree. */
function veritysetupFormat(data: string, hash: string): string {
  const r = spawnSync('veritysetup', ['format', data, hash, `--salt=${salt.toString('hex')}`, `--uuid=${uuid}`], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return /Root hash:\s+([0-9a-f]{64})/.exec(r.stdout)![1]!;
}

describe('dm-verity hash trees', () => {
  beforeAll(() => requireTools('veritysetup'));

  // Block counts around the edges of the hashing code: one hash block (128 digests), one readv
  // batch (1024 blocks), the point where a second worker joins (4096), uneven worker shares.
  it.each([2, 127, 128, 129, 1023, 1024, 1025, 4097, 8195, 20001])('%i data blocks: byte-identical to veritysetup format', async (blocks) => {
    const dir = tempDir();
    const data = join(dir, 'data');
    writeFileSync(data, randomBytes(blocks * 4096));
    const expectedRoot = veritysetupFormat(data, join(dir, 'hash'));
    const reference = readFileSync(join(dir, 'hash'));
    const tree = await computeVerity(data, blocks * 4096, { salt, uuid: Buffer.from(uuid.replace(/-/g, ''), 'hex') });
    expect(tree.rootHash.toString('hex')).toBe(expectedRoot);
    expect(tree.hashImage.length).toBe(verityHashSize(blocks * 4096));
    expect(tree.hashImage.equals(reference.subarray(0, tree.hashImage.length))).toBe(true);
    // And the checker (data and hash partitions in one file, as in a disk image) agrees, and
    // notices one flipped data byte.
    const size = blocks * 4096;
    const image = join(dir, 'image');
    const dataBytes = readFileSync(data);
    writeFileSync(image, Buffer.concat([dataBytes, reference]));
    const ok = await checkVerity(image, { offset: 0, size }, { offset: size, size: reference.length }, 'test');
    expect(ok.treeMatches).toBe(true);
    expect(ok.rootHash.toString('hex')).toBe(expectedRoot);
    dataBytes[Math.floor(size / 2)]! ^= 1;
    writeFileSync(image, Buffer.concat([dataBytes, reference]));
    const bad = await checkVerity(image, { offset: 0, size }, { offset: size, size: reference.length }, 'test');
    expect(bad.treeMatches).toBe(false);
    expect(bad.rootHash.toString('hex')).not.toBe(expectedRoot);
  });

  it('hashes data at an offset inside a larger file (the in-place disk image layout)', async () => {
    const dir = tempDir();
    const payload = randomBytes(300 * 4096);
    writeFileSync(join(dir, 'data'), payload);
    const expectedRoot = veritysetupFormat(join(dir, 'data'), join(dir, 'hash'));
    writeFileSync(join(dir, 'image'), Buffer.concat([randomBytes(1024 * 1024), payload, randomBytes(8192)]));
    const tree = await computeVerity(join(dir, 'image'), payload.length, { salt, uuid: Buffer.alloc(16) }, 1024 * 1024);
    expect(tree.rootHash.toString('hex')).toBe(expectedRoot);
  });

  it('still hashes everything when its worker threads are gone before the job', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'data'), randomBytes(5000 * 4096));
    const expectedRoot = veritysetupFormat(join(dir, 'data'), join(dir, 'hash'));
    const hashers = new LeafHashers(1);
    await hashers.close();
    const tree = await computeVerity(join(dir, 'data'), 5000 * 4096, { salt, uuid: Buffer.alloc(16) }, 0, hashers);
    expect(tree.rootHash.toString('hex')).toBe(expectedRoot);
  });

  it('runs the before-hashing hook once, and a failing hook fails the job and frees its threads', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'data'), randomBytes(5000 * 4096));
    const expectedRoot = veritysetupFormat(join(dir, 'data'), join(dir, 'hash'));
    let calls = 0;
    const tree = await computeVerity(join(dir, 'data'), 5000 * 4096, { salt, uuid: Buffer.alloc(16) }, 0, new LeafHashers(1), () => calls++);
    expect(calls).toBe(1);
    expect(tree.rootHash.toString('hex')).toBe(expectedRoot);
    const failing = computeVerity(join(dir, 'data'), 5000 * 4096, { salt, uuid: Buffer.alloc(16) }, 0, new LeafHashers(1), () => {
      throw new Error('repart would not start');
    });
    await expect(failing).rejects.toThrow('repart would not start');
  });

  it('reports the short chunk when a thread of a shared job hits the end of a file, and the others stop', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'short'), randomBytes(4500 * 4096));
    // 5000 blocks claimed, 4500 present: the chunk at 4096 (512-block chunks) is the short one.
    const job = computeVerity(join(dir, 'short'), 5000 * 4096, { salt, uuid: Buffer.alloc(16) }, 0, new LeafHashers(2));
    await expect(job).rejects.toThrow(/verity hashing failed: short read at block 4096$/);
  });

  it('reports a file shorter than the region instead of hashing garbage, and frees its threads', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'short'), randomBytes(10 * 4096));
    const hashers = new LeafHashers(2);
    await expect(computeVerity(join(dir, 'short'), 20 * 4096, { salt, uuid: Buffer.alloc(16) }, 0, hashers)).rejects.toThrow(/verity hashing failed: short read/);
  });
});
