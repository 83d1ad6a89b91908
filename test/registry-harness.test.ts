/**
 * Proves the local registry harness (test/helpers/{registry,token-server,fault-proxy}.ts) is real:
 * each variant of Debian's docker-registry 2.8 is driven by skopeo and by raw HTTP, and the fault
 * proxy's rules are observed to fire.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, fetch, type Dispatcher } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { bcryptHash, startRegistry, type RegistryHandle } from './helpers/registry.js';
import { parseScope, startTokenServer } from './helpers/token-server.js';

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

let work: string;
let skopeoEnv: NodeJS.ProcessEnv;
/** `oci:<dir>:t` image made with umoci (one layer holding /hello.txt). */
let layoutRef: string;
let layoutDigest: string;

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout: 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function ok(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const r = await run(cmd, args, env);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}):\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

const skopeo = (args: string[]): Promise<RunResult> => run('skopeo', ['--insecure-policy', ...args], skopeoEnv);

function dispatcherFor(reg: { caPem?: string }): Dispatcher {
  return new Agent({ connect: reg.caPem ? { ca: reg.caPem } : {} });
}

const basic = (u: string, p: string): string => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'kbundle-harness-test-'));
  // Isolate skopeo from any credentials on the machine.
  skopeoEnv = { ...process.env, REGISTRY_AUTH_FILE: join(work, 'auth.json') };
  const layout = join(work, 'layout');
  await ok('umoci', ['init', '--layout', layout]);
  await ok('umoci', ['new', '--image', `${layout}:t`]);
  writeFileSync(join(work, 'hello.txt'), 'hello from the kbundle registry harness\n');
  await ok('umoci', ['insert', '--rootless', '--image', `${layout}:t`, join(work, 'hello.txt'), '/hello.txt']);
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  layoutDigest = index.manifests[0]!.digest;
  layoutRef = `oci:${layout}:t`;
});

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('bcrypt for htpasswd', () => {
  it('matches the published bcrypt vectors and the system crypt(3)', async () => {
    expect(bcryptHash('U*U', 5, 'CCCCCCCCCCCCCCCCCCCCC.')).toBe('$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW');
    expect(bcryptHash('abc', 6, 'If6bvum7DFjUnE9p2uDeDu')).toBe('$2y$06$If6bvum7DFjUnE9p2uDeDu0YHzrHM6tf.iqN8.yx.jNN1ILEf7h0i');
    const h = bcryptHash('pässwörd with spaces', 4);
    expect(h).toMatch(/^\$2y\$04\$[./A-Za-z0-9]{53}$/);
    // libxcrypt (Debian's crypt(3), reachable through perl) recomputes the same hash from it.
    const r = await run('perl', ['-e', 'print crypt($ARGV[0], $ARGV[1])', 'pässwörd with spaces', h]);
    if (r.code === 0 && r.stdout.startsWith('$2')) expect(r.stdout).toBe(h);
  });
});

