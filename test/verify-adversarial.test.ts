/**
 * Hostile registries and forged signatures: each case is refused with its reason, no crash, no
 * unbounded work. Images live in OCI layouts here (the registry round trips are in
 * sign-registry.test.ts); the attacker is whoever can write to the layout.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KbError } from '../src/errors.js';
import { digestOf } from '../src/oci/digest.js';
import { MediaType } from '../src/oci/mediatypes.js';
import { ManifestSchema, type Descriptor, type Manifest } from '../src/oci/types.js';
import {
  Annotations,
  BUNDLE_V03_MEDIA_TYPE,
  bundleReferrerManifest,
  legacySignatureConfig,
  legacySignatureManifest,
  rekorBundleAnnotation,
  signatureTag,
  SIMPLE_SIGNING_MEDIA_TYPE,
} from '../src/attach/formats.js';
import type { LoadedPrivateKey } from '../src/sign/keys.js';
import { attachReferrer, listReferrers } from '../src/attach/referrers.js';
import { referrersTag } from '../src/attach/tags.js';
import { signImage, type SignOptions } from '../src/sign/sign.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { fetchBytes } from '../src/oci/target.js';
import { exactMatcher } from '../src/verify/identity.js';
import type { KeylessRequirement, VerificationPolicy } from '../src/verify/requirements.js';
import { parseTrustedRoot } from '../src/verify/trust.js';
import { verifyImage } from '../src/verify/verify.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { startSigstoreStack, type SigstoreStack } from './helpers/sigstore-stack.js';

let stack: SigstoreStack;
beforeAll(async () => {
  stack = await startSigstoreStack();
});
afterAll(async () => {
  await stack?.stop();
  cleanupTempDirs();
});

function newKey(): LoadedPrivateKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { privateKey, publicKey };
}
const KEY = newKey();
const keyPolicy = (...keys: KeyObject[]): VerificationPolicy => ({
  signers: [{ kind: 'key', name: 'release.pub', keys: keys.length ? keys : [KEY.publicKey], tlog: false }],
  require: 'any',
  annotations: {},
});
const ID = 'builder@example.com';
const ISSUER = 'https://issuer.example';
const keylessPolicy = (): VerificationPolicy => ({
  signers: [
    {
      kind: 'keyless',
      name: ID,
      identity: exactMatcher(ID, 'i'),
      issuer: exactMatcher(ISSUER, 'o'),
      trustedRoot: parseTrustedRoot(JSON.stringify(stack.trustedRoot), 'root'),
      tlog: true,
      ctlog: true,
    } as KeylessRequirement,
  ],
  require: 'any',
  annotations: {},
});

async function put(layout: OciLayout, mediaType: string, bytes: Buffer): Promise<Descriptor> {
  const desc: Descriptor = { mediaType, digest: digestOf(bytes), size: bytes.length };
  await layout.push(desc, bytes);
  return desc;
}

async function newImage(layout?: OciLayout, tag = 'v1'): Promise<{ layout: OciLayout; desc: Descriptor }> {
  const l = layout ?? (await OciLayout.open(join(tempDir(), 'oci'), { create: true }));
  const layer = Buffer.from(`layer ${Math.random()}`);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [digestOf(layer)] } }));
  const ld = await put(l, MediaType.OciLayer, layer);
  const cd = await put(l, MediaType.OciConfig, config);
  const desc = await put(l, MediaType.OciManifest, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: cd, layers: [ld] })));
  await l.tag(desc, tag);
  return { layout: l, desc };
}

const sign = (layout: OciLayout, desc: Descriptor, o: Partial<SignOptions> = {}) => signImage(layout, desc, { key: KEY, dockerReference: 'registry.example/kairos/demo', ...o });

async function sigManifest(layout: OciLayout, digest: string): Promise<Manifest> {
  return ManifestSchema.parse(JSON.parse((await fetchBytes(layout, await layout.resolve(signatureTag(digest)))).toString()));
}

/** Rewrite the `.sig` manifest of `digest` (layers and payloads), keeping every digest consistent. */
async function rewriteLegacy(layout: OciLayout, digest: string, layers: { payload: Buffer; annotations: Record<string, string> }[]): Promise<void> {
  const descs: Descriptor[] = [];
  for (const l of layers) {
    const d = await put(layout, SIMPLE_SIGNING_MEDIA_TYPE, l.payload);
    descs.push({ ...d, annotations: l.annotations });
  }
  const config = await put(layout, MediaType.OciConfig, legacySignatureConfig(descs.map((d) => d.digest)));
  const m = await put(layout, MediaType.OciManifest, legacySignatureManifest(config, descs));
  await layout.tag(m, signatureTag(digest));
}

