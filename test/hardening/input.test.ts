/**
 * Issue 16, class 6: bounded, validated input. YAML bombs and oversized or nested documents in
 * bundle.yaml, cloud-configs and trust policies; size caps on what a registry sends; URLs with
 * dot segments or odd schemes; and media types that lie about their content, refused the same
 * way by every command that reads them.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type * as http from 'node:http';
import { describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../../src/cli/exit-codes.js';
import { type HostileServer, isolatedEnv, json, redirect, runKbundle, serveImage, sha256, type TimedResult, useHostileServers } from '../helpers/hostile-registry.js';

const BOUND_MS = 20_000;
const KILL_MS = 60_000;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

const hostile = useHostileServers('kb-harden-input-');
const server = hostile.server;

function run(args: string[], extra: Record<string, string> = {}): Promise<TimedResult> {
  return runKbundle(args, {
    env: isolatedEnv(join(hostile.tmp, 'no-docker-config'), { KBUNDLE_RESPONSE_TIMEOUT: '5', KBUNDLE_RETRIES: '1', KBUNDLE_CACHE_DIR: join(hostile.tmp, 'cache'), ...extra }),
    killAfterMs: KILL_MS,
  });
}

/** A clean refusal: not killed, no stack trace, the expected code and text, well within the bound. */
function refused(r: TimedResult, code: number, text: RegExp | string): void {
  expect(r.killed, `still running after ${KILL_MS} ms`).toBe(false);
  expect(r.stderr).not.toContain('internal error');
  expect(r.stderr).not.toMatch(/\n\s+at .+:\d+:\d+/);
  if (typeof text === 'string') expect(r.stderr).toContain(text);
  else expect(r.stderr).toMatch(text);
  expect(r.code).toBe(code);
  expect(r.ms).toBeLessThan(BOUND_MS);
}

/** Nine aliases of nine aliases … nine levels deep: 9^9 strings once expanded. */
function billionLaughs(key = 'lol'): string {
  let y = `${key}0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n`;
  for (let i = 1; i < 10; i++)
    y += `${key}${i}: &a${i} [${Array(9)
      .fill(`*a${i - 1}`)
      .join(', ')}]\n`;
  return y;
}

/** A few aliases of a big list: under any alias count, but millions of values once expanded. */
function wideAliases(): string {
  return `big: &big [${Array(100_000).fill('1').join(',')}]\ncopies: [${Array(40).fill('*big').join(', ')}]\n`;
}

function bundleDir(yaml: string): string {
  const dir = mkdtempSync(join(hostile.tmp, 'bundle-'));
  writeFileSync(join(dir, 'bundle.yaml'), yaml);
  return dir;
}

const VALID_HEAD = 'name: demo\nversion: 1.0.0\ndescription: d\ntype: container\nplatforms: [linux/amd64]\n';

