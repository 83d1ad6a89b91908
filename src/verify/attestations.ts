/**
 * `verifyAttestations`: find an image's attestations in both cosign layouts (`sha256-<hex>.att`
 * layers and Sigstore bundle referrers), keep those of the wanted predicate type, and accept a
 * statement only when its DSSE payload is an in-toto statement of that type whose subject is the
 * digest kbundle hashed, whose predicate matches its type, and whose signature satisfies a signer
 * (the same key / keyless checks as image signatures, src/verify/verify.ts).
 */
import { errorMessage, KbError, UserError } from '../errors.js';
import { isManifestMediaType, MediaType } from '../oci/mediatypes.js';
import { fetchBytes, tryResolveWithBytes, type Target } from '../oci/target.js';
import { MAX_MANIFEST_BYTES, parseManifest, type Descriptor } from '../oci/types.js';
import { Annotations, BUNDLE_V03_MEDIA_TYPE, COSIGN_SIGN_PREDICATE_TYPE, DSSE_ENVELOPE_MEDIA_TYPE, PREDICATE_TYPE_ANNOTATION } from '../attach/formats.js';
import { listReferrers } from '../attach/referrers.js';
import { attachmentTag } from '../attach/tags.js';
import { mapPool } from '../util/pool.js';
import { predicateProblem, predicateTypeName, provenanceBuilderId } from '../attest/predicate.js';
import { checkStatement, legacyAttestationEvidence, parseImageBundle, Rejection, type ParsedBundle } from './evidence.js';
import { Limits } from './limits.js';
import type { AttestationRequirement, SignatureFormat, SignerRequirement } from './requirements.js';
import { checkRequirement, explain, fetchCapped, type VerifiedSigner } from './verify.js';

/** One statement that verified, with the signer it satisfied. */
export interface VerifiedAttestation extends VerifiedSigner {
  predicateType: string;
  /** The in-toto statement (subject, predicateType, predicate). */
  statement: Record<string, unknown>;
}

export interface RejectedAttestation {
  format: SignatureFormat;
  location: string;
  reason: string;
}

export interface AttestationResult {
  attestations: VerifiedAttestation[];
  rejected: RejectedAttestation[];
}

interface Candidate {
  format: SignatureFormat;
  location: string;
  desc?: Descriptor;
  annotations?: Record<string, string>;
  failure?: string;
}

const short = (d: string): string => `${d.slice(0, 19)}…`;

interface Discovery {
  candidates: Candidate[];
  /** Predicate types seen on attestations of other types (for the message when none matches). */
  others: Set<string>;
}

async function discoverLegacy(target: Target, digest: string, type: string, d: Discovery): Promise<void> {
  const tag = attachmentTag(digest, 'att');
  let desc: Descriptor | undefined;
  let bytes: Buffer | undefined;
  try {
    ({ desc, bytes } = (await tryResolveWithBytes(target, tag)) ?? {});
    if (!desc) return;
    if (!isManifestMediaType(desc.mediaType)) throw new Rejection(`the attestation tag points at ${desc.mediaType}, not an image manifest`);
    bytes ??= await fetchBytes(target, desc);
  } catch (e) {
    d.candidates.push({ format: 'legacy', location: tag, failure: e instanceof Rejection ? e.reason : `cannot read the attestation tag (${errorMessage(e)})` });
    return;
  }
  let layers: Descriptor[];
  try {
    layers = parseManifest(bytes, desc.mediaType, 'the attestation manifest is unusable').layers;
  } catch (e) {
    d.candidates.push({ format: 'legacy', location: tag, failure: errorMessage(e) });
    return;
  }
  if (layers.length > Limits.maxSignatureLayers) {
    d.candidates.push({ format: 'legacy', location: tag, failure: `${layers.length} layers, over the limit of ${Limits.maxSignatureLayers}` });
    return;
  }
  layers.forEach((l, i) => {
    const location = `${tag} layer ${i + 1}`;
    const annotated = l.annotations?.[PREDICATE_TYPE_ANNOTATION];
    if (annotated !== undefined && annotated !== type) {
      d.others.add(annotated);
      return;
    }
    if (l.mediaType !== DSSE_ENVELOPE_MEDIA_TYPE) {
      d.candidates.push({ format: 'legacy', location, failure: `layer media type ${l.mediaType.slice(0, 80)} is not ${DSSE_ENVELOPE_MEDIA_TYPE}` });
      return;
    }
    d.candidates.push({ format: 'legacy', location, desc: l, annotations: l.annotations ?? {} });
  });
}

