/**
 * Reading a Sigstore bundle meant for a blob: versions 0.1, 0.2 and 0.3 (both v0.3 media types),
 * a message signature or a DSSE envelope, keyed or with a certificate. The same caps and checks as
 * image bundles (src/verify/evidence.ts) apply before anything is parsed further; then
 * @sigstore/bundle validates the version's rules (v0.1: log entries carry an inclusion promise;
 * v0.2+: an inclusion proof with a checkpoint; v0.3: a single certificate, no chain).
 * Every failure is a `Rejection` whose reason names what is wrong.
 */
import type { Bundle } from '@sigstore/bundle';
import { z } from 'zod';
import { BundleShapeSchema, checkCheckpointNames, dedupeTlog, Rejection } from '../verify/evidence.js';
import { Limits } from '../verify/limits.js';

export const BUNDLE_V01 = 'application/vnd.dev.sigstore.bundle+json;version=0.1';
export const BUNDLE_V02 = 'application/vnd.dev.sigstore.bundle+json;version=0.2';
export const BUNDLE_V03_LEGACY = 'application/vnd.dev.sigstore.bundle+json;version=0.3';
export const BUNDLE_V03 = 'application/vnd.dev.sigstore.bundle.v0.3+json';

export type BundleVersion = '0.1' | '0.2' | '0.3';

const VERSIONS: Record<string, BundleVersion> = { [BUNDLE_V01]: '0.1', [BUNDLE_V02]: '0.2', [BUNDLE_V03_LEGACY]: '0.3', [BUNDLE_V03]: '0.3' };

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const MessageSignatureSchema = z.object({
  messageDigest: z.object({
    algorithm: z.enum(['SHA2_256', 'SHA2_384', 'SHA2_512']),
    digest: z.string().max(128).regex(BASE64, 'not base64'),
  }),
  signature: z.string().min(1).max(4096).regex(BASE64, 'not base64'),
});

export interface BlobBundle {
  version: BundleVersion;
  mediaType: string;
  bundle: Bundle;
  /** `message-signature` (hashedrekord) or `dsse`. */
  content: 'message-signature' | 'dsse';
  /** The key hint of a keyed bundle (empty hints are dropped). */
  hint?: string;
  /** Message signatures: the digest the bundle says was signed. */
  messageDigest?: { algorithm: 'sha256' | 'sha384' | 'sha512'; digest: Buffer };
}

const HASHES = { SHA2_256: 'sha256', SHA2_384: 'sha384', SHA2_512: 'sha512' } as const;

const reject = (reason: string): never => {
  throw new Rejection(reason);
};

/** A v0.1 inclusion proof predates checkpoints; the promise is v0.1's inclusion evidence, so a proof without one is left out. */
function dropCheckpointlessProofs(raw: Record<string, unknown>): void {
  const entries = (raw.verificationMaterial as { tlogEntries?: unknown } | undefined)?.tlogEntries;
  if (!Array.isArray(entries)) return;
  for (const e of entries as Record<string, unknown>[]) {
    const proof = e?.inclusionProof as Record<string, unknown> | undefined;
    if (proof && typeof proof === 'object' && proof.checkpoint === undefined) delete e.inclusionProof;
  }
}

/**
 * @sigstore/verify checks the inclusion proof against the checkpoint's root hash and size and never
 * reads the proof's own `rootHash` / `treeSize`; a proof that contradicts its checkpoint is refused here.
 */
function checkProofAgainstCheckpoint(proof: { rootHash?: string; treeSize?: string | number; checkpoint: { envelope: string } }): void {
  const note = proof.checkpoint.envelope.split('\n\n')[0] ?? '';
  const [, size, hash] = note.split('\n');
  if (!size || !/^\d{1,20}$/.test(size) || !hash || !BASE64.test(hash)) reject("the inclusion proof's checkpoint is not a log checkpoint (origin, size, root hash)");
  if (proof.rootHash !== undefined && !Buffer.from(proof.rootHash, 'base64').equals(Buffer.from(hash!, 'base64'))) reject("the inclusion proof's root hash is not the one its checkpoint signs");
  if (proof.treeSize !== undefined && String(proof.treeSize) !== size) reject("the inclusion proof's tree size is not the one its checkpoint signs");
}

export async function parseBlobBundle(bytes: Buffer): Promise<BlobBundle> {
  if (bytes.length > Limits.maxSignatureBlob) reject(`the bundle is ${bytes.length} bytes, over the ${Limits.maxSignatureBlob}-byte limit`);
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch {
    reject('the bundle is not valid JSON');
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return reject('the bundle is not a JSON object');
  const mediaType = (raw as { mediaType?: unknown }).mediaType;
  const version = typeof mediaType === 'string' ? VERSIONS[mediaType] : undefined;
  if (!version) return reject(`bundle media type ${JSON.stringify(mediaType)?.slice(0, 120) ?? 'missing'} is not a Sigstore bundle v0.1, v0.2 or v0.3`);
  if (version === '0.1') dropCheckpointlessProofs(raw as Record<string, unknown>);

  const shape = BundleShapeSchema.safeParse(raw);
  if (!shape.success) {
    const i = shape.error.issues[0]!;
    reject(`malformed bundle: ${i.path.join('.') || '(top level)'}: ${i.message}`);
  }
  const s = shape.data!;
  const hasMessage = s.messageSignature !== undefined;
  if (!!s.dsseEnvelope === hasMessage) reject('the bundle must hold exactly one of a message signature or a DSSE envelope');
  let messageDigest: BlobBundle['messageDigest'];
  if (hasMessage) {
    const m = MessageSignatureSchema.safeParse(s.messageSignature);
    if (!m.success) {
      const i = m.error.issues[0]!;
      reject(`malformed bundle: messageSignature.${i.path.join('.')}: ${i.message}`);
    }
    messageDigest = { algorithm: HASHES[m.data!.messageDigest.algorithm], digest: Buffer.from(m.data!.messageDigest.digest, 'base64') };
  } else if (s.dsseEnvelope!.signatures.length !== 1) {
    reject(`the bundle's DSSE envelope has ${s.dsseEnvelope!.signatures.length} signatures; exactly one is accepted`);
  }
  const vm = s.verificationMaterial;
  if ([vm.publicKey, vm.x509CertificateChain, vm.certificate].filter(Boolean).length !== 1) reject('bundle verification material must be exactly one of a public key, a certificate or a chain');
  for (const e of vm.tlogEntries ?? []) {
    if (!e.inclusionProof) continue;
    checkCheckpointNames(e.inclusionProof.checkpoint.envelope);
    checkProofAgainstCheckpoint(e.inclusionProof);
  }
  dedupeTlog(vm.tlogEntries ?? []);

  const { bundleFromJSON, ValidationError } = await import('@sigstore/bundle');
  let bundle: Bundle;
  try {
    bundle = bundleFromJSON(raw);
  } catch (e) {
    if (e instanceof ValidationError) return reject(`malformed v${version} bundle: ${(e.fields ?? []).join(', ') || e.message}`);
    return reject(`malformed bundle (${(e as Error).message})`);
  }
  return { version, mediaType: mediaType as string, bundle, content: hasMessage ? 'message-signature' : 'dsse', hint: vm.publicKey?.hint || undefined, messageDigest };
}
