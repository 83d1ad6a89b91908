/**
 * BackgroundFlush (src/util/background-flush.ts), which the layer writer and a durable layout's
 * blob downloads use: one fdatasync per 32 MiB written, never two at once, and a failed one is
 * reported by settled() (and no flush is started after it). The file handle is a real one; only its
 * datasync is wrapped to count and hold the calls.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BackgroundFlush } from '../src/util/background-flush.js';

const dir = mkdtempSync(join(tmpdir(), 'kbundle-flush-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const MiB = 1 << 20;

async function handle(name: string, datasync: (real: () => Promise<void>) => Promise<void>) {
  const fh = await open(join(dir, name), 'w');
  const real = fh.datasync.bind(fh);
  fh.datasync = () => datasync(real);
  return fh;
}

describe('BackgroundFlush', () => {
  it('flushes once per 32 MiB written, one flush at a time', async () => {
    let calls = 0;
    let release: () => void = () => undefined;
    const fh = await handle('a', async (real) => {
      calls++;
      await new Promise<void>((r) => (release = r));
      await real();
    });
    try {
      const flush = new BackgroundFlush(fh);
      for (let i = 0; i < 31; i++) flush.wrote(MiB);
      expect(calls).toBe(0);
      flush.wrote(MiB);
      expect(calls).toBe(1);
      // While that flush runs, another 64 MiB start none.
      for (let i = 0; i < 64; i++) flush.wrote(MiB);
      expect(calls).toBe(1);
      release();
      await flush.settled();
      for (let i = 0; i < 32; i++) flush.wrote(MiB);
      expect(calls).toBe(2);
      release();
      await flush.settled();
    } finally {
      await fh.close();
    }
  });

  it('reports a failed flush from settled(), and starts no flush after it', async () => {
    let calls = 0;
    const fh = await handle('b', async () => {
      calls++;
      throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
    });
    try {
      const flush = new BackgroundFlush(fh);
      flush.wrote(32 * MiB);
      await expect(flush.settled()).rejects.toMatchObject({ code: 'EIO' });
      flush.wrote(64 * MiB);
      expect(calls).toBe(1);
      await expect(flush.settled()).rejects.toMatchObject({ code: 'EIO' });
    } finally {
      await fh.close();
    }
  });
});