async function legacyLayer(layout: OciLayout, digest: string, i = 0): Promise<{ payload: Buffer; annotations: Record<string, string> }> {
  const m = await sigManifest(layout, digest);
  const l = m.layers[i]!;
  return { payload: await fetchBytes(layout, l), annotations: { ...(l.annotations ?? {}) } };
}

/** The bundle JSON of the (only) referrer of `subject`. */
async function bundleJson(layout: OciLayout, subject: Descriptor): Promise<Record<string, any>> {
  const [ref] = await listReferrers(layout, subject);
  const m = ManifestSchema.parse(JSON.parse((await fetchBytes(layout, ref!)).toString()));
  return JSON.parse((await fetchBytes(layout, m.layers[0]!)).toString()) as Record<string, any>;
}

/** Replace every referrer of `subject` with one bundle blob (valid digests everywhere). */
async function replaceBundle(layout: OciLayout, subject: Descriptor, blob: Buffer, manifestSubject: Descriptor = subject): Promise<void> {
  const b = await put(layout, BUNDLE_V03_MEDIA_TYPE, blob);
  await put(layout, MediaType.OciEmpty, Buffer.from('{}'));
  const manifest = bundleReferrerManifest(b, manifestSubject, new Date());
  const md = await put(layout, MediaType.OciManifest, manifest);
  const index = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [{ mediaType: MediaType.OciManifest, digest: md.digest, size: md.size, artifactType: BUNDLE_V03_MEDIA_TYPE }] }),
  );
  await layout.tag(await put(layout, MediaType.OciIndex, index), referrersTag(subject.digest));
}

const b64 = (o: unknown) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)).toString('base64');
const unb64 = (s: string) => Buffer.from(s, 'base64').toString();

async function refused(p: Promise<unknown>, re: RegExp): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'verification should have failed').toBeInstanceOf(KbError);
  expect((err as KbError).code, (err as Error).message).toBe('REFUSED');
  const msg = (err as Error).message;
  expect(msg).toMatch(re);
  expect(msg).not.toContain('\n');
  return msg;
}

describe('signatures bound to the wrong thing', () => {
  it('a .sig copied from image A to image B: the payload names A', async () => {
    const a = await newImage();
    const b = await newImage(a.layout, 'v2');
    await sign(a.layout, a.desc, { formats: ['legacy'] });
    await a.layout.tag(await a.layout.resolve(signatureTag(a.desc.digest)), signatureTag(b.desc.digest));
    await refused(verifyImage(a.layout, b.desc, keyPolicy()), new RegExp(`payload was signed for ${a.desc.digest}, not ${b.desc.digest}`));
  });

  it('a bundle referrer whose subject is B but whose statement is about A', async () => {
    const a = await newImage();
    const b = await newImage(a.layout, 'v2');
    await sign(a.layout, a.desc, { formats: ['bundle'] });
    const blob = Buffer.from(JSON.stringify(await bundleJson(a.layout, a.desc)));
    await replaceBundle(a.layout, b.desc, blob);
    await refused(verifyImage(a.layout, b.desc, keyPolicy()), new RegExp(`statement was signed for ${a.desc.digest}, not ${b.desc.digest}`));
  });

  it('a tag moved after signing: verification follows the digest the tag names now, and the old digest still verifies', async () => {
    const a = await newImage();
    await sign(a.layout, a.desc);
    const b = await newImage(a.layout, 'v1'); // the attacker retags v1
    const now = await a.layout.resolve('v1');
    expect(now.digest).toBe(b.desc.digest);
    await refused(verifyImage(a.layout, now, keyPolicy()), /no signatures found/);
    await verifyImage(a.layout, a.desc, keyPolicy());
  });

  it('a registry that serves other bytes under a digest is caught by hashing', async () => {
    const a = await newImage();
    await sign(a.layout, a.desc);
    writeFileSync(a.layout.blobPath(a.desc.digest), Buffer.alloc(a.desc.size, 0x20));
    await expect(verifyImage(a.layout, a.desc, keyPolicy())).rejects.toThrow(/content digest .* does not match/);
  });
});

