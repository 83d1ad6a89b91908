import { Readable } from 'node:stream';
import { isDigest, readAllCapped, VerifyingStream } from '../oci/digest.js';
import { MAX_MANIFEST_BYTES, type Descriptor } from '../oci/types.js';
import type { ManifestFetcher, Mounter, ReferencePusher, ReferrersLister, Target } from '../oci/target.js';
import { downloadBlob } from './blob-download.js';
import { DEFAULT_UPLOAD, mountBlob, uploadBlob, type UploadContext, type UploadTuning } from './blob-upload.js';
import type { RegistryClient, RegistrySession } from './client.js';
import { deleteManifest, getManifest, headManifest, isManifestLike, manifestExists, putManifest, type ManifestContext } from './manifests.js';
import { referrersFromApi } from './referrers.js';
import type { ImageReference } from './reference.js';
import { listTags } from './tags.js';

export type Access = 'pull' | 'push';

export interface RegistryTargetOptions {
  /** `push` asks for `pull,push` tokens from the start (one token for the whole transfer). */
  access?: Access;
  upload?: Partial<UploadTuning>;
}

const MANIFEST_CACHE_ENTRIES = 64;

/** One repository on a registry, as a Target: blobs, manifests, tags; mounts and the referrers API. */
export class RegistryTarget implements Target, Mounter, ReferrersLister, ManifestFetcher, ReferencePusher {
  readonly name: string;
  readonly registry: string;
  private readonly session: RegistrySession;
  private readonly scopes: string[];
  private readonly tuning: UploadTuning;
  /**
   * Manifests we pushed or fetched recently (verified, keyed by digest), so tagging does not fetch
   * them back and a command that reads one manifest twice (install: verify, then the platform's
   * manifest) sends one GET.
   */
  private readonly manifests = new Map<string, { mediaType: string; bytes: Buffer }>();
  /** Byte progress of blob uploads, for callers that show it. */
  onUploadBytes?: (desc: Descriptor, n: number) => void;

  constructor(
    client: RegistryClient,
    readonly repository: string,
    registry: string,
    opts: RegistryTargetOptions = {},
  ) {
    this.registry = registry;
    this.session = client.session(registry);
    this.name = `${registry}/${repository}`;
    this.scopes = [`repository:${repository}:${opts.access === 'push' ? 'pull,push' : 'pull'}`];
    this.tuning = { ...DEFAULT_UPLOAD, ...(opts.upload ?? {}) };
  }

  static forReference(client: RegistryClient, ref: ImageReference, opts: RegistryTargetOptions = {}): RegistryTarget {
    return new RegistryTarget(client, ref.repository, ref.registry, opts);
  }

  private get mctx(): ManifestContext {
    return { session: this.session, repository: this.repository, scopes: this.scopes, name: this.name };
  }

  private uctx(desc: Descriptor): UploadContext {
    return {
      session: this.session,
      repository: this.repository,
      scopes: this.scopes,
      name: this.name,
      tuning: this.tuning,
      onBytes: this.onUploadBytes ? (n) => this.onUploadBytes?.(desc, n) : undefined,
    };
  }

  private remember(desc: Descriptor, bytes: Buffer): void {
    const { digest, mediaType } = desc;
    this.manifests.delete(digest);
    this.manifests.set(digest, { mediaType, bytes });
    if (this.manifests.size > MANIFEST_CACHE_ENTRIES) this.manifests.delete(this.manifests.keys().next().value!);
  }

  async exists(desc: Descriptor): Promise<boolean> {
    if (isManifestLike(desc.mediaType)) return manifestExists(this.mctx, desc);
    const res = await this.session.send({ method: 'HEAD', path: `/v2/${this.repository}/blobs/${desc.digest}`, scopes: this.scopes, operation: `check blob ${desc.digest}` });
    await res.body.dump();
    if (res.status === 200) {
      const len = Number(res.headers['content-length'] ?? NaN);
      return !Number.isInteger(len) || len === desc.size;
    }
    return false;
  }

  async fetch(desc: Descriptor): Promise<Readable> {
    if (isManifestLike(desc.mediaType)) {
      const bytes = await this.fetchManifest(desc);
      const verify = new VerifyingStream(desc.digest, desc.size, `${this.name}@${desc.digest}`);
      return Readable.from([bytes]).pipe(verify);
    }
    return downloadBlob({ session: this.session, repository: this.repository, scopes: this.scopes, name: this.name }, desc);
  }

