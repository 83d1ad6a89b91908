/**
 * Copy a content graph (index → manifests → config/layers) between Targets, like oras-go
 * `CopyGraph`: children before parents, blobs streamed (never held whole in memory), anything the
 * destination already has skipped, blobs mounted when the destination can link them, each digest
 * moved once, progress reported through hooks. No tags are written here (see store/copy.ts).
 */
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { isKbError } from '../errors.js';
import { carriesVerification, isDigest } from './digest.js';
import { MediaType, isIndexMediaType, isManifestMediaType } from './mediatypes.js';
import { canMount, fetchBytes, pushesReferences, type Target } from './target.js';
import { parseAnyManifest, type Descriptor } from './types.js';
import { settleAll } from '../util/pool.js';

/** Called as the copy goes (oras-go CopyGraphOptions PreCopy/PostCopy/OnCopySkipped/OnMounted). */
export interface CopyHooks {
  /** A blob transfer starts (again, after a retry). */
  preCopy?(desc: Descriptor): void;
  /** Bytes of a blob went through. */
  onBytes?(desc: Descriptor, bytes: number): void;
  /** A blob or manifest was transferred. */
  postCopy?(desc: Descriptor): void;
  /** The destination already had it. */
  onCopySkipped?(desc: Descriptor): void;
  /** The destination linked it from another repository. */
  onMounted?(desc: Descriptor, fromRepository: string): void;
  /** A blob transfer failed in a way worth retrying and starts again. */
  onRetry?(desc: Descriptor, error: unknown): void;
}

export interface CopyGraphOptions {
  hooks?: CopyHooks;
  /** Extra repositories on the destination registry that may already hold the blobs (cross-repo mount). */
  mountFrom?: string[];
  /** Parallel blob transfers (default 4: on 2 cores one stream parses while others wait on I/O), and as many of blobs up to 1 MiB. */
  concurrency?: number;
  /** Times one blob transfer is started again after a TRANSIENT failure (default 3 attempts). */
  blobAttempts?: number;
  /** Wait before a blob transfer starts again: this, doubled at each further attempt (default 250 ms). */
  blobRetryDelayMs?: number;
  /** Bytes of `root`, when the caller has already read them. */
  rootBytes?: Buffer;
}

export interface CopyStats {
  blobsCopied: number;
  blobsSkipped: number;
  blobsMounted: number;
  manifestsCopied: number;
  bytesCopied: number;
}

/** Blobs up to this size (configs, small layers) take turns among themselves, not with the large ones. */
const SMALL_BLOB = 1024 * 1024;

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

export function isManifestDescriptor(desc: Descriptor): boolean {
  return isManifestMediaType(desc.mediaType) || isIndexMediaType(desc.mediaType);
}

/** Docker "foreign" layers live elsewhere (their `urls`); registries do not hold them. */
function isForeignLayer(desc: Descriptor): boolean {
  return desc.mediaType === MediaType.DockerForeignLayerGzip || (!!desc.urls?.length && desc.mediaType.includes('nondistributable'));
}

/** The children of a manifest or index. */
export function successors(bytes: Buffer, desc: Descriptor, where: string): Descriptor[] {
  const parsed = parseAnyManifest(bytes, desc.mediaType, `${where}@${desc.digest}`);
  return parsed.kind === 'index' ? parsed.index.manifests : [parsed.manifest.config, ...parsed.manifest.layers];
}

/**
 * One copy session between two Targets: `copy(root)` may be called for several roots (an image,
 * then what is attached to it) and moves every digest at most once across them.
 */
export class GraphCopier {
  readonly stats: CopyStats = { blobsCopied: 0, blobsSkipped: 0, blobsMounted: 0, manifestsCopied: 0, bytesCopied: 0 };
  private readonly hooks: CopyHooks;
  private readonly limit: <T>(task: () => Promise<T>) => Promise<T>;
  private readonly smallLimit: <T>(task: () => Promise<T>) => Promise<T>;
  private readonly attempts: number;
  private readonly retryDelayMs: number;
  private readonly mountFrom: string[];
  private readonly inFlight = new Map<string, Promise<void>>();

  constructor(
    readonly src: Target,
    readonly dst: Target,
    opts: Omit<CopyGraphOptions, 'rootBytes'> = {},
  ) {
    this.hooks = opts.hooks ?? {};
    const n = Math.max(1, opts.concurrency ?? 4);
    this.limit = limiter(n);
    this.smallLimit = n > 1 ? limiter(n) : this.limit; // concurrency 1 means one blob at a time
    this.attempts = Math.max(1, opts.blobAttempts ?? 3);
    this.retryDelayMs = Math.max(0, opts.blobRetryDelayMs ?? 250);
    this.mountFrom = [...(opts.mountFrom ?? [])];
    const same = canMount(dst) ? dst.mountSourceOf(src) : undefined;
    if (same) this.mountFrom.push(same);
  }

