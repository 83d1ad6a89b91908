/**
 * Layer codecs: which compression a layer media type uses, and the one place compressing and
 * decompressing streams are made (umoci's casext/blobcompress plays this part). gzip is Node's
 * zlib (written in parallel chunks, see parallel-gzip.ts); zstd is the zstd program, multi-threaded
 * (see zstd.ts), read back by the program or, where there is none, Node's zlib zstd.
 */
import type { Duplex, Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { UserError } from '../errors.js';
import { MediaType } from '../oci/mediatypes.js';
import { ParallelGzip } from './parallel-gzip.js';
import { decodeThrough } from './zlib-decode.js';
import { ZSTD_DEFAULT_LEVEL, ZSTD_MAX_LEVEL, zstdCompressor, zstdDecompress } from './zstd.js';

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

export const GZIP_DEFAULT_LEVEL = 6;

/** A layer compression and its level, as `--compression gzip|zstd[:level]` names it. */
export interface Compression {
  codec: 'gzip' | 'zstd';
  level: number;
}

const LEVELS = { gzip: { max: 9, default: GZIP_DEFAULT_LEVEL }, zstd: { max: ZSTD_MAX_LEVEL, default: ZSTD_DEFAULT_LEVEL } } as const;

/**
 * `--compression gzip|zstd[:level]`; `levels` are the older per-codec flags (--gzip-level,
 * --zstd-level), still accepted when the level is not also given after the colon.
 */
export function parseCompression(spec: string, levels: { gzip?: string; zstd?: string } = {}): Compression {
  const m = /^(gzip|zstd)(?::(.*))?$/.exec(spec);
  if (!m) throw new UserError(`--compression: "${spec}" must be gzip or zstd, optionally with a level (gzip:1-9, zstd:1-${ZSTD_MAX_LEVEL})`);
  const codec = m[1] as Compression['codec'];
  const flag = levels[codec];
  if (m[2] !== undefined && flag !== undefined) throw new UserError(`--compression ${spec} and --${codec}-level ${flag}: give the level once`, `e.g. --compression ${codec}:${m[2]}`);
  const given = m[2] ?? flag;
  if (given === undefined) return { codec, level: LEVELS[codec].default };
  const level = /^\d+$/.test(given) ? Number(given) : NaN;
  const where = m[2] !== undefined ? `--compression ${spec}` : `--${codec}-level`;
  if (!(level >= 1 && level <= LEVELS[codec].max)) throw new UserError(`${where}: "${given}" must be 1-${LEVELS[codec].max}`);
  return { codec, level };
}

/**
 * A compressing stream, reproducible: gzip with no name and time 0 in its header and fixed
 * chunking (level 1-9), zstd in streaming multi-threaded mode whose bytes do not depend on the
 * thread count, with no name or time in the frame (level 1-19).
 */
export function compressor(codec: Exclude<LayerCodec, 'none'>, level: number): Duplex {
  return codec === 'zstd' ? zstdCompressor(level) : new ParallelGzip(level);
}

/**
 * The decompressed bytes of `src`, by codec or media type. Failures are KbErrors naming `what`:
 * TRUNCATED when the stream ends early, INVALID_INPUT when it is not valid data of its codec.
 */
export function decompress(src: Readable, codecOrMediaType: LayerCodec | string, what: string): Readable {
  const codec = codecOrMediaType === 'gzip' || codecOrMediaType === 'zstd' || codecOrMediaType === 'none' ? codecOrMediaType : codecOfMediaType(codecOrMediaType);
  if (codec === 'none') return src;
  if (codec === 'zstd') return zstdDecompress(src, what);
  return decodeThrough(src, createGunzip({ chunkSize: 256 * 1024 }), 'gzip', what);
}
