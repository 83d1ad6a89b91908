import { createHash } from 'node:crypto';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { compareEntryPaths } from '../layer/tar.js';

export interface CatalogBundle {
  name: string;
  dir: string;
}

/** Every `bundles/<name>/bundle.yaml`, sorted by folder name. */
export async function discoverBundles(catalogDir: string): Promise<CatalogBundle[]> {
  const out: CatalogBundle[] = [];
  for (const name of (await readdir(catalogDir)).sort()) {
    const dir = join(catalogDir, name);
    try {
      if ((await lstat(join(dir, 'bundle.yaml'))).isFile()) out.push({ name, dir });
    } catch {
      /* not a bundle folder */
    }
  }
  return out;
}

/**
 * Digest of everything a bundle build reads from its folder: paths, exec bits, symlink targets
 * and contents, in sorted order, plus what else changes the output (epoch, builder version).
 * Equal digest → the image would be identical, so the build can be skipped.
 */
export async function bundleInputDigest(dir: string, salt: string): Promise<string> {
  const h = createHash('sha256');
  h.update(`kbundle-inputs-v1\0${salt}\0`);
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(join(dir, rel))).sort(compareEntryPaths);
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      const p = join(dir, r);
      const st = await lstat(p);
      if (st.isSymbolicLink()) h.update(`l\0${r}\0${await readlink(p)}\0`);
      else if (st.isDirectory()) {
        h.update(`d\0${r}\0`);
        await walk(r);
      } else if (st.isFile()) {
        h.update(`f\0${r}\0${st.mode & 0o111 ? 'x' : '-'}\0${st.size}\0`);
        h.update(await readFile(p));
      }
    }
  };
  await walk('');
  return `sha256:${h.digest('hex')}`;
}
