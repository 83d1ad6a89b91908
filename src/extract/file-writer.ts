/**
 * Small files of a journaled install, created on a worker thread. Creating a file costs the
 * kernel 50-500 µs (ext4 inode allocation) and the main thread also parses the tar and decides
 * every entry; with the creation here, the two run side by side. Only journaled installs use it:
 * their temps have fresh names in folders the main thread has already resolved and created, and
 * nothing renames a folder before the commit, so when the file is made later on this thread it
 * lands where it would have landed at once (no symlink can appear on its path meanwhile).
 * The main thread journals every temp before queueing it, and drains (waits for every queued file)
 * before anything that needs one to exist (a hard link to it, its xattrs, the commit).
 */
import { Worker } from 'node:worker_threads';
import { KbError } from '../errors.js';

/** Files queued before a batch is posted, and bytes. */
const BATCH_FILES = 64;
const BATCH_BYTES = 1024 * 1024;
/** Queued but not yet written: the main thread waits above this (memory stays bounded). */
const MAX_IN_FLIGHT_BYTES = 16 * 1024 * 1024;
const MAX_IN_FLIGHT_FILES = 4096;

// Shared control words: STOP (set by the main thread), BUSY (the worker is inside a file).
const STOP = 0;
const BUSY = 1;

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const ctl = new Int32Array(workerData.ctl);
let failed = false;
parentPort.on('message', (b) => {
  const data = Buffer.from(b.data);
  let done = 0;
  for (let i = 0; i < b.paths.length && !failed; i++) {
    Atomics.store(ctl, ${BUSY}, 1);
    if (Atomics.load(ctl, ${STOP})) {
      Atomics.store(ctl, ${BUSY}, 0);
      Atomics.notify(ctl, ${BUSY});
      return;
    }
    const path = b.paths[i];
    try {
      const fd = fs.openSync(path, 'wx', 0o600);
      try {
        const body = data.subarray(b.starts[i], b.starts[i + 1]);
        for (let off = 0; off < body.length; ) off += fs.writeSync(fd, body, off, body.length - off);
        if (b.uids[i] >= 0) fs.fchownSync(fd, b.uids[i], b.gids[i]);
        fs.fchmodSync(fd, b.modes[i]);
        fs.futimesSync(fd, b.mtimes[i], b.mtimes[i]);
      } finally {
        fs.closeSync(fd);
      }
      done++;
    } catch (e) {
      failed = true;
      parentPort.postMessage({ error: { message: String(e && e.message), code: e && e.code, errno: e && e.errno, syscall: e && e.syscall, path } });
    }
    Atomics.store(ctl, ${BUSY}, 0);
    Atomics.notify(ctl, ${BUSY});
  }
  parentPort.postMessage({ acked: b.paths.length, done });
});
`;

interface Batch {
  paths: string[];
  chunks: Buffer[];
  bytes: number;
  modes: number[];
  mtimes: number[];
  uids: number[];
  gids: number[];
}

const emptyBatch = (): Batch => ({ paths: [], chunks: [], bytes: 0, modes: [], mtimes: [], uids: [], gids: [] });

interface Thread {
  worker: Worker;
  ctl: Int32Array;
  /** Bytes of each posted batch not yet acknowledged, oldest first. */
  posted: number[];
}

export class FileWriter {
  private readonly threads: Thread[] = [];
  private batch = emptyBatch();
  private batches = 0;
  private postedFiles = 0;
  private ackedFiles = 0;
  private inFlightBytes = 0;
  private failure: Error | undefined;
  private waiters: (() => void)[] = [];
  private stopped = false;

  /** `threads`: one measured best on 2 cores (two measured 10-20% slower, with more system time). */
  constructor(threads = 1) {
    for (let i = 0; i < threads; i++) this.threads.push(this.startThread());
  }

  private startThread(): Thread {
    const ctl = new Int32Array(new SharedArrayBuffer(8));
    // execArgv: [] so a parent started with --input-type=module does not make this CommonJS source ESM.
    const worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], workerData: { ctl: ctl.buffer } });
    const t: Thread = { worker, ctl, posted: [] };
    worker.on('message', (m: { acked?: number; error?: { message: string; code?: string; errno?: number; syscall?: string; path: string } }) => {
      if (m.error) this.failure ??= Object.assign(new Error(m.error.message), { code: m.error.code, errno: m.error.errno, syscall: m.error.syscall, path: m.error.path });
      if (m.acked !== undefined) {
        this.ackedFiles += m.acked;
        this.inFlightBytes -= t.posted.shift() ?? 0;
      }
      this.wake();
    });
    // A thread that fails (out of memory, killed) fails the install with a clear error; the
    // journal then rolls back as for any other failure.
    const hint = 'nothing was changed; run the install again, and check free memory if it keeps failing';
    worker.on('error', (e) => {
      this.failure ??= new KbError('INTERNAL', `the file-writing thread failed: ${e.message}`, { cause: e, hint });
      this.wake();
    });
    worker.on('exit', (code) => {
      if (!this.stopped) this.failure ??= new KbError('INTERNAL', `the file-writing thread stopped (exit ${code})`, { hint });
      this.wake();
    });
    return t;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }

  /**
   * Queue `path` (a journaled temp: a fresh name in an existing folder) with its content and
   * metadata; `owner` sets uid/gid. Resolves at once unless too much is queued.
   */
  async write(path: string, data: Buffer, mode: number, mtime: Date, owner?: { uid?: number; gid?: number }): Promise<void> {
    this.check();
    const b = this.batch;
    b.paths.push(path);
    b.chunks.push(data);
    b.bytes += data.length;
    b.modes.push(mode);
    b.mtimes.push(mtime.getTime() / 1000);
    b.uids.push(owner ? (owner.uid ?? 0) : -1);
    b.gids.push(owner ? (owner.gid ?? 0) : -1);
    if (b.paths.length >= BATCH_FILES || b.bytes >= BATCH_BYTES) this.post();
    while (!this.failure && (this.inFlightBytes > MAX_IN_FLIGHT_BYTES || this.postedFiles - this.ackedFiles > MAX_IN_FLIGHT_FILES)) await this.nextMessage();
    this.check();
  }

  private post(): void {
    const b = this.batch;
    if (b.paths.length === 0) return;
    this.batch = emptyBatch();
    // A buffer of its own (never a slice of Node's shared pool), handed over without a copy.
    const data = Buffer.allocUnsafeSlow(b.bytes);
    const starts: number[] = [];
    let off = 0;
    for (const c of b.chunks) {
      starts.push(off);
      off += c.copy(data, off);
    }
    starts.push(off);
    this.postedFiles += b.paths.length;
    this.inFlightBytes += b.bytes;
    const t = this.threads[this.batches++ % this.threads.length]!;
    t.posted.push(b.bytes);
    const ab = data.buffer as ArrayBuffer;
    t.worker.postMessage({ paths: b.paths, data: ab, starts, modes: b.modes, mtimes: b.mtimes, uids: b.uids, gids: b.gids }, [ab]);
  }

  private nextMessage(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Wait until every queued file is written; throws the first failure (an errno error naming the temp). */
  async drain(): Promise<void> {
    this.post();
    while (!this.failure && this.ackedFiles < this.postedFiles) await this.nextMessage();
    this.check();
  }

  /**
   * Stop at once, synchronously (also from a signal handler, before the journal rolls back): once
   * this returns the worker creates no more files; the one it was inside is finished or not begun.
   */
  stopSync(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.threads) Atomics.store(t.ctl, STOP, 1);
    // A worker sets BUSY before it looks at STOP: it either saw STOP, or it is seen BUSY here.
    for (const t of this.threads) {
      for (let i = 0; i < 600 && Atomics.load(t.ctl, BUSY) === 1; i++) Atomics.wait(t.ctl, BUSY, 1, 100);
      void t.worker.terminate();
    }
  }
}
