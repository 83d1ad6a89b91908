/**
 * The files of a journaled install, created and written on a worker thread. Creating a file costs
 * the kernel 30-500 µs (ext4 inode allocation) and the main thread also parses the tar and decides
 * every entry; with the writing here, the two run side by side (a large file's pieces are queued
 * as they are inflated, so the next entries are read while it is written). Only journaled
 * installs use it: their files get fresh names (temps, or their own names inside a folder the
 * install is staging, see apply.ts folderAt) in folders the main thread has already resolved
 * and created, and nothing renames a folder before the commit, so when the file is made later on
 * this thread it lands where it would have landed at once (no symlink can appear on its path
 * meanwhile). The main thread journals every temp before queueing it, and drains (waits for every
 * queued file) before anything that needs one to exist (a hard link to it, its xattrs, the commit).
 */
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { KbError } from '../errors.js';

/** Items (files or pieces of one) queued before a batch is posted, and bytes. */
const BATCH_ITEMS = 64;
const BATCH_BYTES = 1024 * 1024;
/** Queued but not yet written: the main thread waits above this (memory stays bounded). */
const MAX_IN_FLIGHT_BYTES = 16 * 1024 * 1024;
const MAX_IN_FLIGHT_ITEMS = 4096;
/** Batch buffers kept for reuse. */
const SPARE_BUFFERS = 8;

// Shared control words: STOP (set by the main thread), BUSY (the worker is inside a file).
const STOP = 0;
const BUSY = 1;

