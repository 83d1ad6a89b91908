/**
 * Round trips against the real registry:2 (distribution 2.8: no referrers API, so bundles are found
 * through the `sha256-<hex>` fallback tag), through the CLI as users run it: keyed and keyless,
 * both formats, single and multi-arch, plus the failures a node must see.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTo } from '../src/builder/output.js';
import { digestOf } from '../src/oci/digest.js';
import { MediaType } from '../src/oci/mediatypes.js';
import { IndexSchema, ManifestSchema } from '../src/oci/types.js';
import { RegistryClient } from '../src/registry/client.js';
import { RegistryTarget } from '../src/registry/registry-target.js';
import { BUNDLE_V03_MEDIA_TYPE, SIMPLE_SIGNING_MEDIA_TYPE, signatureTag } from '../src/attach/formats.js';
import { referrersTag } from '../src/attach/tags.js';
import { copyImage } from '../src/store/copy.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { fetchBytes } from '../src/oci/target.js';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { kbundle, kbundleAsync, type CliResult as RunResult } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { CONTAINER_FILES, CONTAINER_SPEC, writeBundle } from './helpers/fixture-bundle.js';
import { startFaultProxy } from './helpers/fault-proxy.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';
import { startSigstoreStack, type SigstoreStack } from './helpers/sigstore-stack.js';

let reg: RegistryHandle;
let stack: SigstoreStack;
let client: RegistryClient;
let layoutDir: string;
let keyDir: string;
const PW = 'correct horse';
const env = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({ ...process.env, KBUNDLE_PASSWORD: PW, ...extra });

function ok(r: RunResult): RunResult {
  if (r.code !== 0) throw new Error(`kbundle exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return r;
}

/** Push the multi-arch fixture bundle (or a variant) to `repo:tag`; returns the index digest. */
async function push(repo: string, tag: string, variant = ''): Promise<string> {
  let dir = layoutDir;
  if (variant) {
    const b = writeBundle(join(tempDir(), 'b'), CONTAINER_SPEC, [...CONTAINER_FILES, { path: 'tree/variant.txt', content: variant }]);
    dir = join(tempDir(), 'oci');
    await buildTo(b, { transport: 'oci', path: dir, ref: 't' }, { sourceDateEpoch: 0 });
  }
  const src = await OciLayout.open(dir);
  const dst = new RegistryTarget(client, repo, reg.host, { access: 'push' });
  const r = await copyImage(src, 't', dst, tag);
  return r.root.digest;
}

beforeAll(async () => {
  reg = await startRegistry({ variant: 'open' });
  stack = await startSigstoreStack();
  const e = { ...process.env };
  delete e.KBUNDLE_PASSWORD;
  client = new RegistryClient({ env: e });
  const b = writeBundle(join(tempDir(), 'bundle'), CONTAINER_SPEC, CONTAINER_FILES);
  layoutDir = join(tempDir(), 'oci');
  await buildTo(b, { transport: 'oci', path: layoutDir, ref: 't' }, { sourceDateEpoch: 0 });
  keyDir = tempDir();
  ok(kbundle(['key', 'generate', '--out', join(keyDir, 'release')], { env: env() }));
  ok(kbundle(['key', 'generate', '--out', join(keyDir, 'other')], { env: env() }));
});

afterAll(async () => {
  await client?.close();
  await reg?.stop();
  await stack?.stop();
  cleanupTempDirs();
});

