/**
 * The blob verifier (src/blob/verify.ts) across bundle versions and against hostile bundles:
 * bundles signed here (keyed, and keyless with @sigstore/mock's Fulcio / Rekor / TSA on 127.0.0.1)
 * are converted to v0.1 / v0.2 or tampered with field by field; real bundles from cosign and
 * sigstore-go (test/fixtures/sigstore) verify with the compiled-in public-good root. Every refusal
 * must name its check.
 */
import { createHash, createPublicKey } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signBlob } from '../src/blob/sign.js';
import { BlobVerificationError, verifyBlob, type BlobArtifact, type BlobCheck, type BlobPolicy } from '../src/blob/verify.js';
import { generateKeyPair, loadPrivateKey, type LoadedPrivateKey } from '../src/sign/keys.js';
import { embeddedTrustedRoot } from '../src/trust/store.js';
import { exactMatcher } from '../src/verify/identity.js';
import { parseTrustedRoot, type TrustedRoot } from '../src/verify/trust.js';
import { REPO_ROOT } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { startSigstoreStack, type SigstoreStack } from './helpers/sigstore-stack.js';

const ID = 'https://github.com/kairos-io/bundles/.github/workflows/release.yml@refs/heads/main';
const ISSUER = 'https://token.actions.githubusercontent.com';
const FIX = join(REPO_ROOT, 'test/fixtures/sigstore');
const V01 = 'application/vnd.dev.sigstore.bundle+json;version=0.1';
const V02 = 'application/vnd.dev.sigstore.bundle+json;version=0.2';
const V03 = 'application/vnd.dev.sigstore.bundle.v0.3+json';

let stack: SigstoreStack;
let root: TrustedRoot;
let key: LoadedPrivateKey;
const data = Buffer.from(`blob ${Math.random()}`);
const file: BlobArtifact = { kind: 'file', bytes: data };
const digestArg: BlobArtifact = { kind: 'digest', digest: `sha256:${createHash('sha256').update(data).digest('hex')}` };
/** Bundles signed once, as JSON text. */
const signed: Record<'message' | 'dsse' | 'keyed', string> = { message: '', dsse: '', keyed: '' };

beforeAll(async () => {
  stack = await startSigstoreStack();
  root = parseTrustedRoot(readFileSync(stack.trustedRootFile, 'utf8'), 'root');
  const pair = await generateKeyPair('');
  const kf = join(tempDir(), 'k.key');
  writeFileSync(kf, pair.privatePem);
  key = await loadPrivateKey(kf, async () => '');
  const keyless = { identityToken: stack.token(ID, ISSUER), fulcioURL: stack.url };
  signed.message = (await signBlob(data, { keyless, rekorURL: stack.url, tsaURL: stack.url })).bundle.toString();
  signed.dsse = (await signBlob(data, { keyless: { ...keyless, identityToken: stack.token(ID, ISSUER) }, rekorURL: stack.url, dsse: true })).bundle.toString();
  signed.keyed = (await signBlob(data, { key, rekorURL: stack.url })).bundle.toString();
});
afterAll(async () => {
  await stack?.stop();
  cleanupTempDirs();
});

const keylessPolicy = (extra: Partial<Extract<BlobPolicy, { kind: 'keyless' }>> = {}): BlobPolicy => ({
  kind: 'keyless',
  identity: exactMatcher(ID, 'id'),
  issuer: exactMatcher(ISSUER, 'iss'),
  trustedRoot: root,
  tlog: true,
  ctlog: true,
  ...extra,
});
const keyPolicy = (tlog: 'require' | 'if-present' | 'ignore' = 'if-present'): BlobPolicy => ({ kind: 'key', name: 'k.pub', keys: [key.publicKey], trustedRoot: root, tlog });