// A batch item opens its file (OPEN), appends its bytes, and (CLOSE) sets the metadata and closes
// it: a small file is one item with both, a large one arrives in pieces over several batches.
const OPEN = 1;
const CLOSE = 2;

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const ctl = new Int32Array(workerData.ctl);
const umask = workerData.umask;
let failed = false;
let fd = -1;
parentPort.on('message', (b) => {
  const data = Buffer.from(b.data);
  for (let i = 0; i < b.paths.length && !failed; i++) {
    Atomics.store(ctl, ${BUSY}, 1);
    if (Atomics.load(ctl, ${STOP})) {
      Atomics.store(ctl, ${BUSY}, 0);
      Atomics.notify(ctl, ${BUSY});
      return;
    }
    const path = b.paths[i];
    const flags = b.flags[i];
    // The mode given at creation when the umask keeps it whole and no chown follows (a chown
    // clears setuid bits): one fchmod fewer per file.
    const mode = b.modes[i];
    const direct = umask >= 0 && b.uids[i] < 0 && (mode & ~0o777) === 0 && (mode & umask) === 0;
    try {
      if (flags & ${OPEN}) fd = fs.openSync(path, 'wx', direct ? mode : 0o600);
      const body = data.subarray(b.starts[i], b.starts[i + 1]);
      for (let off = 0; off < body.length; ) off += fs.writeSync(fd, body, off, body.length - off);
      if (flags & ${CLOSE}) {
        const f = fd;
        fd = -1;
        try {
          if (b.uids[i] >= 0) fs.fchownSync(f, b.uids[i], b.gids[i]);
          if (!direct) fs.fchmodSync(f, mode);
          fs.futimesSync(f, b.mtimes[i], b.mtimes[i]);
        } finally {
          fs.closeSync(f);
        }
      }
    } catch (e) {
      failed = true;
      if (fd >= 0) fs.closeSync(fd);
      parentPort.postMessage({ error: { message: String(e && e.message), code: e && e.code, errno: e && e.errno, syscall: e && e.syscall, path } });
    }
    Atomics.store(ctl, ${BUSY}, 0);
    Atomics.notify(ctl, ${BUSY});
  }
  parentPort.postMessage({ acked: b.paths.length, buffer: b.data }, [b.data]);
});
`;

interface Batch {
  paths: string[];
  flags: number[];
  /** Where each item's bytes start in the batch buffer (and, once posted, where the last ends). */
  starts: number[];
  bytes: number;
  modes: number[];
  mtimes: number[];
  uids: number[];
  gids: number[];
}

const emptyBatch = (): Batch => ({ paths: [], flags: [], starts: [], bytes: 0, modes: [], mtimes: [], uids: [], gids: [] });
const EMPTY = Buffer.alloc(0);

/** The process umask, read without changing it (process.umask() sets it for a moment); -1 if unknown. */
function currentUmask(): number {
  try {
    const m = /^Umask:\s*([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? parseInt(m[1]!, 8) : -1;
  } catch {
    return -1;
  }
}

export class FileWriter {
  private readonly worker: Worker;
  private readonly ctl = new Int32Array(new SharedArrayBuffer(8));
  /** Bytes of each posted batch not yet acknowledged, oldest first. */
  private readonly posted: number[] = [];
  /** Batch buffers the thread handed back, for the next batches. */
  private readonly spare: ArrayBuffer[] = [];
  private batch = emptyBatch();
  /** The batch's bytes, copied in as items are queued. */
  private data: Buffer | undefined;
  private postedItems = 0;
  private ackedItems = 0;
  private inFlightBytes = 0;
  private failure: Error | undefined;
  private waiters: (() => void)[] = [];
  private stopped = false;

  /** One thread: two measured no faster on 2 cores (10-20% slower with more system time, once). */
  constructor() {
    // execArgv: [] so a parent started with --input-type=module does not make this CommonJS source ESM.
    this.worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], workerData: { ctl: this.ctl.buffer, umask: currentUmask() } });
    this.worker.on('message', (m: { acked?: number; buffer?: ArrayBuffer; error?: { message: string; code?: string; errno?: number; syscall?: string; path: string } }) => {
      if (m.error) this.failure ??= Object.assign(new Error(m.error.message), { code: m.error.code, errno: m.error.errno, syscall: m.error.syscall, path: m.error.path });
      if (m.buffer && this.spare.length < SPARE_BUFFERS) this.spare.push(m.buffer);
      if (m.acked !== undefined) {
        this.ackedItems += m.acked;
        this.inFlightBytes -= this.posted.shift() ?? 0;
      }
      this.wake();
    });
    // A thread that fails (out of memory, killed) fails the install with a clear error; the
    // journal then rolls back as for any other failure.
    const hint = 'nothing was changed; run the install again, and check free memory if it keeps failing';
    this.worker.on('error', (e) => {
      this.failure ??= new KbError('INTERNAL', `the file-writing thread failed: ${e.message}`, { cause: e, hint });
      this.wake();
    });
    this.worker.on('exit', (code) => {
      if (!this.stopped) this.failure ??= new KbError('INTERNAL', `the file-writing thread stopped (exit ${code})`, { hint });
      this.wake();
    });
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
   * Queue `path` (a fresh name in a folder that exists: see the header) with its content and
   * metadata; `owner` sets uid/gid. `data` is copied before this returns (the caller may reuse its
   * memory at once: an install's inflate buffers are). Resolves at once unless too much is queued.
   */
  write(path: string, data: Buffer, mode: number, mtime: Date, owner?: { uid?: number; gid?: number }): Promise<void> {
    return this.queue(path, OPEN | CLOSE, data, mode, mtime, owner);
  }

  /**
   * The same for content that comes in pieces (a large file): each piece is queued (copied) as
   * it comes, so reading the next entry goes on while the thread writes this one.
   */
  async writePieces(path: string, pieces: AsyncIterable<Buffer> | Iterable<Buffer>, mode: number, mtime: Date, owner?: { uid?: number; gid?: number }): Promise<void> {
    let flags = OPEN;
    for await (const piece of pieces) {
      await this.queue(path, flags, piece, mode, mtime, owner);
      flags = 0;
    }
    await this.queue(path, flags | CLOSE, EMPTY, mode, mtime, owner);
  }

  private async queue(path: string, flags: number, data: Buffer, mode: number, mtime: Date, owner: { uid?: number; gid?: number } | undefined): Promise<void> {
    this.check();
    if (this.data && this.batch.bytes + data.length > this.data.length) this.post();
    const b = this.batch;
    this.data ??= this.bufferOf(Math.max(data.length, 2 * BATCH_BYTES));
    b.paths.push(path);
    b.flags.push(flags);
    b.starts.push(b.bytes);
    b.bytes += data.copy(this.data, b.bytes);
    b.modes.push(mode);
    b.mtimes.push(mtime.getTime() / 1000);
    b.uids.push(owner ? (owner.uid ?? 0) : -1);
    b.gids.push(owner ? (owner.gid ?? 0) : -1);
    if (b.paths.length >= BATCH_ITEMS || b.bytes >= BATCH_BYTES) this.post();
    while (!this.failure && (this.inFlightBytes > MAX_IN_FLIGHT_BYTES || this.postedItems - this.ackedItems > MAX_IN_FLIGHT_ITEMS)) await this.nextMessage();
    this.check();
  }

  /**
   * A batch buffer of its own (never a slice of Node's shared pool), handed over without a copy and
   * handed back once written: fresh megabytes for every batch cost a page fault per 4 KiB.
   */
  private bufferOf(size: number): Buffer {
    const reuse = this.spare.findIndex((ab) => ab.byteLength >= size);
    return Buffer.from(reuse >= 0 ? this.spare.splice(reuse, 1)[0]! : new ArrayBuffer(size));
  }

  private post(): void {
    const b = this.batch;
    if (b.paths.length === 0) return;
    this.batch = emptyBatch();
    const ab = this.data!.buffer as ArrayBuffer;
    this.data = undefined;
    b.starts.push(b.bytes);
    this.postedItems += b.paths.length;
    this.inFlightBytes += b.bytes;
    this.posted.push(b.bytes);
    this.worker.postMessage({ paths: b.paths, flags: b.flags, data: ab, starts: b.starts, modes: b.modes, mtimes: b.mtimes, uids: b.uids, gids: b.gids }, [ab]);
  }

  private nextMessage(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Wait until every queued file is written; throws the first failure (an errno error naming the temp). */
  async drain(): Promise<void> {
    this.post();
    while (!this.failure && this.ackedItems < this.postedItems) await this.nextMessage();
    this.check();
  }

  /**
   * Stop at once, synchronously (also from a signal handler, before the journal rolls back): once
   * this returns the worker creates no more files; the one it was inside is finished or not begun.
   */
  stopSync(): void {
    if (this.stopped) return;
    this.stopped = true;
    Atomics.store(this.ctl, STOP, 1);
    // The worker sets BUSY before it looks at STOP: it either saw STOP, or it is seen BUSY here.
    for (let i = 0; i < 600 && Atomics.load(this.ctl, BUSY) === 1; i++) Atomics.wait(this.ctl, BUSY, 1, 100);
    void this.worker.terminate();
  }
}