describe('keyed signing on registry:2', () => {
  it('signs a multi-arch index (and, with --recursive, each platform) in both formats; verify finds both by tag and by digest', async () => {
    const digest = await push('kairos/demo', '1.2.3');
    const signed = JSON.parse(ok(kbundle(['sign', `${reg.host}/kairos/demo:1.2.3`, '--key', join(keyDir, 'release.key'), '--recursive', '--json'], { env: env() })).stdout) as {
      digest: string;
      manifests: { digest: string; signatures: { format: string; location: string }[] }[];
    };
    expect(signed.digest).toBe(digest);
    expect(signed.manifests).toHaveLength(3); // index + amd64 + arm64
    for (const m of signed.manifests) expect(m.signatures.map((s) => s.format)).toEqual(['bundle', 'legacy']);

    // What landed in the registry is cosign's layout.
    const t = new RegistryTarget(client, 'kairos/demo', reg.host);
    const tags = await t.tags();
    for (const m of signed.manifests) {
      expect(tags).toContain(signatureTag(m.digest));
      expect(tags).toContain(referrersTag(m.digest));
    }
    const idxDesc = await t.resolve(referrersTag(digest));
    expect(idxDesc.mediaType).toBe(MediaType.OciIndex);
    const idx = IndexSchema.parse(JSON.parse((await fetchBytes(t, idxDesc)).toString()));
    expect(idx.manifests).toHaveLength(1);
    expect(idx.manifests[0]).toMatchObject({ artifactType: BUNDLE_V03_MEDIA_TYPE });
    const referrer = ManifestSchema.parse(JSON.parse((await fetchBytes(t, idx.manifests[0]!)).toString()));
    expect(referrer.subject?.digest).toBe(digest);
    const sig = ManifestSchema.parse(JSON.parse((await fetchBytes(t, await t.resolve(signatureTag(digest)))).toString()));
    expect(sig.layers.map((l) => l.mediaType)).toEqual([SIMPLE_SIGNING_MEDIA_TYPE]);
    const payload = JSON.parse((await fetchBytes(t, sig.layers[0]!)).toString()) as { critical: Record<string, any> };
    expect(payload.critical).toEqual({ identity: { 'docker-reference': `${reg.host}/kairos/demo` }, image: { 'docker-manifest-digest': digest }, type: 'cosign container image signature' });

    // skopeo, as an independent client, reads the signature manifest and the fallback index.
    const raw = execFileSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/kairos/demo:${signatureTag(digest)}`]);
    expect(digestOf(raw)).toBe((await t.resolve(signatureTag(digest))).digest);

    const v = JSON.parse(ok(kbundle(['verify', `${reg.host}/kairos/demo:1.2.3`, '--key', join(keyDir, 'release.pub'), '--json'])).stdout) as {
      verified: boolean;
      digest: string;
      signers: { format: string }[];
    };
    expect(v).toMatchObject({ verified: true, digest });
    expect(v.signers.map((s) => s.format).sort()).toEqual(['bundle', 'legacy']);
    for (const m of signed.manifests.slice(1)) ok(kbundle(['verify', `${reg.host}/kairos/demo@${m.digest}`, '--key', join(keyDir, 'release.pub')]));
  });

  it('refuses another key, a moved tag, and a copy in another repository (legacy payloads name the repository)', async () => {
    const digest = await push('kairos/moved', 'v1', 'one');
    ok(kbundle(['sign', `docker://${reg.host}/kairos/moved:v1`, '--key', join(keyDir, 'release.key')], { env: env() }));

    const wrong = kbundle(['verify', `${reg.host}/kairos/moved:v1`, '--key', join(keyDir, 'other.pub')]);
    expect(wrong.code).toBe(EXIT_CODES.REFUSED);
    expect(wrong.stderr).toMatch(
      /^kbundle: error: .*signature verification failed: \[bundle referrer sha256:.*\] signed by an unknown key \(hint .*\), not .*other\.pub \| \[legacy sha256-.*\.sig layer 1\] not signed by .*other\.pub$/m,
    );
    expect(wrong.stderr.split('\n').filter((l) => l.startsWith('kbundle: error:'))).toHaveLength(1);

    // The tag moves to an unsigned image: verification follows the tag to the new digest and fails.
    const moved = await push('kairos/moved', 'v1', 'two');
    expect(moved).not.toBe(digest);
    const r = kbundle(['verify', `${reg.host}/kairos/moved:v1`, '--key', join(keyDir, 'release.pub'), '--json']);
    expect(r.code).toBe(EXIT_CODES.REFUSED);
    expect(JSON.parse(r.stdout)).toMatchObject({ verified: false, digest: moved });
    expect(r.stderr).toMatch(/no signatures found/);
    ok(kbundle(['verify', `${reg.host}/kairos/moved@${digest}`, '--key', join(keyDir, 'release.pub')]));

    // Copy image and signatures to another repository.
    const src = new RegistryTarget(client, 'kairos/moved', reg.host);
    const dst = new RegistryTarget(client, 'evil/copy', reg.host, { access: 'push' });
    await copyImage(src, digest, dst, 'v1');
    await copyImage(src, signatureTag(digest), dst, signatureTag(digest));
    const legacy = kbundle(['verify', `${reg.host}/evil/copy:v1`, '--key', join(keyDir, 'release.pub'), '--format', 'legacy']);
    expect(legacy.code).toBe(EXIT_CODES.REFUSED);
    expect(legacy.stderr).toMatch(new RegExp(`signed for repository ${reg.host.replace(/\./g, '\\.')}/kairos/moved, not ${reg.host.replace(/\./g, '\\.')}/evil/copy`));
  });

  it('copy and pull carry signatures along (cosign .sig tags and referrers, index and platforms); --no-signatures leaves them', async () => {
    const digest = await push('kairos/mirror-src', '1', 'mirror');
    const signed = JSON.parse(ok(kbundle(['sign', `${reg.host}/kairos/mirror-src:1`, '--key', join(keyDir, 'release.key'), '--recursive', '--json'], { env: env() })).stdout) as {
      manifests: { digest: string }[];
    };
    expect(signed.manifests).toHaveLength(3);

    const c = JSON.parse(ok(kbundle(['copy', `${reg.host}/kairos/mirror-src:1`, `${reg.host}/mirror/copied:1`, '--json'])).stdout) as {
      digest: string;
      attached: { subject: string; kind: string; name: string }[];
    };
    expect(c.digest).toBe(digest);
    // For the index and both platform manifests: the legacy .sig tag and the bundle referrer.
    expect(c.attached.map((a) => `${a.subject} ${a.kind}`).sort()).toEqual(signed.manifests.flatMap((m) => [`${m.digest} referrer`, `${m.digest} tag`]).sort());
    const v = JSON.parse(ok(kbundle(['verify', `${reg.host}/mirror/copied:1`, '--key', join(keyDir, 'release.pub'), '--json'])).stdout) as { verified: boolean; signers: { format: string }[] };
    expect(v.verified).toBe(true);
    expect(v.signers.map((x) => x.format)).toContain('bundle');
    for (const m of signed.manifests.slice(1)) ok(kbundle(['verify', `${reg.host}/mirror/copied@${m.digest}`, '--key', join(keyDir, 'release.pub'), '--format', 'bundle']));
    // A legacy payload names the repository it was signed for; at the mirror it is refused on its own.
    const legacy = kbundle(['verify', `${reg.host}/mirror/copied:1`, '--key', join(keyDir, 'release.pub'), '--format', 'legacy']);
    expect(legacy.code).toBe(EXIT_CODES.REFUSED);
    expect(legacy.stderr).toMatch(/signed for repository .*\/kairos\/mirror-src, not .*\/mirror\/copied/);

    // Into an OCI layout: both formats verify there (a layout has no repository to compare).
    const dir = join(tempDir(), 'pulled');
    ok(kbundle(['pull', `${reg.host}/kairos/mirror-src:1`, '-o', `oci:${dir}:1`]));
    const fromLayout = JSON.parse(ok(kbundle(['verify', `oci:${dir}:1`, '--key', join(keyDir, 'release.pub'), '--json'])).stdout) as { signers: { format: string }[] };
    expect(fromLayout.signers.map((x) => x.format).sort()).toEqual(['bundle', 'legacy']);
    // An OCI archive carries them as well (the tar of such a layout), into the site where it is unpacked.
    const archive = join(tempDir(), 'mirror.tar');
    ok(kbundle(['pull', `${reg.host}/kairos/mirror-src:1`, '-o', `oci-archive:${archive}:1`]));
    const unpacked = join(tempDir(), 'from-archive');
    ok(kbundle(['copy', `oci-archive:${archive}:1`, `oci:${unpacked}:1`]));
    ok(kbundle(['verify', `oci:${unpacked}:1`, '--key', join(keyDir, 'release.pub')]));

    const bare = JSON.parse(ok(kbundle(['copy', `${reg.host}/kairos/mirror-src:1`, `${reg.host}/mirror/bare:1`, '--no-signatures', '--json'])).stdout) as { attached: unknown[] };
    expect(bare.attached).toEqual([]);
    const none = kbundle(['verify', `${reg.host}/mirror/bare:1`, '--key', join(keyDir, 'release.pub')]);
    expect(none.code).toBe(EXIT_CODES.REFUSED);
    expect(none.stderr).toMatch(/no signatures found/);

    // A source that refuses one lookup (403 for the .att tag of the index): the image and the rest
    // are copied, and the refusal is a warning rather than a failed copy.
    const proxy = await startFaultProxy({ target: reg.url });
    try {
      const rule = proxy.addRule({ action: 'status', status: 403, path: `/manifests/${referrersTag(digest)}.att`, times: Infinity });
      const partial = await kbundleAsync(['copy', `${proxy.host}/kairos/mirror-src:1`, `${reg.host}/mirror/partial:1`, '--json']);
      expect(partial.code, partial.stderr).toBe(0);
      expect(rule.fired).toBeGreaterThan(0);
      expect(partial.stderr).toMatch(new RegExp(`kbundle: warning: .*could not look up tag ${referrersTag(digest)}\\.att: `));
      expect((JSON.parse(partial.stdout) as { attached: unknown[] }).attached).toHaveLength(6);
    } finally {
      await proxy.close();
    }
    ok(kbundle(['verify', `${reg.host}/mirror/partial:1`, '--key', join(keyDir, 'release.pub'), '--format', 'bundle']));
  });

  it('a 100 MB signature layer served by the registry is never downloaded; one that lies about its size is cut off', async () => {
    const digest = await push('kairos/big', 'v1', 'big');
    ok(kbundle(['sign', `${reg.host}/kairos/big:v1`, '--key', join(keyDir, 'release.key'), '--format', 'legacy'], { env: env() }));
    const t = new RegistryTarget(client, 'kairos/big', reg.host, { access: 'push' });
    const sig = ManifestSchema.parse(JSON.parse((await fetchBytes(t, await t.resolve(signatureTag(digest)))).toString()));
    const big = Buffer.alloc(100 << 20, 0x7b);
    const bigDesc = { mediaType: SIMPLE_SIGNING_MEDIA_TYPE, digest: digestOf(big), size: big.length };
    await t.push(bigDesc, big);
    const { legacySignatureConfig, legacySignatureManifest } = await import('../src/attach/formats.js');
    const config = legacySignatureConfig([bigDesc.digest]);
    const configDesc = { mediaType: MediaType.OciConfig, digest: digestOf(config), size: config.length };
    await t.push(configDesc, config);
    for (const [size, reason] of [
      [big.length, /payload is 104857600 bytes, over the 1048576-byte limit/],
      [sig.layers[0]!.size, /payload: .*(size|larger than)/],
    ] as const) {
      const m = legacySignatureManifest(configDesc, [{ ...bigDesc, size, annotations: sig.layers[0]!.annotations }]);
      const md = { mediaType: MediaType.OciManifest, digest: digestOf(m), size: m.length };
      await t.push(md, m);
      await t.tag(md, signatureTag(digest));
      const started = Date.now();
      const r = kbundle(['verify', `${reg.host}/kairos/big:v1`, '--key', join(keyDir, 'release.pub')]);
      expect(r.code).toBe(EXIT_CODES.REFUSED);
      expect(r.stderr).toMatch(reason);
      expect(Date.now() - started).toBeLessThan(10_000);
    }
  });

  it('works against a TLS registry with a login (--ca-file, --username/--password-stdin) while KBUNDLE_PASSWORD unlocks the key', async () => {
    const tls = await startRegistry({ variant: 'htpasswd' });
    try {
      const c = new RegistryClient({ caFile: tls.caFile, username: tls.username, password: tls.password, env: {} });
      const src = await OciLayout.open(layoutDir);
      const digest = (await copyImage(src, 't', new RegistryTarget(c, 'secure/demo', tls.host, { access: 'push' }), 'v1')).root.digest;
      await c.close();
      const flags = ['--ca-file', tls.caFile!, '--username', tls.username!, '--password-stdin'];
      ok(kbundle(['sign', `${tls.host}/secure/demo:v1`, '--key', join(keyDir, 'release.key'), ...flags], { env: env(), input: `${tls.password}\n` }));
      const v = ok(kbundle(['verify', `${tls.host}/secure/demo:v1`, '--key', join(keyDir, 'release.pub'), ...flags], { input: `${tls.password}\n` }));
      expect(v.stdout).toContain(digest);
    } finally {
      await tls.stop();
    }
  });
});

