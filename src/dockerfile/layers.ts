import { createReadStream, readFileSync } from 'node:fs';
import { lstat, readdir, readlink, stat } from 'node:fs/promises';
import { basename, join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { UserError } from '../errors.js';
import { compareEntryPaths, type LayerEntry } from '../layer/tar.js';
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
const SMALL_FILE = 256 * 1024;

function fileEntry(path: string, src: string, mode: number, size: number): LayerEntry {
  return { type: 'file', path, mode, size, open: () => (size <= SMALL_FILE ? Readable.from([readFileSync(src)]) : createReadStream(src)) };
}

export async function planDockerLayers(t: Translation): Promise<PlannedLayer[]> {
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

    const copyTree = async (src: string, dst: string): Promise<void> => {
      for (const n of (await readdir(src)).sort(compareEntryPaths)) {
        const s = join(src, n);
        const d = dst ? `${dst}/${n}` : n;
        const st = await lstat(s);
        if (st.isSymbolicLink()) put({ type: 'symlink', path: d, target: await readlink(s) }, s);
        else if (st.isDirectory()) {
          put({ type: 'directory', path: d, mode: mode(st.mode) }, s);
          await copyTree(s, d);
        } else if (st.isFile()) put(fileEntry(d, s, mode(st.mode), st.size), s);
        else throw new UserError(`${what}: ${s} is not a regular file, folder or symlink`);
      }
    };

    const destRel = step.dest.replace(/^\/+/, '');
    for (const src of step.sources) {
      // Sources named in the COPY are followed when they are symlinks; links inside folders are kept.
      const st = await stat(src.path);
      if (st.isDirectory()) {
        // A folder's contents go into the destination, which is created (with the folder's mode) if missing.
        if (destRel && !kindOf(destRel)) put({ type: 'directory', path: destRel, mode: mode(st.mode) }, src.path);
        await copyTree(src.path, destRel);
      } else if (st.isFile()) {
        const intoDir = step.destIsDir || !destRel || kindOf(destRel) === 'directory';
        const target = intoDir ? posix.join(destRel, basename(src.path)) : destRel;
        put(fileEntry(target, src.path, mode(st.mode), st.size), src.path);
      } else {
        throw new UserError(`${what}: ${src.given} is not a regular file or folder`);
      }
    }
    for (const e of entries.values()) image.set(e.path, e.type as Kind);
    layers.push({ step, entries: [...entries.values()].sort((a, b) => compareEntryPaths(a.path, b.path)), origins });
  }
  return layers;
}
