/**
 * Issue 16, class 5: every network wait is bounded. A stand-in registry stalls headers, dribbles
 * them, trickles bodies (slow-loris), goes silent mid-body and resets mid-body; each run is
 * killed after a generous bound, and must end by itself well before, with a clean TRANSIENT
 * error (exit 8) and the number of attempts the retry budget allows. The deadlines are tuned
 * down through the documented environment variables so the cases run in seconds.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../../src/cli/exit-codes.js';
import { isolatedEnv, resetAfter, runKbundle, serveImage, sha256, stall, trickle, trickleHeaders, useHostileServers } from '../helpers/hostile-registry.js';

/** Deadlines of a second, one retry: each case needs a few seconds when bounded. */
const FAST = {
  KBUNDLE_CONNECT_TIMEOUT: '1',
  KBUNDLE_RESPONSE_TIMEOUT: '1',
  KBUNDLE_IDLE_TIMEOUT: '1',
  KBUNDLE_SPEED_LIMIT: '4096',
  KBUNDLE_SPEED_TIME: '1',
  KBUNDLE_RETRIES: '1',
};
/** What "bounded" means here, with a wide margin for a loaded 2-core machine. */
const BOUND_MS = 25_000;
/** When the run is killed: a missing deadline shows up as a kill, not a test timeout. */
const KILL_MS = 45_000;

const hostile = useHostileServers('kb-harden-deadlines-');
const server = hostile.server;

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return isolatedEnv(join(hostile.tmp, 'no-docker-config'), { ...FAST, KBUNDLE_CACHE_DIR: join(hostile.tmp, 'cache'), ...extra });
}

function run(args: string[], extra: Record<string, string> = {}): ReturnType<typeof runKbundle> {
  return runKbundle(args, { env: env(extra), killAfterMs: KILL_MS });
}

function pullArgs(ref: string): string[] {
  return ['pull', ref, '-o', `oci:${mkdtempSync(join(hostile.tmp, 'out-'))}`, '--no-signatures'];
}

function expectTransient(r: Awaited<ReturnType<typeof runKbundle>>, text: RegExp): void {
  expect(r.killed, `still running after ${KILL_MS} ms:\n${r.stderr}`).toBe(false);
  expect(r.stderr).not.toContain('internal error');
  expect(r.stderr).not.toMatch(/TypeError|at .*\.js:\d+/);
  expect(r.stderr).toMatch(text);
  expect(r.code).toBe(EXIT_CODES.TRANSIENT);
  expect(r.ms).toBeLessThan(BOUND_MS);
}

const manifestPath = /\/manifests\//;

