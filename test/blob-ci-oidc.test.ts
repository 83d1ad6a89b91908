/**
 * CI-native keyless signing: with no --identity-token and no SIGSTORE_ID_TOKEN, `sign-blob`,
 * `sign` and `attest` ask the GitHub Actions OIDC endpoint for a token as cosign does (GET
 * $ACTIONS_ID_TOKEN_REQUEST_URL&audience=sigstore, `Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`,
 * answer `{"value": <jwt>}`), against a loopback stand-in of that endpoint and @sigstore/mock's Fulcio.
 */
import { createServer, type Server } from 'node:http';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { digestOf } from '../src/oci/digest.js';
import { MediaType } from '../src/oci/mediatypes.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { kbundleAsync } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { startSigstoreStack, type SigstoreStack } from './helpers/sigstore-stack.js';

const WORKFLOW = 'https://github.com/kairos-io/bundles/.github/workflows/release.yml@refs/heads/main';
const ISSUER = 'https://token.actions.githubusercontent.com';
const REQUEST_TOKEN = 'ghs_request-token-for-the-runner';

let stack: SigstoreStack;
let gha: Server;
let ghaUrl: string;
/** What the stand-in saw, and how it answers next. */
let seen: { url: string; authorization?: string }[];
let answer: { status: number; body: string } | undefined;
let dir: string;
let file: string;

beforeAll(async () => {
  stack = await startSigstoreStack();
  gha = createServer((req, res) => {
    seen.push({ url: req.url ?? '', authorization: req.headers.authorization });
    const a = answer ?? { status: 200, body: JSON.stringify({ count: 2, value: stack.token(WORKFLOW, ISSUER) }) };
    res.writeHead(a.status, { 'content-type': 'application/json' }).end(a.body);
  });
  await new Promise<void>((r) => gha.listen(0, '127.0.0.1', r));
  // The runner's URL already carries a query (api-version); the audience is added to it.
  ghaUrl = `http://127.0.0.1:${(gha.address() as { port: number }).port}/_apis/distributedtask/token?api-version=2.0`;
  dir = tempDir();
  file = join(dir, 'artifact.bin');
  writeFileSync(file, 'built in CI\n');
});
beforeEach(() => {
  seen = [];
  answer = undefined;
});
afterAll(async () => {
  await stack?.stop();
  await new Promise<void>((r) => gha.close(() => r()));
  cleanupTempDirs();
});

/** A GitHub Actions job's environment: the OIDC variables, no other token. */
function ciEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, GITHUB_ACTIONS: 'true', ACTIONS_ID_TOKEN_REQUEST_URL: ghaUrl, ACTIONS_ID_TOKEN_REQUEST_TOKEN: REQUEST_TOKEN, ...extra };
  for (const k of ['SIGSTORE_ID_TOKEN', 'KBUNDLE_IDENTITY_TOKEN']) if (!(k in extra)) delete env[k];
  return env;
}

const signBlob = (bundle: string, env: NodeJS.ProcessEnv) => kbundleAsync(['sign-blob', file, '--bundle', bundle, '--fulcio-url', stack.url, '--rekor-url', stack.url, '--json'], { env });

