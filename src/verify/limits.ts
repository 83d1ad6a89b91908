/**
 * Hard caps for everything a registry (or a copied layout) hands the verifier. They apply before
 * parsing, so a hostile registry costs bounded time and memory (cosign / sigstore-go advisories:
 * CVE-2023-46737, CVE-2024-29902, CVE-2024-29903).
 */
export const Limits = {
  /** Signatures examined per image: referrer bundles plus legacy layers (cosign: 128). */
  maxSignatures: 128,
  /** Layers in a legacy `.sig` manifest (cosign: 1000). Over this the manifest is refused. */
  maxSignatureLayers: 1000,
  /** Referrer descriptors read from a referrers index before filtering. */
  maxReferrers: 10_000,
  /** A simple-signing payload or a Sigstore bundle blob. Real ones are 0.3–20 KiB. */
  maxSignatureBlob: 1 << 20,
  /** An attestation bundle or DSSE envelope: an SBOM predicate can be megabytes. */
  maxAttestationBlob: 16 << 20,
  /** Attestations examined per image and format. */
  maxAttestations: 128,
  /** Legacy annotations (certificate, chain, Rekor bundle, timestamp). */
  maxAnnotation: 64 * 1024,
  /** Per bundle (sigstore-go: 32 / 32 / 1024). */
  maxTlogEntries: 32,
  maxTimestamps: 32,
  maxSubjects: 1024,
  maxCertificates: 10,
  maxCertificateBytes: 32 * 1024,
  maxTimestampBytes: 64 * 1024,
  maxInclusionHashes: 64,
  maxCheckpointBytes: 8 * 1024,
  maxTrustedRootBytes: 4 << 20,
} as const;
