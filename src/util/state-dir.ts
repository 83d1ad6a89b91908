/**
 * kbundle's own state inside a target root (`<root>/var/lib/kbundle/…`: the lock, install
 * journals, install records). The root is trusted, but what bundles put in it is not: a symlink
 * planted at var, var/lib or var/lib/kbundle must not redirect kbundle's writes out of the root.
 * Every component is created without following links and checked to be a real folder.
 */
import { lstatSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { KbError } from '../errors.js';

export const STATE_PATH = ['var', 'lib', 'kbundle'];

/** `<root>/var/lib/kbundle/<sub…>`, created as needed; refuses symlinks and non-folders on the way. */
export function stateDir(root: string, ...sub: string[]): string {
  let p = root;
  const parts = [...STATE_PATH, ...sub];
  for (const [i, part] of parts.entries()) {
    p = join(p, part);
    let st;
    try {
      st = lstatSync(p);
    } catch {
      try {
        // kbundle's own folders are private; the standard ones get the usual mode.
        mkdirSync(p, { mode: i >= 2 ? 0o700 : 0o755 });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      st = lstatSync(p);
    }
    if (st.isSymbolicLink() || !st.isDirectory()) {
      throw new KbError('REFUSED', `${p} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a folder'}; kbundle keeps its state there and does not follow it`, {
        hint: `remove ${p} (something other than kbundle put it there) and run again`,
      });
    }
  }
  return p;
}
