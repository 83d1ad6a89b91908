/**
 * `verifyBlob`: check a Sigstore bundle (v0.1–v0.3, message signature or DSSE) against a file or
 * a sha256 digest, with a pinned key or a keyless identity, as `cosign verify-blob` does.
 *
 * @sigstore/verify does the cryptography (signature, certificate chain at the signing time, SCTs,
 * Rekor inclusion promise / proof with checkpoint, entry body, RFC 3161 timestamps). kbundle adds
 * what it leaves out: the binding to the artifact kbundle hashed itself (a message digest, or an
 * in-toto subject, or a DSSE payload equal to the file), log entries bound to the verifying key,
 * exact (or anchored) identity matching, caps before parsing. Every refusal is a KbError whose
 * `check` names what failed.
 */
import { createHash, X509Certificate as NodeX509, type KeyObject } from 'node:crypto';
import type { Bundle } from '@sigstore/bundle';
import type { SignedEntity } from '@sigstore/verify';
import { KbError, type ErrorCode } from '../errors.js';
import { INTOTO_PAYLOAD_TYPE, INTOTO_STATEMENT_V01, INTOTO_STATEMENT_V1 } from '../attach/formats.js';
import { keyFingerprint } from '../sign/keys.js';
import { asKeyedBundle, bundleCertificate, checkTlogKeyBinding, Rejection, StatementSchema } from '../verify/evidence.js';
import { describeMatcher, matches, type Matcher } from '../verify/identity.js';
import { Limits } from '../verify/limits.js';
import type { TrustedRoot } from '../verify/trust.js';
import { explain, hintMatches, isSigstoreError, loadVerifier, passesWithoutSct, sctCount } from '../verify/verify.js';
import { parseBlobBundle, type BlobBundle, type BundleVersion } from './bundle.js';

/** What is checked against the bundle: the file's bytes, or only its sha256. */
export type BlobArtifact = { kind: 'file'; bytes: Buffer } | { kind: 'digest'; digest: string };

/** The check that failed (shown to the user, and in `--json` output). */
export type BlobCheck = 'bundle' | 'artifact' | 'statement' | 'signature' | 'key' | 'certificate' | 'transparency log' | 'timestamp' | 'identity' | 'issuer';

export class BlobVerificationError extends KbError {
  constructor(
    code: ErrorCode,
    readonly check: BlobCheck,
    readonly reason: string,
    hint?: string,
  ) {
    super(code, `${check} check failed: ${reason}`, { hint });
    this.name = 'BlobVerificationError';
  }
}

const refuse = (check: BlobCheck, reason: string, code: ErrorCode = 'REFUSED', hint?: string): never => {
  throw new BlobVerificationError(code, check, reason, hint);
};

/** A pinned key (cosign `--key`). */
export interface BlobKeyPolicy {
  kind: 'key';
  /** For messages, e.g. the key file. */
  name: string;
  keys: KeyObject[];
  /** Holds the logs that entries in the bundle are checked against. */
  trustedRoot: TrustedRoot;
  /** `require`: at least one verified log entry; `if-present`: entries there must verify; `ignore` (cosign `--insecure-ignore-tlog`). */
  tlog: 'require' | 'if-present' | 'ignore';
}

/** A Fulcio certificate for this identity (cosign `--certificate-identity … --certificate-oidc-issuer …`). */
export interface BlobKeylessPolicy {
  kind: 'keyless';
  identity: Matcher;
  issuer: Matcher;
  trustedRoot: TrustedRoot;
  /** Require a verified log entry (else a verified RFC 3161 timestamp is enough). */
  tlog: boolean;
  /** Require an SCT from a CT log of the trusted root. */
  ctlog: boolean;
}

export type BlobPolicy = BlobKeyPolicy | BlobKeylessPolicy;

export interface VerifyBlobOptions {
  /** DSSE in-toto bundles: require this predicate type (default: any). */
  predicateType?: string;
}

