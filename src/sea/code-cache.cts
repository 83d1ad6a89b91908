/**
 * The node executable's V8 code cache: compiled bytecode of the CLI (SEA asset `cli.cjs`), kept in
 * a file next to the executable (`kbundle.v8cache`) so that a command need not parse and compile
 * 4 MB of JavaScript on every start. It is not in the executable itself: V8's cache output differs
 * from run to run, and the executable must be byte-reproducible. `kbundle --write-code-cache`
 * writes it on the node (bundles/kbundle run.sh does), nothing writes it implicitly.
 *
 * V8 only checks its own version, flags and the source length, and (in release builds) not the
 * integrity of the bytecode it loads. So the file is only read when it is as trusted as the
 * executable (a regular file, not a symlink, owned by the executable's owner, writable by nobody
 * else), and only used when its header names this exact CLI source, Node version and architecture
 * and the sha256 of its payload matches. Anything else is ignored, with the same output as without.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

const MAGIC = 'kbundle-code-cache/1';
/** Far above a real cache (about 1 MB); bounds what a broken file makes us read. */
export const MAX_CODE_CACHE_BYTES = 64 * 2 ** 20;
const MAX_HEADER_BYTES = 512;

/** What a cache must have been made for. */
export interface CodeCacheBinding {
  /** sha256 (hex) of the CLI source the cache was compiled from. */
  cliSha256: string;
  nodeVersion: string;
  arch: string;
}

export type CodeCacheRead = { data: Buffer } | { data?: undefined; reason: string };

/** Where the cache of the executable at `execPath` lives. */
export function codeCachePath(execPath: string): string {
  return `${execPath}.v8cache`;
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function header(binding: CodeCacheBinding, data: Uint8Array): string {
  return `${MAGIC} cli=${binding.cliSha256} node=${binding.nodeVersion} arch=${binding.arch} data=${sha256(data)} size=${data.length}\n`;
}

/** The file: one text header line binding the cache, then V8's bytes. */
export function encodeCodeCache(binding: CodeCacheBinding, data: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(header(binding, data), 'latin1'), data]);
}

/** V8's bytes of a cache file, if the header matches `binding` and the payload its checksum. */
export function decodeCodeCache(file: Buffer, binding: CodeCacheBinding): CodeCacheRead {
  const nl = file.subarray(0, MAX_HEADER_BYTES).indexOf(0x0a);
  if (nl < 0) return { reason: 'no kbundle code cache header' };
  const fields = file.subarray(0, nl).toString('latin1').split(' ');
  if (fields[0] !== MAGIC) return { reason: 'no kbundle code cache header' };
  const kv = new Map(fields.slice(1).map((f) => [f.slice(0, f.indexOf('=')), f.slice(f.indexOf('=') + 1)]));
  if (kv.get('cli') !== binding.cliSha256) return { reason: 'made for another kbundle build' };
  if (kv.get('node') !== binding.nodeVersion || kv.get('arch') !== binding.arch) return { reason: `made for Node ${kv.get('node')} ${kv.get('arch')}` };
  const data = file.subarray(nl + 1);
  if (kv.get('size') !== String(data.length) || kv.get('data') !== sha256(data)) return { reason: 'damaged (checksum)' };
  return { data };
}

/**
 * Reads the cache at `path` if it is as trusted as the executable at `execPath`. Never throws:
 * a cache that cannot be used only costs the compile it would have saved.
 */
export function readCodeCache(path: string, execPath: string, binding: CodeCacheBinding): CodeCacheRead {
  let fd: number;
  try {
    // O_NOFOLLOW: not through a symlink; O_NONBLOCK: a FIFO planted there must not hang the start.
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    return { reason: (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'absent' : `cannot open (${(e as NodeJS.ErrnoException).code})` };
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return { reason: 'not a regular file' };
    if (st.mode & 0o022) return { reason: 'writable by group or others' };
    const owner = statSync(execPath).uid;
    if (st.uid !== owner) return { reason: `owned by uid ${st.uid}, the executable by uid ${owner}` };
    if (st.size > MAX_CODE_CACHE_BYTES) return { reason: `larger than ${MAX_CODE_CACHE_BYTES} bytes` };
    const file = Buffer.alloc(st.size);
    let got = 0;
    while (got < file.length) {
      const n = readSync(fd, file, got, file.length - got, got);
      if (n === 0) break;
      got += n;
    }
    return decodeCodeCache(file.subarray(0, got), binding);
  } catch (e) {
    return { reason: `cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})` };
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes the cache file for the executable at `execPath`: staged beside it (new file, never
 * through a symlink), then renamed over the old one, so a reader sees the old file or the new one.
 * Refuses when the file would not be trusted by `readCodeCache` (written by another user).
 */
export function writeCodeCache(execPath: string, binding: CodeCacheBinding, data: Uint8Array): string {
  const path = codeCachePath(execPath);
  const owner = statSync(execPath).uid;
  const me = process.getuid?.();
  if (me !== undefined && me !== owner) {
    throw new Error(`${path}: the executable belongs to uid ${owner}; a cache written by uid ${me} would not be used. Run this as the executable's owner.`);
  }
  const staged = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  const fd = openSync(staged, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  let open = true;
  try {
    const file = encodeCodeCache(binding, data);
    for (let off = 0; off < file.length;) off += writeSync(fd, file, off, file.length - off);
    open = false;
    closeSync(fd);
    renameSync(staged, path);
  } catch (e) {
    if (open) closeSync(fd);
    unlinkSync(staged);
    throw e;
  }
  return path;
}
