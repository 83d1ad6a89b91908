/**
 * Turning untrusted signature material into something @sigstore/verify can check, with every
 * check it does not do itself: size and count caps before parsing, what the signed statement or
 * payload is about, duplicate log entries, log entries bound to the signing key, checkpoint names.
 * Every function throws `Rejection` with a short reason; callers record it per signature.
 */
import { createHash, createPublicKey, verify as cryptoVerify, X509Certificate as NodeX509, type KeyObject } from 'node:crypto';
import type { Bundle, TransparencyLogEntry } from '@sigstore/bundle';
import { z } from 'zod';
import { parseDigest } from '../oci/digest.js';
import { parsePemBlocks } from '../sign/keys.js';
import { Annotations, BUNDLE_V03_MEDIA_TYPE, COSIGN_SIGNATURE_TYPE, COSIGN_SIGN_PREDICATE_TYPE, INTOTO_PAYLOAD_TYPE, INTOTO_STATEMENT_V01, INTOTO_STATEMENT_V1 } from '../attach/formats.js';
import { Limits } from './limits.js';

/** A signature that does not pass; `reason` is shown to the user. */
export class Rejection extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'Rejection';
  }
}

const reject = (reason: string): never => {
  throw new Rejection(reason);
};

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const b64 = (max: number) => z.string().max(max).regex(BASE64, 'not base64');
const int64 = z.union([z.string().regex(/^\d{1,19}$/, 'not a non-negative integer'), z.number().int().nonnegative()]);
const cert = z.object({ rawBytes: b64(Math.ceil((Limits.maxCertificateBytes * 4) / 3) + 4) }).passthrough();

// protojson leaves out zero-valued fields, so a log index of 0 is simply absent.
const TlogEntrySchema = z
  .object({
    logIndex: int64.optional(),
    logId: z.object({ keyId: b64(128) }),
    kindVersion: z.object({ kind: z.string().max(64), version: z.string().max(32) }),
    integratedTime: int64.optional(),
    inclusionPromise: z
      .object({ signedEntryTimestamp: b64(4096) })
      .passthrough()
      .optional(),
    inclusionProof: z
      .object({
        logIndex: int64.optional(),
        rootHash: b64(128).optional(),
        treeSize: int64.optional(),
        hashes: z.array(b64(128)).max(Limits.maxInclusionHashes).optional(),
        checkpoint: z.object({ envelope: z.string().max(Limits.maxCheckpointBytes) }),
      })
      .passthrough()
      .optional(),
    // An intoto entry holds the whole envelope: as large as an attestation (the blob size caps it first).
    canonicalizedBody: b64(Math.ceil((Limits.maxAttestationBlob * 4) / 3) + 4),
  })
  .passthrough();

export const BundleShapeSchema = z
  .object({
    mediaType: z.string().max(128),
    verificationMaterial: z
      .object({
        publicKey: z
          .object({ hint: z.string().max(256).optional() })
          .passthrough()
          .optional(),
        x509CertificateChain: z.object({ certificates: z.array(cert).min(1).max(Limits.maxCertificates) }).optional(),
        certificate: cert.optional(),
        tlogEntries: z.array(TlogEntrySchema).max(Limits.maxTlogEntries).optional(),
        timestampVerificationData: z
          .object({
            rfc3161Timestamps: z
              .array(z.object({ signedTimestamp: b64(Math.ceil((Limits.maxTimestampBytes * 4) / 3) + 4) }).passthrough())
              .max(Limits.maxTimestamps)
              .optional(),
          })
          .passthrough()
          .optional(),
      })
      .passthrough(),
    dsseEnvelope: z
      .object({
        payload: b64(Math.ceil((Limits.maxAttestationBlob * 4) / 3) + 4),
        payloadType: z.string().max(256),
        signatures: z.array(z.object({ sig: b64(4096), keyid: z.string().max(256).optional() }).passthrough()).max(16),
      })
      .passthrough()
      .optional(),
    messageSignature: z.unknown().optional(),
  })
  .passthrough();

/** Checkpoint signer names end up in a RegExp inside @sigstore/verify 3.x; only plain host-like names pass. */
export function checkCheckpointNames(envelope: string): void {
  for (const m of envelope.matchAll(/\u2014 (\S+) /g)) {
    if (!/^[A-Za-z0-9._:/-]{1,253}$/.test(m[1]!)) reject(`checkpoint signer name "${m[1]!.slice(0, 40)}" is not a log name`);
  }
}

