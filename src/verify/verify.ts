/**
 * `verifyImage`: find an image's signatures in both cosign layouts, check each one completely,
 * and decide against a policy. Signatures are bound to the digest kbundle hashed itself; every
 * exception while judging one signature rejects that signature with a one-line reason.
 */
import { mapPool } from '../util/pool.js';
import { X509Certificate as NodeX509, type KeyObject } from 'node:crypto';
import type { Bundle } from '@sigstore/bundle';
import type { SignedEntity } from '@sigstore/verify';
import { errorMessage, KbError, UserError } from '../errors.js';
import { DigestMismatchError, digestOf, parseDigest, readAllCapped, SizeMismatchError } from '../oci/digest.js';
import { isManifestMediaType, MediaType } from '../oci/mediatypes.js';
import { MAX_MANIFEST_BYTES, parseManifest, type Descriptor } from '../oci/types.js';
import { fetchBytes, resolveAndRead, tryResolveWithBytes, type Target } from '../oci/target.js';
import { BUNDLE_V03_MEDIA_TYPE, COSIGN_SIGN_PREDICATE_TYPE, Annotations, SIMPLE_SIGNING_MEDIA_TYPE, signatureTag } from '../attach/formats.js';
import { keyFingerprint, keyHint } from '../sign/keys.js';
import { listReferrers } from '../attach/referrers.js';
import {
  asKeyedBundle,
  bundleCertificate,
  checkLegacyPayload,
  checkStatement,
  checkTlogKeyBinding,
  legacyEvidence,
  parseImageBundle,
  Rejection,
  preAuthEncoding,
  signatureVerifies,
  type SignatureEvidence,
} from './evidence.js';
import { describeMatcher, matches } from './identity.js';
import { Limits } from './limits.js';
import type { KeyRequirement, KeylessRequirement, SignatureFormat, SignerRequirement, VerificationPolicy } from './requirements.js';

// The Sigstore verifier (and its protobuf types) load only when a certificate, a log entry or a
// timestamp has to be checked; a pinned-key check is plain node:crypto over the signed bytes.
let sigstoreVerify: Promise<typeof import('@sigstore/verify')> | undefined;
/** Set once loaded: its error classes are what `explain` recognises. */
let verifierLib: typeof import('@sigstore/verify') | undefined;
export const loadVerifier = () => (sigstoreVerify ??= import('@sigstore/verify').then((m) => (verifierLib = m)));

/** A failure reported by @sigstore/verify: its `code` says which check failed. */
export function isSigstoreError(e: unknown): e is { code: string; message: string } {
  return !!verifierLib && (e instanceof verifierLib.VerificationError || e instanceof verifierLib.PolicyError);
}

/** One signature that satisfied one signer of the policy. */
export interface VerifiedSigner {
  format: SignatureFormat;
  /** Where the signature lives: `referrer sha256:…` or `sha256-….sig layer N`. */
  location: string;
  /** The policy signer it satisfied (key file name, or identity). */
  signer: string;
  kind: 'key' | 'keyless';
  /** sha256 of the SPKI of the key that verified (keyed signatures). */
  keyFingerprint?: string;
  /** Certificate identity (SAN) and OIDC issuer (keyless signatures). */
  identity?: string;
  issuer?: string;
  /** The digest the signature is bound to (always the verified image's). */
  digest: string;
  /** Verified transparency-log entries and timestamps. */
  tlog: { logIndex: string; integratedTime: string }[];
  timestamps: string[];
  annotations: Record<string, string>;
}

export interface VerifyOptions {
  /** `registry/repository` being verified; legacy payloads must name it (when they name one). */
  repository?: string;
  /** How to name the image in messages (default `target.name@digest`). */
  display?: string;
}

interface Candidate {
  format: SignatureFormat;
  location: string;
  /** Set when the signature could not even be read. */
  failure?: string;
  desc?: Descriptor;
  annotations?: Record<string, string>;
}

