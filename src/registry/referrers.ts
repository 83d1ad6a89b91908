import { UserError } from '../errors.js';
import { digestOf, parseDigest, readAllCapped } from '../oci/digest.js';
import { MediaType } from '../oci/mediatypes.js';
import { IndexSchema, MAX_MANIFEST_BYTES, parseJson, type Descriptor, type Index } from '../oci/types.js';
import { header, unexpected } from './client.js';
import { getManifest, putManifest, type ManifestContext } from './manifests.js';

/** The tag that holds the referrers index on registries without the referrers API: `sha256-<hex>`. */
export function referrersTag(subjectDigest: string): string {
  const { algorithm, hex } = parseDigest(subjectDigest);
  return `${algorithm}-${hex}`.slice(0, 128);
}

/** Descriptor of a referrer as it appears in a referrers index (artifactType and annotations lifted). */
export function referrerDescriptor(manifestBytes: Buffer, desc: Descriptor): Descriptor {
  const m = JSON.parse(manifestBytes.toString('utf8')) as { artifactType?: string; config?: { mediaType?: string }; annotations?: Record<string, string> };
  const out: Descriptor = { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
  const artifactType = m.artifactType ?? m.config?.mediaType;
  if (artifactType) out.artifactType = artifactType;
  if (m.annotations && Object.keys(m.annotations).length) out.annotations = m.annotations;
  return out;
}

function filter(list: Descriptor[], artifactType: string | undefined): Descriptor[] {
  return artifactType ? list.filter((d) => d.artifactType === artifactType) : list;
}

async function readFallbackIndex(ctx: ManifestContext, subject: Descriptor): Promise<{ index: Index; desc?: Descriptor }> {
  try {
    const got = await getManifest(ctx, referrersTag(subject.digest));
    const index = parseJson(IndexSchema, got.bytes, `${ctx.name}:${referrersTag(subject.digest)}`);
    return { index, desc: got.desc };
  } catch (e) {
    if (e instanceof UserError && /manifest not found/.test(e.message)) return { index: { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] } };
    throw e;
  }
}

/**
 * Manifests whose `subject` is `subject`: the referrers API when the registry has it, else the
 * `sha256-<hex>` fallback tag (registry 2.8 has no referrers endpoint and answers a plain 404).
 */
export async function listReferrers(ctx: ManifestContext, subject: Descriptor, artifactType?: string): Promise<Descriptor[]> {
  const q = artifactType ? `?artifactType=${encodeURIComponent(artifactType)}` : '';
  const res = await ctx.session.send({
    method: 'GET',
    path: `/v2/${ctx.repository}/referrers/${subject.digest}${q}`,
    headers: { accept: MediaType.OciIndex },
    scopes: ctx.scopes,
    operation: `list referrers of ${subject.digest}`,
  });
  const ct = header(res, 'content-type') ?? '';
  if (res.status === 200 && ct.includes(MediaType.OciIndex)) {
    const bytes = await readAllCapped(res.body, MAX_MANIFEST_BYTES, `${ctx.name}: referrers of ${subject.digest}`);
    const index = parseJson(IndexSchema, bytes, `${ctx.name}: referrers of ${subject.digest}`);
    return filter(index.manifests, artifactType);
  }
  if (res.status !== 200 && res.status !== 404 && res.status !== 400 && res.status !== 405) throw await unexpected(ctx.session.registry, res, `list referrers of ${subject.digest}`);
  await res.body.dump();
  const { index } = await readFallbackIndex(ctx, subject);
  return filter(index.manifests, artifactType);
}

/**
 * Store a manifest that names `subject`, and make it findable: if the registry does not process
 * `subject` itself (no `OCI-Subject` answer), add it to the fallback index (read-modify-write).
 */
export async function attachReferrer(ctx: ManifestContext, manifestBytes: Buffer, desc: Descriptor): Promise<void> {
  const raw = JSON.parse(manifestBytes.toString('utf8')) as { subject?: Descriptor };
  if (!raw.subject) throw new UserError(`${ctx.name}: manifest ${desc.digest} has no subject; it cannot be attached as a referrer`);
  const { subjectAccepted } = await putManifest(ctx, desc, manifestBytes, desc.digest);
  if (subjectAccepted) return;
  const subject = raw.subject;
  const entry = referrerDescriptor(manifestBytes, desc);
  // Two writers may race here; re-read and retry a few times until our entry is in the index we wrote.
  for (let attempt = 0; attempt < 3; attempt++) {
    const { index } = await readFallbackIndex(ctx, subject);
    if (index.manifests.some((d) => d.digest === desc.digest)) return;
    const next: Index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [...index.manifests, entry] };
    const bytes = Buffer.from(JSON.stringify(next));
    await putManifest(ctx, { mediaType: MediaType.OciIndex, digest: digestOf(bytes), size: bytes.length }, bytes, referrersTag(subject.digest));
    const check = await readFallbackIndex(ctx, subject);
    if (check.index.manifests.some((d) => d.digest === desc.digest)) return;
  }
  throw new UserError(`${ctx.name}: could not record referrer ${desc.digest} in ${referrersTag(subject.digest)} (concurrent updates)`, 'try again');
}
