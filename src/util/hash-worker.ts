import { createHash, type Hash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { KbError } from '../errors.js';

/**
 * SHA-256/512 of a large stream on a worker thread, so the main thread (which also parses the
 * HTTP body, or reads the file, and writes) is not the one hashing: on 2 cores that is ~0.25 s
 * of a 300 MiB transfer off the critical path. Bytes are copied into a few 1 MiB staging
 * buffers that travel to the worker and back (transferred, not cloned; reused, so no fresh
 * pages per MiB). `update` returns false while all staging buffers are out: the caller should
 * hold its source until `onDrain`. If no worker can be started, hashing happens here.
 */
const STAGE = 1024 * 1024;
const STAGES = 4;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hashes = new Map();
parentPort.on('message', (m) => {
  if (m.op === 'start') hashes.set(m.id, createHash(m.algorithm));
  else if (m.op === 'update') {
    hashes.get(m.id).update(new Uint8Array(m.buf, 0, m.len));
    parentPort.postMessage({ id: m.id, op: 'free', buf: m.buf }, [m.buf]);
  } else if (m.op === 'digest') {
    const h = hashes.get(m.id);
    hashes.delete(m.id);
    parentPort.postMessage({ id: m.id, op: 'digest', hex: h.digest('hex') });
  } else if (m.op === 'drop') hashes.delete(m.id);
});
`;

type Message = { id: number; op: 'free'; buf: ArrayBuffer } | { id: number; op: 'digest'; hex: string };

interface Pending {
  free(buf: ArrayBuffer): void;
  digest(hex: string): void;
  fail(e: Error): void;
}

let shared: { worker: Worker; pending: Map<number, Pending> } | null | undefined;
let nextId = 1;

/**
 * The worker holds the process open only while someone waits on it (a digest, or a staging
 * buffer to come back): then nothing else may keep the event loop alive. A hash merely started
 * and abandoned never holds a finished command.
 */
let waiting = 0;
function wait(delta: 1 | -1): void {
  waiting += delta;
  if (!shared) return;
  if (waiting > 0) shared.worker.ref();
  else shared.worker.unref();
}

/** The process's one hashing worker, or null when none can run (then hashes are computed here). */
function worker(): { worker: Worker; pending: Map<number, Pending> } | null {
  if (shared !== undefined) return shared;
  try {
    // Started on the first large hash only: commands that never hash much never pay for it.
    const w = new Worker(WORKER_SOURCE, { eval: true });
    const pending = new Map<number, Pending>();
    w.on('message', (m: Message) => {
      const p = pending.get(m.id);
      if (!p) return;
      if (m.op === 'free') p.free(m.buf);
      else p.digest(m.hex);
    });
    const fail = (e: Error): void => {
      shared = null;
      for (const p of pending.values()) p.fail(e);
      pending.clear();
      w.unref();
    };
    // A worker that fails (out of memory, killed) fails every hash waiting on it with a clear error.
    w.on('error', (e) => fail(new KbError('INTERNAL', `the hashing worker thread failed: ${e.message}`, { cause: e, hint: 'run the command again; if it keeps failing, check free memory' })));
    w.on('exit', (code) => fail(new KbError('INTERNAL', `the hashing worker thread stopped (exit ${code})`, { hint: 'run the command again; if it keeps failing, check free memory' })));
    w.unref();
    shared = { worker: w, pending };
  } catch {
    shared = null;
  }
  return shared;
}

/**
 * Stop the worker thread: hashes waiting on it fail (INTERNAL), later ones are computed on this
 * thread. What a worker that dies does; for tests of that path.
 */
export async function stopHashWorker(): Promise<void> {
  const w = worker();
  if (w) await w.worker.terminate();
}

/** An incremental hash computed on the worker thread (or here, if there is none). */
export class OffThreadHash {
  private readonly id = nextId++;
  private readonly local?: Hash;
  private readonly w: { worker: Worker; pending: Map<number, Pending> } | null;
  private readonly free: ArrayBuffer[] = [];
  private out = 0;
  private stage?: Buffer;
  private filled = 0;
  private drain?: () => void;
  private result?: { resolve(hex: string): void; reject(e: Error): void };
  private failure?: Error;

  /** `local`: hash on this thread (small contents: not worth a worker). */
  constructor(algorithm: 'sha256' | 'sha512', opts: { local?: boolean } = {}) {
    this.w = opts.local ? null : worker();
    if (!this.w) {
      this.local = createHash(algorithm);
      return;
    }
    this.w.pending.set(this.id, {
      free: (buf) => {
        this.out--;
        this.free.push(buf);
        this.drained();
      },
      digest: (hex) => {
        this.w!.pending.delete(this.id);
        this.settle()?.resolve(hex);
      },
      fail: (e) => {
        this.failure = e;
        this.settle()?.reject(e);
        this.drained();
      },
    });
    this.w.worker.postMessage({ id: this.id, op: 'start', algorithm });
  }

  /** Hash `chunk` (copied: the caller may pass it on). False: hold the source until onDrain. */
  update(chunk: Buffer): boolean {
    if (this.local) {
      this.local.update(chunk);
      return true;
    }
    let at = 0;
    while (at < chunk.length) {
      if (!this.stage) {
        // All staging buffers are out only if the caller ignored `false`: a new one keeps it correct.
        const ab = this.free.pop() ?? new ArrayBuffer(STAGE);
        this.stage = Buffer.from(ab);
        this.filled = 0;
      }
      const n = chunk.copy(this.stage, this.filled, at);
      this.filled += n;
      at += n;
      if (this.filled === STAGE) this.send();
    }
    return this.out < STAGES;
  }

  private send(): void {
    const stage = this.stage!;
    this.stage = undefined;
    this.out++;
    this.w!.worker.postMessage({ id: this.id, op: 'update', buf: stage.buffer, len: this.filled }, [stage.buffer as ArrayBuffer]);
  }

  /** `cb` runs once a staging buffer is back (update may be called again without piling up). */
  onDrain(cb: () => void): void {
    if (this.local || this.out < STAGES || this.failure) return cb();
    if (!this.drain) wait(1);
    this.drain = cb;
  }

  private drained(): void {
    const d = this.drain;
    if (!d) return;
    this.drain = undefined;
    wait(-1);
    d();
  }

  private settle(): { resolve(hex: string): void; reject(e: Error): void } | undefined {
    const r = this.result;
    if (r) {
      this.result = undefined;
      wait(-1);
    }
    return r;
  }

  /** The hex digest of everything passed to update. */
  digest(): Promise<string> {
    if (this.local) return Promise.resolve(this.local.digest('hex'));
    if (this.failure) return Promise.reject(this.failure);
    if (this.stage && this.filled > 0) this.send();
    return new Promise<string>((resolve, reject) => {
      this.result = { resolve, reject };
      wait(1);
      this.w!.worker.postMessage({ id: this.id, op: 'digest' });
    });
  }

  /** Forget this hash (an abandoned stream). */
  dispose(): void {
    if (this.drain) {
      this.drain = undefined;
      wait(-1);
    }
    this.settle()?.reject(new Error('the hash was abandoned'));
    if (!this.w || this.local || !this.w.pending.has(this.id)) return;
    this.w.pending.delete(this.id);
    this.w.worker.postMessage({ id: this.id, op: 'drop' });
  }
}