describe('tampered and forged signatures', () => {
  it('legacy payload edited after signing (all digests recomputed): the signature no longer verifies', async () => {
    const a = await newImage();
    await sign(a.layout, a.desc, { formats: ['legacy'], annotations: { env: 'dev' } });
    const l = await legacyLayer(a.layout, a.desc.digest);
    await rewriteLegacy(a.layout, a.desc.digest, [{ payload: Buffer.from(l.payload.toString().replace('"dev"', '"prod"')), annotations: l.annotations }]);
    await refused(verifyImage(a.layout, a.desc, keyPolicy()), /not signed by release\.pub/);
  });

  it('bundle statement edited after signing: refused', async () => {
    const a = await newImage();
    await sign(a.layout, a.desc, { formats: ['bundle'] });
    const j = await bundleJson(a.layout, a.desc);
    const st = JSON.parse(unb64(j.dsseEnvelope.payload)) as Record<string, any>;
    st.subject[0].annotations = { env: 'prod' };
    j.dsseEnvelope.payload = b64(st);
    await replaceBundle(a.layout, a.desc, Buffer.from(JSON.stringify(j)));
    await refused(verifyImage(a.layout, a.desc, keyPolicy()), /not signed by release\.pub/);
  });

  it('a wrong key, and an unknown key hint', async () => {
    const a = await newImage();
    await sign(a.layout, a.desc);
    const other = newKey();
    const msg = await refused(verifyImage(a.layout, a.desc, keyPolicy(other.publicKey)), /signed by an unknown key \(hint [A-Za-z0-9+/=]+\), not release\.pub/);
    expect(msg).toMatch(/\[legacy sha256-.*\.sig layer 1\] not signed by release\.pub/);
  });

  it('wrong critical.type, empty and garbage signature annotations, a payload that is not JSON', async () => {
    const a = await newImage();
    await sign(a.layout, a.desc, { formats: ['legacy'] });
    const good = await legacyLayer(a.layout, a.desc.digest);
    await rewriteLegacy(a.layout, a.desc.digest, [
      { payload: Buffer.from(good.payload.toString().replace('cosign container image signature', 'atomic container signature')), annotations: good.annotations },
      { payload: good.payload, annotations: { ...good.annotations, [Annotations.Signature]: '' } },
      { payload: good.payload, annotations: { ...good.annotations, [Annotations.Signature]: '!!not base64!!' } },
      { payload: Buffer.from('{"critical": '), annotations: good.annotations },
    ]);
    const msg = await refused(verifyImage(a.layout, a.desc, keyPolicy()), /payload type is "atomic container signature"/);
    expect(msg).toMatch(/signature annotation is empty or not base64/);
    expect(msg).toMatch(/payload is not valid JSON/);
  });

  it('malformed bundle JSON, a v0.2 bundle, two DSSE signatures, a message-signature bundle', async () => {
    const a = await newImage();
    await sign(a.layout, a.desc, { formats: ['bundle'] });
    const j = await bundleJson(a.layout, a.desc);
    await replaceBundle(a.layout, a.desc, Buffer.from('{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verif'));
    await refused(verifyImage(a.layout, a.desc, keyPolicy()), /bundle is not valid JSON/);
    await replaceBundle(a.layout, a.desc, Buffer.from(JSON.stringify({ ...j, mediaType: 'application/vnd.dev.sigstore.bundle+json;version=0.2' })));
    await refused(verifyImage(a.layout, a.desc, keyPolicy()), /is not v0\.3/);
    const two = structuredClone(j);
    two.dsseEnvelope.signatures.push(two.dsseEnvelope.signatures[0]);
    await replaceBundle(a.layout, a.desc, Buffer.from(JSON.stringify(two)));
    await refused(verifyImage(a.layout, a.desc, keyPolicy()), /2 signatures; exactly one is accepted/);
    const msg = {
      mediaType: j.mediaType,
      verificationMaterial: j.verificationMaterial,
      messageSignature: { messageDigest: { algorithm: 'SHA2_256', digest: b64('x'.repeat(32)) }, signature: j.dsseEnvelope.signatures[0].sig },
    };
    await replaceBundle(a.layout, a.desc, Buffer.from(JSON.stringify(msg)));
    await refused(verifyImage(a.layout, a.desc, keyPolicy()), /message-signature bundles are not accepted/);
  });

  it('a bundle whose DSSE payload is another predicate type (an attestation)', async () => {
    const a = await newImage();
    await sign(a.layout, a.desc, { formats: ['bundle'] });
    const j = await bundleJson(a.layout, a.desc);
    const st = JSON.parse(unb64(j.dsseEnvelope.payload)) as Record<string, any>;
    st.predicateType = 'https://slsa.dev/provenance/v1';
    j.dsseEnvelope.payload = b64(st);
    await replaceBundle(a.layout, a.desc, Buffer.from(JSON.stringify(j)));
    await refused(verifyImage(a.layout, a.desc, keyPolicy()), /predicate type is "https:\/\/slsa.dev\/provenance\/v1"/);
  });

  it('the signature tag pointing at garbage, and the referrers tag pointing at a non-index', async () => {
    const a = await newImage();
    const junk = await put(a.layout, MediaType.OciIndex, Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [] })));
    await a.layout.tag(junk, signatureTag(a.desc.digest));
    await refused(verifyImage(a.layout, a.desc, keyPolicy()), /the signature tag points at application\/vnd.oci.image.index.v1\+json, not an image manifest/);
    const notJson = await put(a.layout, MediaType.OciManifest, Buffer.from('\u0000\u00ffnot a manifest'));
    await a.layout.tag(notJson, signatureTag(a.desc.digest));
    await refused(verifyImage(a.layout, a.desc, keyPolicy()), /signature manifest is unusable/);
    await a.layout.tag(notJson, referrersTag(a.desc.digest));
    await refused(verifyImage(a.layout, a.desc, keyPolicy()), /cannot list referrers/);
  });
});

