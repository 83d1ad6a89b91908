import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import { errorMessage, fsErrorCode, KbError } from '../errors.js';
import { parseDigest, DigestMismatchError, SizeMismatchError } from './digest.js';

/**
 * Hash local files on a worker thread (all but the first, see verifyFilesInOrder): Node's hash
 * runs on the calling thread, and the main thread has other work (an install applies the top
 * layer while the lower ones are hashed). One worker hashes the files one after another, in the
 * order given, through one reused buffer: each worker's start costs ~0.1 s of CPU, and a fresh
 * buffer per read costs a page fault per 4 KiB. Inline source (eval) so it also works from the
 * bundled CLI.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { openSync, readSync, closeSync } = require('node:fs');
const buf = Buffer.allocUnsafeSlow(1 << 20);
workerData.files.forEach(({ path, algorithm }, i) => {
  try {
    const h = createHash(algorithm);
    let size = 0;
    const fd = openSync(path, 'r');
    try {
      for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) {
        size += n;
        h.update(buf.subarray(0, n));
      }
    } finally {
      closeSync(fd);
    }
    parentPort.postMessage({ i, hex: h.digest('hex'), size });
  } catch (e) {
    parentPort.postMessage({ i, error: String((e && e.message) || e), code: e && e.code });
  }
});
`;

interface Item {
  path: string;
  digest: string;
  size: number;
  what: string;
}

/**
 * Verify files against their descriptors in the order given: the promise of each file settles as
 * soon as that file is hashed (a mismatch rejects only that file's). The first file is hashed on
 * this thread while one worker starts for the others: the worker's start (60-90 ms here) took
 * longer than hashing a typical top layer, and an install waits for that one before it begins.
 */
export function verifyFilesInOrder(items: Item[]): Promise<void>[] {
  if (items.length === 0) return [];
  return [verifyHere(items[0]!), ...verifyOnWorker(items.slice(1))];
}

/** Hash one file on this thread, through one reused buffer and asynchronous reads. */
async function verifyHere(it: Item): Promise<void> {
  const { algorithm, hex } = parseDigest(it.digest, it.what);
  const h = createHash(algorithm);
  let size = 0;
  try {
    const file = await open(it.path, 'r');
    try {
      const buf = Buffer.allocUnsafeSlow(1 << 20);
      for (let n; (n = (await file.read(buf, 0, buf.length, null)).bytesRead) > 0;) {
        size += n;
        h.update(buf.subarray(0, n));
      }
    } finally {
      await file.close();
    }
  } catch (e) {
    throw new KbError(fsErrorCode(e), `${it.path}: cannot read (${errorMessage(e)})`, { cause: e });
  }
  const mismatch = mismatchOf(it, algorithm, hex, size, h.digest('hex'));
  if (mismatch) throw mismatch;
}

/** What is wrong with a hashed file (its size, then its digest), or undefined: both hashing paths decide here. */
function mismatchOf(it: Item, algorithm: string, want: string, size: number, got: string): Error | undefined {
  if (size !== it.size) return new SizeMismatchError(it.size, size, it.what);
  if (got !== want) return new DigestMismatchError(it.digest, `${algorithm}:${got}`, it.what);
  return undefined;
}

function verifyOnWorker(items: Item[]): Promise<void>[] {
  const parsed = items.map((it) => parseDigest(it.digest, it.what));
  const settle: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  const out = items.map((_, i) => new Promise<void>((resolve, reject) => (settle[i] = { resolve, reject })));
  if (items.length === 0) return out;
  let left = items.length;
  // execArgv: [] so a parent started with --input-type=module does not make this CommonJS source ESM.
  const w = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], workerData: { files: items.map((it, i) => ({ path: it.path, algorithm: parsed[i]!.algorithm })) } });
  w.on('message', (m: { i: number; hex?: string; size?: number; error?: string; code?: string }) => {
    const it = items[m.i]!;
    const { algorithm, hex } = parsed[m.i]!;
    const failure = m.error ? new KbError(fsErrorCode({ code: m.code }), `${it.path}: cannot read (${m.error})`) : mismatchOf(it, algorithm, hex, m.size!, m.hex!);
    if (failure) settle[m.i]!.reject(failure);
    else settle[m.i]!.resolve();
    if (--left === 0) void w.terminate();
  });
  // A worker that dies fails every file it has not reported (settling twice is a no-op).
  w.once('error', (e) => settle.forEach((s) => s.reject(e)));
  w.once('exit', (code) => settle.forEach((s) => s.reject(new KbError('INTERNAL', `the hashing worker exited (${code}) before it verified every file`))));
  return out;
}