const edit = (text: string, f: (b: Record<string, any>) => void): Buffer => {
  const b = JSON.parse(text) as Record<string, any>;
  f(b);
  return Buffer.from(JSON.stringify(b));
};
const asChain = (b: Record<string, any>) => {
  const vm = b.verificationMaterial;
  if (vm.certificate) {
    vm.x509CertificateChain = { certificates: [vm.certificate] };
    delete vm.certificate;
  }
};
const toV02 = (text: string) =>
  edit(text, (b) => {
    b.mediaType = V02;
    asChain(b);
  });
const toV01 = (text: string, keepProofWithoutCheckpoint = false) =>
  edit(text, (b) => {
    b.mediaType = V01;
    asChain(b);
    for (const e of b.verificationMaterial.tlogEntries ?? []) {
      if (keepProofWithoutCheckpoint) delete e.inclusionProof.checkpoint;
      else delete e.inclusionProof;
    }
  });

async function refusal(p: Promise<unknown>): Promise<BlobVerificationError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e, 'verified, but must be refused').toBeInstanceOf(BlobVerificationError);
  return e as BlobVerificationError;
}
async function expectRefused(p: Promise<unknown>, check: BlobCheck, re: RegExp, code = 'REFUSED'): Promise<void> {
  const e = await refusal(p);
  expect({ check: e.check, code: e.code }).toEqual({ check, code });
  expect(e.reason).toMatch(re);
}

describe('bundle versions', () => {
  for (const kind of ['message', 'dsse'] as const) {
    const artifact = kind === 'message' ? file : digestArg;
    it(`${kind}: v0.3 as signed, v0.3 under its older media type, v0.2 with a chain, v0.1 with the promise only`, async () => {
      expect(JSON.parse(signed[kind]).mediaType).toBe(V03);
      expect(await verifyBlob(artifact, Buffer.from(signed[kind]), keylessPolicy())).toMatchObject({ verified: true, bundleVersion: '0.3', identity: ID });
      const legacy = edit(signed[kind], (b) => (b.mediaType = 'application/vnd.dev.sigstore.bundle+json;version=0.3'));
      expect(await verifyBlob(artifact, legacy, keylessPolicy())).toMatchObject({ bundleVersion: '0.3' });
      expect(await verifyBlob(artifact, toV02(signed[kind]), keylessPolicy())).toMatchObject({ bundleVersion: '0.2' });
      expect(await verifyBlob(artifact, toV01(signed[kind]), keylessPolicy())).toMatchObject({ bundleVersion: '0.1' });
      expect(await verifyBlob(artifact, toV01(signed[kind], true), keylessPolicy())).toMatchObject({ bundleVersion: '0.1' });
    });
  }

  it('each version’s own rules: v0.1 needs inclusion promises, v0.2 inclusion proofs, v0.3 a single certificate; others are unknown', async () => {
    await expectRefused(
      verifyBlob(
        file,
        edit(signed.message, (b) => {
          b.mediaType = V01;
          delete b.verificationMaterial.tlogEntries[0].inclusionPromise;
        }),
        keylessPolicy(),
      ),
      'bundle',
      /malformed v0\.1 bundle: verificationMaterial\.tlogEntries\[0\]\.inclusionPromise/,
    );
    await expectRefused(
      verifyBlob(
        file,
        edit(signed.message, (b) => {
          b.mediaType = V02;
          delete b.verificationMaterial.tlogEntries[0].inclusionProof;
        }),
        keylessPolicy(),
      ),
      'bundle',
      /malformed v0\.2 bundle: verificationMaterial\.tlogEntries\[0\]\.inclusionProof/,
    );
    await expectRefused(verifyBlob(file, edit(signed.message, asChain), keylessPolicy()), 'bundle', /malformed v0\.3 bundle/);
    await expectRefused(
      verifyBlob(
        file,
        edit(signed.message, (b) => (b.mediaType = 'application/vnd.dev.sigstore.bundle.v0.4+json')),
        keylessPolicy(),
      ),
      'bundle',
      /is not a Sigstore bundle v0\.1, v0\.2 or v0\.3/,
    );
  });
});

