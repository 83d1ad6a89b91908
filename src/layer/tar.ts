import { createWriteStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extract as tarExtract, pack as tarPack, type Header as Headers } from 'tar-stream';
import { errorMessage, KbError } from '../errors.js';
import { DigestingStream } from '../oci/digest.js';
import { compressor, mediaTypeOfCodec } from './codec.js';

export type LayerEntry =
  { type: 'directory'; path: string; mode: number } | { type: 'file'; path: string; mode: number; size: number; open: () => Readable } | { type: 'symlink'; path: string; target: string };

export interface LayerOptions {
  /** Every entry's mtime (SOURCE_DATE_EPOCH); atime/ctime are never written. */
  mtime: Date;
  uid: number;
  gid: number;
  /** gzip (default; level 1-9) or zstd (level 1-19). */
  compression?: 'gzip' | 'zstd';
  /** Compression level: gzip 1-9, zstd 1-19. */
  level: number;
  /** Called with the number of file bytes read, for progress bars. */
  onBytes?: (n: number) => void;
}

export interface WrittenLayer {
  /** The layer's media type (tar+gzip or tar+zstd). */
  mediaType: string;
  /** sha256 of the compressed blob (the descriptor digest). */
  digest: string;
  size: number;
  /** sha256 of the uncompressed tar (the config's rootfs.diff_ids entry). */
  diffId: string;
  uncompressedSize: number;
}

/** Sort the way `tar --sort=name` does: byte order of the full path. */
export function compareEntryPaths(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * Stream entries (already sorted, parents first) into a compressed tar at `outFile`, hashing both
 * the tar and the gzip bytes on the way. Memory stays flat: one file is read at a time and
 * flows straight through tar → compressor → disk.
 */
export async function writeLayer(entries: readonly LayerEntry[], outFile: string, opts: LayerOptions): Promise<WrittenLayer> {
  const tar = tarPack();
  const diff = new DigestingStream('sha256');
  const codec = opts.compression ?? 'gzip';
  const blob = new DigestingStream('sha256');
  const done = pipeline(tar, diff, compressor(codec, opts.level), blob, createWriteStream(outFile));

  const base = { mtime: opts.mtime, uid: opts.uid, gid: opts.gid, uname: '', gname: '' };
  try {
    for (const e of entries) {
      if (e.type === 'directory') {
        await addEntry(tar, { ...base, name: `${e.path}/`, type: 'directory', mode: e.mode });
      } else if (e.type === 'symlink') {
        await addEntry(tar, { ...base, name: e.path, type: 'symlink', linkname: e.target, mode: 0o777 });
      } else {
        await new Promise<void>((resolve, reject) => {
          const sink = tar.entry({ ...base, name: e.path, type: 'file', mode: e.mode, size: e.size }, (err) => (err ? reject(err) : resolve()));
          const src = e.open();
          if (opts.onBytes) src.on('data', (c: Buffer) => opts.onBytes!(c.length));
          pipeline(src, sink).catch(reject);
        });
      }
    }
    tar.finalize();
  } catch (err) {
    tar.destroy(err as Error);
    await done.catch(() => undefined);
    throw err;
  }
  await done;
  return { mediaType: mediaTypeOfCodec(codec), digest: blob.digest(), size: blob.size, diffId: diff.digest(), uncompressedSize: diff.size };
}

function addEntry(tar: ReturnType<typeof tarPack>, header: Partial<Headers> & { name: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    tar.entry(header, (err) => (err ? reject(err) : resolve()));
  });
}

/** One entry of a tar being read: its header and its body (consume or resume it before the next). */
export interface TarEntry {
  header: Headers;
  body: Readable;
}

/**
 * The entries of a tar stream (already decompressed, see codec.ts `decompress`). An error of `src`
 * reaches the reader as it is; a tar that stops inside an entry or header after `src` ended
 * cleanly is a KbError TRUNCATED naming `what`. Leaving the loop early stops reading `src`.
 */
export async function* readTar(src: Readable, what: string): AsyncGenerator<TarEntry> {
  const tar = tarExtract();
  // _final (streams' documented end hook) runs once every byte written was parsed; tar-stream fails
  // it when the archive stops inside an entry or header. Any earlier failure is a bad header.
  let atEnd = false;
  const final = tar._final.bind(tar);
  tar._final = (cb) => {
    atEnd = true;
    final(cb);
  };
  let sourceError: unknown;
  src.on('error', (e) => {
    sourceError = e;
    tar.destroy(e);
  });
  src.pipe(tar);
  try {
    for await (const entry of tar) yield { header: entry.header, body: entry as unknown as Readable };
  } catch (e) {
    if (e === sourceError || e instanceof KbError) throw e;
    if (atEnd) throw new KbError('TRUNCATED', `${what}: the tar archive ends inside an entry`, { cause: e, hint: 'the blob is incomplete; fetch or rebuild it' });
    throw new KbError('INVALID_INPUT', `${what}: not a valid tar archive (${errorMessage(e)})`, { cause: e });
  } finally {
    if (!src.destroyed && !src.readableEnded) src.destroy();
  }
}
