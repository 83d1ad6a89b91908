/**
 * Stage, then rename: the one way kbundle puts a file at its final path. The content is written to
 * a temp sibling (same directory, so the rename is atomic), which is removed on any failure; a
 * reader sees the old file or the complete new one, never a partial one.
 */
import { randomBytes } from 'node:crypto';
import { chmod, rename, rm, writeFile } from 'node:fs/promises';

/** The temp sibling of `path`: recognisable (`.tmp-` + random) so leftovers can be found. */
export function stagingPath(path: string): string {
  return `${path}.tmp-${randomBytes(6).toString('hex')}`;
}

/** Runs `write(tmp)`, then renames tmp over `path`; the temp file never outlives a failure. */
export async function stageAndRename<T>(path: string, write: (tmp: string) => Promise<T>): Promise<T> {
  const tmp = stagingPath(path);
  try {
    const r = await write(tmp);
    await rename(tmp, path);
    return r;
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** Writes `data` to `path` atomically; `mode` is set exactly (not masked by the umask). */
export function writeFileAtomic(path: string, data: string | Buffer, opts: { mode?: number } = {}): Promise<void> {
  return stageAndRename(path, async (tmp) => {
    await writeFile(tmp, data, { flag: 'wx', ...(opts.mode !== undefined ? { mode: opts.mode } : {}) });
    if (opts.mode !== undefined) await chmod(tmp, opts.mode);
  });
}