describe('malformed bundles', () => {
  const cases: [string, Buffer, RegExp][] = [
    ['not JSON', Buffer.from('{"mediaType":'), /not valid JSON/],
    ['a JSON array', Buffer.from('[]'), /not a JSON object/],
    ['over 1 MiB', Buffer.alloc((1 << 20) + 1, 0x20), /over the 1048576-byte limit/],
    ['both a message signature and a DSSE envelope', Buffer.alloc(0), /exactly one of a message signature or a DSSE envelope/],
    ['a signature that is not base64', Buffer.alloc(0), /malformed bundle: messageSignature\.signature: not base64/],
    ['a log index that is not a number', Buffer.alloc(0), /malformed bundle: verificationMaterial\.tlogEntries\.0\.logIndex/],
    ['the same log entry twice', Buffer.alloc(0), /the same transparency-log entry twice/],
    ['33 log entries', Buffer.alloc(0), /verificationMaterial\.tlogEntries: Array must contain at most 32/],
    ['a checkpoint signer name that is a pattern', Buffer.alloc(0), /checkpoint signer name ".*" is not a log name/],
    ['both a key and a certificate', Buffer.alloc(0), /exactly one of a public key, a certificate or a chain/],
  ];
  beforeAll(() => {
    const m = signed.message;
    cases[3]![1] = edit(m, (b) => (b.dsseEnvelope = JSON.parse(signed.dsse).dsseEnvelope));
    cases[4]![1] = edit(m, (b) => (b.messageSignature.signature = 'not base64!'));
    cases[5]![1] = edit(m, (b) => (b.verificationMaterial.tlogEntries[0].logIndex = '-1'));
    cases[6]![1] = edit(m, (b) => b.verificationMaterial.tlogEntries.push(b.verificationMaterial.tlogEntries[0]));
    cases[7]![1] = edit(m, (b) => (b.verificationMaterial.tlogEntries = Array.from({ length: 33 }, () => b.verificationMaterial.tlogEntries[0])));
    cases[8]![1] = edit(m, (b) => {
      const cp = b.verificationMaterial.tlogEntries[0].inclusionProof.checkpoint;
      cp.envelope = cp.envelope.replace(/\u2014 \S+ /, '\u2014 (a+)+$ ');
    });
    cases[9]![1] = edit(m, (b) => (b.verificationMaterial.publicKey = { hint: 'x' }));
  });
  for (const [name, , re] of cases) {
    it(`refuses ${name}`, async () => {
      const bytes = cases.find((c) => c[0] === name)![1];
      await expectRefused(verifyBlob(file, bytes, keylessPolicy()), 'bundle', re);
    });
  }

  it('refuses a DSSE envelope with two signatures', async () => {
    const two = edit(signed.dsse, (b) => b.dsseEnvelope.signatures.push(b.dsseEnvelope.signatures[0]));
    await expectRefused(verifyBlob(digestArg, two, keylessPolicy()), 'bundle', /DSSE envelope has 2 signatures/);
  });

  it('refuses a DSSE payload that is not a statement, and one whose statement type is not in-toto', async () => {
    const garbage = edit(signed.dsse, (b) => (b.dsseEnvelope.payload = Buffer.from('{"_type":').toString('base64')));
    await expectRefused(verifyBlob(digestArg, garbage, keylessPolicy()), 'statement', /not valid JSON/);
    const other = edit(signed.dsse, (b) => {
      const st = JSON.parse(Buffer.from(b.dsseEnvelope.payload, 'base64').toString());
      st._type = 'https://example.com/Statement';
      b.dsseEnvelope.payload = Buffer.from(JSON.stringify(st)).toString('base64');
    });
    await expectRefused(verifyBlob(digestArg, other, keylessPolicy()), 'statement', /is not an in-toto statement/);
  });
});

