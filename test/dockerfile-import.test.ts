/**
 * Community-bundles folders as they are: `kbundle build <folder>` makes the image `docker build`
 * would (one layer per COPY, in order; the same files, folders, symlinks and modes), without
 * Docker and reproducibly; `kbundle import <folder>` writes a bundle.yaml giving the same tree.
 * What needs a container runtime or the network at build time is refused, naming the line and
 * the bundle.yaml way. Real upstream folders in test/fixtures/community-bundles (Apache-2.0),
 * plus folders written here for the edge cases.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { kbundle } from './helpers/cli.js';
import { cleanupTempDirs, mustRun, tempDir } from './helpers/exec.js';
import { snapshotTree } from './helpers/tree.js';

const FIXTURES = resolve(fileURLToPath(import.meta.url), '../fixtures/community-bundles');
afterAll(() => cleanupTempDirs());

/** A fresh copy of a fixture folder (import writes into it). */
function fixture(name: string): string {
  const d = join(tempDir('kbundle-cb-'), name);
  cpSync(join(FIXTURES, name), d, { recursive: true });
  return d;
}

/** A folder written from a map of files (mode via "path#0755"), for edge cases. */
function folder(files: Record<string, string>, name = 'bundle'): string {
  const d = join(tempDir('kbundle-df-'), name);
  for (const [k, content] of Object.entries(files)) {
    const [p, mode] = k.split('#') as [string, string | undefined];
    mkdirSync(join(d, p, '..'), { recursive: true });
    writeFileSync(join(d, p), content);
    chmodSync(join(d, p), mode ? parseInt(mode, 8) : 0o644);
  }
  return d;
}

