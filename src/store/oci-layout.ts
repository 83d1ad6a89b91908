import { createReadStream, createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isAttachmentTag } from '../attach/tags.js';
import { isKbError, KbError, UserError } from '../errors.js';
import { pathExists } from '../fs-util.js';
import { commitFile, STAGED_TEMP_FLAGS, stageAndRename, writeFileAtomic } from '../util/atomic-write.js';
import { BackgroundFlush } from '../util/background-flush.js';
import { VerifyingStream, declareLocal, digestOf, isDigest, isVerifiedAs, parseDigest } from '../oci/digest.js';
import { Annotation, MediaType } from '../oci/mediatypes.js';
import { MAX_MANIFEST_BYTES, OciLayoutFileSchema, parseAnyManifest, parseIndex, parseJson, type Descriptor, type Index } from '../oci/types.js';
import { readFileCapped } from '../util/read-file.js';
import type { ImageCapabilities, Target } from '../oci/target.js';
import type { ImageTransport, LocalImageLocation } from './types.js';

/** index.json of a layout: one entry per tag and platform; far below this even for a large catalog. */
const MAX_INDEX_JSON_BYTES = 16 * 1024 * 1024;

// Re-exported for the catalog modules that write their own files next to a layout.
export { writeFileAtomic };

const LAYOUT_VERSION = '1.0.0';

/**
 * index.json is read, changed and written back; two changes interleaved on those awaits lose one
 * (sign writes its two signature tags at once). Every change to a layout's index waits for the one
 * before it, keyed by the layout's absolute path so two OciLayout objects on one folder share a queue.
 */
const indexQueues = new Map<string, Promise<void>>();

function queueIndexChange(dir: string, change: () => Promise<void>): Promise<void> {
  const key = resolvePath(dir);
  // The queue's tail never rejects: a failed change is reported to its caller, and the next runs.
  const run = (indexQueues.get(key) ?? Promise.resolve()).then(change);
  const settled = run.catch(() => undefined);
  indexQueues.set(key, settled);
  void settled.then(() => {
    if (indexQueues.get(key) === settled) indexQueues.delete(key);
  });
  return run;
}

/** Let small network chunks pile up into fewer, larger writes (WriteStream coalesces with writev). */
const WRITE_BUFFER = 1024 * 1024;
const READ_BUFFER = 1024 * 1024;

/** An OCI image layout directory (image-spec image-layout.md): oci-layout, index.json, blobs/. */
export class OciLayout implements Target {
  readonly name: string;
  private constructor(
    readonly dir: string,
    /** Blobs are fsynced before they get their digest name; not for a layout removed after the command. */
    private readonly durable: boolean,
  ) {
    this.name = `oci:${dir}`;
  }

  /**
   * Open an existing layout, or create an empty one when `create` is set. `durable: false` for a
   * scratch layout the command removes (staged downloads, an archive being assembled).
   */
  static async open(dir: string, opts: { create?: boolean; durable?: boolean } = {}): Promise<OciLayout> {
    const layoutFile = join(dir, 'oci-layout');
    let text: string | undefined;
    try {
      text = await readFile(layoutFile, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (text === undefined) {
      if (!opts.create) throw new UserError(`oci:${dir}: not an OCI image layout (no oci-layout file)`, 'build or pull into it first, e.g. kbundle build <bundle> -o oci:' + dir);
      await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
      await writeFileAtomic(layoutFile, JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION }));
      await writeFileAtomic(join(dir, 'index.json'), JSON.stringify(emptyIndex()));
    } else {
      parseJson(OciLayoutFileSchema, text, layoutFile);
    }
    return new OciLayout(dir, opts.durable ?? true);
  }

