import { createHash } from 'node:crypto';
import { closeSync, readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { errorMessage, fsErrorCode, KbError } from '../errors.js';
import { BackgroundFlush } from '../util/background-flush.js';
import { mediaTypeOfCodec } from './codec.js';
import { FOLLOW_POLL_MS, FOLLOW_READ, TarHasher, tarDigester, type FollowedDigest, type TarDigest, type TarDigester } from './hash-worker.js';
import { GZIP_CHUNK, ParallelDeflate } from './parallel-gzip.js';
import { TarHeaderEncoder } from './tar-header.js';
import { ZstdProgram } from './zstd.js';

export type LayerEntry =
  | { type: 'directory'; path: string; mode: number }
  | {
      type: 'file';
      path: string;
      mode: number;
      size: number;
      /** The content as a stream (the general way). */
      open: () => Readable;
      /** Faster, when the content is a file: open it and give its descriptor (the writer reads it in place and closes it). */
      openFd?: () => number;
      /** Faster, when the content is already in memory. */
      data?: Buffer;
    }
  | { type: 'symlink'; path: string; target: string };

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
  /** How the output file is opened: 'w' (default), or STAGED_TEMP_FLAGS for a temp stage() made. */
  outputFlags?: string;
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

/**
 * Sort the way `tar --sort=name` does: byte order of the full path's UTF-8. Compared code unit by
 * code unit without encoding: a build sorts every entry (~34,000 comparisons for 2,000 files),
 * and encoding both paths made two Buffers per comparison. Below the surrogates (U+D800), UTF-16
 * order is UTF-8 order; a difference at a surrogate or above goes to the exact comparison.
 */
export function compareEntryPaths(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x < 0xd800 && y < 0xd800) return x - y;
    return Buffer.compare(Buffer.from(a), Buffer.from(b));
  }
  // One is a prefix of the other: shorter first (also when the cut splits a pair: the lone
  // surrogate becomes EF BF BD, below the pair's F0).
  return a.length - b.length;
}

const BLOCK = 512;
const END_OF_TAR = Buffer.alloc(2 * BLOCK);

/**
 * The tar, cut into pieces of one fixed size: bytes are copied (headers, in-memory files) or read
 * (files) straight into the current piece; a full piece goes to `full` and the next comes from
 * `take`. Only a full piece awaits anything, so small files cost no promise or stream each.
 */
class PieceWriter {
  private piece: Buffer;
  private filled = 0;
  constructor(
    private readonly take: () => Buffer,
    private readonly full: (piece: Buffer) => Promise<void>,
  ) {
    this.piece = take();
  }

  async put(bytes: Buffer): Promise<void> {
    let off = 0;
    while (off < bytes.length) {
      const n = bytes.copy(this.piece, this.filled, off);
      off += n;
      await this.advance(n);
    }
  }

  /** The free part of the current piece, to read into (then `advance` by what was read). */
  space(): { buf: Buffer; off: number; len: number } {
    return { buf: this.piece, off: this.filled, len: this.piece.length - this.filled };
  }

  async advance(n: number): Promise<void> {
    this.filled += n;
    if (this.filled < this.piece.length) return;
    await this.full(this.piece);
    this.piece = this.take();
    this.filled = 0;
  }

  /** The last, partial piece (possibly empty). */
  rest(): Buffer {
    return this.piece.subarray(0, this.filled);
  }
}

function changed(e: { path: string }, size: number, got: string): KbError {
  return new KbError('INVALID_INPUT', `layer file ${e.path}: its source changed while the layer was written (${size} bytes when planned, ${got} now)`, {
    hint: 'do not change the sources during a build, then build again',
  });
}

const probe = Buffer.alloc(1);

