/**
 * Real cosign / sigstore output (test/fixtures/sigstore, origins in its README) must verify with
 * kbundle, and kbundle's own writers must reproduce it byte for byte.
 */
import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { bundleFromJSON } from '@sigstore/bundle';
import { afterAll, describe, expect, it } from 'vitest';
import { KbError } from '../src/errors.js';
import { digestOf } from '../src/oci/digest.js';
import { MediaType } from '../src/oci/mediatypes.js';
import type { Descriptor } from '../src/oci/types.js';
import {
  bundleReferrerManifest,
  legacySignatureConfig,
  legacySignatureManifest,
  SIMPLE_SIGNING_MEDIA_TYPE,
  signStatement,
  simpleSigningPayload,
  BUNDLE_V03_MEDIA_TYPE,
} from '../src/attach/formats.js';
import { keyHint, parsePublicKeys } from '../src/sign/keys.js';
import { referrersTag } from '../src/attach/tags.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { exactMatcher, regexpMatcher } from '../src/verify/identity.js';
import type { KeylessRequirement, VerificationPolicy } from '../src/verify/requirements.js';
import { loadTrustedRoot } from '../src/verify/trust.js';
import { parseImageBundle } from '../src/verify/evidence.js';
import { verifyBundleSignature, verifySignatures } from '../src/verify/verify.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';

afterAll(cleanupTempDirs);

const FIX = join(import.meta.dirname, 'fixtures', 'sigstore');
const read = (p: string) => readFileSync(join(FIX, p));
const keys = (p: string) => parsePublicKeys(read(p).toString(), p);

const LEGACY_SUBJECT: Descriptor = { mediaType: MediaType.OciManifest, digest: 'sha256:f20c43161d73848408ef247f0ec7111b19fe58ffebc0cbcaa0d2c8bda4967268', size: 0 };
const BUNDLE_SUBJECT: Descriptor = { mediaType: MediaType.OciIndex, digest: 'sha256:d7d5640c741c60b47fa4b5530daa20a6469b55754a89dd42adbadadb59f9093c', size: 928 };

async function put(layout: OciLayout, mediaType: string, bytes: Buffer): Promise<Descriptor> {
  const desc: Descriptor = { mediaType, digest: digestOf(bytes), size: bytes.length };
  await layout.push(desc, bytes);
  return desc;
}

/** A layout holding cosign v3.0.4's legacy signature for LEGACY_SUBJECT, exactly as the registry served it. */
async function legacyLayout(): Promise<OciLayout> {
  const layout = await OciLayout.open(join(tempDir(), 'oci'), { create: true });
  const payload = read('cosign-legacy/payload.json');
  await put(layout, SIMPLE_SIGNING_MEDIA_TYPE, payload);
  // The config blob was not captured; kbundle's writer regenerates it and it hashes to the digest cosign wrote.
  await put(layout, MediaType.OciConfig, legacySignatureConfig([digestOf(payload)]));
  const manifest = await put(layout, MediaType.OciManifest, read('cosign-legacy/signature-manifest.json'));
  await layout.tag(manifest, `sha256-${LEGACY_SUBJECT.digest.slice(7)}.sig`);
  return layout;
}

/** A layout holding cosign v3.0.4's bundle referrer for BUNDLE_SUBJECT and go-containerregistry's fallback index. */
async function bundleLayout(blob = read('cosign-bundle/bundle.sigstore.json')): Promise<OciLayout> {
  const layout = await OciLayout.open(join(tempDir(), 'oci'), { create: true });
  const original = read('cosign-bundle/bundle.sigstore.json');
  if (blob === original) await put(layout, BUNDLE_V03_MEDIA_TYPE, blob);
  else {
    // Tampered content stored under the original digest: what a hostile registry could serve.
    await put(layout, BUNDLE_V03_MEDIA_TYPE, original);
    const { writeFileSync } = await import('node:fs');
    writeFileSync(layout.blobPath(digestOf(original)), blob);
  }
  await put(layout, MediaType.OciEmpty, Buffer.from('{}'));
  await put(layout, MediaType.OciManifest, read('cosign-bundle/referrer-manifest.json'));
  const index = await put(layout, MediaType.OciIndex, read('cosign-bundle/referrers-index.json'));
  await layout.tag(index, referrersTag(BUNDLE_SUBJECT.digest));
  return layout;
}

