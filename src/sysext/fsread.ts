import { createReadStream, createWriteStream } from 'node:fs';
import { readdir, readFile, lstat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { UserError } from '../errors.js';
import { makeStagingDir, removeStagingDir } from '../util/atomic-write.js';
import { lastLines, runTool } from './tools.js';

/**
 * Read-only access to the file system inside an image region (a GPT partition or a bare image),
 * with the Debian tools: `unsquashfs -o <offset>` for squashfs (no copy, no loop device), and for
 * erofs (whose tools take no offset) a copy of the region unpacked with `fsck.erofs --extract`.
 */
export interface FsView {
  /** Every path, relative, no leading slash. */
  paths: string[];
  /** Contents of small files by relative path (the release files kbundle needs). */
  read(path: string): Promise<Buffer | undefined>;
  /**
   * A `user.*` extended attribute of one file: its value, undefined when the file has none, or
   * null when this view cannot tell (erofs: Debian's erofs-utils 1.5 extracts no xattrs).
   */
  userXattr(path: string, name: string): Promise<string | undefined | null>;
  close(): Promise<void>;
}

/**
 * unsquashfs lists no xattrs, so extract the one file with its user xattrs into a scratch folder
 * and ask getfattr (package attr). null when the scratch file system or the tools cannot say.
 */
async function squashfsUserXattr(image: string, offset: number, path: string, name: string, what: string): Promise<string | undefined | null> {
  const dir = await makeStagingDir(tmpdir(), 'xattr');
  try {
    const x = await runTool('unsquashfs', ['-o', String(offset), '-u', '-no-progress', '-d', join(dir, 'root'), image, path], { diskCap: { dir, bytes: XATTR_FILE_CAP, entries: 64 } });
    if (x.diskOverflow) throw new UserError(`${what}: ${path} unpacks to more than ${XATTR_FILE_CAP} bytes`, 'a release file is a few lines; the image may be hostile');
    if (x.code !== 0) return null;
    let g;
    try {
      g = await runTool('getfattr', ['--absolute-names', '--only-values', '-n', name, join(dir, 'root', path)]);
    } catch {
      return null; // getfattr not installed
    }
    if (g.code === 0) return g.stdout.toString('utf8');
    return /No such attribute/i.test(g.stderr) ? undefined : null;
  } finally {
    await removeStagingDir(dir);
  }
}

const MAX_CAT = 64 * 1024;
/** Disk the one-file extraction for an xattr may use (the release file, and the folders above it). */
const XATTR_FILE_CAP = 1024 * 1024;
/**
 * Disk an erofs unpack may use: compressed erofs (lz4, lzma) of real extensions expands a few
 * times; a hostile image of zeros expands hundreds of times and would fill the scratch disk.
 */
const erofsUnpackCap = (regionSize: number) => ({ bytes: 8 * regionSize + 64 * 1024 * 1024, entries: 1_000_000 });
/** A file list longer than this (about a million paths) is not an extension kbundle inspects. */
const MAX_LISTING = 64 * 1024 * 1024;

export async function openFilesystem(image: string, fsType: string, offset: number, size: number, what: string): Promise<FsView> {
  if (fsType === 'squashfs') {
    const r = await runTool('unsquashfs', ['-o', String(offset), '-l', '-d', '', image], { maxStdout: MAX_LISTING });
    if (r.overflow)
      throw new UserError(`${what}: the squashfs at offset ${offset} lists more than ${MAX_LISTING} bytes of paths`, 'an extension this large is not inspected; the image may be hostile');
    if (r.code !== 0) throw new UserError(`${what}: unsquashfs cannot read the squashfs at offset ${offset}: ${lastLines(r.stderr)}`);
    const paths = r.stdout
      .toString('utf8')
      .split('\n')
      .map((l) => l.replace(/^\//, ''))
      .filter((l) => l !== '');
    return {
      paths,
      async read(p) {
        if (!paths.includes(p)) return undefined;
        // Stopped past the cap: a hostile image's release file must not fill memory.
        const c = await runTool('unsquashfs', ['-o', String(offset), '-cat', image, p], { maxStdout: MAX_CAT });
        if (c.overflow) throw new UserError(`${what}: ${p} is larger than ${MAX_CAT} bytes`);
        if (c.code !== 0) return undefined;
        if (c.stdout.length > MAX_CAT) throw new UserError(`${what}: ${p} is larger than ${MAX_CAT} bytes`);
        return c.stdout;
      },
      userXattr: (p, name) => (paths.includes(p) ? squashfsUserXattr(image, offset, p, name, what) : Promise.resolve(undefined)),
      async close() {},
    };
  }
  if (fsType === 'erofs') {
    const dir = await makeStagingDir(tmpdir(), 'erofs');
    try {
      const img = join(dir, 'fs.img');
      await pipeline(createReadStream(image, { start: offset, end: offset + size - 1 }), createWriteStream(img));
      const root = join(dir, 'root');
      const cap = erofsUnpackCap(size);
      const r = await runTool('fsck.erofs', [`--extract=${root}`, '--no-preserve', img], { diskCap: { dir: root, ...cap } });
      if (r.diskOverflow)
        throw new UserError(
          `${what}: the erofs image unpacks to more than ${cap.bytes} bytes or ${cap.entries} files (${size} bytes packed)`,
          'kbundle does not inspect an extension that large; the image may be hostile',
        );
      if (r.code !== 0) throw new UserError(`${what}: fsck.erofs cannot read the erofs image: ${lastLines(r.stderr || r.stdout.toString())}`);
      const paths: string[] = [];
      const walk = async (rel: string): Promise<void> => {
        for (const n of (await readdir(join(root, rel))).sort()) {
          const p = rel ? posix.join(rel, n) : n;
          paths.push(p);
          if ((await lstat(join(root, p))).isDirectory()) await walk(p);
        }
      };
      await walk('');
      return {
        paths,
        async read(p) {
          if (!paths.includes(p)) return undefined;
          const st = await lstat(join(root, p));
          if (!st.isFile()) return undefined;
          if (st.size > MAX_CAT) throw new UserError(`${what}: ${p} is larger than ${MAX_CAT} bytes`);
          return readFile(join(root, p));
        },
        userXattr: async () => null,
        close: () => removeStagingDir(dir),
      };
    } catch (e) {
      await removeStagingDir(dir);
      throw e;
    }
  }
  throw new UserError(`${what}: ${fsType} file systems cannot be inspected by kbundle`, 'kbundle reads squashfs and erofs images');
}