interface Layout {
  dir: string;
  index: { manifests: { digest: string; mediaType: string; platform?: { architecture: string }; annotations?: Record<string, string> }[] };
  blob(digest: string): Buffer;
  json(digest: string): any;
}
function layout(dir: string): Layout {
  const blob = (d: string) => readFileSync(join(dir, 'blobs', ...d.split(':')));
  return { dir, index: JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')), blob, json: (d) => JSON.parse(blob(d).toString()) };
}

/** `tar -tvz` of a layer blob: "mode owner path" lines, in archive order. */
function layerListing(l: Layout, digest: string): string[] {
  const r = spawnSync('tar', ['-tvzf', '-'], { input: l.blob(digest), encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout
    .trim()
    .split('\n')
    .map((line) => {
      const f = line.split(/\s+/);
      return `${f[0]} ${f[1]} ${f.slice(5).join(' ')}`;
    });
}

function build(dir: string, ...extra: string[]) {
  const out = join(tempDir('kbundle-df-out-'), 'oci');
  const r = kbundle(['build', dir, '-o', `oci:${out}:t`, '--json', ...extra]);
  return { ...r, out };
}

/** Unpack the image for one platform with umoci (a real peer) and snapshot its root tree. */
function unpack(out: string, platform = 'amd64'): Record<string, string> {
  const l = layout(out);
  const idx = l.json(l.index.manifests[0]!.digest);
  const m = idx.manifests.find((x: any) => x.platform.architecture === platform);
  // umoci unpacks a tag: tag the platform manifest in a copy of the layout.
  const copy = join(tempDir('kbundle-df-umoci-'), 'oci');
  cpSync(out, copy, { recursive: true });
  const ix = JSON.parse(readFileSync(join(copy, 'index.json'), 'utf8'));
  ix.manifests = [{ ...m, annotations: { 'org.opencontainers.image.ref.name': 'p' } }];
  writeFileSync(join(copy, 'index.json'), JSON.stringify(ix));
  const bundle = join(tempDir('kbundle-df-bundle-'), 'b');
  mustRun('umoci', ['unpack', '--rootless', '--image', `${copy}:p`, bundle]);
  return snapshotTree(join(bundle, 'rootfs'), { content: true });
}

describe('kbundle build <community-bundles folder>', () => {
  it('kairos (upstream): two layers in COPY order, run.sh then assets/, modes kept, owner 0:0, BuildKit history', () => {
    const r = build(fixture('kairos'));
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout);
    expect(summary.layers.map((x: any) => x.createdBy)).toEqual(['COPY ./run.sh / # buildkit', 'COPY ./assets /assets # buildkit']);
    const l = layout(r.out);
    const idx = l.json(l.index.manifests[0]!.digest);
    expect(idx.manifests.map((m: any) => `${m.platform.os}/${m.platform.architecture}`)).toEqual(['linux/amd64', 'linux/arm64']);
    for (const m of idx.manifests) {
      const manifest = l.json(m.digest);
      const config = l.json(manifest.config.digest);
      expect(config.architecture).toBe(m.platform.architecture);
      expect(config.rootfs.diff_ids).toEqual(summary.layers.map((x: any) => x.diffId));
      expect(config.history.map((h: any) => h.created_by)).toEqual(['COPY ./run.sh / # buildkit', 'COPY ./assets /assets # buildkit']);
      expect(manifest.layers.map((x: any) => x.digest)).toEqual(summary.layers.map((x: any) => x.digest));
    }
    const [first, second] = summary.layers.map((x: any) => layerListing(l, x.digest));
    expect(first).toEqual(['-rwxr-xr-x 0/0 run.sh']);
    expect(second).toEqual([
      'drwxr-xr-x 0/0 assets/',
      '-rw-r--r-- 0/0 assets/crd.yaml',
      '-rw-r--r-- 0/0 assets/entangle-proxy.yaml',
      '-rw-r--r-- 0/0 assets/entangle.yaml',
      '-rw-r--r-- 0/0 assets/osbuilder.yaml',
    ]);
  });

  it('calico (upstream): the unpacked image (umoci) is the folder as Docker copies it', () => {
    const dir = fixture('calico');
    const r = build(dir);
    expect(r.code, r.stderr).toBe(0);
    const tree = unpack(r.out, 'arm64');
    const expected = snapshotTree(dir, { content: true });
    delete expected['Dockerfile'];
    delete expected['README.md'];
    expect(tree).toEqual(expected);
    expect(Object.keys(tree)).toEqual(['assets', 'assets/calico.yaml', 'run.sh']);
  });

  it('is reproducible: another checkout (other mtimes, other path) gives the same digest', () => {
    const a = build(fixture('kairos'));
    const other = fixture('kairos');
    for (const f of ['run.sh', 'assets/crd.yaml', 'assets']) utimesSync(join(other, f), new Date(2020, 1, 1), new Date(2020, 1, 1));
    const b = build(other);
    expect(JSON.parse(a.stdout).digest).toBe(JSON.parse(b.stdout).digest);
    // SOURCE_DATE_EPOCH moves every timestamp, and so the digest.
    const c = kbundle(['build', other, '-o', `oci:${join(tempDir(), 'o')}:t`, '--json'], { env: { ...process.env, SOURCE_DATE_EPOCH: '1700000000' } });
    expect(c.code, c.stderr).toBe(0);
    expect(JSON.parse(c.stdout).digest).not.toBe(JSON.parse(a.stdout).digest);
  });

  it("follows Docker's COPY rules: destinations, parents, several sources, globs, --chmod, JSON form, symlinks, exact modes", () => {
    const dir = folder({
      'run.sh#0755': '#!/bin/sh\necho hi\n',
      'assets/a.yaml': 'a: 1\n',
      'assets/sub/b.yaml#0600': 'b: 2\n',
      'tool#0750': 'tool\n',
      'x.conf': 'x\n',
      'y.conf': 'y\n',
      'with space.txt': 'space\n',
      Dockerfile: [
        '# syntax=docker/dockerfile:1',
        'FROM alpine AS unused',
        'RUN echo never run',
        'FROM scratch',
        'COPY run.sh .',
        '# a comment between steps',
        'COPY ./assets /assets',
        'COPY --chmod=0700 tool /usr/local/bin/',
        'COPY *.conf /etc/demo/',
        'COPY ["with space.txt", "/data/renamed.txt"]',
        'COPY --link assets/a.yaml \\',
        '     /assets/a-copy.yaml',
      ].join('\n'),
    });
    symlinkSync('a.yaml', join(dir, 'assets/link.yaml'));
    const r = build(dir, '--platform', 'linux/amd64');
    expect(r.code, r.stderr).toBe(0);
    const l = layout(r.out);
    const layers = JSON.parse(r.stdout).layers.map((x: any) => layerListing(l, x.digest));
    expect(layers).toEqual([
      ['-rwxr-xr-x 0/0 run.sh'],
      ['drwxr-xr-x 0/0 assets/', '-rw-r--r-- 0/0 assets/a.yaml', 'lrwxrwxrwx 0/0 assets/link.yaml -> a.yaml', 'drwxr-xr-x 0/0 assets/sub/', '-rw------- 0/0 assets/sub/b.yaml'],
      ['drwxr-xr-x 0/0 usr/', 'drwxr-xr-x 0/0 usr/local/', 'drwxr-xr-x 0/0 usr/local/bin/', '-rwx------ 0/0 usr/local/bin/tool'],
      ['drwxr-xr-x 0/0 etc/', 'drwxr-xr-x 0/0 etc/demo/', '-rw-r--r-- 0/0 etc/demo/x.conf', '-rw-r--r-- 0/0 etc/demo/y.conf'],
      ['drwxr-xr-x 0/0 data/', '-rw-r--r-- 0/0 data/renamed.txt'],
      ['-rw-r--r-- 0/0 assets/a-copy.yaml'],
    ]);
    expect(JSON.parse(r.stdout).platforms.map((p: any) => p.platform)).toEqual(['linux/amd64']);
  });

  const refusals: [string, () => string, RegExp, RegExp][] = [
    [
      'edgevpn (upstream): COPY --from a stage that downloads',
      () => fixture('edgevpn'),
      /Dockerfile:31: COPY --from=build \/tmp\/edgevpn \.: copies files made by build stage "build" \(line 1\), which runs commands \(RUN at line 6, 16\) and downloads https:\/\/github\.com\/mudler\/edgevpn\/releases/,
      /url:` \+ `sha256:` \(and `extract: <member>`/,
    ],
    [
      'cert-manager (upstream): a RUN wget stage',
      () => fixture('cert-manager'),
      /Dockerfile:6: COPY --from=build \/assets \/assets: copies files made by build stage "build".*cert-manager\.yaml/,
      /url:` \+ `sha256:`/,
    ],
    [
      'spinkube (upstream): a RUN heredoc stage',
      () => fixture('spinkube'),
      /Dockerfile:43: COPY --from=builder \/assets \.\/assets: copies files made by build stage "builder" \(line 1\), which runs commands \(RUN at line 7, 13\)/,
      /run\.sh \(it runs on the node\)/,
    ],
    [
      'qemu-guest-agent (upstream): a compiling stage',
      () => fixture('qemu-guest-agent'),
      /COPY --from=build \/pkg\/usr\/bin\/qemu-ga \.: copies files made by build stage "build"/,
      /kbundle builds without running build stages/,
    ],
    [
      'RUN in the final stage',
      () => folder({ 'run.sh': 'x', Dockerfile: 'FROM scratch\nCOPY run.sh /\nRUN chmod +x /run.sh\n' }),
      /Dockerfile:3: RUN chmod \+x \/run\.sh: RUN in the final stage needs a container runtime at build time/,
      /do this work in run\.sh \(it runs on the node\), or pin the download in bundle\.yaml instead: `url:` \+ `sha256:`/,
    ],
    [
      'ADD of a URL',
      () => folder({ 'run.sh': 'x', Dockerfile: 'FROM scratch\nCOPY run.sh /\nADD https://example.invalid/tool.tar.gz /tool.tar.gz\n' }),
      /Dockerfile:3: ADD https:\/\/example\.invalid\/tool\.tar\.gz \/tool\.tar\.gz: ADD downloads https:\/\/example\.invalid\/tool\.tar\.gz at build time/,
      /`url:` \+ `sha256:` \(and `extract: <member>`/,
    ],
    [
      'ADD of a local archive',
      () => folder({ 'x.tar.gz': 'x', Dockerfile: 'FROM scratch\nADD x.tar.gz /\n' }),
      /Dockerfile:2: ADD x\.tar\.gz \/: ADD unpacks the local archive x\.tar\.gz/,
      /unpack it into the folder/,
    ],
    [
      'a final stage that is not scratch',
      () => folder({ 'run.sh': 'x', Dockerfile: 'FROM alpine:3.20\nCOPY run.sh /\n' }),
      /Dockerfile:1: FROM alpine:3\.20: the final stage starts FROM alpine:3\.20, not FROM scratch/,
      /end the Dockerfile with FROM scratch/,
    ],
    [
      'ENTRYPOINT',
      () => folder({ 'run.sh': 'x', Dockerfile: 'FROM scratch\nCOPY run.sh /\nENTRYPOINT ["/run.sh"]\n' }),
      /Dockerfile:3: ENTRYPOINT \["\/run\.sh"\]: ENTRYPOINT in the final stage is not translated: only COPY is/,
      /Kairos only uses the image files/,
    ],
    ['WORKDIR', () => folder({ 'run.sh': 'x', Dockerfile: 'FROM scratch\nWORKDIR /x\nCOPY run.sh .\n' }), /Dockerfile:2: WORKDIR \/x: WORKDIR is not supported/, /absolute COPY destinations/],
    ['a COPY from another image', () => folder({ Dockerfile: 'FROM scratch\nCOPY --from=alpine:3.20 /bin/busybox /\n' }), /copies files out of the image "alpine:3\.20"/, /without pulling images/],
    [
      'a missing source',
      () => folder({ Dockerfile: 'FROM scratch\nCOPY run.sh /\n' }),
      /Dockerfile:2: COPY run\.sh \/: the source "run\.sh" does not exist/,
      /relative to the folder holding the Dockerfile/,
    ],
    ['a source outside the folder', () => folder({ Dockerfile: 'FROM scratch\nCOPY ../secret /\n' }), /the source "\.\.\/secret" is outside the build context/, /bundle folder only/],
    ['a glob matching nothing', () => folder({ Dockerfile: 'FROM scratch\nCOPY *.yaml /\n' }), /Dockerfile:2: COPY \*\.yaml \/: no file matches "\*\.yaml"/, /matches nothing/],
  ];
  it.each(refusals)('refuses %s, naming the line and the bundle.yaml way; nothing is written', (_what, make, message, hint) => {
    const dir = make();
    const out = join(tempDir('kbundle-df-refused-'), 'oci');
    const r = kbundle(['build', dir, '-o', `oci:${out}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(hint);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(existsSync(out)).toBe(false);
    const imp = kbundle(['import', dir]);
    expect(imp.code).toBe(1);
    expect(imp.stderr).toMatch(message);
    expect(existsSync(join(dir, 'bundle.yaml'))).toBe(false);
  });
});

describe('kbundle import <community-bundles folder>', () => {
  it('kairos (upstream): writes a bundle.yaml (run: run.sh, files: assets) whose image has the same tree as the Dockerfile build', () => {
    const dir = fixture('kairos');
    const docker = build(dir);
    expect(docker.code, docker.stderr).toBe(0);
    const r = kbundle(['import', dir, '--bundle-version', '0.0.13', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const spec = parse(readFileSync(join(dir, 'bundle.yaml'), 'utf8'));
    expect(spec).toEqual({
      name: 'kairos',
      version: '0.0.13',
      description: 'Kairos Bundle',
      type: 'run',
      platforms: ['linux/amd64', 'linux/arm64'],
      run: 'run.sh',
      files: [{ src: 'assets', dst: 'assets' }],
    });
    expect(JSON.parse(r.stdout)).toMatchObject({ name: 'kairos', type: 'run', run: 'run.sh' });
    // The bundle.yaml build: one layer, same unpacked tree as the Dockerfile build.
    const b = build(dir);
    expect(b.code, b.stderr).toBe(0);
    expect(unpack(b.out)).toEqual(unpack(docker.out));
    // Now a kbundle folder: build uses bundle.yaml (one layer) instead of the Dockerfile.
    expect(JSON.parse(b.stdout).platforms[0].layer).toMatch(/^sha256:/);
  });

  it('translates destinations, --chmod and a folder copied onto the root; a container bundle without run.sh', () => {
    const dir = folder({
      'rootfs/etc/motd': 'hello\n',
      'rootfs/usr/local/bin/tool#0755': 'tool\n',
      'conf.yaml': 'c: 1\n',
      'secret#0644': 's\n',
      Dockerfile: 'FROM scratch\nCOPY rootfs /\nCOPY conf.yaml /etc/demo/\nCOPY --chmod=0600 secret /etc/demo/secret\n',
    });
    const docker = build(dir);
    expect(docker.code, docker.stderr).toBe(0);
    const r = kbundle(['import', dir]);
    expect(r.code, r.stderr).toBe(0);
    const spec = parse(readFileSync(join(dir, 'bundle.yaml'), 'utf8'));
    expect(spec.type).toBe('container');
    expect(spec.files).toEqual([
      { src: 'rootfs/etc', dst: 'etc' },
      { src: 'rootfs/usr', dst: 'usr' },
      { src: 'conf.yaml', dst: 'etc/demo/conf.yaml' },
      { src: 'secret', dst: 'etc/demo/secret', mode: '0600' },
    ]);
    const b = build(dir);
    expect(b.code, b.stderr).toBe(0);
    expect(unpack(b.out)).toEqual(unpack(docker.out));
  });

  it('refuses to overwrite a bundle.yaml without --force, and --chown', () => {
    const dir = fixture('kairos');
    writeFileSync(join(dir, 'bundle.yaml'), 'keep: me\n');
    const r = kbundle(['import', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('bundle.yaml already exists');
    expect(readFileSync(join(dir, 'bundle.yaml'), 'utf8')).toBe('keep: me\n');
    expect(kbundle(['import', dir, '--force']).code).toBe(0);

    const own = folder({ 'run.sh': 'x', Dockerfile: 'FROM scratch\nCOPY --chown=1000:1000 run.sh /\n' });
    const c = kbundle(['import', own]);
    expect(c.code).toBe(1);
    expect(c.stderr).toContain('Dockerfile:2: COPY --chown=1000:1000 run.sh /: --chown has no bundle.yaml equivalent');
    expect(readdirSync(own)).not.toContain('bundle.yaml');
  });
});
