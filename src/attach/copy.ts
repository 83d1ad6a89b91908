/**
 * The attachments step of a copy (oras-go ExtendedCopy, one level deep): what is attached to the
 * copied manifests — cosign's `sha256-<hex>.sig`/`.att`/`.sbom` tags and OCI referrers
 * (signatures, attestations, SBOMs) — copied along so the copy verifies where it lands.
 */
import { errorMessage } from '../errors.js';
import type { GraphCopier } from '../oci/copy-graph.js';
import { fetchBytes, tryResolveWithBytes } from '../oci/target.js';
import type { Descriptor } from '../oci/types.js';
import { mapPool } from '../util/pool.js';
import { attachReferrer, listReferrers } from './referrers.js';
import { ATTACHMENT_SUFFIXES, attachmentTag } from './tags.js';

export interface CopiedAttachment {
  subject: string;
  /** `tag`: a cosign tag, by name; `referrer`: an OCI referrer, by artifact type. */
  kind: 'tag' | 'referrer';
  name: string;
  digest: string;
}

export interface AttachmentsResult {
  attached: CopiedAttachment[];
  /** Attachments that could not be looked up (the image itself was copied). */
  warnings: string[];
}

/** Lookups of attachments in flight at once: each is a request or two the copy would otherwise wait for in turn. */
const LOOKUPS_AT_ONCE = 8;

/**
 * Copy what is attached to each of `subjects` with `copier` (same source and destination as the
 * image). All lookups (each subject's cosign tags and referrers) run first, a few at once: on an
 * image with nothing attached they are all there is to this step, five requests per subject that
 * used to wait for each other. The copies then run one after another, in the order of the lookups.
 */
export async function copyAttachments(copier: GraphCopier, subjects: Descriptor[]): Promise<AttachmentsResult> {
  const { src, dst } = copier;
  /** A cosign tag (`tag`) or, without one, the subject's referrers. */
  type Lookup = { subject: Descriptor; tag?: string };
  const lookups: Lookup[] = subjects.flatMap((subject) => [...ATTACHMENT_SUFFIXES.map((suffix) => ({ subject, tag: attachmentTag(subject.digest, suffix) })), { subject }]);
  // Looking up what is attached may fail where the image itself did not (a registry that answers
  // 401/403 for a missing tag): that is reported, and the copied image stays.
  type Found = { tagged?: Descriptor; referrers: Descriptor[]; warning?: undefined } | { warning: string };
  const found = await mapPool(lookups, LOOKUPS_AT_ONCE, async (l): Promise<Found> => {
    try {
      const { subject, tag } = l;
      // With the bytes where the source returns them (one GET): the copy then reads them from memory.
      if (tag !== undefined) return { tagged: (await tryResolveWithBytes(src, tag))?.desc, referrers: [] };
      return { referrers: await listReferrers(src, subject) };
    } catch (e) {
      return { warning: `${src.name}: could not look up ${l.tag !== undefined ? `tag ${l.tag}` : `the referrers of ${l.subject.digest}`}: ${errorMessage(e)}` };
    }
  });
  const out: AttachmentsResult = { attached: [], warnings: [] };
  for (const [i, { subject, tag }] of lookups.entries()) {
    const f = found[i]!;
    if (f.warning !== undefined) {
      out.warnings.push(f.warning);
      continue;
    }
    if (tag !== undefined && f.tagged) {
      if (!(await copier.copy(f.tagged, undefined, tag))) await dst.tag(f.tagged, tag);
      out.attached.push({ subject: subject.digest, kind: 'tag', name: tag, digest: f.tagged.digest });
    }
    for (const ref of f.referrers) {
      const bytes = await fetchBytes(src, ref);
      // The referrer's children first; the manifest itself goes through attachReferrer (it indexes it).
      await copier.copyChildren(ref, bytes);
      await attachReferrer(dst, bytes, ref);
      out.attached.push({ subject: subject.digest, kind: 'referrer', name: ref.artifactType ?? ref.mediaType, digest: ref.digest });
    }
  }
  return out;
}
