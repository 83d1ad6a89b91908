import { KbError, UserError } from '../errors.js';
import { digestOf, isDigest, parseDigest } from '../oci/digest.js';
import { MANIFEST_ACCEPT, MediaType } from '../oci/mediatypes.js';
import { MAX_MANIFEST_BYTES, parseAnyManifest, type Descriptor } from '../oci/types.js';
import { header, unexpected, type RegistrySession } from './client.js';

export interface ManifestContext {
  session: RegistrySession;
  repository: string;
  scopes: string[];
  name: string;
}

/** OCI artifact manifests from image-spec 1.1 release candidates still travel through registries. */
const ARTIFACT_MANIFEST = 'application/vnd.oci.artifact.manifest.v1+json';
export const ACCEPT = `${MANIFEST_ACCEPT}, ${ARTIFACT_MANIFEST}`;

export function isManifestLike(mediaType: string): boolean {
  return (
    mediaType === MediaType.OciManifest || mediaType === MediaType.OciIndex || mediaType === MediaType.DockerManifest || mediaType === MediaType.DockerManifestList || mediaType === ARTIFACT_MANIFEST
  );
}

function manifestPath(repository: string, reference: string): string {
  return `/v2/${repository}/manifests/${reference}`;
}

function baseMediaType(contentType: string | undefined): string | undefined {
  const mt = contentType?.split(';')[0]?.trim();
  return mt || undefined;
}

/** Declared media type from the body when the Content-Type header is generic or missing. */
function mediaTypeOf(bytes: Buffer, contentType: string | undefined, what: string): string {
  const ct = baseMediaType(contentType);
  if (ct && isManifestLike(ct)) return ct;
  const parsed = parseAnyManifest(bytes, undefined, what);
  return parsed.kind === 'index' ? (parsed.index.mediaType ?? MediaType.OciIndex) : (parsed.manifest.mediaType ?? MediaType.OciManifest);
}

export interface FetchedManifest {
  desc: Descriptor;
  bytes: Buffer;
}

/**
 * GET a manifest by tag or digest with the full Accept list, capped at 4 MiB, and check its bytes:
 * against the digest asked for, against `Docker-Content-Digest`, and that it parses as a manifest.
 */
export async function getManifest(ctx: ManifestContext, reference: string, expected?: Descriptor): Promise<FetchedManifest> {
  const what = `${ctx.name}:${reference}`.replace(/:sha256:/, '@sha256:');
  const { res, bytes } = await ctx.session.sendAndRead(
    { method: 'GET', path: manifestPath(ctx.repository, reference), headers: { accept: ACCEPT }, scopes: ctx.scopes, operation: `get manifest ${reference}` },
    MAX_MANIFEST_BYTES,
    `${what}: manifest`,
    (r) => r.status === 200,
  );
  if (res.status === 404) {
    await res.body.dump();
    throw new KbError('NOT_FOUND', `${what}: manifest not found`, { hint: isDigest(reference) ? undefined : 'check the repository and tag (kbundle inspect shows what is there)' });
  }
  if (res.status !== 200 || !bytes) throw await unexpected(ctx.session.registry, res, `get manifest ${reference}`);
  const wanted = expected?.digest ?? (isDigest(reference) ? reference : undefined);
  const headerDigest = header(res, 'docker-content-digest');
  if (wanted) {
    const actual = digestOf(bytes, parseDigest(wanted).algorithm);
    if (actual !== wanted)
      throw new KbError('DIGEST_MISMATCH', `${what}: the registry sent a manifest whose digest is ${actual}`, {
        hint: 'the registry or something between it and you altered the manifest; nothing was written',
      });
  }
  if (headerDigest && isDigest(headerDigest)) {
    const actual = digestOf(bytes, parseDigest(headerDigest).algorithm);
    if (actual !== headerDigest)
      throw new KbError('DIGEST_MISMATCH', `${what}: Docker-Content-Digest says ${headerDigest} but the manifest bytes hash to ${actual}`, {
        hint: 'the registry or a proxy altered the manifest; nothing was written',
      });
  }
  if (expected && bytes.length !== expected.size) throw new UserError(`${what}: manifest is ${bytes.length} bytes, the descriptor says ${expected.size}`);
  const mediaType = expected?.mediaType ?? mediaTypeOf(bytes, header(res, 'content-type'), what);
  // Parse now so a malformed manifest fails here, not halfway through a copy.
  if (mediaType !== ARTIFACT_MANIFEST) parseAnyManifest(bytes, mediaType, `${what}: manifest`);
  const digest = wanted ?? (headerDigest && isDigest(headerDigest) && headerDigest.startsWith('sha256:') ? headerDigest : digestOf(bytes));
  return { desc: { mediaType, digest, size: bytes.length }, bytes };
}