describe('mismatched and untrusted bundles', () => {
  it('a log entry copied from another signature (CVE-2022-36056)', async () => {
    const other = (await signBlob(Buffer.from('another blob'), { keyless: { identityToken: stack.token(ID, ISSUER), fulcioURL: stack.url }, rekorURL: stack.url })).bundle.toString();
    const swapped = edit(signed.message, (b) => (b.verificationMaterial.tlogEntries = JSON.parse(other).verificationMaterial.tlogEntries));
    await expectRefused(verifyBlob(file, swapped, keylessPolicy()), 'transparency log', /entry is for another signature or payload/);
  });

  it('a tampered signed entry timestamp, and a tampered inclusion proof without a promise', async () => {
    const set = edit(signed.message, (b) => {
      const e = b.verificationMaterial.tlogEntries[0];
      const sig = Buffer.from(e.inclusionPromise.signedEntryTimestamp, 'base64');
      sig[sig.length - 3]! ^= 1;
      e.inclusionPromise.signedEntryTimestamp = sig.toString('base64');
    });
    await expectRefused(verifyBlob(file, set, keylessPolicy()), 'transparency log', /inclusion promise does not verify/);
    // The mock log holds one entry per signature, so the proof may have no path: grow it by a leaf.
    const proof = edit(signed.message, (b) => {
      const e = b.verificationMaterial.tlogEntries[0];
      delete e.inclusionPromise;
      e.inclusionProof.hashes = [...(e.inclusionProof.hashes ?? []), Buffer.alloc(32, 7).toString('base64')];
    });
    await expectRefused(verifyBlob(file, proof, keylessPolicy()), 'transparency log', /inclusion proof does not verify/);
    // @sigstore/verify reads the checkpoint's root hash only; a proof that says otherwise is refused up front.
    const root = edit(signed.message, (b) => {
      const p = b.verificationMaterial.tlogEntries[0].inclusionProof;
      const h = Buffer.from(p.rootHash, 'base64');
      h[0]! ^= 1;
      p.rootHash = h.toString('base64');
    });
    await expectRefused(verifyBlob(file, root, keylessPolicy()), 'bundle', /root hash is not the one its checkpoint signs/);
  });

  it('a signature over another file, and a message digest that names another file', async () => {
    const flipped = edit(signed.keyed, (b) => {
      const s = Buffer.from(b.messageSignature.signature, 'base64');
      s[10]! ^= 1;
      b.messageSignature.signature = s.toString('base64');
    });
    await expectRefused(verifyBlob(file, flipped, keyPolicy('ignore')), 'signature', /not signed by k\.pub/);
    const renamed = edit(signed.keyed, (b) => (b.messageSignature.messageDigest.digest = createHash('sha256').update('other').digest('base64')));
    await expectRefused(verifyBlob({ kind: 'file', bytes: Buffer.from('other') }, renamed, keyPolicy('ignore')), 'signature', /not signed by k\.pub/);
  });

  it('a public key, or a PUBLIC KEY in place of the certificate, never satisfies a keyless policy', async () => {
    await expectRefused(verifyBlob(file, Buffer.from(signed.keyed), keylessPolicy()), 'certificate', /signed with a key, not a certificate/);
    const spki = key.publicKey.export({ format: 'der', type: 'spki' }).toString('base64');
    const swapped = edit(signed.message, (b) => (b.verificationMaterial.certificate.rawBytes = spki));
    await expectRefused(verifyBlob(file, swapped, keylessPolicy()), 'certificate', /does not parse/);
  });

  it('a pinned key ignores the certificate a bundle carries', async () => {
    await expectRefused(verifyBlob(file, Buffer.from(signed.message), keyPolicy()), 'signature', /not signed by k\.pub/);
  });

  it('a certificate without any signing-time evidence (no log entry, no timestamp)', async () => {
    const bare = edit(signed.message, (b) => {
      b.verificationMaterial.tlogEntries = [];
      delete b.verificationMaterial.timestampVerificationData;
    });
    await expectRefused(verifyBlob(file, bare, keylessPolicy({ tlog: false })), 'timestamp', /no verified timestamp/);
  });

  it('an identity from the wrong trusted root: the public-good root does not trust a private Fulcio', async () => {
    const e = await refusal(verifyBlob(file, Buffer.from(signed.message), keylessPolicy({ trustedRoot: embeddedTrustedRoot() })));
    expect(['certificate', 'timestamp', 'transparency log']).toContain(e.check);
  });

  it('a log entry for another key (keyed, tlog kept)', async () => {
    const other = await generateKeyPair('');
    const kf = join(tempDir(), 'o.key');
    writeFileSync(kf, other.privatePem);
    const otherKey = await loadPrivateKey(kf, async () => '');
    const theirs = (await signBlob(data, { key: otherKey, rekorURL: stack.url })).bundle.toString();
    // Our signature, their (genuine) log entry for the same file: the body names another key and signature.
    const mixed = edit(signed.keyed, (b) => (b.verificationMaterial.tlogEntries = JSON.parse(theirs).verificationMaterial.tlogEntries));
    await expectRefused(verifyBlob(file, mixed, keyPolicy()), 'transparency log', /another signature|another key/);
  });
});

