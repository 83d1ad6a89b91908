/**
 * `kbundle sign-blob` → `kbundle verify-blob`, run as a user runs them (separate processes):
 * keyed (read back by OpenSSL too), keyless against @sigstore/mock's Fulcio / Rekor / TSA on
 * 127.0.0.1 with a private trusted root, message signatures and DSSE, the default trusted root,
 * and the refusals a user meets first (wrong key, other file, wrong identity, foreign CA).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createHash, X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { assertBundleLatest, bundleFromJSON } from '@sigstore/bundle';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { kbundleAsync, type CliResult } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { startSigstoreStack, type SigstoreStack } from './helpers/sigstore-stack.js';

const ID = 'https://github.com/kairos-io/bundles/.github/workflows/release.yml@refs/heads/main';
const ISSUER = 'https://token.actions.githubusercontent.com';

let stack: SigstoreStack;
let dir: string;
let file: string;
/** No ambient identity token or CI OIDC endpoint, no trust cache: each test says what it uses. */
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  stack = await startSigstoreStack();
  dir = tempDir();
  file = join(dir, 'kairos-bundle.tar');
  writeFileSync(file, `a blob to sign ${Math.random()}\n`);
  env = { ...process.env, KBUNDLE_PASSWORD: '', KBUNDLE_TRUST_CACHE: join(dir, 'no-cache') };
  for (const k of ['SIGSTORE_ID_TOKEN', 'KBUNDLE_IDENTITY_TOKEN', 'ACTIONS_ID_TOKEN_REQUEST_URL', 'ACTIONS_ID_TOKEN_REQUEST_TOKEN', 'COSIGN_PASSWORD']) delete env[k];
  const r = await kbundleAsync(['key', 'generate', '--out', join(dir, 'release')], { env });
  expect(r.code).toBe(0);
  expect((await kbundleAsync(['key', 'generate', '--out', join(dir, 'other')], { env })).code).toBe(0);
});
afterAll(async () => {
  await stack?.stop();
  cleanupTempDirs();
});

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const run = (args: string[], extra: NodeJS.ProcessEnv = {}) => kbundleAsync(args, { env: { ...env, ...extra } });
const json = (r: CliResult) => JSON.parse(r.stdout) as Record<string, any>;
const readJson = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as Record<string, any>;

function expectRefused(r: CliResult, code: number, re: RegExp): void {
  expect(r.code, r.stderr).toBe(code);
  expect(r.stderr).toMatch(re);
  expect(r.stderr).not.toMatch(/\n\s+at /); // one clean line (and a hint), no stack trace
}

