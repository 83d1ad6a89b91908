import { Transform, type TransformCallback } from 'node:stream';
import { promisify } from 'node:util';
import { constants, crc32, deflateRaw } from 'node:zlib';

const deflateRawAsync = promisify(deflateRaw) as (buf: Buffer, opts: object) => Promise<Buffer>;

const DICT_SIZE = 32 * 1024;

/**
 * pigz-style gzip: the input is cut into fixed-size chunks that are deflated concurrently on
 * libuv's thread pool (so both cores work), each primed with the previous chunk's last 32 KiB
 * as dictionary and ended with a sync flush, then joined in order into ONE gzip member.
 * Fixed chunk boundaries keep the output deterministic; memory is bounded by
 * chunkSize × maxInFlight.
 */
export class ParallelGzip extends Transform {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private dict: Buffer = Buffer.alloc(0);
  private crc = 0;
  private total = 0;
  private readonly inFlight: Promise<Buffer>[] = [];
  private headerWritten = false;

  constructor(
    private readonly level = 6,
    private readonly chunkSize = 1024 * 1024,
    // Measured on 2 cores: 2 in flight 0.89x of tar|gzip, 4 → 0.80x, 6 → 0.75x (RSS ~175 MiB);
    // a deeper queue hides the thread pool's scheduling gaps. The pool has 8 threads (dist/src/cli/kbundle.js).
    private readonly maxInFlight = 6,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.drainFullChunks().then(() => cb(), cb);
  }

  override _flush(cb: TransformCallback): void {
    (async () => {
      await this.drainFullChunks();
      const rest = Buffer.concat(this.pending);
      this.pending = [];
      this.pendingBytes = 0;
      this.startChunk(rest, true);
      while (this.inFlight.length) this.output(await this.inFlight.shift()!);
      const trailer = Buffer.alloc(8);
      trailer.writeUInt32LE(this.crc >>> 0, 0);
      trailer.writeUInt32LE(this.total % 2 ** 32, 4);
      this.push(trailer);
    })().then(() => cb(), cb);
  }

  private output(buf: Buffer): void {
    if (!this.headerWritten) {
      // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=3 (Unix): no name, no time.
      this.push(Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]));
      this.headerWritten = true;
    }
    this.push(buf);
  }

  private async drainFullChunks(): Promise<void> {
    while (this.pendingBytes >= this.chunkSize) {
      const all = Buffer.concat(this.pending);
      const piece = all.subarray(0, this.chunkSize);
      const rest = all.subarray(this.chunkSize);
      this.pending = rest.length ? [rest] : [];
      this.pendingBytes = rest.length;
      this.startChunk(piece, false);
      // Backpressure: wait for the oldest chunk before starting more than maxInFlight.
      while (this.inFlight.length >= this.maxInFlight) this.output(await this.inFlight.shift()!);
    }
  }

  private startChunk(piece: Buffer, last: boolean): void {
    this.crc = crc32(piece, this.crc);
    this.total += piece.length;
    const opts: Record<string, unknown> = { level: this.level, memLevel: 9, chunkSize: 1024 * 1024, finishFlush: last ? constants.Z_FINISH : constants.Z_SYNC_FLUSH };
    if (this.dict.length) opts.dictionary = this.dict;
    this.inFlight.push(deflateRawAsync(piece, opts));
    this.dict = Buffer.from(piece.subarray(Math.max(0, piece.length - DICT_SIZE)));
  }
}