export interface VerifiedBlob {
  verified: true;
  /** `sha256:<hex>` of the artifact. */
  digest: string;
  bundleVersion: BundleVersion;
  content: 'message-signature' | 'dsse';
  payloadType?: string;
  predicateType?: string;
  kind: 'key' | 'keyless';
  keyFingerprint?: string;
  identity?: string;
  issuer?: string;
  tlog: { logIndex: string; integratedTime?: string; kind: string }[];
  timestamps: string[];
}

const hexOf = (b: Buffer, alg = 'sha256') => createHash(alg).update(b).digest('hex');

interface Binding {
  /** sha256 of the artifact, `sha256:<hex>`. */
  digest: string;
  /** Message signatures are checked over the artifact's bytes. */
  artifact?: Buffer;
  payloadType?: string;
  predicateType?: string;
}

const MESSAGE_NEEDS_FILE = 'a message-signature bundle signs the file itself: @sigstore/verify 3.x (and Node\u2019s crypto) check the signature over the bytes, not over a precomputed digest';

/** The artifact binding @sigstore/verify does not do: what the bundle signs must be this artifact. */
function bindArtifact(parsed: BlobBundle, artifact: BlobArtifact, opts: VerifyBlobOptions): Binding {
  const digest = artifact.kind === 'file' ? `sha256:${hexOf(artifact.bytes)}` : artifact.digest;
  const hex = digest.slice('sha256:'.length);
  const b = parsed.bundle;
  if (b.content.$case === 'messageSignature') {
    const md = parsed.messageDigest!;
    const signed = `${md.algorithm}:${md.digest.toString('hex')}`;
    if (artifact.kind === 'digest') {
      if (signed !== digest) refuse('artifact', `the bundle signs ${signed}, not ${digest}`, 'DIGEST_MISMATCH');
      return refuse('artifact', MESSAGE_NEEDS_FILE, 'UNSUPPORTED', 'pass the file instead of its sha256 digest');
    }
    const actual = `${md.algorithm}:${hexOf(artifact.bytes, md.algorithm)}`;
    if (actual !== signed) refuse('artifact', `the bundle signs ${signed.slice(0, 80)}, not this file (${actual.slice(0, 80)})`, 'DIGEST_MISMATCH');
    return { digest, artifact: artifact.bytes };
  }
  const env = b.content.dsseEnvelope;
  const payload = Buffer.from(env.payload);
  if (env.payloadType !== INTOTO_PAYLOAD_TYPE) {
    // A DSSE envelope over the blob itself (e.g. sigstore-go's examples): the payload is the artifact.
    if (opts.predicateType) refuse('statement', `the DSSE payload type is "${env.payloadType.slice(0, 80)}", not an in-toto statement with predicate type ${opts.predicateType}`);
    const same = artifact.kind === 'file' ? payload.equals(artifact.bytes) : `sha256:${hexOf(payload)}` === digest;
    if (!same) refuse('artifact', `the DSSE payload (${env.payloadType.slice(0, 80)}, sha256:${hexOf(payload)}) is not ${artifact.kind === 'file' ? 'this file' : digest}`, 'DIGEST_MISMATCH');
    return { digest, payloadType: env.payloadType };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(payload.toString('utf8'));
  } catch {
    refuse('statement', 'the DSSE payload is not valid JSON');
  }
  const r = StatementSchema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0]!;
    refuse('statement', `the in-toto statement is malformed: ${i.path.join('.') || '(top level)'}: ${i.message}`);
  }
  const st = r.data!;
  if (st._type !== INTOTO_STATEMENT_V1 && st._type !== INTOTO_STATEMENT_V01) refuse('statement', `statement type "${st._type.slice(0, 80)}" is not an in-toto statement`);
  if (opts.predicateType && st.predicateType !== opts.predicateType) refuse('statement', `predicate type is "${st.predicateType.slice(0, 120)}", not ${opts.predicateType}`);
  if (!st.subject.some((s) => s.digest.sha256?.toLowerCase() === hex)) {
    const named = st.subject
      .slice(0, 3)
      .map((s) => `${s.name ? `${s.name.slice(0, 60)} ` : ''}sha256:${String(s.digest.sha256 ?? '?').slice(0, 64)}`)
      .join(', ');
    refuse('artifact', `the statement's subjects (${named}${st.subject.length > 3 ? ', …' : ''}) do not include ${digest}`, 'DIGEST_MISMATCH');
  }
  return { digest, payloadType: env.payloadType, predicateType: st.predicateType };
}