  /**
   * Copy `root` and everything it refers to; `bytes` are the root's bytes when already read. With
   * `tag`, a destination that stores a manifest under a tag in one request (a registry) gets the
   * root that way, after everything under it as tagging would be; true when it did, so the caller
   * tags only otherwise (also when the root was there already).
   */
  async copy(root: Descriptor, bytes?: Buffer, tag?: string): Promise<boolean> {
    const { dst } = this;
    if (!tag || isDigest(tag) || !pushesReferences(dst) || !isManifestDescriptor(root)) {
      await this.node(root, bytes);
      return false;
    }
    let tagged = false;
    await this.node(root, bytes, async (body) => {
      await dst.pushReference(root, body, tag);
      tagged = true;
    });
    return tagged;
  }

  /** Copy what `desc` refers to, not `desc` itself (for manifests another step stores, e.g. referrers). */
  copyChildren(desc: Descriptor, bytes: Buffer): Promise<void> {
    return settleAll(successors(bytes, desc, this.src.name).map((c) => this.node(c))).then(() => undefined);
  }

  /** Each digest is transferred once even when several manifests share it (same layer, several platforms). */
  private once(desc: Descriptor, run: () => Promise<void>): Promise<void> {
    let p = this.inFlight.get(desc.digest);
    if (!p) {
      p = run();
      this.inFlight.set(desc.digest, p);
    }
    return p;
  }

  /** `store` stores the manifest `desc` once its children are copied (default: push it). */
  private node(desc: Descriptor, bytes?: Buffer, store = (body: Buffer) => this.dst.push(desc, body)): Promise<void> {
    // A config (a few hundred bytes) must not hold one of the layers' slots: with 4 layers and
    // 4 slots the last layer would start only after the config, and finish alone.
    const slots = desc.size <= SMALL_BLOB ? this.smallLimit : this.limit;
    if (!isManifestDescriptor(desc)) return this.once(desc, () => slots(() => this.blob(desc)));
    return this.once(desc, async () => {
      if (await this.dst.exists(desc)) {
        this.hooks.onCopySkipped?.(desc);
        return;
      }
      const body = bytes ?? (await fetchBytes(this.src, desc));
      await settleAll(successors(body, desc, this.src.name).map((c) => this.node(c)));
      await store(body);
      this.stats.manifestsCopied++;
      this.hooks.postCopy?.(desc);
    });
  }

  private async blob(desc: Descriptor): Promise<void> {
    if (isForeignLayer(desc)) return;
    const { src, dst, hooks, stats } = this;
    if (await dst.exists(desc)) {
      stats.blobsSkipped++;
      hooks.onCopySkipped?.(desc);
      return;
    }
    if (canMount(dst)) {
      for (const from of this.mountFrom) {
        if (await dst.mount(desc, from)) {
          stats.blobsMounted++;
          hooks.onMounted?.(desc, from);
          return;
        }
      }
    }
    for (let attempt = 1; ; attempt++) {
      hooks.preCopy?.(desc);
      const stream: Readable = await src.fetch(desc);
      // The counter passes the source's verified bytes on unchanged: the destination need not hash them again.
      const counted = carriesVerification(
        new Counter((n) => {
          stats.bytesCopied += n;
          hooks.onBytes?.(desc, n);
        }),
        stream,
      );
      stream.on('error', (e) => counted.destroy(e));
      stream.pipe(counted);
      // A Target may await before it reads; an early source error must wait for it, not crash the process.
      counted.on('error', () => undefined);
      try {
        await dst.push(desc, counted);
        break;
      } catch (e) {
        stream.destroy();
        // Transports report retryable failures as KbError TRANSIENT at the source.
        if (attempt < this.attempts && isKbError(e, 'TRANSIENT')) {
          hooks.onRetry?.(desc, e);
          // A registry that just failed (503, a reset) gets a moment before the blob starts again.
          await delay(this.retryDelayMs * 2 ** (attempt - 1));
          continue;
        }
        throw e;
      }
    }
    stats.blobsCopied++;
    hooks.postCopy?.(desc);
  }
}

/** Copy the graph under `root` from `src` to `dst` (oras-go CopyGraph). */
export async function copyGraph(src: Target, dst: Target, root: Descriptor, opts: CopyGraphOptions = {}): Promise<CopyStats> {
  const copier = new GraphCopier(src, dst, opts);
  await copier.copy(root, opts.rootBytes);
  return copier.stats;
}
