import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  createWriteStream,
  existsSync,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  renameSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { KbError, UserError, writeError } from '../errors.js';
import type { FlatEntry } from './flatten.js';
import type { FileWriter } from './file-writer.js';
import { asideName, TMP_PREFIX, type InstallJournal } from './journal.js';
import { entryComponents, resolveInRoot, ResolvedDirs } from './secure-path.js';

export interface ApplyOptions {
  /** Keep uid/gid from the image (only effective as root); Kairos does not (WithNoSameOwner). */
  sameOwner?: boolean;
  /** Keep setuid/setgid/sticky bits; stripped by default. */
  allowSetuid?: boolean;
  /** Create device nodes and fifos (root only); refused by default. */
  allowDevices?: boolean;
  /** Apply `SCHILY.xattr.*` PAX records (as containerd does) with setfattr; default on. */
  xattrs?: boolean;
  onFile?: (path: string, bytes: number) => void;
  /**
   * Install all-or-nothing (see journal.ts): entries stay at their temp names until the caller
   * commits the journal; nothing that was in the root is changed before that.
   */
  journal?: InstallJournal;
}

export interface ApplyState {
  /** Paths written by this image (hard links may only point at these). */
  written: Set<string>;
  dirTimes: { path: string; mtime: Date }[];
  warnings: string[];
  dirs?: ResolvedDirs;
  /** Folders known to exist (created or seen by this run) → where they are now (see folderAt). */
  existing?: Map<string, string>;
  /** Journaled installs: folders the root lacked (final path → the temp folder renamed to it at commit). */
  stagedDirs?: Map<string, string>;
  /** Journaled installs: where each staged entry's content is until commit (image path → temp). */
  staged?: Map<string, string>;
  /** Journaled installs: symlinks this image stages (later entries must not go through them). */
  stagedLinks?: Set<string>;
  /** Journaled installs: creates small files on a worker thread (see file-writer.ts)... */
  writer?: FileWriter;
  /** ...started by this once the image has more than WRITER_AFTER small files (a thread's start costs ~0.1 s). */
  startWriter?: () => FileWriter;
  smallFiles?: number;
}

export function newApplyState(): ApplyState {
  return { written: new Set(), dirTimes: [], warnings: [] };
}

/** Small files written on this thread before a journaled install starts its writer thread. */
const WRITER_AFTER = 256;

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

// The journal finds a crashed install's temps by this prefix (see InstallJournal.stage).
let tmpCounter = 0;
function tmpName(dir: string): string {
  return posix.join(dir, `${TMP_PREFIX}${tmpCounter++}`);
}

function lstatOrUndefined(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch {
    return undefined;
  }
}

/** A temp for `final` in its folder, journaled before it exists (renamed at commit, or by `settle`). */
function stagedTemp(dir: string, final: string, journal: InstallJournal | undefined): string {
  const tmp = tmpName(dir);
  journal?.stage(tmp, final);
  return tmp;
}

/** Put `tmp` at `final` the way containerd's Apply does: replace, except dir-over-dir merges. */
function replaceWith(tmp: string, final: string, rel: string, state: ApplyState): void {
  const st = lstatOrUndefined(final);
  if (st?.isDirectory()) {
    rmSync(final, { recursive: true, force: true });
    state.dirs?.invalidate(rel);
    state.existing?.clear();
  } else if (st?.isSymbolicLink()) state.dirs?.invalidate(rel);
  renameSync(tmp, final);
}

/** Create `path` with `data`, then its owner (when given), mode and times, all through the one descriptor. */
function writeSmallFile(path: string, data: Buffer, mode: number, mtime: Date, owner: FlatEntry['header'] | undefined): void {
  const fd = openSync(path, 'wx', 0o600);
  try {
    for (let off = 0; off < data.length;) off += writeSync(fd, data, off, data.length - off);
    if (owner) fchownSync(fd, owner.uid ?? 0, owner.gid ?? 0);
    fchmodSync(fd, mode);
    futimesSync(fd, mtime, mtime);
  } finally {
    closeSync(fd);
  }
}

/**
 * Write one flattened entry under `root`. Every path is resolved inside the root (symlinks
 * followed as if root were `/`), files are written to a temp name and renamed into place, so an
 * interrupted install never leaves a half-written file at its final path. Metadata calls are
 * synchronous: thousands of small files would otherwise queue on the thread pool.
 */
