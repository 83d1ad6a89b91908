/**
 * Layer codecs: which compression a layer media type uses, the `--compression` flag, and the one
 * place decompressing streams are made (umoci's casext/blobcompress plays this part). Layers are
 * compressed by the layer writer (tar.ts): gzip with Node's zlib in parallel pieces
 * (parallel-gzip.ts), zstd with the zstd program, multi-threaded (zstd.ts); zstd is read back by
 * the program or, where there is none, Node's zlib zstd.
 */
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { UserError } from '../errors.js';
import { MediaType } from '../oci/mediatypes.js';
import { decodeFile, decodeThrough, type OutputRecycler } from './zlib-decode.js';
import { ZSTD_DEFAULT_LEVEL, ZSTD_MAX_LEVEL, zstdDecompress } from './zstd.js';

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
/** Inflated bytes per gunzip output chunk (64 KiB to 1 MiB measured alike for an install). */
const GUNZIP_CHUNK = 256 * 1024;

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

/** A codec given as itself or by a layer media type. */
function asCodec(codecOrMediaType: LayerCodec | string): LayerCodec {
  return codecOrMediaType === 'gzip' || codecOrMediaType === 'zstd' || codecOrMediaType === 'none' ? codecOrMediaType : codecOfMediaType(codecOrMediaType);
}

/**
 * The decompressed bytes of `src`, by codec or media type. Failures are KbErrors naming `what`:
 * TRUNCATED when the stream ends early, INVALID_INPUT when it is not valid data of its codec.
 */
export function decompress(src: Readable, codecOrMediaType: LayerCodec | string, what: string): Readable {
  const codec = asCodec(codecOrMediaType);
  if (codec === 'none') return src;
  if (codec === 'zstd') return zstdDecompress(src, what);
  return decodeThrough(src, createGunzip({ chunkSize: GUNZIP_CHUNK }), 'gzip', what);
}

/** The decompressed bytes of the file at `path`, as decompress; gzip reads it through reused buffers (zlib-decode.ts decodeFile). */
export function decompressFile(path: string, codecOrMediaType: LayerCodec | string, what: string, recycler?: OutputRecycler): Readable {
  const codec = asCodec(codecOrMediaType);
  if (codec === 'gzip') return decodeFile(path, createGunzip({ chunkSize: GUNZIP_CHUNK }), 'gzip', what, recycler);
  return decompress(createReadStream(path, { highWaterMark: 1024 * 1024 }), codec, what);
}
