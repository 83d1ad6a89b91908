/**
 * Keyless signing and verification, offline: Fulcio, Rekor and a TSA from @sigstore/mock on
 * 127.0.0.1 and a private trusted root (test/helpers/sigstore-stack.ts).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { bundleFromJSON } from '@sigstore/bundle';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserError } from '../src/errors.js';
import { digestOf } from '../src/oci/digest.js';
import { MediaType } from '../src/oci/mediatypes.js';
import { ManifestSchema, type Descriptor } from '../src/oci/types.js';
import { Annotations, signatureTag } from '../src/attach/formats.js';
import { listReferrers } from '../src/attach/referrers.js';
import { KeylessSigner, signImage, type SignOptions } from '../src/sign/sign.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { fetchBytes } from '../src/oci/target.js';
import { exactMatcher, regexpMatcher } from '../src/verify/identity.js';
import type { KeylessRequirement, VerificationPolicy } from '../src/verify/requirements.js';
import { parseTrustedRoot } from '../src/verify/trust.js';
import { verifyBundleSignature, verifyImage } from '../src/verify/verify.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { startSigstoreStack, type SigstoreStack } from './helpers/sigstore-stack.js';

const ID = 'https://github.com/kairos-io/bundles/.github/workflows/release.yml@refs/heads/main';
const ISSUER = 'https://token.actions.githubusercontent.com';

let stack: SigstoreStack;
beforeAll(async () => {
  stack = await startSigstoreStack();
});
afterAll(async () => {
  await stack?.stop();
  cleanupTempDirs();
});

/** A small single-manifest image in a fresh layout. */
async function image(): Promise<{ layout: OciLayout; desc: Descriptor }> {
  const layout = await OciLayout.open(join(tempDir(), 'oci'), { create: true });
  const layer = Buffer.from(`layer ${Math.random()}`);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [digestOf(layer)] } }));
  const l = { mediaType: MediaType.OciLayer, digest: digestOf(layer), size: layer.length };
  const c = { mediaType: MediaType.OciConfig, digest: digestOf(config), size: config.length };
  await layout.push(l, layer);
  await layout.push(c, config);
  const m = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: c, layers: [l] }));
  const desc = { mediaType: MediaType.OciManifest, digest: digestOf(m), size: m.length };
  await layout.push(desc, m);
  await layout.tag(desc, 'v1');
  return { layout, desc };
}

function keyless(s: SigstoreStack, extra: Partial<SignOptions> = {}, subject = ID, issuer = ISSUER): SignOptions {
  return { keyless: { identityToken: s.token(subject, issuer), fulcioURL: s.url }, rekorURL: s.url, dockerReference: 'registry.example/kairos/demo', ...extra };
}

function requirement(s: SigstoreStack, extra: Partial<KeylessRequirement> = {}): KeylessRequirement {
  return {
    kind: 'keyless',
    name: ID,
    identity: exactMatcher(ID, 'id'),
    issuer: exactMatcher(ISSUER, 'iss'),
    trustedRoot: parseTrustedRoot(readFileSync(s.trustedRootFile, 'utf8'), 'root'),
    tlog: true,
    ctlog: true,
    ...extra,
  };
}

const policyOf = (...signers: KeylessRequirement[]): VerificationPolicy => ({ signers, require: 'any', annotations: {} });