describe('open registry (plain HTTP, no auth)', () => {
  let reg: RegistryHandle;
  beforeAll(async () => {
    reg = await startRegistry({ variant: 'open' });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  it('answers /v2/ and takes a skopeo push, survives a restart, deletes, and stops cleanly', async () => {
    expect(reg.host).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(reg.url).toBe(`http://${reg.host}`);
    const v2 = await fetch(`${reg.url}/v2/`);
    expect(v2.status).toBe(200);
    expect(v2.headers.get('docker-distribution-api-version')).toBe('registry/2.0');

    const dest = `docker://${reg.host}/harness/open:t`;
    await ok('skopeo', ['--insecure-policy', 'copy', '--dest-tls-verify=false', layoutRef, dest], skopeoEnv);
    const inspect = JSON.parse(await ok('skopeo', ['--insecure-policy', 'inspect', '--tls-verify=false', dest], skopeoEnv)) as {
      Digest: string;
      Layers: string[];
    };
    expect(inspect.Digest).toBe(layoutDigest);
    expect(inspect.Layers).toHaveLength(1);
    expect(existsSync(join(reg.storageDir, 'docker/registry/v2/repositories/harness/open'))).toBe(true);

    // Storage — and uploads in progress (fixed http.secret) — survive a restart on the same port.
    const part1 = Buffer.from('first half of a blob, ');
    const part2 = Buffer.from('second half after a registry restart');
    const blobDigest = `sha256:${createHash('sha256')
      .update(Buffer.concat([part1, part2]))
      .digest('hex')}`;
    const post = await fetch(`${reg.url}/v2/harness/open/blobs/uploads/`, { method: 'POST' });
    expect(post.status).toBe(202);
    const patch = await fetch(new URL(post.headers.get('location')!, reg.url), {
      method: 'PATCH',
      body: part1,
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(patch.status).toBe(202);
    const oldPid = reg.pid;
    await reg.restart();
    expect(reg.pid).not.toBe(oldPid);
    expect(() => process.kill(oldPid, 0)).toThrow();
    const finish = new URL(patch.headers.get('location')!, reg.url);
    finish.searchParams.set('digest', blobDigest);
    const put = await fetch(finish, { method: 'PUT', body: part2, headers: { 'content-type': 'application/octet-stream' } });
    expect(put.status).toBe(201);
    const blob = await fetch(`${reg.url}/v2/harness/open/blobs/${blobDigest}`);
    expect(Buffer.from(await blob.arrayBuffer()).toString()).toBe(Buffer.concat([part1, part2]).toString());
    const head = await fetch(`${reg.url}/v2/harness/open/manifests/t`, {
      method: 'HEAD',
      headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
    });
    expect(head.status).toBe(200);
    expect(head.headers.get('docker-content-digest')).toBe(layoutDigest);

    // delete.enabled is on.
    const del = await fetch(`${reg.url}/v2/harness/open/manifests/${layoutDigest}`, { method: 'DELETE' });
    expect(del.status).toBe(202);
    const gone = await skopeo(['inspect', '--tls-verify=false', dest]);
    expect(gone.code).not.toBe(0);

    // stop() kills the process and removes the scratch dir.
    const pid = reg.pid;
    const t0 = Date.now();
    await reg.stop();
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(() => process.kill(pid, 0)).toThrow();
    expect(existsSync(reg.dir)).toBe(false);
    await expect(fetch(`${reg.url}/v2/`)).rejects.toThrow();
  });
});

describe('htpasswd registry (TLS + Basic)', () => {
  let reg: RegistryHandle;
  let dispatcher: Dispatcher;
  beforeAll(async () => {
    reg = await startRegistry({ variant: 'htpasswd', users: { alice: 'alice-secret', bob: 'b0b:with colon' } });
    dispatcher = dispatcherFor(reg);
  });
  afterAll(async () => {
    await reg?.stop();
  });

  it('requires credentials over verified TLS', async () => {
    expect(reg.url).toBe(`https://${reg.host}`);
    expect(reg.username).toBe('alice');
    expect(readFileSync(join(reg.certDir!, 'ca.crt'), 'utf8')).toContain('BEGIN CERTIFICATE');
    const anon = await fetch(`${reg.url}/v2/`, { dispatcher });
    expect(anon.status).toBe(401);
    expect(anon.headers.get('www-authenticate')).toBe('Basic realm="kbundle-test-registry"');
    const wrong = await fetch(`${reg.url}/v2/`, { dispatcher, headers: { authorization: basic('alice', 'nope') } });
    expect(wrong.status).toBe(401);
    for (const [u, p] of Object.entries(reg.users)) {
      const good = await fetch(`${reg.url}/v2/`, { dispatcher, headers: { authorization: basic(u, p) } });
      expect(good.status).toBe(200);
    }
    // The server certificate is for 127.0.0.1 and localhost, signed by the harness CA only.
    const viaLocalhost = await fetch(`https://localhost:${reg.port}/v2/`, { dispatcher });
    expect(viaLocalhost.status).toBe(401);
    await expect(fetch(`${reg.url}/v2/`, { dispatcher: new Agent() })).rejects.toThrow();
  });

  it('skopeo pushes and inspects with --creds and the CA cert dir', async () => {
    const dest = `docker://${reg.host}/harness/basic:t`;
    const creds = `${reg.username}:${reg.password}`;
    await ok('skopeo', ['--insecure-policy', 'copy', '--dest-cert-dir', reg.certDir!, '--dest-creds', creds, layoutRef, dest], skopeoEnv);
    const inspect = JSON.parse(await ok('skopeo', ['--insecure-policy', 'inspect', '--cert-dir', reg.certDir!, '--creds', creds, dest], skopeoEnv)) as {
      Digest: string;
    };
    expect(inspect.Digest).toBe(layoutDigest);

    const noCreds = await skopeo(['inspect', '--cert-dir', reg.certDir!, dest]);
    expect(noCreds.code).not.toBe(0);
    expect(noCreds.stderr).toMatch(/unauthorized|authentication required/i);
    const noCa = await skopeo(['inspect', '--creds', creds, dest]);
    expect(noCa.code).not.toBe(0);
    expect(noCa.stderr).toMatch(/x509|certificate/i);
  });

  it('works behind a TLS fault proxy that reuses the registry CA', async () => {
    const proxy = await startFaultProxy({ target: reg.url, ca: reg.caPem, tls: { cert: reg.pki!.certPem, key: reg.pki!.keyPem } });
    try {
      expect(proxy.url).toBe(`https://${proxy.host}`);
      const rule = proxy.addRule({ action: 'status', status: 503, method: 'POST', path: /\/blobs\/uploads\/$/ });
      const auth = { authorization: basic(reg.username!, reg.password!) };
      const first = await fetch(`${proxy.url}/v2/harness/tlsproxy/blobs/uploads/`, { method: 'POST', dispatcher, headers: auth });
      expect(first.status).toBe(503);
      expect(first.headers.get('x-fault-injected')).toBe(String(rule.id));
      const second = await fetch(`${proxy.url}/v2/harness/tlsproxy/blobs/uploads/`, { method: 'POST', dispatcher, headers: auth });
      expect(second.status).toBe(202);
      // X-Forwarded-Proto keeps the registry's absolute Location on the proxy's scheme and host.
      expect(second.headers.get('location')!.startsWith(`${proxy.url}/v2/harness/tlsproxy/blobs/uploads/`)).toBe(true);
      const dest = `docker://${proxy.host}/harness/tlsproxy:t`;
      const creds = `${reg.username}:${reg.password}`;
      await ok('skopeo', ['--insecure-policy', 'copy', '--dest-cert-dir', reg.certDir!, '--dest-creds', creds, layoutRef, dest], skopeoEnv);
      expect(proxy.log.filter((e) => e.method === 'PUT' && e.status === 201).length).toBeGreaterThanOrEqual(2);
    } finally {
      await proxy.close();
    }
  });
});

describe('token registry (Bearer, ES256 JWT with x5c)', () => {
  let reg: RegistryHandle;
  beforeAll(async () => {
    reg = await startRegistry({ variant: 'token', users: { carol: 'carol-secret' } });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  it('challenges with Bearer and accepts the token server’s scoped tokens only', async () => {
    const ts = reg.tokenServer!;
    const challenge = await fetch(`${reg.url}/v2/`);
    expect(challenge.status).toBe(401);
    expect(challenge.headers.get('www-authenticate')).toBe(`Bearer realm="${ts.realm}",service="${ts.service}"`);

    const repoUrl = `${reg.url}/v2/harness/tok/tags/list`;
    const repoChallenge = await fetch(repoUrl);
    expect(repoChallenge.status).toBe(401);
    expect(repoChallenge.headers.get('www-authenticate')).toContain('scope="repository:harness/tok:pull"');

    const scope = 'repository:harness/tok:pull,push';
    const tr = await fetch(`${ts.realm}?service=${encodeURIComponent(ts.service)}&scope=${encodeURIComponent(scope)}`, {
      headers: { authorization: basic('carol', 'carol-secret') },
    });
    expect(tr.status).toBe(200);
    const body = (await tr.json()) as { token: string; access_token: string; expires_in: number };
    expect(body.access_token).toBe(body.token);
    expect(body.expires_in).toBe(300);
    const [h64, c64] = body.token.split('.');
    const header = JSON.parse(Buffer.from(h64!, 'base64url').toString()) as { alg: string; x5c: string[] };
    const claims = JSON.parse(Buffer.from(c64!, 'base64url').toString()) as Record<string, unknown>;
    expect(header.alg).toBe('ES256');
    expect(header.x5c).toHaveLength(1);
    expect(claims).toMatchObject({ iss: ts.issuer, sub: 'carol', aud: ts.service, access: [{ type: 'repository', name: 'harness/tok', actions: ['pull', 'push'] }] });
    const last = ts.requests.at(-1)!;
    expect(last).toMatchObject({ basic: true, authenticated: true, user: 'carol', scopes: [scope], status: 200 });

    // Authorized: the repository does not exist yet, so 404 instead of 401.
    const authed = await fetch(repoUrl, { headers: { authorization: `Bearer ${body.token}` } });
    expect(authed.status).toBe(404);
    expect(((await authed.json()) as { errors: Array<{ code: string }> }).errors[0]!.code).toBe('NAME_UNKNOWN');
    const upload = await fetch(`${reg.url}/v2/harness/tok/blobs/uploads/`, { method: 'POST', headers: { authorization: `Bearer ${body.token}` } });
    expect(upload.status).toBe(202);

    // A pull-only token cannot push; a token for another repository cannot read this one.
    const pullOnly = ts.issue({ sub: 'carol', access: [{ type: 'repository', name: 'harness/tok', actions: ['pull'] }] });
    const denied = await fetch(`${reg.url}/v2/harness/tok/blobs/uploads/`, { method: 'POST', headers: { authorization: `Bearer ${pullOnly}` } });
    expect(denied.status).toBe(401);
    expect(denied.headers.get('www-authenticate')).toContain('error="insufficient_scope"');
    const other = ts.issue({ sub: 'carol', access: [{ type: 'repository', name: 'harness/other', actions: ['pull', 'push'] }] });
    expect((await fetch(repoUrl, { headers: { authorization: `Bearer ${other}` } })).status).toBe(401);

    // Anonymous requests get a token with no access; wrong passwords get no token at all.
    const anon = (await (await fetch(`${ts.realm}?service=${ts.service}&scope=${encodeURIComponent(scope)}`)).json()) as { token: string };
    expect(ts.requests.at(-1)).toMatchObject({ basic: false, authenticated: false, granted: [] });
    expect((await fetch(repoUrl, { headers: { authorization: `Bearer ${anon.token}` } })).status).toBe(401);
    const bad = await fetch(`${ts.realm}?service=${ts.service}&scope=${encodeURIComponent(scope)}`, { headers: { authorization: basic('carol', 'wrong') } });
    expect(bad.status).toBe(401);

    // A well-formed token from an issuer the registry does not trust is rejected.
    const foreign = await startTokenServer({ service: ts.service, issuer: ts.issuer });
    try {
      const forged = foreign.issue({ sub: 'carol', access: [{ type: 'repository', name: 'harness/tok', actions: ['pull', 'push'] }] });
      expect((await fetch(repoUrl, { headers: { authorization: `Bearer ${forged}` } })).status).toBe(401);
    } finally {
      await foreign.close();
    }

    // OAuth2 POST flow with a refresh token.
    const pw = await fetch(ts.realm, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'password', username: 'carol', password: 'carol-secret', service: ts.service, scope, access_type: 'offline', client_id: 'test' }).toString(),
    });
    const pwBody = (await pw.json()) as { access_token: string; refresh_token: string };
    expect(pwBody.refresh_token).toBeTruthy();
    const rt = await fetch(ts.realm, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: pwBody.refresh_token, service: ts.service, scope, client_id: 'test' }).toString(),
    });
    const rtBody = (await rt.json()) as { access_token: string };
    expect((await fetch(repoUrl, { headers: { authorization: `Bearer ${rtBody.access_token}` } })).status).toBe(404);
  });

  it('skopeo pushes and inspects through the Bearer flow with --creds', async () => {
    const ts = reg.tokenServer!;
    ts.clearRequests();
    const dest = `docker://${reg.host}/harness/tok:t`;
    await ok('skopeo', ['--insecure-policy', 'copy', '--dest-tls-verify=false', '--dest-creds', 'carol:carol-secret', layoutRef, dest], skopeoEnv);
    const pushReq = ts.requests.find((r) => r.scopes.some((s) => parseScope(s)?.name === 'harness/tok' && parseScope(s)!.actions.includes('push')));
    expect(pushReq).toMatchObject({ basic: true, authenticated: true, user: 'carol', status: 200 });
    expect(pushReq!.granted).toContainEqual(expect.objectContaining({ type: 'repository', name: 'harness/tok', actions: expect.arrayContaining(['push']) }));

    const inspect = JSON.parse(await ok('skopeo', ['--insecure-policy', 'inspect', '--tls-verify=false', '--creds', 'carol:carol-secret', dest], skopeoEnv)) as {
      Digest: string;
    };
    expect(inspect.Digest).toBe(layoutDigest);

    const wrong = await skopeo(['inspect', '--tls-verify=false', '--creds', 'carol:wrong', dest]);
    expect(wrong.code).not.toBe(0);
    expect(ts.requests.at(-1)).toMatchObject({ user: 'carol', authenticated: false, status: 401 });
    const anonymous = await skopeo(['inspect', '--tls-verify=false', dest]);
    expect(anonymous.code).not.toBe(0);
  });

  it('runs registry and token endpoint over TLS when asked', async () => {
    const sec = await startRegistry({ variant: 'token', tls: true });
    try {
      expect(sec.url).toBe(`https://${sec.host}`);
      expect(sec.tokenServer!.realm).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/token$/);
      const dest = `docker://${sec.host}/harness/tls:t`;
      const creds = `${sec.username}:${sec.password}`;
      await ok('skopeo', ['--insecure-policy', 'copy', '--dest-cert-dir', sec.certDir!, '--dest-creds', creds, layoutRef, dest], skopeoEnv);
      const inspect = JSON.parse(await ok('skopeo', ['--insecure-policy', 'inspect', '--cert-dir', sec.certDir!, '--creds', creds, dest], skopeoEnv)) as {
        Digest: string;
      };
      expect(inspect.Digest).toBe(layoutDigest);
      expect(sec.tokenServer!.requests.some((r) => r.authenticated && r.granted.some((g) => g.actions.includes('push')))).toBe(true);
    } finally {
      await sec.stop();
    }
  });

  it('lets anonymous clients pull when configured', async () => {
    const pub = await startRegistry({ variant: 'token', anonymousPull: true });
    try {
      const dest = `docker://${pub.host}/harness/public:t`;
      await ok('skopeo', ['--insecure-policy', 'copy', '--dest-tls-verify=false', '--dest-creds', `${pub.username}:${pub.password}`, layoutRef, dest], skopeoEnv);
      const inspect = JSON.parse(await ok('skopeo', ['--insecure-policy', 'inspect', '--tls-verify=false', dest], skopeoEnv)) as { Digest: string };
      expect(inspect.Digest).toBe(layoutDigest);
      expect(pub.tokenServer!.requests.at(-1)).toMatchObject({ authenticated: false, granted: [{ type: 'repository', name: 'harness/public', actions: ['pull'] }] });
      // …but not push.
      const push = await skopeo(['copy', '--dest-tls-verify=false', layoutRef, `docker://${pub.host}/harness/public:anon`]);
      expect(push.code).not.toBe(0);
    } finally {
      await pub.stop();
    }
  });
});