describe('bounded work against a hostile registry', () => {
  it('a thousand signature layers are refused outright, not verified one by one', async () => {
    const a = await newImage();
    await sign(a.layout, a.desc, { formats: ['legacy'] });
    const l = await legacyLayer(a.layout, a.desc.digest);
    const started = Date.now();
    await rewriteLegacy(
      a.layout,
      a.desc.digest,
      Array.from({ length: 1000 }, () => l),
    );
    await refused(verifyImage(a.layout, a.desc, keyPolicy()), /1000 signatures found, more than the limit of 128/);
    expect(Date.now() - started).toBeLessThan(20_000);
    // Over cosign's 1000-layer cap the manifest itself is refused.
    await rewriteLegacy(
      a.layout,
      a.desc.digest,
      Array.from({ length: 1001 }, () => l),
    );
    await refused(verifyImage(a.layout, a.desc, keyPolicy()), /more than 1000 layers/);
  });

  it('a 100 MB signature layer is refused by its size before it is read; a layer larger than its descriptor is cut off', async () => {
    const a = await newImage();
    await sign(a.layout, a.desc, { formats: ['legacy'] });
    const l = await legacyLayer(a.layout, a.desc.digest);
    const big = join(tempDir(), 'big');
    writeFileSync(big, '');
    truncateSync(big, 100 << 20);
    const fakeDigest = `sha256:${'ab'.repeat(32)}`;
    const { renameSync, mkdirSync } = await import('node:fs');
    mkdirSync(join(a.layout.dir, 'blobs', 'sha256'), { recursive: true });
    renameSync(big, a.layout.blobPath(fakeDigest));
    const desc: Descriptor = { mediaType: SIMPLE_SIGNING_MEDIA_TYPE, digest: fakeDigest, size: 100 << 20, annotations: l.annotations };
    const config = await put(a.layout, MediaType.OciConfig, legacySignatureConfig([fakeDigest]));
    const m = await put(a.layout, MediaType.OciManifest, legacySignatureManifest(config, [desc]));
    await a.layout.tag(m, signatureTag(a.desc.digest));
    await refused(verifyImage(a.layout, a.desc, keyPolicy()), /payload is 104857600 bytes, over the 1048576-byte limit/);
    // The descriptor lies (small size): reading stops at the declared size.
    const lying = await put(a.layout, MediaType.OciManifest, legacySignatureManifest(config, [{ ...desc, size: 245 }]));
    await a.layout.tag(lying, signatureTag(a.desc.digest));
    await refused(verifyImage(a.layout, a.desc, keyPolicy()), /payload: size \d+ does not match the descriptor size 245/);
  });

  it('ten thousand referrers of other artifact types are skipped without being fetched', async () => {
    const a = await newImage();
    await sign(a.layout, a.desc, { formats: ['bundle'] });
    const [real] = await listReferrers(a.layout, a.desc);
    const junk = Array.from({ length: 9_000 }, (_, i) => ({ mediaType: MediaType.OciManifest, digest: `sha256:${i.toString(16).padStart(64, '0')}`, size: 10, artifactType: 'application/spdx+json' }));
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [...junk, real] }));
    await a.layout.tag(await put(a.layout, MediaType.OciIndex, index), referrersTag(a.desc.digest));
    const got = await verifyImage(a.layout, a.desc, keyPolicy());
    expect(got).toHaveLength(1);
  });

  it('duplicate transparency-log entries in one bundle are refused (they must not count twice)', async () => {
    const a = await newImage();
    await signImage(a.layout, a.desc, { keyless: { identityToken: stack.token(ID, ISSUER), fulcioURL: stack.url }, rekorURL: stack.url, formats: ['bundle'] });
    const j = await bundleJson(a.layout, a.desc);
    j.verificationMaterial.tlogEntries.push(j.verificationMaterial.tlogEntries[0]);
    await replaceBundle(a.layout, a.desc, Buffer.from(JSON.stringify(j)));
    await refused(verifyImage(a.layout, a.desc, keylessPolicy()), /same transparency-log entry twice/);
  });

  it('the integrated time of a proof-only log entry is not a timestamp', async () => {
    const a = await newImage();
    await signImage(a.layout, a.desc, { keyless: { identityToken: stack.token(ID, ISSUER), fulcioURL: stack.url }, rekorURL: stack.url, formats: ['bundle'] });
    const j = await bundleJson(a.layout, a.desc);
    delete j.verificationMaterial.tlogEntries[0].inclusionPromise;
    await replaceBundle(a.layout, a.desc, Buffer.from(JSON.stringify(j)));
    await refused(verifyImage(a.layout, a.desc, keylessPolicy()), /no verified timestamp/);
  });

  it('a checkpoint signer name that is a regular expression is refused before it reaches the verifier', async () => {
    const a = await newImage();
    await signImage(a.layout, a.desc, { keyless: { identityToken: stack.token(ID, ISSUER), fulcioURL: stack.url }, rekorURL: stack.url, formats: ['bundle'] });
    const j = await bundleJson(a.layout, a.desc);
    const cp = j.verificationMaterial.tlogEntries[0].inclusionProof.checkpoint;
    cp.envelope = cp.envelope.replace(/\u2014 \S+ /, '\u2014 (a+)+$ ');
    await replaceBundle(a.layout, a.desc, Buffer.from(JSON.stringify(j)));
    await refused(verifyImage(a.layout, a.desc, keylessPolicy()), /checkpoint signer name "\(a\+\)\+\$" is not a log name/);
  });
});

