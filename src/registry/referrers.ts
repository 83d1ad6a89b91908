import { MediaType } from '../oci/mediatypes.js';
import { MAX_MANIFEST_BYTES, parseIndex, type Descriptor } from '../oci/types.js';
import { header, unexpected } from './client.js';
import type { ManifestContext } from './manifests.js';

/**
 * `GET /v2/<repo>/referrers/<digest>` (OCI distribution 1.1). Undefined when the registry has no
 * referrers API (registry 2.8 answers a plain 404; others 400/405): the caller then reads the
 * `sha256-<hex>` fallback index (src/attach/referrers.ts owns that format).
 */
export async function referrersFromApi(ctx: ManifestContext, subject: Descriptor, artifactType?: string): Promise<Descriptor[] | undefined> {
  const q = artifactType ? `?artifactType=${encodeURIComponent(artifactType)}` : '';
  const isIndex = (r: { status: number; headers: Record<string, string | string[] | undefined> }): boolean => r.status === 200 && (header(r, 'content-type') ?? '').includes(MediaType.OciIndex);
  const { res, bytes } = await ctx.session.sendAndRead(
    {
      method: 'GET',
      path: `/v2/${ctx.repository}/referrers/${subject.digest}${q}`,
      headers: { accept: MediaType.OciIndex },
      scopes: ctx.scopes,
      operation: `list referrers of ${subject.digest}`,
    },
    MAX_MANIFEST_BYTES,
    `${ctx.name}: referrers of ${subject.digest}`,
    isIndex,
  );
  if (bytes) {
    const index = parseIndex(bytes, MediaType.OciIndex, `${ctx.name}: referrers of ${subject.digest}`);
    // Filtering by artifactType is optional for registries: filter again here.
    return artifactType ? index.manifests.filter((d) => d.artifactType === artifactType) : index.manifests;
  }
  if (res.status !== 200 && res.status !== 404 && res.status !== 400 && res.status !== 405) throw await unexpected(ctx.session.registry, res, `list referrers of ${subject.digest}`);
  await res.body.dump();
  return undefined;
}
