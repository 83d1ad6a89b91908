import { basename, posix } from 'node:path';
import { UserError } from '../errors.js';
import { compareEntryPaths, type LayerEntry } from '../layer/tar.js';
import type { SourceFolder } from '../layer/source-folder.js';
import type { CopyStep, Translation } from './translate.js';

/**
 * The layers Docker (BuildKit) makes from the COPY steps of a `FROM scratch` stage: one per
 * COPY, holding what it writes plus the parent folders it has to create. Modes are the source
 * files' permission bits (or --chmod), as Docker keeps them; owners 0:0 (or --chown).
 */

export interface PlannedLayer {
  step: CopyStep;
  entries: LayerEntry[];
  /** Image path → source path, for what this layer writes (import uses it). */
  origins: Map<string, string>;
}

type Kind = 'directory' | 'file' | 'symlink';

/** A file read through the folder (src/builder/source-path.ts) when the layer is written. */
function fileEntry(folder: SourceFolder, what: string, path: string, src: string, mode: number, size: number): LayerEntry {
  return { type: 'file', path, mode, size, open: () => folder.stream(src, what) };
}

export async function planDockerLayers(t: Translation): Promise<PlannedLayer[]> {
  const folder = t.folder;
  const image = new Map<string, Kind>();
  const layers: PlannedLayer[] = [];
  for (const step of t.steps) {
    const entries = new Map<string, LayerEntry>();
    const origins = new Map<string, string>();
    const what = `${t.dockerfile.path}:${step.line}: ${step.text}`;
    const kindOf = (p: string): Kind | undefined => (entries.get(p)?.type as Kind | undefined) ?? image.get(p);
    const put = (e: LayerEntry, origin: string) => {
      const parts = e.path.split('/');
      for (let i = 1; i < parts.length; i++) {
        const parent = parts.slice(0, i).join('/');
        const k = kindOf(parent);
        if (k && k !== 'directory') throw new UserError(`${what}: "/${e.path}" needs "/${parent}" to be a folder, but an earlier COPY wrote a ${k} there`);
        // Docker creates missing parents with mode 0755.
        if (!k) entries.set(parent, { type: 'directory', path: parent, mode: 0o755 });
      }
      entries.set(e.path, e);
      origins.set(e.path, origin);
    };
    const mode = (m: number) => step.chmod ?? m & 0o7777;

    // Links inside a copied folder are copied as links (Docker too); FIFOs and devices are refused by list().
    const copyTree = (src: string, dst: string): void => {
      for (const e of folder.list(src, what)) {
        const d = dst ? `${dst}/${e.name}` : e.name;
        if (e.kind === 'symlink') put({ type: 'symlink', path: d, target: folder.readlink(e, what) }, e.path);
        else if (e.kind === 'directory') {
          put({ type: 'directory', path: d, mode: mode(e.stats.mode) }, e.path);
          copyTree(e.path, d);
        } else put(fileEntry(folder, what, d, e.path, mode(e.stats.mode), e.stats.size), e.path);
      }
    };

    const destRel = step.dest.replace(/^\/+/, '');
    for (const src of step.sources) {
      // Sources named in the COPY were followed (inside the folder) when they are symlinks; links inside folders are kept.
      const e = folder.entry(src.path, what);
      if (e.kind === 'directory') {
        // A folder's contents go into the destination, which is created (with the folder's mode) if missing.
        if (destRel && !kindOf(destRel)) put({ type: 'directory', path: destRel, mode: mode(e.stats.mode) }, src.path);
        copyTree(src.path, destRel);
      } else if (e.kind === 'file') {
        const intoDir = step.destIsDir || !destRel || kindOf(destRel) === 'directory';
        const target = intoDir ? posix.join(destRel, basename(src.given)) : destRel;
        put(fileEntry(folder, what, target, src.path, mode(e.stats.mode), e.stats.size), src.path);
      } else {
        throw new UserError(`${what}: ${src.given} is not a regular file or folder`);
      }
    }
    for (const e of entries.values()) image.set(e.path, e.type as Kind);
    layers.push({ step, entries: [...entries.values()].sort((a, b) => compareEntryPaths(a.path, b.path)), origins });
  }
  return layers;
}