/** The body of a file entry from its descriptor: read in place into the pieces, exactly `size` bytes. */
async function readFd(w: PieceWriter, e: { path: string; size: number }, fd: number, onBytes?: (n: number) => void): Promise<void> {
  const read = (buf: Buffer, off: number, len: number, pos: number): number => {
    try {
      return readSync(fd, buf, off, len, pos);
    } catch (err) {
      throw new KbError(fsErrorCode(err), `layer file ${e.path}: cannot read its source (${(err as NodeJS.ErrnoException).code ?? errorMessage(err)})`, { cause: err });
    }
  };
  let pos = 0;
  let probed = false;
  while (pos < e.size) {
    const { buf, off, len } = w.space();
    // Asking for one byte more than is left (when the piece has room) tells in the same call
    // whether the file grew: the usual small file costs one read, not two. The extra byte lands
    // in the piece's free part, which the padding or the next header overwrites.
    probed = len > e.size - pos;
    const n = read(buf, off, probed ? e.size - pos + 1 : len, pos);
    if (n === 0) throw changed(e, e.size, `${pos}`);
    if (pos + n > e.size) throw changed(e, e.size, 'more');
    pos += n;
    onBytes?.(n);
    await w.advance(n);
  }
  if (!probed && read(probe, 0, 1, pos) !== 0) throw changed(e, e.size, 'more');
}

async function readStream(w: PieceWriter, e: { path: string; size: number }, src: Readable, onBytes?: (n: number) => void): Promise<void> {
  let got = 0;
  try {
    for await (const chunk of src as AsyncIterable<Buffer>) {
      got += chunk.length;
      if (got > e.size) throw changed(e, e.size, 'more');
      onBytes?.(chunk.length);
      await w.put(chunk);
    }
  } finally {
    if (!src.destroyed) src.destroy();
  }
  if (got !== e.size) throw changed(e, e.size, `${got}`);
}

/** About how many bytes packTar writes for `entries` (long names add a little). */
function plannedTarBytes(entries: readonly LayerEntry[]): number {
  let n = END_OF_TAR.length;
  for (const e of entries) n += BLOCK + (e.type === 'file' ? Math.ceil(e.size / BLOCK) * BLOCK : 0);
  return n;
}

/** Every entry as tar (tar-stream's bytes, see tar-header.ts), then the end-of-archive blocks. */
async function packTar(w: PieceWriter, entries: readonly LayerEntry[], opts: LayerOptions): Promise<void> {
  const headers = new TarHeaderEncoder({ uid: opts.uid || 0, gid: opts.gid || 0, mtime: opts.mtime.getTime() / 1000 });
  for (const e of entries) {
    // put copies the header before the next encode reuses its block.
    if (e.type === 'directory') await w.put(headers.encode(`${e.path}/`, 'directory', e.mode || 0o755, 0));
    else if (e.type === 'symlink') await w.put(headers.encode(e.path, 'symlink', 0o777, 0, e.target));
    else await w.put(headers.encode(e.path, 'file', e.mode || 0o644, e.size));
    if (e.type !== 'file') continue;
    if (e.data) {
      if (e.data.length !== e.size) throw changed(e, e.size, `${e.data.length}`);
      await w.put(e.data);
      opts.onBytes?.(e.size);
    } else if (e.openFd) {
      const fd = e.openFd();
      try {
        await readFd(w, e, fd, opts.onBytes);
      } finally {
        closeSync(fd);
      }
    } else {
      await readStream(w, e, e.open(), opts.onBytes);
    }
    const pad = (BLOCK - (e.size % BLOCK)) % BLOCK;
    if (pad) await w.put(END_OF_TAR.subarray(0, pad));
  }
  await w.put(END_OF_TAR);
}

/**
 * The layer blob being written: bytes in order (one write running, at most one waiting; callers
 * await what `write` returns), hashed (the descriptor digest) and counted on the way, and written
 * back to disk in the background as it grows (BackgroundFlush).
 */
class BlobFile {
  private last: Promise<void> = Promise.resolve();
  private readonly hash = createHash('sha256');
  private readonly flush: BackgroundFlush;
  size = 0;
  constructor(private readonly fh: FileHandle) {
    this.flush = new BackgroundFlush(fh);
  }