/** GET via node:http, counting body bytes until the end or an error. */
function rawGet(url: string): Promise<{ status: number; contentLength: number; received: number; error?: string }> {
  return new Promise((resolve) => {
    let status = 0;
    let contentLength = -1;
    let received = 0;
    const req = http.get(url, { agent: false }, (res) => {
      status = res.statusCode ?? 0;
      contentLength = Number(res.headers['content-length'] ?? -1);
      res.on('data', (c: Buffer) => {
        received += c.length;
      });
      res.on('end', () => resolve({ status, contentLength, received }));
      res.on('error', (e) => resolve({ status, contentLength, received, error: (e as NodeJS.ErrnoException).code ?? e.message }));
    });
    req.on('error', (e) => resolve({ status, contentLength, received, error: (e as NodeJS.ErrnoException).code ?? e.message }));
  });
}

/** Send a request with `body` via node:http; resolves with the status or the error code. */
function rawSend(url: string, method: string, body: Buffer, headers: Record<string, string> = {}): Promise<{ status?: number; error?: string }> {
  return new Promise((resolve) => {
    const req = http.request(url, { method, agent: false, headers: { 'content-length': String(body.length), ...headers } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode }));
    });
    req.on('error', (e) => resolve({ error: (e as NodeJS.ErrnoException).code ?? e.message }));
    req.end(body);
  });
}

