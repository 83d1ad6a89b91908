/**
 * The trusted root keyless verification uses when none is named: the compiled-in public-good root
 * (the same bytes @sigstore/tuf ships and signing/trust-roots/ holds), or the one `kbundle trust
 * update` cached — proved end to end: a blob and an image signed by a private Sigstore verify
 * without --trusted-root only once a TUF update (from a loopback repository) has brought its root.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { digestOf } from '../src/oci/digest.js';
import { MediaType } from '../src/oci/mediatypes.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { PUBLIC_GOOD_MIRROR, PUBLIC_GOOD_TRUSTED_ROOT, PUBLIC_GOOD_TUF_ROOT } from '../src/trust/public-good.js';
import { defaultTrustedRoot, embeddedTrustedRoot } from '../src/trust/store.js';
import { kbundleAsync, kbundleInProcess, REPO_ROOT } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { startSigstoreStack, type SigstoreStack } from './helpers/sigstore-stack.js';
import { startTufRepo, type TufRepo } from './helpers/tuf-repo.js';

const ID = 'https://github.com/kairos-io/bundles/.github/workflows/release.yml@refs/heads/main';
const ISSUER = 'https://token.actions.githubusercontent.com';

describe('the compiled-in public-good trust material', () => {
  it('is what @sigstore/tuf ships as its seed, and what signing/trust-roots/ holds', () => {
    const seeds = JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules/@sigstore/tuf/seeds.json'), 'utf8')) as Record<string, { 'root.json': string; targets: Record<string, string> }>;
    const seed = seeds[PUBLIC_GOOD_MIRROR]!;
    expect(PUBLIC_GOOD_TUF_ROOT).toEqual(JSON.parse(Buffer.from(seed['root.json'], 'base64').toString()));
    expect(PUBLIC_GOOD_TRUSTED_ROOT).toEqual(JSON.parse(Buffer.from(seed.targets['trusted_root.json']!, 'base64').toString()));
    expect(JSON.parse(readFileSync(join(REPO_ROOT, 'signing/trust-roots/public-good.json'), 'utf8'))).toEqual(PUBLIC_GOOD_TRUSTED_ROOT);
    expect(JSON.parse(readFileSync(join(REPO_ROOT, 'signing/trust-roots/public-good-tuf-root.json'), 'utf8'))).toEqual(PUBLIC_GOOD_TUF_ROOT);
  });

  it('parses as a trusted root holding Fulcio, Rekor (v1 and v2), the CT logs and the TSA', () => {
    const root = embeddedTrustedRoot();
    expect(root.certificateAuthorities.map((c) => c.uri)).toContain('https://fulcio.sigstore.dev');
    expect(root.tlogs.map((t) => t.baseUrl)).toEqual(['https://rekor.sigstore.dev', 'https://log2025-1.rekor.sigstore.dev']);
    expect(root.ctlogs.length).toBeGreaterThanOrEqual(1);
    expect(root.timestampAuthorities.map((t) => t.uri)).toEqual(['https://timestamp.sigstore.dev/api/v1/timestamp']);
  });

  it('is the default while the trust cache is empty; `trust show` says so', async () => {
    const cache = tempDir();
    expect((await defaultTrustedRoot({ cacheDir: cache })).source).toBe('embedded');
    const r = await kbundleInProcess(['trust', 'show', '--cache-dir', cache]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^trusted root: embedded public-good root \(no cached update\)\n/);
    expect(r.stdout).toMatch(/transparency logs: https:\/\/rekor\.sigstore\.dev, https:\/\/log2025-1\.rekor\.sigstore\.dev/);
  });

  it('a damaged cached root is an error that says what to do, not a silent fall-back', async () => {
    const cache = tempDir();
    writeFileSync(join(cache, 'trusted_root.json'), '{"tlogs": 1}');
    const r = await kbundleInProcess(['trust', 'show', '--cache-dir', cache]);
    expect(r.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(r.stderr).toMatch(/trusted_root\.json: not a trusted root/);
    expect(r.stderr).toMatch(/hint: run kbundle trust update, or remove/);
  });
});

describe('a root brought by `trust update` is the default for keyless verify and verify-blob', () => {
  let stack: SigstoreStack;
  let repo: TufRepo;
  let dir: string;
  let blob: string;
  let bundle: string;
  let image: string;
  const env = () => {
    const e: NodeJS.ProcessEnv = { ...process.env };
    delete e.KBUNDLE_TRUST_CACHE;
    return e;
  };

  beforeAll(async () => {
    stack = await startSigstoreStack();
    repo = await startTufRepo({ 'trusted_root.json': Buffer.from(JSON.stringify(stack.trustedRoot)) });
    dir = tempDir();
    blob = join(dir, 'blob.txt');
    bundle = join(dir, 'blob.sigstore.json');
    writeFileSync(blob, 'signed by a private Sigstore\n');
    const keyless = ['--identity-token', stack.token(ID, ISSUER), '--fulcio-url', stack.url, '--rekor-url', stack.url];
    const s = await kbundleAsync(['sign-blob', blob, '--bundle', bundle, ...keyless], { env: env() });
    expect(s.code, s.stderr).toBe(0);
    const layout = await OciLayout.open(join(dir, 'oci'), { create: true });
    const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
    const c = { mediaType: MediaType.OciConfig, digest: digestOf(config), size: config.length };
    await layout.push(c, config);
    const m = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: c, layers: [] }));
    const desc = { mediaType: MediaType.OciManifest, digest: digestOf(m), size: m.length };
    await layout.push(desc, m);
    await layout.tag(desc, 'v1');
    image = `oci:${join(dir, 'oci')}:v1`;
    const si = await kbundleAsync(['sign', image, ...keyless], { env: env() });
    expect(si.code, si.stderr).toBe(0);
  });
  afterAll(async () => {
    await repo?.stop();
    await stack?.stop();
    cleanupTempDirs();
  });

  it('before the update the embedded public-good root refuses them; after it, they verify offline', async () => {
    const node = join(dir, 'node');
    mkdirSync(node);
    const identity = ['--certificate-identity', ID, '--certificate-oidc-issuer', ISSUER];
    const verifyBlob = () => kbundleAsync(['verify-blob', blob, '--bundle', bundle, '--root', node, ...identity], { env: env() });
    const verifyImage = () => kbundleAsync(['verify', image, ...identity], { env: { ...env(), KBUNDLE_TRUST_CACHE: join(node, 'usr/local/var/lib/kbundle/trust') } });

    const before = await verifyBlob();
    expect(before.code).toBe(EXIT_CODES.REFUSED);
    expect((await verifyImage()).code).toBe(EXIT_CODES.REFUSED);

    const rootFile = join(dir, 'tuf-root.json');
    writeFileSync(rootFile, repo.rootJson());
    const u = await kbundleAsync(['trust', 'update', '--root', node, '--mirror', repo.url, '--tuf-root', rootFile], { env: env() });
    expect(u.code, u.stderr).toBe(0);
    await repo.stop(); // verification needs no network

    const after = await verifyBlob();
    expect(after.code, after.stderr).toBe(0);
    expect(after.stdout).toMatch(/^Verified OK: /);
    const img = await verifyImage();
    expect(img.code, img.stderr).toBe(0);
    const show = await kbundleAsync(['trust', 'show', '--root', node, '--json'], { env: env() });
    expect(JSON.parse(show.stdout)).toMatchObject({ source: join(node, 'usr/local/var/lib/kbundle/trust/trusted_root.json'), state: { mirror: repo.url } });
  });
});
