/**
 * Issue 16, class 1: credentials for registry A never reach another host. A hostile registry
 * stand-in on 127.0.0.1 and a "foreign host" on [::1] record every request and its
 * Authorization header; each case asserts who got credentials, the message and the exit code.
 */
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../../src/cli/exit-codes.js';
import { kbundleAsync } from '../helpers/cli.js';
import { basic, type HostileServer, isolatedEnv, json, redirect, serveImage, sha256, useHostileServers } from '../helpers/hostile-registry.js';

const USER = 'alice';
const PASS = 's3cret-for-registry-a';
const GOOD = basic(USER, PASS);

const hostile = useHostileServers('kb-harden-creds-');
const server = hostile.server;

/** A token endpoint that answers any request with a token (and records who asked). */
function tokenEndpoint(srv: HostileServer, path = '/token'): string {
  srv.route('GET', new RegExp(`^${path}(\\?|$)`), (_req, res) => json(res, 200, { token: 'tok-from-' + srv.host, expires_in: 300 }));
  return `${srv.url}${path}`;
}

function pull(ref: string, extra: string[] = [], env: Record<string, string> = {}): ReturnType<typeof kbundleAsync> {
  const out = mkdtempSync(join(hostile.tmp, 'out-'));
  return kbundleAsync(['pull', ref, '-o', `oci:${out}`, '--no-signatures', '--username', USER, '--password-stdin', ...extra], {
    input: PASS,
    env: isolatedEnv(join(hostile.tmp, 'no-docker-config'), env),
  });
}

