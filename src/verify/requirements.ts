import type { KeyObject } from 'node:crypto';
import type { Matcher } from './identity.js';
import type { TrustedRoot } from './trust.js';

export type SignatureFormat = 'bundle' | 'legacy';

/** Signed with one of these keys (cosign `--key`). */
export interface KeyRequirement {
  kind: 'key';
  /** For messages, e.g. the key file name. */
  name: string;
  keys: KeyObject[];
  /** Require a verified transparency-log entry (needs `trustedRoot` with the log's key). */
  tlog: boolean;
  trustedRoot?: TrustedRoot;
}

/** Signed with a Fulcio-style certificate for this identity (cosign `--certificate-identity …`). */
export interface KeylessRequirement {
  kind: 'keyless';
  name: string;
  identity: Matcher;
  issuer: Matcher;
  trustedRoot: TrustedRoot;
  /** Require a verified transparency-log entry; when false a verified RFC 3161 timestamp is needed instead. */
  tlog: boolean;
  /** Require an embedded SCT from a CT log of the trusted root. */
  ctlog: boolean;
}

export type SignerRequirement = KeyRequirement | KeylessRequirement;

/** An attestation an image must carry: a statement of this predicate type, signed by one of `signers`. */
export interface AttestationRequirement {
  /** Predicate type URI. */
  predicateType: string;
  signers: SignerRequirement[];
  /** SLSA provenance only: the predicate's builder id must be exactly this. */
  builderId?: string;
  /** Formats to consider (default both). */
  formats?: SignatureFormat[];
}

/** What one image needs: signatures from these signers, carrying these annotations. */
export interface VerificationPolicy {
  signers: SignerRequirement[];
  /** `any`: one signer suffices (default). `all`: every listed signer must have signed. */
  require: 'any' | 'all';
  /** Annotations the signed payload must carry (legacy `optional`, bundle statement subject annotations). */
  annotations: Record<string, string>;
  /** Signature formats to consider (default both). */
  formats?: SignatureFormat[];
  /** Name of the policy entry that applied, for messages. */
  name?: string;
  /** Attestations the image must also carry (kbundle YAML policy `attestations:`). */
  attestations?: AttestationRequirement[];
  /**
   * Checks the identity a signature names (a legacy payload's critical.identity.docker-reference);
   * returns why it is not accepted, or undefined. When set it replaces the default check that the
   * signed repository is the one the image came from (containers-policy.json signedIdentity).
   */
  identity?: (dockerReference: string | undefined) => string | undefined;
}
