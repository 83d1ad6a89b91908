import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { availableParallelism, constants as osConstants } from 'node:os';
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
 * depend on it (see compressArgs); it only trades memory for speed.
 */
export function zstdThreads(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.KBUNDLE_ZSTD_THREADS;
  if (v === undefined || v === '') return Math.min(availableParallelism(), DEFAULT_MAX_THREADS);
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) throw new UserError(`KBUNDLE_ZSTD_THREADS: "${v}" must be 1-${MAX_THREADS}`);
  return n;
}

/**
 * The zstd command line for `level` and `threads`. Streaming multi-threaded mode (`-T<n>`,
 * n >= 1) cuts the input into jobs whose size depends on the level only, so the bytes are the
 * same for any n: zstd's maintainers support that for streaming input (facebook/zstd#2327), and
 * test/zstd-layers.test.ts checks it. `--single-thread` (no worker) would give other bytes, so it
 * is never used. Input always arrives on stdin (unknown size: no content size in the frame, no
 * size-tuned parameters); the level and thread count are explicit arguments, so ZSTD_CLEVEL and
 * ZSTD_NBTHREADS in the environment change nothing. Same tar and same zstd version, same bytes.
 *
 * Not Node's zlib zstd (Node >= 22.15): its bytes come from its own libzstd (1.5.7 in Node 24,
 * not the distribution's), and with ZSTD_c_nbWorkers it truncates the stream (nodejs/node#59899).
 */
function compressArgs(level: number, threads: number): string[] {
  if (!Number.isInteger(level) || level < 1 || level > ZSTD_MAX_LEVEL) throw new UserError(`zstd level ${level} must be 1-${ZSTD_MAX_LEVEL}`);
  return ['-q', '-c', `-T${threads}`, `-${level}`];
}

/** What zstd prints (strerror) when it cannot write its output: the errno errors a write of our own would give. */
const ZSTD_WRITE_ERRORS: [RegExp, 'ENOSPC' | 'EDQUOT' | 'EROFS' | 'EIO'][] = [
  [/No space left on device/, 'ENOSPC'],
  [/Disk quota exceeded/, 'EDQUOT'],
  [/Read-only file system/, 'EROFS'],
  [/Input\/output error/, 'EIO'],
];

const COMPRESS_ERRORS: ProgramErrors = {
  spawnError: (e) => (e.code === 'ENOENT' ? new UserError('zstd is not installed', 'install it: apt-get install -y zstd, or build with --compression gzip') : e),
  exitError: (status, stderr) => {
    // The program writes the layer file itself (ZstdProgram): a full disk is an I/O error, as for gzip.
    const errno = ZSTD_WRITE_ERRORS.find(([re]) => re.test(stderr));
    if (!errno) return new UserError(`zstd failed (${status}): ${stderr.trim()}`);
    const [, code] = errno;
    return Object.assign(new Error(`${code}: zstd could not write the layer (${status}): ${stderr.trim()}`), { code, errno: -osConstants.errno[code], syscall: 'write' });
  },
};

/**
 * The zstd program (Debian package zstd) fed with buffers, for the layer writer, without a stream
 * stage: `write` hands a buffer to the program's stdin and resolves once the pipe has taken it
 * (the caller may then reuse it). The program writes its output itself, to the file descriptor
 * `out` (the layer's blob file): passed back through a pipe, every 64 KiB cost this process a
 * fresh buffer (page faults), a copy and a write, ~0.2 s of CPU per 100 MiB tree. `end` resolves
 * once the program exited 0 (every byte is in the file then); a failure of the program fails
 * `write` and `end`. `abort` stops the program.
 */
export class ZstdProgram {
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;

  constructor(level: number, out: number, threads = zstdThreads()) {
    const { child, exited } = startProgram('zstd', compressArgs(level, threads), COMPRESS_ERRORS, out);
    this.child = child;
    this.exited = exited;
    this.exited.catch(() => undefined); // awaited in write, end and abort
  }