describe('credential scoping', () => {
  it('a blob redirect to another host is followed without Authorization', async () => {
    const reg = await server();
    const foreign = await server('::1');
    const img = serveImage(reg, 'kairos/app', 'v1', { authorize: (r) => r.headers.authorization === GOOD });
    reg.route('GET', /\/blobs\/sha256:/, (req, res) => {
      if (req.headers.authorization !== GOOD) return json(res, 401, {}, { 'www-authenticate': 'Basic realm="a"' });
      redirect(res, `${foreign.url}/storage/${/blobs\/(sha256:[0-9a-f]+)/.exec(req.url!)![1]}?sig=x`);
    });
    foreign.route('GET', /^\/storage\//, (req, res) => {
      const b = img.blobs.get(/storage\/(sha256:[0-9a-f]+)/.exec(req.url!)![1]!)!;
      res.writeHead(200, { 'content-length': b.length });
      res.end(b);
    });
    const r = await pull(`${reg.host}/kairos/app:v1`);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(foreign.requests.length).toBe(2); // config and layer
    expect(foreign.authorized()).toEqual([]);
    expect(reg.authorized().length).toBeGreaterThan(0);
  });

  it('a redirect target that answers 401 with a foreign Bearer realm gets nothing (no token request, no Basic)', async () => {
    const reg = await server();
    const foreign = await server('::1');
    const realm = tokenEndpoint(foreign);
    serveImage(reg, 'kairos/app', 'v1', { authorize: (r) => r.headers.authorization === GOOD });
    reg.route('GET', /\/blobs\/sha256:/, (req, res) => {
      if (req.headers.authorization !== GOOD) return json(res, 401, {}, { 'www-authenticate': 'Basic realm="a"' });
      redirect(res, `${foreign.url}/storage/blob`);
    });
    foreign.route('GET', /^\/storage\//, (_req, res) =>
      json(res, 401, { errors: [{ code: 'UNAUTHORIZED' }] }, { 'www-authenticate': `Bearer realm="${realm}",service="evil",scope="repository:kairos/app:pull"` }),
    );
    const r = await pull(`${reg.host}/kairos/app:v1`);
    expect(foreign.authorized()).toEqual([]);
    expect(foreign.requests.filter((q) => q.url.startsWith('/token'))).toEqual([]);
    expect(r.code).toBe(EXIT_CODES.UNAUTHORIZED);
    expect(r.stderr).toContain(`${foreign.url}/storage/blob`);
    expect(r.stderr).toMatch(/redirected .*another host.*401/);
    expect(r.stderr).not.toContain('internal error');
  });

  it('a token realm on another host gets an anonymous request unless the realm is trusted', async () => {
    const reg = await server();
    const foreign = await server('::1');
    const realm = tokenEndpoint(foreign);
    const challenge = `Bearer realm="${realm}",service="reg"`;
    serveImage(reg, 'kairos/app', 'v1', { authorize: (r) => r.headers.authorization === `Bearer tok-from-${foreign.host}`, challenge });

    const r = await pull(`${reg.host}/kairos/app:v1`);
    const tokenRequests = foreign.requests.filter((q) => q.url.startsWith('/token'));
    expect(tokenRequests.length).toBeGreaterThan(0);
    expect(tokenRequests.every((q) => q.authorization === undefined && !q.url.includes('account='))).toBe(true);
    // The anonymous token works here, so the pull succeeds without the login ever leaving for [::1].
    expect(r.code).toBe(0);

    foreign.requests.length = 0;
    const trusted = await pull(`${reg.host}/kairos/app:v1`, ['--trust-token-realm', foreign.host]);
    expect(trusted.code).toBe(0);
    expect(foreign.requests.filter((q) => q.url.startsWith('/token')).map((q) => q.authorization)).toContain(GOOD);

    foreign.requests.length = 0;
    const viaEnv = await pull(`${reg.host}/kairos/app:v1`, [], { KBUNDLE_TRUSTED_TOKEN_REALMS: foreign.host });
    expect(viaEnv.code).toBe(0);
    expect(foreign.requests.filter((q) => q.url.startsWith('/token')).map((q) => q.authorization)).toContain(GOOD);
  });

  it('a private image behind a foreign realm fails with a message naming the realm and the flag', async () => {
    const reg = await server();
    const foreign = await server('::1');
    foreign.route('GET', /^\/token/, (req, res) => (req.headers.authorization ? json(res, 200, { token: 'good' }) : json(res, 200, { token: 'anon' })));
    serveImage(reg, 'kairos/app', 'v1', { authorize: (r) => r.headers.authorization === 'Bearer good', challenge: `Bearer realm="${foreign.url}/token",service="reg"` });
    const r = await pull(`${reg.host}/kairos/app:v1`);
    expect(foreign.authorized()).toEqual([]);
    expect(r.code).toBe(EXIT_CODES.UNAUTHORIZED);
    expect(r.stderr).toContain(foreign.host);
    expect(r.stderr).toContain('--trust-token-realm');
  });

  it('a token realm on the registry host name (another port) gets the login, as GitLab deploys it', async () => {
    const reg = await server();
    const auth = await server(); // 127.0.0.1, another port
    const realm = tokenEndpoint(auth);
    serveImage(reg, 'kairos/app', 'v1', { authorize: (r) => r.headers.authorization === `Bearer tok-from-${auth.host}`, challenge: `Bearer realm="${realm}",service="reg"` });
    const r = await pull(`${reg.host}/kairos/app:v1`);
    expect(r.code).toBe(0);
    expect(auth.requests.filter((q) => q.url.startsWith('/token')).map((q) => q.authorization)).toContain(GOOD);
  });

  it('an upload Location on another host gets no Authorization', async () => {
    // Pull an image from one stand-in into a layout, then push it to a registry whose upload
    // sessions live on a foreign host.
    const src = await server();
    const img = serveImage(src, 'kairos/app', 'v1');
    const layout = mkdtempSync(join(hostile.tmp, 'layout-'));
    const pulled = await kbundleAsync(['pull', `${src.host}/kairos/app:v1`, '-o', `oci:${layout}:v1`, '--no-signatures'], { env: isolatedEnv(join(hostile.tmp, 'none')) });
    expect(pulled.code).toBe(0);

    const reg = await server();
    const foreign = await server('::1');
    const ok = (r: { headers: { authorization?: string } }): boolean => r.headers.authorization === GOOD;
    reg.route('GET', '/v2/', (req, res) => (ok(req) ? json(res, 200, {}) : json(res, 401, {}, { 'www-authenticate': 'Basic realm="a"' })));
    reg.route('HEAD', /\/blobs\//, (_req, res) => json(res, 404, {}));
    reg.route('POST', /\/blobs\/uploads\//, (req, res) => {
      if (!ok(req)) return json(res, 401, {}, { 'www-authenticate': 'Basic realm="a"' });
      res.writeHead(202, { location: `${foreign.url}/upload/1?state=x`, 'content-length': 0 });
      res.end();
    });
    foreign.route('PUT', /^\/upload\//, (req, res, body) => {
      const d = new URL(req.url!, 'http://x').searchParams.get('digest')!;
      if (sha256(body) !== d) return json(res, 400, { errors: [{ code: 'DIGEST_INVALID' }] });
      res.writeHead(201, { 'docker-content-digest': d, 'content-length': 0 });
      res.end();
    });
    reg.route(/^(HEAD|GET)$/, /\/manifests\//, (_req, res) => json(res, 404, {}));
    reg.route('PUT', /\/manifests\//, (req, res, body) => {
      if (!ok(req)) return json(res, 401, {}, { 'www-authenticate': 'Basic realm="a"' });
      res.writeHead(201, { 'docker-content-digest': sha256(body), 'content-length': 0 });
      res.end();
    });
    const r = await kbundleAsync(['push', `oci:${layout}:v1`, `${reg.host}/kairos/app:v1`, '--no-signatures', '--username', USER, '--password-stdin'], {
      input: PASS,
      env: isolatedEnv(join(hostile.tmp, 'none')),
    });
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(foreign.requests.filter((q) => q.method === 'PUT').length).toBe(2);
    expect(foreign.authorized()).toEqual([]);
    // The manifest went to the registry itself, under its tag in one PUT, and is the image's.
    expect(r.stdout).toContain(`${reg.host}/kairos/app@${img.digest}`);
    expect(reg.requests.filter((q) => q.method === 'PUT' && q.url.includes('/manifests/')).map((q) => q.url.replace(/.*\/manifests\//, ''))).toEqual(['v1']);
  });

  it('never sends a login over plain HTTP to a host that is not loopback, even with --plain-http, unless --insecure-registry names it', async () => {
    // 0.0.0.0 reaches this machine's 127.0.0.1 listener, but its name is not a loopback name.
    const reg = await server();
    serveImage(reg, 'kairos/app', 'v1', { authorize: (r) => r.headers.authorization === GOOD });
    const host = `0.0.0.0:${reg.port}`;
    const r = await pull(`${host}/kairos/app:v1`, ['--plain-http']);
    expect(reg.authorized()).toEqual([]);
    expect(r.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(r.stderr).toContain(`refusing to send the login for ${host} over plain HTTP`);
    expect(r.stderr).toContain(`--insecure-registry ${host}`);

    const allowed = await pull(`${host}/kairos/app:v1`, ['--insecure-registry', host]);
    expect(allowed.stderr).not.toMatch(/error/i);
    expect(allowed.code).toBe(0);
    expect(reg.authorized().length).toBeGreaterThan(0);
  });

  it('a plain-HTTP token realm on a non-loopback host gets no login, even with --plain-http', async () => {
    const reg = await server();
    serveImage(reg, 'kairos/app', 'v1', { authorize: () => false, challenge: 'Bearer realm="http://0.0.0.0:9/token",service="reg"' });
    const r = await pull(`${reg.host}/kairos/app:v1`, ['--plain-http', '--trust-token-realm', '0.0.0.0:9']);
    expect(r.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(r.stderr).toContain('refusing to send the login for');
    expect(r.stderr).toContain('plain HTTP');
  });
});
