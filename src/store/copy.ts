import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { UserError } from '../errors.js';
import { isDigest } from '../oci/digest.js';
import { MediaType, isIndexMediaType, isManifestMediaType } from '../oci/mediatypes.js';
import { formatPlatform, hostPlatform, selectPlatform } from '../oci/platform.js';
import { parseAnyManifest, type Descriptor, type Platform } from '../oci/types.js';
import { isTransient } from '../registry/errors.js';
import { isRegistryTarget } from '../registry/registry-target.js';
import { attachReferrer, listReferrers, referrersTag, tryResolve, type ReferrersCapable } from '../sign/referrers.js';
import { fetchBytes, type Target } from './target.js';

export type CopyProgress =
  | { kind: 'blob-start'; desc: Descriptor }
  | { kind: 'blob-bytes'; desc: Descriptor; bytes: number }
  | { kind: 'blob-done'; desc: Descriptor; how: 'copied' | 'exists' | 'mounted' }
  | { kind: 'blob-retry'; desc: Descriptor; error: string }
  | { kind: 'manifest'; desc: Descriptor; how: 'copied' | 'exists' };

export interface CopyOptions {
  /** Copy only this platform's manifest out of an index (the copy's root becomes that manifest). */
  platform?: Platform;
  /** With no `platform`: copy the whole index (default true). False picks the host platform. */
  allPlatforms?: boolean;
  onProgress?: (e: CopyProgress) => void;
  /** Repositories on the destination registry that may already hold the blobs (cross-repo mount). */
  mountFrom?: string[];
  /** Parallel blob transfers (default 4: on 2 cores one stream parses while others wait on I/O). */
  concurrency?: number;
  /** Times one blob transfer is started again after a transient failure (default 3 attempts). */
  blobAttempts?: number;
  /**
   * Also copy what is attached to the copied manifests (the root, and an index's manifests when the
   * whole index is copied): cosign's `sha256-<hex>.sig`/`.att`/`.sbom` tags and OCI referrers
   * (signatures, attestations), so the copy verifies where it lands. One level deep.
   */
  attached?: boolean;
}

export interface CopyResult {
  /** What was tagged at the destination: the source root, or the chosen platform's manifest. */
  root: Descriptor;
  blobsCopied: number;
  blobsSkipped: number;
  blobsMounted: number;
  manifestsCopied: number;
  bytesCopied: number;
  /** Attached artifacts copied along (`attached`): legacy tags by name, referrers by digest. */
  attached: Array<{ subject: string; kind: 'tag' | 'referrer'; name: string; digest: string }>;
  /** Attached artifacts that could not be looked up (the image itself was copied). */
  warnings: string[];
}

/** A small counting semaphore: at most `n` tasks run at once. */
export function limiter(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: Array<() => void> = [];
  const next = (): void => {
    active--;
    queue.shift()?.();
  };
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (active >= n) await new Promise<void>((r) => queue.push(r));
    active++;
    try {
      return await task();
    } finally {
      next();
    }
  };
}