describe('keyless evidence that does not belong together', () => {
  it('a Rekor bundle copied from another signature (CVE-2022-23649) is refused', async () => {
    const a = await newImage();
    const b = await newImage(a.layout, 'v2');
    const opts: Partial<SignOptions> = { key: undefined, keyless: { identityToken: stack.token(ID, ISSUER), fulcioURL: stack.url }, rekorURL: stack.url, formats: ['legacy'] };
    await sign(a.layout, a.desc, opts);
    await sign(a.layout, b.desc, opts);
    const la = await legacyLayer(a.layout, a.desc.digest);
    const lb = await legacyLayer(a.layout, b.desc.digest);
    await rewriteLegacy(a.layout, a.desc.digest, [{ payload: la.payload, annotations: { ...la.annotations, [Annotations.Bundle]: lb.annotations[Annotations.Bundle]! } }]);
    await refused(verifyImage(a.layout, a.desc, keylessPolicy()), /transparency-log entry is for another signature or payload/);
  });

  it('a PUBLIC KEY where the certificate belongs is not a certificate, and never replaces a pinned key', async () => {
    const a = await newImage();
    const attacker = newKey();
    await signImage(a.layout, a.desc, { key: attacker, formats: ['legacy'], dockerReference: 'x' });
    const l = await legacyLayer(a.layout, a.desc.digest);
    const pem = attacker.publicKey.export({ format: 'pem', type: 'spki' }).toString();
    await rewriteLegacy(a.layout, a.desc.digest, [{ payload: l.payload, annotations: { ...l.annotations, [Annotations.Certificate]: pem } }]);
    await refused(verifyImage(a.layout, a.desc, keylessPolicy()), /certificate annotation does not hold exactly one certificate/);
    // Even the attacker's own key does not get through a pinned-key check via that annotation.
    await refused(verifyImage(a.layout, a.desc, keyPolicy()), /certificate annotation does not hold exactly one certificate/);
  });

  it('a genuine log entry for the same signature and payload but another key is refused (entry not bound to the key)', async () => {
    const a = await newImage();
    await signImage(a.layout, a.desc, { keyless: { identityToken: stack.token(ID, ISSUER), fulcioURL: stack.url }, rekorURL: stack.url, formats: ['legacy'] });
    const l = await legacyLayer(a.layout, a.desc.digest);
    // Ask the (trusted) log to record this very signature and digest under the attacker's key.
    const otherPem = newKey().publicKey.export({ format: 'pem', type: 'spki' }).toString();
    const proposed = {
      apiVersion: '0.0.1',
      kind: 'hashedrekord',
      spec: {
        data: { hash: { algorithm: 'sha256', value: digestOf(l.payload).slice(7) } },
        signature: { content: l.annotations[Annotations.Signature], publicKey: { content: b64(otherPem) } },
      },
    };
    const res = await fetch(`${stack.url}/api/v1/log/entries`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(proposed) });
    const entry = Object.values((await res.json()) as Record<string, any>)[0];
    const forged = rekorBundleAnnotation({
      SignedEntryTimestamp: entry.verification.signedEntryTimestamp,
      Payload: { body: entry.body, integratedTime: entry.integratedTime, logIndex: entry.logIndex, logID: entry.logID },
    });
    await rewriteLegacy(a.layout, a.desc.digest, [{ payload: l.payload, annotations: { ...l.annotations, [Annotations.Bundle]: forged } }]);
    await refused(verifyImage(a.layout, a.desc, keylessPolicy()), /transparency-log entry was made for another key or certificate/);
  });
});

