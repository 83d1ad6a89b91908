/**
 * The gzip layer writer's hash worker (src/layer/hash-worker.ts): the digest and CRC-32 it gives
 * are Node's own for the same bytes; a worker that dies fails every waiting and later call with a
 * KbError instead of leaving it hanging; small tars are hashed on the calling thread, to the same result;
 * a file another process writes (the zstd blob) is followed and hashed there too.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { isKbError } from '../src/errors.js';
import { HASH_ON_WORKER_FROM, TarHasher, tarDigester } from '../src/layer/hash-worker.js';

/** The worker is private; a test that kills it reaches in. */
const workerOf = (h: TarHasher) => (h as unknown as { worker: Worker }).worker;
const shared = (b: Buffer) => {
  const s = Buffer.from(new SharedArrayBuffer(b.length + 10), 5, b.length); // a view inside a larger buffer
  b.copy(s);
  return s;
};

describe('TarHasher', () => {
  it("gives Node's SHA-256 and CRC-32 of the pieces, in order", async () => {
    const h = new TarHasher();
    try {
      const pieces = [randomBytes(1 << 20), randomBytes(12345), Buffer.alloc(0), randomBytes(777)];
      await Promise.all(pieces.map((p) => h.update(shared(p))));
      const all = Buffer.concat(pieces);
      expect(await h.finish()).toEqual({ digest: `sha256:${createHash('sha256').update(all).digest('hex')}`, size: all.length, crc: crc32(all) });
    } finally {
      await h.close();
    }
  });

  it('refuses pieces outside shared memory', async () => {
    const h = new TarHasher();
    try {
      await expect(h.update(Buffer.alloc(10))).rejects.toThrow(/shared memory/);
    } finally {
      await h.close();
    }
  });

  it('fails waiting and later calls with a KbError when the worker dies', async () => {
    const h = new TarHasher();
    try {
      const waiting = [h.update(shared(randomBytes(1 << 24))), h.update(shared(randomBytes(1 << 24)))];
      const settled = Promise.allSettled(waiting);
      await workerOf(h).terminate();
      for (const r of await settled) {
        // A piece hashed before the worker stopped may have resolved; one still waiting must fail.
        if (r.status === 'rejected') expect(isKbError(r.reason, 'INTERNAL'), String(r.reason)).toBe(true);
      }
      for (const late of [h.update(shared(Buffer.alloc(1))), h.finish()]) {
        const err = await late.then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(isKbError(err, 'INTERNAL'), String(err)).toBe(true);
        expect((err as Error).message).toMatch(/layer hashing stopped/);
      }
    } finally {
      await h.close();
    }
  });
});

describe('TarHasher.follow (the zstd blob, written by the zstd program)', () => {
  it('hashes a file another process writes in bursts, between tar pieces, and gives its digest and size once told the writer is done', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kbundle-follow-'));
    const file = join(dir, 'blob');
    const h = new TarHasher({ crc32: false });
    const fd = openSync(file, 'w+');
    try {
      let reported = 0;
      const followed = h.follow(fd, (n) => (reported += n));
      // 24 bursts of 100,000 random bytes with pauses (longer than the worker's poll) between them.
      const writer = spawn('sh', ['-c', `for i in $(seq 24); do head -c 100000 /dev/urandom >> '${file}'; sleep 0.005; done`], { stdio: 'ignore' });
      const pieces = [randomBytes(1 << 20), randomBytes(4096)];
      for (const p of pieces) await h.update(shared(p));
      expect((await once(writer, 'exit'))[0]).toBe(0);
      const tar = await h.finish();
      expect(tar.size).toBe(pieces[0]!.length + pieces[1]!.length);
      const written = readFileSync(file);
      expect(await followed.end()).toEqual({ digest: `sha256:${createHash('sha256').update(written).digest('hex')}`, size: 2_400_000 });
      expect(reported).toBe(2_400_000);
    } finally {
      await h.close();
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fails end() with the read error and its errno code (as a read on this thread would), not a hang', async () => {
    const h = new TarHasher({ crc32: false });
    const dir = mkdtempSync(join(tmpdir(), 'kbundle-follow-'));
    const fd = openSync(dir, 'r'); // a folder: read() fails with EISDIR
    try {
      const err = await h
        .follow(fd, () => undefined)
        .end()
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect((err as NodeJS.ErrnoException).code, String(err)).toBe('EISDIR');
      expect((err as NodeJS.ErrnoException).syscall).toBe('read');
    } finally {
      await h.close();
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tarDigester', () => {
  const pieces = [randomBytes(1 << 20), randomBytes(12345), Buffer.alloc(0), randomBytes(777)];
  const all = Buffer.concat(pieces);
  const expected = { digest: `sha256:${createHash('sha256').update(all).digest('hex')}`, size: all.length, crc: crc32(all) };

  it('hashes a small tar on this thread and a large one on the worker, with the same result', async () => {
    for (const [planned, onWorker] of [
      [HASH_ON_WORKER_FROM - 1, false],
      [HASH_ON_WORKER_FROM, true],
    ] as const) {
      const h = tarDigester(planned);
      try {
        expect(h instanceof TarHasher).toBe(onWorker);
        for (const p of pieces) await h.update(shared(p));
        expect(await h.finish()).toEqual(expected);
        await expect(h.finish()).rejects.toThrow(/finished twice/);
      } finally {
        await h.close();
      }
    }
  });

  it('leaves the CRC-32 at 0 when it is not asked for (zstd), on either thread', async () => {
    for (const planned of [0, HASH_ON_WORKER_FROM]) {
      const h = tarDigester(planned, { crc32: false });
      try {
        for (const p of pieces) await h.update(shared(p));
        expect(await h.finish()).toEqual({ ...expected, crc: 0 });
      } finally {
        await h.close();
      }
    }
  });
});