type BundleShape = z.infer<typeof BundleShapeSchema>;

export function dedupeTlog(entries: NonNullable<BundleShape['verificationMaterial']['tlogEntries']>): void {
  const seen = new Set<string>();
  for (const e of entries) {
    const keys = [
      `${Buffer.from(e.logId.keyId, 'base64').toString('hex')}/${String(e.logIndex ?? 0)}`,
      `body:${createHash('sha256').update(Buffer.from(e.canonicalizedBody, 'base64')).digest('hex')}`,
    ];
    for (const k of keys) {
      if (seen.has(k)) reject('the bundle carries the same transparency-log entry twice');
      seen.add(k);
    }
  }
}

/** DSSE pre-authentication encoding (lengths in bytes). */
export function preAuthEncoding(payloadType: string, payload: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`DSSEv1 ${Buffer.byteLength(payloadType)} ${payloadType} ${payload.length} `, 'utf8'), payload]);
}

/**
 * What a signature proves, read without the Sigstore libraries: the signed bytes, the signature,
 * a key hint; the full @sigstore/bundle object is built only when certificates, logs or
 * timestamps have to be checked (`load`).
 */
export interface SignatureEvidence {
  /** The bytes the signature is over (DSSE PAE, or the simple-signing payload). */
  signed: Buffer;
  signature: Buffer;
  hint?: string;
  /** The artifact for message signatures (legacy payloads). */
  artifact?: Buffer;
  load(): Promise<Bundle>;
}

export interface ParsedBundle extends SignatureEvidence {
  payloadType: string;
  payload: Buffer;
}

/**
 * Parse a Sigstore bundle blob meant as an image signature: v0.3, a DSSE envelope with exactly one
 * signature, caps on every list. Messages never include bundle contents.
 */
export function parseImageBundle(bytes: Buffer, limit: number = Limits.maxSignatureBlob): ParsedBundle {
  if (bytes.length > limit) reject(`bundle is ${bytes.length} bytes, over the ${limit}-byte limit`);
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch {
    reject('bundle is not valid JSON');
  }
  const shape = BundleShapeSchema.safeParse(raw);
  if (!shape.success) {
    const i = shape.error.issues[0]!;
    reject(`malformed bundle: ${i.path.join('.') || '(top level)'}: ${i.message}`);
  }
  const s = shape.data!;
  if (s.mediaType !== BUNDLE_V03_MEDIA_TYPE && s.mediaType !== 'application/vnd.dev.sigstore.bundle+json;version=0.3') {
    reject(`bundle media type "${s.mediaType}" is not v0.3 (older bundles are not accepted for images, as cosign does)`);
  }
  const env = s.dsseEnvelope;
  if (!env) return reject('bundle has no DSSE envelope (message-signature bundles are not accepted for images)');
  if (s.messageSignature !== undefined) reject('bundle has both a DSSE envelope and a message signature');
  if (env.signatures.length !== 1) reject(`bundle DSSE envelope has ${env.signatures.length} signatures; exactly one is accepted`);
  const vm = s.verificationMaterial;
  if ([vm.publicKey, vm.x509CertificateChain, vm.certificate].filter(Boolean).length !== 1) reject('bundle verification material must be exactly one of a public key, a certificate or a chain');
  for (const e of vm.tlogEntries ?? []) if (e.inclusionProof) checkCheckpointNames(e.inclusionProof.checkpoint.envelope);
  dedupeTlog(vm.tlogEntries ?? []);
  const payload = Buffer.from(env.payload, 'base64');
  const signature = Buffer.from(env.signatures[0]!.sig, 'base64');
  if (payload.length === 0 || signature.length === 0) reject('bundle has an empty payload or signature');
  return {
    payloadType: env.payloadType,
    payload,
    signed: preAuthEncoding(env.payloadType, payload),
    signature,
    hint: vm.publicKey?.hint || undefined,
    async load() {
      const { bundleFromJSON } = await import('@sigstore/bundle');
      try {
        return bundleFromJSON(raw);
      } catch (e) {
        return reject(`malformed bundle (${(e as Error).message})`);
      }
    },
  };
}

export const StatementSchema = z
  .object({
    _type: z.string(),
    subject: z
      .array(
        z
          .object({
            name: z.string().optional(),
            digest: z.record(z.string(), z.string()),
            annotations: z.record(z.string(), z.unknown()).optional(),
          })
          .passthrough(),
      )
      .min(1)
      .max(Limits.maxSubjects),
    predicateType: z.string(),
  })
  .passthrough();

