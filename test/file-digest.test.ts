/** verifyFilesInOrder (src/oci/file-digest-worker.ts): the first file on the calling thread, the rest on one worker. */
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DigestMismatchError, SizeMismatchError } from '../src/oci/digest.js';
import { verifyFilesInOrder } from '../src/oci/file-digest-worker.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';

afterAll(cleanupTempDirs);

function file(dir: string, name: string, size: number) {
  const data = randomBytes(size);
  writeFileSync(join(dir, name), data);
  return { path: join(dir, name), digest: `sha256:${createHash('sha256').update(data).digest('hex')}`, size, what: name };
}

const outcome = (p: Promise<void>) =>
  p.then(
    () => 'ok',
    (e: unknown) => (e instanceof DigestMismatchError ? 'digest' : e instanceof SizeMismatchError ? 'size' : `${(e as { code?: string }).code}`),
  );

describe('verifyFilesInOrder', () => {
  it('settles each file by its own bytes, whether hashed on this thread (the first) or on the worker', async () => {
    const dir = tempDir();
    const good = [file(dir, 'a', 3_000_000), file(dir, 'b', 10), file(dir, 'c', 1_500_000)];
    expect(await Promise.all(verifyFilesInOrder(good).map(outcome))).toEqual(['ok', 'ok', 'ok']);
    for (const at of [0, 1]) {
      const wrongDigest = good.map((f, i) => (i === at ? { ...f, digest: good[2]!.digest } : f));
      expect(await Promise.all(verifyFilesInOrder(wrongDigest).map(outcome))).toEqual(['ok', 'ok', 'ok'].map((o, i) => (i === at ? 'digest' : o)));
      const wrongSize = good.map((f, i) => (i === at ? { ...f, size: f.size + 1 } : f));
      expect(await Promise.all(verifyFilesInOrder(wrongSize).map(outcome))).toEqual(['ok', 'ok', 'ok'].map((o, i) => (i === at ? 'size' : o)));
      const missing = good.map((f, i) => (i === at ? { ...f, path: join(dir, 'gone') } : f));
      expect(await Promise.all(verifyFilesInOrder(missing).map(outcome))).toEqual(['ok', 'ok', 'ok'].map((o, i) => (i === at ? 'NOT_FOUND' : o)));
    }
    expect(verifyFilesInOrder([])).toEqual([]);
  });
});
