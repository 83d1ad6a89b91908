import { readTar, type TarHeader } from '../util/tar-reader.js';
import { UserError } from '../errors.js';
import { entryComponents } from './secure-path.js';

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';

export interface ExtractLimits {
  maxEntries: number;
  maxTotalBytes: number;
  maxDepth: number;
  maxNameLength: number;
}

export const DEFAULT_LIMITS: ExtractLimits = {
  maxEntries: 1_000_000,
  maxTotalBytes: 64 * 1024 ** 3,
  maxDepth: 128,
  maxNameLength: 4096,
};

export interface FlatEntry {
  /** Root-relative, cleaned path. */
  path: string;
  header: TarHeader;
  /** The whole content when it is at most 1 MiB (tar-reader.ts INLINE_BODY). */
  data: Buffer | undefined;
  /** The content piece by piece; read it before asking for the next entry (else it is skipped). */
  chunks: AsyncIterable<Buffer> | Iterable<Buffer>;
  layer: number;
}

function isDir(h: TarHeader): boolean {
  return h.type === 'directory';
}

/**
 * go-containerregistry `mutate.Extract` semantics, plus proper opaque directories: layers are
 * read top (last) to bottom; the first (topmost) entry for a path wins; `.wh.<name>` hides that
 * path and, for a non-directory, everything below it in lower layers; `.wh..wh..opq` hides the
 * lower layers' contents of its directory (not the same layer's). Whiteouts themselves are never
 * emitted, so they never delete what already exists on the destination.
 * Hard links are held back and emitted last, after every file they may point at exists.
 */
export async function* flattenLayers(
  openLayer: (index: number) => Promise<AsyncIterable<Buffer>>,
  layerCount: number,
  limits: ExtractLimits = DEFAULT_LIMITS,
  what = 'image',
  /** Told about every whiteout (`.wh.<name>` → the hidden path; an opaque marker → its folder + "/"). */
  onWhiteout?: (path: string, layer: number) => void,
): AsyncGenerator<FlatEntry> {
  const seen = new Map<string, boolean>(); // path → hides everything below it
  const opaque = new Set<string>(); // dirs whose lower-layer contents are hidden
  const hardlinks: FlatEntry[] = [];
  let entries = 0;
  let bytes = 0;

  const hiddenByAncestor = (path: string): boolean => {
    let i = path.lastIndexOf('/');
    while (i > 0) {
      const parent = path.slice(0, i);
      if (seen.get(parent) === true || opaque.has(parent)) return true;
      i = parent.lastIndexOf('/');
    }
    return false;
  };

  for (let layer = layerCount - 1; layer >= 0; layer--) {
    const layerOpaque: string[] = [];
    for await (const { header: h, data, chunks } of readTar(await openLayer(layer), `${what}: layer ${layer}`)) {
      if (++entries > limits.maxEntries) throw new UserError(`${what}: more than ${limits.maxEntries} entries`, 'raise --max-entries if this image is legitimate');
      if (Buffer.byteLength(h.name) > limits.maxNameLength) throw new UserError(`${what}: layer ${layer}: entry name longer than ${limits.maxNameLength} bytes`);
      const parts = entryComponents(h.name, `${what}: layer ${layer}`);
      if (parts.length > limits.maxDepth) throw new UserError(`${what}: layer ${layer}: "${h.name}" is nested deeper than ${limits.maxDepth} levels`);
      if (parts.length === 0) continue; // the root itself ("./")
      let base = parts[parts.length - 1]!;
      const dir = parts.slice(0, -1).join('/');
      if (base === OPAQUE_MARKER) {
        if (dir) layerOpaque.push(dir);
        onWhiteout?.(`${dir}/`, layer);
        continue;
      }
      const tombstone = base.startsWith(WHITEOUT_PREFIX);
      if (tombstone) {
        base = base.slice(WHITEOUT_PREFIX.length);
        if (base === '' || base === '.' || base === '..') throw new UserError(`${what}: layer ${layer}: whiteout "${h.name}" names no file inside the root`, 'the image is malformed or hostile');
      }
      const path = dir ? `${dir}/${base}` : base;
      if (seen.has(path) || hiddenByAncestor(path)) continue;
      seen.set(path, tombstone || !isDir(h));
      if (tombstone) {
        onWhiteout?.(path, layer);
        continue;
      }
      if (h.type === 'file' || h.type === 'contiguous-file') {
        bytes += h.size;
        if (bytes > limits.maxTotalBytes) throw new UserError(`${what}: more than ${limits.maxTotalBytes} bytes of files`, 'raise --max-size if this image is legitimate');
      }
      if (h.type === 'link') {
        hardlinks.push({ path, header: h, data: undefined, chunks: [], layer });
        continue;
      }
      yield { path, header: h, data, chunks, layer }; // a body left unread is skipped by readTar
    }
    for (const d of layerOpaque) opaque.add(d);
  }
  yield* hardlinks;
}
