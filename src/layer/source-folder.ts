import { closeSync, constants, createReadStream, fstatSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, realpathSync, type Stats } from 'node:fs';
import { isAbsolute, join, relative, sep } from 'node:path';
import { Readable } from 'node:stream';
import { errorMessage, fsErrorCode, KbError, UserError } from '../errors.js';
import { compareEntryPaths } from './tar.js';

/**
 * The one way build sources are read: a folder (a bundle folder, a Dockerfile's folder, a sysext
 * tree, a catalog) whose files may be hostile. Every path named by a spec is resolved component by
 * component, following a symlink only while it stays inside the folder; a tree is walked without
 * following any symlink (a symlink is a source of its own, copied as a symlink); FIFOs, sockets and
 * devices are refused before anything opens them; a regular file with a hard link outside the
 * folder is refused; and a file is opened with O_NOFOLLOW|O_NONBLOCK and checked again on its
 * descriptor (regular, inside the folder) so a swap after the checks cannot redirect the read.
 */

/** Linux gives up on a lookup after 40 symlinks (MAXSYMLINKS); so does this. */
const MAX_SYMLINK_HOPS = 40;
/** Small files are read in one synchronous call: thread-pool round trips dominate bundles of many small files. */
const SMALL_FILE = 256 * 1024;
const READ_CHUNK = 1024 * 1024;
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const ONLY = 'only regular files, folders and symlinks can be sources';

export type SourceKind = 'file' | 'directory' | 'symlink';

export interface SourceEntry {
  /** Absolute path (inside the folder, no symlink above it). */
  path: string;
  /** Path relative to the folder, with "/" separators (for messages). */
  rel: string;
  /** The last component of `path`. */
  name: string;
  kind: SourceKind;
  stats: Stats;
}

/** What opening a walked entry again needs of it (the layer plan keeps this, not the Stats). */
export type WalkedFile = Pick<SourceEntry, 'path' | 'rel' | 'kind'>;

/** "a FIFO", "a socket", … for what a source must not be; undefined for a file, folder or symlink. */
function specialKind(st: Stats): string | undefined {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (!st.isFile() && !st.isDirectory() && !st.isSymbolicLink()) return 'not a regular file';
  return undefined;
}

/** Where an open descriptor really points (Linux /proc); undefined where that cannot be told. */
function descriptorPath(fd: number): string | undefined {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return undefined;
  }
}

/** lstat that reports "nothing there" (ENOENT, or ENOTDIR for a path under a file) as undefined. */
function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).code;
    if (errno === 'ENOENT' || errno === 'ENOTDIR') return undefined;
    throw e;
  }
}

export interface ResolveOptions {
  /** Follow a symlink in the last component too (for files whose content is read, e.g. run.sh). */
  followFinal?: boolean;
  /** How the path is shown in messages (default: the path in quotes). */
  shown?: string;
}

export class SourceFolder {
  /** The folder's real path: every source must resolve under it. */
  readonly root: string;
  /** `root` and a separator, made once: a concatenation per check was flattened again on every file. */
  private readonly rootSlash: string;
  /** dev:ino → names inside the folder, for hard-linked files (counted once, when first needed). */
  private linkCounts?: Map<string, number>;

  /**
   * `label` names the folder in messages ("the bundle folder", "the tree"). A missing folder is a
   * KbError NOT_FOUND naming `dir`.
   */
  constructor(
    dir: string,
    readonly label = 'the bundle folder',
  ) {
    let root: string;
    try {
      root = realpathSync.native(dir);
    } catch (e) {
      throw new KbError(fsErrorCode(e), `${dir}: cannot open the folder (${(e as NodeJS.ErrnoException).code ?? errorMessage(e)})`, { cause: e });
    }
    if (!lstatSync(root).isDirectory()) throw new UserError(`${dir}: not a folder`);
    this.root = root;
    this.rootSlash = root.endsWith(sep) ? root : root + sep;
  }

  /** Path relative to the folder, "/"-separated. */
  rel(path: string): string {
    // Paths under the root (all but a few in messages) by slicing: path.relative took a tenth of
    // the main thread's time per small file in build profiles.
    if (sep === '/' && path.startsWith(this.rootSlash) && !path.includes('/.', this.rootSlash.length - 1) && !path.includes('//') && !path.endsWith('/')) return path.slice(this.rootSlash.length);
    return relative(this.root, path).split(sep).join('/') || '.';
  }

  private inside(path: string): boolean {
    return path === this.root || path.startsWith(this.rootSlash);
  }

