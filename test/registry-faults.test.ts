/**
 * Transfers under faults: connection resets mid-upload and mid-download and 5xx answers injected
 * by a proxy in front of the real registry (the result must be complete and byte-identical), and a
 * fake registry that serves broken manifests (the error must be clear and nothing written).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeRandomImage, type RandomImage } from '../bench/transfer.js';
import { isKbError } from '../src/errors.js';
import { digestOf } from '../src/oci/digest.js';
import { MediaType } from '../src/oci/mediatypes.js';
import { fetchBytes, type Target } from '../src/oci/target.js';
import type { Descriptor } from '../src/oci/types.js';
import { RegistryClient } from '../src/registry/client.js';
import type { UploadTuning } from '../src/registry/blob-upload.js';
import { TransientTransferError } from '../src/registry/errors.js';
import { RegistryTarget } from '../src/registry/registry-target.js';
import { ChunkedSource, OneShotChunk } from '../src/registry/replayable-chunks.js';
import { appendAttachedLayer } from '../src/attach/legacy.js';
import { attachReferrer } from '../src/attach/referrers.js';
import { attachmentTag, signatureTag } from '../src/attach/tags.js';
import { copyImage } from '../src/store/copy.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { kbundleInProcess as kbundle } from './helpers/cli.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';

const work = mkdtempSync(join(tmpdir(), 'kbundle-faults-'));
const dockerConfig = mkdtempSync(join(tmpdir(), 'kbundle-dockercfg-'));
process.env.DOCKER_CONFIG = dockerConfig;
let seq = 0;
const fresh = (name: string) => join(work, `${name}-${++seq}`);
const MiB = 1 << 20;
const fastRetry = { retry: { attempts: 5, baseDelayMs: 10, maxDelayMs: 100 } };
/** PATCH chunks of 1 MiB, also for a layout's blobs (which otherwise go in one streamed PUT). */
const smallChunks = { chunkSize: MiB, monolithicMax: MiB, streamLocal: false };

function sameBlobs(a: OciLayout, b: OciLayout, descs: Descriptor[]): void {
  for (const d of descs) expect(readFileSync(a.blobPath(d.digest)).equals(readFileSync(b.blobPath(d.digest))), d.digest).toBe(true);
}

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
  rmSync(dockerConfig, { recursive: true, force: true });
});