describe('keyless signing in GitHub Actions', () => {
  it('sign-blob gets the token from the runner (audience sigstore, bearer request token); the certificate names the workflow', async () => {
    const bundle = join(dir, 'ci.sigstore.json');
    const r = await signBlob(bundle, ciEnv());
    expect(r.code, r.stderr).toBe(0);
    expect(seen.length).toBeGreaterThanOrEqual(1);
    for (const s of seen) {
      const u = new URL(s.url, 'http://x');
      expect(u.pathname).toBe('/_apis/distributedtask/token');
      expect(u.searchParams.get('api-version')).toBe('2.0');
      expect(u.searchParams.get('audience')).toBe('sigstore');
      expect(s.authorization).toBe(`bearer ${REQUEST_TOKEN}`);
    }
    const b = JSON.parse(readFileSync(bundle, 'utf8')) as { verificationMaterial: { certificate: { rawBytes: string } } };
    expect(new X509Certificate(Buffer.from(b.verificationMaterial.certificate.rawBytes, 'base64')).subjectAltName).toBe(`URI:${WORKFLOW}`);
    const v = await kbundleAsync(['verify-blob', file, '--bundle', bundle, '--trusted-root', stack.trustedRootFile, '--certificate-identity', WORKFLOW, '--certificate-oidc-issuer', ISSUER]);
    expect(v.code, v.stderr).toBe(0);
  });

  async function image(name: string): Promise<string> {
    const layout = await OciLayout.open(join(dir, name), { create: true });
    const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
    const c = { mediaType: MediaType.OciConfig, digest: digestOf(config), size: config.length };
    await layout.push(c, config);
    const m = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: c, layers: [] }));
    const desc = { mediaType: MediaType.OciManifest, digest: digestOf(m), size: m.length };
    await layout.push(desc, m);
    await layout.tag(desc, 'v1');
    return `oci:${join(dir, name)}:v1`;
  }

  it('sign (an image) gets its token the same way', async () => {
    const ref = await image('oci');
    const s = await kbundleAsync(['sign', ref, '--fulcio-url', stack.url, '--rekor-url', stack.url], { env: ciEnv() });
    expect(s.code, s.stderr).toBe(0);
    expect(seen.length).toBeGreaterThanOrEqual(1);
    const v = await kbundleAsync(['verify', ref, '--trusted-root', stack.trustedRootFile, '--certificate-identity', WORKFLOW, '--certificate-oidc-issuer', ISSUER, '--json']);
    expect(v.code, v.stderr).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ verified: true, signers: [{ identity: WORKFLOW }, { identity: WORKFLOW }] });
  });

  it('attest (an in-toto statement about an image) gets its token the same way', async () => {
    const ref = await image('oci-att');
    const predicate = join(dir, 'predicate.json');
    writeFileSync(predicate, '{"built_by":"ci"}');
    const a = await kbundleAsync(['attest', ref, '--predicate', predicate, '--type', 'custom', '--fulcio-url', stack.url, '--rekor-url', stack.url], { env: ciEnv() });
    expect(a.code, a.stderr).toBe(0);
    expect(seen.length).toBeGreaterThanOrEqual(1);
    const v = await kbundleAsync(['verify-attestation', ref, '--type', 'custom', '--trusted-root', stack.trustedRootFile, '--certificate-identity', WORKFLOW, '--certificate-oidc-issuer', ISSUER]);
    expect(v.code, v.stderr).toBe(0);
  });

  it('SIGSTORE_ID_TOKEN and --identity-token come first: the runner is not asked', async () => {
    const env = ciEnv({ SIGSTORE_ID_TOKEN: stack.token('env@example.com', 'https://issuer.example') });
    expect((await signBlob(join(dir, 'env.json'), env)).code).toBe(0);
    const flag = await kbundleAsync(
      ['sign-blob', file, '--bundle', join(dir, 'flag.json'), '--identity-token', stack.token('flag@example.com', 'https://issuer.example'), '--fulcio-url', stack.url, '--rekor-url', stack.url],
      {
        env: ciEnv(),
      },
    );
    expect(flag.code, flag.stderr).toBe(0);
    expect(seen).toEqual([]);
  });

  it('a job without `id-token: write` (403) fails before signing, with the fix in the hint', async () => {
    answer = { status: 403, body: '{"message":"forbidden"}' };
    const certsBefore = stack.requests.filter((p) => p === '/api/v2/signingCert').length;
    const r = await signBlob(join(dir, 'denied.json'), ciEnv());
    expect(r.code).toBe(EXIT_CODES.DENIED);
    expect(r.stderr).toMatch(/GitHub Actions OIDC token: http:\/\/127\.0\.0\.1:\d+\/_apis\/distributedtask\/token answered HTTP 403/);
    expect(r.stderr).toMatch(/hint: .*permissions: id-token: write/);
    expect(stack.requests.filter((p) => p === '/api/v2/signingCert').length).toBe(certsBefore); // Fulcio never asked
    expect(existsSync(join(dir, 'denied.json'))).toBe(false);
  });

  it('an answer without a JWT, or not JSON, is refused', async () => {
    answer = { status: 200, body: '{"value": 42}' };
    const a = await signBlob(join(dir, 'bad1.json'), ciEnv());
    expect(a.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(a.stderr).toMatch(/answered without a JWT in "value"/);
    answer = { status: 200, body: '<html>' };
    const b = await signBlob(join(dir, 'bad2.json'), ciEnv());
    expect(b.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(b.stderr).toMatch(/answered something that is not JSON/);
  });

  it('the request token is never sent over plain http to a non-loopback host', async () => {
    const r = await signBlob(join(dir, 'http.json'), ciEnv({ ACTIONS_ID_TOKEN_REQUEST_URL: 'http://token.example.invalid/x?api-version=2.0' }));
    expect(r.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(r.stderr).toMatch(/ACTIONS_ID_TOKEN_REQUEST_URL must be an https URL/);
    expect(seen).toEqual([]);
  });

  it('an endpoint that is down is a transient failure', async () => {
    const r = await signBlob(join(dir, 'down.json'), ciEnv({ ACTIONS_ID_TOKEN_REQUEST_URL: 'http://127.0.0.1:9/token?api-version=2.0' }));
    expect(r.code).toBe(EXIT_CODES.TRANSIENT);
    expect(r.stderr).toMatch(/cannot reach http:\/\/127\.0\.0\.1:9\/token/);
  });
});