export interface StatementFacts {
  annotations: Record<string, string>;
  predicateType: string;
  /** The whole statement as parsed (attestations print it). */
  statement: Record<string, unknown>;
}

/**
 * The digest binding @sigstore/verify does not check: the DSSE payload must be an in-toto
 * statement with the expected predicate type (cosign's signing predicate for signatures) whose
 * subject names the digest kbundle hashed itself.
 */
export function checkStatement(parsed: { payloadType: string; payload: Buffer }, digest: string, predicateType: string = COSIGN_SIGN_PREDICATE_TYPE): StatementFacts {
  if (parsed.payloadType !== INTOTO_PAYLOAD_TYPE) reject(`DSSE payload type is "${parsed.payloadType.slice(0, 80)}", not ${INTOTO_PAYLOAD_TYPE}`);
  let raw: unknown;
  try {
    raw = JSON.parse(parsed.payload.toString('utf8'));
  } catch {
    reject('the signed statement is not valid JSON');
  }
  const r = StatementSchema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0]!;
    reject(`the signed statement is malformed: ${i.path.join('.') || '(top level)'}: ${i.message}`);
  }
  const st = r.data!;
  if (st._type !== INTOTO_STATEMENT_V1 && st._type !== INTOTO_STATEMENT_V01) reject(`statement type "${st._type.slice(0, 80)}" is not an in-toto statement`);
  if (st.predicateType !== predicateType) {
    reject(
      predicateType === COSIGN_SIGN_PREDICATE_TYPE
        ? `predicate type is "${st.predicateType.slice(0, 100)}", not ${COSIGN_SIGN_PREDICATE_TYPE} (an attestation is not an image signature)`
        : `predicate type is "${st.predicateType.slice(0, 100)}", not ${predicateType}`,
    );
  }
  const { algorithm, hex } = parseDigest(digest);
  const subject = st.subject.find((s) => s.digest[algorithm] === hex);
  if (!subject) {
    const named = st.subject[0]?.digest[algorithm] ?? Object.values(st.subject[0]?.digest ?? {})[0] ?? '?';
    reject(`the statement was signed for ${algorithm}:${String(named).slice(0, 64)}, not ${digest}`);
  }
  const annotations: Record<string, string> = {};
  for (const [k, v] of Object.entries(subject!.annotations ?? {})) if (typeof v === 'string') annotations[k] = v;
  return { annotations, predicateType: st.predicateType, statement: st as Record<string, unknown> };
}

// ---------------------------------------------------------------------------------------------
// Legacy (`.sig`) signatures
// ---------------------------------------------------------------------------------------------

const PayloadSchema = z
  .object({
    critical: z
      .object({
        identity: z.object({ 'docker-reference': z.string().max(1024) }).passthrough(),
        image: z.object({ 'docker-manifest-digest': z.string().max(256) }).passthrough(),
        type: z.string().max(256),
      })
      .passthrough(),
    optional: z.record(z.string(), z.unknown()).nullable().optional(),
  })
  .passthrough();

export interface PayloadFacts {
  dockerReference: string;
  annotations: Record<string, string>;
}

/** Normalise `host/repo` the way go-containerregistry names repositories (Docker Hub aliases). */
export function normaliseRepository(ref: string): string {
  let s = ref.replace(/^docker:\/\//, '');
  s = s.replace(/@sha256:[a-f0-9]{64}$/, '');
  const slash = s.indexOf('/');
  const last = s.lastIndexOf('/');
  const colon = s.lastIndexOf(':');
  if (colon > last && colon > -1 && slash > -1) s = s.slice(0, colon); // drop a tag
  const first = slash < 0 ? '' : s.slice(0, slash);
  if (['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com'].includes(first)) {
    const rest = s.slice(slash + 1);
    return `index.docker.io/${rest.includes('/') ? rest : `library/${rest}`}`;
  }
  return s;
}

/**
 * The simple-signing payload: it must parse (a payload that does not is an error, never a skip),
 * be cosign's type, name the digest kbundle hashed, and — when both are known — the repository.
 */
export function checkLegacyPayload(payload: Buffer, digest: string, repository?: string): PayloadFacts {
  let raw: unknown;
  try {
    raw = JSON.parse(payload.toString('utf8'));
  } catch {
    reject('the signed payload is not valid JSON');
  }
  const r = PayloadSchema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0]!;
    reject(`the signed payload is not a cosign simple-signing payload: ${i.path.join('.') || '(top level)'}: ${i.message}`);
  }
  const p = r.data!;
  if (p.critical.type !== COSIGN_SIGNATURE_TYPE) reject(`payload type is "${p.critical.type.slice(0, 80)}", not "${COSIGN_SIGNATURE_TYPE}"`);
  const named = p.critical.image['docker-manifest-digest'];
  if (named !== digest) reject(`the payload was signed for ${named.slice(0, 80)}, not ${digest}`);
  const ref = p.critical.identity['docker-reference'];
  if (repository && ref && normaliseRepository(ref) !== normaliseRepository(repository)) {
    reject(`the payload was signed for repository ${ref.slice(0, 200)}, not ${repository}`);
  }
  const annotations: Record<string, string> = {};
  for (const [k, v] of Object.entries(p.optional ?? {})) if (typeof v === 'string') annotations[k] = v;
  return { dockerReference: ref, annotations };
}

