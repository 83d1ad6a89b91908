import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants as fsConstants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { delimiter, join } from 'node:path';
import { Duplex, type Readable, type Transform } from 'node:stream';
import * as zlib from 'node:zlib';
import { KbError, UserError } from '../errors.js';
import { decodeThrough } from './zlib-decode.js';

/** What the zstd program says, on stderr, when its input ends inside a frame (it exits 1 for every error). */
const ZSTD_TRUNCATED = /premature end|unexpected end of file/i;
const STDERR_KEPT = 4096;

/** `--compression zstd` without a level: zstd's own default, and what containerd and buildkit use. */
export const ZSTD_DEFAULT_LEVEL = 3;
/** zstd's levels without `--ultra` (20-22 need a decoder window of 128 MiB and more). */
export const ZSTD_MAX_LEVEL = 19;
/** The zstd program refuses more (ZSTDMT_NBWORKERS_MAX on 64-bit). */
const MAX_THREADS = 256;

/**
 * Default thread cap: at level 3 four threads outrun the tar writer, and each one costs memory
 * (zstd -3 on a 200 MiB tar, peak RSS: 48 MiB with -T1, 62 with -T2, 72 with -T4, 142 with -T8).
 */
const DEFAULT_MAX_THREADS = 4;

/**
 * Compression threads: KBUNDLE_ZSTD_THREADS, else one per core up to 4. The output does not
 * depend on it (see zstdCompressor); it only trades memory for speed.
 */
export function zstdThreads(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.KBUNDLE_ZSTD_THREADS;
  if (v === undefined || v === '') return Math.min(availableParallelism(), DEFAULT_MAX_THREADS);
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) throw new UserError(`KBUNDLE_ZSTD_THREADS: "${v}" must be 1-${MAX_THREADS}`);
  return n;
}

/**
 * A zstd compressor stream backed by the `zstd` program (Debian package zstd). Its streaming
 * multi-threaded mode (`-T<n>`, n >= 1) cuts the input into jobs whose size depends on the level
 * only, so the bytes are the same for any n: zstd's maintainers support that for streaming input
 * (facebook/zstd#2327), and test/layer-codec.test.ts checks it. `--single-thread` (no worker)
 * would give other bytes, so it is never used. Input always arrives on stdin (unknown size: no
 * content size in the frame, no size-tuned parameters); the level and thread count are explicit
 * arguments, so ZSTD_CLEVEL and ZSTD_NBTHREADS in the environment change nothing. Same tar and
 * same zstd version, same bytes.
 *
 * Not Node's zlib zstd (Node >= 22.15): its bytes come from its own libzstd (1.5.7 in Node 24,
 * not the distribution's), and with ZSTD_c_nbWorkers it truncates the stream (nodejs/node#59899).
 */
export function zstdCompressor(level: number, threads = zstdThreads()): Duplex {
  return new ProgramStream('zstd', compressArgs(level, threads), COMPRESS_ERRORS);
}

/** The zstd command line for `level` and `threads` (one place, so both writers give the same bytes). */
function compressArgs(level: number, threads: number): string[] {
  if (!Number.isInteger(level) || level < 1 || level > ZSTD_MAX_LEVEL) throw new UserError(`zstd level ${level} must be 1-${ZSTD_MAX_LEVEL}`);
  return ['-q', '-c', `-T${threads}`, `-${level}`];
}

const COMPRESS_ERRORS = {
  spawnError: (e: NodeJS.ErrnoException): Error => (e.code === 'ENOENT' ? new UserError('zstd is not installed', 'install it: apt-get install -y zstd, or build with --compression gzip') : e),
  exitError: (status: string, stderr: string): Error => new UserError(`zstd failed (${status}): ${stderr.trim()}`),
};

/** Compressed bytes gathered before one file write (writev: no copy), and the most left unwritten. */
const FILE_BATCH = 1024 * 1024;
const FILE_AHEAD = 8 * 1024 * 1024;

/**
 * The zstd program fed with buffers and writing straight to a file: what a layer build uses (the
 * same bytes as zstdCompressor). No stream stage on either side: `write` hands a buffer to the
 * program's stdin and resolves once the pipe has taken it (then the caller may reuse it); the
 * output is hashed (the blob digest) and written with writev in batches. `end` resolves once the
 * program exited 0 and every byte is in the file; a failure of the program or of a write fails
 * `write` and `end`. `abort` stops the program.
 */
export class ZstdFileWriter {
  private readonly child: ReturnType<typeof spawn>;
  private readonly hash = createHash('sha256');
  private stderr = '';
  private failure: Error | undefined;
  private size = 0;
  private held: Buffer[] = [];
  private heldBytes = 0;
  private unwritten = 0;
  private writes: Promise<void> = Promise.resolve();
  private readonly exited: Promise<void>;