describe('keyless signing against a local Fulcio / Rekor / TSA', () => {
  it('signs both formats with one certificate and a Rekor entry each, and both verify with the exact identity', async () => {
    const { layout, desc } = await image();
    const r = await signImage(layout, desc, keyless(stack));
    expect(r.root.signatures.map((s) => s.format)).toEqual(['bundle', 'legacy']);
    // Both formats are signed at once, with the one certificate of the run.
    expect(stack.requests.filter((p) => p === '/api/v2/signingCert')).toHaveLength(1);
    const signers = await verifyImage(layout, desc, policyOf(requirement(stack)));
    expect(signers.map((s) => s.format).sort()).toEqual(['bundle', 'legacy']);
    for (const s of signers) {
      expect(s).toMatchObject({ kind: 'keyless', identity: ID, issuer: ISSUER, digest: desc.digest });
      expect(s.tlog).toHaveLength(1);
    }
    // The legacy layer carries cosign's keyless annotations.
    const sig = await layout.resolve(signatureTag(desc.digest));
    const layerAnn = ManifestSchema.parse(JSON.parse((await fetchBytes(layout, sig)).toString())).layers[0]!.annotations!;
    expect(Object.keys(layerAnn).sort()).toEqual([Annotations.Bundle, Annotations.Chain, Annotations.Certificate, Annotations.Signature].sort());
    expect(layerAnn[Annotations.Certificate]).toMatch(/^-----BEGIN CERTIFICATE-----\n/);
    expect(JSON.parse(layerAnn[Annotations.Bundle]!)).toMatchObject({
      SignedEntryTimestamp: expect.any(String),
      Payload: { body: expect.any(String), integratedTime: expect.any(Number), logIndex: expect.any(Number), logID: expect.stringMatching(/^[a-f0-9]{64}$/) },
    });
  });

  it('signatures asked for at once wait for the one certificate instead of each asking Fulcio', async () => {
    const certs = () => stack.requests.filter((p) => p === '/api/v2/signingCert').length;
    const before = certs();
    const signer = new KeylessSigner(keyless(stack).keyless!, 10_000);
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((x) => signer.sign(Buffer.from(x))));
    expect(certs() - before).toBe(1);
    expect(b!.key).toEqual(a!.key);
    expect(c!.key).toEqual(a!.key);
  });

  it('writes a bundle with a single certificate, a dsse log entry and an inclusion proof (cosign 3 shape)', async () => {
    const { layout, desc } = await image();
    await signImage(layout, desc, keyless(stack, { formats: ['bundle'] }));
    const [ref] = await listReferrers(layout, desc);
    const m = ManifestSchema.parse(JSON.parse((await fetchBytes(layout, ref!)).toString()));
    const blob = await fetchBytes(layout, m.layers[0]!);
    const json = JSON.parse(blob.toString()) as Record<string, any>;
    expect(Object.keys(json)).toEqual(['mediaType', 'verificationMaterial', 'dsseEnvelope']);
    expect(Object.keys(json.verificationMaterial)).toEqual(['certificate', 'tlogEntries']);
    expect(json.verificationMaterial.tlogEntries[0].kindVersion).toEqual({ kind: 'dsse', version: '0.0.1' });
    expect(json.verificationMaterial.tlogEntries[0].inclusionProof.checkpoint.envelope).toContain('127.0.0.1');
    expect(json.dsseEnvelope.signatures).toEqual([{ sig: expect.any(String) }]);
  });

  it('an intoto Rekor entry works too', async () => {
    const { layout, desc } = await image();
    await signImage(layout, desc, keyless(stack, { formats: ['bundle'], rekorEntryType: 'intoto' }));
    await verifyImage(layout, desc, policyOf(requirement(stack)));
  });

  it('with only a timestamp authority: verifies when the policy accepts timestamps instead of a log, refused when it needs the log', async () => {
    const { layout, desc } = await image();
    await signImage(layout, desc, keyless(stack, { rekorURL: undefined, tsaURL: stack.url }));
    const [s] = await verifyImage(layout, desc, policyOf(requirement(stack, { tlog: false })));
    expect(s!.timestamps).toHaveLength(1);
    await expect(verifyImage(layout, desc, policyOf(requirement(stack)))).rejects.toThrow(/no transparency-log entry \(the policy requires one\)/);
  });

  it('refuses an identity that only contains the expected one (the unanchored-regex trap), and a wrong issuer', async () => {
    const { layout, desc } = await image();
    await signImage(layout, desc, keyless(stack, {}, 'evil-builder@exampleXcom.attacker.test'));
    const exact = requirement(stack, { identity: exactMatcher('builder@example.com', 'id') });
    await expect(verifyImage(layout, desc, policyOf(exact))).rejects.toThrow(/identity "evil-builder@exampleXcom.attacker.test" does not match "builder@example.com"/);
    const re = requirement(stack, { identity: regexpMatcher('builder@example\\.com', 'id') });
    await expect(verifyImage(layout, desc, policyOf(re))).rejects.toThrow(/does not match \/\^\(\?:builder@example\\.com\)\$\//);
    const ok = requirement(stack, { identity: regexpMatcher('.*builder@example.com\\.attacker\\.test', 'id') });
    await verifyImage(layout, desc, policyOf(ok)); // the regexp the user wrote, anchored, does match
    const wrongIssuer = requirement(stack, { identity: exactMatcher('evil-builder@exampleXcom.attacker.test', 'id'), issuer: exactMatcher('https://token.actions.githubusercontent.co', 'iss') });
    await expect(verifyImage(layout, desc, policyOf(wrongIssuer))).rejects.toThrow(/OIDC issuer "https:\/\/token.actions.githubusercontent.com" does not match/);
  });

  it('refuses a certificate from another CA (untrusted root)', async () => {
    const other = await startSigstoreStack();
    try {
      const { layout, desc } = await image();
      await signImage(layout, desc, keyless(other));
      await expect(verifyImage(layout, desc, policyOf(requirement(stack)))).rejects.toThrow(/does not chain to a trusted CA|inclusion promise does not verify/);
    } finally {
      await other.stop();
    }
  });

  it('refuses an expired certificate whose only timestamp is outside its validity, and one with no timestamp at all', async () => {
    // Fulcio and Rekor from one stack, the TSA from another whose clock runs 20 minutes ahead.
    const late = await startSigstoreStack({ clock: new Date(stack.clock.getTime() + 20 * 60_000) });
    try {
      const { layout, desc } = await image();
      await signImage(layout, desc, { ...keyless(stack), rekorURL: undefined, tsaURL: late.url, formats: ['bundle'] });
      const root = { ...stack.trustedRoot, timestampAuthorities: late.trustedRoot.timestampAuthorities };
      const req = requirement(stack, { tlog: false, trustedRoot: parseTrustedRoot(JSON.stringify(root), 'root') });
      await expect(verifyImage(layout, desc, policyOf(req))).rejects.toThrow(/not valid when it was used|does not chain/);
      // Strip the timestamp: no signing-time evidence at all.
      const [ref] = await listReferrers(layout, desc);
      const m = ManifestSchema.parse(JSON.parse((await fetchBytes(layout, ref!)).toString()));
      const json = JSON.parse((await fetchBytes(layout, m.layers[0]!)).toString()) as Record<string, any>;
      delete json.verificationMaterial.timestampVerificationData;
      await expect(verifyBundleSignature(bundleFromJSON(json), req)).rejects.toThrow(/no verified timestamp/);
    } finally {
      await late.stop();
    }
  });

  it('verification needs no network: the services can be gone', async () => {
    const s = await startSigstoreStack();
    const { layout, desc } = await image();
    await signImage(layout, desc, keyless(s));
    const req = requirement(s);
    await s.stop();
    const got = await verifyImage(layout, desc, policyOf(req));
    expect(got.length).toBe(2);
  });

  it('keyless signing without a log or a timestamp authority is refused up front', async () => {
    const { layout, desc } = await image();
    const err = await signImage(layout, desc, { ...keyless(stack), rekorURL: undefined }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(/needs a transparency log/);
  });
});