const RekorBundleSchema = z.object({
  SignedEntryTimestamp: b64(4096),
  Payload: z.object({
    body: b64(Math.ceil((Limits.maxSignatureBlob * 4) / 3) + 4),
    integratedTime: z.number().int().nonnegative(),
    logIndex: z.number().int().nonnegative(),
    logID: z.string().regex(/^[a-f0-9]{1,128}$/, 'not hex'),
  }),
});

const RFC3161Schema = z.object({ SignedRFC3161Timestamp: b64(Math.ceil((Limits.maxTimestampBytes * 4) / 3) + 4) });

function annotationJson<T>(schema: z.ZodType<T>, text: string, what: string): T {
  if (text.length > Limits.maxAnnotation) reject(`${what} annotation is over ${Limits.maxAnnotation} bytes`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    reject(`${what} annotation is not valid JSON`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) reject(`${what} annotation is malformed (${r.error.issues[0]!.path.join('.')}: ${r.error.issues[0]!.message})`);
  return r.data!;
}

interface LegacyMaterial {
  certDer?: Buffer;
  tlogEntries: TransparencyLogEntry[];
  rfc3161Timestamps: { signedTimestamp: Buffer }[];
}

/** cosign's certificate, Rekor bundle and RFC 3161 layer annotations, checked and decoded. */
function legacyMaterial(annotations: Record<string, string>): LegacyMaterial {
  let certDer: Buffer | undefined;
  const certText = annotations[Annotations.Certificate];
  if (certText) {
    if (certText.length > Limits.maxAnnotation) reject('certificate annotation is too large');
    let blocks;
    try {
      blocks = parsePemBlocks(certText);
    } catch {
      reject('certificate annotation is not PEM');
    }
    if (blocks!.length !== 1 || blocks![0]!.type !== 'CERTIFICATE') reject('certificate annotation does not hold exactly one certificate');
    certDer = blocks![0]!.der;
  }

  const tlogEntries: TransparencyLogEntry[] = [];
  const rekorText = annotations[Annotations.Bundle];
  if (rekorText) {
    const rb = annotationJson(RekorBundleSchema, rekorText, 'Rekor bundle');
    const body = Buffer.from(rb.Payload.body, 'base64');
    let kind: { kind?: unknown; apiVersion?: unknown };
    try {
      kind = JSON.parse(body.toString('utf8')) as { kind?: unknown; apiVersion?: unknown };
    } catch {
      return reject('the Rekor entry body is not JSON');
    }
    if (typeof kind.kind !== 'string' || typeof kind.apiVersion !== 'string') reject('the Rekor entry body names no kind');
    tlogEntries.push({
      logIndex: String(rb.Payload.logIndex),
      logId: { keyId: Buffer.from(rb.Payload.logID, 'hex') },
      kindVersion: { kind: kind.kind as string, version: kind.apiVersion as string },
      integratedTime: String(rb.Payload.integratedTime),
      inclusionPromise: { signedEntryTimestamp: Buffer.from(rb.SignedEntryTimestamp, 'base64') },
      inclusionProof: undefined,
      canonicalizedBody: body,
    });
  }
  const rfc3161Timestamps: { signedTimestamp: Buffer }[] = [];
  const tsText = annotations[Annotations.RFC3161Timestamp];
  if (tsText) rfc3161Timestamps.push({ signedTimestamp: Buffer.from(annotationJson(RFC3161Schema, tsText, 'RFC 3161 timestamp').SignedRFC3161Timestamp, 'base64') });
  return { certDer, tlogEntries, rfc3161Timestamps };
}

function verificationMaterial(m: LegacyMaterial): Bundle['verificationMaterial'] {
  const content: Bundle['verificationMaterial']['content'] = m.certDer
    ? { $case: 'x509CertificateChain', x509CertificateChain: { certificates: [{ rawBytes: m.certDer }] } }
    : { $case: 'publicKey', publicKey: { hint: '' } };
  return { content, tlogEntries: m.tlogEntries, timestampVerificationData: { rfc3161Timestamps: m.rfc3161Timestamps } };
}

/**
 * A legacy layer as signature evidence; `load` builds the equivalent in-memory Sigstore bundle
 * (message signature over the payload) so the same verifier checks it: certificate annotation →
 * certificate, Rekor bundle annotation → a log entry with an inclusion promise, RFC 3161
 * annotation → a timestamp.
 */
export function legacyEvidence(payload: Buffer, annotations: Record<string, string>): SignatureEvidence {
  const sigB64 = annotations[Annotations.Signature];
  if (sigB64 === undefined) reject('layer has no dev.cosignproject.cosign/signature annotation');
  const clean = sigB64!.replace(/\s+/g, '');
  if (!clean || clean.length > 4096 || !BASE64.test(clean)) reject('the signature annotation is empty or not base64');
  const signature = Buffer.from(clean, 'base64');
  if (signature.length < 8) reject('the signature annotation is too short to be a signature');
  const material = legacyMaterial(annotations);
  return {
    signed: payload,
    signature,
    artifact: payload,
    async load(): Promise<Bundle> {
      const { HashAlgorithm } = await import('@sigstore/protobuf-specs');
      return {
        mediaType: BUNDLE_V03_MEDIA_TYPE,
        content: {
          $case: 'messageSignature',
          messageSignature: { messageDigest: { algorithm: HashAlgorithm.SHA2_256, digest: createHash('sha256').update(payload).digest() }, signature },
        },
        verificationMaterial: verificationMaterial(material),
      };
    },
  };
}

const EnvelopeSchema = z
  .object({
    payload: b64(Math.ceil((Limits.maxAttestationBlob * 4) / 3) + 4),
    payloadType: z.string().max(256),
    signatures: z
      .array(z.object({ sig: b64(4096), keyid: z.string().max(256).optional() }).passthrough())
      .min(1)
      .max(16),
  })
  .passthrough();

/**
 * A `.att` layer (cosign's DSSE envelope JSON) as evidence: exactly one signature over the DSSE
 * pre-authentication encoding; `load` builds the in-memory v0.3 bundle from the envelope and the
 * layer's certificate, Rekor and timestamp annotations.
 */
export function legacyAttestationEvidence(envelope: Buffer, annotations: Record<string, string>): ParsedBundle {
  let raw: unknown;
  try {
    raw = JSON.parse(envelope.toString('utf8'));
  } catch {
    reject('the DSSE envelope is not valid JSON');
  }
  const r = EnvelopeSchema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0]!;
    reject(`malformed DSSE envelope: ${i.path.join('.') || '(top level)'}: ${i.message}`);
  }
  const env = r.data!;
  if (env.signatures.length !== 1) reject(`the DSSE envelope has ${env.signatures.length} signatures; exactly one is accepted`);
  const payload = Buffer.from(env.payload, 'base64');
  const signature = Buffer.from(env.signatures[0]!.sig, 'base64');
  if (payload.length === 0 || signature.length === 0) reject('the DSSE envelope has an empty payload or signature');
  const material = legacyMaterial(annotations);
  return {
    payloadType: env.payloadType,
    payload,
    signed: preAuthEncoding(env.payloadType, payload),
    signature,
    async load(): Promise<Bundle> {
      return {
        mediaType: BUNDLE_V03_MEDIA_TYPE,
        content: { $case: 'dsseEnvelope', dsseEnvelope: { payload, payloadType: env.payloadType, signatures: [{ sig: signature, keyid: env.signatures[0]!.keyid ?? '' }] } },
        verificationMaterial: verificationMaterial(material),
      };
    },
  };
}

