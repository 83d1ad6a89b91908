/**
 * Stage, then rename: the one way kbundle puts a file (or a staged folder's files) at its final
 * path. Content is written to a temp sibling (same directory, so the rename is atomic) created with
 * O_EXCL, flushed to disk, renamed over the final name, and the directory entry flushed too; the
 * temp is removed on any failure. A reader, or the next boot after a power cut, sees the old file
 * or the complete new one, never a partial one.
 *
 * SIGINT and SIGTERM remove a temp (and a staging folder not yet removed) before the process
 * exits. A process killed otherwise between creating and renaming its temp cannot remove it.
 * Temp names carry the writer's pid (`<name>.tmp-<pid>-<hex>`, staging folders
 * `.kbundle-<label>-<pid>-<random>`), so the first staged write into a directory removes leftovers
 * whose process is gone.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { chmod, mkdtemp, open, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { writeError } from '../errors.js';
import { onInterrupt } from './interrupt.js';

const TEMP_FILE_RE = /\.tmp-(\d+)-[0-9a-f]{12}$/;
const STAGING_DIR_RE = /^\.kbundle-[a-z0-9-]+?-(\d+)-[A-Za-z0-9]{6}$/;
/** A leftover is only removed once this old, so a writer in another pid namespace is not raced. */
const STALE_AFTER_MS = 60_000;

export interface StageOptions {
  /** fsync the file and its directory (default true); off only for scratch files. */
  durable?: boolean;
  /** The temp file's mode from its creation on, set exactly (not masked by the umask). */
  mode?: number;
}

/**
 * How a `write` callback opens the temp that stage() created for it: without O_CREAT. On SIGINT or
 * SIGTERM the temp is removed at once, and an open still running on the thread pool with O_CREAT
 * would make it again just before the process exits; this one fails instead.
 */
export const STAGED_TEMP_FLAGS = 'r+';

/** The temp sibling of `path`: recognisable (`.tmp-<pid>-<hex>`) so leftovers can be found. */
export function stagingPath(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
}

/** Whether `name` is one of kbundle's temp files or staging folders (left out of listings). */
export function isStagingName(name: string): boolean {
  return TEMP_FILE_RE.test(name) || STAGING_DIR_RE.test(name);
}

function processGone(pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

const swept = new Set<string>();

/**
 * Remove temp files and staging folders in `dir` left by kbundle processes that no longer run.
 * Runs once per directory per process (directories of blobs can be large); never throws.
 */
export async function removeStaleStaging(dir: string): Promise<string[]> {
  if (swept.has(dir)) return [];
  swept.add(dir);
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return removed;
  }
  for (const name of names) {
    const m = TEMP_FILE_RE.exec(name) ?? STAGING_DIR_RE.exec(name);
    if (!m || !processGone(Number(m[1]))) continue;
    try {
      const st = await stat(join(dir, name));
      if (Date.now() - st.mtimeMs < STALE_AFTER_MS) continue;
      await rm(join(dir, name), { recursive: true, force: true });
      removed.push(name);
    } catch {
      /* gone already, or not ours to remove */
    }
  }
  return removed;
}

