/**
 * The attachments step of a copy (oras-go ExtendedCopy, one level deep): what is attached to the
 * copied manifests — cosign's `sha256-<hex>.sig`/`.att`/`.sbom` tags and OCI referrers
 * (signatures, attestations, SBOMs) — copied along so the copy verifies where it lands.
 */
import { errorMessage } from '../errors.js';
import type { GraphCopier } from '../oci/copy-graph.js';
import { fetchBytes, tryResolve } from '../oci/target.js';
import type { Descriptor } from '../oci/types.js';
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

/** Copy what is attached to each of `subjects` with `copier` (same source and destination as the image). */
export async function copyAttachments(copier: GraphCopier, subjects: Descriptor[]): Promise<AttachmentsResult> {
  const { src, dst } = copier;
  const out: AttachmentsResult = { attached: [], warnings: [] };
  // Looking up what is attached may fail where the image itself did not (a registry that answers
  // 401/403 for a missing tag): that is reported, and the copied image stays.
  const lookup = async <T>(what: string, fn: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await fn();
    } catch (e) {
      out.warnings.push(`${src.name}: could not look up ${what}: ${errorMessage(e)}`);
      return undefined;
    }
  };
  for (const subject of subjects) {
    for (const suffix of ATTACHMENT_SUFFIXES) {
      const tag = attachmentTag(subject.digest, suffix);
      const desc = await lookup(`tag ${tag}`, () => tryResolve(src, tag));
      if (!desc) continue;
      await copier.copy(desc);
      await dst.tag(desc, tag);
      out.attached.push({ subject: subject.digest, kind: 'tag', name: tag, digest: desc.digest });
    }
    for (const ref of (await lookup(`the referrers of ${subject.digest}`, () => listReferrers(src, subject))) ?? []) {
      const bytes = await fetchBytes(src, ref);
      // The referrer's children first; the manifest itself goes through attachReferrer (it indexes it).
      await copier.copyChildren(ref, bytes);
      await attachReferrer(dst, bytes, ref);
      out.attached.push({ subject: subject.digest, kind: 'referrer', name: ref.artifactType ?? ref.mediaType, digest: ref.digest });
    }
  }
  return out;
}