/** Verify a signature with a pinned key, as @sigstore/verify does (ECDSA/RSA over SHA-256, Ed25519 pure). */
export function signatureVerifies(signed: Buffer, key: KeyObject, signature: Buffer): boolean {
  try {
    return cryptoVerify(key.asymmetricKeyType === 'ed25519' ? null : 'sha256', signed, key, signature);
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Binding log entries to the signing key
// ---------------------------------------------------------------------------------------------

function pemOrDer(b64text: string): Buffer[] {
  const raw = Buffer.from(b64text, 'base64');
  const text = raw.toString('utf8');
  if (text.includes('-----BEGIN')) {
    try {
      return parsePemBlocks(text).map((b) => b.der);
    } catch {
      return [];
    }
  }
  return [raw];
}

/** Does this DER (certificate or SPKI) carry `key`? */
function derCarriesKey(der: Buffer, key: KeyObject): boolean {
  const want = key.export({ format: 'der', type: 'spki' });
  try {
    return new NodeX509(der).publicKey.export({ format: 'der', type: 'spki' }).equals(want);
  } catch {
    /* not a certificate */
  }
  try {
    return createPublicKey({ key: der, format: 'der', type: 'spki' }).export({ format: 'der', type: 'spki' }).equals(want);
  } catch {
    return false;
  }
}

/* eslint-disable @typescript-eslint/no-explicit-any -- hostile Rekor entry JSON, every field checked with typeof before use */
function verifierMaterial(body: Record<string, any>, kind: string, version: string): string[] {
  const spec = body.spec ?? {};
  if (kind === 'hashedrekord' && version === '0.0.1') return [spec.signature?.publicKey?.content].filter((x) => typeof x === 'string');
  if (kind === 'dsse' && version === '0.0.1') return (Array.isArray(spec.signatures) ? spec.signatures : []).map((s: any) => s?.verifier).filter((x: unknown) => typeof x === 'string');
  if (kind === 'intoto' && version === '0.0.2')
    return (Array.isArray(spec.content?.envelope?.signatures) ? spec.content.envelope.signatures : []).map((s: any) => s?.publicKey).filter((x: unknown) => typeof x === 'string');
  // Rekor v2 entries (protobuf JSON): the verifier is raw DER bytes.
  const v2 = spec.spec ?? spec;
  const sigs = v2.dsseV002?.signatures ?? (v2.hashedRekordV002?.signature ? [v2.hashedRekordV002.signature] : []);
  return (Array.isArray(sigs) ? sigs : []).map((s: any) => s?.verifier?.x509Certificate?.rawBytes ?? s?.verifier?.publicKey?.rawBytes).filter((x: unknown) => typeof x === 'string');
}
/* eslint-enable @typescript-eslint/no-explicit-any */

/**
 * A log entry proves inclusion of *its* body; @sigstore/verify 3.x checks that the body names the
 * signature and digest, not the key. Require every entry to name the key that verified the signature.
 */
export function checkTlogKeyBinding(bundle: Bundle, key: KeyObject): void {
  for (const e of bundle.verificationMaterial.tlogEntries) {
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(e.canonicalizedBody.toString('utf8')) as Record<string, unknown>;
    } catch {
      return reject('a transparency-log entry body is not JSON');
    }
    const material = verifierMaterial(body, e.kindVersion.kind, e.kindVersion.version);
    if (material.length === 0) reject(`transparency-log entry (${e.kindVersion.kind} ${e.kindVersion.version}) names no verification key`);
    const ok = material.every((m) => pemOrDer(m).some((der) => derCarriesKey(der, key)));
    if (!ok) reject('the transparency-log entry was made for another key or certificate');
  }
}

/** Certificate (DER) of a bundle's verification material, if it has one. */
export function bundleCertificate(bundle: Bundle): Buffer | undefined {
  const c = bundle.verificationMaterial.content;
  if (c.$case === 'certificate') return Buffer.from(c.certificate.rawBytes);
  if (c.$case === 'x509CertificateChain') return Buffer.from(c.x509CertificateChain.certificates[0]!.rawBytes);
  return undefined;
}

/**
 * The same bundle judged by a pinned key only: any certificate it carries is ignored, and so are
 * RFC 3161 timestamps (a key does not expire; an unverifiable timestamp must not fail it).
 * Transparency-log entries are kept only when the policy requires one.
 */
export function asKeyedBundle(bundle: Bundle, keepTlog: boolean): Bundle {
  return {
    ...bundle,
    verificationMaterial: {
      content: { $case: 'publicKey', publicKey: { hint: '' } },
      tlogEntries: keepTlog ? bundle.verificationMaterial.tlogEntries : [],
      timestampVerificationData: { rfc3161Timestamps: [] },
    },
  };
}
