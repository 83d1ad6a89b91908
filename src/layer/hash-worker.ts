import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { crc32 } from 'node:zlib';
import { KbError } from '../errors.js';

/** Bytes read at a time from a followed file, and the wait when its writer is behind (zstd writes ~128 KiB blocks). */
export const FOLLOW_READ = 1024 * 1024;
export const FOLLOW_POLL_MS = 2;

/**
 * The layer writer's tar digest on a worker thread: SHA-256 (the diff_id) and CRC-32 (the gzip
 * trailer) of the tar pieces, read in place from shared memory while deflate or the zstd program
 * reads them too. On the main thread they sat on the critical path next to the tar encoding. For
 * zstd the worker also follows the blob file the program writes (`follow`) and hashes it.
 *
 * Only shared pieces are taken: copying bytes over cost as much as hashing them (measured for the
 * gzip output, which therefore stays hashed on the main thread). A followed file is read by the
 * worker itself, through the same process's descriptor: nothing is copied between threads.
 * Inline source (eval), like file-digest-worker.ts, so it also runs from the bundled CLI and the
 * single executable.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { readSync } = require('node:fs');
const crc32 = workerData.crc32 ? require('node:zlib').crc32 : () => 0;
const hash = createHash('sha256');
let size = 0;
let crc = 0;
let follow;
// One read of the followed file per turn, so tar pieces are taken between reads.
function followStep() {
  const f = follow;
  f.timer = undefined;
  try {
    const ended = f.ended; // taken before the read: if set, that read sees every byte
    const n = readSync(f.fd, f.buf, 0, f.buf.length, f.size);
    if (n > 0) {
      f.hash.update(f.buf.subarray(0, n));
      f.size += n;
      parentPort.postMessage({ followed: n });
      setImmediate(followStep);
    } else if (ended) {
      follow = undefined;
      parentPort.postMessage({ followResult: { hex: f.hash.digest('hex'), size: f.size } });
    } else f.timer = setTimeout(followStep, ${FOLLOW_POLL_MS});
  } catch (e) {
    follow = undefined;
    parentPort.postMessage({ error: String((e && e.message) || e), code: e && e.code });
  }
}
parentPort.on('message', (m) => {
  try {
    if (m.follow !== undefined) {
      follow = { fd: m.follow, size: 0, hash: createHash('sha256'), buf: Buffer.allocUnsafeSlow(${FOLLOW_READ}), ended: false };
      followStep();
      return;
    }
    if (m.followEnd) {
      follow.ended = true;
      if (follow.timer) {
        clearTimeout(follow.timer);
        followStep();
      }
      return;
    }
    if (m.end) {
      parentPort.postMessage({ result: { hex: hash.digest('hex'), size, crc: crc >>> 0 } });
      return;
    }
    const bytes = new Uint8Array(m.buffer, m.offset, m.length);
    hash.update(bytes);
    crc = crc32(bytes, crc);
    size += m.length;
    parentPort.postMessage({ ack: m.seq });
  } catch (e) {
    parentPort.postMessage({ error: String((e && e.message) || e) });
  }
});
`;

export interface TarDigest {
  /** sha256:<hex> */
  digest: string;
  size: number;
  crc: number;
}

/** The tar's SHA-256, size and CRC-32, computed from its pieces in order (on a worker or here). */
export interface TarDigester {
  /** Hash `piece` as the next bytes of the tar; it must stay unchanged until the promise resolves. */
  update(piece: Buffer): Promise<void>;
  /** The digest, size and CRC-32, once every piece given before was hashed; nothing may follow. */
  finish(): Promise<TarDigest>;
  /** Release what it holds (always call it, also after a failure). */
  close(): Promise<void>;
}

/**
 * Below this many tar bytes the tar is hashed on the calling thread: a worker thread takes about
 * 60 ms to start (Node 20, 2 cores) and the hashing it would take over about 10 ms.
 */
export const HASH_ON_WORKER_FROM = 16 * 1024 * 1024;

/** A digester for a tar of about `tarBytes`: a worker thread for a large one, this thread for a small one. */
export function tarDigester(tarBytes: number, opts: { crc32?: boolean } = {}): TarDigester {
  return tarBytes >= HASH_ON_WORKER_FROM ? new TarHasher(opts) : new InlineTarHasher(opts.crc32 ?? true);
}

/** The tar's digest on this thread (small layers). */
class InlineTarHasher implements TarDigester {
  private readonly hash = createHash('sha256');
  private crc = 0;
  private size = 0;
  private finished = false;
  constructor(private readonly withCrc: boolean) {}

  update(piece: Buffer): Promise<void> {
    if (this.finished) return Promise.reject(new Error('TarHasher: update after finish'));
    this.hash.update(piece);
    if (this.withCrc) this.crc = crc32(piece, this.crc);
    this.size += piece.length;
    return Promise.resolve();
  }