export async function applyEntry(root: string, e: FlatEntry, opts: ApplyOptions, state: ApplyState, what: string): Promise<void> {
  state.dirs ??= new ResolvedDirs(root);
  const dirs = state.dirs;
  const h = e.header;
  const slash = e.path.lastIndexOf('/');
  const parentRel = slash < 0 ? '' : e.path.slice(0, slash);
  const base = e.path.slice(slash + 1);
  const parent = dirs.resolve(parentRel);
  const final = posix.join(parent, base);
  const modeMask = opts.allowSetuid ? 0o7777 : 0o777;
  const mode = (h.mode ?? 0o644) & modeMask;
  const mtime = h.mtime ?? new Date(0);

  const journal = opts.journal;
  if (journal) {
    state.staged ??= new Map();
    state.stagedLinks ??= new Set();
    for (let i = state.stagedLinks.size ? e.path.indexOf('/') : -1; i > 0; i = e.path.indexOf('/', i + 1)) {
      if (state.stagedLinks.has(e.path.slice(0, i))) {
        throw new KbError('UNSUPPORTED', `${what}: "${e.path}" lies below "${e.path.slice(0, i)}", a symbolic link the same image creates`, {
          hint: 'an image that writes through its own symlinks cannot be installed all-or-nothing; put the files at the link target',
        });
      }
    }
  }
  state.existing ??= new Map();
  let folder = state.existing.get(parent);
  if (folder === undefined) {
    folder = journal ? folderAt(parent, root, journal, state, what, e.path) : makeParents(parent);
    state.existing.set(parent, folder);
  }
  // Journaled, inside a folder this install creates: the entry is written at its own name there
  // (the folder, still under its temp name, goes into place at commit); else at a temp name.
  const fresh = folder !== parent;
  const at = fresh ? `${folder}/${base}` : final;

  switch (h.type) {
    case 'directory': {
      const own = fresh ? at : state.stagedDirs?.get(final);
      if (own !== undefined) {
        // Inside a folder of this install's, or one it created for earlier entries below this one.
        const st = lstatOrUndefined(own);
        if (!st) mkdirSync(own);
        else if (!st.isDirectory()) {
          // Only an image reaching one path two ways (through a symlink the root has) gets here.
          throw new KbError('UNSUPPORTED', `${what}: "${e.path}" is a folder, but the image already put a ${st.isSymbolicLink() ? 'symbolic link' : 'file'} at ${posix.relative(root, final)}`, {
            hint: 'an image that reaches one path two ways cannot be installed all-or-nothing',
          });
        }
        chmodSync(own, mode);
        state.staged!.set(e.path, own); // where its xattrs go
        state.dirTimes.push({ path: final, mtime });
        break;
      }
      const st = lstatOrUndefined(final);
      if (st?.isSymbolicLink()) {
        // Unlike containerd, keep a destination symlink that leads (inside the root) to a
        // directory, e.g. /lib -> usr/lib on merged-/usr systems: the image's files go through it.
        const through = resolveInRoot(root, e.path.split('/'), true);
        if (isFolderAt(through, root, state)) break;
      }
      if (st && !st.isDirectory()) {
        if (journal) {
          const aside = asideName(final);
          journal.moved(final, aside);
          renameSync(final, aside);
        } else rmSync(final, { force: true });
        dirs.invalidate(e.path);
        state.existing?.clear();
      }
      if (!st || !st.isDirectory()) {
        let made = final;
        if (journal) made = stageFolder(final, journal, state);
        else mkdirSync(final);
        chmodSync(made, mode);
        state.staged?.set(e.path, made);
      } else if (journal) journal.chmod(final, mode);
      else chmodSync(final, mode);
      state.dirTimes.push({ path: final, mtime });
      break;
    }
    case 'file':
    case 'contiguous-file': {
      const tmp = fresh ? at : stagedTemp(parent, final, journal);
      const size = h.size;
      const data = e.data;
      try {
        if (state.startWriter && (!data || (state.smallFiles = (state.smallFiles ?? 0) + 1) > WRITER_AFTER)) state.writer ??= state.startWriter();
        const owner = opts.sameOwner && isRoot() ? h : undefined;
        if (journal && state.writer) {
          // Journaled: the temp is created and written on the writer's thread while this one goes on.
          if (data) await state.writer.write(tmp, data, mode, mtime, owner);
          else await state.writer.writePieces(tmp, e.chunks, mode, mtime, owner);
        } else if (data) {
          // Most files of an image: one open, and the metadata set through it (no path lookups).
          writeSmallFile(tmp, data, mode, mtime, owner);
        } else {
          await pipeline(Readable.from(e.chunks), createWriteStream(tmp, { flags: 'wx', mode: 0o600, highWaterMark: 1024 * 1024 }));
          chownIfWanted(tmp, h, opts); // before chmod: a chown clears setuid/setgid bits
          chmodSync(tmp, mode);
          utimesSync(tmp, mtime, mtime);
        }
        settle(tmp, final, e.path, state, opts);
      } catch (err) {
        if (!journal) rmSync(tmp, { force: true });
        throw writeError(err, final);
      }
      opts.onFile?.(e.path, size);
      break;
    }
    case 'symlink': {
      const tmp = fresh ? at : stagedTemp(parent, final, journal);
      // The target text is kept as written (absolute targets are legitimate in images); kbundle
      // itself only ever follows it through resolveInRoot.
      symlinkSync(h.linkname ?? '', tmp);
      try {
        lutimesSync(tmp, mtime, mtime);
        chownIfWanted(tmp, h, opts);
        settle(tmp, final, e.path, state, opts);
        state.stagedLinks?.add(e.path);
        dirs.invalidate(e.path);
        state.existing?.clear();
      } catch (err) {
        if (!journal) rmSync(tmp, { force: true });
        throw err;
      }
      break;
    }
    case 'link': {
      const targetParts = entryComponents(h.linkname ?? '', `${what}: hard link ${e.path}`);
      const targetRel = targetParts.join('/');
      if (!state.written.has(targetRel)) {
        throw new UserError(`${what}: hard link "${e.path}" points at "${h.linkname}", which is not a file of this image`, 'hard links may only join files the image itself contains');
      }
      await state.writer?.drain(); // the target may still be queued
      const target = state.staged?.get(targetRel) ?? resolveInRoot(root, targetParts, false);
      if (!lstatOrUndefined(target)?.isFile()) throw new UserError(`${what}: hard link "${e.path}" points at "${h.linkname}", which is not a regular file`);
      const tmp = fresh ? at : stagedTemp(parent, final, journal);
      linkSync(target, tmp);
      settle(tmp, final, e.path, state, opts);
      break;
    }
    case 'character-device':
    case 'block-device':
    case 'fifo': {
      if (!opts.allowDevices) {
        throw new KbError('REFUSED', `${what}: "${e.path}" is a ${h.type}; refusing to create it`, { hint: 'pass --allow-devices to create device nodes and fifos (root only)' });
      }
      if (h.type !== 'fifo' && !isRoot()) throw new UserError(`${what}: "${e.path}": creating a ${h.type} needs root`);
      const tmp = fresh ? at : stagedTemp(parent, final, journal);
      const args = h.type === 'fifo' ? ['-m', mode.toString(8), tmp, 'p'] : ['-m', mode.toString(8), tmp, h.type === 'block-device' ? 'b' : 'c', String(h.devmajor ?? 0), String(h.devminor ?? 0)];
      const r = spawnSync('mknod', args, { encoding: 'utf8' });
      if (r.status !== 0) throw new UserError(`${what}: "${e.path}": mknod failed: ${r.stderr.trim()}`);
      settle(tmp, final, e.path, state, opts);
      break;
    }
    default:
      throw new KbError('UNSUPPORTED', `${what}: "${e.path}" has unsupported tar entry type ${h.type}`);
  }
  state.written.add(e.path);
  // Journaled: the content is still at its temp name (rename keeps xattrs).
  if (opts.xattrs !== false && h.pax && Object.keys(h.pax).some((k) => k.startsWith('SCHILY.xattr.'))) {
    await state.writer?.drain(); // the file must exist
    applyXattrs(state.staged?.get(e.path) ?? final, h.pax as Record<string, string>, state, what);
  }
}

