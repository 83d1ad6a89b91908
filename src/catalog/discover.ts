import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { SourceFolder } from '../layer/source-folder.js';

export interface CatalogBundle {
  name: string;
  dir: string;
}

/**
 * Every `bundles/<name>/bundle.yaml`, sorted by folder name. A bundle folder that is a symlink
 * must stay inside the catalog folder (a catalog builds what it holds, nothing else on the host).
 */
export async function discoverBundles(catalogDir: string): Promise<CatalogBundle[]> {
  const out: CatalogBundle[] = [];
  let catalog: SourceFolder | undefined;
  for (const name of (await readdir(catalogDir)).sort()) {
    const dir = join(catalogDir, name);
    const st = await lstat(dir);
    if (st.isSymbolicLink() && existsSync(join(dir, 'bundle.yaml'))) {
      catalog ??= new SourceFolder(catalogDir, 'the catalog folder');
      catalog.resolve(name, catalogDir, { followFinal: true });
      out.push({ name, dir });
      continue;
    }
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
  // Read through the bundle's SourceFolder: no symlink followed, no FIFO opened.
  const folder = new SourceFolder(dir);
  folder.walk(folder.root, join(dir), (e) => {
    if (e.kind === 'symlink') h.update(`l\0${e.rel}\0${folder.readlink(e, dir)}\0`);
    else if (e.kind === 'directory') h.update(`d\0${e.rel}\0`);
    else {
      h.update(`f\0${e.rel}\0${e.stats.mode & 0o111 ? 'x' : '-'}\0${e.stats.size}\0`);
      h.update(folder.readFile(e.path, dir));
    }
  });
  return `sha256:${h.digest('hex')}`;
}
