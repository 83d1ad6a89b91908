/**
 * Tag names that hold what is attached to an image, derived from the subject's digest:
 * cosign's `sha256-<hex>.sig` / `.att` / `.sbom` (ociremote.SignatureTag, AttestationTag, SBOMTag)
 * and the OCI 1.1 referrers fallback index `sha256-<hex>` (distribution-spec "referrers tag schema").
 */
import { parseDigest } from '../oci/digest.js';

/** cosign's tag suffixes: signatures, attestations, SBOMs. */
export const ATTACHMENT_SUFFIXES = ['sig', 'att', 'sbom'] as const;
export type AttachmentSuffix = (typeof ATTACHMENT_SUFFIXES)[number];

/** `<alg>-<hex>`, truncated to the 128 characters a tag may have. */
export function referrersTag(subjectDigest: string): string {
  const { algorithm, hex } = parseDigest(subjectDigest, 'referrers tag');
  return `${algorithm}-${hex}`.slice(0, 128);
}

/** `sha256-<hex>.<suffix>`: where cosign keeps signatures, attestations or SBOMs of `digest`. */
export function attachmentTag(digest: string, suffix: AttachmentSuffix): string {
  const { algorithm, hex } = parseDigest(digest, `${suffix} tag`);
  return `${algorithm}-${hex}.${suffix}`;
}

/** Tag of the legacy signature image: `sha256-<hex>.sig` (cosign ociremote.SignatureTag). */
export function signatureTag(digest: string): string {
  return attachmentTag(digest, 'sig');
}

const ATTACHMENT_TAG = /^sha(256|512)-[a-f0-9]{64,128}(\.(sig|att|sbom))?$/;

/** A tag that holds something attached to an image (not an image to pick by default). */
export function isAttachmentTag(tag: string): boolean {
  return ATTACHMENT_TAG.test(tag);
}
