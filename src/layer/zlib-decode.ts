import { open } from 'node:fs/promises';
import { PassThrough, type Readable, type Transform } from 'node:stream';
import { KbError } from '../errors.js';

/** A decoder's error as a KbError naming `what`; anything not from the decoder passes as it is. */
function decoderError(e: NodeJS.ErrnoException, codec: 'gzip' | 'zstd', what: string): Error {
  return e.code === 'Z_BUF_ERROR'
    ? new KbError('TRUNCATED', `${what}: the ${codec} stream ends early`, { cause: e, hint: 'the blob is incomplete; fetch or rebuild it' })
    : e.code?.startsWith('Z_') || e.code?.startsWith('ZSTD_')
      ? new KbError('INVALID_INPUT', `${what}: not valid ${codec} data (${e.message})`, { cause: e })
      : e;
}

/**
 * `src` piped through one of Node's zlib decoders (gunzip, zstd), with the decoder's errors turned
 * into KbErrors naming `what`: TRUNCATED when the input ends inside the stream (zlib says
 * Z_BUF_ERROR), INVALID_INPUT for bad data (Z_* and ZSTD_error_* codes). The source's own errors
 * pass as they are; closing the result stops the decoder and the source.
 */
export function decodeThrough(src: Readable, decoder: Transform, codec: 'gzip' | 'zstd', what: string): Readable {
  const out = new PassThrough({ highWaterMark: 256 * 1024 });
  decoder.on('error', (e: NodeJS.ErrnoException) => out.destroy(decoderError(e, codec, what)));
  src.on('error', (e) => decoder.destroy(e));
  out.on('close', () => {
    if (!decoder.destroyed) decoder.destroy();
    if (!src.destroyed) src.destroy();
  });
  return src.pipe(decoder).pipe(out);
}

/** Read buffers of decodeFile (two: one is read into while the decoder consumes the other). */
const FILE_READ = 1024 * 1024;

/**
 * The file at `path` through a decoder, as decodeThrough. The file is read into two buffers used
 * over and over: a read stream allocates a fresh one per read, and for an install's layers those
 * (a third of the bytes it allocates) cost page faults and external-memory GCs, 0.1-0.2 s of CPU
 * on the bench image. A buffer is read into again only once the decoder has consumed it (its
 * write callback: zlib calls it when the input is used up; it keeps no reference).
 */
export function decodeFile(path: string, decoder: Transform, codec: 'gzip' | 'zstd', what: string, recycler?: OutputRecycler): Readable {
  recycler?.attach(decoder);
  const out = new PassThrough({ highWaterMark: 256 * 1024 });
  decoder.on('error', (e: NodeJS.ErrnoException) => out.destroy(decoderError(e, codec, what)));
  let stopped = false;
  out.on('close', () => {
    stopped = true;
    if (!decoder.destroyed) decoder.destroy();
  });
  feed(path, decoder, () => stopped || decoder.destroyed).catch((e: unknown) => decoder.destroy(e as Error));
  return decoder.pipe(out);
}

async function feed(path: string, decoder: Transform, stopped: () => boolean): Promise<void> {
  const file = await open(path, 'r');
  try {
    const buffers = [Buffer.allocUnsafeSlow(FILE_READ), Buffer.allocUnsafeSlow(FILE_READ)];
    // Settled once the decoder has used up what was last written from that buffer (or failed:
    // a destroyed stream calls every pending write's callback with an error).
    const consumed = [Promise.resolve(), Promise.resolve()];
    for (let k = 0; ; k = 1 - k) {
      await consumed[k];
      if (stopped()) return;
      const { bytesRead } = await file.read(buffers[k]!, 0, FILE_READ, null);
      if (stopped()) return;
      if (bytesRead === 0) {
        decoder.end();
        return;
      }
      consumed[k] = new Promise((resolve) => decoder.write(buffers[k]!.subarray(0, bytesRead), () => resolve()));
    }
  } finally {
    await file.close();
  }
}

interface OutputBuffer {
  buffer: Buffer;
  /** Chunks of it pushed by the decoder and not yet released by the consumer. */
  handed: number;
  /** The decoder moved on to another buffer (it writes no more into this one). */
  retired: boolean;
}

/**
 * Output buffers of zlib decoders, reused once the consumer is done with every chunk cut from them.
 * Node gives each zlib stream a fresh buffer whenever the last one is full (256 KiB for an
 * install's gunzip, 800 of them for the bench's 200 MiB): its first touch page-faults on the
 * thread pool, and as external memory it drives V8's full GCs. Node has no option for it; its zlib
 * streams (20 to 24) keep the buffer in `_outBuffer` and replace it by assignment, so an accessor
 * there hands the decoder a released buffer instead (a decoder that does not look as expected is
 * left alone: Node's buffers, the same bytes). The consumer promises to call `release(chunk)` once
 * for each chunk, only when it keeps no view of it and has copied what it needs (the tar reader
 * does, src/util/tar-reader.ts, for an install whose file writer copies; see extract-image.ts).
 */
export class OutputRecycler {
  private readonly free: Buffer[] = [];
  private readonly live = new Map<ArrayBufferLike, OutputBuffer>();
  /** Buffers handed back to a decoder (for tests and profiles). */
  reused = 0;

  attach(decoder: Transform): void {
    const z = decoder as unknown as { _outBuffer?: unknown; _outOffset?: unknown; push: (chunk: unknown) => boolean };
    const first = z._outBuffer;
    if (!Buffer.isBuffer(first) || first.byteOffset !== 0 || z._outOffset !== 0 || typeof z.push !== 'function') return;
    let current: OutputBuffer = this.track(first);
    const size = first.length;
    // Node assigns a new buffer only in its write callback, once the thread pool's write into the
    // old one has completed: that retires it. A destroyed stream's last buffer is never retired (a
    // write may still be running into it); it is left to the GC.
    Object.defineProperty(z, '_outBuffer', {
      configurable: true,
      enumerable: true,
      get: () => current.buffer,
      set: (fresh: unknown) => {
        this.retire(current);
        const reused = Buffer.isBuffer(fresh) && fresh.length === size ? this.free.pop() : undefined;
        if (reused) this.reused++;
        current = Buffer.isBuffer(fresh) ? this.track(reused ?? fresh) : { buffer: fresh as Buffer, handed: 0, retired: true };
      },
    });
    // Counted as pushed (not as emitted): a chunk may wait in the stream's queue for a while.
    const push = z.push.bind(z);
    z.push = (chunk: unknown) => {
      if (Buffer.isBuffer(chunk)) {
        const b = this.live.get(chunk.buffer);
        if (b) b.handed++;
      }
      return push(chunk);
    };
  }

  /** The consumer is done with `chunk` (a chunk of an attached decoder's output). */
  release(chunk: Buffer): void {
    const b = this.live.get(chunk.buffer);
    if (!b || b.handed <= 0) return;
    b.handed--;
    this.freeIfDone(b);
  }

  private track(buffer: Buffer): OutputBuffer {
    const b = { buffer, handed: 0, retired: false };
    if (buffer.byteOffset === 0 && buffer.length === buffer.buffer.byteLength) this.live.set(buffer.buffer, b);
    return b;
  }

  private retire(b: OutputBuffer): void {
    b.retired = true;
    this.freeIfDone(b);
  }

  private freeIfDone(b: OutputBuffer): void {
    if (!b.retired || b.handed > 0 || !this.live.delete(b.buffer.buffer)) return;
    if (this.free.length < MAX_FREE) this.free.push(b.buffer);
  }
}

/** Released buffers kept for reuse (the read-ahead of four layers holds at most about this many). */
const MAX_FREE = 64;