  finish(): Promise<TarDigest> {
    if (this.finished) return Promise.reject(new Error('TarHasher: finished twice'));
    this.finished = true;
    return Promise.resolve({ digest: `sha256:${this.hash.digest('hex')}`, size: this.size, crc: this.crc >>> 0 });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** No answer from the worker for this long while it has work: it is stuck, fail the build. */
const DEADLINE_MS = 120_000;

type WorkerMessage = {
  ack?: number;
  result?: { hex: string; size: number; crc: number };
  followed?: number;
  followResult?: { hex: string; size: number };
  error?: string;
  /** The errno code of a failed read of the followed file: reported as that file system error. */
  code?: string;
};

/** A file followed on the worker (TarHasher.follow): its SHA-256 and size once its writer is done. */
export interface FollowedDigest {
  /** The writer is done: read to the end of the file; the digest and size of all of it. */
  end(): Promise<{ digest: string; size: number }>;
}

interface Waiter<T> {
  seq: number;
  resolve: (v: T) => void;
  reject: (e: Error) => void;
}

export class TarHasher implements TarDigester {
  private readonly worker: Worker;
  private readonly pending: Waiter<void>[] = [];
  private final?: Waiter<TarDigest>;
  private followed?: { onRead: (n: number) => void; waiter?: Waiter<{ digest: string; size: number }> };
  private finishing = false;
  private seq = 0;
  private failure?: Error;
  private timer?: NodeJS.Timeout;

  /** `crc32: false` when no gzip trailer needs it (zstd): the CRC then reads 0. */
  constructor(opts: { crc32?: boolean } = {}) {
    // execArgv: [] so a parent started with --input-type=module does not make this CommonJS source ESM.
    this.worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], workerData: { crc32: opts.crc32 ?? true } });
    this.worker.on('message', (m: WorkerMessage) => this.onMessage(m));
    this.worker.on('error', (e) => this.fail(new KbError('INTERNAL', `layer hashing failed: ${e.message}`, { cause: e })));
    this.worker.on('exit', (code) => this.fail(new KbError('INTERNAL', `layer hashing stopped (worker exit ${code})`, { hint: 'run the build again; if it keeps failing, report it' })));
  }

  /**
   * Hash `piece` (in a SharedArrayBuffer) as the next bytes of the tar. It must stay unchanged
   * until the promise resolves.
   */
  update(piece: Buffer): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.finishing) return Promise.reject(new Error('TarHasher: update after finish'));
    if (!(piece.buffer instanceof SharedArrayBuffer)) return Promise.reject(new Error('TarHasher: pieces must be in shared memory'));
    const seq = ++this.seq;
    this.worker.postMessage({ seq, buffer: piece.buffer, offset: piece.byteOffset, length: piece.length });
    return this.wait((resolve, reject) => this.pending.push({ seq, resolve, reject }));
  }

  /** The digest, size and CRC-32, once every piece given before was hashed; nothing may follow. */
  finish(): Promise<TarDigest> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.finishing) return Promise.reject(new Error('TarHasher: finished twice'));
    this.finishing = true;
    this.worker.postMessage({ end: true });
    return this.wait<TarDigest>((resolve, reject) => (this.final = { seq: 0, resolve, reject }));
  }

  /**
   * Hash the file open as `fd` (the same process's descriptor) on the worker as another process
   * writes it from start to end, between the tar pieces; `onRead(n)` for every n bytes read. The
   * caller keeps `fd` open until `end()` settled or close() returned.
   */
  follow(fd: number, onRead: (n: number) => void): FollowedDigest {
    if (this.followed) throw new Error('TarHasher: one followed file at a time');
    const followed: NonNullable<TarHasher['followed']> = (this.followed = { onRead });
    this.worker.postMessage({ follow: fd });
    return {
      end: () => {
        if (this.failure) return Promise.reject(this.failure);
        this.worker.postMessage({ followEnd: true });
        return this.wait((resolve, reject) => (followed.waiter = { seq: 0, resolve, reject }));
      },
    };
  }

  /** Stop the worker (always call it, also after a failure). */
  async close(): Promise<void> {
    this.fail(new KbError('INTERNAL', 'layer hashing was closed'));
    await this.worker.terminate();
  }

  private wait<T>(register: (resolve: (v: T) => void, reject: (e: Error) => void) => void): Promise<T> {
    const p = new Promise<T>(register);
    this.arm();
    return p;
  }

  private onMessage(m: WorkerMessage): void {
    if (m.error !== undefined) {
      // A read of the followed file failing is an I/O error (EIO, …) the caller maps like its own.
      if (m.code) return this.fail(Object.assign(new Error(m.error), { code: m.code, syscall: 'read' }));
      return this.fail(new KbError('INTERNAL', `layer hashing failed: ${m.error}`));
    }
    if (m.ack !== undefined) {
      const p = this.pending.shift();
      if (!p || p.seq !== m.ack) return this.fail(new KbError('INTERNAL', `layer hashing: answer ${m.ack} out of order`));
      p.resolve();
    } else if (m.followed !== undefined) {
      this.followed?.onRead(m.followed);
      return; // progress only: the deadline runs from the last answer owed
    } else if (m.followResult) {
      const f = this.followed;
      this.followed = undefined;
      f?.waiter?.resolve({ digest: `sha256:${m.followResult.hex}`, size: m.followResult.size });
    } else if (m.result) {
      const f = this.final;
      this.final = undefined;
      f?.resolve({ digest: `sha256:${m.result.hex}`, size: m.result.size, crc: m.result.crc });
    }
    this.arm();
  }

  /** (Re)start the deadline while the worker owes an answer; clear it when it owes none. */
  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.failure || (!this.pending.length && !this.final && !this.followed?.waiter)) return;
    this.timer = setTimeout(
      () => this.fail(new KbError('TIMEOUT', `layer hashing: no progress for ${DEADLINE_MS / 1000} s`, { hint: 'the machine is overloaded or the worker is stuck; run the build again' })),
      DEADLINE_MS,
    );
    this.timer.unref();
  }

  private fail(e: Error): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.failure) return;
    this.failure = e;
    for (const p of this.pending.splice(0)) p.reject(e);
    this.final?.reject(e);
    this.final = undefined;
    this.followed?.waiter?.reject(e);
    this.followed = undefined;
  }
}
