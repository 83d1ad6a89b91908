/**
 * `signImage`: sign a manifest digest with a key or keylessly (Fulcio certificate, Rekor entry,
 * optional RFC 3161 timestamp) and store the signature the way cosign does — as a Sigstore v0.3
 * bundle referrer, as a layer appended to `sha256-<hex>.sig`, or both.
 */
import { generateKeyPairSync, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { bundleToJSON, type Bundle } from '@sigstore/bundle';
import { DSSEBundleBuilder, FulcioSigner, InternalError, MessageSignatureBundleBuilder, RekorWitness, TSAWitness, type Signature, type Signer, type Witness } from '@sigstore/sign';
import { codeForHttpStatus, KbError, UserError, type ErrorCode } from '../errors.js';
import { digestOf } from '../oci/digest.js';
import { isIndexMediaType, isManifestMediaType, MediaType } from '../oci/mediatypes.js';
import { parseIndex, type Descriptor } from '../oci/types.js';
import { fetchBytes, type Target } from '../oci/target.js';
import {
  Annotations,
  bundleReferrerManifest,
  EMPTY_DESCRIPTOR,
  EMPTY_JSON,
  INTOTO_PAYLOAD_TYPE,
  rekorBundleAnnotation,
  rfc3161Annotation,
  signatureTag,
  signStatement,
  simpleSigningPayload,
  SIMPLE_SIGNING_MEDIA_TYPE,
  BUNDLE_V03_MEDIA_TYPE,
} from '../attach/formats.js';
import { keyHint, publicKeyPem, toPem, type LoadedPrivateKey } from './keys.js';
import { attachReferrer } from '../attach/referrers.js';
import { appendAttachedLayer } from '../attach/legacy.js';
import { mapPool, settleAll } from '../util/pool.js';

export type SignatureFormat = 'bundle' | 'legacy';

export interface KeylessOptions {
  /** OIDC identity token (JWT) presented to Fulcio, or where to get one when Fulcio is called. */
  identityToken: string | (() => Promise<string>);
  fulcioURL: string;
}

export interface SignOptions {
  /** Keyed signing (cosign `--key`). Exactly one of `key` / `keyless`. */
  key?: LoadedPrivateKey;
  keyless?: KeylessOptions;
  /** Formats to write (default both). */
  formats?: SignatureFormat[];
  /** Upload to this Rekor (default: none for keys; required for keyless unless a TSA is given). */
  rekorURL?: string;
  /** Rekor entry type for bundles: `dsse` (cosign 3) or `intoto`. */
  rekorEntryType?: 'dsse' | 'intoto';
  /** RFC 3161 timestamp authority. */
  tsaURL?: string;
  /** Signed annotations (cosign `-a k=v`): legacy `optional`, statement subject annotations. */
  annotations?: Record<string, string>;
  /** `critical.identity.docker-reference` of legacy payloads (cosign: the repository). */
  dockerReference?: string;
  /** Also sign every manifest of an index (cosign `--recursive`). */
  recursive?: boolean;
  /** Clock for the referrer's `org.opencontainers.image.created` (tests). */
  now?: () => Date;
  /** Network timeout for Fulcio/Rekor/TSA calls, ms. */
  timeoutMs?: number;
}

export interface WrittenSignature {
  format: SignatureFormat;
  /** Referrer manifest digest (bundle) or `sha256-….sig` (legacy). */
  location: string;
  /** Legacy: false when an identical signature by this key was already there. */
  added: boolean;
}

export interface SignedManifest {
  digest: string;
  mediaType: string;
  signatures: WrittenSignature[];
}

export interface SignResult {
  root: SignedManifest;
  children: SignedManifest[];
  /** Keyless: the certificate identity; keyed: the key hint. */
  signer: string;
}

/** A pinned key as a @sigstore/sign Signer; the hint goes into the bundle afterwards (cosign leaves keyid empty). */
export class KeySigner implements Signer {
  readonly pem: string;
  constructor(private readonly key: LoadedPrivateKey) {
    this.pem = publicKeyPem(key.publicKey);
  }
  async sign(data: Buffer): Promise<Signature> {
    return { signature: cryptoSign('sha256', data, this.key.privateKey), key: { $case: 'publicKey', publicKey: this.pem } };
  }
}

/** An ephemeral P-256 key held in memory for one run (what Fulcio certifies). */
class EphemeralKey implements Signer {
  private readonly pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  async sign(data: Buffer): Promise<Signature> {
    return { signature: cryptoSign('sha256', data, this.pair.privateKey), key: { $case: 'publicKey', publicKey: publicKeyPem(this.pair.publicKey) } };
  }
}

/** One Fulcio certificate per run, reused for every signature the run makes (like cosign). */
export class KeylessSigner implements Signer {
  private readonly holder = new EphemeralKey();
  private readonly fulcio: FulcioSigner;
  /** The first signature, which obtains the run's one certificate; later ones wait for it. */
  private first?: Promise<Signature>;
  constructor(opts: KeylessOptions, timeoutMs: number) {
    this.fulcio = new FulcioSigner({
      fulcioBaseURL: opts.fulcioURL,
      identityProvider: { getToken: async () => (typeof opts.identityToken === 'string' ? opts.identityToken : opts.identityToken()) },
      keyHolder: this.holder,
      timeout: timeoutMs,
      retry: 2,
    });
  }
  async sign(data: Buffer): Promise<Signature> {
    if (!this.first) {
      // Signatures made at once (both formats) must share the one certificate, not ask Fulcio twice.
      this.first = this.fulcio.sign(data);
      return this.first;
    }
    const { key } = await this.first;
    if (key.$case !== 'x509Certificate') throw new Error('keyless signing: Fulcio gave no certificate');
    const s = await this.holder.sign(data);
    return { signature: s.signature, key: { $case: 'x509Certificate', certificate: key.certificate } };
  }
}

/** Which service a @sigstore/sign InternalError code names, for the hint. */
const SIGNING_SERVICE_HINTS: Record<string, string> = {
  CA_CREATE_SIGNING_CERTIFICATE_ERROR: 'check --fulcio-url and that the identity token is valid and not expired',
  TLOG_CREATE_ENTRY_ERROR: 'check --rekor-url, or sign without a transparency log (--tlog-upload=false)',
  TSA_CREATE_TIMESTAMP_ERROR: 'check --tsa-url',
};

/** The kind of failure from the HTTP status of the service's answer (none: the network failed). */
function signingServiceCode(cause: unknown): ErrorCode {
  const status = (cause as { statusCode?: unknown } | undefined)?.statusCode;
  return typeof status === 'number' ? codeForHttpStatus(status) : 'TRANSIENT';
}

export function explainSigningError(e: unknown, what: string): unknown {
  if (!(e instanceof InternalError)) return e;
  const cause = e.cause instanceof Error && e.cause.message ? `: ${e.cause.message}` : '';
  return new KbError(signingServiceCode(e.cause), `${what}: ${e.message}${cause}`, { hint: SIGNING_SERVICE_HINTS[e.code], cause: e });
}

function certificateOf(b: Bundle): Buffer | undefined {
  const c = b.verificationMaterial.content;
  if (c.$case === 'certificate') return Buffer.from(c.certificate.rawBytes);
  if (c.$case === 'x509CertificateChain') return Buffer.from(c.x509CertificateChain.certificates[0]!.rawBytes);
  return undefined;
}

/** Serialise a bundle as cosign (sigstore-go protojson) does: empty lists and messages left out. */
export function serializeBundle(b: Bundle): Buffer {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- protobuf JSON pruned in place, shape known from @sigstore/bundle
  const json = bundleToJSON(b) as Record<string, any>;
  const vm = json.verificationMaterial ?? {};
  if (Array.isArray(vm.tlogEntries) && vm.tlogEntries.length === 0) delete vm.tlogEntries;
  const ts = vm.timestampVerificationData;
  if (ts && (!Array.isArray(ts.rfc3161Timestamps) || ts.rfc3161Timestamps.length === 0)) delete vm.timestampVerificationData;
  return Buffer.from(JSON.stringify(json));
}

/**
 * cosign's `dev.sigstore.cosign/*` layer annotations for what a bundle carries besides the
 * signature: the certificate (and an empty chain), the Rekor entry as a RekorBundle (when it has
 * an inclusion promise), the first RFC 3161 timestamp.
 */
export function legacyAnnotationsOf(b: Bundle): Record<string, string> {
  const annotations: Record<string, string> = {};
  const cert = certificateOf(b);
  if (cert) {
    annotations[Annotations.Certificate] = toPem('CERTIFICATE', cert);
    annotations[Annotations.Chain] = '';
  }
  const entry = b.verificationMaterial.tlogEntries[0];
  if (entry?.inclusionPromise) {
    annotations[Annotations.Bundle] = rekorBundleAnnotation({
      SignedEntryTimestamp: entry.inclusionPromise.signedEntryTimestamp.toString('base64'),
      Payload: { body: entry.canonicalizedBody.toString('base64'), integratedTime: Number(entry.integratedTime), logIndex: Number(entry.logIndex), logID: entry.logId.keyId.toString('hex') },
    });
  }
  const ts = b.verificationMaterial.timestampVerificationData?.rfc3161Timestamps[0];
  if (ts) annotations[Annotations.RFC3161Timestamp] = rfc3161Annotation(Buffer.from(ts.signedTimestamp));
  return annotations;
}

/** One signing run: the key (or one Fulcio certificate) and the witnesses every signature of the run uses. */
export class SigningSession {
  readonly signer: Signer;
  readonly dsseWitnesses: Witness[] = [];
  readonly messageWitnesses: Witness[] = [];
  readonly hint?: string;
  readonly publicKey?: KeyObject;

  constructor(private readonly opts: SignOptions) {
    const timeout = opts.timeoutMs ?? 30_000;
    if (!!opts.key === !!opts.keyless) throw new UserError('sign: give exactly one of a key or a keyless identity token');
    if (opts.key) {
      this.signer = new KeySigner(opts.key);
      this.hint = keyHint(opts.key.publicKey);
      this.publicKey = opts.key.publicKey;
    } else {
      if (!opts.rekorURL && !opts.tsaURL)
        throw new UserError(
          'keyless signing needs a transparency log (--rekor-url) or a timestamp authority (--tsa-url)',
          'a Fulcio certificate is valid for minutes; verifiers need signing-time evidence',
        );
      this.signer = new KeylessSigner(opts.keyless!, timeout);
    }
    if (opts.rekorURL) {
      this.dsseWitnesses.push(new RekorWitness({ rekorBaseURL: opts.rekorURL, entryType: opts.rekorEntryType ?? 'dsse', fetchOnConflict: true, timeout, retry: 2 }));
      this.messageWitnesses.push(new RekorWitness({ rekorBaseURL: opts.rekorURL, fetchOnConflict: true, timeout, retry: 2 }));
    }
    if (opts.tsaURL) {
      const tsa = new TSAWitness({ tsaBaseURL: opts.tsaURL, timeout, retry: 2 });
      this.dsseWitnesses.push(tsa);
      this.messageWitnesses.push(tsa);
    }
  }

  /** A v0.3 bundle: DSSE envelope over an in-toto `statement`, with the run's witnesses. */
  async dsseBundle(statement: Buffer): Promise<Bundle> {
    let b: Bundle;
    try {
      b = await new DSSEBundleBuilder({ signer: this.signer, witnesses: this.dsseWitnesses, certificateChain: false }).create({ data: statement, type: INTOTO_PAYLOAD_TYPE });
    } catch (e) {
      throw explainSigningError(e, 'signing failed');
    }
    if (this.hint && b.verificationMaterial.content.$case === 'publicKey') b.verificationMaterial.content.publicKey.hint = this.hint;
    return b;
  }

  /** cosign's v0.3 bundle over the in-toto statement for `digest`. */
  async bundleFor(digest: string): Promise<Buffer> {
    return serializeBundle(await this.dsseBundle(signStatement(digest, this.opts.annotations)));
  }

  /** A legacy layer: the simple-signing payload and cosign's annotations. */
  async legacyLayer(digest: string): Promise<{ payload: Buffer; annotations: Record<string, string> }> {
    const payload = simpleSigningPayload(this.opts.dockerReference ?? '', digest, this.opts.annotations && Object.keys(this.opts.annotations).length ? this.opts.annotations : undefined);
    let b: Bundle;
    try {
      b = await new MessageSignatureBundleBuilder({ signer: this.signer, witnesses: this.messageWitnesses }).create({ data: payload });
    } catch (e) {
      throw explainSigningError(e, 'signing failed');
    }
    if (b.content.$case !== 'messageSignature') throw new Error('unexpected bundle content');
    const annotations: Record<string, string> = { [Annotations.Signature]: b.content.messageSignature.signature.toString('base64'), ...legacyAnnotationsOf(b) };
    return { payload, annotations };
  }

  /** An identical signature by this key is already there (cosign's dupe detector). */
  isDuplicate(payload: Buffer, layer: Descriptor): boolean {
    if (!this.publicKey || layer.digest !== digestOf(payload)) return false;
    const sig = layer.annotations?.[Annotations.Signature];
    if (!sig) return false;
    try {
      return cryptoVerify('sha256', payload, this.publicKey, Buffer.from(sig, 'base64'));
    } catch {
      return false;
    }
  }
}

/**
 * Push a v0.3 bundle as cosign's referrer of `subject` (WriteReferrer): bundle layer, empty
 * config, the predicate type annotation. Returns the referrer manifest's digest.
 */
export async function pushBundleReferrer(target: Target, subject: Descriptor, blob: Buffer, now: Date, predicateType?: string): Promise<string> {
  const blobDesc: Descriptor = { mediaType: BUNDLE_V03_MEDIA_TYPE, digest: digestOf(blob), size: blob.length };
  await target.push(blobDesc, blob);
  await target.push(EMPTY_DESCRIPTOR, EMPTY_JSON);
  const manifest = bundleReferrerManifest(blobDesc, subject, now, predicateType);
  const desc: Descriptor = { mediaType: MediaType.OciManifest, digest: digestOf(manifest), size: manifest.length };
  await attachReferrer(target, manifest, desc);
  return desc.digest;
}

async function writeBundle(target: Target, subject: Descriptor, session: SigningSession, now: Date): Promise<WrittenSignature> {
  const location = await pushBundleReferrer(target, subject, await session.bundleFor(subject.digest), now);
  return { format: 'bundle', location, added: true };
}

async function writeLegacy(target: Target, subject: Descriptor, session: SigningSession): Promise<WrittenSignature> {
  const tag = signatureTag(subject.digest);
  let payload: Buffer | undefined;
  const added = await appendAttachedLayer(
    target,
    tag,
    async () => {
      const l = await session.legacyLayer(subject.digest);
      payload = l.payload;
      return { payload: l.payload, mediaType: SIMPLE_SIGNING_MEDIA_TYPE, annotations: l.annotations };
    },
    { duplicate: (l) => !!payload && session.isDuplicate(payload, l) },
  );
  return { format: 'legacy', location: tag, added };
}

/** Manifests of an index signed at once by `--recursive` (each is two chains of round trips). */
const CHILDREN_AT_ONCE = 4;

/** Both formats at once: they write to different tags, and each is a chain of round trips. */
async function signOne(target: Target, subject: Descriptor, session: SigningSession, formats: SignatureFormat[], now: Date): Promise<SignedManifest> {
  const writes: Promise<WrittenSignature>[] = [];
  if (formats.includes('bundle')) writes.push(writeBundle(target, subject, session, now));
  if (formats.includes('legacy')) writes.push(writeLegacy(target, subject, session));
  return { digest: subject.digest, mediaType: subject.mediaType, signatures: await settleAll(writes) };
}

/**
 * Sign `root` (already resolved: only its digest is used from here on) in `target`; with
 * `recursive`, every manifest of an index too.
 */
export async function signImage(target: Target, root: Descriptor, opts: SignOptions): Promise<SignResult> {
  const formats = opts.formats ?? ['bundle', 'legacy'];
  if (formats.length === 0) throw new UserError('sign: no signature format selected');
  if (!isManifestMediaType(root.mediaType) && !isIndexMediaType(root.mediaType)) throw new KbError('UNSUPPORTED', `${target.name}@${root.digest}: ${root.mediaType} is not an image manifest or index`);
  // Hash what is there before signing it: the digest must name these bytes.
  const bytes = await fetchBytes(target, root);
  if (digestOf(bytes) !== root.digest) throw new KbError('DIGEST_MISMATCH', `${target.name}: the manifest bytes do not hash to ${root.digest}`);
  const session = new SigningSession(opts);
  const now = (opts.now ?? (() => new Date()))();
  // The root first: a wrong key or a refused Fulcio token fails once, before anything else is written.
  const rootSigned = await signOne(target, root, session, formats, now);
  let children: SignedManifest[] = [];
  if (opts.recursive && isIndexMediaType(root.mediaType)) {
    const index = parseIndex(bytes, root.mediaType, `${target.name}@${root.digest}`);
    const subjects = index.manifests.filter((m) => isManifestMediaType(m.mediaType) || isIndexMediaType(m.mediaType));
    // Each manifest's signatures go to its own tags, so a few are signed at once; one listed twice is
    // signed once (two writers of one .sig tag would race), and reported where the index lists it.
    const unique = [...new Map(subjects.map((m) => [m.digest, m])).values()];
    const signed = await mapPool(unique, CHILDREN_AT_ONCE, (m) => signOne(target, { mediaType: m.mediaType, digest: m.digest, size: m.size }, session, formats, now));
    const byDigest = new Map(signed.map((c) => [c.digest, c]));
    children = subjects.map((m) => byDigest.get(m.digest)!);
  }
  const signer = session.hint ? `key ${session.hint}` : 'keyless';
  return { root: rootSigned, children, signer };
}
