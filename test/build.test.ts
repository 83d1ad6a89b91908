import { chmodSync, existsSync, lstatSync, readFileSync, readlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { extractPinnedMember } from '../src/builder/download.js';
import { buildTo } from '../src/builder/output.js';
import { UserError } from '../src/errors.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { fetchBytes } from '../src/oci/target.js';
import { kbundle } from './helpers/cli.js';
import { cleanupTempDirs, mustRun, tempDir } from './helpers/exec.js';
import { craftTar } from './helpers/craft-image.js';
import { CONTAINER_FILES, CONTAINER_SPEC, writeBundle } from './helpers/fixture-bundle.js';

afterAll(cleanupTempDirs);

async function buildDigest(bundleDir: string, epoch = 0): Promise<{ digest: string; out: string }> {
  const out = join(tempDir(), 'oci');
  const r = await buildTo(bundleDir, { transport: 'oci', path: out, ref: 't' }, { sourceDateEpoch: epoch });
  return { digest: r.root.digest, out };
}

describe('reproducible builds', () => {
  it('gives the same digest for the same inputs built in different folders, creation orders, mtimes and umasks', async () => {
    const a = writeBundle(join(tempDir(), 'a'), CONTAINER_SPEC, CONTAINER_FILES);
    const b = writeBundle(join(tempDir(), 'b'), CONTAINER_SPEC, [...CONTAINER_FILES].reverse());
    // Another checkout: other mtimes, group-writable files, still the same exec bits.
    for (const f of CONTAINER_FILES) {
      const p = join(b, f.path);
      if (f.symlink) continue;
      utimesSync(p, new Date(2001, 1, 1), new Date(2001, 1, 1));
      chmodSync(p, lstatSync(p).mode & 0o111 ? 0o775 : 0o664);
    }
    const ra = await buildDigest(a);
    const rb = await buildDigest(b);
    expect(rb.digest).toBe(ra.digest);
    // Every blob is identical, not just the top digest.
    const blobs = (dir: string) =>
      mustRun('ls', [join(dir, 'blobs', 'sha256')])
        .split('\n')
        .sort();
    expect(blobs(rb.out)).toEqual(blobs(ra.out));
  });

  it('changes the digest when one byte of input changes, and when SOURCE_DATE_EPOCH changes', async () => {
    const a = writeBundle(join(tempDir(), 'a'), CONTAINER_SPEC, CONTAINER_FILES);
    const base = await buildDigest(a);
    writeFileSync(join(a, 'tree/sub/b.yaml'), 'b: 2\n');
    const changed = await buildDigest(a);
    expect(changed.digest).not.toBe(base.digest);
    const later = await buildDigest(a, 1_700_000_000);
    expect(later.digest).not.toBe(changed.digest);
  });

  it('writes a layer with sorted entries, root ownership, fixed mtimes and a gzip header without name or time', async () => {
    const a = writeBundle(join(tempDir(), 'a'), CONTAINER_SPEC, CONTAINER_FILES);
    const out = join(tempDir(), 'oci');
    const r = await buildTo(a, { transport: 'oci', path: out, ref: '' }, { sourceDateEpoch: 1_700_000_000, platforms: ['linux/amd64'] });
    const layer = r.images[0]!.layer;
    const blob = join(out, 'blobs', 'sha256', layer.digest.slice(7));
    const head = readFileSync(blob).subarray(0, 10);
    expect([...head.subarray(0, 4)]).toEqual([0x1f, 0x8b, 8, 0]); // gzip, deflate, no FNAME/FCOMMENT flags
    expect(head.readUInt32LE(4)).toBe(0); // MTIME field
    const listing = mustRun('tar', ['--numeric-owner', '-tvzf', blob]).trim().split('\n');
    const names = listing.map((l) => l.split(/\s+/).slice(5).join(' '));
    expect(names).toEqual([
      'usr/',
      'usr/local/',
      'usr/local/bin/',
      'usr/local/bin/tool',
      'usr/local/share/',
      'usr/local/share/arch.txt',
      'usr/local/share/demo/',
      'usr/local/share/demo/a.txt',
      'usr/local/share/demo/exec.sh',
      'usr/local/share/demo/link -> a.txt',
      'usr/local/share/demo/sub/',
      'usr/local/share/demo/sub/b.yaml',
      'usr/local/share/demo/sub/deeper/',
      'usr/local/share/demo/sub/deeper/c.bin',
    ]);
    for (const l of listing) {
      expect(l).toMatch(/ 0\/0 /);
      expect(l).toContain('2023-11-14');
    }
    // The config's diff_id is the digest of the uncompressed tar.
    const diff = mustRun('sh', ['-c', `gzip -dc '${blob}' | sha256sum`]).split(' ')[0];
    expect(`sha256:${diff}`).toBe(layer.diffId);
  });
});

describe('image content', () => {
  it('writes an index for several platforms, a manifest and config per platform with labels and annotations', async () => {
    const a = writeBundle(join(tempDir(), 'a'), CONTAINER_SPEC, CONTAINER_FILES);
    const out = join(tempDir(), 'oci');
    const r = await buildTo(a, { transport: 'oci', path: out, ref: '' }, { sourceDateEpoch: 86400, revision: 'abc123' });
    expect(r.tag).toBe('demo-tools_1.2.3');
    const layout = await OciLayout.open(out);
    const top = await layout.resolve('demo-tools_1.2.3');
    expect(top.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    const index = JSON.parse((await fetchBytes(layout, top)).toString());
    expect(index.manifests.map((m: { platform: { architecture: string } }) => m.platform.architecture)).toEqual(['amd64', 'arm64']);
    const m = JSON.parse((await fetchBytes(layout, index.manifests[1])).toString());
    expect(m.annotations).toMatchObject({
      'org.opencontainers.image.created': '1970-01-02T00:00:00Z',
      'org.opencontainers.image.title': 'demo-tools',
      'org.opencontainers.image.version': '1.2.3',
      'org.opencontainers.image.revision': 'abc123',
      'io.kairos.bundle.type': 'container',
    });
    const config = JSON.parse((await fetchBytes(layout, m.config)).toString());
    expect(config).toMatchObject({ architecture: 'arm64', os: 'linux', rootfs: { type: 'layers' } });
    expect(config.config.Labels['org.opencontainers.image.version']).toBe('1.2.3');
    // amd64 and arm64 differ only by their per-platform file
    expect(r.images[0]!.layer.digest).not.toBe(r.images[1]!.layer.digest);
  });
});

describe('bundle.yaml validation', () => {
  const base = (extra: string) => `name: demo\nversion: 1.0.0\ndescription: d\n${extra}`;
  const cases: { name: string; spec: string; files?: { path: string; content?: string }[]; error: RegExp }[] = [
    { name: 'run bundle without run.sh or manifests', spec: base('type: run\n'), error: /bundle\.yaml: run: a run bundle needs a run\.sh/ },
    { name: 'run.sh named but missing', spec: base('type: run\nrun: run.sh\n'), error: /bundle\.yaml: run: file not found: run\.sh/ },
    { name: 'source file missing', spec: base('type: container\nfiles:\n  - src: nope.txt\n    dst: a.txt\n'), error: /bundle\.yaml: files\.0\.src: file not found: nope\.txt/ },
    { name: 'absolute destination', spec: base('type: container\nfiles:\n  - src: f\n    dst: /etc/x\n'), files: [{ path: 'f' }], error: /files\.0\.dst: "\/etc\/x" is absolute/ },
    { name: '.. in destination', spec: base('type: container\nfiles:\n  - src: f\n    dst: a/../../x\n'), files: [{ path: 'f' }], error: /files\.0\.dst: "a\/\.\.\/\.\.\/x" contains "\.\."/ },
    { name: 'source outside the bundle', spec: base('type: container\nfiles:\n  - src: ../outside\n    dst: x\n'), error: /files\.0\.src: "\.\.\/outside" leaves the bundle folder/ },
    {
      name: 'unknown platform',
      spec: base('type: container\nplatforms: [linux/mips]\nfiles:\n  - src: f\n    dst: x\n'),
      files: [{ path: 'f' }],
      error: /platforms\.0: unknown platform "linux\/mips"/,
    },
    {
      name: 'duplicate destination',
      spec: base('type: container\nfiles:\n  - src: f\n    dst: x\n  - src: g\n    dst: ./x\n'),
      files: [{ path: 'f' }, { path: 'g' }],
      error: /files\.1: destination "x" is also written by files\.0/,
    },
    { name: 'bad name', spec: 'name: Demo_X\nversion: 1.0.0\ndescription: d\n', error: /bundle\.yaml: name: must be lowercase/ },
    { name: 'bad version', spec: 'name: demo\nversion: "../1"\ndescription: d\n', error: /bundle\.yaml: version: must start with a letter or digit/ },
    { name: 'missing description', spec: 'name: demo\nversion: "1"\n', error: /bundle\.yaml: description: is required/ },
    { name: 'unknown field', spec: base('type: container\nfilez: []\n'), error: /bundle\.yaml: \(top level\): unknown field\(s\) "filez"/ },
    {
      name: 'a sysext file outside usr/ and opt/',
      spec: base('type: sysext\nfiles:\n  - src: f\n    dst: etc/x\n'),
      files: [{ path: 'f' }],
      error: /files\.0\.dst: "etc\/x" is outside usr\/ and opt\//,
    },
    {
      name: 'undeclared placeholder',
      spec: base('manifests:\n  - src: m.yaml\n'),
      files: [{ path: 'm.yaml', content: 'v: {{ version }}\n' }],
      error: /manifests\.0\.src \(m\.yaml\): uses \{\{ version \}\} but config\.values has no "version"/,
    },
    {
      name: 'platform_files for an unlisted platform',
      spec: base('type: container\nplatforms: [linux/amd64]\nplatform_files:\n  linux/arm64: []\n'),
      error: /platform_files\.linux\/arm64: "linux\/arm64" is not in platforms/,
    },
    { name: 'url without sha256', spec: base('type: container\nfiles:\n  - url: http://127.0.0.1:1/x\n    dst: x\n'), error: /files\.0\.sha256: a url download needs its sha256 pinned/ },
    {
      name: 'file where a directory is needed',
      spec: base('type: container\nfiles:\n  - src: f\n    dst: a\n  - src: g\n    dst: a/b\n'),
      files: [{ path: 'f' }, { path: 'g' }],
      error: /"a\/b" needs "a" to be a directory, but files\.0 writes a file there/,
    },
    { name: 'invalid YAML', spec: 'name: [unclosed\n', error: /bundle\.yaml: invalid YAML/ },
    {
      name: 'default value that fails its own pattern',
      spec: base('config:\n  values: {version: abc}\n  patterns: {version: "^[0-9]+$"}\nmanifests:\n  - src: m.yaml\n'),
      files: [{ path: 'm.yaml' }],
      error: /config\.values\.version: default "abc" does not match its own pattern/,
    },
  ];
  for (const c of cases) {
    it(`refuses ${c.name} with file, field and reason, writing nothing`, async () => {
      const dir = writeBundle(
        join(tempDir(), 'b'),
        c.spec,
        (c.files ?? []).map((f) => ({ path: f.path, content: f.content ?? 'x' })),
      );
      const out = join(tempDir(), 'out');
      const err = await buildTo(dir, { transport: 'oci', path: out, ref: '' }).catch((e) => e);
      expect(err).toBeInstanceOf(UserError);
      expect((err as Error).message).toMatch(c.error);
      expect(existsSync(out)).toBe(false);
    });
  }
});

describe('interop with real peers', () => {
  it('umoci unpacks the image and the files match the bundle sources', async () => {
    const src = writeBundle(join(tempDir(), 'a'), CONTAINER_SPEC, CONTAINER_FILES);
    const out = join(tempDir(), 'oci');
    await buildTo(src, { transport: 'oci', path: out, ref: 'v1' }, { platforms: ['linux/arm64'] });
    const bundle = join(tempDir(), 'unpacked');
    mustRun('umoci', ['unpack', '--rootless', '--image', `${out}:v1`, bundle]);
    const root = join(bundle, 'rootfs', 'usr/local');
    expect(readFileSync(join(root, 'share/demo/sub/deeper/c.bin'), 'utf8')).toBe('x'.repeat(70_000));
    expect(readFileSync(join(root, 'share/arch.txt'), 'utf8')).toBe('arm64\n');
    expect(lstatSync(join(root, 'bin/tool')).mode & 0o777).toBe(0o755);
    expect(lstatSync(join(root, 'share/demo/exec.sh')).mode & 0o777).toBe(0o755);
    expect(lstatSync(join(root, 'share/demo/a.txt')).mode & 0o777).toBe(0o644);
    expect(readlinkSync(join(root, 'share/demo/link'))).toBe('a.txt');
  });

  it('skopeo inspects the layout and round-trips it oci → oci with identical digests', async () => {
    const src = writeBundle(join(tempDir(), 'a'), CONTAINER_SPEC, CONTAINER_FILES);
    const out = join(tempDir(), 'oci');
    const r = await buildTo(src, { transport: 'oci', path: out, ref: 'v1' });
    const info = JSON.parse(mustRun('skopeo', ['inspect', `oci:${out}:v1`]));
    expect(info.Labels['org.opencontainers.image.title']).toBe('demo-tools');
    expect(info.Layers).toContain(r.images.find((i) => i.platform === 'linux/amd64')!.layer.digest);
    const copy = join(tempDir(), 'copy');
    mustRun('skopeo', ['copy', '--all', `oci:${out}:v1`, `oci:${copy}:v1`]);
    const raw = mustRun('skopeo', ['inspect', '--raw', `oci:${copy}:v1`]);
    const layout = await OciLayout.open(copy);
    expect((await layout.resolve('v1')).digest).toBe(r.root.digest);
    expect(JSON.parse(raw).manifests).toHaveLength(2);
  });

  it('writes oci-archive and docker-archive files that skopeo reads', async () => {
    const src = writeBundle(join(tempDir(), 'a'), CONTAINER_SPEC, CONTAINER_FILES);
    const dir = tempDir();
    const ociTar = join(dir, 'img.oci.tar');
    const r = await buildTo(src, { transport: 'oci-archive', path: ociTar, ref: '' });
    const ociInfo = JSON.parse(mustRun('skopeo', ['inspect', '--raw', `oci-archive:${ociTar}:${r.tag}`]));
    expect(ociInfo.manifests).toHaveLength(2);

    const dockerTar = join(dir, 'img.docker.tar');
    const d = await buildTo(src, { transport: 'docker-archive', path: dockerTar, ref: '' }, { platforms: ['linux/amd64'] });
    expect(d.tag).toBe('demo-tools:1.2.3');
    const info = JSON.parse(mustRun('skopeo', ['inspect', `docker-archive:${dockerTar}`]));
    expect(info.Architecture).toBe('amd64');
    expect(info.Labels['org.opencontainers.image.version']).toBe('1.2.3');
    // Loaded back, the layer is the same tar (same diff_id), and umoci can unpack it.
    const back = join(dir, 'back');
    mustRun('skopeo', ['copy', `docker-archive:${dockerTar}`, `oci:${back}:x`]);
    const bundle = join(dir, 'unpacked');
    mustRun('umoci', ['unpack', '--rootless', '--image', `${back}:x`, bundle]);
    expect(readFileSync(join(bundle, 'rootfs/usr/local/share/arch.txt'), 'utf8')).toBe('amd64\n');
    expect(mustRun('tar', ['-tf', dockerTar]).split('\n')).toContain('manifest.json');
  });
});

describe('kbundle build CLI', () => {
  it('builds the catalog metallb bundle and prints a JSON summary', () => {
    const out = join(tempDir(), 'oci');
    const r = kbundle(['build', 'bundles/metallb', '-o', `oci:${out}`, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout);
    expect(summary).toMatchObject({ name: 'metallb', type: 'run', tag: `metallb_${summary.version}` });
    expect(summary.digest).toMatch(/^sha256:[a-f0-9]{64}$/);
    expect(JSON.parse(mustRun('skopeo', ['inspect', '--raw', `oci:${out}:${summary.tag}`])).manifests).toHaveLength(2);
  });

  it('--compression zstd: tar+zstd layers, reproducible, read back by zstd, skopeo and kbundle install', () => {
    const build = () => {
      const out = join(tempDir(), 'oci');
      const r = kbundle(['build', 'bundles/metallb', '-o', `oci:${out}`, '--compression', 'zstd', '--json']);
      expect(r.code, r.stderr).toBe(0);
      return { out, summary: JSON.parse(r.stdout) as { tag: string; digest: string; platforms: { digest: string; layer: string; diffId: string }[] } };
    };
    const a = build();
    const b = build();
    expect(b.summary.digest).toBe(a.summary.digest); // same input, same zstd: same bytes
    const gz = JSON.parse(kbundle(['build', 'bundles/metallb', '-o', `oci:${join(tempDir(), 'oci')}`, '--json']).stdout) as { platforms: { diffId: string; layer: string }[] };
    for (const [i, p] of a.summary.platforms.entries()) {
      expect(p.diffId).toBe(gz.platforms[i]!.diffId); // the same tar inside, compressed differently
      expect(p.layer).not.toBe(gz.platforms[i]!.layer);
      const manifest = JSON.parse(readFileSync(join(a.out, 'blobs/sha256', p.digest.slice(7)), 'utf8')) as { layers: { mediaType: string; digest: string }[] };
      expect(manifest.layers.map((l) => l.mediaType)).toEqual(['application/vnd.oci.image.layer.v1.tar+zstd']);
      const blob = join(a.out, 'blobs/sha256', p.layer.slice(7));
      expect(readFileSync(blob).subarray(0, 4).toString('hex')).toBe('28b52ffd'); // zstd frame magic
      expect(`sha256:${mustRun('sh', ['-c', `zstd -dc '${blob}' | sha256sum`]).split(' ')[0]}`).toBe(p.diffId);
    }
    // skopeo resolves the index to this platform's image, its config and its (zstd) layer.
    const inspected = JSON.parse(mustRun('skopeo', ['inspect', '--override-arch', 'amd64', `oci:${a.out}:${a.summary.tag}`])) as { Architecture: string; Layers: string[] };
    expect(inspected).toMatchObject({ Architecture: 'amd64', Layers: [a.summary.platforms[0]!.layer] });
    const root = tempDir();
    // Extracting the zstd layer (container:// puts the image's files under the root).
    const inst = kbundle(['install', `container://${a.out}`, '--local-file', '--root', root, '--platform', 'linux/amd64', '--json']);
    expect(inst.code, inst.stderr).toBe(0);
    expect(existsSync(join(root, 'run.sh'))).toBe(true);
    const bad = kbundle(['build', 'bundles/metallb', '-o', `oci:${join(tempDir(), 'oci')}`, '--compression', 'xz']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--compression: "xz" must be gzip or zstd/);
  });

  it('reports a bad bundle with a clear message, no stack trace, and exit code 1', () => {
    const dir = writeBundle(join(tempDir(), 'b'), 'name: demo\nversion: 1.0.0\ndescription: d\ntype: container\nfiles:\n  - src: missing\n    dst: x\n', []);
    const out = join(tempDir(), 'oci');
    const r = kbundle(['build', dir, '-o', `oci:${out}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^kbundle: error: .*bundle\.yaml: files\.0\.src: file not found: missing/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(existsSync(out)).toBe(false);
  });

  it('refuses an unknown output transport and a multi-platform docker archive', () => {
    expect(kbundle(['build', 'bundles/metallb', '-o', 'tarball:x.tar']).stderr).toMatch(/has no known transport/);
    const out = join(tempDir(), 'x.tar');
    const r = kbundle(['build', 'bundles/metallb', '-o', `docker-archive:${out}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/a docker archive holds one platform.*\n {2}hint: pick one with --platform/);
    expect(existsSync(out)).toBe(false);
  });

  it('exits 2 on a usage error', () => {
    expect(kbundle(['build']).code).toBe(2);
    expect(kbundle(['frobnicate']).code).toBe(2);
  });
});

describe('url downloads with extract: (one member of a pinned archive)', () => {
  it('takes a regular file out of a plain tar too, and refuses a symlink member, naming its target', async () => {
    const cache = tempDir();
    const prev = process.env.KBUNDLE_CACHE_DIR;
    process.env.KBUNDLE_CACHE_DIR = cache;
    try {
      const tar = await craftTar([
        { name: './tool-1.0', type: 'file', mode: 0o755, content: 'the tool\n' },
        { name: './tool', type: 'symlink', linkname: 'tool-1.0' },
      ]);
      const archive = join(tempDir(), 'a.tar');
      writeFileSync(archive, tar);
      const digest = createHash('sha256').update(tar).digest('hex');
      const got = await extractPinnedMember(archive, digest, 'tool-1.0', 'bundle.yaml: files.0');
      expect(readFileSync(got, 'utf8')).toBe('the tool\n');
      expect(got.startsWith(cache)).toBe(true);
      const err = await extractPinnedMember(archive, digest, 'tool', 'bundle.yaml: files.0').catch((e: UserError) => e);
      expect(err).toBeInstanceOf(UserError);
      expect((err as UserError).message).toBe('bundle.yaml: files.0: extract: "tool" is a symlink to tool-1.0 in the archive, not a regular file');
      expect((err as UserError).hint).toBe('name the file it points to: extract: tool-1.0');
      // extract: without url: is a spec error naming the field.
      const dir = writeBundle(join(tempDir(), 'b'), 'name: b\nversion: 1.0.0\ndescription: b\ntype: container\nfiles:\n  - src: f\n    dst: usr/local/bin/f\n    extract: f\n', [
        { path: 'f', content: 'x' },
      ]);
      const v = kbundle(['validate', dir]);
      expect(v.code).not.toBe(0);
      expect(v.stderr).toMatch(/files\.0\.extract: extract names a member of a url download/);
    } finally {
      if (prev === undefined) delete process.env.KBUNDLE_CACHE_DIR;
      else process.env.KBUNDLE_CACHE_DIR = prev;
    }
  });
});
