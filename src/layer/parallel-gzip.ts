import { constants, crc32, createDeflateRaw, type ZlibOptions } from 'node:zlib';

const DICT_SIZE = 32 * 1024;
const OUT_CHUNK = 1024 * 1024 + 64 * 1024;
/** Input bytes per independently deflated piece; part of the output format (see below). */
export const GZIP_CHUNK = 1024 * 1024;
/**
 * Pieces handed to the thread pool at once (each holds ~3 MiB while in flight). With 4, as many
 * as the pool has threads, a thread that finished waited for this thread to take the oldest output
 * and hand over the next piece, and the pieces, started together, tended to finish together: 1.7-1.8
 * of 2 cores busy. With 8 a finished thread takes a queued piece at once. 2 cores, interleaved
 * pairs, medians: 100 MiB tree 1.32 → 1.17 s (15 runs), 224 MiB 2.60 → 2.38 s (9 runs, pigz
 * 2.32 s); 12 was no better than 8 (1.14 vs 1.08 s); peak RSS +9 MiB. The bytes do not depend on it.
 */
const MAX_IN_FLIGHT = 8;
/** ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=3 (Unix): no name, no time. */
const GZIP_HEADER = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);

/**
 * Deflate one piece on the thread pool, in ONE zlib call: the piece is written with its final
 * flush as the write's own flush flag, and the stream is closed without `end()` (which would run
 * a second, empty pass: another thread-pool round trip and Writable's end-of-stream machinery on
 * the main thread for every MiB). zlib's bytes do not depend on how the input was split between
 * calls, so they are the same as deflate-then-flush. The stream API hands back the output in the
 * slices zlib wrote (no concatenated copy, as deflateRaw's callback makes); its output buffer is
 * sized so one pass holds a piece's worst case (deflate adds 5 bytes per 16 KiB stored block).
 *
 * `into`, when given, becomes that output buffer: a recycled one instead of the fresh MiB Node
 * allocates per stream, whose first touch page-faults on a thread-pool thread (0.15-0.2 s of
 * system time per 224 MiB layer, and GC pressure). Node has no option for it; its zlib streams
 * (20 to 24) keep the buffer in `_outBuffer`, and it is swapped only when that field looks as
 * expected, else Node's own buffer is used: the same bytes either way.
 */
function deflatePiece(piece: Buffer, opts: ZlibOptions, flush: number, into?: Buffer): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const z = createDeflateRaw({ ...opts, flush, finishFlush: flush, chunkSize: OUT_CHUNK });
    const internals = z as unknown as { _outBuffer?: unknown; _outOffset?: unknown };
    if (into && Buffer.isBuffer(internals._outBuffer) && internals._outBuffer.length === into.length && internals._outOffset === 0) internals._outBuffer = into;
    const out: Buffer[] = [];
    z.on('data', (b: Buffer) => out.push(b));
    z.on('error', reject);
    // The write's callback runs once zlib consumed the whole piece, after its output was pushed.
    z.write(piece, (err) => {
      z.close();
      if (err) reject(err);
      else resolve(out);
    });
  });
}

/**
 * Someone else reading every piece (layer-writer hashing on a worker thread, hash-worker.ts): it
 * also computes the CRC-32, so this thread does not. Pieces then live in shared memory.
 */
export interface PieceReader {
  /** Read `piece` (the next bytes); resolves once it may be refilled. */
  read(piece: Buffer): Promise<void>;
  /** The CRC-32 of every piece read, once all were. */
  crc32(): Promise<number>;
}

interface Job {
  input: Buffer;
  output: Promise<Buffer[]>;
  /** The recycled buffer zlib writes this piece's output into. */
  outBuffer: Buffer;
}

/**
 * pigz-style gzip: the input comes in pieces of exactly GZIP_CHUNK bytes (the last one shorter,
 * possibly empty), each deflated on libuv's thread pool (so every core works), primed with the
 * previous piece's last 32 KiB as dictionary and ended with a sync flush, then joined in order
 * into ONE gzip member. The bytes depend only on the input, the level and GZIP_CHUNK — never on
 * the number of threads or cores, nor on timing.
 *
 * The caller fills input buffers got from `buffer()` (recycled once deflated, so a long layer
 * allocates a handful of buffers, not one per MiB) and hands them to `push`; `onOutput` receives
 * the gzip bytes in order and may be async (its promise is awaited before the next output). The
 * bytes it gets live in recycled buffers: they must stay readable until the promise of a LATER
 * onOutput call resolves (a synchronous onOutput: until it is called again), then they may change.
 */