const keyPolicy = (file: string, extra: Partial<VerificationPolicy> = {}): VerificationPolicy => ({
  signers: [{ kind: 'key', name: file, keys: keys(file), tlog: false }],
  require: 'any',
  annotations: {},
  ...extra,
});

describe('kbundle writes exactly what cosign writes', () => {
  it('legacy: payload, config and signature manifest are byte-identical to cosign v3.0.4 output', () => {
    const payload = simpleSigningPayload('localhost:15381/tobby/fixture', LEGACY_SUBJECT.digest);
    expect(payload.equals(read('cosign-legacy/payload.json'))).toBe(true);
    const config = legacySignatureConfig([digestOf(payload)]);
    expect(digestOf(config)).toBe('sha256:2122b6ad0794d3fdae43a4b477cf1d95d4a38d3c5f10631e199676039b876e37');
    const real = JSON.parse(read('cosign-legacy/signature-manifest.json').toString()) as { layers: { annotations: Record<string, string> }[] };
    const mine = legacySignatureManifest({ mediaType: MediaType.OciConfig, digest: digestOf(config), size: config.length }, [
      { mediaType: SIMPLE_SIGNING_MEDIA_TYPE, digest: digestOf(payload), size: payload.length, annotations: real.layers[0]!.annotations },
    ]);
    expect(mine.toString()).toBe(read('cosign-legacy/signature-manifest.json').toString());
  });

  it('bundle: the in-toto statement and the referrer manifest are byte-identical to cosign v3.0.4 output', () => {
    const bundle = JSON.parse(read('cosign-bundle/bundle.sigstore.json').toString()) as { dsseEnvelope: { payload: string } };
    expect(signStatement(BUNDLE_SUBJECT.digest).toString()).toBe(Buffer.from(bundle.dsseEnvelope.payload, 'base64').toString());
    const blob = read('cosign-bundle/bundle.sigstore.json');
    const manifest = bundleReferrerManifest({ mediaType: BUNDLE_V03_MEDIA_TYPE, digest: digestOf(blob), size: blob.length }, BUNDLE_SUBJECT, new Date('2026-08-12T20:53:28Z'));
    expect(manifest.toString()).toBe(read('cosign-bundle/referrer-manifest.json').toString());
    expect(digestOf(manifest)).toBe('sha256:aa34dbe1db5336a0a85e4cc7eced2f5dc91f0062322972fe29c4002372a7adff');
  });

  it('bundle: the key hint is base64 of sha256 over the SPKI DER, as cosign writes it', () => {
    const bundle = JSON.parse(read('cosign-bundle/bundle.sigstore.json').toString()) as { verificationMaterial: { publicKey: { hint: string } } };
    expect(keyHint(keys('cosign-bundle/cosign.pub')[0]!)).toBe(bundle.verificationMaterial.publicKey.hint);
  });
});

