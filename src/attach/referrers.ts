/**
 * Referrers (OCI 1.1) over any Target: the one place that lists and attaches them and keeps the
 * `sha256-<hex>` fallback index (distribution-spec "referrers tag schema"; oras-go
 * registry/remote/referrers.go). A store that indexes referrers itself (`ReferrersLister`: a
 * registry with the referrers API, or one that answers `OCI-Subject`) is used through that;
 * otherwise — OCI layouts, registry 2.8 — the fallback index is updated read-modify-write.
 *
 * One behaviour for the index: one entry per digest, sorted by digest (deterministic bytes, as
 * go-containerregistry writes it), and safe under concurrent writers: writers in this process are
 * serialised per index, and each write is read back and retried until the entry is in the index
 * that stands (registries offer no conditional tag update to do better across processes).
 */
import { KbError, UserError } from '../errors.js';
import { digestOf } from '../oci/digest.js';
import { MediaType, isManifestMediaType } from '../oci/mediatypes.js';
import { fetchBytes, listsReferrers, pushTagged, tryResolveWithBytes, type Target } from '../oci/target.js';
import { MAX_MANIFEST_BYTES, parseIndex, type Descriptor, type Index } from '../oci/types.js';
import { referrersTag } from './tags.js';

/** Times one attach re-reads and rewrites the fallback index when a concurrent writer replaced it. */
const INDEX_WRITE_ATTEMPTS = 5;

/** Descriptor for a referrers index entry: artifactType (or config media type) and annotations lifted. */
export function referrerEntry(manifestBytes: Buffer, desc: Descriptor): Descriptor {
  const m = JSON.parse(manifestBytes.toString('utf8')) as { artifactType?: unknown; config?: { mediaType?: unknown }; annotations?: unknown };
  const out: Descriptor = { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
  const at = typeof m.artifactType === 'string' ? m.artifactType : typeof m.config?.mediaType === 'string' ? m.config.mediaType : undefined;
  if (at) out.artifactType = at;
  if (m.annotations && typeof m.annotations === 'object' && Object.keys(m.annotations).length) out.annotations = m.annotations as Record<string, string>;
  return out;
}

/** The fallback index of `subject`, or undefined when there is none. */
async function readFallbackIndex(target: Target, subject: Descriptor): Promise<Index | undefined> {
  const tag = referrersTag(subject.digest);
  const got = await tryResolveWithBytes(target, tag);
  if (!got) return undefined;
  const { desc } = got;
  if (desc.mediaType !== MediaType.OciIndex) throw new UserError(`${target.name}:${tag}: the referrers tag holds ${desc.mediaType}, not an OCI index`, `delete the tag ${tag} and sign again`);
  if (desc.size > MAX_MANIFEST_BYTES) throw new UserError(`${target.name}:${tag}: the referrers index is ${desc.size} bytes, over the ${MAX_MANIFEST_BYTES}-byte limit`);
  return parseIndex(got.bytes ?? (await fetchBytes(target, desc)), desc.mediaType, `${target.name}:${tag}`);
}

function byDigest(a: Descriptor, b: Descriptor): number {
  return a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0;
}

/**
 * Referrers of `subject` (optionally only of one artifactType). A store with the referrers API is
 * asked through it and, at the same time, for the fallback index: registries without the API
 * (registry 2.8, Docker Hub) then cost one round trip instead of two, and one with it answers a
 * request more (a tag that is not there). The fallback's answer, or failure, counts only when the
 * API has none.
 */
export async function listReferrers(target: Target, subject: Descriptor, artifactType?: string): Promise<Descriptor[]> {
  const fallback = readFallbackIndex(target, subject);
  let own: Descriptor[] | undefined;
  if (listsReferrers(target)) {
    fallback.catch(() => undefined); // reported below only when it is used
    own = await target.referrers(subject, artifactType);
  }
  const all = own ?? (await fallback)?.manifests ?? [];
  return artifactType ? all.filter((d) => d.artifactType === artifactType) : all;
}

/** Writers in this process, per fallback index: each waits for the one before it. */
const indexWriters = new Map<string, Promise<void>>();

async function serialised(key: string, run: () => Promise<void>): Promise<void> {
  const before = indexWriters.get(key) ?? Promise.resolve();
  const mine = before.then(run, run);
  const settled = mine.catch(() => undefined);
  indexWriters.set(key, settled);
  try {
    await mine;
  } finally {
    if (indexWriters.get(key) === settled) indexWriters.delete(key);
  }
}

/** Add `entry` to the fallback index of `subject`: sorted, one per digest, re-read until it stands. */
async function addToFallbackIndex(target: Target, subject: Descriptor, entry: Descriptor): Promise<void> {
  const tag = referrersTag(subject.digest);
  await serialised(`${target.name}\n${tag}`, async () => {
    for (let attempt = 0; attempt < INDEX_WRITE_ATTEMPTS; attempt++) {
      const index = await readFallbackIndex(target, subject);
      if (index?.manifests.some((d) => d.digest === entry.digest)) return;
      const manifests = [...(index?.manifests ?? []).filter((d) => d.digest !== entry.digest), entry].sort(byDigest);
      const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests } satisfies Index));
      const desc: Descriptor = { mediaType: MediaType.OciIndex, digest: digestOf(bytes), size: bytes.length };
      await pushTagged(target, desc, bytes, tag);
      // Another writer may have replaced the index between our read and our write: read it back.
      const check = await readFallbackIndex(target, subject);
      if (check?.manifests.some((d) => d.digest === entry.digest)) return;
    }
    throw new KbError('CONFLICT', `${target.name}: could not record referrer ${entry.digest} in ${tag} (concurrent updates)`, { hint: 'try again' });
  });
}

/**
 * Store a manifest that has a `subject` and make it discoverable: through the store's own
 * referrers index when it keeps one, else through the fallback index. Idempotent.
 */
export async function attachReferrer(target: Target, manifestBytes: Buffer, desc: Descriptor): Promise<void> {
  if (!isManifestMediaType(desc.mediaType)) throw new UserError(`referrer ${desc.digest}: ${desc.mediaType} is not a manifest`);
  const raw = JSON.parse(manifestBytes.toString('utf8')) as { subject?: Descriptor };
  if (!raw.subject) throw new UserError(`${target.name}: manifest ${desc.digest} has no subject; it cannot be attached as a referrer`);
  if (listsReferrers(target)) {
    if (await target.pushReferrer(desc, manifestBytes)) return;
  } else {
    await target.push(desc, manifestBytes);
  }
  await addToFallbackIndex(target, raw.subject, referrerEntry(manifestBytes, desc));
}