async function discoverBundles(target: Target, subject: Descriptor, type: string, d: Discovery): Promise<void> {
  let refs: Descriptor[];
  try {
    refs = await listReferrers(target, subject);
  } catch (e) {
    d.candidates.push({ format: 'bundle', location: 'referrers', failure: `cannot list referrers (${errorMessage(e)})` });
    return;
  }
  if (refs.length > Limits.maxReferrers) {
    d.candidates.push({ format: 'bundle', location: 'referrers', failure: `${refs.length} referrers, over the limit of ${Limits.maxReferrers}` });
    return;
  }
  for (const r of refs) {
    if (r.artifactType && r.artifactType !== BUNDLE_V03_MEDIA_TYPE) continue; // SBOM documents, other artifacts
    const annotated = r.annotations?.[Annotations.BundlePredicateType];
    if (annotated === COSIGN_SIGN_PREDICATE_TYPE) continue; // an image signature
    if (annotated !== undefined && annotated !== type) {
      d.others.add(annotated);
      continue;
    }
    d.candidates.push({ format: 'bundle', location: `referrer ${short(r.digest)}`, desc: r });
  }
}

/** The referrer manifest and its one bundle layer, checked, then the bundle parsed. */
async function readBundle(target: Target, c: Candidate, subject: Descriptor): Promise<ParsedBundle> {
  const desc = c.desc!;
  if (desc.mediaType !== MediaType.OciManifest) throw new Rejection(`referrer is ${desc.mediaType}, not an OCI image manifest`);
  const bytes = await fetchCapped(target, desc, MAX_MANIFEST_BYTES, 'referrer manifest');
  let m;
  try {
    m = parseManifest(bytes, desc.mediaType, 'referrer manifest');
  } catch (e) {
    throw new Rejection(errorMessage(e));
  }
  if (m.subject?.digest !== subject.digest) throw new Rejection(`the referrer's subject is ${m.subject?.digest ?? 'missing'}, not ${subject.digest}`);
  if (m.layers.length !== 1) throw new Rejection(`the referrer has ${m.layers.length} layers; exactly one Sigstore bundle layer is accepted`);
  if (m.layers[0]!.mediaType !== BUNDLE_V03_MEDIA_TYPE) throw new Rejection(`the referrer's layer media type ${m.layers[0]!.mediaType.slice(0, 80)} is not ${BUNDLE_V03_MEDIA_TYPE}`);
  return parseImageBundle(await fetchCapped(target, m.layers[0]!, Limits.maxAttestationBlob, 'bundle'), Limits.maxAttestationBlob);
}

interface Read {
  parsed: ParsedBundle;
  predicateType: string;
  statement: Record<string, unknown>;
}

async function read(target: Target, c: Candidate, subject: Descriptor, req: AttestationRequirement): Promise<Read> {
  let parsed: ParsedBundle;
  if (c.format === 'bundle') {
    parsed = await readBundle(target, c, subject);
  } else {
    parsed = legacyAttestationEvidence(await fetchCapped(target, c.desc!, Limits.maxAttestationBlob, 'attestation'), c.annotations ?? {});
  }
  const facts = checkStatement(parsed, subject.digest, req.predicateType);
  const problem = predicateProblem(req.predicateType, facts.statement.predicate);
  if (problem) throw new Rejection(`the predicate is not a ${predicateTypeName(req.predicateType)} predicate: ${problem}`);
  if (req.builderId !== undefined) {
    const id = provenanceBuilderId(req.predicateType, facts.statement.predicate);
    if (id !== req.builderId) throw new Rejection(`provenance builder id is "${(id ?? 'none').slice(0, 200)}", not "${req.builderId}"`);
  }
  return { parsed, predicateType: facts.predicateType, statement: facts.statement };
}

/**
 * Verify the attestations of `subject` (whose digest the caller computed from the manifest bytes)
 * against `req`. Returns the statements that verified and why the others did not; throws a
 * REFUSED KbError when none verified (or, with `require: all`, when a signer signed none).
 */