  /** Queue `bytes` (a batch goes in one writev, no copy); resolves once the write before it is done. */
  write(bytes: Buffer | Buffer[]): Promise<void> {
    const bufs = Array.isArray(bytes) ? bytes : [bytes];
    let n = 0;
    for (const b of bufs) {
      this.hash.update(b);
      n += b.length;
    }
    this.size += n;
    const before = this.last;
    this.last = before.then(async () => {
      for (let off = 0; off < n;) off += (await this.fh.writev(off ? unwritten(bufs, off) : bufs)).bytesWritten;
      this.flush.wrote(n);
    });
    this.last.catch(() => undefined); // reported through the awaited promises
    return before;
  }

  /** Every write done and no flush running (the file may be closed); rejects with either's failure. */
  async done(): Promise<void> {
    await this.last;
    await this.flush.settled();
  }

  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

/**
 * The SHA-256 and size of a file another process is writing from start to end (the zstd program
 * writes the blob itself, see ZstdProgram), and written back to disk in the background as
 * BlobFile's (BackgroundFlush). When the tar is hashed on a worker thread, the file is read and
 * hashed there too (TarHasher.follow): on this thread the reads and their SHA-256 were a tenth of
 * a zstd build's wall, time the tar writer lacked; otherwise here (followHere).
 */
class FollowedFile {
  private readonly flush: BackgroundFlush;
  private readonly followed: FollowedDigest;
  private result?: Promise<{ digest: string; size: number }>;

  constructor(reader: FileHandle, writer: FileHandle, hasher: TarDigester) {
    const flush = (this.flush = new BackgroundFlush(writer));
    const onRead = (n: number) => flush.wrote(n);
    this.followed = hasher instanceof TarHasher ? hasher.follow(reader.fd, onRead) : followHere(reader, onRead);
  }

  /** The writer is done: read to the end of the file; rejects with a read or flush failure. */
  async finish(): Promise<{ digest: string; size: number }> {
    this.result ??= this.followed.end();
    const got = await this.result;
    await this.flush.settled();
    return got;
  }
}

/**
 * Follow the file open as `reader` on this thread, with one reused buffer. Bytes below the file's
 * size are complete (the kernel updates the size after copying a write), so what a read returns
 * is final; `end` is called once the writer has exited and reads the rest.
 */
function followHere(reader: FileHandle, onRead: (n: number) => void): FollowedDigest {
  const hash = createHash('sha256');
  let size = 0;
  let ended = false;
  let wake: (() => void) | undefined;
  const running = (async () => {
    const buf = Buffer.allocUnsafeSlow(FOLLOW_READ);
    for (;;) {
      const last = ended; // taken before the read: if set, that read sees every byte
      const { bytesRead } = await reader.read(buf, 0, buf.length, size);
      if (bytesRead > 0) {
        hash.update(buf.subarray(0, bytesRead));
        size += bytesRead;
        onRead(bytesRead);
      } else if (last) return;
      else await new Promise<void>((resolve) => setTimeout((wake = resolve), FOLLOW_POLL_MS));
    }
  })();
  running.catch(() => undefined); // reported by end
  return {
    async end() {
      ended = true;
      wake?.();
      await running;
      return { digest: `sha256:${hash.digest('hex')}`, size };
    },
  };
}

/** `bufs` without their first `skip` bytes (after a short write). */
function unwritten(bufs: Buffer[], skip: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of bufs) {
    if (skip >= b.length) skip -= b.length;
    else {
      out.push(skip ? b.subarray(skip) : b);
      skip = 0;
    }
  }
  return out;
}

/**
 * gzip: the tar pieces are deflated in parallel (parallel-gzip.ts) and hashed (diff_id, CRC-32) on
 * the hash worker (hash-worker.ts; on this thread for a small layer) as they fill, both reading
 * them in place; the gzip bytes are hashed here (digest) and written in order. No stream, no copy
 * of the tar; memory is the pieces in flight.
 */