/** explain()'s line, less the check's own name where it repeats it. */
function reasonOf(e: unknown, facts: Parameters<typeof explain>[1] = {}): string {
  if (isSigstoreError(e) && e.code === 'TIMESTAMP_ERROR' && facts.entity?.timestamps.some((t) => t.$case === 'timestamp-authority')) {
    return `an RFC 3161 timestamp does not verify against the trusted root's timestamp authorities (${e.message})`;
  }
  return explain(e, facts);
}

/** The check a @sigstore/verify error code (or one of kbundle's own rejections) belongs to. */
function checkOf(e: unknown, fallback: BlobCheck): BlobCheck {
  if (!isSigstoreError(e)) return fallback;
  if (e.code === 'SIGNATURE_ERROR') return 'signature';
  if (e.code === 'CERTIFICATE_ERROR') return 'certificate';
  if (e.code === 'TIMESTAMP_ERROR') return 'timestamp';
  if (e.code === 'PUBLIC_KEY_ERROR') return 'key';
  if (e.code.startsWith('TLOG_')) return 'transparency log';
  return fallback;
}

function tlogFacts(bundle: Bundle): VerifiedBlob['tlog'] {
  return bundle.verificationMaterial.tlogEntries.map((e) => ({
    logIndex: e.logIndex,
    integratedTime: e.integratedTime && e.integratedTime !== '0' ? new Date(Number(e.integratedTime) * 1000).toISOString() : undefined,
    kind: `${e.kindVersion?.kind} ${e.kindVersion?.version}`,
  }));
}

function timestampsOf(entity: SignedEntity): string[] {
  return entity.timestamps
    .map((t) => (t.$case === 'timestamp-authority' ? t.timestamp.signingTime : t.tlogEntry.inclusionPromise ? new Date(Number(t.tlogEntry.integratedTime) * 1000) : undefined))
    .filter((d): d is Date => d !== undefined)
    .map((d) => d.toISOString());
}

type Signer = Pick<VerifiedBlob, 'kind' | 'keyFingerprint' | 'identity' | 'issuer' | 'tlog' | 'timestamps'>;

async function checkKey(parsed: BlobBundle, policy: BlobKeyPolicy, binding: Binding): Promise<Signer> {
  const { toSignedEntity, toTrustMaterial, Verifier } = await loadVerifier();
  const hint = parsed.hint;
  const hinted = hint ? policy.keys.filter((k) => hintMatches(hint, k)) : [];
  const keys = hinted.length ? hinted : policy.keys;
  // Only the pinned key counts: a certificate or key the bundle carries is ignored, and so are
  // RFC 3161 timestamps (a key does not expire). Log entries are checked unless told not to.
  const keep = policy.tlog !== 'ignore';
  const b = asKeyedBundle(parsed.bundle, keep);
  let last: unknown;
  let entity: SignedEntity | undefined;
  for (const key of keys) {
    try {
      const trust = toTrustMaterial(policy.trustedRoot, () => ({ publicKey: key, validFor: () => true }));
      entity = toSignedEntity(b, binding.artifact);
      new Verifier(trust, { tlogThreshold: policy.tlog === 'require' ? 1 : 0, ctlogThreshold: 0, timestampThreshold: 0 }).verify(entity);
      if (keep) checkTlogKeyBinding(b, key);
      return { kind: 'key', keyFingerprint: keyFingerprint(key), tlog: tlogFacts(b), timestamps: [] };
    } catch (e) {
      last = e;
      if (!(isSigstoreError(e) && e.code === 'SIGNATURE_ERROR')) break; // another key cannot fix a log or format problem
    }
  }
  if (isSigstoreError(last) && last.code === 'SIGNATURE_ERROR') {
    return refuse('signature', hint && hinted.length === 0 ? `signed by an unknown key (hint ${hint.slice(0, 64)}), not ${policy.name}` : `not signed by ${policy.name}`);
  }
  return refuse(checkOf(last, last instanceof Rejection ? 'transparency log' : 'bundle'), reasonOf(last, { entity }));
}

