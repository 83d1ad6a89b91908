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
export function decodeFile(path: string, decoder: Transform, codec: 'gzip' | 'zstd', what: string): Readable {
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
