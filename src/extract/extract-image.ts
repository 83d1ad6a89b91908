import { mkdir } from 'node:fs/promises';
import { makeStagingDir, removeStagingDir } from '../util/atomic-write.js';
import { tmpdir } from 'node:os';
import { limiter } from '../util/pool.js';
import { chunksOf } from '../util/chunks.js';
import { KbError, UserError } from '../errors.js';
import { verifyFilesInOrder } from '../oci/file-digest-worker.js';
import { isIndexMediaType } from '../oci/mediatypes.js';
import { decompressFile } from '../layer/codec.js';
import { OutputRecycler } from '../layer/zlib-decode.js';
import { hostPlatform, selectPlatform } from '../oci/platform.js';
import { parseIndex, parseManifest, type Descriptor, type Manifest, type Platform } from '../oci/types.js';
import { OciLayout } from '../store/oci-layout.js';
import { fetchBytes, resolveAndRead, type Target } from '../oci/target.js';
import { applyEntry, finishApply, newApplyState, type ApplyOptions } from './apply.js';
import { FileWriter } from './file-writer.js';
import { DEFAULT_LIMITS, flattenLayers, type ExtractLimits, type FlatEntry } from './flatten.js';

export interface ExtractOptions extends ApplyOptions {
  limits?: Partial<ExtractLimits>;
  /** Where verified layers are staged when the source is remote (default: os tmpdir). */
  stagingDir?: string;
  onLayerVerified?: (layer: Descriptor) => void;
  /** 'last': only the topmost layer (what AuroraBoot builds extensions from); default all. */
  layers?: 'all' | 'last';
  /** Entries this returns false for are left out (their bodies are skipped). */
  select?: (entry: FlatEntry) => boolean;
  /** Told about whiteouts met while flattening (see flattenLayers). */
  onWhiteout?: (path: string, layer: number) => void;
}

export interface ExtractResult {
  /** Journaled installs: set folder times once the journal is committed. */
  finish: () => Promise<void>;
  manifest: Manifest;
  files: number;
  bytes: number;
  warnings: string[];
}

/** Manifest (or index → the platform's manifest) for a reference in a Target; `hint` as selectPlatform's. */
export async function resolveManifest(target: Target, reference: string, platform: Platform = hostPlatform(), hint?: string): Promise<Descriptor> {
  // One GET for the reference's manifest (resolveAndRead); an image's own manifest is read again
  // by extractImage, from the registry target's memory of what it fetched.
  const first = await resolveAndRead(target, reference);
  let desc = first.desc;
  let bytes: Buffer | undefined = first.bytes;
  // Follow the descriptors themselves (never re-resolve a digest, which would trust whatever the
  // store answers over what the index said): parseIndex refuses an entry whose media type lies.
  for (let depth = 0; isIndexMediaType(desc.mediaType); depth++) {
    if (depth >= MAX_INDEX_NESTING) throw new UserError(`${target.name}:${reference}: indexes nested more than ${MAX_INDEX_NESTING} deep`);
    const index = parseIndex(bytes ?? (await fetchBytes(target, desc)), desc.mediaType, `${target.name}@${desc.digest}`);
    bytes = undefined;
    desc = selectPlatform(index.manifests, platform, `${target.name}:${reference}`, hint);
  }
  return desc;
}

/** An index of indexes is legal; a chain of them is not how anyone publishes an image. */
const MAX_INDEX_NESTING = 4;

/**
 * Verify the image's layers, then flatten and apply it onto `root`. No layer byte reaches the root
 * before that layer's digest and size were checked: local layout blobs are hashed in place (on
 * worker threads), remote ones are downloaded (verified) into a staging directory, several at a
 * time. A journaled install (all or nothing: a later layer's failure rolls everything back) starts
 * on the top layer as soon as that one is verified while the others are still being hashed or
 * downloaded; otherwise every layer is verified before anything is written.
 */