describe('YAML is bounded', () => {
  it('bundle.yaml: billion laughs, wide aliases, deep nesting and a huge file are refused quickly and cleanly', async () => {
    refused(await run(['validate', bundleDir(VALID_HEAD + billionLaughs('x-'))]), EXIT_CODES.INVALID_INPUT, /bundle\.yaml: the YAML uses aliases \(\*name\) too many times/);
    refused(await run(['validate', bundleDir(VALID_HEAD + wideAliases())]), EXIT_CODES.INVALID_INPUT, /bundle\.yaml: the YAML expands to more than 1000000 values/);
    // Deeper than yaml's recursive parser goes: a clean message with line and column.
    refused(await run(['validate', bundleDir(`deep: ${'['.repeat(20_000)}${']'.repeat(20_000)}\n`)]), EXIT_CODES.INVALID_INPUT, /bundle\.yaml: invalid YAML \(line 1, column \d+\): nested too deeply/);
    refused(await run(['validate', bundleDir(`${VALID_HEAD}# ${'x'.repeat(5 * 1024 * 1024)}\n`)]), EXIT_CODES.INVALID_INPUT, /bundle\.yaml: \d+ bytes, over the 4194304-byte limit/);
  });

  it('cloud-config (install --config): bombs refused; a FIFO is refused without blocking', async () => {
    const root = mkdtempSync(join(hostile.tmp, 'root-'));
    const bomb = join(hostile.tmp, 'bomb.yaml');
    writeFileSync(bomb, `#cloud-config\n${billionLaughs()}bundles:\n  - targets: [run://127.0.0.1:1/x:y]\n`);
    refused(await run(['install', '--config', bomb, '--root', root]), EXIT_CODES.INVALID_INPUT, `${bomb}: the YAML uses aliases (*name) too many times`);
    const wide = join(hostile.tmp, 'wide.yaml');
    writeFileSync(wide, `#cloud-config\n${wideAliases()}`);
    refused(await run(['install', '--config', wide, '--root', root]), EXIT_CODES.INVALID_INPUT, `${wide}: the YAML expands to more than 1000000 values`);
    const fifo = join(hostile.tmp, 'config.fifo');
    execFileSync('mkfifo', [fifo]);
    refused(await run(['install', '--config', fifo, '--root', root]), EXIT_CODES.INVALID_INPUT, `${fifo}: not a regular file`);
    expect(readdirSync(root)).toEqual([]);
  });

  it('trust policy: a bomb is refused before any image is looked at', async () => {
    const policy = join(hostile.tmp, 'policy.yaml');
    writeFileSync(policy, `version: 1\n${billionLaughs('p')}policies: []\n`);
    const r = await run(['policy', 'check', 'oci:/nonexistent-layout:x', '--policy', policy]);
    refused(r, EXIT_CODES.INVALID_INPUT, `${policy}: the YAML uses aliases (*name) too many times`);
  });
});

describe('URLs are checked', () => {
  it('bundle.yaml url: with dot segments, odd schemes or a login in it is refused naming the field', async () => {
    const pin = 'a'.repeat(64);
    for (const [url, why] of [
      ['https://example.invalid/releases/../../etc/passwd', 'has a "." or ".." path segment'],
      ['https://example.invalid/a/%2e%2e/b', 'has a "." or ".." path segment'],
      ['file:///etc/shadow', 'uses the scheme "file:"'],
      ['ftp://example.invalid/x', 'uses the scheme "ftp:"'],
      ['https://user:token@example.invalid/x', 'carries a user name or password'],
    ]) {
      const r = await run(['validate', bundleDir(`${VALID_HEAD}files:\n  - url: "${url}"\n    sha256: ${pin}\n    dst: x\n`)]);
      refused(r, EXIT_CODES.INVALID_INPUT, 'files.0.url');
      expect(r.stderr).toContain(why);
    }
  });

  it('sysext install: a URL with dot segments is refused before any request', async () => {
    const srv = await server();
    srv.route('GET', /.*/, (_req, res) => json(res, 200, {}));
    const root = mkdtempSync(join(hostile.tmp, 'root-'));
    const r = await run(['sysext', 'install', `${srv.url}/ext/../../x.sysext.raw`, '--root', root, '--no-check']);
    refused(r, EXIT_CODES.INVALID_INPUT, 'has a "." or ".." path segment');
    expect(srv.requests).toEqual([]);
  });

  it('a registry redirect to file: or an upload Location with dot segments is refused (REFUSED), and not followed', async () => {
    const reg = await server();
    const img = serveImage(reg, 'kairos/app', 'v1');
    reg.route('GET', new RegExp(`/blobs/${sha256(img.layer)}$`), (_req, res) => redirect(res, 'file:///etc/passwd'));
    const out = mkdtempSync(join(hostile.tmp, 'out-'));
    refused(await run(['pull', `${reg.host}/kairos/app:v1`, '-o', `oci:${out}`, '--no-signatures']), EXIT_CODES.REFUSED, 'redirect: "file:///etc/passwd" uses the scheme "file:"');

    const layout = mkdtempSync(join(hostile.tmp, 'layout-'));
    const src = await server();
    serveImage(src, 'kairos/app', 'v1');
    expect((await run(['pull', `${src.host}/kairos/app:v1`, '-o', `oci:${layout}:v1`, '--no-signatures'])).code).toBe(0);
    const dst = await server();
    dst.route('GET', '/v2/', (_req, res) => json(res, 200, {}));
    dst.route('HEAD', /\/blobs\//, (_req, res) => json(res, 404, {}));
    dst.route('POST', /\/blobs\/uploads\//, (_req, res) => {
      res.writeHead(202, { location: '/v2/kairos/app/blobs/uploads/../../../../admin/x?state=1', 'content-length': 0 });
      res.end();
    });
    const r = await run(['push', `oci:${layout}:v1`, `${dst.host}/kairos/app:v1`, '--no-signatures']);
    refused(r, EXIT_CODES.REFUSED, 'has a "." or ".." path segment');
    expect(dst.requests.filter((q) => q.url.startsWith('/admin') || q.url.includes('..'))).toEqual([]);
  });
});