describe('many signatures', () => {
  it('new legacy signatures append, never replace; an identical one by the same key is not added twice', async () => {
    const a = await newImage();
    const k2 = newKey();
    await sign(a.layout, a.desc, { formats: ['legacy'] });
    const second = await signImage(a.layout, a.desc, { key: k2, formats: ['legacy'], dockerReference: 'registry.example/kairos/demo' });
    expect(second.root.signatures[0]!.added).toBe(true);
    expect((await sigManifest(a.layout, a.desc.digest)).layers).toHaveLength(2);
    const again = await sign(a.layout, a.desc, { formats: ['legacy'] });
    expect(again.root.signatures[0]!.added).toBe(false);
    expect((await sigManifest(a.layout, a.desc.digest)).layers).toHaveLength(2);
    // Both keys verify; "all" needs both.
    const all: VerificationPolicy = {
      signers: [
        { kind: 'key', name: 'a.pub', keys: [KEY.publicKey], tlog: false },
        { kind: 'key', name: 'b.pub', keys: [k2.publicKey], tlog: false },
      ],
      require: 'all',
      annotations: {},
    };
    expect((await verifyImage(a.layout, a.desc, all)).map((s) => s.signer).sort()).toEqual(['a.pub', 'b.pub']);
    const k3 = newKey();
    await refused(verifyImage(a.layout, a.desc, { ...all, signers: [all.signers[0]!, { kind: 'key', name: 'c.pub', keys: [k3.publicKey], tlog: false }] }), /\(unsatisfied: c\.pub\)/);
  });

  it('bundles pile up as separate referrers, kept sorted in the fallback index', async () => {
    const a = await newImage();
    await sign(a.layout, a.desc, { formats: ['bundle'] });
    await signImage(a.layout, a.desc, { key: newKey(), formats: ['bundle'] });
    const refs = await listReferrers(a.layout, a.desc);
    expect(refs).toHaveLength(2);
    expect(refs.map((r) => r.digest)).toEqual([...refs.map((r) => r.digest)].sort());
    expect(refs.every((r) => r.artifactType === BUNDLE_V03_MEDIA_TYPE && r.annotations?.[Annotations.BundlePredicateType] === 'https://sigstore.dev/cosign/sign/v1')).toBe(true);
    // Attaching the same referrer twice keeps one entry.
    const m = await fetchBytes(a.layout, refs[0]!);
    await attachReferrer(a.layout, m, refs[0]!);
    expect(await listReferrers(a.layout, a.desc)).toHaveLength(2);
  });
});