describe('through a fault-injecting proxy in front of registry 2.8', () => {
  let reg: RegistryHandle;
  let proxy: FaultProxy;
  let image: RandomImage;
  beforeAll(async () => {
    reg = await startRegistry({ variant: 'open' });
    proxy = await startFaultProxy({ target: reg.url });
    image = await writeRandomImage(fresh('src'), [6 * MiB + 123, 4 * MiB, 300 * 1024], 'v1');
  });
  afterAll(async () => {
    await proxy?.close();
    await reg?.stop();
  });

  /**
   * Push the image through the proxy, one blob at a time (so the rules' request counts land on the
   * same requests every run); the copy's retries, once the proxy is idle.
   */
  async function pushThroughProxy(repository: string, upload: Partial<UploadTuning>): Promise<string[]> {
    const client = new RegistryClient(fastRetry);
    const retries: string[] = [];
    try {
      const dst = new RegistryTarget(client, repository, proxy.host, { access: 'push', upload });
      const r = await copyImage(image.layout, 'v1', dst, 'v1', { concurrency: 1, hooks: { onRetry: (_desc, e) => retries.push(String(e)) } });
      expect(r.blobsCopied).toBe(4);
    } finally {
      await client.close();
    }
    await proxy.idle();
    return retries;
  }

  /** Read `repository` back straight from the registry (not through the proxy): the image, byte for byte. */
  async function expectStoredIntact(repository: string): Promise<void> {
    const direct = new RegistryClient({});
    try {
      const back = await OciLayout.open(fresh(`${repository.replace('/', '-')}-back`), { create: true });
      await copyImage(new RegistryTarget(direct, repository, reg.host), 'v1', back, 'v1');
      expect((await back.resolve('v1')).digest).toBe(image.manifest.digest);
      sameBlobs(back, image.layout, [image.config, ...image.layers]);
    } finally {
      await direct.close();
    }
  }

  /** The manifest requests the proxy saw, in order, as "METHOD reference" (`repository`: only its own; `method`: only those, as the bare reference). */
  function manifestRequests(opts: { repository?: string; method?: string } = {}): string[] {
    const inRepo = opts.repository ? `/v2/${opts.repository}/manifests/` : '/manifests/';
    return proxy.log
      .filter((e) => e.url.includes(inRepo) && (opts.method === undefined || e.method === opts.method))
      .map((e) => {
        const reference = e.url.replace(/.*\/manifests\//, '');
        return opts.method === undefined ? `${e.method} ${reference}` : reference;
      });
  }

  it('push survives resets mid-upload (first and later chunks, monolithic PUT) and 503s; the result is byte-identical', async () => {
    const rules = [
      proxy.addRule({ action: 'status', status: 503, method: 'POST', path: /\/blobs\/uploads\/$/, times: 2 }),
      proxy.addRule({ action: 'reset-request', afterBytes: 200 * 1024, method: 'PATCH', times: 1 }), // first chunk of a blob
      proxy.addRule({ action: 'reset-request', afterBytes: 300 * 1024, method: 'PATCH', skip: 4, times: 1 }), // a later chunk
      proxy.addRule({ action: 'status', status: 503, method: 'PATCH', skip: 2, times: 2 }),
      proxy.addRule({ action: 'status', status: 502, method: 'PATCH', skip: 8, times: 1 }),
      // The 4th commit is the 300 KiB layer's single PUT (config, then the two chunked layers' empty PUTs come first).
      proxy.addRule({ action: 'reset-request', afterBytes: 100 * 1024, method: 'PUT', path: /\/blobs\/uploads\/.*digest=/, skip: 3, times: 1 }),
      proxy.addRule({ action: 'status', status: 503, method: 'PUT', path: /\/manifests\//, times: 1 }),
      proxy.addRule({ action: 'status', status: 429, method: 'HEAD', path: /\/blobs\//, headers: { 'retry-after': '0' }, times: 1 }),
    ];
    const retries = await pushThroughProxy('faults/push', smallChunks);
    for (const rule of rules) expect(rule.fired, JSON.stringify(rule.rule)).toBeGreaterThan(0);
    // Registry 2.8 kills an upload session once a PATCH broke mid-body: that blob started over from its source.
    expect(retries.length).toBeGreaterThanOrEqual(1);
    proxy.clearRules();

    await expectStoredIntact('faults/push');
  });

  it('pull survives resets mid-download (resumed with Range) and 503s on manifests; the result is byte-identical', async () => {
    const direct = new RegistryClient({});
    try {
      await copyImage(image.layout, 'v1', new RegistryTarget(direct, 'faults/pull', reg.host, { access: 'push' }), 'v1');
    } finally {
      await direct.close();
    }
    // Rules are tried in order and the first that fires takes the request: the 500 comes first so
    // it fires whatever order the parallel blob GETs arrive in (the resets then take the next three).
    const rules = [
      proxy.addRule({ action: 'status', status: 500, method: 'GET', path: /\/blobs\/sha256:/, times: 1 }),
      proxy.addRule({ action: 'reset-response', afterBytes: 1536 * 1024, method: 'GET', path: /\/blobs\/sha256:/, times: 3 }),
      proxy.addRule({ action: 'status', status: 503, method: /GET|HEAD/, path: /\/manifests\//, times: 2 }),
    ];
    const client = new RegistryClient(fastRetry);
    try {
      const out = await OciLayout.open(fresh('pull'), { create: true });
      const r = await copyImage(new RegistryTarget(client, 'faults/pull', proxy.host), 'v1', out, 'v1');
      expect(r.blobsCopied).toBe(4);
      sameBlobs(out, image.layout, [image.config, ...image.layers, image.manifest]);
    } finally {
      await client.close();
    }
    await proxy.idle();
    for (const rule of rules) expect(rule.fired, JSON.stringify(rule.rule)).toBeGreaterThan(0);
    expect(proxy.log.some((e) => e.method === 'GET' && e.fault === undefined && /\/blobs\//.test(e.url))).toBe(true);
    proxy.clearRules();
  });

  it('reads the tag once: one GET of the manifest, no HEAD first, and the manifest is not fetched again by digest', async () => {
    await pushThroughProxy('faults/one-get', {});
    proxy.clearLog();
    const client = new RegistryClient(fastRetry);
    try {
      const out = await OciLayout.open(fresh('one-get'), { create: true });
      const r = await copyImage(new RegistryTarget(client, 'faults/one-get', proxy.host), 'v1', out, 'v1');
      expect(r.root.digest).toBe(image.manifest.digest);
      sameBlobs(out, image.layout, [image.config, ...image.layers, image.manifest]);
    } finally {
      await client.close();
    }
    await proxy.idle();
    expect(manifestRequests({ repository: 'faults/one-get' }).filter((m) => /^\S+ (v1|sha256:)/.test(m))).toEqual(['GET v1']);
  });

  it('pushes the root manifest under its tag in one PUT (not by digest, then by tag); a root already there is tagged', async () => {
    proxy.clearLog();
    await pushThroughProxy('faults/one-put', {});
    const puts = () => manifestRequests({ method: 'PUT' });
    expect(puts()).toEqual(['v1']);
    await expectStoredIntact('faults/one-put');
    // The same image under a second tag: the root is there, so it is only tagged.
    proxy.clearLog();
    const client = new RegistryClient(fastRetry);
    try {
      const r = await copyImage(image.layout, 'v1', new RegistryTarget(client, 'faults/one-put', proxy.host, { access: 'push' }), 'v2');
      expect(r.blobsCopied).toBe(0);
    } finally {
      await client.close();
    }
    await proxy.idle();
    expect(puts()).toEqual(['v2']);
    const direct = new RegistryClient({});
    try {
      expect((await new RegistryTarget(direct, 'faults/one-put', reg.host).resolve('v2')).digest).toBe(image.manifest.digest);
    } finally {
      await direct.close();
    }
  });

  /** A fresh signing key pair (password in `env`) for the sign tests. */
  async function signingKey(): Promise<{ key: string; env: Record<string, string> }> {
    const keys = fresh('sign-keys');
    mkdirSync(keys);
    const env = { KBUNDLE_PASSWORD: 'test' };
    expect((await kbundle(['key', 'generate', '--out', join(keys, 'k')], { env })).code).toBe(0);
    return { key: join(keys, 'k.key'), env };
  }

  it('signs both formats at once: the Sigstore bundle is written while the .sig tag is still being read', async () => {
    await pushThroughProxy('faults/sign', {});
    const { key, env } = await signingKey();
    proxy.clearLog();
    const hex = image.manifest.digest.slice('sha256:'.length);
    const held = proxy.addRule({ action: 'delay', ms: 1000, method: 'GET', path: new RegExp(`/manifests/sha256-${hex}\\.sig$`), times: 1 });
    try {
      const r = await kbundle(['sign', `${proxy.host}/faults/sign:v1`, '--key', key, '--plain-http'], { env });
      expect(r.code, r.stderr).toBe(0);
    } finally {
      held.remove();
    }
    await proxy.idle();
    expect(held.fired).toBe(1);
    const sigRead = proxy.log.find((e) => e.fault === 'delay')!;
    // The bundle's referrer manifest (PUT by digest: registry 2.8 has no referrers API) went up during the held read.
    const referrerPut = proxy.log.find((e) => e.method === 'PUT' && /\/manifests\/sha256:/.test(e.url))!;
    expect(referrerPut.time).toBeGreaterThanOrEqual(sigRead.time);
    expect(referrerPut.time - sigRead.time).toBeLessThan(1000);
    const sigPut = proxy.log.find((e) => e.method === 'PUT' && e.url.endsWith(`/manifests/sha256-${hex}.sig`))!;
    expect(sigPut.time - sigRead.time).toBeGreaterThanOrEqual(1000);
  });

  it("signs an index's manifests at once with --recursive: one platform's signatures are written while another's .sig read is held", async () => {
    const repo = 'faults/recursive';
    const empty = Buffer.from('{}');
    const emptyDesc: Descriptor = { mediaType: MediaType.OciEmpty, digest: digestOf(empty), size: empty.length };
    const direct = new RegistryClient({});
    const platforms: Descriptor[] = [];
    let indexDesc: Descriptor;
    try {
      const dst = new RegistryTarget(direct, repo, reg.host, { access: 'push' });
      await dst.push(emptyDesc, empty);
      for (const architecture of ['amd64', 'arm64', 'riscv64']) {
        const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: emptyDesc, layers: [emptyDesc], annotations: { architecture } }));
        const desc: Descriptor = { mediaType: MediaType.OciManifest, digest: digestOf(bytes), size: bytes.length };
        await dst.push(desc, bytes);
        platforms.push({ ...desc, platform: { os: 'linux', architecture } });
      }
      // The last manifest listed twice (as another variant): signed once, its .sig holds one signature.
      const listed = [...platforms, { ...platforms[2]!, platform: { os: 'linux', architecture: 'riscv64', variant: 'rva23' } }];
      const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: listed }));
      indexDesc = { mediaType: MediaType.OciIndex, digest: digestOf(index), size: index.length };
      await dst.push(indexDesc, index);
      await dst.tag(indexDesc, 'v1');
    } finally {
      await direct.close();
    }
    const { key, env } = await signingKey();
    proxy.clearLog();
    const sigTag = (d: Descriptor) => signatureTag(d.digest);
    const [first, ...others] = platforms;
    const held = proxy.addRule({ action: 'delay', ms: 1000, method: 'GET', path: new RegExp(`/manifests/${sigTag(first!)}$`), times: 1 });
    let signed: { digest: string; manifests: { digest: string }[] };
    try {
      const r = await kbundle(['sign', `${proxy.host}/${repo}:v1`, '--key', key, '--recursive', '--plain-http', '--json'], { env });
      expect(r.code, r.stderr).toBe(0);
      signed = JSON.parse(r.stdout) as typeof signed;
    } finally {
      held.remove();
    }
    await proxy.idle();
    expect(held.fired).toBe(1);
    // Reported in the index's order, whatever order they finished in.
    expect(signed.manifests.map((m) => m.digest)).toEqual([indexDesc.digest, ...platforms.map((p) => p.digest), platforms[2]!.digest]);
    const heldRead = proxy.log.find((e) => e.fault === 'delay')!;
    const sigPut = (d: Descriptor) => proxy.log.find((e) => e.method === 'PUT' && e.url.endsWith(`/manifests/${sigTag(d)}`))!;
    for (const other of others) {
      expect(sigPut(other).time).toBeGreaterThanOrEqual(heldRead.time);
      expect(sigPut(other).time - heldRead.time).toBeLessThan(1000);
    }
    expect(sigPut(first!).time - heldRead.time).toBeGreaterThanOrEqual(1000);
    // The index was signed before any platform: its .sig was stored before the held read began.
    expect(sigPut(indexDesc).time).toBeLessThanOrEqual(heldRead.time);
    expect(proxy.log.filter((e) => e.method === 'PUT' && e.url.endsWith(`/manifests/${sigTag(platforms[2]!)}`))).toHaveLength(1);
    const reader = new RegistryClient({});
    try {
      const t = new RegistryTarget(reader, repo, reg.host);
      const sig = JSON.parse((await fetchBytes(t, await t.resolve(sigTag(platforms[2]!)))).toString()) as { layers: unknown[] };
      expect(sig.layers).toHaveLength(1);
    } finally {
      await reader.close();
    }
  });

  it('looks up attachments with one GET per tag, and asks the referrers API and the fallback index at once', async () => {
    // The image with a cosign .sig tag and a referrer, which registry 2.8 (no referrers API) keeps in the fallback index.
    const repo = 'faults/attached';
    const empty = Buffer.from('{}');
    const emptyDesc: Descriptor = { mediaType: MediaType.OciEmpty, digest: digestOf(empty), size: empty.length };
    const manifest = (extra: object) => {
      const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: emptyDesc, layers: [emptyDesc], ...extra }));
      return { bytes, desc: { mediaType: MediaType.OciManifest, digest: digestOf(bytes), size: bytes.length } as Descriptor };
    };
    const ref = manifest({ artifactType: 'application/vnd.example.note+json', subject: image.manifest });
    const note = Buffer.from('a signature, as far as this test goes');
    const direct = new RegistryClient({});
    try {
      await copyImage(image.layout, 'v1', new RegistryTarget(direct, repo, reg.host, { access: 'push' }), 'v1');
    } finally {
      await direct.close();
    }
    // Attached through the proxy: each manifest is stored under its tag in one PUT.
    proxy.clearLog();
    const writer = new RegistryClient(fastRetry);
    try {
      const dst = new RegistryTarget(writer, repo, proxy.host, { access: 'push' });
      await dst.push(emptyDesc, empty);
      await appendAttachedLayer(dst, attachmentTag(image.manifest.digest, 'sig'), async () => ({ payload: note, mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', annotations: {} }));
      await attachReferrer(dst, ref.bytes, ref.desc);
    } finally {
      await writer.close();
    }
    await proxy.idle();
    const hex0 = image.manifest.digest.slice('sha256:'.length);
    expect(manifestRequests({ method: 'PUT' })).toEqual([`sha256-${hex0}.sig`, ref.desc.digest, `sha256-${hex0}`]);
    const direct2 = new RegistryClient({});
    let sig: { desc: Descriptor };
    try {
      sig = { desc: await new RegistryTarget(direct2, repo, reg.host).resolve(attachmentTag(image.manifest.digest, 'sig')) };
    } finally {
      await direct2.close();
    }
    proxy.clearLog();
    const held = proxy.addRule({ action: 'delay', ms: 1000, method: 'GET', path: /\/referrers\//, times: Infinity });
    const client = new RegistryClient(fastRetry);
    try {
      const out = await OciLayout.open(fresh('attached'), { create: true });
      const r = await copyImage(new RegistryTarget(client, repo, proxy.host), 'v1', out, 'v1', { attached: true });
      expect(r.attached.map((a) => a.digest).sort()).toEqual([sig.desc.digest, ref.desc.digest].sort());
      expect((await out.resolve(attachmentTag(image.manifest.digest, 'sig'))).digest).toBe(sig.desc.digest);
    } finally {
      await client.close();
      held.remove();
    }
    await proxy.idle();
    expect(held.fired).toBe(1);
    const hex = image.manifest.digest.slice('sha256:'.length);
    const manifests = manifestRequests();
    // Every tag read in one GET, none with a HEAD first; the .sig manifest is not read again by digest for the copy.
    expect(manifests.filter((m) => m.startsWith('HEAD'))).toEqual([]);
    expect(manifests).toEqual(expect.arrayContaining([`GET sha256-${hex}.sig`, `GET sha256-${hex}.att`, `GET sha256-${hex}.sbom`, `GET sha256-${hex}`]));
    expect(manifests).not.toContain(`GET ${sig.desc.digest}`);
    // The fallback index was asked for while the referrers API request was held (in turn: a second later).
    const api = proxy.log.find((e) => e.url.includes('/referrers/'))!;
    const fallback = proxy.log.find((e) => e.url.endsWith(`/manifests/sha256-${hex}`))!;
    expect(fallback.time - api.time).toBeLessThan(1000);
  });

  it("sends the first request after the ping on the ping's connection (no second TCP connection)", async () => {
    await pushThroughProxy('faults/one-conn', {});
    // A TCP relay to the registry that counts the connections made to it.
    let connections = 0;
    const relay = net.createServer((c) => {
      connections++;
      const up = net.connect(Number(new URL(reg.url).port), '127.0.0.1');
      c.pipe(up).pipe(c);
      c.on('error', () => up.destroy());
      up.on('error', () => c.destroy());
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', () => r()));
    const client = new RegistryClient(fastRetry);
    try {
      const target = new RegistryTarget(client, 'faults/one-conn', `127.0.0.1:${(relay.address() as AddressInfo).port}`);
      const { desc } = await target.resolveWithBytes('v1'); // the ping, then the manifest GET
      expect(desc.digest).toBe(image.manifest.digest);
      expect(await target.exists(image.config)).toBe(true); // a HEAD, in sequence
      expect(await target.tags()).toEqual(['v1']); // and a request after the HEAD
    } finally {
      await client.close();
      relay.close();
    }
    expect(connections).toBe(1);
  });

  it('installs with one GET of the manifest: verifying and picking the platform read it from memory', async () => {
    const bundle = fresh('install-bundle');
    mkdirSync(join(bundle, 'files'), { recursive: true });
    writeFileSync(join(bundle, 'files', 'hello.txt'), 'hello\n');
    writeFileSync(
      join(bundle, 'bundle.yaml'),
      'name: hello\nversion: 1.0.0\ndescription: one file\ntype: container\nplatforms: [linux/amd64, linux/arm64]\nfiles:\n  - src: files\n    dst: opt/hello\n',
    );
    const layout = fresh('install-layout');
    expect((await kbundle(['build', bundle, '-o', `oci:${layout}:v1`])).code).toBe(0);
    expect((await kbundle(['push', `oci:${layout}:v1`, `${reg.host}/faults/install:v1`, '--plain-http'])).code).toBe(0);
    proxy.clearLog();
    const root = fresh('install-root');
    const r = await kbundle(['install', `container://${proxy.host}/faults/install:v1`, '--root', root, '--plain-http', '--platform', 'linux/arm64']);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(join(root, 'opt/hello/hello.txt'), 'utf8')).toBe('hello\n');
    await proxy.idle();
    const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
    const top = index.manifests[0]!.digest;
    const manifests = manifestRequests({ repository: 'faults/install' }).filter((m) => /^\S+ (v1|sha256:)/.test(m));
    // The index by tag once (no HEAD, not again by digest), then the arm64 manifest once.
    expect(manifests[0]).toBe('GET v1');
    expect(manifests.filter((m) => m === 'GET v1' || m.includes(top) || m.startsWith('HEAD'))).toEqual(['GET v1']);
    expect(manifests).toHaveLength(2);
  });

  it('pushes a large blob from a layout in one streamed PUT; a reset mid-body or a 503 makes the copy read the file again; the result is byte-identical', async () => {
    proxy.clearLog();
    const commitOf = (d: Descriptor) => new RegExp(`/blobs/uploads/.*digest=${encodeURIComponent(d.digest)}`);
    const [big, other] = image.layers.filter((l) => l.size > MiB);
    const rules = [
      proxy.addRule({ action: 'reset-request', afterBytes: 2 * MiB, method: 'PUT', path: commitOf(big!), times: 1 }),
      proxy.addRule({ action: 'status', status: 503, method: 'PUT', path: commitOf(other!), times: 1 }),
    ];
    // The default tuning: blobs over 1 MiB from the layout are streamed (no PATCH, nothing held).
    const retries = await pushThroughProxy('faults/streamed', { monolithicMax: MiB });
    for (const rule of rules) expect(rule.fired, JSON.stringify(rule.rule)).toBe(1);
    expect(proxy.log.filter((e) => e.method === 'PATCH')).toEqual([]);
    // Each fault made the copy start that blob again from the layout: two retries, both TRANSIENT.
    expect(retries).toHaveLength(2);
    for (const e of retries) expect(e).toMatch(/TransientTransferError|TRANSIENT|reset|503/i);
    // The two layers over 1 MiB each went in one PUT carrying the whole blob (the faulted attempts aside).
    for (const layer of image.layers.filter((l) => l.size > MiB)) {
      const puts = proxy.log.filter((e) => e.method === 'PUT' && e.url.includes(encodeURIComponent(layer.digest)) && e.status === 201);
      expect(puts, layer.digest).toHaveLength(1);
      expect(puts[0]!.requestBytes).toBe(layer.size);
    }
    proxy.clearRules();

    await expectStoredIntact('faults/streamed');
  });

  it('gives up after a bounded number of retries with a clear error', async () => {
    proxy.addRule({ action: 'status', status: 503, method: /PUT|PATCH/, times: Infinity });
    const client = new RegistryClient(fastRetry);
    const t0 = Date.now();
    try {
      const dst = new RegistryTarget(client, 'faults/never', proxy.host, { access: 'push', upload: smallChunks });
      const err = await copyImage(image.layout, 'v1', dst, 'v1').then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(err).toBeDefined();
      expect(err!.message).toContain(proxy.host);
      expect(err!.message).toMatch(/503|kept failing/);
      expect(Date.now() - t0).toBeLessThan(30_000);
    } finally {
      proxy.clearRules();
      await client.close();
    }
  });
});

describe('a destination that fails TRANSIENT', () => {
  it('starts the blob again after a growing pause, and the copy completes byte-identical', async () => {
    const src = await writeRandomImage(fresh('flaky-src'), [2 * MiB], 'v1');
    const out = await OciLayout.open(fresh('flaky-dst'), { create: true });
    let failures = 2;
    const pushedAt: number[] = [];
    const flaky: Target = {
      name: 'flaky',
      exists: (d) => out.exists(d),
      fetch: (d) => out.fetch(d),
      resolve: (r) => out.resolve(r),
      tag: (d, r) => out.tag(d, r),
      async push(d, content) {
        if (d.digest === src.layers[0]!.digest) {
          pushedAt.push(performance.now());
          if (failures-- > 0) {
            if (content instanceof Readable) content.destroy();
            throw new TransientTransferError('flaky: connection reset');
          }
        }
        return out.push(d, content);
      },
    };
    const retries: string[] = [];
    const r = await copyImage(src.layout, 'v1', flaky, 'v1', { blobRetryDelayMs: 100, hooks: { onRetry: (_d, e) => retries.push(String(e)) } });
    expect(r.blobsCopied).toBe(2); // the config and the layer
    expect(retries).toHaveLength(2);
    // 100 ms before the second attempt, 200 ms before the third.
    expect(pushedAt[1]! - pushedAt[0]!).toBeGreaterThanOrEqual(95);
    expect(pushedAt[2]! - pushedAt[1]!).toBeGreaterThanOrEqual(195);
    sameBlobs(out, src.layout, [src.config, ...src.layers]);
  });
});

describe('a streamed upload body (OneShotChunk)', () => {
  const drain = async (r: Readable) => {
    const parts: Buffer[] = [];
    for await (const c of r as AsyncIterable<Buffer>) parts.push(c);
    return Buffer.concat(parts);
  };

  it('sends the source once; a second request for it is TRANSIENT (the copy reads the source again)', async () => {
    const bytes = Buffer.from('0123456789'.repeat(1000));
    const chunk = new OneShotChunk(new ChunkedSource(Readable.from([bytes.subarray(0, 4000), bytes.subarray(4000)])), bytes.length, 'blob x');
    expect((await drain(chunk.open())).equals(bytes)).toBe(true);
    let err: unknown;
    try {
      chunk.open();
    } catch (e) {
      err = e;
    }
    expect(isKbError(err, 'TRANSIENT'), String(err)).toBe(true);
  });

  it('fails TRUNCATED when the source ends early', async () => {
    const chunk = new OneShotChunk(new ChunkedSource(Readable.from([Buffer.alloc(100)])), 150, 'blob y');
    await expect(drain(chunk.open())).rejects.toThrow(/blob y: the source ended after 100 bytes/);
  });
});

// ---------------------------------------------------------------------------------------------
// A fake registry serving broken content
// ---------------------------------------------------------------------------------------------

interface Fake {
  host: string;
  close(): Promise<void>;
}

const goodLayer = Buffer.from('layer bytes');
const goodConfig = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [digestOf(goodLayer)] } }));
const cfgDesc: Descriptor = { mediaType: MediaType.OciConfig, digest: digestOf(goodConfig), size: goodConfig.length };
const layerDesc: Descriptor = { mediaType: MediaType.OciLayer, digest: digestOf(goodLayer), size: goodLayer.length };
const goodManifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: cfgDesc, layers: [layerDesc] }));
const otherManifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: cfgDesc, layers: [] }));