  /**
   * Resolve `rel` (a path as written in a spec, relative to the folder) to an absolute path in
   * the folder. `..` and symlinks are followed as the kernel would, but leaving the folder on the
   * way (an absolute path, `..` above it, a symlink pointing out) is an error naming `what`, the
   * path and the symlink that led out. The last component is not followed unless `followFinal`.
   * A missing component is not an error here: the caller's lstat reports it.
   */
  resolve(rel: string, what: string, opts: ResolveOptions = {}): string {
    const shown = opts.shown ?? `"${rel}"`;
    const leaves = (why?: string) =>
      new UserError(
        `${what}: ${shown} leaves ${this.label}${why ? (why.startsWith('(') ? ` ${why}` : `: ${why}`) : ''}`,
        `sources must be paths inside ${this.label}, and symlinks on the way must stay inside it`,
      );
    if (rel.includes('\0')) throw new UserError(`${what}: ${shown} contains a NUL byte`);
    if (isAbsolute(rel)) throw leaves('(an absolute path)');
    const todo = rel.split('/');
    const done: string[] = [];
    let via: string | undefined;
    let hops = 0;
    while (todo.length) {
      const part = todo.shift()!;
      if (part === '' || part === '.') continue;
      if (part === '..') {
        if (done.length === 0) throw leaves(via);
        done.pop();
        continue;
      }
      const isFinal = todo.every((p) => p === '' || p === '.');
      const here = [...done, part];
      const path = join(this.root, ...here);
      const st = this.fs(what, here.join('/'), () => lstatOrUndefined(path));
      if (st?.isSymbolicLink() && (!isFinal || opts.followFinal)) {
        const at = here.join('/');
        if (++hops > MAX_SYMLINK_HOPS) throw new UserError(`${what}: ${shown}: too many levels of symbolic links (at ${at})`, 'a symlink on the way points back at itself');
        const target = this.fs(what, at, () => readlinkSync(path));
        via = `${at} is a symlink to ${target}`;
        if (isAbsolute(target)) {
          if (!this.inside(target)) throw leaves(via);
          done.length = 0;
          todo.unshift(...target.slice(this.root.length).split(sep));
        } else {
          todo.unshift(...target.split('/'));
        }
        continue;
      }
      done.push(part);
    }
    return join(this.root, ...done);
  }

  /** lstat of a resolved path; undefined when nothing is there. */
  lstat(path: string, what = this.rel(path)): Stats | undefined {
    return this.fs(what, this.rel(path), () => lstatOrUndefined(path));
  }

  /** Run one file system call; an error (EACCES, EIO, …) becomes a KbError naming the path. */
  private fs<T>(what: string, rel: string, call: () => T): T {
    try {
      return call();
    } catch (e) {
      if (e instanceof KbError) throw e;
      const errno = (e as NodeJS.ErrnoException).code;
      throw new KbError(fsErrorCode(e), `${what}: cannot read ${rel} (${errno ?? errorMessage(e)})`, { cause: e });
    }
  }

  /**
   * What a resolved (or walked) path is, refusing what no source may be: a FIFO, socket or device
   * (never opened), or a regular file with a hard link outside the folder. Missing: NOT_FOUND.
   */
  entry(path: string, what: string, st = this.lstat(path, what)): SourceEntry {
    const rel = this.rel(path);
    if (!st) throw new KbError('NOT_FOUND', `${what}: ${rel} not found`);
    const special = specialKind(st);
    if (special) throw new UserError(`${what}: ${rel} is ${special}; ${ONLY}`, 'remove it from the folder, or leave it out of the sources');
    this.checkLinks(path, st, what);
    const name = path.slice(path.lastIndexOf(sep) + 1);
    return { path, rel, name, kind: st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'directory' : 'file', stats: st };
  }

  /**
   * The entries of a folder found by `resolve` or `list`, sorted as tar sorts (byte order), each
   * checked by `entry`. Symlinks are listed, never followed.
   */
  list(dir: string, what: string): SourceEntry[] {
    const names = this.fs(what, this.rel(dir), () => readdirSync(dir)).sort(compareEntryPaths);
    // A folder swapped for a symlink after it was checked would list another folder.
    if (this.fs(what, this.rel(dir), () => realpathSync.native(dir)) !== dir)
      throw new UserError(`${what}: ${this.rel(dir)} changed while it was read (now leads elsewhere)`, 'do not change the folder during a build');
    // A listed name is one component (never "", "." or ".."): joined without path.join's normalising.
    const under = dir.endsWith(sep) ? dir : dir + sep;
    return names.map((n) => this.entry(under + n, what));
  }

  /** The target of a symlink entry, as written (copied as it is, never followed). */
  readlink(e: SourceEntry, what: string): string {
    return this.fs(what, e.rel, () => readlinkSync(e.path));
  }

  /** Every entry under `dir` (depth first, sorted), through `list`. */
  walk(dir: string, what: string, visit: (e: SourceEntry) => void): void {
    for (const e of this.list(dir, what)) {
      visit(e);
      if (e.kind === 'directory') this.walk(e.path, what, visit);
    }
  }

