import { lstat, stat } from 'node:fs/promises';

/** Whether something exists at `path` (a dangling symlink counts unless `follow`). */
export async function pathExists(path: string, opts: { follow?: boolean } = {}): Promise<boolean> {
  try {
    await (opts.follow ? stat(path) : lstat(path));
    return true;
  } catch {
    return false;
  }
}
