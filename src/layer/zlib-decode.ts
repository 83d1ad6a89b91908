import { PassThrough, type Readable, type Transform } from 'node:stream';
import { KbError } from '../errors.js';

/**
 * `src` piped through one of Node's zlib decoders (gunzip, zstd), with the decoder's errors turned
 * into KbErrors naming `what`: TRUNCATED when the input ends inside the stream (zlib says
 * Z_BUF_ERROR), INVALID_INPUT for bad data (Z_* and ZSTD_error_* codes). The source's own errors
 * pass as they are; closing the result stops the decoder and the source.
 */
export function decodeThrough(src: Readable, decoder: Transform, codec: 'gzip' | 'zstd', what: string): Readable {
  const out = new PassThrough({ highWaterMark: 256 * 1024 });
  decoder.on('error', (e: NodeJS.ErrnoException) => {
    out.destroy(
      e.code === 'Z_BUF_ERROR'
        ? new KbError('TRUNCATED', `${what}: the ${codec} stream ends early`, { cause: e, hint: 'the blob is incomplete; fetch or rebuild it' })
        : e.code?.startsWith('Z_') || e.code?.startsWith('ZSTD_')
          ? new KbError('INVALID_INPUT', `${what}: not valid ${codec} data (${e.message})`, { cause: e })
          : e,
    );
  });
  src.on('error', (e) => decoder.destroy(e));
  out.on('close', () => {
    if (!decoder.destroyed) decoder.destroy();
    if (!src.destroyed) src.destroy();
  });
  return src.pipe(decoder).pipe(out);
}
