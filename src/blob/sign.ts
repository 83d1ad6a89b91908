/**
 * `signBlob`: a Sigstore v0.3 bundle for a file, as `cosign sign-blob --bundle` writes it — a
 * message signature over the file (Rekor `hashedrekord` entry) by default, or with `dsse` an
 * in-toto statement naming the file's sha256 in a DSSE envelope (Rekor `dsse` or `intoto` entry).
 * Keyed (the bundle carries the key hint) or keyless (a Fulcio certificate), with optional Rekor
 * and RFC 3161 witnesses. The signers and their error handling are the ones `kbundle sign` uses.
 */
import { createHash } from 'node:crypto';
import type { Bundle } from '@sigstore/bundle';
import { UserError } from '../errors.js';
import { COSIGN_SIGN_PREDICATE_TYPE, goJsonString, INTOTO_PAYLOAD_TYPE, INTOTO_STATEMENT_V1 } from '../attach/formats.js';
import { keyHint, toPem, type LoadedPrivateKey } from '../sign/keys.js';
import { BUNDLE_V03 } from './bundle.js';
import { explainSigningError, KeylessSigner, KeySigner, serializeBundle, type KeylessOptions } from '../sign/sign.js';

export interface BlobSignOptions {
  /** Exactly one of a key or keyless. */
  key?: LoadedPrivateKey;
  keyless?: KeylessOptions;
  /** Sign an in-toto statement in a DSSE envelope instead of the file itself. */
  dsse?: boolean;
  /** The statement subject's name (default: none). */
  subjectName?: string;
  /** Transparency log (keyless: this or a TSA is required). */
  rekorURL?: string;
  /** Rekor entry type for DSSE bundles (message signatures are always `hashedrekord`). */
  rekorEntryType?: 'dsse' | 'intoto';
  tsaURL?: string;
  timeoutMs?: number;
}

export interface SignedBlob {
  bundle: Buffer;
  /** `sha256:<hex>` of the file. */
  digest: string;
  /** Raw signature (cosign `--output-signature` writes it base64). */
  signature: Buffer;
  /** Keyless: the Fulcio certificate, PEM. */
  certificate?: string;
  /** Keyed: the key hint written into the bundle. */
  hint?: string;
  tlog: { logIndex: string; integratedTime: string }[];
  timestamps: number;
}

/** The statement cosign's `sign/v1` predicate type names, about one file (protojson field order). */
export function blobStatement(sha256hex: string, name?: string): Buffer {
  const subject = `{${name ? `"name":${goJsonString(name)},` : ''}"digest":{"sha256":"${sha256hex}"}}`;
  return Buffer.from(`{"_type":"${INTOTO_STATEMENT_V1}","subject":[${subject}],"predicateType":"${COSIGN_SIGN_PREDICATE_TYPE}"}`, 'utf8');
}

/**
 * @sigstore/sign 4.x packages message signatures as v0.2 bundles with a certificate chain; cosign
 * 3 writes v0.3 with the single leaf certificate. Same content, newer container — whenever every
 * log entry has the inclusion proof v0.3 requires.
 */
function asV03(b: Bundle): void {
  if (!b.verificationMaterial.tlogEntries.every((e) => e.inclusionProof?.checkpoint)) return;
  const vm = b.verificationMaterial;
  if (vm.content.$case === 'x509CertificateChain') vm.content = { $case: 'certificate', certificate: vm.content.x509CertificateChain.certificates[0]! };
  b.mediaType = BUNDLE_V03;
}

export async function signBlob(data: Buffer, opts: BlobSignOptions): Promise<SignedBlob> {
  if (!!opts.key === !!opts.keyless) throw new UserError('sign-blob: give exactly one of a key or a keyless identity token');
  if (opts.keyless && !opts.rekorURL && !opts.tsaURL) {
    throw new UserError(
      'keyless signing needs a transparency log (--rekor-url) or a timestamp authority (--tsa-url)',
      'a Fulcio certificate is valid for minutes; verifiers need signing-time evidence',
    );
  }
  const timeout = opts.timeoutMs ?? 30_000;
  const { DSSEBundleBuilder, MessageSignatureBundleBuilder, RekorWitness, TSAWitness } = await import('@sigstore/sign');
  const signer = opts.key ? new KeySigner(opts.key) : new KeylessSigner(opts.keyless!, timeout);
  const witnesses = [];
  if (opts.rekorURL) witnesses.push(new RekorWitness({ rekorBaseURL: opts.rekorURL, entryType: opts.dsse ? (opts.rekorEntryType ?? 'dsse') : undefined, fetchOnConflict: true, timeout, retry: 2 }));
  if (opts.tsaURL) witnesses.push(new TSAWitness({ tsaBaseURL: opts.tsaURL, timeout, retry: 2 }));
  const hex = createHash('sha256').update(data).digest('hex');
  let b: Bundle;
  try {
    b = opts.dsse
      ? await new DSSEBundleBuilder({ signer, witnesses, certificateChain: false }).create({ data: blobStatement(hex, opts.subjectName), type: INTOTO_PAYLOAD_TYPE })
      : await new MessageSignatureBundleBuilder({ signer, witnesses }).create({ data });
  } catch (e) {
    throw explainSigningError(e, 'sign-blob failed');
  }
  asV03(b);
  const hint = opts.key ? keyHint(opts.key.publicKey) : undefined;
  if (hint && b.verificationMaterial.content.$case === 'publicKey') b.verificationMaterial.content.publicKey.hint = hint;
  const vm = b.verificationMaterial.content;
  const cert = vm.$case === 'certificate' ? vm.certificate.rawBytes : vm.$case === 'x509CertificateChain' ? vm.x509CertificateChain.certificates[0]?.rawBytes : undefined;
  const signature = b.content.$case === 'messageSignature' ? b.content.messageSignature.signature : b.content.dsseEnvelope.signatures[0]!.sig;
  return {
    bundle: serializeBundle(b),
    digest: `sha256:${hex}`,
    signature: Buffer.from(signature),
    certificate: cert ? toPem('CERTIFICATE', Buffer.from(cert)) : undefined,
    hint,
    tlog: b.verificationMaterial.tlogEntries.map((e) => ({ logIndex: e.logIndex, integratedTime: e.integratedTime })),
    timestamps: b.verificationMaterial.timestampVerificationData?.rfc3161Timestamps.length ?? 0,
  };
}
