/**
 * Referrers over any Target. A transport that knows a better way (a registry with the OCI 1.1
 * referrers API) offers `referrers()` / `attachReferrer()` and is used through them; otherwise —
 * OCI layout directories, registries without the API — the distribution-spec fallback is used:
 * tag `sha256-<hex>` holding an OCI index of referrer descriptors, updated read-modify-write,
 * deduplicated and sorted by digest.
 */
import { UserError } from '../errors.js';
import { digestOf, parseDigest } from '../oci/digest.js';
import { MediaType, isManifestMediaType } from '../oci/mediatypes.js';
import { IndexSchema, MAX_MANIFEST_BYTES, parseJson, type Descriptor, type Index } from '../oci/types.js';
import { fetchBytes, type Target } from '../store/target.js';

/** What RegistryTarget offers beyond Target (duck-typed: nothing here imports the registry). */
export interface ReferrersCapable {
  referrers?(subject: Descriptor, artifactType?: string): Promise<Descriptor[]>;
  attachReferrer?(manifestBytes: Buffer, desc: Descriptor): Promise<void>;
}

export function referrersTag(subjectDigest: string): string {
  const { algorithm, hex } = parseDigest(subjectDigest, 'referrers tag');
  return `${algorithm}-${hex}`.slice(0, 128);
}

/** "Nothing under that name" from any Target, as opposed to a transport failure. */
export function isNotFound(e: unknown): boolean {
  return e instanceof UserError && /not found|no image tagged|no manifest|manifest unknown|NAME_UNKNOWN|MANIFEST_UNKNOWN|HTTP 404/i.test(e.message);
}

/** Resolve a tag; undefined when it does not exist. Transport errors propagate. */
export async function tryResolve(target: Target, reference: string): Promise<Descriptor | undefined> {
  try {
    return await target.resolve(reference);
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
}

/** Descriptor for a referrers index entry: artifactType (or config media type) and annotations lifted. */
export function referrerEntry(manifestBytes: Buffer, desc: Descriptor): Descriptor {
  const m = JSON.parse(manifestBytes.toString('utf8')) as { artifactType?: unknown; config?: { mediaType?: unknown }; annotations?: unknown };
  const out: Descriptor = { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
  const at = typeof m.artifactType === 'string' ? m.artifactType : typeof m.config?.mediaType === 'string' ? m.config.mediaType : undefined;
  if (at) out.artifactType = at;
  if (m.annotations && typeof m.annotations === 'object' && Object.keys(m.annotations).length) out.annotations = m.annotations as Record<string, string>;
  return out;
}

async function readFallbackIndex(target: Target, subject: Descriptor): Promise<Index | undefined> {
  const tag = referrersTag(subject.digest);
  const desc = await tryResolve(target, tag);
  if (!desc) return undefined;
  if (desc.mediaType !== MediaType.OciIndex) throw new UserError(`${target.name}:${tag}: the referrers tag holds ${desc.mediaType}, not an OCI index`, `delete the tag ${tag} and sign again`);
  if (desc.size > MAX_MANIFEST_BYTES) throw new UserError(`${target.name}:${tag}: the referrers index is ${desc.size} bytes, over the ${MAX_MANIFEST_BYTES}-byte limit`);
  return parseJson(IndexSchema, await fetchBytes(target, desc), `${target.name}:${tag}`);
}

/** Referrers of `subject` (optionally only of one artifactType). */
export async function listReferrers(target: Target & ReferrersCapable, subject: Descriptor, artifactType?: string): Promise<Descriptor[]> {
  if (typeof target.referrers === 'function') return target.referrers(subject, artifactType);
  const index = await readFallbackIndex(target, subject);
  const all = index?.manifests ?? [];
  return artifactType ? all.filter((d) => d.artifactType === artifactType) : all;
}

/**
 * Store a manifest that has a `subject` and make it discoverable. Pushing is idempotent; the
 * fallback index keeps one entry per digest, sorted by digest (as go-containerregistry writes it).
 */
export async function attachReferrer(target: Target & ReferrersCapable, manifestBytes: Buffer, desc: Descriptor): Promise<void> {
  if (!isManifestMediaType(desc.mediaType)) throw new UserError(`referrer ${desc.digest}: ${desc.mediaType} is not a manifest`);
  if (typeof target.attachReferrer === 'function') {
    await target.attachReferrer(manifestBytes, desc);
    return;
  }
  const raw = JSON.parse(manifestBytes.toString('utf8')) as { subject?: Descriptor };
  if (!raw.subject) throw new UserError(`referrer ${desc.digest} has no subject`);
  await target.push(desc, manifestBytes);
  const index = (await readFallbackIndex(target, raw.subject)) ?? { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] };
  if (index.manifests.some((d) => d.digest === desc.digest)) return;
  const manifests = [...index.manifests, referrerEntry(manifestBytes, desc)].sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
  const next: Index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests };
  const bytes = Buffer.from(JSON.stringify(next));
  const indexDesc: Descriptor = { mediaType: MediaType.OciIndex, digest: digestOf(bytes), size: bytes.length };
  await target.push(indexDesc, bytes);
  await target.tag(indexDesc, referrersTag(raw.subject.digest));
}
