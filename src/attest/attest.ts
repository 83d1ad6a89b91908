/**
 * `attestImage`: sign an in-toto statement about an image digest (a DSSE envelope, keyed or
 * keyless) and store it the two ways cosign does: as a layer of `sha256-<hex>.att` (legacy) and
 * as a Sigstore v0.3 bundle referrer carrying the predicate type (`--new-bundle-format`). One
 * signature serves both, as cosign derives its legacy layer from the bundle it signed.
 */
import { digestOf } from '../oci/digest.js';
import { isIndexMediaType, isManifestMediaType } from '../oci/mediatypes.js';
import { fetchBytes, type Target } from '../oci/target.js';
import type { Descriptor } from '../oci/types.js';
import { Annotations, attestationStatement, type StatementSubject, DSSE_ENVELOPE_MEDIA_TYPE, dsseEnvelopeJson, PREDICATE_TYPE_ANNOTATION } from '../attach/formats.js';
import { appendAttachedLayer } from '../attach/legacy.js';
import { attachmentTag } from '../attach/tags.js';
import { KbError, UserError } from '../errors.js';
import { legacyAnnotationsOf, pushBundleReferrer, serializeBundle, SigningSession, type SignatureFormat, type SignOptions } from '../sign/sign.js';
import type { Predicate } from './predicate.js';

export interface AttestOptions extends Omit<SignOptions, 'formats' | 'annotations' | 'recursive' | 'dockerReference'> {
  predicate: Predicate;
  /** Statement subject name (cosign: the repository, e.g. `host/repo`). */
  subjectName?: string;
  /** Further subjects of the statement (e.g. the platform image an SBOM describes). */
  moreSubjects?: StatementSubject[];
  /** Where to store it (default both). */
  formats?: SignatureFormat[];
  /** Legacy: drop the `.att` layers with the same predicate type first (cosign `--replace`). */
  replace?: boolean;
}

export interface WrittenAttestation {
  format: SignatureFormat;
  /** Referrer manifest digest (bundle) or `sha256-….att` (legacy). */
  location: string;
  added: boolean;
}

export interface AttestResult {
  digest: string;
  predicateType: string;
  /** sha256 of the signed statement. */
  statement: string;
  attestations: WrittenAttestation[];
  signer: string;
}

export async function attestImage(target: Target, root: Descriptor, opts: AttestOptions): Promise<AttestResult> {
  const formats = opts.formats ?? ['bundle', 'legacy'];
  if (formats.length === 0) throw new UserError('attest: no format selected');
  if (!isManifestMediaType(root.mediaType) && !isIndexMediaType(root.mediaType)) throw new KbError('UNSUPPORTED', `${target.name}@${root.digest}: ${root.mediaType} is not an image manifest or index`);
  // The subject is the digest of the bytes that are there, whatever a tag or header said.
  const bytes = await fetchBytes(target, root);
  if (digestOf(bytes) !== root.digest) throw new KbError('DIGEST_MISMATCH', `${target.name}: the manifest bytes do not hash to ${root.digest}`);
  const subject: Descriptor = { mediaType: root.mediaType, digest: root.digest, size: bytes.length };
  const session = new SigningSession({ ...opts, formats });
  const now = (opts.now ?? (() => new Date()))();
  const statement = attestationStatement(subject.digest, opts.subjectName ?? '', opts.predicate.type, opts.predicate.json, opts.moreSubjects);
  const type = opts.predicate.type;

  const out: WrittenAttestation[] = [];
  let signed: Awaited<ReturnType<SigningSession['dsseBundle']>> | undefined;
  const sign = async () => (signed ??= await session.dsseBundle(statement));

  if (formats.includes('legacy')) {
    const tag = attachmentTag(subject.digest, 'att');
    let envelope: Buffer | undefined;
    const added = await appendAttachedLayer(
      target,
      tag,
      async () => {
        const b = await sign();
        if (b.content.$case !== 'dsseEnvelope') throw new Error('unexpected bundle content');
        const env = b.content.dsseEnvelope;
        envelope = dsseEnvelopeJson({ payload: env.payload, payloadType: env.payloadType, signatures: env.signatures.map((s) => ({ sig: s.sig, keyid: s.keyid })) });
        // cosign: `predicateType`, an empty signature annotation (the signature is in the envelope), then what the bundle carries.
        return { payload: envelope, mediaType: DSSE_ENVELOPE_MEDIA_TYPE, annotations: { [PREDICATE_TYPE_ANNOTATION]: type, [Annotations.Signature]: '', ...legacyAnnotationsOf(b) } };
      },
      {
        duplicate: (l) => !!envelope && l.digest === digestOf(envelope),
        drop: opts.replace ? (l) => l.annotations?.[PREDICATE_TYPE_ANNOTATION] === type : undefined,
      },
    );
    out.push({ format: 'legacy', location: tag, added });
  }
  if (formats.includes('bundle')) {
    const location = await pushBundleReferrer(target, subject, serializeBundle(await sign()), now, type);
    out.push({ format: 'bundle', location, added: true });
  }
  return { digest: subject.digest, predicateType: type, statement: digestOf(statement), attestations: out, signer: session.hint ? `key ${session.hint}` : 'keyless' };
}