  /**
   * Open a regular file: never through a final symlink, never blocking on a FIFO swapped in, and
   * checked again on the descriptor (a regular file, inside the folder, no hard link out).
   */
  private open(path: string, what: string, walked?: WalkedFile): { fd: number; stats: Stats } {
    // An entry from `list` or `entry` was checked a moment ago; the descriptor is checked below anyway.
    const st = walked?.path === path ? walked : this.entry(path, what);
    if (st.kind !== 'file') throw new UserError(`${what}: ${st.rel} is a ${st.kind === 'directory' ? 'folder' : 'symlink'}, not a file`);
    let fd: number;
    try {
      fd = openSync(path, OPEN_FLAGS);
    } catch (e) {
      const errno = (e as NodeJS.ErrnoException).code;
      if (errno === 'ELOOP') throw new UserError(`${what}: ${st.rel} changed into a symlink while it was read`, 'do not change the folder during a build');
      throw new KbError(fsErrorCode(e), `${what}: cannot read ${st.rel} (${errno ?? errorMessage(e)})`, { cause: e });
    }
    try {
      const stats = fstatSync(fd);
      const special = specialKind(stats);
      if (special || !stats.isFile()) throw new UserError(`${what}: ${st.rel} is ${special ?? 'not a regular file'}; ${ONLY}`);
      const real = descriptorPath(fd);
      if (real !== undefined && !this.inside(real)) throw new UserError(`${what}: ${st.rel} leaves ${this.label} (it opened ${real})`, 'do not change the folder during a build');
      this.checkLinks(path, stats, what);
      return { fd, stats };
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /**
   * The checked descriptor of a regular file (opened as `stream` opens it), for a reader that
   * reads it in place (the layer writer); the caller closes it.
   */
  openFd(path: string, what: string, walked?: WalkedFile): number {
    return this.open(path, what, walked).fd;
  }

  /** The whole content of a regular file in the folder. */
  readFile(path: string, what: string): Buffer {
    const { fd, stats } = this.open(path, what);
    try {
      const chunks: Buffer[] = [];
      let size = 0;
      for (;;) {
        const buf = Buffer.allocUnsafe(Math.min(Math.max(stats.size - size, 0) + 1, READ_CHUNK));
        const n = readSync(fd, buf, 0, buf.length, null);
        if (n === 0) break;
        chunks.push(buf.subarray(0, n));
        size += n;
      }
      return Buffer.concat(chunks, size);
    } finally {
      closeSync(fd);
    }
  }

  /** A file the folder may hold (README.md): its content, or undefined when it is not there; read as readFile reads. */
  readOptional(rel: string, what: string): Buffer | undefined {
    const path = this.resolve(rel, what, { followFinal: true });
    return this.lstat(path) ? this.readFile(path, what) : undefined;
  }

  /**
   * A regular file's content as a stream (opened now, so a bad file fails where it is named). Small
   * files are read at once; larger ones stream from the checked descriptor.
   */
  stream(path: string, what: string): Readable {
    const { fd, stats } = this.open(path, what);
    if (stats.size <= SMALL_FILE) {
      try {
        const buf = Buffer.allocUnsafe(stats.size);
        let got = 0;
        while (got < buf.length) {
          const n = readSync(fd, buf, got, buf.length - got, null);
          if (n === 0) break;
          got += n;
        }
        return Readable.from([buf.subarray(0, got)]);
      } finally {
        closeSync(fd);
      }
    }
    return createReadStream(path, { fd, highWaterMark: READ_CHUNK, autoClose: true });
  }

  /** A file with more names than the folder holds has one outside it: its content is not the author's to ship. */
  private checkLinks(path: string, st: Stats, what: string): void {
    if (!st.isFile() || st.nlink <= 1) return;
    const inside = this.countLinks().get(`${st.dev}:${st.ino}`) ?? 0;
    if (inside < st.nlink) {
      throw new UserError(
        `${what}: ${this.rel(path)} is a hard link to a file outside ${this.label}`,
        `${st.nlink} names share this file, ${inside} of them inside ${this.label}; copy the file in instead of linking it`,
      );
    }
  }

  private countLinks(): Map<string, number> {
    if (this.linkCounts) return this.linkCounts;
    const counts = new Map<string, number>();
    const walk = (dir: string) => {
      for (const n of this.fs(this.label, this.rel(dir), () => readdirSync(dir))) {
        const p = join(dir, n);
        const st = this.fs(this.label, this.rel(p), () => lstatOrUndefined(p));
        if (!st) continue;
        if (st.isDirectory()) walk(p);
        else if (st.isFile() && st.nlink > 1) {
          const k = `${st.dev}:${st.ino}`;
          counts.set(k, (counts.get(k) ?? 0) + 1);
        }
      }
    };
    walk(this.root);
    this.linkCounts = counts;
    return counts;
  }
}
