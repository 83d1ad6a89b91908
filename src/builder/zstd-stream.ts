import { spawn } from 'node:child_process';
import { Duplex } from 'node:stream';
import { UserError } from '../errors.js';

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
    if (stderr.length < 4096) stderr += d.toString('utf8');
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
