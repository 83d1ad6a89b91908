import { Worker } from 'node:worker_threads';
import { KbError } from '../errors.js';

/**
 * The layer writer's digests on a worker thread: SHA-256 of the tar (diff_id) with its CRC-32 (the
 * gzip trailer), and SHA-256 of the compressed blob. On the main thread they sat on the critical
 * path next to the tar encoding; here they run beside it on the other core.
 *
 * Bytes in a SharedArrayBuffer (the tar pieces) are read in place: their `update` resolves once
 * the worker is done with them, and only then may the caller refill them. Other bytes (the
 * compressor's output) are copied and the copy moved to the worker; their `update` resolves at
 * once unless more than MAX_AHEAD bytes wait, which keeps memory flat when the worker falls behind.
 * Inline source (eval), like file-digest-worker.ts, so it also runs from the bundled CLI and the
 * single executable.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { crc32 } = require('node:zlib');
const streams = [
  { hash: createHash('sha256'), size: 0, crc: 0 },
  { hash: createHash('sha256'), size: 0, crc: 0 },
];
parentPort.on('message', (m) => {
  try {
    if (m.end !== undefined) {
      const s = streams[m.end];
      parentPort.postMessage({ result: { hex: s.hash.digest('hex'), size: s.size, crc: s.crc >>> 0 } });
      return;
    }
    const s = streams[m.stream];
    const bytes = new Uint8Array(m.buffer, m.offset, m.length);
    s.hash.update(bytes);
    if (m.stream === 0 && workerData.crc) s.crc = crc32(bytes, s.crc);
    s.size += m.length;
    parentPort.postMessage({ ack: m.seq });
  } catch (e) {
    parentPort.postMessage({ error: String((e && e.message) || e) });
  }
});
`;

/** Which digest bytes go to: the tar (diff_id, CRC-32) or the compressed blob (digest). */
export type HashStream = 'tar' | 'blob';

export interface StreamDigest {
  /** sha256:<hex> */
  digest: string;
  size: number;
  /** CRC-32 of the bytes (the tar stream only, when asked for; else 0). */
  crc: number;
}

/** Copied bytes allowed to wait for the worker before `update` waits too. */
const MAX_AHEAD = 16 * 1024 * 1024;
/** No answer from the worker for this long while it has work: it is stuck, fail the build. */
const DEADLINE_MS = 120_000;

interface Pending {
  seq: number;
  copied: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

export class LayerHasher {
  private readonly worker: Worker;
  private readonly pending: Pending[] = [];
  private seq = 0;
  private copiedAhead = 0;
  private failure?: Error;
  private timer?: NodeJS.Timeout;
  private readonly finals: { resolve: (r: StreamDigest) => void; reject: (e: Error) => void }[] = [];
  /** A waiter for copied bytes to drain below MAX_AHEAD. */
  private drained?: () => void;

  /** `crc`: also the CRC-32 of the tar (gzip's trailer needs it, zstd does not). */
  constructor(opts: { crc: boolean } = { crc: true }) {
    // execArgv: [] so a parent started with --input-type=module does not make this CommonJS source ESM.
    this.worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], workerData: { crc: opts.crc } });
    this.worker.on('message', (m: { ack?: number; result?: { hex: string; size: number; crc: number }; error?: string }) => this.onMessage(m));
    this.worker.on('error', (e) => this.fail(new KbError('INTERNAL', `layer hashing failed: ${e.message}`, { cause: e })));
    this.worker.on('exit', (code) => this.fail(new KbError('INTERNAL', `layer hashing stopped (worker exit ${code})`, { hint: 'run the build again; if it keeps failing, report it' })));
  }

  /**
   * Hash `bytes` as the next bytes of `stream`. Shared bytes must stay unchanged until the promise
   * resolves; other bytes are copied, and the promise only holds the caller back when the worker
   * is far behind.
   */
  update(stream: HashStream, bytes: Buffer): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const shared = bytes.buffer instanceof SharedArrayBuffer;
    const seq = ++this.seq;
    let message: { stream: number; seq: number; buffer: ArrayBufferLike; offset: number; length: number };
    const n = shared ? 0 : bytes.length;
    if (shared) {
      message = { stream: stream === 'tar' ? 0 : 1, seq, buffer: bytes.buffer, offset: bytes.byteOffset, length: bytes.length };
      this.worker.postMessage(message);
    } else {
      // Exactly these bytes, in a buffer of their own to move (not pooled; `new Uint8Array(buffer)`
      // copied byte by byte: 4 ns a byte in profiles, against memcpy here).
      const copy = Buffer.allocUnsafeSlow(bytes.length);
      bytes.copy(copy);
      message = { stream: stream === 'tar' ? 0 : 1, seq, buffer: copy.buffer, offset: 0, length: copy.length };
      this.worker.postMessage(message, [copy.buffer]);
    }
    this.copiedAhead += n;
    const done = new Promise<void>((resolve, reject) => this.pending.push({ seq, copied: n, resolve, reject }));
    this.arm();
    if (shared) return done;
    done.catch(() => undefined); // a failure reaches the caller through the next update or digests()
    if (this.copiedAhead <= MAX_AHEAD) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.drained = resolve;
      done.catch(reject);
    });
  }

  /** The digest of `stream`, once every update before this call was hashed; nothing may follow for it. */
  finish(stream: HashStream): Promise<StreamDigest> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<StreamDigest>((resolve, reject) => {
      this.finals.push({ resolve, reject });
      this.worker.postMessage({ end: stream === 'tar' ? 0 : 1 });
      this.arm();
    });
  }

  /** Stop the worker (always call it, also after a failure). */
  async close(): Promise<void> {
    this.fail(new KbError('INTERNAL', 'layer hashing was closed'));
    await this.worker.terminate();
  }

  private onMessage(m: { ack?: number; result?: { hex: string; size: number; crc: number }; error?: string }): void {
    if (m.error !== undefined) return this.fail(new KbError('INTERNAL', `layer hashing failed: ${m.error}`));
    if (m.ack !== undefined) {
      const p = this.pending.shift();
      if (!p || p.seq !== m.ack) return this.fail(new KbError('INTERNAL', `layer hashing: answer ${m.ack} out of order`));
      this.copiedAhead -= p.copied;
      p.resolve();
      if (this.drained && this.copiedAhead <= MAX_AHEAD) {
        const go = this.drained;
        this.drained = undefined;
        go();
      }
    } else if (m.result) {
      const r = m.result;
      this.finals.shift()?.resolve({ digest: `sha256:${r.hex}`, size: r.size, crc: r.crc });
    }
    this.arm();
  }

  /** (Re)start the deadline while the worker owes an answer; clear it when it owes none. */
  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.failure || (!this.pending.length && !this.finals.length)) return;
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
    for (const f of this.finals.splice(0)) f.reject(e);
  }
}