describe('every network wait is bounded', () => {
  it('a registry that never answers the manifest request: response deadline, one retry, TRANSIENT', async () => {
    const reg = await server();
    serveImage(reg, 'kairos/app', 'v1');
    reg.route(/^(GET|HEAD)$/, manifestPath, stall);
    const r = await run(['inspect', `${reg.host}/kairos/app:v1`]);
    expectTransient(r, /(check|get) manifest v1: .*HEADERS_TIMEOUT/i);
    expect(reg.requests.filter((q) => manifestPath.test(q.url)).length).toBe(2); // KBUNDLE_RETRIES=1
  });

  it('--response-timeout and --retries on the command line win over the environment', async () => {
    const reg = await server();
    serveImage(reg, 'kairos/app', 'v1');
    reg.route(/^(GET|HEAD)$/, manifestPath, stall);
    const r = await run(['inspect', `${reg.host}/kairos/app:v1`, '--response-timeout', '0.5', '--retries', '2'], { KBUNDLE_RESPONSE_TIMEOUT: '600' });
    expectTransient(r, /HEADERS_TIMEOUT/i);
    expect(reg.requests.filter((q) => manifestPath.test(q.url)).length).toBe(3);
    const bad = await run(['inspect', `${reg.host}/kairos/app:v1`, '--response-timeout', 'soon']);
    expect(bad.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(bad.stderr).toContain('--response-timeout: "soon" is not a number of seconds');
  });

  it('status line and headers dribbled a byte at a time hit the same deadline', async () => {
    const reg = await server();
    serveImage(reg, 'kairos/app', 'v1');
    reg.route(/^(GET|HEAD)$/, manifestPath, (_req, res) => trickleHeaders(res, 50));
    const r = await run(['inspect', `${reg.host}/kairos/app:v1`]);
    expectTransient(r, /HEADERS_TIMEOUT/i);
  });

  it('a registry that stalls the /v2/ ping is a TRANSIENT error naming the registry', async () => {
    const reg = await server();
    reg.route('GET', '/v2/', stall);
    const r = await run(['inspect', `${reg.host}/kairos/app:v1`]);
    expectTransient(r, new RegExp(`${reg.host.replace(/[.[\]]/g, '\\$&')}: cannot reach`));
  });

  it('a slow-loris layer (headers at once, then a few bytes now and then) is cut by the minimum speed', async () => {
    const reg = await server();
    const img = serveImage(reg, 'kairos/app', 'v1', { layer: Buffer.alloc(256 * 1024, 7) });
    const layerDigest = sha256(img.layer);
    reg.route('GET', new RegExp(`/blobs/${layerDigest}$`), (_req, res) => trickle(res, 200, {}, img.layer, 64, 100)); // 640 B/s
    const r = await run(pullArgs(`${reg.host}/kairos/app:v1`));
    expectTransient(r, /below the minimum of 4096 bytes\/s/);
    // The first GET and one resume (KBUNDLE_RETRIES=1), each cut after a window; the copy starts
    // a blob that failed TRANSIENT twice more (src/oci/copy-graph.ts): 2 x 3 requests in all.
    expect(reg.requests.filter((q) => q.url.endsWith(layerDigest)).length).toBe(6);
  });

  it('a body that goes silent after its headers is cut by the idle deadline', async () => {
    const reg = await server();
    const img = serveImage(reg, 'kairos/app', 'v1');
    reg.route('GET', new RegExp(`/blobs/${sha256(img.layer)}$`), (_req, res) => {
      res.writeHead(200, { 'content-length': img.layer.length });
      res.write(img.layer.subarray(0, 10));
    });
    const r = await run([...pullArgs(`${reg.host}/kairos/app:v1`)], { KBUNDLE_SPEED_LIMIT: '0' });
    expectTransient(r, /BODY_TIMEOUT|Body Timeout/i);
  });

  it('a manifest body reset mid-way is retried, and a clean TRANSIENT error once retries run out', async () => {
    const reg = await server();
    const img = serveImage(reg, 'kairos/app', 'v1');
    let resets = 0;
    reg.route('GET', manifestPath, (_req, res) => {
      if (resets++ < 1) return resetAfter(res, 200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, img.manifest, 40);
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': img.digest, 'content-length': img.manifest.length });
      res.end(img.manifest);
    });
    const ok = await run(['inspect', `${reg.host}/kairos/app:v1`]);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain(img.digest);

    reg.route('GET', manifestPath, (_req, res) => resetAfter(res, 200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, img.manifest, 40));
    const r = await run(['inspect', `${reg.host}/kairos/app:v1`]);
    expectTransient(r, /get manifest (v1|sha256:[0-9a-f]+): .*(ECONNRESET|UND_ERR_SOCKET)/);
  });

  it('a layer reset mid-body is resumed; a layer that always resets ends in TRANSIENT', async () => {
    const reg = await server();
    const img = serveImage(reg, 'kairos/app', 'v1', { layer: Buffer.alloc(200_000, 3) });
    const layerDigest = sha256(img.layer);
    let n = 0;
    reg.route('GET', new RegExp(`/blobs/${layerDigest}$`), (_req, res) => {
      if (n++ === 0) return resetAfter(res, 200, {}, img.layer, 50_000);
      res.writeHead(200, { 'content-length': img.layer.length });
      res.end(img.layer);
    });
    const ok = await run(pullArgs(`${reg.host}/kairos/app:v1`));
    expect(ok.code).toBe(0);

    reg.route('GET', new RegExp(`/blobs/${layerDigest}$`), (_req, res) => resetAfter(res, 200, {}, img.layer, 50_000));
    const r = await run(pullArgs(`${reg.host}/kairos/app:v1`));
    expectTransient(r, new RegExp(`blob ${layerDigest}: download kept failing`));
  });

  it('a token server that never answers is bounded too', async () => {
    const reg = await server();
    const auth = await server();
    auth.route('GET', /^\/token/, stall);
    serveImage(reg, 'kairos/app', 'v1', { authorize: (q) => q.headers.authorization === 'Bearer t', challenge: `Bearer realm="${auth.url}/token",service="s"` });
    const r = await run(['inspect', `${reg.host}/kairos/app:v1`]);
    expect(r.killed).toBe(false);
    expect(r.stderr).not.toContain('internal error');
    expect(r.stderr).toMatch(/token server .*HEADERS_TIMEOUT/i);
    expect(r.code).toBe(EXIT_CODES.TRANSIENT);
    expect(r.ms).toBeLessThan(BOUND_MS);
    expect(auth.requests.length).toBe(2);
  });
});

describe('HTTP downloads are bounded in time and size, and staged', () => {
  function nodeRoot(): string {
    const root = mkdtempSync(join(hostile.tmp, 'root-'));
    mkdirSync(join(root, 'etc'), { recursive: true });
    writeFileSync(join(root, 'etc/os-release'), 'ID=kairos\nVERSION_ID=1\n');
    return root;
  }
  const store = (root: string): string[] => (existsSync(join(root, 'var/lib/kairos/extensions')) ? readdirSync(join(root, 'var/lib/kairos/extensions')) : []);

  it('sysext install http(s)://: a body over KBUNDLE_MAX_DOWNLOAD is refused, nothing lands, no temp left', async () => {
    const srv = await server();
    const big = Buffer.alloc(3 * 1024 * 1024, 1);
    srv.route('GET', '/declared.sysext.raw', (_req, res) => {
      res.writeHead(200, { 'content-length': big.length });
      res.end(big);
    });
    srv.route('GET', '/chunked.sysext.raw', (_req, res) => {
      res.writeHead(200, { 'transfer-encoding': 'chunked' });
      res.end(big);
    });
    for (const name of ['declared', 'chunked']) {
      const root = nodeRoot();
      const r = await run(['sysext', 'install', `${srv.url}/${name}.sysext.raw`, '--root', root, '--no-check'], { KBUNDLE_MAX_DOWNLOAD: '1M' });
      expect(r.killed).toBe(false);
      expect(r.stderr).toMatch(new RegExp(`${name}\\.sysext\\.raw: .*larger than the 1048576-byte limit`));
      expect(r.stderr).toContain('KBUNDLE_MAX_DOWNLOAD');
      expect(r.code).toBe(EXIT_CODES.INVALID_INPUT);
      expect(store(root)).toEqual([]);
    }
  });

  it('sysext install http(s)://: a trickled image is cut by the minimum speed; a truncated one is retried, then TRANSIENT', async () => {
    const srv = await server();
    const img = Buffer.alloc(128 * 1024, 2);
    srv.route('GET', '/slow.sysext.raw', (_req, res) => trickle(res, 200, {}, img, 64, 100));
    srv.route('GET', '/cut.sysext.raw', (_req, res) => {
      res.writeHead(200, { 'content-length': img.length });
      res.write(img.subarray(0, 1000), () => res.socket?.end());
    });
    const root = nodeRoot();
    const slow = await run(['sysext', 'install', `${srv.url}/slow.sysext.raw`, '--root', root, '--no-check']);
    expectTransient(slow, /download of http:\/\/.*\/slow\.sysext\.raw failed: .*below the minimum of 4096 bytes\/s/);
    expect(store(root)).toEqual([]);
    const cut = await run(['sysext', 'install', `${srv.url}/cut.sysext.raw`, '--root', root, '--no-check']);
    expectTransient(cut, /download of http:\/\/.*\/cut\.sysext\.raw failed: /);
    expect(srv.requests.filter((q) => q.url === '/cut.sysext.raw').length).toBe(2); // KBUNDLE_RETRIES=1
    expect(store(root)).toEqual([]);
  });

  it('bundle url: downloads: size cap, slow-loris and a stalled server end cleanly, the cache keeps nothing', async () => {
    const srv = await server();
    const payload = Buffer.alloc(2 * 1024 * 1024, 5);
    srv.route('GET', '/big', (_req, res) => {
      res.writeHead(200, { 'content-length': payload.length });
      res.end(payload);
    });
    srv.route('GET', '/slow', (_req, res) => trickle(res, 200, {}, payload, 64, 100));
    srv.route('GET', '/stall', stall);
    const bundle = (path: string): string => {
      const dir = mkdtempSync(join(hostile.tmp, 'bundle-'));
      writeFileSync(
        join(dir, 'bundle.yaml'),
        `name: dl\nversion: 1.0.0\ndescription: d\ntype: container\nplatforms: [linux/amd64]\nfiles:\n  - url: ${srv.url}${path}\n    sha256: ${sha256(payload).slice(7)}\n    dst: usr/local/bin/dl\n    mode: "0755"\n`,
      );
      return dir;
    };
    const cache = join(hostile.tmp, 'cache');
    const big = await run(['build', bundle('/big'), '-o', `oci:${join(hostile.tmp, 'o1')}`], { KBUNDLE_MAX_DOWNLOAD: '1M' });
    expect(big.stderr).toMatch(/larger than the 1048576-byte limit/);
    expect(big.code).toBe(EXIT_CODES.INVALID_INPUT);
    const slow = await run(['build', bundle('/slow'), '-o', `oci:${join(hostile.tmp, 'o2')}`]);
    expectTransient(slow, /below the minimum of 4096 bytes\/s/);
    const stalled = await run(['build', bundle('/stall'), '-o', `oci:${join(hostile.tmp, 'o3')}`]);
    expectTransient(stalled, /HEADERS_TIMEOUT/i);
    expect(existsSync(cache) ? readdirSync(cache) : []).toEqual([]);
  });
});