class Counter extends Transform {
  constructor(private readonly onBytes: (n: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.onBytes(chunk.length);
    cb(null, chunk);
  }
}

/** Like Promise.all, but waits for every task before failing, so nothing runs on after the copy returns. */
async function settleAll(tasks: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(tasks);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

function isManifestDescriptor(desc: Descriptor): boolean {
  return isManifestMediaType(desc.mediaType) || isIndexMediaType(desc.mediaType);
}

/** Docker "foreign" layers live elsewhere (their `urls`); registries do not hold them. */
function isForeignLayer(desc: Descriptor): boolean {
  return desc.mediaType === MediaType.DockerForeignLayerGzip || (!!desc.urls?.length && desc.mediaType.includes('nondistributable'));
}

/**
 * Copy an image graph (index → manifests → config/layers) from `src` to `dst`, like oras-go's
 * Copy: children before parents, blobs streamed (never held whole in memory), anything `dst`
 * already has skipped, the tag written last so a failed copy never leaves a tag dangling.
 */
export async function copyImage(src: Target, srcRef: string, dst: Target, dstRef: string, opts: CopyOptions = {}): Promise<CopyResult> {
  const result: CopyResult = { root: await src.resolve(srcRef), blobsCopied: 0, blobsSkipped: 0, blobsMounted: 0, manifestsCopied: 0, bytesCopied: 0, attached: [], warnings: [] };
  const progress = opts.onProgress ?? (() => undefined);
  const limit = limiter(Math.max(1, opts.concurrency ?? 4));
  const attempts = Math.max(1, opts.blobAttempts ?? 3);
  const mountFrom = [...(opts.mountFrom ?? [])];
  if (isRegistryTarget(src) && isRegistryTarget(dst) && src.registry === dst.registry && src.repository !== dst.repository) mountFrom.push(src.repository);
  const inFlight = new Map<string, Promise<void>>();

  let rootBytes = await fetchBytes(src, result.root);
  const wantPlatform = opts.platform ?? (opts.allPlatforms === false ? hostPlatform() : undefined);
  if (wantPlatform && isIndexMediaType(result.root.mediaType)) {
    const parsed = parseAnyManifest(rootBytes, result.root.mediaType, `${src.name}@${result.root.digest}`);
    if (parsed.kind !== 'index') throw new UserError(`${src.name}@${result.root.digest}: declared as an index but is a manifest`);
    const chosen = selectPlatform(parsed.index.manifests, wantPlatform, `${src.name}:${srcRef || result.root.digest}`);
    result.root = { mediaType: chosen.mediaType, digest: chosen.digest, size: chosen.size, platform: chosen.platform };
    rootBytes = await fetchBytes(src, result.root);
  }
  if (dstRef && isDigest(dstRef) && dstRef !== result.root.digest) {
    throw new UserError(
      `${dst.name}@${dstRef}: the image being copied has digest ${result.root.digest}${wantPlatform ? ` (platform ${formatPlatform(wantPlatform)})` : ''}`,
      'a destination pinned by digest must name exactly the content copied; use a tag instead',
    );
  }

  const copyBlob = async (desc: Descriptor): Promise<void> => {
    if (isForeignLayer(desc)) return;
    if (await dst.exists(desc)) {
      result.blobsSkipped++;
      progress({ kind: 'blob-done', desc, how: 'exists' });
      return;
    }
    if (isRegistryTarget(dst)) {
      for (const from of mountFrom) {
        if (await dst.mount(desc, from)) {
          result.blobsMounted++;
          progress({ kind: 'blob-done', desc, how: 'mounted' });
          return;
        }
      }
    }
    for (let attempt = 1; ; attempt++) {
      progress({ kind: 'blob-start', desc });
      const stream: Readable = await src.fetch(desc);
      const counted = stream.pipe(
        new Counter((n) => {
          result.bytesCopied += n;
          progress({ kind: 'blob-bytes', desc, bytes: n });
        }),
      );
      stream.on('error', (e) => counted.destroy(e));
      // A Target may await before it reads; an early source error must wait for it, not crash the process.
      counted.on('error', () => undefined);
      try {
        await dst.push(desc, counted);
        break;
      } catch (e) {
        stream.destroy();
        if (attempt < attempts && isTransient(e)) {
          progress({ kind: 'blob-retry', desc, error: (e as Error).message });
          continue;
        }
        throw e;
      }
    }
    result.blobsCopied++;
    progress({ kind: 'blob-done', desc, how: 'copied' });
  };

  /** Each digest is transferred once even when several manifests share it (same layer, several platforms). */
  const once = (desc: Descriptor, run: () => Promise<void>): Promise<void> => {
    let p = inFlight.get(desc.digest);
    if (!p) {
      p = run();
      inFlight.set(desc.digest, p);
    }
    return p;
  };

  const copyNode = async (desc: Descriptor, bytes?: Buffer): Promise<void> => {
    if (!isManifestDescriptor(desc)) return once(desc, () => limit(() => copyBlob(desc)));
    return once(desc, async () => {
      if (await dst.exists(desc)) {
        progress({ kind: 'manifest', desc, how: 'exists' });
        return;
      }
      const body = bytes ?? (await fetchBytes(src, desc));
      const parsed = parseAnyManifest(body, desc.mediaType, `${src.name}@${desc.digest}`);
      const children = parsed.kind === 'index' ? parsed.index.manifests : [parsed.manifest.config, ...parsed.manifest.layers];
      await settleAll(children.map((c) => copyNode(c)));
      await dst.push(desc, body);
      result.manifestsCopied++;
      progress({ kind: 'manifest', desc, how: 'copied' });
    });
  };

  await copyNode(result.root, rootBytes);
  await dst.tag(result.root, dstRef && !isDigest(dstRef) ? dstRef : '');
  if (opts.attached) {
    const subjects = [result.root];
    const parsedRoot = parseAnyManifest(rootBytes, result.root.mediaType, `${src.name}@${result.root.digest}`);
    if (parsedRoot.kind === 'index') subjects.push(...parsedRoot.index.manifests.filter(isManifestDescriptor));
    // Looking up what is attached may fail where the image itself did not (a registry that answers
    // 401/403 for a missing tag): that is reported, and the copied image stays.
    const lookup = async <T>(what: string, fn: () => Promise<T>): Promise<T | undefined> => {
      try {
        return await fn();
      } catch (e) {
        result.warnings.push(`${src.name}: could not look up ${what}: ${(e as Error).message}`);
        return undefined;
      }
    };
    for (const subject of subjects) {
      // cosign's tag scheme (signatures, attestations, SBOMs): the same tag at the destination.
      for (const suffix of LEGACY_SUFFIXES) {
        const tag = `${referrersTag(subject.digest)}.${suffix}`;
        const desc = await lookup(`tag ${tag}`, () => tryResolve(src, tag));
        if (!desc) continue;
        await copyNode(desc);
        await dst.tag(desc, tag);
        result.attached.push({ subject: subject.digest, kind: 'tag', name: tag, digest: desc.digest });
      }
      // OCI referrers (the API, or the sha256-<hex> index tag): each one copied, then attached.
      for (const ref of (await lookup(`the referrers of ${subject.digest}`, () => listReferrers(src as Target & ReferrersCapable, subject))) ?? []) {
        const bytes = await fetchBytes(src, ref);
        const parsed = parseAnyManifest(bytes, ref.mediaType, `${src.name}@${ref.digest}`);
        const children = parsed.kind === 'index' ? parsed.index.manifests : [parsed.manifest.config, ...parsed.manifest.layers];
        await settleAll(children.map((c) => copyNode(c)));
        await attachReferrer(dst as Target & ReferrersCapable, bytes, ref);
        result.attached.push({ subject: subject.digest, kind: 'referrer', name: ref.artifactType ?? ref.mediaType, digest: ref.digest });
      }
    }
  }
  return result;
}

/** The tag suffixes cosign stores next to an image: signatures, attestations, SBOMs. */
const LEGACY_SUFFIXES = ['sig', 'att', 'sbom'];