  constructor(
    private readonly fh: FileHandle,
    level: number,
    threads = zstdThreads(),
  ) {
    const child = spawn('zstd', compressArgs(level, threads), { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    child.stderr!.on('data', (d: Buffer) => {
      if (this.stderr.length < STDERR_KEPT) this.stderr += d.toString('utf8');
    });
    child.stdin!.on('error', () => undefined); // the program quit early: its exit says why
    child.stdout!.on('data', (c: Buffer) => {
      this.hash.update(c);
      this.size += c.length;
      this.held.push(c);
      this.heldBytes += c.length;
      if (this.heldBytes >= FILE_BATCH) this.flush();
    });
    this.exited = new Promise<void>((resolve, reject) => {
      child.on('error', (e: NodeJS.ErrnoException) => reject(this.fail(COMPRESS_ERRORS.spawnError(e))));
      child.on('close', (code, signal) => {
        // 'close' comes after the output ended: every byte has been seen by then.
        if (code === 0) resolve();
        else reject(this.fail(COMPRESS_ERRORS.exitError(code !== null ? `exit ${code}` : `killed by ${signal}`, this.stderr)));
      });
    });
    this.exited.catch(() => undefined); // awaited in end()
  }

  private fail(e: Error): Error {
    this.failure ??= e;
    return this.failure;
  }

  /** Write the held output (in order, one writev); hold the program back while much is unwritten. */
  private flush(): void {
    if (!this.heldBytes) return;
    const bufs = this.held;
    const n = this.heldBytes;
    this.held = [];
    this.heldBytes = 0;
    this.unwritten += n;
    if (this.unwritten >= FILE_AHEAD) this.child.stdout!.pause();
    this.writes = this.writes.then(async () => {
      if (this.failure) return;
      try {
        for (let done = 0; done < n;) {
          const { bytesWritten } = await this.fh.writev(done === 0 ? bufs : remaining(bufs, done));
          done += bytesWritten;
        }
      } catch (e) {
        this.fail(e as Error);
        this.child.kill();
        return;
      }
      this.unwritten -= n;
      if (this.unwritten < FILE_AHEAD) this.child.stdout!.resume();
    });
  }

  /** Give `piece` to the program; resolves when the pipe has taken it (the piece is free again). */
  async write(piece: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    const err = await new Promise<Error | null | undefined>((resolve) => this.child.stdin!.write(piece, resolve));
    if (!err) return;
    await this.exited; // the program quit (a write fails only then): its exit status is the error
    throw this.failure ?? err;
  }

  /** Close the program's input; the blob digest and size once it exited 0 and the file has every byte. */
  async end(): Promise<{ digest: string; size: number }> {
    this.child.stdin!.end();
    await this.exited;
    this.flush();
    await this.writes;
    if (this.failure) throw this.failure;
    return { digest: `sha256:${this.hash.digest('hex')}`, size: this.size };
  }

  /** Stop the program (after a failure elsewhere); waits until it is gone. */
  async abort(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill();
    await this.exited.catch(() => undefined);
    await this.writes;
  }
}

/** `bufs` without their first `skip` bytes (after a short writev). */
function remaining(bufs: Buffer[], skip: number): Buffer[] {
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

/** Bytes let ahead of the program on either side: half a zstd job at level 3, so its threads rarely starve. */
const AHEAD = 4 * 1024 * 1024;
const OUT_PIECE = 1024 * 1024;

/**
 * A program's stdin and stdout as one Duplex, with room for AHEAD bytes each way. The child's own
 * streams hold 16-64 KiB, so through Duplex.from the tar writer, zstd and the hashing of its output
 * ran in lock step (in profiles, writes to its stdin took 0.5 s of the main thread for 200 MiB).
 * The output ends only once the program exited 0; any other exit fails the stream with `exitError`.
 */
class ProgramStream extends Duplex {
  private readonly child: ReturnType<typeof spawn>;
  private stderr = '';
  private unflushed = 0;
  private waiting?: () => void;

  constructor(program: string, args: string[], errors: { spawnError: (e: NodeJS.ErrnoException) => Error; exitError: (status: string, stderr: string) => Error }) {
    super({ writableHighWaterMark: AHEAD, readableHighWaterMark: AHEAD });
    const child = spawn(program, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    child.stderr!.on('data', (d: Buffer) => {
      if (this.stderr.length < STDERR_KEPT) this.stderr += d.toString('utf8');
    });
    // The program writes 64 KiB at a time; passed on in pieces of OUT_PIECE, the hashing and the
    // file writes after it take a sixteenth of the calls (each fs.write costs ~0.1 ms here).
    let held: Buffer[] = [];
    let heldBytes = 0;
    const flush = (): boolean => {
      const piece = held.length === 1 ? held[0]! : Buffer.concat(held, heldBytes);
      held = [];
      heldBytes = 0;
      return this.push(piece);
    };
    child.stdout!.on('data', (c: Buffer) => {
      held.push(c);
      heldBytes += c.length;
      if (heldBytes >= OUT_PIECE && !flush()) child.stdout!.pause();
    });
    child.stdout!.on('end', () => {
      if (heldBytes) flush();
    });
    child.stdin!.on('error', () => undefined); // the program quit early: reported through close below
    child.on('error', (e: NodeJS.ErrnoException) => this.destroy(errors.spawnError(e)));
    child.on('close', (code, signal) => {
      if (code === 0) this.push(null);
      else if (!this.destroyed) this.destroy(errors.exitError(code !== null ? `exit ${code}` : `killed by ${signal}`, this.stderr));
    });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    const stdin = this.child.stdin!;
    // The program is gone: its exit (close, above) fails this stream. Writing on would spin, each
    // failed write calling back at once, and starve the event loop of that very close.
    if (stdin.destroyed) {
      this.waiting = () => cb();
      return;
    }
    this.unflushed += chunk.length;
    stdin.write(chunk, (err) => {
      if (err) return;
      this.unflushed -= chunk.length;
      if (this.unflushed < AHEAD && this.waiting) {
        const go = this.waiting;
        this.waiting = undefined;
        go();
      }
    });
    if (this.unflushed < AHEAD) cb();
    else this.waiting = () => cb();
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.child.stdin!.end(cb);
  }

  override _read(): void {
    this.child.stdout!.resume();
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill();
    cb(err);
  }
}

let programFound: boolean | undefined;

/** Whether an executable `zstd` is on PATH (looked up once: decompressing picks its way by it). */
export function zstdProgramAvailable(): boolean {
  programFound ??= (process.env.PATH ?? '').split(delimiter).some((dir) => {
    if (!dir) return false;
    try {
      accessSync(join(dir, 'zstd'), fsConstants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
  return programFound;
}

type ZstdDecompressFactory = () => Transform;
/** Node's zlib zstd decoder (Node >= 22.15 and 24, so the node executable has it; Node 20 and its types do not). */
const zlibZstd = (zlib as { createZstdDecompress?: ZstdDecompressFactory }).createZstdDecompress;

/**
 * Decompress a zstd stream: with the `zstd` program where there is one (another process, so the
 * event loop keeps hashing and writing), else with Node's zlib zstd (the node executable on a
 * Kairos node without zstd). A stream that ends inside a frame fails with code TRUNCATED, other
 * bad input with INVALID_INPUT, both naming `what`; neither way available is UNSUPPORTED with the
 * package to install. `via` forces a way (tests).
 */
export function zstdDecompress(src: Readable, what: string, via: 'program' | 'zlib' = zstdProgramAvailable() || !zlibZstd ? 'program' : 'zlib'): Readable {
  return via === 'zlib' ? zlibDecompress(src, what) : programDecompress(src, what);
}

function zlibDecompress(src: Readable, what: string): Readable {
  if (!zlibZstd) throw new KbError('UNSUPPORTED', `${what}: zstd data, but this Node.js has no zstd decoder`, { hint: 'install the zstd program: apt-get install -y zstd' });
  return decodeThrough(src, zlibZstd(), 'zstd', what);
}

function programDecompress(src: Readable, what: string): Readable {
  const out = new ProgramStream('zstd', ['-dc'], {
    spawnError: (e) => (e.code === 'ENOENT' ? new KbError('UNSUPPORTED', `${what}: zstd data, but the zstd program is missing`, { hint: 'install it: apt-get install -y zstd' }) : e),
    exitError: (status, stderr) => {
      const detail = stderr.trim().replace(/^zstd: /, '') || status;
      return ZSTD_TRUNCATED.test(stderr)
        ? new KbError('TRUNCATED', `${what}: the zstd stream ends early (${detail})`, { hint: 'the blob is incomplete; fetch or rebuild it' })
        : new KbError('INVALID_INPUT', `${what}: not valid zstd data (${detail})`);
    },
  });
  // The source's own errors pass as they are; a reader that stops early stops the source too.
  src.on('error', (e) => out.destroy(e));
  out.on('close', () => {
    if (!src.destroyed) src.destroy();
  });
  return src.pipe(out);
}
