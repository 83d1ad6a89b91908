/**
 * `signature:` pins of `url:` downloads in bundle.yaml: a build takes a download only when its
 * signature verifies — a raw signature or a Sigstore bundle by a pinned key, or a keyless bundle
 * (the @sigstore/mock Fulcio + Rekor stand-in on loopback) for the pinned identity and issuer — and
 * otherwise refuses (exit 10) and writes nothing. Downloads come from a loopback fixture server.
 */
import { createHash, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bundleToJSON, type Bundle } from '@sigstore/bundle';
import { DSSEBundleBuilder, FulcioSigner, MessageSignatureBundleBuilder, RekorWitness, type Signer } from '@sigstore/sign';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { loadPrivateKey } from '../src/sign/keys.js';
import { serveFixtures, type FixtureServer } from './helpers/catalog-copy.js';
import { kbundleAsync, type CliResult } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { writeBundle } from './helpers/fixture-bundle.js';
import { startSigstoreStack, type SigstoreStack } from './helpers/sigstore-stack.js';

const ID = 'https://github.com/upstream/tool/.github/workflows/release.yml@refs/tags/v1.0.0';
const ISSUER = 'https://token.actions.githubusercontent.com';
const TOOL = Buffer.from('#!/bin/sh\necho upstream tool v1.0.0\n');
const OTHER = Buffer.from('#!/bin/sh\necho something else\n');
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let server: FixtureServer;
let stack: SigstoreStack;
let keys: string;
const files: Record<string, Buffer> = {};

async function privateKey(prefix: string): Promise<KeyObject> {
  return (await loadPrivateKey(`${prefix}.key`, async () => '')).privateKey;
}

function keySigner(key: KeyObject): Signer {
  return { sign: async (data: Buffer) => ({ signature: cryptoSign('sha256', data, key), key: { $case: 'publicKey', publicKey: '' } }) };
}

const json = (b: Bundle) => Buffer.from(JSON.stringify(bundleToJSON(b)));

/** A container bundle taking /tool from the fixture server, with this signature: block (YAML lines). */
function bundleWith(signature: string[], extra: { key?: string } = {}): string {
  const dir = join(tempDir(), 'b');
  const spec = [
    'name: signed-tool',
    'version: 1.0.0',
    'description: a signed upstream download',
    'type: container',
    'platforms: [linux/amd64]',
    'files:',
    `  - url: ${server.url}/tool`,
    `    sha256: ${sha(TOOL)}`,
    '    dst: usr/local/bin/tool',
    '    mode: "0755"',
    ...(signature.length ? ['    signature:', ...signature.map((l) => `      ${l}`)] : []),
    '',
  ].join('\n');
  return writeBundle(dir, spec, extra.key ? [{ path: 'keys/upstream.pub', content: readFileSync(extra.key, 'utf8') }] : []);
}

async function build(dir: string, args: string[] = [], cache = tempDir()): Promise<CliResult & { out: string }> {
  const out = join(tempDir(), 'oci');
  const r = await kbundleAsync(['build', dir, '-o', `oci:${out}`, ...args], { env: { ...process.env, KBUNDLE_CACHE_DIR: cache, KBUNDLE_PASSWORD: '', KBUNDLE_TRUSTED_ROOT: '' } });
  return { ...r, out };
}

function expectRefused(r: CliResult & { out: string }, text: string): void {
  expect(r.code, r.stderr).toBe(EXIT_CODES.REFUSED);
  expect(r.stderr).toContain('signature verification failed');
  expect(r.stderr).toContain(text);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  expect(existsSync(join(r.out, 'index.json'))).toBe(false);
}

beforeAll(async () => {
  server = await serveFixtures(files);
  stack = await startSigstoreStack();
  keys = tempDir();
  for (const k of ['up', 'other']) expect((await kbundleAsync(['key', 'generate', '--out', join(keys, k)], { env: { ...process.env, KBUNDLE_PASSWORD: '' } })).code).toBe(0);
  const up = await privateKey(join(keys, 'up'));
  const other = await privateKey(join(keys, 'other'));
  files['/tool'] = TOOL;
  files['/tool.sig'] = Buffer.from(cryptoSign('sha256', TOOL, up).toString('base64'));
  files['/other.sig'] = Buffer.from(cryptoSign('sha256', OTHER, up).toString('base64'));
  files['/by-other-key.sig'] = Buffer.from(cryptoSign('sha256', TOOL, other).toString('base64'));
  files['/not-base64.sig'] = Buffer.from('this is not a signature');
  files['/huge.sig'] = Buffer.alloc(2 << 20, 0x41);
  files['/tool.keyed.sigstore.json'] = json(await new MessageSignatureBundleBuilder({ signer: keySigner(up), witnesses: [] }).create({ data: TOOL }));
  const keyless = (subject: string) =>
    new MessageSignatureBundleBuilder({
      signer: new FulcioSigner({ fulcioBaseURL: stack.url, identityProvider: { getToken: async () => stack.token(subject, ISSUER) } }),
      witnesses: [new RekorWitness({ rekorBaseURL: stack.url })],
    });
  files['/tool.sigstore.json'] = json(await keyless(ID).create({ data: TOOL }));
  files['/other.sigstore.json'] = json(await keyless(ID).create({ data: OTHER }));
  files['/tool.dsse.sigstore.json'] = json(await new DSSEBundleBuilder({ signer: keySigner(up), witnesses: [] }).create({ data: Buffer.from('{}'), type: 'application/vnd.in-toto+json' }));
  files['/garbage.sigstore.json'] = Buffer.from('{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}');
});
afterAll(async () => {
  await server.close();
  await stack.stop();
  cleanupTempDirs();
});