export interface Evidence {
  sig: SignatureEvidence;
  /** Loaded on first need, shared by every requirement that needs it. */
  bundle?: Promise<Bundle>;
  annotations: Record<string, string>;
  /** The identity a legacy payload names (Sigstore bundles name none). */
  dockerReference?: string;
}

interface Judged {
  candidate: Candidate;
  evidence?: Evidence;
  reasons: string[];
}

const short = (d: string): string => `${d.slice(0, 19)}…`;

export async function fetchCapped(target: Target, desc: Descriptor, limit: number, what: string): Promise<Buffer> {
  if (desc.size > limit) throw new Rejection(`${what} is ${desc.size} bytes, over the ${limit}-byte limit`);
  try {
    return await readAllCapped(await target.fetch(desc), limit, what);
  } catch (e) {
    if (e instanceof DigestMismatchError) throw new Rejection(`${what}: content digest ${e.actual} does not match the expected ${e.expected}`);
    if (e instanceof SizeMismatchError) throw new Rejection(`${what}: size ${e.actual} does not match the descriptor size ${e.expected}`);
    throw new Rejection(`${what}: ${errorMessage(e)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------------------------

async function discoverLegacy(target: Target, digest: string): Promise<Candidate[]> {
  const tag = signatureTag(digest);
  let desc: Descriptor | undefined;
  let bytes: Buffer | undefined;
  try {
    // One GET from a registry, which checks size (4 MiB) and digest of what it returns.
    ({ desc, bytes } = (await tryResolveWithBytes(target, tag)) ?? {});
  } catch (e) {
    return [{ format: 'legacy', location: tag, failure: `cannot read the signature tag (${errorMessage(e)})` }];
  }
  if (!desc) return [];
  if (!isManifestMediaType(desc.mediaType)) return [{ format: 'legacy', location: tag, failure: `the signature tag points at ${desc.mediaType}, not an image manifest` }];
  if (desc.size > MAX_MANIFEST_BYTES) return [{ format: 'legacy', location: tag, failure: `the signature manifest is ${desc.size} bytes, over the limit` }];
  let layers: Descriptor[];
  try {
    bytes ??= await fetchBytes(target, desc);
  } catch (e) {
    return [{ format: 'legacy', location: tag, failure: `cannot read the signature manifest (${errorMessage(e)})` }];
  }
  try {
    layers = parseManifest(bytes, desc.mediaType, 'the signature manifest is unusable').layers;
  } catch (e) {
    return [{ format: 'legacy', location: tag, failure: errorMessage(e) }];
  }
  if (layers.length > Limits.maxSignatureLayers) return [{ format: 'legacy', location: tag, failure: `${layers.length} layers, over the limit of ${Limits.maxSignatureLayers}` }];
  const out: Candidate[] = [];
  layers.forEach((l, i) => {
    if (l.mediaType !== SIMPLE_SIGNING_MEDIA_TYPE) {
      out.push({ format: 'legacy', location: `${tag} layer ${i + 1}`, failure: `layer media type ${l.mediaType.slice(0, 80)} is not ${SIMPLE_SIGNING_MEDIA_TYPE}` });
      return;
    }
    out.push({ format: 'legacy', location: `${tag} layer ${i + 1}`, desc: l, annotations: l.annotations ?? {} });
  });
  return out;
}

async function discoverBundles(target: Target, subject: Descriptor): Promise<Candidate[]> {
  let refs: Descriptor[];
  try {
    refs = await listReferrers(target, subject);
  } catch (e) {
    return [{ format: 'bundle', location: 'referrers', failure: `cannot list referrers (${errorMessage(e)})` }];
  }
  if (refs.length > Limits.maxReferrers) return [{ format: 'bundle', location: 'referrers', failure: `${refs.length} referrers, over the limit of ${Limits.maxReferrers}` }];
  const out: Candidate[] = [];
  for (const r of refs) {
    // Other artifacts (SBOMs, attestations with another predicate) are not signatures.
    if (r.artifactType && r.artifactType !== BUNDLE_V03_MEDIA_TYPE && r.artifactType !== MediaType.OciEmpty) continue;
    const pt = r.annotations?.[Annotations.BundlePredicateType];
    if (pt !== undefined && pt !== COSIGN_SIGN_PREDICATE_TYPE) continue;
    out.push({ format: 'bundle', location: `referrer ${short(r.digest)}`, desc: r });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reading one signature
// ---------------------------------------------------------------------------------------------

async function readBundle(target: Target, c: Candidate, subject: Descriptor): Promise<Evidence | 'skip'> {
  const desc = c.desc!;
  if (!isManifestMediaType(desc.mediaType) || desc.mediaType !== MediaType.OciManifest) throw new Rejection(`referrer is ${desc.mediaType}, not an OCI image manifest`);
  const bytes = await fetchCapped(target, desc, MAX_MANIFEST_BYTES, 'referrer manifest');
  let m;
  try {
    m = parseManifest(bytes, desc.mediaType, 'referrer manifest');
  } catch (e) {
    throw new Rejection(errorMessage(e));
  }
  const bundleLayers = m.layers.filter((l) => l.mediaType === BUNDLE_V03_MEDIA_TYPE);
  if (m.artifactType !== BUNDLE_V03_MEDIA_TYPE && bundleLayers.length === 0) return 'skip';
  const pt = m.annotations?.[Annotations.BundlePredicateType];
  if (pt !== undefined && pt !== COSIGN_SIGN_PREDICATE_TYPE) return 'skip';
  if (m.subject?.digest !== subject.digest) throw new Rejection(`the referrer's subject is ${m.subject?.digest ?? 'missing'}, not ${subject.digest}`);
  if (bundleLayers.length !== 1 || m.layers.length !== 1) throw new Rejection(`the referrer has ${m.layers.length} layers; exactly one Sigstore bundle layer is accepted`);
  const blob = await fetchCapped(target, bundleLayers[0]!, Limits.maxSignatureBlob, 'bundle');
  const parsed = parseImageBundle(blob);
  const facts = checkStatement(parsed, subject.digest);
  return { sig: parsed, annotations: facts.annotations };
}

async function readLegacy(target: Target, c: Candidate, digest: string, repository: string | undefined): Promise<Evidence> {
  const payload = await fetchCapped(target, c.desc!, Limits.maxSignatureBlob, 'payload');
  const facts = checkLegacyPayload(payload, digest, repository);
  return { sig: legacyEvidence(payload, c.annotations ?? {}), annotations: facts.annotations, dockerReference: facts.dockerReference };
}

// ---------------------------------------------------------------------------------------------
// Cryptography against one signer requirement
// ---------------------------------------------------------------------------------------------

/** What the signed entity itself shows, to tell apart failures sigstore-js reports under one code. */
export interface Facts {
  entity?: SignedEntity;
  /** Verification passes once no SCT is required: the missing SCT is the failure. */
  sctMissing?: boolean;
}

/** Timestamps the verifier can count: RFC 3161 ones and log entries with an inclusion promise. */
function countableTimestamps(entity: SignedEntity): number {
  return entity.timestamps.filter((t) => t.$case === 'timestamp-authority' || !!t.tlogEntry.inclusionPromise).length;
}

export function sctCount(entity: SignedEntity): number {
  return entity.key.$case === 'certificate' ? (entity.key.certificate.extSCT?.signedCertificateTimestamps.length ?? 0) : 0;
}

/** One line on why a signature was rejected, chosen by error class and code (never by message text). */
export function explain(e: unknown, facts: Facts = {}): string {
  if (e instanceof Rejection) return e.reason;
  if (!isSigstoreError(e)) return `malformed signature material (${errorMessage(e)})`;
  const { entity } = facts;
  const msg = e.message;
  switch (e.code) {
    case 'SIGNATURE_ERROR':
      return 'the signature does not verify';
    case 'TIMESTAMP_ERROR':
      if (entity && countableTimestamps(entity) === 0) return 'no verified timestamp (transparency-log entry or RFC 3161): the certificate cannot be checked at signing time';
      return `timestamp: ${msg}`;
    case 'CERTIFICATE_ERROR':
      if (facts.sctMissing) return 'the certificate has no SCT from a trusted CT log (the policy requires one)';
      // Without SCTs only the chain and validity checks can have failed.
      if (entity && sctCount(entity) === 0) return 'the certificate does not chain to a trusted CA, or was not valid when it was used';
      return `the certificate does not chain to a trusted CA, was not valid when it was used, or has no valid SCT from a trusted CT log (${msg})`;
    case 'TLOG_ERROR':
      // The verifier's only TLOG_ERROR is "fewer entries than required"; the policy requires one.
      if (entity && entity.tlogEntries.length === 0) return 'no transparency-log entry (the policy requires one)';
      return `transparency log: ${msg}`;
    case 'TLOG_INCLUSION_PROMISE_ERROR':
      return 'the transparency-log inclusion promise does not verify against the trusted root';
    case 'TLOG_INCLUSION_PROOF_ERROR':
      return `the transparency-log inclusion proof does not verify (${msg})`;
    case 'TLOG_MISSING_INCLUSION_ERROR':
      return 'the transparency-log entry has neither inclusion promise nor proof';
    case 'TLOG_BODY_ERROR':
      return `the transparency-log entry is for another signature or payload (${msg})`;
    case 'PUBLIC_KEY_ERROR':
      return 'the signing key is not trusted';
    default:
      return `${e.code}: ${msg}`;
  }
}

function tlogFacts(bundle: Bundle): { logIndex: string; integratedTime: string }[] {
  return bundle.verificationMaterial.tlogEntries.map((e) => ({ logIndex: e.logIndex, integratedTime: e.integratedTime }));
}

export function hintMatches(hint: string, key: KeyObject): boolean {
  return hint === keyHint(key) || hint === keyFingerprint(key) || hint === `sha256:${keyFingerprint(key)}`;
}

export type Base = Omit<VerifiedSigner, 'signer' | 'kind' | 'tlog' | 'timestamps'>;

function bundleOf(ev: Evidence): Promise<Bundle> {
  ev.bundle ??= ev.sig.load();
  return ev.bundle;
}

async function checkKeyed(req: KeyRequirement, ev: Evidence, base: Base): Promise<VerifiedSigner> {
  const hint = ev.sig.hint;
  const hinted = hint ? req.keys.filter((k) => hintMatches(hint, k)) : [];
  const keys = hinted.length ? hinted : req.keys;
  const notSigned = (): Rejection => new Rejection(hint && hinted.length === 0 ? `signed by an unknown key (hint ${hint.slice(0, 64)}), not ${req.name}` : `not signed by ${req.name}`);
  if (!req.tlog) {
    // Only the pinned key counts: certificates and timestamps the signature carries are ignored.
    const key = keys.find((k) => signatureVerifies(ev.sig.signed, k, ev.sig.signature));
    if (!key) throw notSigned();
    return { ...base, signer: req.name, kind: 'key', keyFingerprint: keyFingerprint(key), tlog: [], timestamps: [] };
  }
  const [{ toSignedEntity, toTrustMaterial, Verifier }, { emptyTrustedRoot }] = await Promise.all([loadVerifier(), import('./trust.js')]);
  const b = asKeyedBundle(await bundleOf(ev), true);
  let last: unknown;
  let entity: SignedEntity | undefined;
  for (const key of keys) {
    try {
      const trust = toTrustMaterial(req.trustedRoot ?? emptyTrustedRoot(), () => ({ publicKey: key, validFor: () => true }));
      const verifier = new Verifier(trust, { tlogThreshold: 1, ctlogThreshold: 0, timestampThreshold: 0 });
      entity = toSignedEntity(b, ev.sig.artifact);
      verifier.verify(entity);
      checkTlogKeyBinding(b, key);
      return { ...base, signer: req.name, kind: 'key', keyFingerprint: keyFingerprint(key), tlog: tlogFacts(b), timestamps: [] };
    } catch (e) {
      last = e;
    }
  }
  if (isSigstoreError(last) && last.code === 'SIGNATURE_ERROR') throw notSigned();
  throw new Rejection(`${req.name}: ${explain(last, { entity })}`);
}

/**
 * A certificate without SCTs failed with CERTIFICATE_ERROR: was it the chain, or only the missing
 * SCT? Verify once more with no SCT required to tell (failure path only).
 */
export function passesWithoutSct(verify: (ctlogThreshold: number) => void): boolean {
  try {
    verify(0);
    return true;
  } catch (e) {
    return !(isSigstoreError(e) && e.code === 'CERTIFICATE_ERROR');
  }
}

async function checkKeyless(req: KeylessRequirement, ev: Evidence, base: Base): Promise<VerifiedSigner> {
  const bundle = await bundleOf(ev);
  const certDer = bundleCertificate(bundle);
  if (!certDer) throw new Rejection('signed with a key, not a certificate (keyless identity required)');
  if (certDer.length > Limits.maxCertificateBytes) throw new Rejection('the certificate is too large');
  try {
    new NodeX509(certDer);
  } catch {
    throw new Rejection('the certificate does not parse');
  }
  const { toSignedEntity, toTrustMaterial, Verifier } = await loadVerifier();
  let signer;
  let entity: SignedEntity | undefined;
  const trust = () =>
    toTrustMaterial(req.trustedRoot, () => {
      throw new Rejection('signed with a key, not a certificate');
    });
  const thresholds = { tlogThreshold: req.tlog ? 1 : 0, ctlogThreshold: req.ctlog ? 1 : 0, timestampThreshold: 1 };
  try {
    const verifier = new Verifier(trust(), thresholds);
    entity = toSignedEntity(bundle, ev.sig.artifact);
    signer = verifier.verify(entity);
    checkTlogKeyBinding(bundle, signer.key);
  } catch (e) {
    throw new Rejection(
      explain(e, {
        entity,
        sctMissing:
          entity &&
          isSigstoreError(e) &&
          e.code === 'CERTIFICATE_ERROR' &&
          req.ctlog &&
          sctCount(entity) === 0 &&
          passesWithoutSct((ctlogThreshold) => new Verifier(trust(), { ...thresholds, ctlogThreshold }).verify(entity!)),
      }),
    );
  }
  const san = signer.identity?.subjectAlternativeName;
  const issuer = signer.identity?.extensions?.issuer;
  if (!matches(req.identity, san)) throw new Rejection(`certificate identity "${(san ?? 'none').slice(0, 200)}" does not match ${describeMatcher(req.identity)}`);
  if (!matches(req.issuer, issuer)) throw new Rejection(`certificate OIDC issuer "${(issuer ?? 'none').slice(0, 200)}" does not match ${describeMatcher(req.issuer)}`);
  const timestamps = entity.timestamps
    .map((t) => (t.$case === 'timestamp-authority' ? t.timestamp.signingTime : t.tlogEntry.inclusionPromise ? new Date(Number(t.tlogEntry.integratedTime) * 1000) : undefined))
    .filter((d): d is Date => d !== undefined)
    .map((d) => d.toISOString());
  return { ...base, signer: req.name, kind: 'keyless', identity: san, issuer, tlog: tlogFacts(bundle), timestamps };
}

export function checkRequirement(req: SignerRequirement, ev: Evidence, base: Base): Promise<VerifiedSigner> {
  return req.kind === 'key' ? checkKeyed(req, ev, base) : checkKeyless(req, ev, base);
}

// ---------------------------------------------------------------------------------------------
// The decision
// ---------------------------------------------------------------------------------------------

/**
 * Verify the image `desc` in `target` against `policy`. Returns the signatures that satisfied it;
 * throws a REFUSED KbError with a one-line reason (which check failed, for which signature) otherwise.
 * The manifest is fetched and hashed here: signatures are bound to these bytes, whatever a tag or
 * a registry header claimed.
 */
export async function verifyImage(target: Target, desc: Descriptor, policy: VerificationPolicy, opts: VerifyOptions = {}): Promise<VerifiedSigner[]> {
  const algorithm = parseDigest(desc.digest).algorithm;
  const manifestBytes = await fetchBytes(target, desc);
  const digest = digestOf(manifestBytes, algorithm);
  if (digest !== desc.digest) throw new KbError('DIGEST_MISMATCH', `${target.name}: the manifest bytes hash to ${digest}, not ${desc.digest}`);
  return verifySignatures(target, { mediaType: desc.mediaType, digest, size: manifestBytes.length }, policy, opts);
}

/**
 * Resolve `reference` once and hash the manifest bytes: the descriptor returned names those bytes,
 * whatever a tag or a registry header claimed. One GET on registries that offer `resolveWithBytes`.
 */
export async function resolveSubject(target: Target, reference: string): Promise<Descriptor> {
  const { desc, bytes } = await resolveAndRead(target, reference);
  const digest = digestOf(bytes, parseDigest(desc.digest).algorithm);
  if (digest !== desc.digest) throw new KbError('DIGEST_MISMATCH', `${target.name}: the manifest bytes hash to ${digest}, not ${desc.digest}`);
  return { mediaType: desc.mediaType, digest, size: bytes.length };
}

/**
 * Resolve `reference` (a tag is looked up once; from then on only the digest of the bytes counts)
 * and verify. One GET on registries that offer `resolveWithBytes`.
 */
export async function verifyReference(
  target: Target,
  reference: string,
  policy: VerificationPolicy,
  opts: Omit<VerifyOptions, 'display'> & { display?: (digest: string) => string; onResolved?: (subject: Descriptor) => void } = {},
): Promise<{ desc: Descriptor; signers: VerifiedSigner[] }> {
  const subject = await resolveSubject(target, reference);
  const digest = subject.digest;
  opts.onResolved?.(subject);
  const signers = await verifySignatures(target, subject, policy, { repository: opts.repository, display: opts.display?.(digest) });
  return { desc: subject, signers };
}

/**
 * The signature part of `verifyImage` for a subject whose digest the caller computed from the
 * manifest bytes itself (never from a tag or a header).
 */
export async function verifySignatures(target: Target, subject: Descriptor, policy: VerificationPolicy, opts: VerifyOptions = {}): Promise<VerifiedSigner[]> {
  if (policy.signers.length === 0) throw new UserError('the trust policy names no signers for this image');
  const digest = subject.digest;
  const display = opts.display ?? `${target.name}@${digest}`;
  const formats = policy.formats ?? ['bundle', 'legacy'];

  // Both formats are looked up and read concurrently: each is a short chain of round trips.
  const judge = async (c: Candidate): Promise<Judged> => {
    if (c.failure) return { candidate: c, reasons: [c.failure] };
    try {
      const ev = c.format === 'bundle' ? await readBundle(target, c, subject) : await readLegacy(target, c, digest, policy.identity ? undefined : opts.repository);
      if (ev === 'skip') return { candidate: c, reasons: [] };
      return { candidate: c, evidence: ev, reasons: [] };
    } catch (e) {
      return { candidate: c, reasons: [explain(e)] };
    }
  };
  let total = 0;
  let tooMany = false;
  const run = async (discover: () => Promise<Candidate[]>): Promise<{ candidates: Candidate[]; judged: Judged[] }> => {
    const candidates = await discover();
    total += candidates.filter((c) => !c.failure).length;
    if (total > Limits.maxSignatures) tooMany = true;
    if (tooMany) return { candidates, judged: [] };
    return { candidates, judged: await mapPool(candidates, 4, judge) };
  };
  const runs = await Promise.all([
    formats.includes('bundle') ? run(() => discoverBundles(target, subject)) : { candidates: [], judged: [] },
    formats.includes('legacy') ? run(() => discoverLegacy(target, digest)) : { candidates: [], judged: [] },
  ]);
  const candidates = runs.flatMap((r) => r.candidates);
  if (tooMany) {
    throw new KbError('REFUSED', `${display}: ${total} signatures found, more than the limit of ${Limits.maxSignatures}; refusing to verify`, {
      hint: 'a registry that piles up signatures is suspicious; clean up the signature tag or referrers',
    });
  }
  if (candidates.length === 0) {
    throw new KbError('REFUSED', `${display}: no signatures found (no Sigstore bundle referrers, no ${signatureTag(digest)} tag)`, { hint: 'sign it with: kbundle sign <ref> --key <key>' });
  }
  const judged = runs.flatMap((r) => r.judged);

  const verified: VerifiedSigner[] = [];
  const satisfied = new Set<SignerRequirement>();
  for (const j of judged) {
    if (!j.evidence) continue;
    const missing = Object.entries(policy.annotations).filter(([k, v]) => j.evidence!.annotations[k] !== v);
    if (missing.length) {
      j.reasons.push(`missing required annotation ${missing.map(([k, v]) => `${k}=${v}`).join(', ')}`);
      continue;
    }
    const identityRejection = policy.identity?.(j.evidence.dockerReference);
    if (identityRejection) {
      j.reasons.push(identityRejection);
      continue;
    }
    const base = { format: j.candidate.format, location: j.candidate.location, digest, annotations: j.evidence.annotations };
    for (const req of policy.signers) {
      try {
        verified.push(await checkRequirement(req, j.evidence, base));
        satisfied.add(req);
      } catch (e) {
        j.reasons.push(explain(e));
      }
    }
  }

  const ok = policy.require === 'all' ? policy.signers.every((r) => satisfied.has(r)) : satisfied.size > 0;
  if (ok) {
    // The policy may also require attestations (e.g. a provenance from a builder identity).
    if (policy.attestations?.length) {
      const { verifyAttestations } = await import('./attestations.js');
      for (const a of policy.attestations) {
        try {
          await verifyAttestations(target, subject, a, { display });
        } catch (e) {
          if (e instanceof KbError && e.code === 'REFUSED')
            throw new KbError('REFUSED', e.message, { hint: policy.name ? `trust policy "${policy.name}" requires this attestation` : e.hint, cause: e });
          throw e;
        }
      }
    }
    return verified;
  }

  const failed = judged.filter((j) => j.reasons.length > 0);
  const parts = failed.slice(0, 4).map((j) => `[${j.candidate.format} ${j.candidate.location}] ${[...new Set(j.reasons)].join('; ')}`);
  if (failed.length > 4) parts.push(`… and ${failed.length - 4} more`);
  if (parts.length === 0) parts.push('no image signatures (only other artifacts)');
  const unmet =
    policy.require === 'all'
      ? ` (unsatisfied: ${policy.signers
          .filter((r) => !satisfied.has(r))
          .map((r) => r.name)
          .join(', ')})`
      : '';
  throw new KbError('REFUSED', `${display}: signature verification failed${unmet}: ${parts.join(' | ')}`, { hint: policy.name ? `trust policy "${policy.name}"` : undefined });
}

/**
 * Check one parsed Sigstore bundle (or legacy evidence) against one signer requirement, without
 * the image binding. For tests and tools that hold a bundle file; `verifyImage` is the entry point
 * for images.
 */
export async function verifyBundleSignature(bundle: Bundle, req: SignerRequirement, artifact?: Buffer): Promise<VerifiedSigner> {
  let sig: SignatureEvidence;
  if (bundle.content.$case === 'dsseEnvelope') {
    const env = bundle.content.dsseEnvelope;
    sig = { signed: preAuthEncoding(env.payloadType, env.payload), signature: env.signatures[0]?.sig ?? Buffer.alloc(0), load: async () => bundle };
  } else {
    if (!artifact) throw new UserError('bundle: a message-signature bundle needs the artifact');
    sig = { signed: artifact, signature: bundle.content.messageSignature.signature, artifact, load: async () => bundle };
  }
  const vm = bundle.verificationMaterial.content;
  if (vm.$case === 'publicKey' && vm.publicKey.hint) sig.hint = vm.publicKey.hint;
  try {
    return await checkRequirement(req, { sig, annotations: {} }, { format: 'bundle', location: 'bundle', digest: '', annotations: {} });
  } catch (e) {
    throw new KbError('REFUSED', `bundle: ${explain(e)}`, { cause: e });
  }
}
