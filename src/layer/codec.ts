/**
 * Layer codecs: which compression a layer media type uses, and the one place compressing and
 * decompressing streams are made (umoci's casext/blobcompress plays this part). gzip is Node's
 * zlib (written in parallel chunks, see parallel-gzip.ts); zstd is the zstd program.
 */
import { PassThrough, type Duplex, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { KbError } from '../errors.js';
import { MediaType } from '../oci/mediatypes.js';
import { ParallelGzip } from './parallel-gzip.js';
import { zstdCompressor, zstdDecompress } from './zstd.js';

export type LayerCodec = 'gzip' | 'zstd' | 'none';

/** The codec of a layer media type (OCI and Docker spellings); anything else is an uncompressed tar. */
export function codecOfMediaType(mediaType: string): LayerCodec {
  if (mediaType.endsWith('+gzip') || mediaType.endsWith('.tar.gzip')) return 'gzip';
  if (mediaType.endsWith('+zstd')) return 'zstd';
  return 'none';
}

/** The OCI layer media type for a codec. */
export function mediaTypeOfCodec(codec: LayerCodec): string {
  return codec === 'gzip' ? MediaType.OciLayerGzip : codec === 'zstd' ? MediaType.OciLayerZstd : MediaType.OciLayer;
}

/**
 * A compressing stream, reproducible: gzip with no name and time 0 in its header and fixed
 * chunking (level 1-9), zstd single-threaded with no name or time in the frame (level 1-19).
 */
export function compressor(codec: Exclude<LayerCodec, 'none'>, level: number): Duplex {
  return codec === 'zstd' ? zstdCompressor(level) : new ParallelGzip(level);
}

/** zlib says Z_BUF_ERROR when the input ends before the gzip trailer. */
const ZLIB_TRUNCATED = 'Z_BUF_ERROR';

/**
 * The decompressed bytes of `src`, by codec or media type. Failures are KbErrors naming `what`:
 * TRUNCATED when the stream ends early, INVALID_INPUT when it is not valid data of its codec.
 */
export function decompress(src: Readable, codecOrMediaType: LayerCodec | string, what: string): Readable {
  const codec = codecOrMediaType === 'gzip' || codecOrMediaType === 'zstd' || codecOrMediaType === 'none' ? codecOrMediaType : codecOfMediaType(codecOrMediaType);
  if (codec === 'none') return src;
  if (codec === 'zstd') return zstdDecompress(src, what);
  const gunzip = createGunzip({ chunkSize: 256 * 1024 });
  const out = new PassThrough({ highWaterMark: 256 * 1024 });
  // zlib errors become KbErrors with the blob's name; the source's own errors pass as they are.
  gunzip.on('error', (e: NodeJS.ErrnoException) => {
    out.destroy(
      e.code === ZLIB_TRUNCATED
        ? new KbError('TRUNCATED', `${what}: the gzip stream ends early`, { cause: e, hint: 'the blob is incomplete; fetch or rebuild it' })
        : e.code?.startsWith('Z_')
          ? new KbError('INVALID_INPUT', `${what}: not valid gzip data (${e.message})`, { cause: e })
          : e,
    );
  });
  src.on('error', (e) => gunzip.destroy(e));
  out.on('close', () => {
    if (!gunzip.destroyed) gunzip.destroy();
    if (!src.destroyed) src.destroy();
  });
  return src.pipe(gunzip).pipe(out);
}