/** Put a written temp at its final path now, or (journaled) leave it for the commit. */
function settle(tmp: string, final: string, rel: string, state: ApplyState, opts: ApplyOptions): void {
  if (opts.journal) state.staged!.set(rel, tmp);
  else replaceWith(tmp, final, rel, state);
}

/** mkdir -p (unjournaled installs write straight into the root). */
function makeParents(dir: string): string {
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true });
  return dir;
}

/** Create folder `final` (absent from the root) as a temp folder beside it, renamed to it at commit. */
function stageFolder(final: string, journal: InstallJournal, state: ApplyState): string {
  const tmp = stagedTemp(posix.dirname(final), final, journal);
  mkdirSync(tmp);
  (state.stagedDirs ??= new Map()).set(final, tmp);
  return tmp;
}

/**
 * Journaled installs: where folder `dir` (a path resolved in the root) is until the commit,
 * created if missing. A folder the root has is itself. The topmost missing one is created as a
 * temp folder beside its final path (stageFolder) and everything below it at its own names, so
 * its thousands of files need no temp name, no journal record and no rename of their own, and it
 * appears at commit whole. Resolving in the root cannot see into such a folder (it is not at its
 * final path yet), so below one this walks every component itself: an image symlink there is
 * refused, never followed (the kernel would follow it from the host's /, out of the root).
 */