describe('what a registry sends is capped', () => {
  it('a manifest over 4 MiB (declared, or streamed without a length) is refused without reading it all', async () => {
    const reg = await server();
    serveImage(reg, 'kairos/app', 'v1');
    let sent = 0;
    reg.route(/^(GET|HEAD)$/, /\/manifests\/huge$/, (req, res) => {
      res.writeHead(200, { 'content-type': OCI_MANIFEST, 'content-length': 512 * 1024 * 1024 });
      if (req.method === 'HEAD') {
        res.end();
        return;
      }
      const chunk = Buffer.alloc(64 * 1024, 32);
      const pump = (): void => {
        while (!res.destroyed && sent < 512 * 1024 * 1024 && res.write(chunk)) sent += chunk.length;
        if (!res.destroyed) res.once('drain', pump);
      };
      pump();
    });
    reg.route(/^(GET|HEAD)$/, /\/manifests\/endless$/, (req, res) => {
      res.writeHead(200, { 'content-type': OCI_MANIFEST, 'transfer-encoding': 'chunked' });
      if (req.method === 'HEAD') {
        res.end();
        return;
      }
      const chunk = Buffer.alloc(64 * 1024, 32);
      const pump = (): void => {
        while (!res.destroyed && res.write(chunk));
        if (!res.destroyed) res.once('drain', pump);
      };
      pump();
    });
    refused(await run(['inspect', `${reg.host}/kairos/app:huge`]), EXIT_CODES.INVALID_INPUT, /over the 4194304-byte limit/);
    expect(sent).toBeLessThan(64 * 1024 * 1024);
    refused(await run(['inspect', `${reg.host}/kairos/app:endless`]), EXIT_CODES.INVALID_INPUT, /larger than the 4194304-byte limit/);
  });

  it('an endless error body does not hold the client: the status decides, a little of the body is read', async () => {
    const reg = await server();
    serveImage(reg, 'kairos/app', 'v1');
    let sent = 0;
    reg.route(/^(GET|HEAD)$/, /\/manifests\/gone$/, (req, res) => {
      res.writeHead(404, { 'content-type': 'application/json' });
      if (req.method === 'HEAD') {
        res.end();
        return;
      }
      const chunk = Buffer.alloc(64 * 1024, 32);
      const pump = (): void => {
        while (!res.destroyed && sent < 1024 ** 3 && res.write(chunk)) sent += chunk.length;
        if (!res.destroyed) res.once('drain', pump);
      };
      pump();
    });
    refused(await run(['inspect', `${reg.host}/kairos/app:gone`]), EXIT_CODES.NOT_FOUND, /manifest not found/);
    expect(sent).toBeLessThan(64 * 1024 * 1024);
  });

  it('an index entry declared over the cap is refused before it is fetched; a 5 MiB config is not read into memory', async () => {
    const reg = await server();
    const img = serveImage(reg, 'kairos/app', 'v1');
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: [{ mediaType: OCI_MANIFEST, digest: img.digest, size: 64 * 1024 * 1024, platform: { os: 'linux', architecture: 'amd64' } }],
      }),
    );
    serveManifest(reg, 'kairos/app', 'bigentry', index, OCI_INDEX);
    for (const args of [
      ['pull', `${reg.host}/kairos/app:bigentry`, '-o', `oci:${mkdtempSync(join(hostile.tmp, 'out-'))}`, '--no-signatures'],
      ['install', `container://${reg.host}/kairos/app:bigentry`, '--root', mkdtempSync(join(hostile.tmp, 'root-'))],
    ]) {
      const before = reg.requests.length;
      refused(await run(args), EXIT_CODES.INVALID_INPUT, `${img.digest}: 67108864 bytes, over the 4194304-byte limit`);
      expect(reg.requests.slice(before).filter((q) => q.url.endsWith(img.digest))).toEqual([]);
    }

    // A config blob of 5 MiB (valid JSON, padded): a docker archive needs it parsed; refused by its size.
    const big = await server();
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256(img.layer)] }, pad: 'x'.repeat(5 * 1024 * 1024) }));
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(img.layer), size: img.layer.length }],
      }),
    );
    const served = serveImage(big, 'kairos/app', 'v1', { layer: img.layer });
    served.blobs.set(sha256(config), config);
    serveManifest(big, 'kairos/app', 'bigconfig', manifest, OCI_MANIFEST);
    const out = join(mkdtempSync(join(hostile.tmp, 'arch-')), 'x.tar');
    refused(await run(['copy', `${big.host}/kairos/app:bigconfig`, `docker-archive:${out}:x:y`]), EXIT_CODES.INVALID_INPUT, `${sha256(config)}: ${config.length} bytes, over the 4194304-byte limit`);
  });

  it('a token response over 1 MiB is refused', async () => {
    const reg = await server();
    const auth = await server();
    auth.route('GET', /^\/token/, (_req, res) => json(res, 200, { token: 'x'.repeat(2 * 1024 * 1024) }));
    serveImage(reg, 'kairos/app', 'v1', { authorize: () => false, challenge: `Bearer realm="${auth.url}/token",service="s"` });
    refused(await run(['inspect', `${reg.host}/kairos/app:v1`]), EXIT_CODES.INVALID_INPUT, /token server .*larger than the 1048576-byte limit/);
  });
});