describe('real cosign signatures verify', () => {
  it('legacy sha256-<hex>.sig signed by cosign --key verifies with its cosign.pub', async () => {
    const signers = await verifySignatures(await legacyLayout(), LEGACY_SUBJECT, keyPolicy('cosign-legacy/cosign.pub'));
    expect(signers).toHaveLength(1);
    expect(signers[0]).toMatchObject({ format: 'legacy', kind: 'key', digest: LEGACY_SUBJECT.digest });
  });

  it('legacy: the payload names the repository it was signed for; another repository is refused', async () => {
    const layout = await legacyLayout();
    await verifySignatures(layout, LEGACY_SUBJECT, keyPolicy('cosign-legacy/cosign.pub'), { repository: 'localhost:15381/tobby/fixture' });
    await expect(verifySignatures(layout, LEGACY_SUBJECT, keyPolicy('cosign-legacy/cosign.pub'), { repository: 'localhost:15381/evil/copy' })).rejects.toThrow(
      /signed for repository localhost:15381\/tobby\/fixture, not localhost:15381\/evil\/copy/,
    );
  });

  it('legacy: another key is refused with a one-line reason naming the signature', async () => {
    const err = await verifySignatures(await legacyLayout(), LEGACY_SUBJECT, keyPolicy('cosign-bundle/cosign.pub')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KbError);
    expect((err as KbError).code).toBe('REFUSED');
    expect((err as Error).message).toMatch(/\[legacy sha256-f20c.*\.sig layer 1\] not signed by cosign-bundle\/cosign\.pub/);
    expect((err as Error).message).not.toContain('\n');
  });

  it('bundle referrer (cosign 3 default format) found through the go-containerregistry fallback index verifies with its key, offline', async () => {
    const signers = await verifySignatures(await bundleLayout(), BUNDLE_SUBJECT, keyPolicy('cosign-bundle/cosign.pub'));
    expect(signers).toHaveLength(1);
    expect(signers[0]).toMatchObject({ format: 'bundle', kind: 'key', location: expect.stringMatching(/^referrer sha256:aa34dbe1/) });
  });

  it('bundle: with the public-good trusted root the Rekor entry (SET, inclusion proof, checkpoint, body, key) verifies too', async () => {
    const root = await loadTrustedRoot(join(FIX, 'trusted-roots', 'public-good.json'));
    const policy: VerificationPolicy = { signers: [{ kind: 'key', name: 'cosign.pub', keys: keys('cosign-bundle/cosign.pub'), tlog: true, trustedRoot: root }], require: 'any', annotations: {} };
    const [s] = await verifySignatures(await bundleLayout(), BUNDLE_SUBJECT, policy);
    expect(s!.tlog).toEqual([{ logIndex: '2440595631', integratedTime: '1786568008' }]);
  });

  it('bundle: requiring a log entry without its log in the trusted root is refused', async () => {
    const root = await loadTrustedRoot(join(FIX, 'trusted-roots', 'public-good.json'));
    root.tlogs = [];
    const policy: VerificationPolicy = { signers: [{ kind: 'key', name: 'cosign.pub', keys: keys('cosign-bundle/cosign.pub'), tlog: true, trustedRoot: root }], require: 'any', annotations: {} };
    await expect(verifySignatures(await bundleLayout(), BUNDLE_SUBJECT, policy)).rejects.toThrow(/inclusion (promise|proof) does not verify/);
  });

  it('bundle: a byte changed in the stored bundle is refused by digest before any parsing', async () => {
    const blob = Buffer.from(read('cosign-bundle/bundle.sigstore.json'));
    blob[blob.length - 20] = blob[blob.length - 20]! ^ 1;
    await expect(verifySignatures(await bundleLayout(blob), BUNDLE_SUBJECT, keyPolicy('cosign-bundle/cosign.pub'))).rejects.toThrow(/content digest .* does not match/);
  });

  it('bundle: the signature for one digest does not verify another image', async () => {
    const other: Descriptor = { ...BUNDLE_SUBJECT, digest: `sha256:${'1'.repeat(64)}` };
    const layout = await bundleLayout();
    // Point the other digest's referrers tag at the same index: the referrer's subject gives it away.
    await layout.tag(await layout.resolve(referrersTag(BUNDLE_SUBJECT.digest)), referrersTag(other.digest));
    await expect(verifySignatures(layout, other, keyPolicy('cosign-bundle/cosign.pub'))).rejects.toThrow(/subject is sha256:d7d5.*, not sha256:1111/);
  });

  it('keyless bundle from cosign (public-good Fulcio + Rekor) verifies cryptographically with its exact identity', async () => {
    const root = await loadTrustedRoot(join(FIX, 'trusted-roots', 'public-good.json'));
    const bundle = await parseImageBundle(read('cosign-attestation/oci-attestation.sigstore.json')).load();
    const req: KeylessRequirement = {
      kind: 'keyless',
      name: 'cody',
      identity: exactMatcher('cody@soyland.com', 'i'),
      issuer: exactMatcher('https://github.com/login/oauth', 'o'),
      trustedRoot: root,
      tlog: true,
      ctlog: true,
    };
    const s = await verifyBundleSignature(bundle, req);
    expect(s).toMatchObject({ kind: 'keyless', identity: 'cody@soyland.com', issuer: 'https://github.com/login/oauth' });
    expect(s.timestamps[0]).toBe('2025-02-28T19:18:11.000Z');
    // Exact, not a substring / unanchored regex.
    await expect(verifyBundleSignature(bundle, { ...req, identity: exactMatcher('soyland.com', 'i') })).rejects.toThrow(/identity "cody@soyland.com" does not match "soyland.com"/);
    await expect(verifyBundleSignature(bundle, { ...req, identity: regexpMatcher('.*@soyland', 'i') })).rejects.toThrow(/does not match/);
    await expect(verifyBundleSignature(bundle, { ...req, issuer: exactMatcher('https://github.com/login', 'o') })).rejects.toThrow(/issuer/);
    // Another CA root: the certificate does not chain.
    const foreign = await loadTrustedRoot(join(FIX, 'trusted-roots', 'public-good.json'));
    foreign.certificateAuthorities = foreign.certificateAuthorities.slice(0, 1);
    await expect(verifyBundleSignature(bundle, { ...req, trustedRoot: foreign })).rejects.toThrow(/does not chain to a trusted CA/);
  });

  it('the same keyless bundle attached to an image is refused: it is an attestation, not a signature', async () => {
    const layout = await OciLayout.open(join(tempDir(), 'oci'), { create: true });
    const subject: Descriptor = { mediaType: MediaType.OciManifest, digest: 'sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4', size: 100 };
    const blob = read('cosign-attestation/oci-attestation.sigstore.json');
    const b = await put(layout, BUNDLE_V03_MEDIA_TYPE, blob);
    await put(layout, MediaType.OciEmpty, Buffer.from('{}'));
    // Without the predicate annotation, so discovery has to open it to find out.
    const manifest = Buffer.from(
      bundleReferrerManifest(b, subject, new Date())
        .toString()
        .replace(/"dev.sigstore.bundle.predicateType":"[^"]*",/, ''),
    );
    const { attachReferrer } = await import('../src/attach/referrers.js');
    await attachReferrer(layout, manifest, { mediaType: MediaType.OciManifest, digest: digestOf(manifest), size: manifest.length });
    const root = await loadTrustedRoot(join(FIX, 'trusted-roots', 'public-good.json'));
    const policy: VerificationPolicy = {
      signers: [
        { kind: 'keyless', name: 'cody', identity: exactMatcher('cody@soyland.com', 'i'), issuer: exactMatcher('https://github.com/login/oauth', 'o'), trustedRoot: root, tlog: true, ctlog: true },
      ],
      require: 'any',
      annotations: {},
    };
    await expect(verifySignatures(layout, subject, policy)).rejects.toThrow(/predicate type is "https:\/\/cosign.sigstore.dev\/attestation\/v1", not https:\/\/sigstore.dev\/cosign\/sign\/v1/);
  });

  it('sigstore-go keyed bundle: the DSSE signature checks out, but a v0.1 bundle is not accepted as an image signature', async () => {
    const raw = read('sigstore-go/bundle-public-key.json');
    const key = createPublicKey(read('sigstore-go/public-key.pem'));
    const s = await verifyBundleSignature(bundleFromJSON(JSON.parse(raw.toString())), { kind: 'key', name: 'public-key.pem', keys: [key], tlog: false });
    expect(s.kind).toBe('key');
    expect(() => parseImageBundle(raw)).toThrow(/media type .*version=0.1" is not v0.3/);
  });
});
