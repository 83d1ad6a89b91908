import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chmod, lchown, link, lstat, lutimes, mkdir, rename, rm, symlink, utimes } from 'node:fs/promises';
import { posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { UserError } from '../errors.js';
import type { FlatEntry } from './flatten.js';
import { entryComponents, resolveInRoot } from './secure-path.js';

export interface ApplyOptions {
  /** Keep uid/gid from the image (only effective as root); Kairos does not (WithNoSameOwner). */
  sameOwner?: boolean;
  /** Keep setuid/setgid/sticky bits; stripped by default. */
  allowSetuid?: boolean;
  /** Create device nodes and fifos (root only); refused by default. */
  allowDevices?: boolean;
  /** Apply `SCHILY.xattr.*` PAX records with setfattr when available. */
  xattrs?: boolean;
  onFile?: (path: string, bytes: number) => void;
}

export interface ApplyState {
  /** Paths written by this image (hard links may only point at these). */
  written: Set<string>;
  dirTimes: { path: string; mtime: Date }[];
  warnings: string[];
}

export function newApplyState(): ApplyState {
  return { written: new Set(), dirTimes: [], warnings: [] };
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

function tmpName(dir: string): string {
  return posix.join(dir, `.kbundle-tmp-${randomBytes(6).toString('hex')}`);
}

/** Put `tmp` at `final` the way containerd's Apply does: replace, except dir-over-dir merges. */
async function replaceWith(tmp: string, final: string): Promise<void> {
  try {
    const st = await lstat(final);
    if (st.isDirectory()) await rm(final, { recursive: true, force: true });
  } catch {
    /* nothing there */
  }
  await rename(tmp, final);
}

/**
 * Write one flattened entry under `root`. Every path is resolved inside the root (symlinks
 * followed as if root were `/`), files are written to a temp name and renamed into place, so an
 * interrupted install never leaves a half-written file at its final path.
 */
export async function applyEntry(root: string, e: FlatEntry, opts: ApplyOptions, state: ApplyState, what: string): Promise<void> {
  const h = e.header;
  const parts = e.path.split('/');
  const parent = await resolveInRoot(root, parts.slice(0, -1), true);
  const final = posix.join(parent, parts[parts.length - 1]!);
  const modeMask = opts.allowSetuid ? 0o7777 : 0o777;
  const mode = (h.mode ?? 0o644) & modeMask;
  const mtime = h.mtime ?? new Date(0);

  await mkdir(parent, { recursive: true });

  switch (h.type) {
    case 'directory': {
      let st;
      try {
        st = await lstat(final);
      } catch {
        /* missing */
      }
      if (st?.isSymbolicLink()) {
        // Unlike containerd, keep a destination symlink that leads (inside the root) to a
        // directory, e.g. /lib -> usr/lib on merged-/usr systems: the image's files go through it.
        const through = await resolveInRoot(root, [...parts.slice(0, -1), parts[parts.length - 1]!], true);
        const tst = await lstat(through).catch(() => undefined);
        if (tst?.isDirectory()) break;
      }
      if (st && !st.isDirectory()) await rm(final, { force: true });
      if (!st || !st.isDirectory()) await mkdir(final);
      await chmod(final, mode);
      state.dirTimes.push({ path: final, mtime });
      break;
    }
    case 'file':
    case 'contiguous-file': {
      const tmp = tmpName(parent);
      try {
        await pipeline(e.body, createWriteStream(tmp, { mode: 0o600 }));
        await chmod(tmp, mode);
        await utimes(tmp, mtime, mtime);
        await chownIfWanted(tmp, h, opts);
        await replaceWith(tmp, final);
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
      opts.onFile?.(e.path, h.size ?? 0);
      break;
    }
    case 'symlink': {
      const tmp = tmpName(parent);
      // The target text is kept as written (absolute targets are legitimate in images); kbundle
      // itself only ever follows it through resolveInRoot.
      await symlink(h.linkname ?? '', tmp);
      try {
        await lutimes(tmp, mtime, mtime);
        await chownIfWanted(tmp, h, opts);
        await replaceWith(tmp, final);
      } catch (err) {
        await rm(tmp, { force: true });
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
      const target = await resolveInRoot(root, targetParts, false);
      const tst = await lstat(target);
      if (!tst.isFile()) throw new UserError(`${what}: hard link "${e.path}" points at "${h.linkname}", which is not a regular file`);
      const tmp = tmpName(parent);
      await link(target, tmp);
      await replaceWith(tmp, final);
      break;
    }
    case 'character-device':
    case 'block-device':
    case 'fifo': {
      if (!opts.allowDevices) {
        throw new UserError(`${what}: "${e.path}" is a ${h.type}; refusing to create it`, 'pass --allow-devices to create device nodes and fifos (root only)');
      }
      if (h.type !== 'fifo' && !isRoot()) throw new UserError(`${what}: "${e.path}": creating a ${h.type} needs root`);
      await rm(final, { recursive: true, force: true });
      const args = h.type === 'fifo' ? ['-m', mode.toString(8), final, 'p'] : ['-m', mode.toString(8), final, h.type === 'block-device' ? 'b' : 'c', String(h.devmajor ?? 0), String(h.devminor ?? 0)];
      const r = spawnSync('mknod', args, { encoding: 'utf8' });
      if (r.status !== 0) throw new UserError(`${what}: "${e.path}": mknod failed: ${r.stderr.trim()}`);
      break;
    }
    default:
      throw new UserError(`${what}: "${e.path}" has unsupported tar entry type ${h.type}`);
  }
  state.written.add(e.path);
  if (opts.xattrs && h.pax) applyXattrs(final, h.pax as Record<string, string>, state, what);
}

async function chownIfWanted(path: string, h: FlatEntry['header'], opts: ApplyOptions): Promise<void> {
  if (opts.sameOwner && isRoot()) await lchown(path, h.uid ?? 0, h.gid ?? 0);
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
  for (const d of state.dirTimes.reverse()) await utimes(d.path, d.mtime, d.mtime).catch(() => undefined);
}