/** Serve `bytes` under a tag and their digest with the given Content-Type. */
function serveManifest(srv: HostileServer, repo: string, tag: string, bytes: Buffer, contentType: string): string {
  const digest = sha256(bytes);
  srv.route(/^(GET|HEAD)$/, new RegExp(`^/v2/${repo}/manifests/(${tag}|${digest})$`), (req: http.IncomingMessage, res: http.ServerResponse) => {
    res.writeHead(200, { 'content-type': contentType, 'docker-content-digest': digest, 'content-length': bytes.length });
    res.end(req.method === 'HEAD' ? undefined : bytes);
  });
  return digest;
}

describe('a media type that lies about its content is refused the same way by every command', () => {
  /** Every command that reads an image from a registry, each in a fresh place. */
  function commands(ref: string): Array<{ name: string; args: string[] }> {
    const dir = (p: string): string => mkdtempSync(join(hostile.tmp, p));
    return [
      { name: 'inspect', args: ['inspect', ref] },
      { name: 'pull', args: ['pull', ref, '-o', `oci:${dir('pull-')}`, '--no-signatures'] },
      { name: 'copy', args: ['copy', ref, `oci-archive:${join(dir('copy-'), 'x.tar')}`, '--no-signatures'] },
      { name: 'install', args: ['install', `container://${ref}`, '--root', dir('root-')] },
      { name: 'sysext install', args: ['sysext', 'install', `oci:${ref}`, '--root', dir('sroot-'), '--no-check'] },
    ];
  }

  /** `skip`: commands that never read the lying part (inspect lists an index's entries without opening them). */
  async function expectSameRefusal(ref: string, text: string, skip: string[] = []): Promise<void> {
    const results: Array<{ name: string; r: TimedResult }> = [];
    for (const c of commands(ref)) if (!skip.includes(c.name)) results.push({ name: c.name, r: await run(c.args) });
    for (const { name, r } of results) {
      expect(r.stderr, name).toContain(text);
      expect({ name, code: r.code }).toEqual({ name, code: EXIT_CODES.INVALID_INPUT });
      expect(r.stderr, name).not.toContain('internal error');
    }
  }

  it('a tag whose Content-Type says index over manifest bytes, and the reverse', async () => {
    const reg = await server();
    const img = serveImage(reg, 'kairos/app', 'v1');
    const bare = JSON.parse(img.manifest.toString()) as Record<string, unknown>;
    delete bare.mediaType;
    serveManifest(reg, 'kairos/app', 'says-index', Buffer.from(JSON.stringify(bare)), OCI_INDEX);
    await expectSameRefusal(`${reg.host}/kairos/app:says-index`, `media type mismatch: declared as ${OCI_INDEX}, but the content is an image manifest`);

    const index = Buffer.from(
      JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: OCI_MANIFEST, digest: img.digest, size: img.manifest.length, platform: { os: 'linux', architecture: 'amd64' } }] }),
    );
    serveManifest(reg, 'kairos/app', 'says-manifest', index, OCI_MANIFEST);
    await expectSameRefusal(`${reg.host}/kairos/app:says-manifest`, `media type mismatch: declared as ${OCI_MANIFEST}, but the content is an image index`);
  });

  it('an index entry naming a manifest that is an index (and one naming an index that is a manifest)', async () => {
    const reg = await server();
    const img = serveImage(reg, 'kairos/app', 'v1');
    const inner = Buffer.from(
      JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: OCI_MANIFEST, digest: img.digest, size: img.manifest.length, platform: { os: 'linux', architecture: 'amd64' } }] }),
    );
    const innerDigest = serveManifest(reg, 'kairos/app', 'inner', inner, OCI_INDEX);
    const outer = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: innerDigest, size: inner.length, platform: { os: 'linux', architecture: 'amd64' } }] }),
    );
    serveManifest(reg, 'kairos/app', 'entry-lies', outer, OCI_INDEX);
    await expectSameRefusal(`${reg.host}/kairos/app:entry-lies`, `media type mismatch: declared as ${OCI_MANIFEST}, but the content is an image index`, ['inspect']);

    const outer2 = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: [{ mediaType: OCI_INDEX, digest: img.digest, size: img.manifest.length, platform: { os: 'linux', architecture: 'amd64' } }],
      }),
    );
    serveManifest(reg, 'kairos/app', 'entry-lies-2', outer2, OCI_INDEX);
    await expectSameRefusal(`${reg.host}/kairos/app:entry-lies-2`, `media type mismatch: declared as ${OCI_INDEX}, but the content says ${OCI_MANIFEST}`, ['inspect']);
  });

  it('JSON that is both a manifest and an index is refused as ambiguous', async () => {
    const reg = await server();
    const img = serveImage(reg, 'kairos/app', 'v1');
    const m = JSON.parse(img.manifest.toString()) as Record<string, unknown>;
    delete m.mediaType;
    m.manifests = [];
    serveManifest(reg, 'kairos/app', 'both', Buffer.from(JSON.stringify(m)), OCI_MANIFEST);
    await expectSameRefusal(`${reg.host}/kairos/app:both`, 'ambiguous content: it has the fields of an image index and of an image manifest');
  });
});