  /** Manifest bytes, verified against `desc`. */
  async fetchManifest(desc: Descriptor): Promise<Buffer> {
    const cached = this.manifests.get(desc.digest)?.bytes;
    if (cached && cached.length === desc.size) return cached;
    const { bytes } = await getManifest(this.mctx, desc.digest, desc);
    this.remember(desc, bytes);
    return bytes;
  }

  async push(desc: Descriptor, content: Readable | Buffer): Promise<void> {
    if (isManifestLike(desc.mediaType)) return this.putManifestAs(desc, content, desc.digest);
    await uploadBlob(this.uctx(desc), desc, content);
  }

  /** PUT a manifest under a tag: one request where push then tag sends two (the registry keeps it under its digest too). */
  pushReference(desc: Descriptor, bytes: Buffer, reference: string): Promise<void> {
    return this.putManifestAs(desc, bytes, reference && !isDigest(reference) ? reference : desc.digest);
  }

  /** Check a manifest's bytes against `desc`, then PUT them under `reference` (its digest or a tag). */
  private async putManifestAs(desc: Descriptor, content: Readable | Buffer, reference: string): Promise<void> {
    const bytes = Buffer.isBuffer(content) ? content : await readAllCapped(content, MAX_MANIFEST_BYTES, `${this.name}: manifest ${desc.digest}`);
    const verify = new VerifyingStream(desc.digest, desc.size, `${this.name}: manifest ${desc.digest}`);
    await readAllCapped(Readable.from([bytes]).pipe(verify), MAX_MANIFEST_BYTES, desc.digest);
    await putManifest(this.mctx, desc, bytes, reference);
    this.remember(desc, bytes);
  }

  /** Link a blob from another repository of the same registry; false when the registry would not. */
  async mount(desc: Descriptor, fromRepository: string): Promise<boolean> {
    if (fromRepository === this.repository) return false;
    return mountBlob(this.uctx(desc), desc, fromRepository);
  }

  mountSourceOf(source: Target): string | undefined {
    return source instanceof RegistryTarget && source.registry === this.registry && source.repository !== this.repository ? source.repository : undefined;
  }

  async resolve(reference: string): Promise<Descriptor> {
    const desc = await headManifest(this.mctx, reference || 'latest');
    return desc;
  }

  /** Fetch a manifest by tag or digest in one GET (none for a digest read before): descriptor plus verified bytes. */
  async resolveWithBytes(reference: string): Promise<{ desc: Descriptor; bytes: Buffer }> {
    const cached = isDigest(reference) ? this.manifests.get(reference) : undefined;
    if (cached) return { desc: { mediaType: cached.mediaType, digest: reference, size: cached.bytes.length }, bytes: cached.bytes };
    const got = await getManifest(this.mctx, reference || 'latest');
    this.remember(got.desc, got.bytes);
    return got;
  }

  async tag(desc: Descriptor, reference: string): Promise<void> {
    if (!reference || isDigest(reference)) return; // stored under its digest already
    const bytes = await this.fetchManifest(desc);
    await putManifest(this.mctx, desc, bytes, reference);
  }

  tags(pageSize?: number): Promise<string[]> {
    return listTags(this.mctx, pageSize);
  }

  delete(desc: Descriptor): Promise<void> {
    this.manifests.delete(desc.digest);
    return deleteManifest(this.mctx, desc.digest);
  }

  /** The referrers API; undefined when the registry has none (see src/attach/referrers.ts). */
  referrers(subject: Descriptor, artifactType?: string): Promise<Descriptor[] | undefined> {
    return referrersFromApi(this.mctx, subject, artifactType);
  }

  /** PUT a manifest with a subject; true when the registry answered `OCI-Subject` (it indexes referrers itself). */
  async pushReferrer(desc: Descriptor, manifestBytes: Buffer): Promise<boolean> {
    const { subjectAccepted } = await putManifest(this.mctx, desc, manifestBytes, desc.digest);
    this.remember(desc, manifestBytes);
    return subjectAccepted;
  }
}