/** Manifests by repository name: each repository misbehaves in one way. */
function fakeResponse(repo: string, ref: string, res: http.ServerResponse): void {
  const send = (status: number, body: Buffer | string, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': MediaType.OciManifest, 'content-length': String(Buffer.byteLength(body)), ...headers });
    res.end(body);
  };
  switch (repo) {
    case 'malformed':
      return send(200, '{"schemaVersion": 2, "config": ');
    case 'notamanifest':
      return send(200, JSON.stringify({ schemaVersion: 2, config: { mediaType: 'x', digest: 'nope', size: -1 }, layers: [] }));
    case 'wrongheader':
      return send(200, goodManifest, { 'docker-content-digest': digestOf(otherManifest) });
    case 'wrongbytes':
      // Asked by digest for the good manifest, sends another one.
      return send(200, otherManifest);
    case 'oversized':
      return send(200, Buffer.alloc(5 * MiB, 0x20));
    case 'oversized-chunked': {
      res.writeHead(200, { 'content-type': MediaType.OciManifest });
      const block = Buffer.alloc(MiB, 0x20);
      let n = 0;
      const pump = (): void => {
        while (n < 6) {
          n++;
          if (!res.write(block)) return void res.once('drain', pump);
        }
        res.end();
      };
      return pump();
    }
    case 'badlayer':
      return send(200, goodManifest, { 'docker-content-digest': digestOf(goodManifest) });
    default:
      return send(404, JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: `no ${ref}` }] }), { 'content-type': 'application/json' });
  }
}