describe('keyed sign-blob / verify-blob', () => {
  it('writes a v0.3 message-signature bundle with the key hint; verify-blob accepts it, and OpenSSL agrees', async () => {
    const bundle = join(dir, 'keyed.sigstore.json');
    const sig = join(dir, 'keyed.sig');
    const s = await run(['sign-blob', file, '--bundle', bundle, '--key', join(dir, 'release.key'), '--output-signature', sig, '--json']);
    expect(s.code, s.stderr).toBe(0);
    expect(json(s)).toMatchObject({ digest: `sha256:${sha256(readFileSync(file))}`, signer: { kind: 'key', hint: expect.any(String) } });
    const b = readJson(bundle);
    expect(b.mediaType).toBe('application/vnd.dev.sigstore.bundle.v0.3+json');
    expect(Object.keys(b)).toEqual(['mediaType', 'verificationMaterial', 'messageSignature']);
    expect(b.verificationMaterial).toEqual({ publicKey: { hint: json(s).signer.hint } });
    expect(b.messageSignature.messageDigest).toEqual({ algorithm: 'SHA2_256', digest: createHash('sha256').update(readFileSync(file)).digest('base64') });
    assertBundleLatest(bundleFromJSON(b)); // the upstream schema rules for v0.3

    // An independent verifier: the raw signature is ECDSA/SHA-256 over the file.
    writeFileSync(`${sig}.der`, Buffer.from(readFileSync(sig, 'utf8'), 'base64'));
    expect(execFileSync('openssl', ['dgst', '-sha256', '-verify', join(dir, 'release.pub'), '-signature', `${sig}.der`, file], { encoding: 'utf8' })).toMatch(/Verified OK/);

    const v = await run(['verify-blob', file, '--bundle', bundle, '--key', join(dir, 'release.pub')]);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout).toMatch(/^Verified OK: .*kairos-bundle\.tar \(sha256:[0-9a-f]{64}\) signed by key sha256:[0-9a-f]{64} — bundle v0\.3 message-signature\n$/);
  });

  it('refuses another key, another file, and a digest in place of the file for a message signature', async () => {
    const bundle = join(dir, 'keyed2.sigstore.json');
    expect((await run(['sign-blob', file, '--bundle', bundle, '--key', join(dir, 'release.key')])).code).toBe(0);
    expectRefused(
      await run(['verify-blob', file, '--bundle', bundle, '--key', join(dir, 'other.pub')]),
      EXIT_CODES.REFUSED,
      /signature check failed: signed by an unknown key \(hint .+\), not .*other\.pub/,
    );
    const changed = join(dir, 'changed.tar');
    writeFileSync(changed, `${readFileSync(file, 'utf8')}x`);
    expectRefused(
      await run(['verify-blob', changed, '--bundle', bundle, '--key', join(dir, 'release.pub')]),
      EXIT_CODES.DIGEST_MISMATCH,
      /artifact check failed: the bundle signs sha256:[0-9a-f]{64}, not this file/,
    );
    const digest = `sha256:${sha256(readFileSync(file))}`;
    const r = await run(['verify-blob', digest, '--bundle', bundle, '--key', join(dir, 'release.pub'), '--json']);
    expectRefused(r, EXIT_CODES.UNSUPPORTED, /a message-signature bundle signs the file itself/);
    expect(json(r)).toMatchObject({ verified: false, check: 'artifact' });
  });

  it('--dsse signs an in-toto statement naming the file; it verifies by file or by sha256 digest', async () => {
    const bundle = join(dir, 'dsse.sigstore.json');
    expect((await run(['sign-blob', file, '--bundle', bundle, '--key', join(dir, 'release.key'), '--dsse'])).code).toBe(0);
    const b = readJson(bundle);
    expect(b.dsseEnvelope.payloadType).toBe('application/vnd.in-toto+json');
    expect(JSON.parse(Buffer.from(b.dsseEnvelope.payload, 'base64').toString())).toEqual({
      _type: 'https://in-toto.io/Statement/v1',
      subject: [{ name: 'kairos-bundle.tar', digest: { sha256: sha256(readFileSync(file)) } }],
      predicateType: 'https://sigstore.dev/cosign/sign/v1',
    });
    const pub = join(dir, 'release.pub');
    expect((await run(['verify-blob', file, '--bundle', bundle, '--key', pub])).code).toBe(0);
    const byDigest = await run(['verify-blob', `sha256:${sha256(readFileSync(file))}`, '--bundle', bundle, '--key', pub, '--json']);
    expect(byDigest.code, byDigest.stderr).toBe(0);
    expect(json(byDigest)).toMatchObject({ verified: true, content: 'dsse', bundleVersion: '0.3', predicateType: 'https://sigstore.dev/cosign/sign/v1', kind: 'key' });
    expectRefused(
      await run(['verify-blob', `sha256:${'0'.repeat(64)}`, '--bundle', bundle, '--key', pub]),
      EXIT_CODES.DIGEST_MISMATCH,
      /the statement's subjects \(kairos-bundle\.tar sha256:[0-9a-f]{64}\) do not include sha256:0{64}/,
    );
    expectRefused(
      await run(['verify-blob', file, '--bundle', bundle, '--key', pub, '--predicate-type', 'https://slsa.dev/provenance/v1']),
      EXIT_CODES.REFUSED,
      /statement check failed: predicate type is "https:\/\/sigstore.dev\/cosign\/sign\/v1"/,
    );
  });

  it('with --rekor-url the entry verifies against the trusted root that holds that log, and not against another', async () => {
    const bundle = join(dir, 'keyed-rekor.sigstore.json');
    const s = await run(['sign-blob', file, '--bundle', bundle, '--key', join(dir, 'release.key'), '--rekor-url', stack.url, '--json']);
    expect(s.code, s.stderr).toBe(0);
    const entry = readJson(bundle).verificationMaterial.tlogEntries[0];
    expect(entry.kindVersion).toEqual({ kind: 'hashedrekord', version: '0.0.1' });
    expect(entry.inclusionProof.checkpoint.envelope).toContain('127.0.0.1');
    const pub = join(dir, 'release.pub');
    const ok = await run(['verify-blob', file, '--bundle', bundle, '--key', pub, '--trusted-root', stack.trustedRootFile, '--require-tlog', '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(json(ok).tlog).toEqual([{ logIndex: expect.any(String), integratedTime: expect.any(String), kind: 'hashedrekord 0.0.1' }]);
    // The embedded public-good root does not hold this log: its entry cannot be trusted.
    expectRefused(await run(['verify-blob', file, '--bundle', bundle, '--key', pub]), EXIT_CODES.REFUSED, /transparency log check failed/);
    expect((await run(['verify-blob', file, '--bundle', bundle, '--key', pub, '--insecure-ignore-tlog'])).code).toBe(0);
    // A bundle without an entry does not satisfy --require-tlog.
    const plain = join(dir, 'keyed2.sigstore.json');
    expectRefused(await run(['verify-blob', file, '--bundle', plain, '--key', pub, '--trusted-root', stack.trustedRootFile, '--require-tlog']), EXIT_CODES.REFUSED, /no transparency-log entry/);
  });
});

describe('keyless sign-blob / verify-blob against a local Fulcio / Rekor / TSA', () => {
  const keyless = (extra: string[] = [], subject = ID) => ['--identity-token', stack.token(subject, ISSUER), '--fulcio-url', stack.url, '--rekor-url', stack.url, ...extra];
  const trust = () => ['--trusted-root', stack.trustedRootFile];

  it('a v0.3 bundle with the Fulcio certificate, a hashedrekord entry (inclusion proof + checkpoint) and an RFC 3161 timestamp', async () => {
    const bundle = join(dir, 'keyless.sigstore.json');
    const certFile = join(dir, 'keyless.pem');
    const s = await run(['sign-blob', file, '--bundle', bundle, ...keyless(['--timestamp-server-url', stack.url]), '--output-certificate', certFile]);
    expect(s.code, s.stderr).toBe(0);
    const b = readJson(bundle);
    expect(b.mediaType).toBe('application/vnd.dev.sigstore.bundle.v0.3+json');
    expect(Object.keys(b.verificationMaterial)).toEqual(['certificate', 'tlogEntries', 'timestampVerificationData']);
    expect(b.verificationMaterial.tlogEntries[0]).toMatchObject({
      kindVersion: { kind: 'hashedrekord', version: '0.0.1' },
      inclusionPromise: expect.any(Object),
      inclusionProof: { checkpoint: expect.any(Object) },
    });
    expect(b.verificationMaterial.timestampVerificationData.rfc3161Timestamps).toHaveLength(1);
    assertBundleLatest(bundleFromJSON(b));
    expect(new X509Certificate(readFileSync(certFile)).subjectAltName).toBe(`URI:${ID}`);

    const v = await run(['verify-blob', file, '--bundle', bundle, ...trust(), '--certificate-identity', ID, '--certificate-oidc-issuer', ISSUER, '--json']);
    expect(v.code, v.stderr).toBe(0);
    expect(json(v)).toMatchObject({ verified: true, kind: 'keyless', identity: ID, issuer: ISSUER, bundleVersion: '0.3', content: 'message-signature' });
    expect(json(v).timestamps).toHaveLength(2); // the log's integrated time and the TSA's
    const re = await run([
      'verify-blob',
      file,
      '--bundle',
      bundle,
      ...trust(),
      '--certificate-identity-regexp',
      'https://github\\.com/kairos-io/.*',
      '--certificate-oidc-issuer-regexp',
      'https://token\\.actions\\..*',
    ]);
    expect(re.code, re.stderr).toBe(0);
  });

  it('refuses an identity that only contains the expected one, a wrong issuer, and a key in place of an identity', async () => {
    const bundle = join(dir, 'evil.sigstore.json');
    expect((await run(['sign-blob', file, '--bundle', bundle, ...keyless([], 'evil-builder@exampleXcom.attacker.test')])).code).toBe(0);
    const verify = (...a: string[]) => run(['verify-blob', file, '--bundle', bundle, ...trust(), ...a]);
    expectRefused(
      await verify('--certificate-identity', 'builder@example.com', '--certificate-oidc-issuer', ISSUER),
      EXIT_CODES.REFUSED,
      /identity check failed: certificate identity "evil-builder@exampleXcom.attacker.test" does not match "builder@example.com"/,
    );
    expectRefused(await verify('--certificate-identity-regexp', 'builder@example\\.com', '--certificate-oidc-issuer', ISSUER), EXIT_CODES.REFUSED, /identity check failed/);
    expectRefused(
      await verify('--certificate-identity', 'evil-builder@exampleXcom.attacker.test', '--certificate-oidc-issuer', 'https://token.actions.githubusercontent.co'),
      EXIT_CODES.REFUSED,
      /issuer check failed/,
    );
    const keyed = join(dir, 'keyed2.sigstore.json');
    expectRefused(
      await run(['verify-blob', file, '--bundle', keyed, ...trust(), '--certificate-identity', ID, '--certificate-oidc-issuer', ISSUER]),
      EXIT_CODES.REFUSED,
      /certificate check failed: signed with a key/,
    );
  });

  it('without --trusted-root the embedded public-good root applies: a private CA is not trusted', async () => {
    const bundle = join(dir, 'private-ca.sigstore.json');
    expect((await run(['sign-blob', file, '--bundle', bundle, ...keyless()])).code).toBe(0);
    const r = await run(['verify-blob', file, '--bundle', bundle, '--certificate-identity', ID, '--certificate-oidc-issuer', ISSUER]);
    expectRefused(r, EXIT_CODES.REFUSED, /check failed: .*(does not chain to a trusted CA|inclusion promise does not verify|transparency)/);
  });

  it('a certificate from another CA, with a trusted root that does not hold it', async () => {
    const other = await startSigstoreStack();
    try {
      const bundle = join(dir, 'foreign.sigstore.json');
      const s = await run(['sign-blob', file, '--bundle', bundle, '--identity-token', other.token(ID, ISSUER), '--fulcio-url', other.url, '--rekor-url', other.url]);
      expect(s.code, s.stderr).toBe(0);
      expectRefused(await run(['verify-blob', file, '--bundle', bundle, ...trust(), '--certificate-identity', ID, '--certificate-oidc-issuer', ISSUER]), EXIT_CODES.REFUSED, /check failed/);
    } finally {
      await other.stop();
    }
  });

  it('with only a timestamp authority: accepted with --insecure-ignore-tlog, refused without', async () => {
    const bundle = join(dir, 'tsa.sigstore.json');
    const s = await run(['sign-blob', file, '--bundle', bundle, '--identity-token', stack.token(ID, ISSUER), '--fulcio-url', stack.url, '--no-tlog-upload', '--tsa-url', stack.url]);
    expect(s.code, s.stderr).toBe(0);
    const args = ['verify-blob', file, '--bundle', bundle, ...trust(), '--certificate-identity', ID, '--certificate-oidc-issuer', ISSUER];
    expectRefused(await run(args), EXIT_CODES.REFUSED, /transparency log check failed: no transparency-log entry/);
    expect((await run([...args, '--insecure-ignore-tlog'])).code).toBe(0);
  });

  it('keyless DSSE with an intoto Rekor entry, verified by digest', async () => {
    const bundle = join(dir, 'keyless-dsse.sigstore.json');
    const s = await run(['sign-blob', file, '--bundle', bundle, ...keyless(['--dsse', '--rekor-entry-type', 'intoto'])]);
    expect(s.code, s.stderr).toBe(0);
    expect(readJson(bundle).verificationMaterial.tlogEntries[0].kindVersion).toEqual({ kind: 'intoto', version: '0.0.2' });
    const v = await run(['verify-blob', `sha256:${sha256(readFileSync(file))}`, '--bundle', bundle, ...trust(), '--certificate-identity', ID, '--certificate-oidc-issuer', ISSUER, '--json']);
    expect(v.code, v.stderr).toBe(0);
    expect(json(v)).toMatchObject({ content: 'dsse', kind: 'keyless', identity: ID });
  });

  it('usage errors come before any network or signing', async () => {
    expectRefused(await run(['sign-blob', file, '--bundle', join(dir, 'x.json')]), EXIT_CODES.INVALID_INPUT, /give --key <file>, or an identity token for keyless signing/);
    expectRefused(await run(['sign-blob', join(dir, 'missing'), '--bundle', join(dir, 'x.json'), '--key', join(dir, 'release.key')]), EXIT_CODES.NOT_FOUND, /missing: cannot read it \(ENOENT\)/);
    expectRefused(await run(['verify-blob', file, '--bundle', join(dir, 'keyed2.sigstore.json')]), EXIT_CODES.INVALID_INPUT, /give --key <pub>, or --certificate-identity/);
    expectRefused(
      await run(['verify-blob', file, '--bundle', join(dir, 'keyed2.sigstore.json'), '--certificate-identity', ID]),
      EXIT_CODES.INVALID_INPUT,
      /exactly one of --certificate-oidc-issuer or --certificate-oidc-issuer-regexp/,
    );
    expect((await run(['sign-blob', file])).code).toBe(2); // --bundle is required (usage)
  });
});
