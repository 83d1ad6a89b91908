import { spawn } from 'node:child_process';
import { Duplex, PassThrough, type Readable } from 'node:stream';
import { KbError, UserError } from '../errors.js';

/** What the zstd program says, on stderr, when its input ends inside a frame (it exits 1 for every error). */
const ZSTD_TRUNCATED = /premature end|unexpected end of file/i;
const STDERR_KEPT = 4096;

/**
 * A zstd compressor stream backed by the `zstd` program (Debian package zstd): Node 20's zlib has
 * no zstd. One thread (`-T1`) and no file name or time in the frame, so the same tar and the same
 * zstd version give the same bytes; the level is `-1`…`-19`.
 */
export function zstdCompressor(level: number): Duplex {
  if (!Number.isInteger(level) || level < 1 || level > 19) throw new UserError(`zstd level ${level} must be 1-19`);
  const child = spawn('zstd', ['-q', '-c', '-T1', `-${level}`], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    if (stderr.length < STDERR_KEPT) stderr += d.toString('utf8');
  });
  const duplex = Duplex.from({ writable: child.stdin, readable: child.stdout });
  child.on('error', (e: NodeJS.ErrnoException) => {
    duplex.destroy(e.code === 'ENOENT' ? new UserError('zstd is not installed', 'install it: apt-get install -y zstd, or build with --compression gzip') : e);
  });
  child.on('close', (code) => {
    if (code !== 0 && code !== null) duplex.destroy(new UserError(`zstd failed (exit ${code}): ${stderr.trim()}`));
  });
  child.stdin.on('error', () => undefined); // reported through close/error above
  return duplex;
}

/**
 * Decompress a zstd stream through `zstd -dc`. A stream that ends inside a frame fails with code
 * TRUNCATED, other bad input with INVALID_INPUT, both naming `what`; a missing program is
 * UNSUPPORTED with the package to install.
 */
export function zstdDecompress(src: Readable, what: string): Readable {
  const child = spawn('zstd', ['-dc'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const out = new PassThrough();
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    if (stderr.length < STDERR_KEPT) stderr += d.toString('utf8');
  });
  child.on('error', (e: NodeJS.ErrnoException) =>
    out.destroy(e.code === 'ENOENT' ? new KbError('UNSUPPORTED', `${what}: zstd data, but the zstd program is missing`, { hint: 'install it: apt-get install -y zstd' }) : e),
  );
  child.on('close', (code) => {
    if (code === 0 || code === null) return;
    const detail = stderr.trim().replace(/^zstd: /, '');
    out.destroy(
      ZSTD_TRUNCATED.test(stderr)
        ? new KbError('TRUNCATED', `${what}: the zstd stream ends early (${detail})`, { hint: 'the blob is incomplete; fetch or rebuild it' })
        : new KbError('INVALID_INPUT', `${what}: zstd failed to decompress (${detail})`),
    );
  });
  child.stdin.on('error', () => undefined); // zstd quit early: reported through close above
  src.on('error', (e) => {
    child.kill();
    out.destroy(e);
  });
  src.pipe(child.stdin);
  // Not pipe(): its end() would let a reader see a clean end before close reports a failure.
  child.stdout.on('data', (c: Buffer) => {
    if (!out.write(c)) child.stdout.pause();
  });
  out.on('drain', () => child.stdout.resume());
  child.on('close', (code) => {
    if (code === 0) out.end();
  });
  out.on('close', () => {
    if (child.exitCode === null) child.kill();
  });
  return out;
}