export class ParallelDeflate {
  private readonly jobs: Job[] = [];
  private readonly free: Buffer[] = [];
  private readonly freeOutput: Buffer[] = [];
  /** The output buffer of the piece emitted last: reusable once a later output was taken (below). */
  private lastOutput?: Buffer;
  /** The buffer the last pushed piece lives in: the next piece's dictionary, not reusable before that. */
  private dictSource?: Buffer;
  private dict?: Buffer;
  private crc = 0;
  private total = 0;
  private started = false;
  private ended = false;

  constructor(
    private readonly level: number,
    private readonly onOutput: (gzipBytes: Buffer) => void | Promise<void>,
    private readonly maxInFlight = MAX_IN_FLIGHT,
    private readonly reader?: PieceReader,
  ) {}

  /** An input buffer of GZIP_CHUNK bytes to fill (contents undefined; shared memory when a reader takes them). */
  buffer(): Buffer {
    return this.free.pop() ?? (this.reader ? Buffer.from(new SharedArrayBuffer(GZIP_CHUNK)) : Buffer.allocUnsafeSlow(GZIP_CHUNK));
  }

  /**
   * Deflate the next piece: `data` must be GZIP_CHUNK bytes unless `last`. Resolves once the piece
   * is queued (waiting for the oldest pieces when too many are in flight).
   */
  async push(data: Buffer, last = false): Promise<void> {
    if (this.ended) throw new Error('ParallelDeflate: push after the last piece');
    if (!last && data.length !== GZIP_CHUNK) throw new Error(`ParallelDeflate: pieces are ${GZIP_CHUNK} bytes, got ${data.length}`);
    this.ended = last;
    const read = this.reader?.read(data);
    if (!this.reader) this.crc = crc32(data, this.crc);
    this.total += data.length;
    const opts: ZlibOptions = { level: this.level, memLevel: 9 };
    if (this.dict) opts.dictionary = this.dict; // copied by zlib when the job is created
    const outBuffer = this.freeOutput.pop() ?? Buffer.allocUnsafeSlow(OUT_CHUNK);
    const deflated = deflatePiece(data, opts, last ? constants.Z_FINISH : constants.Z_SYNC_FLUSH, outBuffer);
    // The piece is done (and its buffer reusable) once deflated and read.
    const output = read ? Promise.all([deflated, read]).then(([out]) => out) : deflated;
    deflated.catch(() => undefined);
    output.catch(() => undefined); // a failure is reported where the job is awaited, never as unhandled
    this.jobs.push({ input: data, output, outBuffer });
    // The previous piece's buffer has served as dictionary; it is free once its own job is done too.
    const previous = this.dictSource;
    if (previous && !this.jobs.some((j) => j.input === previous)) this.free.push(previous);
    this.dictSource = data;
    this.dict = data.subarray(Math.max(0, data.length - DICT_SIZE));
    while (this.jobs.length >= this.maxInFlight) await this.takeOldest();
  }

  /** After the last piece: every output delivered, then the gzip trailer (CRC-32 and size mod 2^32). */
  async end(): Promise<void> {
    if (!this.ended) await this.push(Buffer.alloc(0), true);
    while (this.jobs.length) await this.takeOldest();
    const crc = this.reader ? await this.reader.crc32() : this.crc;
    const trailer = Buffer.alloc(8);
    trailer.writeUInt32LE(crc >>> 0, 0);
    trailer.writeUInt32LE(this.total % 2 ** 32, 4);
    await this.emit(trailer);
  }

  private async takeOldest(): Promise<void> {
    const job = this.jobs.shift()!;
    const out = await job.output;
    if (job.input !== this.dictSource && job.input.length === GZIP_CHUNK) this.free.push(job.input);
    if (!out.length) return void this.freeOutput.push(job.outBuffer); // nothing of it was handed on
    for (const b of out) await this.emit(b);
    // onOutput's promise for this piece's bytes has resolved, so it is done with every earlier
    // output (BlobFile.write resolves once the write before it is on disk): that buffer is free.
    if (this.lastOutput) this.freeOutput.push(this.lastOutput);
    this.lastOutput = job.outBuffer;
  }

  private async emit(bytes: Buffer): Promise<void> {
    if (!this.started) {
      this.started = true;
      await this.onOutput(GZIP_HEADER);
    }
    await this.onOutput(bytes);
  }
}