async function startFakeRegistry(): Promise<Fake> {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/v2/') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return void res.end('{}');
    }
    let m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(url.pathname);
    if (m) {
      if (req.method === 'HEAD') {
        // No Docker-Content-Digest: the client must GET (and verify) the manifest itself.
        res.writeHead(200, { 'content-type': MediaType.OciManifest });
        return void res.end();
      }
      return fakeResponse(m[1]!, m[2]!, res);
    }
    m = /^\/v2\/(.+)\/blobs\/([^/]+)$/.exec(url.pathname);
    if (m) {
      const body = m[2] === cfgDesc.digest ? goodConfig : Buffer.from('tampered!!!'); // same length as the layer
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(body.length) });
      return void res.end(body);
    }
    m = /^\/v2\/(.+)\/tags\/list$/.exec(url.pathname);
    if (m) {
      // A registry that honours n/last and paginates with Link; "loop" always links to itself.
      const all = Array.from({ length: 25 }, (_, i) => `v${String(i).padStart(2, '0')}`).reverse();
      const n = Number(url.searchParams.get('n') ?? 100);
      const last = url.searchParams.get('last');
      const sorted = [...all].sort();
      const start = last ? sorted.indexOf(last) + 1 : 0;
      const page = sorted.slice(start, start + n);
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (m[1] === 'loop') headers.link = `<${url.pathname}?n=${n}>; rel="next"`;
      else if (start + n < sorted.length) headers.link = `</v2/${m[1]}/tags/list?n=${n}&last=${page[page.length - 1]}>; rel="next"`;
      res.writeHead(200, headers);
      return void res.end(JSON.stringify({ name: m[1], tags: page }));
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('404 page not found');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    host: `127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

describe('a registry serving broken manifests', () => {
  let fake: Fake;
  beforeAll(async () => {
    fake = await startFakeRegistry();
  });
  afterAll(async () => {
    await fake?.close();
  });

  it.each([
    ['malformed', 'x', /not valid JSON/],
    ['notamanifest', 'x', /invalid at config\.digest/],
    ['wrongheader', 'x', /Docker-Content-Digest says .* but the manifest bytes hash to/],
    ['wrongbytes', digestOf(goodManifest), /sent a manifest whose digest is/],
    ['oversized', 'x', /over the 4194304-byte limit/],
    ['oversized-chunked', 'x', /larger than the 4194304-byte limit/],
    ['badlayer', 'x', /content digest .* does not match the expected/],
  ])('%s: clear error, exit ≠ 0, nothing written', async (repo, ref, message) => {
    const sep = ref.startsWith('sha256:') ? '@' : ':';
    const out = fresh(`fake-${repo}`);
    const r = await kbundle(['pull', `${fake.host}/${repo}${sep}${ref}`, '-o', `oci:${out}`]);
    expect(r.code).not.toBe(0);
    expect(r.code).not.toBe(70); // a user error, not a crash
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toContain(fake.host);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(existsSync(out)).toBe(false);

    // Into an existing layout: it is left exactly as it was.
    const existing = fresh('existing');
    const layout = await OciLayout.open(existing, { create: true });
    const before = readFileSync(join(existing, 'index.json'));
    const again = await kbundle(['pull', `${fake.host}/${repo}${sep}${ref}`, '-o', `oci:${existing}:t`]);
    expect(again.code).not.toBe(0);
    expect(readFileSync(join(existing, 'index.json')).equals(before)).toBe(true);
    const blobs = readdirSync(join(existing, 'blobs', 'sha256'));
    // A config that verified may land; a bad layer or manifest never does.
    expect(blobs.filter((b) => b !== cfgDesc.digest.slice(7))).toEqual([]);
    expect(await layout.exists(layerDesc)).toBe(false);
  });

  it('follows Link pagination when a registry honours n/last, and stops on a self-referencing Link', async () => {
    const client = new RegistryClient({});
    try {
      const paged = new RegistryTarget(client, 'paged', fake.host);
      expect(await paged.tags(10)).toEqual(Array.from({ length: 25 }, (_, i) => `v${String(i).padStart(2, '0')}`));
      expect(await new RegistryTarget(client, 'loop', fake.host).tags(10)).toEqual(['v00', 'v01', 'v02', 'v03', 'v04', 'v05', 'v06', 'v07', 'v08', 'v09']);
    } finally {
      await client.close();
    }
  });

  it('names the registry when nothing listens there', async () => {
    const r = await kbundle(['inspect', '127.0.0.1:1/nothing:here']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/127\.0\.0\.1:1: cannot reach .*ECONNREFUSED/);
  });
});

it('sha256 of random layers is what the descriptor says (sanity of the generator)', async () => {
  const img = await writeRandomImage(fresh('gen'), [1000, 0]);
  for (const l of img.layers)
    expect(
      `sha256:${createHash('sha256')
        .update(readFileSync(img.layout.blobPath(l.digest)))
        .digest('hex')}`,
    ).toBe(l.digest);
});
