/**
 * kbundle's registry client against the real thing: Debian's docker-registry (distribution 2.8.2)
 * in its three auth variants, with skopeo and umoci as independent witnesses.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeRandomImage } from '../bench/transfer.js';
import { buildTo, type BuildOutput } from '../src/builder/output.js';
import { digestOf } from '../src/oci/digest.js';
import { MediaType } from '../src/oci/mediatypes.js';
import type { Descriptor } from '../src/oci/types.js';
import { attachReferrer, listReferrers } from '../src/attach/referrers.js';
import { RegistryClient } from '../src/registry/client.js';
import { RegistryTarget } from '../src/registry/registry-target.js';
import { copyImage } from '../src/store/copy.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { fetchBytes } from '../src/oci/target.js';
import { kbundleInProcess as kbundle } from './helpers/cli.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';

const execFileP = promisify(execFile);
const work = mkdtempSync(join(tmpdir(), 'kbundle-regtest-'));
const emptyDockerConfig = mkdtempSync(join(tmpdir(), 'kbundle-dockercfg-'));
process.env.DOCKER_CONFIG = emptyDockerConfig;

let seq = 0;
const fresh = (name: string) => join(work, `${name}-${++seq}`);

async function sh(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { maxBuffer: 64 << 20 });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${err.stderr ?? err.message}`);
  }
}

async function skopeoInspect(reg: RegistryHandle, ref: string, raw = false): Promise<any> {
  const auth = reg.username ? ['--creds', `${reg.username}:${reg.password}`] : [];
  const tls = reg.certDir ? ['--cert-dir', reg.certDir] : ['--tls-verify=false'];
  const out = await sh('skopeo', ['inspect', ...(raw ? ['--raw'] : []), ...tls, ...auth, `docker://${reg.host}/${ref}`]);
  return JSON.parse(out);
}

function registryFlags(reg: RegistryHandle): string[] {
  return reg.caFile ? ['--ca-file', reg.caFile] : [];
}

function credsEnv(reg: RegistryHandle): Record<string, string | undefined> {
  return { KBUNDLE_REGISTRY_USERNAME: reg.username, KBUNDLE_REGISTRY_PASSWORD: reg.password };
}

let multi: BuildOutput;
let single: BuildOutput;
const multiDir = join(work, 'metallb-multi');
const singleDir = join(work, 'metallb-amd64');

beforeAll(async () => {
  multi = await buildTo('bundles/metallb', { transport: 'oci', path: multiDir, ref: 'multi' }, {});
  single = await buildTo('bundles/metallb', { transport: 'oci', path: singleDir, ref: 'amd64' }, { platforms: ['linux/amd64'] });
});

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
  rmSync(emptyDockerConfig, { recursive: true, force: true });
});

describe('open registry (plain HTTP on loopback, found automatically)', () => {
  let reg: RegistryHandle;
  beforeAll(async () => {
    reg = await startRegistry({ variant: 'open' });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  it('push prints the digest-pinned reference, and skopeo + umoci read the image back', async () => {
    const r = await kbundle(['push', `oci:${singleDir}:amd64`, `${reg.host}/kairos/metallb:0.14.9`]);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(`${reg.host}/kairos/metallb@${single.root.digest}`);

    const info = await skopeoInspect(reg, 'kairos/metallb:0.14.9');
    expect(info.Digest).toBe(single.root.digest);
    expect(info.Architecture).toBe('amd64');
    expect(info.Layers).toEqual([single.images[0]!.layer.digest]);

    const pulled = fresh('skopeo-pull');
    await sh('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${reg.host}/kairos/metallb:0.14.9`, `oci:${pulled}:x`]);
    const bundle = fresh('umoci-bundle');
    await sh('umoci', ['unpack', '--rootless', '--image', `${pulled}:x`, bundle]);
    const runSh = readFileSync(join(bundle, 'rootfs', 'run.sh'), 'utf8');
    expect(runSh).toMatch(/^#!/);
    expect(existsSync(join(bundle, 'rootfs', 'manifests', 'k3s', 'metallb-addresspool.yaml'))).toBe(true);
  });

  it('round-trips a multi-platform index byte for byte (push, pull, inspect --json)', async () => {
    const p = await kbundle(['push', `oci:${multiDir}:multi`, `docker://${reg.host}/kairos/metallb-multi:v1`, '--json']);
    expect(p.code).toBe(0);
    const pushed = JSON.parse(p.stdout);
    expect(pushed).toMatchObject({ digest: multi.root.digest, mediaType: MediaType.OciIndex, reference: `${reg.host}/kairos/metallb-multi@${multi.root.digest}` });

    const raw = await skopeoInspect(reg, 'kairos/metallb-multi:v1', true);
    expect(raw.manifests.map((m: Descriptor) => `${m.platform?.os}/${m.platform?.architecture}`).sort()).toEqual(['linux/amd64', 'linux/arm64']);

    const out = fresh('pull-multi');
    const q = await kbundle(['pull', `${reg.host}/kairos/metallb-multi:v1`, '-o', `oci:${out}`]);
    expect(q.stderr).toBe(q.stderr.replace(/error/g, ''));
    expect(q.code).toBe(0);
    const layout = await OciLayout.open(out);
    const root = await layout.resolve('v1');
    expect(root.digest).toBe(multi.root.digest);
    const src = await OciLayout.open(multiDir);
    for (const img of multi.images) {
      for (const d of [img.manifest, img.config, { mediaType: MediaType.OciLayerGzip, digest: img.layer.digest, size: img.layer.size }]) {
        expect((await fetchBytes(layout, d, 1 << 26)).equals(await fetchBytes(src, d, 1 << 26))).toBe(true);
      }
    }

    const i = await kbundle(['inspect', `${reg.host}/kairos/metallb-multi:v1`, '--json']);
    expect(i.code).toBe(0);
    const info = JSON.parse(i.stdout);
    expect(info.mediaType).toBe(MediaType.OciIndex);
    expect(info.digest).toBe(multi.root.digest);
    expect(info.platforms.sort()).toEqual(['linux/amd64', 'linux/arm64']);
    expect(info.manifests[0].layers[0].size).toBe(multi.images[0]!.layer.size);
    const human = await kbundle(['inspect', `oci:${out}:v1`]);
    expect(human.stdout).toContain('linux/arm64');
    expect(human.stdout).toContain(multi.root.digest);

    // --platform narrows the copy to one manifest, which becomes the tagged root.
    const one = fresh('pull-arm64');
    const a = await kbundle(['pull', `${reg.host}/kairos/metallb-multi:v1`, '-o', `oci:${one}:arm`, '--platform', 'linux/arm64', '--json']);
    expect(a.code).toBe(0);
    const arm = multi.images.find((x) => x.platform === 'linux/arm64')!;
    expect(JSON.parse(a.stdout).digest).toBe(arm.manifest.digest);
  });

  it('pulls what skopeo pushed as Docker schema2 (v2s2) and keeps it byte-identical', async () => {
    await sh('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', '--format', 'v2s2', `oci:${singleDir}:amd64`, `docker://${reg.host}/skopeo/v2s2:1`]);
    const raw = await skopeoInspect(reg, 'skopeo/v2s2:1', true);
    expect(raw.mediaType).toBe(MediaType.DockerManifest);
    const rawBytes = await sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/skopeo/v2s2:1`]);

    const out = fresh('pull-v2s2');
    const r = await kbundle(['pull', `${reg.host}/skopeo/v2s2:1`, '-o', `oci:${out}`, '--json']);
    expect(r.code).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res.mediaType).toBe(MediaType.DockerManifest);
    expect(res.digest).toBe(digestOf(rawBytes));
    const layout = await OciLayout.open(out);
    expect((await layout.resolve('1')).digest).toBe(res.digest);
    // The manifest keeps its Docker media type and digest (skopeo and umoci only list OCI-typed
    // entries of a layout, so they do not see it); kbundle reads it, and the layer is the original.
    const i = await kbundle(['inspect', `oci:${out}:1`, '--json']);
    expect(JSON.parse(i.stdout).manifests[0]).toMatchObject({ platform: 'linux/amd64', mediaType: MediaType.DockerManifest, layers: [{ digest: single.images[0]!.layer.digest }] });
    expect(readFileSync(layout.blobPath(single.images[0]!.layer.digest)).equals(readFileSync((await OciLayout.open(singleDir)).blobPath(single.images[0]!.layer.digest)))).toBe(true);
  });

  it('pushes oci-archive and docker-archive files, and pulls into a docker-archive skopeo can read', async () => {
    const ociTar = join(work, 'metallb-oci.tar');
    await buildTo('bundles/metallb', { transport: 'oci-archive', path: ociTar, ref: 'v1' }, {});
    const a = await kbundle(['push', `oci-archive:${ociTar}:v1`, `${reg.host}/arch/oci:v1`]);
    expect(a.code).toBe(0);
    expect(a.stdout.trim()).toBe(`${reg.host}/arch/oci@${multi.root.digest}`);

    const dockerTar = join(work, 'metallb-docker.tar');
    await buildTo('bundles/metallb', { transport: 'docker-archive', path: dockerTar, ref: '' }, { platforms: ['linux/amd64'] });
    const d = await kbundle(['push', `docker-archive:${dockerTar}`, `${reg.host}/arch/docker:v1`]);
    expect(d.stderr).toBe('' + d.stderr.replace(/error/g, ''));
    expect(d.code).toBe(0);
    const info = await skopeoInspect(reg, 'arch/docker:v1');
    expect(info.Architecture).toBe('amd64');
    // The layer went up uncompressed: its digest is the diff-id kbundle recorded.
    expect(info.Layers).toEqual([single.images[0]!.layer.diffId]);

    // A docker archive holds one platform: without --platform the multi-platform pull is refused up front.
    const outTar = join(work, 'pulled-docker.tar');
    const refused = await kbundle(['pull', `${reg.host}/arch/oci:v1`, '-o', `docker-archive:${outTar}`]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/one platform.*linux\/amd64, linux\/arm64/);
    expect(existsSync(outTar)).toBe(false);
    const ok = await kbundle(['pull', `${reg.host}/arch/oci:v1`, '-o', `docker-archive:${outTar}:kairos/metallb:0.14.9`, '--platform', 'linux/amd64']);
    expect(ok.code).toBe(0);
    const viaSkopeo = JSON.parse(await sh('skopeo', ['inspect', `docker-archive:${outTar}`]));
    expect(viaSkopeo.Architecture).toBe('amd64');
    const listing = await sh('tar', ['-xOf', outTar, 'manifest.json']);
    expect(JSON.parse(listing)[0].RepoTags).toEqual(['kairos/metallb:0.14.9']);
    expect((await readdir(work)).filter((n) => n.startsWith('.kbundle-copy-'))).toEqual([]);

    // skopeo's docker-archive (docker save format) is a source too, picked by name.
    const skopeoTar = join(work, 'skopeo-docker.tar');
    await sh('skopeo', ['copy', '--quiet', `oci:${singleDir}:amd64`, `docker-archive:${skopeoTar}:kairos/metallb:0.14.9`]);
    const s = await kbundle(['push', `docker-archive:${skopeoTar}:kairos/metallb:0.14.9`, `${reg.host}/arch/from-skopeo:1`]);
    expect(s.code).toBe(0);
    const fromSkopeo = await skopeoInspect(reg, 'arch/from-skopeo:1');
    expect(fromSkopeo.Architecture).toBe('amd64');
    expect(fromSkopeo.Layers).toEqual([single.images[0]!.layer.diffId]);
    const missing = await kbundle(['push', `docker-archive:${skopeoTar}:other:1`, `${reg.host}/arch/x:1`]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/no image named "other:1".*\n.*available: .*kairos\/metallb:0\.14\.9/);
  });

  it('mounts blobs across repositories instead of uploading them again', async () => {
    const client = new RegistryClient({});
    try {
      const src = new RegistryTarget(client, 'kairos/metallb', reg.host);
      const dst = new RegistryTarget(client, 'mirror/metallb', reg.host, { access: 'push' });
      const r = await copyImage(src, '0.14.9', dst, 'mirrored');
      expect(r.blobsMounted).toBe(2); // config + layer
      expect(r.blobsCopied).toBe(0);
      expect(r.bytesCopied).toBe(0);
      expect((await dst.resolve('mirrored')).digest).toBe(single.root.digest);
      // Explicit mountFrom with a layout source: the registry links what it already has.
      const dst2 = new RegistryTarget(client, 'mirror/two', reg.host, { access: 'push' });
      const r2 = await copyImage(await OciLayout.open(singleDir), 'amd64', dst2, 'x', { mountFrom: ['kairos/metallb'] });
      expect(r2.blobsMounted).toBe(2);
      // A second copy finds everything in place.
      const again = await copyImage(await OciLayout.open(singleDir), 'amd64', dst2, 'x');
      expect(again.blobsCopied + again.blobsMounted + again.manifestsCopied).toBe(0);
    } finally {
      await client.close();
    }
  });

  it('lists more than 100 tags (the registry ignores n/last), deletes by digest', async () => {
    const client = new RegistryClient({});
    try {
      const dst = new RegistryTarget(client, 'many/tags', reg.host, { access: 'push' });
      await copyImage(await OciLayout.open(singleDir), 'amd64', dst, 't-000');
      const names = Array.from({ length: 120 }, (_, i) => `t-${String(i).padStart(3, '0')}`);
      const desc = await dst.resolve('t-000');
      for (let i = 0; i < names.length; i += 12) await Promise.all(names.slice(i, i + 12).map((n) => dst.tag(desc, n)));
      expect(await dst.tags()).toEqual(names);
      expect(await dst.tags(50)).toEqual(names);

      await dst.delete(desc);
      await expect(dst.resolve('t-000')).rejects.toThrow(/manifest not found/);
    } finally {
      await client.close();
    }
  });

  it('finds referrers through the sha256-<hex> fallback index (registry 2.8 has no referrers API)', async () => {
    const client = new RegistryClient({});
    try {
      const repo = new RegistryTarget(client, 'kairos/metallb', reg.host, { access: 'push' });
      const subject = await repo.resolve('0.14.9');
      const empty = Buffer.from('{}');
      const emptyDesc: Descriptor = { mediaType: MediaType.OciEmpty, digest: digestOf(empty), size: 2 };
      await repo.push(emptyDesc, empty);
      const attach = async (artifactType: string, note: string): Promise<Descriptor> => {
        const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, artifactType, config: emptyDesc, layers: [emptyDesc], subject, annotations: { note } }));
        const desc: Descriptor = { mediaType: MediaType.OciManifest, digest: digestOf(bytes), size: bytes.length };
        await attachReferrer(repo, bytes, desc);
        return desc;
      };
      expect(await repo.referrers(subject)).toBeUndefined(); // no referrers API: the fallback tag is used
      expect(await listReferrers(repo, subject)).toEqual([]);
      const sig = await attach('application/vnd.dev.cosign.artifact.sig.v1+json', 'sig');
      const sbom = await attach('application/spdx+json', 'sbom');
      await attach('application/spdx+json', 'sbom'); // same bytes again: no duplicate entry
      const all = await listReferrers(repo, subject);
      // One entry per digest, sorted by digest.
      expect(all.map((d) => d.digest)).toEqual([sig.digest, sbom.digest].sort());
      expect(all.find((d) => d.digest === sbom.digest)).toMatchObject({ artifactType: 'application/spdx+json', annotations: { note: 'sbom' } });
      expect((await listReferrers(repo, subject, 'application/spdx+json')).map((d) => d.digest)).toEqual([sbom.digest]);
      expect(await repo.tags()).toContain(`sha256-${subject.digest.slice(7)}`);
    } finally {
      await client.close();
    }
  });

  it('streams layers larger than a chunk with PATCH and reads them back intact', async () => {
    const dir = fresh('random');
    const img = await writeRandomImage(dir, [5 * 1048576 + 17, 3000], 'r');
    const client = new RegistryClient({});
    try {
      const dst = new RegistryTarget(client, 'random/chunked', reg.host, { access: 'push', upload: { chunkSize: 1 << 20, monolithicMax: 1 << 20 } });
      const r = await copyImage(img.layout, 'r', dst, 'r');
      expect(r.blobsCopied).toBe(3);
      const back = await OciLayout.open(fresh('random-back'), { create: true });
      await copyImage(new RegistryTarget(client, 'random/chunked', reg.host), 'r', back, 'r');
      for (const l of img.layers) expect(readFileSync(back.blobPath(l.digest)).equals(readFileSync(img.layout.blobPath(l.digest)))).toBe(true);
    } finally {
      await client.close();
    }
  });
});

describe('htpasswd registry (TLS with a private CA, Basic auth)', () => {
  let reg: RegistryHandle;
  beforeAll(async () => {
    reg = await startRegistry({ variant: 'htpasswd' });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  it('pushes over verified TLS with --ca-file and a password from stdin; skopeo agrees', async () => {
    const r = await kbundle(['push', `oci:${multiDir}:multi`, `${reg.host}/basic/metallb:1`, ...registryFlags(reg), '--username', reg.username!, '--password-stdin'], { stdin: `${reg.password}\n` });
    expect(r.stderr).toBe(r.stderr.replace(/error/g, ''));
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(`${reg.host}/basic/metallb@${multi.root.digest}`);
    expect(r.stdout + r.stderr).not.toContain(reg.password!);
    const raw = await skopeoInspect(reg, 'basic/metallb:1', true);
    expect(raw.manifests).toHaveLength(2);

    const out = fresh('basic-pull');
    const p = await kbundle(['pull', `${reg.host}/basic/metallb:1`, '-o', `oci:${out}`, ...registryFlags(reg)], { env: credsEnv(reg) });
    expect(p.code).toBe(0);
    expect((await (await OciLayout.open(out)).resolve('1')).digest).toBe(multi.root.digest);
  });

  it('reads the CA from SSL_CERT_FILE too, and says how to fix an untrusted certificate', async () => {
    const ok = await kbundle(['inspect', `${reg.host}/basic/metallb:1`, '--json'], { env: { ...credsEnv(reg), SSL_CERT_FILE: reg.caFile } });
    expect(ok.code).toBe(0);
    const bad = await kbundle(['inspect', `${reg.host}/basic/metallb:1`], { env: credsEnv(reg) });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain(`${reg.host}: the TLS certificate`);
    expect(bad.stderr).toMatch(/--ca-file/);
    const insecure = await kbundle(['inspect', `${reg.host}/basic/metallb:1`, '--insecure-registry', reg.host], { env: credsEnv(reg) });
    expect(insecure.code).toBe(0);
  });

  it('wrong or missing credentials: a clear error naming the registry, exit code ≠ 0, no secret printed', async () => {
    const wrong = await kbundle(['push', `oci:${singleDir}:amd64`, `${reg.host}/basic/nope:1`, ...registryFlags(reg)], {
      env: { KBUNDLE_REGISTRY_USERNAME: reg.username, KBUNDLE_REGISTRY_PASSWORD: 'not-the-password' },
    });
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toContain(reg.host);
    expect(wrong.stderr).toMatch(/rejected the credentials of user "kbundle"/);
    expect(wrong.stderr).not.toContain('not-the-password');
    expect(wrong.stderr).not.toMatch(/\n\s+at /); // no stack trace

    const none = await kbundle(['pull', `${reg.host}/basic/metallb:1`, '-o', `oci:${fresh('nocreds')}`, ...registryFlags(reg)]);
    expect(none.code).not.toBe(0);
    expect(none.stderr).toContain(`${reg.host}:`);
    expect(none.stderr).toMatch(/authentication required/);
    expect(none.stderr).toMatch(/hint: .*--username/);
  });

  it('takes credentials from the docker config (auths, base64)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kbundle-dcfg-'));
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from(`${reg.username}:${reg.password}`).toString('base64') } } }));
    const r = await kbundle(['inspect', `${reg.host}/basic/metallb:1`, ...registryFlags(reg), '--json'], { env: { DOCKER_CONFIG: dir } });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).digest).toBe(multi.root.digest);
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('token registry (Bearer tokens from a realm)', () => {
  let reg: RegistryHandle;
  beforeAll(async () => {
    reg = await startRegistry({ variant: 'token', anonymousPull: true, tokenTtlSeconds: 2 });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  it('pushes with one pull,push token per scope, then pulls anonymously', async () => {
    reg.tokenServer!.clearRequests();
    const r = await kbundle(['push', `oci:${multiDir}:multi`, `${reg.host}/tok/metallb:1`], { env: credsEnv(reg) });
    expect(r.stderr).toBe(r.stderr.replace(/error/g, ''));
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(`${reg.host}/tok/metallb@${multi.root.digest}`);
    const reqs = reg.tokenServer!.requests;
    expect(reqs.length).toBeGreaterThan(0);
    expect(reqs.length).toBeLessThanOrEqual(2); // cached, not one per request
    expect(reqs.every((q) => q.authenticated && q.user === reg.username)).toBe(true);
    expect(reqs[0]!.scopes).toContain('repository:tok/metallb:pull,push');

    reg.tokenServer!.clearRequests();
    const out = fresh('tok-anon');
    const p = await kbundle(['pull', `${reg.host}/tok/metallb:1`, '-o', `oci:${out}`]);
    expect(p.code).toBe(0);
    expect(reg.tokenServer!.requests.every((q) => q.grant === 'anonymous')).toBe(true);
    expect((await (await OciLayout.open(out)).resolve('1')).digest).toBe(multi.root.digest);
    // skopeo sees what we pushed.
    const info = JSON.parse(await sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/tok/metallb:1`]));
    expect(info.manifests).toHaveLength(2);
  });

  it('fetches a new token when the cached one expires', async () => {
    const client = new RegistryClient({ username: reg.username, password: reg.password });
    try {
      const t = new RegistryTarget(client, 'tok/metallb', reg.host);
      reg.tokenServer!.clearRequests();
      await t.resolve('1');
      await new Promise((r) => setTimeout(r, 2100));
      await t.resolve('1');
      expect(reg.tokenServer!.requests.length).toBe(2);
    } finally {
      await client.close();
    }
  });

  it('refreshes a token the registry rejects (401) once, and carries on', async () => {
    const client = new RegistryClient({ username: reg.username, password: reg.password });
    try {
      const t = new RegistryTarget(client, 'tok/metallb', reg.host);
      await t.resolve('1');
      // Swap the cached token for one the registry will refuse (no access), still "valid" for the client.
      const useless = reg.tokenServer!.issue({ sub: reg.username, access: [] });
      const cache = (client.session(reg.host) as unknown as { tokens: Map<string, { token: string; expiresAt: number }> }).tokens;
      for (const k of cache.keys()) cache.set(k, { token: useless, expiresAt: Date.now() + 3_600_000 });
      reg.tokenServer!.clearRequests();
      expect((await t.resolve('1')).digest).toBe(multi.root.digest);
      expect(reg.tokenServer!.requests).toHaveLength(1);
    } finally {
      await client.close();
    }
  });

  it('anonymous push and wrong passwords fail clearly', async () => {
    const anon = await kbundle(['push', `oci:${singleDir}:amd64`, `${reg.host}/tok/anon:1`]);
    expect(anon.code).not.toBe(0);
    expect(anon.stderr).toContain(reg.host);
    expect(anon.stderr).toMatch(/authentication required/);

    const wrong = await kbundle(['push', `oci:${singleDir}:amd64`, `${reg.host}/tok/anon:1`], { env: { KBUNDLE_REGISTRY_USERNAME: reg.username, KBUNDLE_REGISTRY_PASSWORD: 'bad-pass-123' } });
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toContain(`${reg.host}: the token server`);
    expect(wrong.stderr).toMatch(/rejected user "kbundle"/);
    expect(wrong.stderr).not.toContain('bad-pass-123');
  });

  it('copies registry to registry across auth schemes (token → open)', async () => {
    const open = await startRegistry({ variant: 'open' });
    try {
      const r = await kbundle(['copy', `docker://${reg.host}/tok/metallb:1`, `${open.host}/copied/metallb:1`]);
      expect(r.code).toBe(0);
      expect(r.stdout.trim()).toBe(`${open.host}/copied/metallb@${multi.root.digest}`);
      expect((await skopeoInspect(open, 'copied/metallb:1', true)).manifests).toHaveLength(2);
    } finally {
      await open.stop();
    }
  });
});
