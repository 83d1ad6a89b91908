import { Worker } from 'node:worker_threads';
import { fsErrorCode, KbError } from '../errors.js';
import { mapPool } from '../util/pool.js';
import { parseDigest, DigestMismatchError, SizeMismatchError } from './digest.js';

/**
 * Hash local files on worker threads: Node's hash runs on the calling thread, so verifying
 * several layers one after another leaves the other core idle. Inline source (eval) so it also
 * works from the bundled CLI.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { createReadStream } = require('node:fs');
const h = createHash(workerData.algorithm);
let size = 0;
createReadStream(workerData.path, { highWaterMark: 1 << 20 })
  .on('data', (c) => { size += c.length; h.update(c); })
  .on('error', (e) => parentPort.postMessage({ error: String(e && e.message || e), code: e && e.code }))
  .on('end', () => parentPort.postMessage({ hex: h.digest('hex'), size }));
`;

function hashFile(path: string, algorithm: string): Promise<{ hex: string; size: number }> {
  return new Promise((resolve, reject) => {
    // execArgv: [] so a parent started with --input-type=module does not make this CommonJS source ESM.
    const w = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], workerData: { path, algorithm } });
    w.once('message', (m: { hex?: string; size?: number; error?: string; code?: string }) => {
      void w.terminate();
      if (m.error) reject(new KbError(fsErrorCode({ code: m.code }), `${path}: cannot read (${m.error})`));
      else resolve({ hex: m.hex!, size: m.size! });
    });
    w.once('error', reject);
  });
}

/** Verify files against their descriptors, `concurrency` at a time; throws on the first mismatch. */
export async function verifyFiles(items: { path: string; digest: string; size: number; what: string }[], concurrency = 2): Promise<void> {
  await mapPool(items, concurrency, async (it) => {
    const { algorithm, hex } = parseDigest(it.digest, it.what);
    const got = await hashFile(it.path, algorithm);
    if (got.size !== it.size) throw new SizeMismatchError(it.size, got.size, it.what);
    if (got.hex !== hex) throw new DigestMismatchError(it.digest, `${algorithm}:${got.hex}`, it.what);
  });
}