async function writeGzipLayer(entries: readonly LayerEntry[], outFile: string, opts: LayerOptions): Promise<WrittenLayer> {
  const hasher = tarDigester(plannedTarBytes(entries));
  let tar: TarDigest | undefined;
  try {
    const fh = await open(outFile, opts.outputFlags ?? 'w');
    // The compressed bytes (a third of the tar's size) are hashed here: copying them to the worker
    // cost more than hashing them.
    const blob = new BlobFile(fh);
    try {
      const deflate = new ParallelDeflate(opts.level, (bytes) => blob.write(bytes), undefined, {
        read: (piece) => hasher.update(piece),
        crc32: async () => (tar = await hasher.finish()).crc,
      });
      const w = new PieceWriter(
        () => deflate.buffer(),
        (piece) => deflate.push(piece),
      );
      await packTar(w, entries, opts);
      await deflate.push(w.rest(), true);
      await deflate.end();
      await blob.done();
    } finally {
      await blob.done().catch(() => undefined); // nothing may write to fh once closed
      await fh.close();
    }
    if (!tar) throw new Error('writeGzipLayer: the tar was never finished');
    return { mediaType: mediaTypeOfCodec('gzip'), digest: blob.digest(), size: blob.size, diffId: tar.digest, uncompressedSize: tar.size };
  } finally {
    await hasher.close();
  }
}

/** Tar pieces in flight to the zstd program and the hash worker (each is reused once both are done). */
const ZSTD_PIECES = 8;

/**
 * zstd: the tar pieces (shared memory, reused) go to the zstd program's stdin and to the hash
 * worker (diff_id), both reading them in place; the program writes the blob file itself, and it
 * is hashed as it grows (FollowedFile). Both take the pieces in order, so the oldest piece in
 * flight is always the next to come free. Memory: ZSTD_PIECES pieces and the program's own buffers.
 */
async function writeZstdLayer(entries: readonly LayerEntry[], outFile: string, opts: LayerOptions): Promise<WrittenLayer> {
  const hasher = tarDigester(plannedTarBytes(entries), { crc32: false });
  let fh: FileHandle | undefined;
  let reader: FileHandle | undefined;
  let blob: FollowedFile | undefined;
  let zstd: ZstdProgram | undefined;
  try {
    fh = await open(outFile, opts.outputFlags ?? 'w');
    reader = await open(outFile, 'r');
    const z = (zstd = new ZstdProgram(opts.level, fh.fd));
    const file = (blob = new FollowedFile(reader, fh, hasher));
    const free: Buffer[] = Array.from({ length: ZSTD_PIECES }, () => Buffer.from(new SharedArrayBuffer(GZIP_CHUNK)));
    const inFlight: Promise<Buffer>[] = [];
    const send = (piece: Buffer): void => {
      const done = Promise.all([hasher.update(piece), z.write(piece)]).then(() => piece);
      done.catch(() => undefined); // a failure is thrown where the piece is awaited
      inFlight.push(done);
    };
    const w = new PieceWriter(
      () => free.pop()!,
      async (piece) => {
        send(piece);
        if (free.length === 0) free.push(await inFlight.shift()!);
      },
    );
    await packTar(w, entries, opts);
    send(w.rest());
    await Promise.all(inFlight);
    const tar = await hasher.finish();
    await z.end();
    const written = await file.finish();
    return { mediaType: mediaTypeOfCodec('zstd'), digest: written.digest, size: written.size, diffId: tar.digest, uncompressedSize: tar.size };
  } catch (e) {
    await zstd?.abort();
    throw e;
  } finally {
    await blob?.finish().catch(() => undefined); // nothing may use fh once closed
    await hasher.close(); // the worker may read through reader's descriptor until it stops
    await reader?.close();
    await fh?.close();
  }
}

/**
 * Write entries (already sorted, parents first) as a compressed tar at `outFile`, hashing both the
 * tar and the compressed bytes on the way. Memory stays flat: files are read piece by piece.
 */
export function writeLayer(entries: readonly LayerEntry[], outFile: string, opts: LayerOptions): Promise<WrittenLayer> {
  const codec = opts.compression ?? 'gzip';
  return codec === 'gzip' ? writeGzipLayer(entries, outFile, opts) : writeZstdLayer(entries, outFile, opts);
}