  blobPath(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.dir, 'blobs', algorithm, hex);
  }

  async exists(desc: Descriptor): Promise<boolean> {
    try {
      const st = await stat(this.blobPath(desc.digest));
      return st.isFile() && st.size === desc.size;
    } catch {
      return false;
    }
  }

  async fetch(desc: Descriptor): Promise<Readable> {
    const path = this.blobPath(desc.digest);
    try {
      await stat(path);
    } catch {
      throw new KbError('NOT_FOUND', `${this.name}: blob ${desc.digest} is missing`, { hint: 'the layout is incomplete; rebuild or pull it again' });
    }
    const verify = new VerifyingStream(desc.digest, desc.size, `${this.name}: blob ${desc.digest}`);
    // Large reads: one thread-pool round trip per MiB instead of per 64 KiB.
    const src = createReadStream(path, { highWaterMark: READ_BUFFER });
    src.on('error', (e) => verify.destroy(e));
    return declareLocal(src.pipe(verify));
  }

  async push(desc: Descriptor, content: Readable | Buffer): Promise<void> {
    if (await this.exists(desc)) {
      if (content instanceof Readable) content.resume();
      return;
    }
    const final = this.blobPath(desc.digest);
    const src = content instanceof Readable ? content : Readable.from([content]);
    try {
      await mkdir(join(final, '..'), { recursive: true });
      // Staged and flushed to disk before it has its digest name (as containers/image's layout
      // does): after a power loss a blob is whole or absent, never an empty file that index.json
      // already refers to. A scratch layout skips the flush.
      await stageAndRename(
        final,
        async (tmp) => {
          // Written back to disk as it arrives, so that the flush before the rename has little left
          // (fdatasync flushes the file, whichever descriptor asks).
          const flushFh = this.durable ? await open(tmp, 'r') : undefined;
          const flush = flushFh && new BackgroundFlush(flushFh);
          if (flush) src.on('data', (chunk: Buffer) => flush.wrote(chunk.length));
          const sink = createWriteStream(tmp, { highWaterMark: WRITE_BUFFER, flags: STAGED_TEMP_FLAGS });
          try {
            // A stream that already verifies this very digest and size (a registry or layout fetch)
            // errors before it ends on any mismatch, so hashing it a second time buys nothing.
            if (isVerifiedAs(src, desc.digest, desc.size)) await pipeline(src, sink);
            else await pipeline(src, new VerifyingStream(desc.digest, desc.size, `${this.name}: blob ${desc.digest}`), sink);
            await flush?.settled();
          } finally {
            // The file may still be being opened when the source fails: the temp goes once it is closed.
            if (!sink.closed) await once(sink, 'close').catch(() => undefined);
            await flush?.settled().catch(() => undefined);
            await flushFh?.close();
          }
        },
        { durable: this.durable },
      );
    } catch (e) {
      src.destroy(); // a failure before the copy started must not leave the source (a response) open
      throw e;
    }
  }

  /**
   * Move an already-verified file into the blob store (used by the builder, which hashed it
   * while writing). The file must be on the same filesystem.
   */
  async adoptBlob(tmpPath: string, digest: string): Promise<void> {
    const final = this.blobPath(digest);
    await mkdir(join(final, '..'), { recursive: true });
    await commitFile(tmpPath, final, { durable: this.durable });
  }

  async readIndex(): Promise<Index> {
    const path = join(this.dir, 'index.json');
    return parseIndex(await readFileCapped(path, MAX_INDEX_JSON_BYTES), undefined, path);
  }

  /** Read index.json, let `change` edit it, write it back: one change at a time per layout. */
  private updateIndex(change: (index: Index) => void): Promise<void> {
    return queueIndexChange(this.dir, async () => {
      const index = await this.readIndex();
      change(index);
      await writeFileAtomic(join(this.dir, 'index.json'), JSON.stringify(index));
    });
  }

  async resolve(reference: string): Promise<Descriptor> {
    const index = await this.readIndex();
    if (isDigest(reference)) {
      const found = index.manifests.find((d) => d.digest === reference);
      if (found) return stripRefName(found);
      // Not top-level (e.g. a platform manifest inside an index): read it to learn its type.
      const path = this.blobPath(reference);
      let bytes: Buffer;
      try {
        bytes = await readFileCapped(path, MAX_MANIFEST_BYTES, `${this.name}@${reference}`);
      } catch (e) {
        if (isKbError(e, 'NOT_FOUND')) throw new KbError('NOT_FOUND', `${this.name}: no manifest ${reference}`);
        throw e;
      }
      if (digestOf(bytes, parseDigest(reference).algorithm) !== reference) throw new KbError('DIGEST_MISMATCH', `${this.name}: blob ${reference} is corrupt`);
      const parsed = parseAnyManifest(bytes, undefined, `${this.name}@${reference}`);
      const mediaType = parsed.kind === 'index' ? (parsed.index.mediaType ?? MediaType.OciIndex) : (parsed.manifest.mediaType ?? MediaType.OciManifest);
      return { mediaType, digest: reference, size: bytes.length };
    }
    if (reference === '') {
      // Signatures and referrer indexes (cosign's sha256-<hex>[.sig] tags) are not images to pick.
      const images = index.manifests.filter((d) => !isAttachmentTag(d.annotations?.[Annotation.RefName] ?? ''));
      if (images.length === 1) return stripRefName(images[0]!);
      const tags = listRefNames(index);
      throw new UserError(`${this.name}: holds ${images.length} images; name one`, tags.length ? `use oci:${this.dir}:<tag> with one of: ${tags.join(', ')}` : undefined);
    }
    const found = index.manifests.find((d) => d.annotations?.[Annotation.RefName] === reference);
    if (!found) {
      const tags = listRefNames(index);
      throw new KbError('NOT_FOUND', `${this.name}: no image tagged "${reference}"`, { hint: tags.length ? `available: ${tags.join(', ')}` : 'the layout holds no tagged images' });
    }
    return stripRefName(found);
  }

  async tag(desc: Descriptor, reference: string): Promise<void> {
    const entry: Descriptor = { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
    if (desc.platform) entry.platform = desc.platform;
    if (desc.artifactType) entry.artifactType = desc.artifactType;
    const annotations = { ...(desc.annotations ?? {}) };
    if (reference) annotations[Annotation.RefName] = reference;
    if (Object.keys(annotations).length) entry.annotations = annotations;
    await this.updateIndex((index) => {
      // A tag names one thing; an untagged entry for the same digest is replaced too.
      index.manifests = index.manifests.filter((d) => {
        const ref = d.annotations?.[Annotation.RefName];
        if (reference && ref === reference) return false;
        if (d.digest === desc.digest && (ref === undefined || ref === reference)) return false;
        return true;
      });
      index.manifests.push(entry);
    });
  }

  /** Order index.json by tag, then digest: the same content gives the same bytes whatever the history. */
  async sortIndex(): Promise<void> {
    const key = (d: Descriptor) => `${d.annotations?.[Annotation.RefName] ?? ''}\0${d.digest}`;
    await this.updateIndex((index) => {
      index.manifests.sort((a, z) => (key(a) < key(z) ? -1 : key(a) > key(z) ? 1 : 0));
    });
  }

  async tags(): Promise<string[]> {
    return listRefNames(await this.readIndex());
  }
}