describe('fault proxy', () => {
  let reg: RegistryHandle;
  let proxy: FaultProxy;
  beforeAll(async () => {
    reg = await startRegistry({ variant: 'open' });
    proxy = await startFaultProxy({ target: reg.url });
  });
  afterAll(async () => {
    await proxy?.close();
    await reg?.stop();
  });

  it('answers 503 to the first K matching requests, then forwards', async () => {
    const rule = proxy.addRule({ action: 'status', status: 503, method: 'GET', path: /^\/v2\/$/, times: 2 });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await fetch(`${proxy.url}/v2/`)).status);
    expect(statuses).toEqual([503, 503, 200]);
    expect(rule.fired).toBe(2);
    expect(rule.matched).toBe(3);
    const v2 = proxy.log.filter((e) => e.url === '/v2/');
    expect(v2.map((e) => e.fault)).toEqual(['status', 'status', undefined]);
    expect(v2.map((e) => e.status)).toEqual([503, 503, 200]);

    // skopeo copies through the proxy untouched once the rule is spent; Location headers point at the proxy.
    const dest = `docker://${proxy.host}/harness/proxied:t`;
    await ok('skopeo', ['--insecure-policy', 'copy', '--dest-tls-verify=false', layoutRef, dest], skopeoEnv);
    const inspect = JSON.parse(await ok('skopeo', ['--insecure-policy', 'inspect', '--tls-verify=false', `docker://${reg.host}/harness/proxied:t`], skopeoEnv)) as {
      Digest: string;
    };
    expect(inspect.Digest).toBe(layoutDigest);
    expect(proxy.log.some((e) => e.method === 'PUT' && /\/manifests\/t$/.test(e.url) && e.status === 201)).toBe(true);
  });

  it('resets the connection mid-upload after N request-body bytes', async () => {
    const start = await fetch(`${proxy.url}/v2/harness/reset/blobs/uploads/`, { method: 'POST' });
    expect(start.status).toBe(202);
    const location = start.headers.get('location')!;
    expect(location.startsWith(`${proxy.url}/`)).toBe(true);
    const rule = proxy.addRule({ action: 'reset-request', afterBytes: 10_000, method: 'PATCH', path: /\/blobs\/uploads\// });
    const res = await rawSend(location, 'PATCH', Buffer.alloc(256 * 1024, 7), { 'content-type': 'application/octet-stream' });
    expect(res.status).toBeUndefined();
    expect(res.error).toMatch(/ECONNRESET|EPIPE/);
    expect(rule.fired).toBe(1);
    await proxy.idle();
    const entry = proxy.log.find((e) => e.ruleId === rule.id)!;
    expect(entry).toMatchObject({ fault: 'reset-request', requestBytes: 10_000, done: true });
    expect((await fetch(`${proxy.url}/v2/`)).status).toBe(200);
  });

  it('resets the connection mid-download after N response-body bytes', async () => {
    const blob = Buffer.alloc(300 * 1024);
    for (let i = 0; i < blob.length; i++) blob[i] = (i * 31) & 0xff;
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
    const post = await fetch(`${reg.url}/v2/harness/dl/blobs/uploads/`, { method: 'POST' });
    const loc = new URL(post.headers.get('location')!, reg.url);
    loc.searchParams.set('digest', digest);
    const put = await fetch(loc, { method: 'PUT', body: blob, headers: { 'content-type': 'application/octet-stream' } });
    expect(put.status).toBe(201);

    const rule = proxy.addRule({ action: 'reset-response', afterBytes: 50_000, method: 'GET', path: `/blobs/${digest}` });
    const cut = await rawGet(`${proxy.url}/v2/harness/dl/blobs/${digest}`);
    expect(cut.status).toBe(200);
    expect(cut.contentLength).toBe(blob.length);
    expect(cut.received).toBe(50_000);
    expect(cut.error).toMatch(/ECONNRESET|aborted/);
    expect(rule.fired).toBe(1);
    const whole = await rawGet(`${proxy.url}/v2/harness/dl/blobs/${digest}`);
    expect(whole).toMatchObject({ status: 200, received: blob.length });
    expect(whole.error).toBeUndefined();
  });

  it('delays matching requests', async () => {
    proxy.addRule({ action: 'delay', ms: 300, path: /^\/v2\/$/ });
    const t0 = Date.now();
    expect((await fetch(`${proxy.url}/v2/`)).status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(280);
  });
});