export async function extractImage(target: Target, manifestDesc: Descriptor, root: string, opts: ExtractOptions = {}): Promise<ExtractResult> {
  const what = `${target.name}@${manifestDesc.digest}`;
  const manifest = parseManifest(await fetchBytes(target, manifestDesc), manifestDesc.mediaType, what);
  const limits = { ...DEFAULT_LIMITS, ...opts.limits };
  const layers = opts.layers === 'last' ? manifest.layers.slice(-1) : manifest.layers;
  if (opts.layers === 'last' && layers.length === 0) throw new UserError(`${what}: the image has no layers`);
  const declared = layers.reduce((n, l) => n + l.size, 0);
  if (declared > limits.maxTotalBytes) throw new UserError(`${what}: layers total ${declared} bytes, over the ${limits.maxTotalBytes}-byte limit`);

  let staging: string | undefined;
  let ready: Promise<string>[] = [];
  let writer: FileWriter | undefined;
  const stopWriter = () => writer?.stopSync();
  try {
    if (target instanceof OciLayout) {
      const items = layers.map((layer) => ({ path: target.blobPath(layer.digest), digest: layer.digest, size: layer.size, what: `${target.name}: blob ${layer.digest}` }));
      for (const it of items) {
        if (!(await target.exists({ mediaType: '', digest: it.digest, size: it.size })))
          throw new KbError('NOT_FOUND', `${it.what} is missing or has the wrong size`, { hint: 'the layout is incomplete; rebuild or pull it again' });
      }
      // One worker, top layer first (applied first): it is verified before the lower ones are read.
      const hashed = verifyFilesInOrder([...items].reverse()).reverse();
      ready = items.map((it, i) => hashed[i]!.then(() => it.path));
    } else {
      staging = await makeStagingDir(opts.stagingDir ?? tmpdir(), 'layers');
      const local = await OciLayout.open(staging, { create: true, durable: false });
      const slots = limiter(PARALLEL_DOWNLOADS);
      ready = topFirst(layers.length, (i) =>
        slots(async () => {
          await local.push(layers[i]!, await target.fetch(layers[i]!));
          return local.blobPath(layers[i]!.digest);
        }),
      );
    }
    for (const p of ready) p.catch(() => undefined); // awaited below (or settled in finally)
    const told = new Set<number>();
    const verified = async (i: number): Promise<string> => {
      const path = await ready[i]!;
      if (!told.has(i)) opts.onLayerVerified?.(layers[i]!);
      told.add(i);
      return path;
    };
    if (!opts.journal) for (let i = 0; i < layers.length; i++) await verified(i);

    await mkdir(root, { recursive: true });
    const state = newApplyState();
    if (opts.journal) {
      opts.journal.beforeAbort.add(stopWriter);
      state.startWriter = () => (writer = new FileWriter());
    }
    let files = 0;
    let bytes = 0;
    // The read-ahead lets inflating (zlib on the thread pool) run on while a run of small files
    // keeps the main thread busy with file system calls.
    // Journaled, every file's bytes are copied (the file writer, or a synchronous write) before the
    // tar reader moves on, so the inflate buffers can be reused (zlib-decode.ts OutputRecycler).
    const recycler = opts.journal ? new OutputRecycler() : undefined;
    const open = async (i: number) => {
      const chunks = chunksOf(decompressFile(await verified(i), layers[i]!.mediaType, `${what} layer ${i}`, recycler), READ_AHEAD);
      return recycler ? Object.assign(chunks, { release: (c: Buffer) => recycler.release(c) }) : chunks;
    };
    for await (const entry of flattenLayers(open, layers.length, limits, what, opts.onWhiteout)) {
      if (opts.select && !opts.select(entry)) continue; // flattenLayers skips an unread body
      await applyEntry(root, entry, opts, state, what);
      if (entry.header.type === 'file') {
        files++;
        bytes += entry.header.size ?? 0;
      }
    }
    await writer?.drain(); // every temp on disk before the caller commits
    // Folder times go last (writing children changes them); journaled, after the commit.
    const finish = () => finishApply(state);
    if (!opts.journal) await finish();
    return { manifest, files, bytes, warnings: state.warnings, finish: opts.journal ? finish : async () => undefined };
  } finally {
    // No temp may be created after this returns (the caller commits or rolls back next).
    stopWriter();
    opts.journal?.beforeAbort.delete(stopWriter);
    // Nothing may run on after this returns (and the staged blobs must be closed before removal).
    await Promise.allSettled(ready);
    if (staging) await removeStagingDir(staging);
  }
}

/** Parallel layer downloads for an install (as skopeo and containerd do; one connection each). */
const PARALLEL_DOWNLOADS = 4;
/** Inflated bytes buffered ahead of the tar reader. */
const READ_AHEAD = 8 * 1024 * 1024;

/** Start `run` for every layer, the top one (extracted first) first; the promises keep layer order. */
function topFirst<T>(count: number, run: (i: number) => Promise<T>): Promise<T>[] {
  const out: Promise<T>[] = new Array(count);
  for (let i = count - 1; i >= 0; i--) out[i] = run(i);
  return out;
}