/** HEAD a manifest: digest, media type and size without the body (falls back to GET). */
export async function headManifest(ctx: ManifestContext, reference: string): Promise<Descriptor> {
  const res = await ctx.session.send({ method: 'HEAD', path: manifestPath(ctx.repository, reference), headers: { accept: ACCEPT }, scopes: ctx.scopes, operation: `check manifest ${reference}` });
  await res.body.dump();
  if (res.status === 404) {
    const what = isDigest(reference) ? `${ctx.name}@${reference}` : `${ctx.name}:${reference}`;
    throw new KbError('NOT_FOUND', `${what}: manifest not found`, { hint: isDigest(reference) ? undefined : 'check the repository and tag' });
  }
  const digest = header(res, 'docker-content-digest');
  const mediaType = baseMediaType(header(res, 'content-type'));
  const size = Number(header(res, 'content-length') ?? NaN);
  if (res.status === 200 && digest && isDigest(digest) && mediaType && isManifestLike(mediaType) && Number.isInteger(size) && (!isDigest(reference) || digest === reference)) {
    if (size > MAX_MANIFEST_BYTES) throw new UserError(`${ctx.name}:${reference}: manifest is ${size} bytes, over the ${MAX_MANIFEST_BYTES}-byte limit`);
    return { mediaType, digest, size };
  }
  return (await getManifest(ctx, reference)).desc;
}

export async function manifestExists(ctx: ManifestContext, desc: Descriptor): Promise<boolean> {
  const res = await ctx.session.send({ method: 'HEAD', path: manifestPath(ctx.repository, desc.digest), headers: { accept: ACCEPT }, scopes: ctx.scopes, operation: `check manifest ${desc.digest}` });
  await res.body.dump();
  if (res.status === 200) return true;
  if (res.status === 404) return false;
  throw await unexpected(ctx.session.registry, res, `check manifest ${desc.digest}`);
}

/** PUT manifest bytes under a tag or their digest, with the declared Content-Type. */
export async function putManifest(ctx: ManifestContext, desc: Descriptor, bytes: Buffer, reference: string): Promise<{ subjectAccepted: boolean }> {
  if (bytes.length > MAX_MANIFEST_BYTES) throw new UserError(`${ctx.name}: manifest ${desc.digest} is ${bytes.length} bytes, over the ${MAX_MANIFEST_BYTES}-byte limit registries accept`);
  const res = await ctx.session.send({
    method: 'PUT',
    path: manifestPath(ctx.repository, reference),
    headers: { 'content-type': desc.mediaType },
    body: bytes,
    scopes: ctx.scopes,
    operation: `push manifest ${isDigest(reference) ? reference : `${desc.digest} as ${reference}`}`,
  });
  if (res.status !== 201 && res.status !== 200 && res.status !== 202) {
    const err = await unexpected(ctx.session.registry, res, `push manifest ${desc.digest}`, undefined);
    if (err.hasCode('MANIFEST_BLOB_UNKNOWN') || err.hasCode('BLOB_UNKNOWN')) {
      throw new KbError('REFUSED', err.message, { hint: 'the registry lacks a blob this manifest refers to', cause: err });
    }
    throw err;
  }
  await res.body.dump();
  const got = header(res, 'docker-content-digest');
  if (got && got.startsWith('sha256:') && desc.digest.startsWith('sha256:') && got !== desc.digest) {
    throw new UserError(`${ctx.name}: the registry stored manifest ${desc.digest} as ${got}`, 'the registry rewrote the manifest; refusing to continue');
  }
  return { subjectAccepted: header(res, 'oci-subject') !== undefined };
}

export async function deleteManifest(ctx: ManifestContext, digest: string): Promise<void> {
  const res = await ctx.session.send({ method: 'DELETE', path: manifestPath(ctx.repository, digest), scopes: ctx.scopes, operation: `delete manifest ${digest}` });
  if (res.status === 202 || res.status === 200 || res.status === 204) {
    await res.body.dump();
    return;
  }
  if (res.status === 405) {
    await res.body.dump();
    throw new UserError(`${ctx.name}: the registry does not allow deleting manifests`, 'enable storage.delete on the registry');
  }
  if (res.status === 404) {
    await res.body.dump();
    throw new KbError('NOT_FOUND', `${ctx.name}@${digest}: manifest not found`);
  }
  throw await unexpected(ctx.session.registry, res, `delete manifest ${digest}`);
}