/** Forget which directories were swept (tests). */
export function resetStaleSweep(): void {
  swept.clear();
}

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } catch (e) {
    // Some file systems cannot fsync a directory; the rename is still atomic there.
    if (!['EINVAL', 'ENOTSUP', 'EISDIR'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
  } finally {
    await fh.close();
  }
}

/**
 * Start writing a staged file's bytes to disk now, while other work runs (a large file whose
 * last changes are small: commitFile's own flush then has little left to write). Await the
 * result before committing; a failure is reported there.
 */
export function flushEarly(path: string): Promise<void> {
  const flushing = fsyncPath(path);
  flushing.catch(() => undefined); // reported where it is awaited
  return flushing;
}

/**
 * Move a complete staged file to `to` (same file system): flush it, rename, flush the directory.
 * For content staged where its final name is only known afterwards (a blob named by its digest).
 */
export async function commitFile(from: string, to: string, opts: StageOptions = {}): Promise<void> {
  if (opts.durable !== false) await fsyncPath(from);
  await rename(from, to);
  if (opts.durable !== false) await fsyncPath(dirname(to));
}

/**
 * Runs `write(tmp)` on a fresh temp sibling of `path` (created with O_EXCL, so it is ours and not a
 * planted symlink), then commits it to `path`. The temp file never outlives a failure.
 */
export function stageAndRename<T>(path: string, write: (tmp: string) => Promise<T>, opts: StageOptions = {}): Promise<T> {
  return stage(path, write, () => path, opts, path);
}

/**
 * Like stageAndRename for content whose name is known only once written (a blob named by its
 * digest): `write` stages it in `dir`, `finalPath(result)` names where it goes.
 */
export function stageThenName<T>(dir: string, write: (tmp: string) => Promise<T>, finalPath: (result: T) => string, opts: StageOptions = {}): Promise<T> {
  return stage(join(dir, 'staged'), write, finalPath, opts, dir);
}

/**
 * `where` names the destination in an I/O error (a full disk, a read-only file system, no
 * permission: writeError); a write through a file handle carries no path of its own.
 */
async function stage<T>(near: string, write: (tmp: string) => Promise<T>, finalPath: (result: T) => string, opts: StageOptions, where: string): Promise<T> {
  await removeStaleStaging(dirname(near));
  const tmp = stagingPath(near);
  let created = false;
  // Set up before the temp is made; it removes only a temp this call made (O_EXCL: ours).
  const off = onInterrupt(() => {
    if (created) rmSync(tmp, { force: true });
  });
  try {
    const fh = await open(tmp, 'wx', opts.mode ?? 0o666);
    created = true;
    await fh.close();
    if (opts.mode !== undefined) await chmod(tmp, opts.mode);
    const r = await write(tmp);
    await commitFile(tmp, finalPath(r), opts);
    return r;
  } catch (e) {
    if (created) await rm(tmp, { force: true });
    throw writeError(e, where);
  } finally {
    off();
  }
}

/** Writes `data` to `path` atomically; `mode` is set exactly (not masked by the umask). */
export function writeFileAtomic(path: string, data: string | Buffer, opts: StageOptions = {}): Promise<void> {
  return stageAndRename(path, (tmp) => writeFile(tmp, data, { flag: STAGED_TEMP_FLAGS }), opts);
}

/**
 * Runs `fn` with a fresh staging folder `.kbundle-<label>-<pid>-XXXXXX` inside `parent` (the
 * target's directory, so what is built there can be renamed into place), and removes the folder
 * afterwards whatever happens. What `fn` wants to keep it moves out with `commitFile`.
 */
export async function withStagingDir<T>(parent: string, label: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await makeStagingDir(parent, label);
  try {
    return await fn(dir);
  } finally {
    await removeStagingDir(dir);
  }
}

/** Staging folders made by makeStagingDir and not yet removed → their signal cleanup's off switch. */
const stagingDirs = new Map<string, () => void>();

/**
 * A fresh staging folder `.kbundle-<label>-<pid>-XXXXXX` in `parent` whose lifetime the caller
 * manages, ending it with removeStagingDir; leftovers of dead processes in `parent` are swept
 * first. Until then SIGINT or SIGTERM removes it before the process exits. withStagingDir is the
 * scoped form.
 */
export async function makeStagingDir(parent: string, label: string): Promise<string> {
  if (!/^[a-z0-9-]+$/.test(label)) throw new Error(`staging label "${label}" must be lowercase letters, digits and "-"`);
  await removeStaleStaging(parent);
  const dir = await mkdtemp(join(parent, `.kbundle-${label}-${process.pid}-`));
  stagingDirs.set(
    dir,
    onInterrupt(() => rmSync(dir, { recursive: true, force: true })),
  );
  return dir;
}

/** Remove a folder made by makeStagingDir (never throws for one already gone). */
export async function removeStagingDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  stagingDirs.get(dir)?.();
  stagingDirs.delete(dir);
}