  /** Give `piece` to the program; resolves when the pipe has taken it (the piece is free again). */
  async write(piece: Buffer): Promise<void> {
    const err = await new Promise<Error | null | undefined>((resolve) => this.child.stdin!.write(piece, resolve));
    if (!err) return;
    await this.exited; // the program quit (a write fails only then): its exit status is the error
    throw err;
  }

  /** Close the program's input; resolves once it exited 0. */
  async end(): Promise<void> {
    this.child.stdin!.end();
    await this.exited;
  }

  /** Stop the program (after a failure elsewhere); waits until it is gone. */
  async abort(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill();
    await this.exited.catch(() => undefined);
  }
}

interface ProgramErrors {
  spawnError: (e: NodeJS.ErrnoException) => Error;
  exitError: (status: string, stderr: string) => Error;
}

/** The program writes 64 KiB at a time; passed on in batches of OUT_PIECE, what follows takes a sixteenth of the calls. */
const OUT_PIECE = 1024 * 1024;

/**
 * Start `program` with piped stdio. Its output arrives at `onOutput` in batches of about OUT_PIECE
 * bytes (the rest when it ends); pausing stdout holds the program back. Or, given a file
 * descriptor, the program writes its output there itself. `exited` resolves when it closed after
 * exit 0, and otherwise rejects with `errors` (its stderr, up to STDERR_KEPT, in the message). A
 * write to a program that quit fails quietly: `exited` says why.
 */
function startProgram(program: string, args: string[], errors: ProgramErrors, onOutput: ((bytes: Buffer[], n: number) => void) | number): { child: ChildProcess; exited: Promise<void> } {
  const child = spawn(program, args, { stdio: ['pipe', typeof onOutput === 'number' ? onOutput : 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    if (stderr.length < STDERR_KEPT) stderr += d.toString('utf8');
  });
  let held: Buffer[] = [];
  let heldBytes = 0;
  const pass = (): void => {
    const bytes = held;
    const n = heldBytes;
    held = [];
    heldBytes = 0;
    if (typeof onOutput !== 'number') onOutput(bytes, n);
  };
  child.stdout?.on('data', (c: Buffer) => {
    held.push(c);
    heldBytes += c.length;
    if (heldBytes >= OUT_PIECE) pass();
  });
  child.stdout?.on('end', () => {
    if (heldBytes) pass();
  });
  child.stdin!.on('error', () => undefined);
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', (e: NodeJS.ErrnoException) => reject(errors.spawnError(e)));
    // 'close' comes after the output ended: every byte has been passed on by then.
    child.on('close', (code, signal) => (code === 0 ? resolve() : reject(errors.exitError(code !== null ? `exit ${code}` : `killed by ${signal}`, stderr))));
  });
  return { child, exited };
}

/** Bytes let ahead of the program on either side: half a zstd job at level 3, so its threads rarely starve. */
const AHEAD = 4 * 1024 * 1024;

/**
 * A program's stdin and stdout as one Duplex (the zstd decoder), with room for AHEAD bytes each
 * way. The child's own streams hold 16-64 KiB, so through Duplex.from the producer, zstd and the
 * consumer ran in lock step (when the compressor ran this way, writes to its stdin took 0.5 s of
 * the main thread for a 200 MiB tar).
 * The output ends only once the program exited 0; any other exit fails the stream with `exitError`.
 */
class ProgramStream extends Duplex {
  private readonly child: ChildProcess;
  private unflushed = 0;
  private waiting?: () => void;

  constructor(program: string, args: string[], errors: ProgramErrors) {
    super({ writableHighWaterMark: AHEAD, readableHighWaterMark: AHEAD });
    const { child, exited } = startProgram(program, args, errors, (bytes, n) => {
      if (!this.push(bytes.length === 1 ? bytes[0]! : Buffer.concat(bytes, n))) child.stdout!.pause();
    });
    this.child = child;
    exited.then(
      () => this.push(null),
      (e: Error) => {
        if (!this.destroyed) this.destroy(e);
      },
    );
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
      // Killed (the OOM killer, an operator): says nothing about the data.
      if (status.startsWith('killed by')) return new KbError('IO', `${what}: the zstd program was stopped (${status})`, { hint: 'run the command again; if it keeps failing, check free memory' });
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