async function checkKeyless(parsed: BlobBundle, policy: BlobKeylessPolicy, binding: Binding): Promise<Signer> {
  const bundle = parsed.bundle;
  const certDer = bundleCertificate(bundle);
  if (!certDer) return refuse('certificate', 'signed with a key, not a certificate (a keyless identity was asked for)');
  if (certDer.length > Limits.maxCertificateBytes) refuse('certificate', 'the certificate is too large');
  try {
    new NodeX509(certDer);
  } catch {
    refuse('certificate', 'the certificate does not parse');
  }
  const { toSignedEntity, toTrustMaterial, Verifier } = await loadVerifier();
  const trust = () =>
    toTrustMaterial(policy.trustedRoot, () => {
      throw new Rejection('signed with a key, not a certificate');
    });
  const thresholds = { tlogThreshold: policy.tlog ? 1 : 0, ctlogThreshold: policy.ctlog ? 1 : 0, timestampThreshold: 1 };
  let entity: SignedEntity | undefined;
  let signer;
  try {
    entity = toSignedEntity(bundle, binding.artifact);
    signer = new Verifier(trust(), thresholds).verify(entity);
  } catch (e) {
    const sctMissing =
      !!entity &&
      isSigstoreError(e) &&
      e.code === 'CERTIFICATE_ERROR' &&
      policy.ctlog &&
      sctCount(entity) === 0 &&
      passesWithoutSct((ctlogThreshold) => new Verifier(trust(), { ...thresholds, ctlogThreshold }).verify(entity!));
    return refuse(checkOf(e, 'bundle'), reasonOf(e, { entity, sctMissing }));
  }
  try {
    checkTlogKeyBinding(bundle, signer.key);
  } catch (e) {
    refuse('transparency log', explain(e));
  }
  const san = signer.identity?.subjectAlternativeName;
  const issuer = signer.identity?.extensions?.issuer;
  if (!matches(policy.identity, san)) refuse('identity', `certificate identity "${(san ?? 'none').slice(0, 200)}" does not match ${describeMatcher(policy.identity)}`);
  if (!matches(policy.issuer, issuer)) refuse('issuer', `certificate OIDC issuer "${(issuer ?? 'none').slice(0, 200)}" does not match ${describeMatcher(policy.issuer)}`);
  return { kind: 'keyless', identity: san, issuer, tlog: tlogFacts(bundle), timestamps: timestampsOf(entity) };
}

/** Verify `bundleBytes` for `artifact` against `policy`; throws a BlobVerificationError naming the failed check. */
export async function verifyBlob(artifact: BlobArtifact, bundleBytes: Buffer, policy: BlobPolicy, opts: VerifyBlobOptions = {}): Promise<VerifiedBlob> {
  if (artifact.kind === 'digest' && !/^sha256:[0-9a-f]{64}$/.test(artifact.digest)) refuse('artifact', `"${artifact.digest.slice(0, 80)}" is not sha256:<64 hex digits>`, 'INVALID_INPUT');
  let parsed: BlobBundle;
  try {
    parsed = await parseBlobBundle(bundleBytes);
  } catch (e) {
    return refuse('bundle', e instanceof Rejection ? e.reason : explain(e));
  }
  const binding = bindArtifact(parsed, artifact, opts);
  let signer: Signer;
  try {
    signer = policy.kind === 'key' ? await checkKey(parsed, policy, binding) : await checkKeyless(parsed, policy, binding);
  } catch (e) {
    if (e instanceof BlobVerificationError) throw e;
    // Anything else thrown while judging hostile material is a refusal, never a crash.
    return refuse('bundle', explain(e));
  }
  return { verified: true, digest: binding.digest, bundleVersion: parsed.version, content: parsed.content, payloadType: binding.payloadType, predicateType: binding.predicateType, ...signer };
}