function emptyIndex(): Index {
  return { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] };
}

function listRefNames(index: Index): string[] {
  return index.manifests.map((d) => d.annotations?.[Annotation.RefName]).filter((t): t is string => !!t);
}

function stripRefName(d: Descriptor): Descriptor {
  const { annotations, ...rest } = d;
  if (!annotations) return rest;
  const { [Annotation.RefName]: _drop, ...others } = annotations;
  return Object.keys(others).length ? { ...rest, annotations: others } : rest;
}

/** Split `path[:ref]`: a ref is what follows the last colon, unless that part looks like a path. */
export function splitPathRef(rest: string): { path: string; ref: string } {
  const i = rest.lastIndexOf(':');
  if (i > 0 && !rest.slice(i + 1).includes('/')) return { path: rest.slice(0, i), ref: rest.slice(i + 1) };
  return { path: rest, ref: '' };
}

type OciLocation = Extract<LocalImageLocation, { transport: 'oci' }>;

const capabilities: ImageCapabilities = { multiPlatform: true, signatures: true, inPlace: true, remote: false };

const format = (l: OciLocation): string => `oci:${l.path}${l.ref ? `:${l.ref}` : ''}`;

/** `oci:<dir>[:tag]`: an OCI image layout directory, read and written in place. */
export const ociLayoutTransport: ImageTransport<OciLocation> = {
  name: 'oci',
  capabilities,
  parse(rest, input, what) {
    const { path, ref } = splitPathRef(rest);
    if (!path) throw new UserError(`${what}: "${input}" names no path`);
    return { transport: 'oci', path, ref };
  },
  format,
  identity: (l) => `oci:${resolvePath(l.path)}`,
  async openSource(loc) {
    const display = format(loc);
    return { target: await OciLayout.open(loc.path), reference: loc.ref, display, capabilities, tag: loc.ref, location: display, close: async () => undefined };
  },
  async openDestination(loc, opts) {
    const existed = await pathExists(loc.path, { follow: true });
    const layout = await OciLayout.open(loc.path, { create: true });
    const tag = loc.ref || opts.defaultTag || '';
    return {
      target: layout,
      layout,
      reference: tag,
      display: format(loc),
      capabilities,
      tag,
      location: format({ ...loc, ref: tag }),
      // A failed copy into a layout this call created leaves nothing behind.
      close: async (root) => {
        if (!root && !existed) await rm(loc.path, { recursive: true, force: true });
      },
    };
  },
};
