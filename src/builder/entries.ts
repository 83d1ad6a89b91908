import { createReadStream, readFileSync } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { basename, join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { UserError } from '../errors.js';
import { extractPinnedMember, fetchPinned } from './download.js';
import { chartManifest, placeManifestsScript } from './generate.js';
import { compareEntryPaths, type LayerEntry } from '../layer/tar.js';
import { bundlePath, normaliseDestination, type FileSpec, type LoadedSpec } from './spec.js';

const DIR_MODE = 0o755;
/** Large reads: fewer thread-pool round trips per file. */
const READ_CHUNK = 1024 * 1024;

/**
 * Small files are read synchronously: on a 2-core VM each thread-pool round trip (open, read,
 * close) costs ~0.2 ms, which dominates bundles made of thousands of small manifests.
 */
const SMALL_FILE = 256 * 1024;
function openSource(path: string, size: number): Readable {
  if (size <= SMALL_FILE) return Readable.from([readFileSync(path)]);
  return createReadStream(path, { highWaterMark: READ_CHUNK });
}

/** Where generated content lives inside a run bundle image. */
export const RUN_SCRIPT = 'run.sh';
export const PLACE_SCRIPT = 'place-manifests.sh';
export const MANIFESTS_DIR = 'manifests';

interface Planned {
  entry: LayerEntry;
  origin: string;
}

/**
 * Everything that goes into the image for one platform, sorted, with parent directories.
 * Only the executable bit is taken from the source files, so checkouts with another umask,
 * owner or mtime produce the same layer.
 */
export interface PlanOptions {
  /** trusted_root.json for keyless `signature:` pins of downloads (default KBUNDLE_TRUSTED_ROOT). */
  trustedRoot?: string;
}

export async function planEntries(loaded: LoadedSpec, platform: string, opts: PlanOptions = {}): Promise<LayerEntry[]> {
  const { dir, specPath, spec } = loaded;
  const planned = new Map<string, Planned>();
  const add = (entry: LayerEntry, origin: string) => {
    const prev = planned.get(entry.path);
    if (prev && !(prev.entry.type === 'directory' && entry.type === 'directory')) {
      throw new UserError(`${specPath}: ${origin}: destination "${entry.path}" is also written by ${prev.origin}`, 'every destination in the image must be unique');
    }
    planned.set(entry.path, { entry, origin });
  };
  const addBytes = (path: string, data: Buffer | string, mode: number, origin: string) => {
    const buf = Buffer.from(data);
    add({ type: 'file', path, mode, size: buf.length, open: () => Readable.from([buf]) }, origin);
  };

  const addFileSpec = async (f: FileSpec, field: string) => {
    const dst = normaliseDestination(f.dst, specPath, `${field}.dst`);
    if (f.url) {
      const archive = await fetchPinned(f.url, f.sha256!, `${specPath}: ${field}`);
      if (f.signature) {
        const { verifyDownloadSignature } = await import('./download-signature.js');
        await verifyDownloadSignature(archive, f.sha256!, f.signature, { dir, specPath, field, url: f.url, trustedRoot: opts.trustedRoot });
      }
      const cached = f.extract ? await extractPinnedMember(archive, f.sha256!, f.extract, `${specPath}: ${field}`) : archive;
      const st = await lstat(cached);
      add({ type: 'file', path: dst, mode: f.mode ?? 0o644, size: st.size, open: () => createReadStream(cached, { highWaterMark: READ_CHUNK }) }, field);
      return;
    }
    const src = bundlePath(dir, f.src!, specPath, `${field}.src`);
    await addPath(src, dst, f.mode, field);
  };

  const addPath = async (src: string, dst: string, mode: number | undefined, origin: string): Promise<void> => {
    const st = await lstat(src);
    if (st.isSymbolicLink()) {
      add({ type: 'symlink', path: dst, target: await readlink(src) }, origin);
    } else if (st.isDirectory()) {
      add({ type: 'directory', path: dst, mode: DIR_MODE }, origin);
      const names = (await readdir(src)).sort(compareEntryPaths);
      for (const n of names) await addPath(join(src, n), posix.join(dst, n), mode, origin);
    } else if (st.isFile()) {
      const m = mode ?? (st.mode & 0o111 ? 0o755 : 0o644);
      add({ type: 'file', path: dst, mode: m, size: st.size, open: () => openSource(src, st.size) }, origin);
    } else {
      throw new UserError(`${specPath}: ${origin}: ${src} is not a regular file, directory or symlink`);
    }
  };

  for (const [i, f] of spec.files.entries()) await addFileSpec(f, `files.${i}`);
  for (const [i, f] of (spec.platform_files[platform] ?? []).entries()) await addFileSpec(f, `platform_files.${platform}.${i}`);

  if (spec.type === 'run') {
    const hasManifests = spec.manifests.length > 0 || spec.charts.length > 0;
    if (spec.run) {
      const src = bundlePath(dir, spec.run, specPath, 'run');
      addBytes(RUN_SCRIPT, await readFile(src), 0o755, 'run');
      if (hasManifests) addBytes(PLACE_SCRIPT, placeManifestsScript(spec), 0o755, 'manifests (generated place-manifests.sh)');
    } else {
      addBytes(RUN_SCRIPT, placeManifestsScript(spec), 0o755, 'manifests (generated run.sh)');
    }
    for (const [i, m] of spec.manifests.entries()) {
      const src = bundlePath(dir, m.src, specPath, `manifests.${i}.src`);
      const data = await readFile(src);
      for (const d of m.distros) addBytes(posix.join(MANIFESTS_DIR, d, basename(m.src)), data, 0o644, `manifests.${i}`);
    }
    for (const [i, c] of spec.charts.entries()) {
      for (const d of c.distros) {
        const file = d === 'k3s' ? `${c.name}-helmchart.yaml` : `${c.name}-chart.yaml`;
        addBytes(posix.join(MANIFESTS_DIR, d, file), chartManifest(c, d), 0o644, `charts.${i}`);
      }
    }
  }

  // Parents of every path become directories; a file standing where a directory is needed is an error.
  for (const { entry, origin } of [...planned.values()]) {
    const parts = entry.path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      const existing = planned.get(parent);
      if (existing && existing.entry.type !== 'directory') {
        throw new UserError(`${specPath}: ${origin}: "${entry.path}" needs "${parent}" to be a directory, but ${existing.origin} writes a file there`);
      }
      if (!existing) planned.set(parent, { entry: { type: 'directory', path: parent, mode: DIR_MODE }, origin: 'implied parent' });
    }
  }
  return [...planned.values()].map((p) => p.entry).sort((a, b) => compareEntryPaths(a.path, b.path));
}