describe('real bundles verify with the compiled-in public-good root', () => {
  it('cosign v3 keyed DSSE bundle (public-good Rekor entry and TSA timestamp), by the image digest it names', async () => {
    const bundle = readFileSync(join(FIX, 'cosign-bundle/bundle.sigstore.json'));
    const keys = [createPublicKey(readFileSync(join(FIX, 'cosign-bundle/cosign.pub')))];
    const digest: BlobArtifact = { kind: 'digest', digest: 'sha256:d7d5640c741c60b47fa4b5530daa20a6469b55754a89dd42adbadadb59f9093c' };
    const r = await verifyBlob(digest, bundle, { kind: 'key', name: 'cosign.pub', keys, trustedRoot: embeddedTrustedRoot(), tlog: 'require' });
    expect(r).toMatchObject({ verified: true, content: 'dsse', predicateType: 'https://sigstore.dev/cosign/sign/v1' });
    expect(r.tlog).toHaveLength(1);
  });

  it('cosign keyless attestation (public-good Fulcio, CT log and Rekor) with its exact identity', async () => {
    const bundle = readFileSync(join(FIX, 'cosign-attestation/oci-attestation.sigstore.json'));
    const digest: BlobArtifact = { kind: 'digest', digest: 'sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4' };
    const policy: BlobPolicy = {
      kind: 'keyless',
      identity: exactMatcher('cody@soyland.com', 'id'),
      issuer: exactMatcher('https://github.com/login/oauth', 'iss'),
      trustedRoot: embeddedTrustedRoot(),
      tlog: true,
      ctlog: true,
    };
    expect(await verifyBlob(digest, bundle, policy)).toMatchObject({ identity: 'cody@soyland.com', predicateType: 'https://cosign.sigstore.dev/attestation/v1' });
    await expectRefused(verifyBlob(digest, bundle, policy, { predicateType: 'https://sigstore.dev/cosign/sign/v1' }), 'statement', /predicate type is/);
  });

  it('sigstore-go keyed v0.1 DSSE bundle over the blob itself (text/plain payload)', async () => {
    const bundle = readFileSync(join(FIX, 'sigstore-go/bundle-public-key.json'));
    const policy: BlobPolicy = {
      kind: 'key',
      name: 'public-key.pem',
      keys: [createPublicKey(readFileSync(join(FIX, 'sigstore-go/public-key.pem')))],
      trustedRoot: embeddedTrustedRoot(),
      tlog: 'if-present',
    };
    const blob = Buffer.from('hello, world!');
    expect(await verifyBlob({ kind: 'file', bytes: blob }, bundle, policy)).toMatchObject({ verified: true, bundleVersion: '0.1', content: 'dsse', payloadType: 'text/plain' });
    expect(await verifyBlob({ kind: 'digest', digest: `sha256:${createHash('sha256').update(blob).digest('hex')}` }, bundle, policy)).toMatchObject({ verified: true });
    await expectRefused(
      verifyBlob({ kind: 'file', bytes: Buffer.from('hello, world?') }, bundle, policy),
      'artifact',
      /the DSSE payload \(text\/plain, sha256:[0-9a-f]{64}\) is not this file/,
      'DIGEST_MISMATCH',
    );
  });
});