describe('url downloads pinned to a signer', () => {
  it('builds when a raw signature or a Sigstore bundle by the pinned key verifies, and records the signer for the provenance', async () => {
    const pub = join(keys, 'up.pub');
    const raw = await build(bundleWith(['key: keys/upstream.pub', `sig: ${server.url}/tool.sig`], { key: pub }), ['--json']);
    expect(raw.code, raw.stderr).toBe(0);
    expect(JSON.parse(raw.stdout).digest).toMatch(/^sha256:/);
    const bundled = await build(bundleWith(['key: keys/upstream.pub', `bundle: ${server.url}/tool.keyed.sigstore.json`], { key: pub }), ['--json']);
    expect(bundled.code, bundled.stderr).toBe(0);
    // The same image either way: the signature is checked, not packed.
    expect(JSON.parse(bundled.stdout).digest).toBe(JSON.parse(raw.stdout).digest);
    // A catalog build records who signed each download, for the provenance of catalog publish --attest.
    const catalog = join(tempDir(), 'bundles');
    cpSync(bundleWith(['key: keys/upstream.pub', `sig: ${server.url}/tool.sig`], { key: pub }), join(catalog, 'signed-tool'), { recursive: true });
    const layout = join(tempDir(), 'oci');
    const cb = await kbundleAsync(['catalog', 'build', '-C', catalog, '-o', `oci:${layout}`], { env: { ...process.env, KBUNDLE_CACHE_DIR: tempDir() } });
    expect(cb.code, cb.stderr).toBe(0);
    const state = JSON.parse(readFileSync(join(layout, 'kbundle-catalog.json'), 'utf8'));
    // Outside git: the folder from the catalog's parent, no absolute path, no source.
    expect(state['signed-tool'].provenance).toMatchObject({ path: 'bundles/signed-tool', source: {} });
    expect(state['signed-tool'].provenance.downloads).toEqual([
      { url: `${server.url}/tool`, sha256: sha(TOOL), dst: 'usr/local/bin/tool', platforms: ['linux/amd64'], signature: 'key keys/upstream.pub' },
    ]);
  });

  it('refuses a download whose keyed signature does not verify, naming the file, the field and the check', async () => {
    const pub = join(keys, 'up.pub');
    expectRefused(await build(bundleWith(['key: keys/upstream.pub', `sig: ${server.url}/other.sig`], { key: pub })), 'not signed by keys/upstream.pub');
    expectRefused(await build(bundleWith(['key: keys/upstream.pub', `sig: ${server.url}/by-other-key.sig`], { key: pub })), 'files.0');
    expectRefused(await build(bundleWith(['key: keys/upstream.pub', `sig: ${server.url}/not-base64.sig`], { key: pub })), 'not base64');
    expectRefused(await build(bundleWith(['key: keys/upstream.pub', `sig: ${server.url}/huge.sig`], { key: pub })), 'limit');
    // A bundle that is an attestation, or not a bundle at all.
    expectRefused(await build(bundleWith(['key: keys/upstream.pub', `bundle: ${server.url}/tool.dsse.sigstore.json`], { key: pub })), 'DSSE envelope');
    expectRefused(await build(bundleWith(['key: keys/upstream.pub', `bundle: ${server.url}/garbage.sigstore.json`], { key: pub })), 'not a Sigstore bundle');
    // A key that did not sign it.
    expectRefused(await build(bundleWith(['key: keys/upstream.pub', `bundle: ${server.url}/tool.keyed.sigstore.json`], { key: join(keys, 'other.pub') })), 'not signed by');
    // The signature file is missing: the HTTP status decides the exit code.
    const missing = await build(bundleWith(['key: keys/upstream.pub', `sig: ${server.url}/nope.sig`], { key: pub }));
    expect(missing.code).toBe(EXIT_CODES.NOT_FOUND);
    expect(missing.stderr).toContain(`files.0: the signature: download of ${server.url}/nope.sig failed: HTTP 404`);
  });

  it('builds when a keyless bundle names the pinned identity and issuer, and refuses every mismatch', async () => {
    const root = ['--trusted-root', stack.trustedRootFile];
    const keyless = (identity: string[], url = `${server.url}/tool.sigstore.json`) => bundleWith([`bundle: ${url}`, ...identity]);
    const good = [`certificate-identity: ${ID}`, `certificate-oidc-issuer: ${ISSUER}`];
    const ok = await build(keyless(good), root);
    expect(ok.code, ok.stderr).toBe(0);
    const re = await build(keyless(['certificate-identity-regexp: https://github\\.com/upstream/tool/.*', `certificate-oidc-issuer: ${ISSUER}`]), root);
    expect(re.code, re.stderr).toBe(0);
    expectRefused(await build(keyless([`certificate-identity: ${ID.replace('v1.0.0', 'v1.0.1')}`, `certificate-oidc-issuer: ${ISSUER}`]), root), 'does not match');
    expectRefused(await build(keyless([`certificate-identity: ${ID}`, 'certificate-oidc-issuer: https://accounts.google.com']), root), 'OIDC issuer');
    // Signed by the right identity, but for other bytes.
    expectRefused(await build(keyless(good, `${server.url}/other.sigstore.json`), root), 'not the pinned sha256');
    // A bundle signed by a key where a certificate is pinned.
    expectRefused(await build(keyless(good, `${server.url}/tool.keyed.sigstore.json`), root), 'signed with a key, not a certificate');
    // Trust roots that do not chain to the stand-in's CA.
    const foreign = join(tempDir(), 'root.json');
    writeFileSync(foreign, readFileSync(join(import.meta.dirname, '..', 'signing', 'trust-roots', 'public-good.json')));
    expectRefused(await build(keyless(good), ['--trusted-root', foreign]), 'files.0');
    // No trusted root at all: a usage error before anything is fetched.
    const none = await build(keyless(good));
    expect(none.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(none.stderr).toContain('a keyless signature needs a Sigstore trusted root');
  });

  it('remembers a verified signature in the download cache, and checks again when the pin changes', async () => {
    const cache = tempDir();
    const good = [`bundle: ${server.url}/tool.sigstore.json`, `certificate-identity: ${ID}`, `certificate-oidc-issuer: ${ISSUER}`];
    expect((await build(bundleWith(good), ['--trusted-root', stack.trustedRootFile], cache)).code).toBe(0);
    const served = server.requests.length;
    // Again from the cache: neither the file nor its bundle is fetched.
    const again = await build(bundleWith(good), ['--trusted-root', stack.trustedRootFile], cache);
    expect(again.code, again.stderr).toBe(0);
    expect(server.requests.length).toBe(served);
    // Another identity pinned: checked again (and refused), though the file is cached.
    const changed = [good[0]!, `certificate-identity: ${ID}-evil`, good[2]!];
    expectRefused(await build(bundleWith(changed), ['--trusted-root', stack.trustedRootFile], cache), 'does not match');
  });

  it('refuses unclear signature pins in bundle.yaml before fetching anything', async () => {
    const cases: [string[], string][] = [
      [['key: keys/upstream.pub', `certificate-identity: ${ID}`, `sig: ${server.url}/tool.sig`], 'not both'],
      [[`sig: ${server.url}/tool.sig`], 'sig (a raw signature) needs key'],
      [[`certificate-identity: ${ID}`, `certificate-oidc-issuer: ${ISSUER}`], 'keyless needs bundle'],
      [[`bundle: ${server.url}/tool.sigstore.json`, `certificate-identity: ${ID}`], 'keyless needs certificate-oidc-issuer'],
      [['key: keys/upstream.pub'], 'exactly one of sig'],
      [['key: keys/missing.pub', `sig: ${server.url}/tool.sig`], 'signature.key: file not found'],
      [[`bundle: ${server.url}/tool.sigstore.json`, 'certificate-identity-regexp: "(unclosed"', `certificate-oidc-issuer: ${ISSUER}`], 'is not a valid regular expression'],
      [['key: keys/upstream.pub', 'sig: ftp://example.com/x.sig'], 'must be an http(s) URL'],
      [['keyid: abc'], 'unknown field'],
    ];
    for (const [lines, message] of cases) {
      const before = server.requests.length;
      const r = await build(bundleWith(lines, { key: join(keys, 'up.pub') }), ['--trusted-root', stack.trustedRootFile]);
      expect(r.code, `${lines.join(' ')}: ${r.stderr}`).toBe(EXIT_CODES.INVALID_INPUT);
      expect(r.stderr).toContain('bundle.yaml: files.0.signature');
      expect(r.stderr, lines.join(' ')).toContain(message);
      expect(server.requests.length).toBe(before);
    }
  });
});