function folderAt(dir: string, root: string, journal: InstallJournal, state: ApplyState, what: string, entry: string): string {
  const staged = stagedAncestor(dir, root, state);
  if (staged) return descend(staged.tmp, dir.slice(staged.final.length), staged.final, root, what, entry);
  if (existsSync(dir)) return dir;
  let top = dir;
  for (let up = posix.dirname(top); up.length > root.length && !existsSync(up); up = posix.dirname(up)) top = up;
  return descend(stageFolder(top, journal, state), dir.slice(top.length), top, root, what, entry);
}

/** Whether `path` (resolved in the root) is a folder: in the root, or one this install is staging. */
function isFolderAt(path: string, root: string, state: ApplyState): boolean {
  if (lstatOrUndefined(path)?.isDirectory()) return true;
  const staged = stagedAncestor(path, root, state);
  if (!staged) return false;
  // Inside the staged folder nothing is followed: an image symlink there is not a folder.
  let at = staged.tmp;
  for (const part of path.slice(staged.final.length + 1).split('/')) {
    if (!part) continue;
    at = `${at}/${part}`;
    if (!lstatOrUndefined(at)?.isDirectory()) return false;
  }
  return true;
}

/** The staged folder `path` (resolved in the root) is or lies in: its final path, and its temp. */
function stagedAncestor(path: string, root: string, state: ApplyState): { final: string; tmp: string } | undefined {
  const staged = state.stagedDirs;
  if (!staged?.size) return undefined;
  for (let p = path; p.length > root.length; p = p.slice(0, p.lastIndexOf('/'))) {
    const tmp = staged.get(p);
    if (tmp !== undefined) return { final: p, tmp };
  }
  return undefined;
}

/** `from` + `rest` ("/a/b"), making what is missing; a symlink on the way is refused. */
function descend(from: string, rest: string, finalFrom: string, root: string, what: string, entry: string): string {
  let p = from;
  let missing = false;
  for (let i = 1; i < rest.length;) {
    const slash = rest.indexOf('/', i);
    const end = slash < 0 ? rest.length : slash;
    p = `${p}/${rest.slice(i, end)}`;
    const st = missing ? undefined : lstatOrUndefined(p);
    if (!st) {
      mkdirSync(p);
      missing = true;
    } else if (st.isSymbolicLink()) {
      const link = posix.relative(root, finalFrom + rest.slice(0, end));
      throw new KbError('UNSUPPORTED', `${what}: "${entry}" lies below "${link}", a symbolic link the same image creates`, {
        hint: 'an image that writes through its own symlinks cannot be installed all-or-nothing; put the files at the link target',
      });
    }
    i = end + 1;
  }
  return p;
}

function chownIfWanted(path: string, h: FlatEntry['header'], opts: ApplyOptions): void {
  if (opts.sameOwner && isRoot()) lchownSync(path, h.uid ?? 0, h.gid ?? 0);
}

function applyXattrs(path: string, pax: Record<string, string>, state: ApplyState, what: string): void {
  for (const [k, v] of Object.entries(pax)) {
    if (!k.startsWith('SCHILY.xattr.')) continue;
    const name = k.slice('SCHILY.xattr.'.length);
    const r = spawnSync('setfattr', ['-h', '-n', name, '-v', `0x${Buffer.from(v, 'latin1').toString('hex')}`, path], { encoding: 'utf8' });
    if (r.error || r.status !== 0) state.warnings.push(`${what}: could not set xattr ${name} on ${path}: ${r.error?.message ?? r.stderr.trim()}`);
  }
}

/** Directory mtimes last: writing children changes them. */
export async function finishApply(state: ApplyState): Promise<void> {
  for (const d of state.dirTimes.reverse()) {
    try {
      utimesSync(d.path, d.mtime, d.mtime);
    } catch {
      /* removed by a later entry */
    }
  }
}