export async function verifyAttestations(target: Target, subject: Descriptor, req: AttestationRequirement, opts: { display?: string; require?: 'any' | 'all' } = {}): Promise<AttestationResult> {
  if (req.signers.length === 0) throw new UserError('the trust policy names no signers for these attestations');
  const display = opts.display ?? `${target.name}@${subject.digest}`;
  const formats = req.formats ?? ['bundle', 'legacy'];
  const d: Discovery = { candidates: [], others: new Set() };
  await Promise.all([
    formats.includes('bundle') ? discoverBundles(target, subject, req.predicateType, d) : undefined,
    formats.includes('legacy') ? discoverLegacy(target, subject.digest, req.predicateType, d) : undefined,
  ]);
  const typeName = predicateTypeName(req.predicateType);
  const readable = d.candidates.filter((c) => !c.failure);
  if (readable.length > Limits.maxAttestations) {
    throw new KbError('REFUSED', `${display}: ${readable.length} attestations of type ${typeName}, more than the limit of ${Limits.maxAttestations}; refusing to verify`);
  }
  if (d.candidates.length === 0) {
    const others = d.others.size ? ` (found: ${[...d.others].map(predicateTypeName).join(', ')})` : '';
    throw new KbError('REFUSED', `${display}: no attestations of type ${typeName}${others}`, { hint: `attest it with: kbundle attest <image> --predicate <file> --type ${typeName}` });
  }

  const rejected: RejectedAttestation[] = d.candidates.filter((c) => c.failure).map((c) => ({ format: c.format, location: c.location, reason: c.failure! }));
  const verified: VerifiedAttestation[] = [];
  const satisfied = new Set<SignerRequirement>();
  await mapPool(readable, 4, async (c) => {
    let r: Read;
    try {
      r = await read(target, c, subject, req);
    } catch (e) {
      rejected.push({ format: c.format, location: c.location, reason: explain(e) });
      return;
    }
    const reasons: string[] = [];
    const ev = { sig: r.parsed, annotations: {} };
    for (const signer of req.signers) {
      try {
        const v = await checkRequirement(signer, ev, { format: c.format, location: c.location, digest: subject.digest, annotations: {} });
        verified.push({ ...v, predicateType: r.predicateType, statement: r.statement });
        satisfied.add(signer);
      } catch (e) {
        reasons.push(explain(e));
      }
    }
    if (reasons.length === req.signers.length) rejected.push({ format: c.format, location: c.location, reason: [...new Set(reasons)].join('; ') });
  });
  const order = (a: { location: string }, b: { location: string }) => (a.location < b.location ? -1 : a.location > b.location ? 1 : 0);
  verified.sort(order);
  rejected.sort(order);

  const ok = opts.require === 'all' ? req.signers.every((s) => satisfied.has(s)) : verified.length > 0;
  if (ok) return { attestations: verified, rejected };
  const parts = rejected.slice(0, 4).map((r) => `[${r.format} ${r.location}] ${r.reason}`);
  if (rejected.length > 4) parts.push(`… and ${rejected.length - 4} more`);
  const unmet =
    opts.require === 'all'
      ? ` (unsatisfied: ${req.signers
          .filter((s) => !satisfied.has(s))
          .map((s) => s.name)
          .join(', ')})`
      : '';
  throw new KbError('REFUSED', `${display}: attestation verification failed for type ${typeName}${unmet}: ${parts.join(' | ') || 'no attestation verified'}`);
}

/** A statement attached to an image, read but not verified. */
export interface AttachedStatement {
  format: SignatureFormat;
  location: string;
  evidence: ParsedBundle;
  statement: Record<string, unknown>;
}

/**
 * The statements of `predicateType` attached to `subject` that parse and name its digest, with
 * their signatures NOT checked: for writers deciding whether an attestation is already there
 * (`catalog publish --attest`), never for trusting one.
 */
export async function readAttachedStatements(target: Target, subject: Descriptor, predicateType: string, formats: SignatureFormat[] = ['bundle', 'legacy']): Promise<AttachedStatement[]> {
  const d: Discovery = { candidates: [], others: new Set() };
  await Promise.all([
    formats.includes('bundle') ? discoverBundles(target, subject, predicateType, d) : undefined,
    formats.includes('legacy') ? discoverLegacy(target, subject.digest, predicateType, d) : undefined,
  ]);
  const out: AttachedStatement[] = [];
  await mapPool(d.candidates.filter((c) => !c.failure).slice(0, Limits.maxAttestations), 4, async (c) => {
    try {
      const r = await read(target, c, subject, { predicateType, signers: [] });
      out.push({ format: c.format, location: c.location, evidence: r.parsed, statement: r.statement });
    } catch {
      /* unreadable or for another digest: not one of ours */
    }
  });
  return out;
}