describe('keyless signing on registry:2 with a local Sigstore', () => {
  it('signs with a Fulcio certificate and Rekor entries; verifies with the exact identity and the private trusted root, offline', async () => {
    const digest = await push('kairos/keyless', 'v1', 'keyless');
    const id = 'https://github.com/kairos-io/bundles/.github/workflows/release.yml@refs/heads/main';
    const iss = 'https://token.actions.githubusercontent.com';
    const s = ok(
      await kbundleAsync(['sign', `${reg.host}/kairos/keyless:v1`, '--fulcio-url', stack.url, '--rekor-url', stack.url, '--json'], {
        env: { ...process.env, SIGSTORE_ID_TOKEN: stack.token(id, iss) },
      }),
    );
    expect(JSON.parse(s.stdout)).toMatchObject({ digest, signer: 'keyless' });
    const verifyArgs = ['verify', `${reg.host}/kairos/keyless:v1`, '--trusted-root', stack.trustedRootFile, '--certificate-oidc-issuer', iss, '--offline', '--json'];
    const v = JSON.parse(ok(kbundle([...verifyArgs, '--certificate-identity', id])).stdout) as { signers: { identity: string; issuer: string; tlog: unknown[] }[] };
    expect(v.signers).toHaveLength(2);
    for (const x of v.signers) expect(x).toMatchObject({ identity: id, issuer: iss, tlog: [expect.any(Object)] });
    // Exact means exact: a prefix of the identity is not accepted; an anchored regexp must cover it all.
    const prefix = kbundle([...verifyArgs, '--certificate-identity', 'https://github.com/kairos-io/bundles']);
    expect(prefix.code).toBe(EXIT_CODES.REFUSED);
    expect(prefix.stderr).toMatch(/does not match "https:\/\/github.com\/kairos-io\/bundles"/);
    ok(kbundle([...verifyArgs, '--certificate-identity-regexp', 'https://github\\.com/kairos-io/bundles/.*']));
    expect(kbundle([...verifyArgs, '--certificate-identity-regexp', 'github\\.com/kairos-io']).code).toBe(EXIT_CODES.REFUSED);
    // A key policy does not accept a keyless signature.
    expect(kbundle(['verify', `${reg.host}/kairos/keyless:v1`, '--key', join(keyDir, 'release.pub')]).code).toBe(EXIT_CODES.REFUSED);
  });

  it('verify --policy picks the entry for the repository and enforces its annotations', async () => {
    await push('policy/demo', 'v1', 'policy');
    ok(kbundle(['sign', `${reg.host}/policy/demo:v1`, '--key', join(keyDir, 'release.key'), '-a', 'channel=stable'], { env: env() }));
    const dir = tempDir();
    const { writeFileSync } = await import('node:fs');
    const policy = (channel: string) => `version: 1
policies:
  - images: ["${reg.host}/policy/*"]
    signers: [{ key: ${join(keyDir, 'release.pub')} }]
    annotations: { channel: ${channel} }
  - images: ["**"]
    signers: [{ key: ${join(keyDir, 'other.pub')} }]
`;
    writeFileSync(join(dir, 'stable.yaml'), policy('stable'));
    writeFileSync(join(dir, 'beta.yaml'), policy('beta'));
    ok(kbundle(['verify', `${reg.host}/policy/demo:v1`, '--policy', join(dir, 'stable.yaml')]));
    const beta = kbundle(['verify', `${reg.host}/policy/demo:v1`, '--policy', join(dir, 'beta.yaml')]);
    expect(beta.code).toBe(EXIT_CODES.REFUSED);
    expect(beta.stderr).toMatch(/missing required annotation channel=beta/);
    const bad = kbundle(['verify', `${reg.host}/policy/demo:v1`, '--policy', join(dir, 'nope.yaml')]);
    expect(bad.code).toBe(EXIT_CODES.NOT_FOUND);
    expect(bad.stderr).toMatch(/cannot read the trust policy/);
  });
});
