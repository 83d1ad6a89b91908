import { createReadStream, openSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { basename, posix } from 'node:path';
import { Readable } from 'node:stream';
import { UserError } from '../errors.js';
import { extractPinnedMember, fetchPinned } from './download.js';
import { chartManifest, placeManifestsScript } from './generate.js';
import { compareEntryPaths, type LayerEntry } from '../layer/tar.js';
import type { SourceEntry, WalkedFile } from '../layer/source-folder.js';
import { bundlePath, normaliseDestination, sourceFolderOf, type FileSpec, type LoadedSpec } from './spec.js';

const DIR_MODE = 0o755;
/** Large reads of cached downloads: fewer thread-pool round trips per file. */
const READ_CHUNK = 1024 * 1024;

/** Where generated content lives inside a run bundle image. */
export const RUN_SCRIPT = 'run.sh';
export const PLACE_SCRIPT = 'place-manifests.sh';
export const MANIFESTS_DIR = 'manifests';

interface Planned {
  entry: LayerEntry;
  origin: string;
}

export interface PlanOptions {
  /** Fetch pinned `url:` downloads (default); `validate` leaves them out and plans the bundle's own files. */
  downloads?: boolean;
  /** trusted_root.json for keyless `signature:` pins of downloads (default KBUNDLE_TRUSTED_ROOT). */
  trustedRoot?: string;
}

/**
 * Everything that goes into the image for one platform, sorted, with parent directories.
 * Only the executable bit is taken from the source files, so checkouts with another umask,
 * owner or mtime produce the same layer. Every source is read through the bundle's
 * SourceFolder: nothing outside the bundle folder, no FIFO or device (source-path.ts).
 */
export async function planEntries(loaded: LoadedSpec, platform: string, opts: PlanOptions = {}): Promise<LayerEntry[]> {
  const { dir, specPath, spec } = loaded;
  const folder = sourceFolderOf(loaded);
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
    add({ type: 'file', path, mode, size: buf.length, open: () => Readable.from([buf]), data: buf }, origin);
  };

  const addFileSpec = async (f: FileSpec, field: string) => {
    const dst = normaliseDestination(f.dst, specPath, `${field}.dst`);
    if (f.url) {
      if (opts.downloads === false) return;
      const archive = await fetchPinned(f.url, f.sha256!, `${specPath}: ${field}`);
      if (f.signature) {
        const { verifyDownloadSignature } = await import('./download-signature.js');
        await verifyDownloadSignature(archive, f.sha256!, f.signature, { dir, specPath, field, url: f.url, trustedRoot: opts.trustedRoot });
      }
      const cached = f.extract ? await extractPinnedMember(archive, f.sha256!, f.extract, `${specPath}: ${field}`) : archive;
      const st = await lstat(cached);
      add({ type: 'file', path: dst, mode: f.mode ?? 0o644, size: st.size, open: () => createReadStream(cached, { highWaterMark: READ_CHUNK }), openFd: () => openSync(cached, 'r') }, field);
      return;
    }
    const what = `${specPath}: ${field}.src`;
    // A symlink named as src is copied as a symlink, like one inside a copied folder.
    addPath(folder.entry(bundlePath(folder, f.src!, specPath, `${field}.src`), what), dst, f.mode, field, what);
  };

  const addPath = (e: SourceEntry, dst: string, mode: number | undefined, origin: string, what: string): void => {
    if (e.kind === 'symlink') {
      add({ type: 'symlink', path: dst, target: folder.readlink(e, what) }, origin);
    } else if (e.kind === 'directory') {
      add({ type: 'directory', path: dst, mode: DIR_MODE }, origin);
      // dst is normalised (normaliseDestination) and a listed name is one component: no posix.join needed.
      for (const child of folder.list(e.path, what)) addPath(child, `${dst}/${child.name}`, mode, origin, what);
    } else {
      const m = mode ?? (e.stats.mode & 0o111 ? 0o755 : 0o644);
      // The entry keeps what opening needs, not the walk's Stats (and its four Dates), which
      // outlived the walk only through these closures: 1,264 → 498 bytes per planned entry.
      const walked: WalkedFile = { path: e.path, rel: e.rel, kind: 'file' };
      add({ type: 'file', path: dst, mode: m, size: e.stats.size, open: () => folder.stream(walked.path, what), openFd: () => folder.openFd(walked.path, what, walked) }, origin);
    }
  };

  for (const [i, f] of spec.files.entries()) await addFileSpec(f, `files.${i}`);
  for (const [i, f] of (spec.platform_files[platform] ?? []).entries()) await addFileSpec(f, `platform_files.${platform}.${i}`);

  if (spec.type === 'run') {
    const hasManifests = spec.manifests.length > 0 || spec.charts.length > 0;
    if (spec.run) {
      const src = bundlePath(folder, spec.run, specPath, 'run', true);
      addBytes(RUN_SCRIPT, folder.readFile(src, `${specPath}: run`), 0o755, 'run');
      if (hasManifests) addBytes(PLACE_SCRIPT, placeManifestsScript(spec), 0o755, 'manifests (generated place-manifests.sh)');
    } else {
      addBytes(RUN_SCRIPT, placeManifestsScript(spec), 0o755, 'manifests (generated run.sh)');
    }
    for (const [i, m] of spec.manifests.entries()) {
      const src = bundlePath(folder, m.src, specPath, `manifests.${i}.src`, true);
      const data = folder.readFile(src, `${specPath}: manifests.${i}.src`);
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
    for (let i = entry.path.indexOf('/'); i !== -1; i = entry.path.indexOf('/', i + 1)) {
      const parent = entry.path.slice(0, i);
      const existing = planned.get(parent);
      if (existing && existing.entry.type !== 'directory') {
        throw new UserError(`${specPath}: ${origin}: "${entry.path}" needs "${parent}" to be a directory, but ${existing.origin} writes a file there`);
      }
      if (!existing) planned.set(parent, { entry: { type: 'directory', path: parent, mode: DIR_MODE }, origin: 'implied parent' });
    }
  }
  return [...planned.values()].map((p) => p.entry).sort((a, b) => compareEntryPaths(a.path, b.path));
}
