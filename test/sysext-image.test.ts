import { spawnSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestOf } from '../src/oci/digest.js';
import { MediaType } from '../src/oci/mediatypes.js';
import { buildSysext } from '../src/sysext/build.js';
import { readGpt } from '../src/sysext/gpt.js';
import { craftImage, type CraftEntry } from './helpers/craft-image.js';
import { kbundle } from './helpers/cli.js';
import { cleanupTempDirs, mustRun, tempDir } from './helpers/exec.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';
import { requireTools } from './fixtures/sysext/helpers.js';

afterAll(cleanupTempDirs);

const dir = (name: string): CraftEntry => ({ name, type: 'directory', mode: 0o755 });
const file = (name: string, content: string, mode = 0o644): CraftEntry => ({ name, type: 'file', mode, content });

// A base layer the extension must NOT come from, and a last layer shaped like the k3s sysext
// Dockerfile in Kairos's docs (FROM scratch + COPY), plus everything an image may carry that a
// system extension must not: other hierarchies, an os-release, its own release file, a whiteout.
const BASE: CraftEntry[] = [dir('usr'), dir('usr/bin'), file('usr/bin/base-tool', 'base\n', 0o755), dir('etc'), file('etc/passwd', 'root:x:0:0::/root:/bin/sh\n')];
const LAST: CraftEntry[] = [
  dir('usr'),
  dir('usr/local'),
  dir('usr/local/bin'),
  file('usr/local/bin/k3s-fake', '#!/bin/sh\necho k3s from an image layer\n', 0o755),
  { name: 'usr/local/bin/kubectl', type: 'symlink', linkname: './k3s-fake' },
  { name: 'usr/local/bin/crictl', type: 'link', linkname: 'usr/local/bin/k3s-fake' },
  { name: 'usr/local/bin/passwd-copy', type: 'link', linkname: 'etc/passwd' },
  file('usr/local/bin/helper-suid', 'suid\n', 0o4755),
  dir('usr/lib'),
  file('usr/lib/os-release', 'ID=ubuntu\n'),
  dir('usr/lib/extension-release.d'),
  file('usr/lib/extension-release.d/extension-release.k3s-v1.30', 'ID=_any\n'),
  file('usr/bin/.wh.base-tool', ''),
  dir('opt'),
  dir('opt/k3s'),
  file('opt/k3s/data.txt', 'opt data\n'),
  dir('etc'),
  file('etc/motd', 'hi\n'),
  dir('var'),
  file('var/cache.bin', 'x\n'),
];

/** The tree of the root partition, unpacked by unsquashfs (the real reader). */
function unpackRoot(raw: string, offset: number): string {
  const out = join(tempDir(), 'root');
  mustRun('unsquashfs', ['-o', String(offset), '-d', out, raw]);
  return out;
}

function listTree(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const n of readdirSync(join(root, rel)).sort()) {
    const p = rel ? `${rel}/${n}` : n;
    out.push(p);
    if (lstatSync(join(root, p)).isDirectory()) out.push(...listTree(root, p));
  }
  return out;
}

describe('sysext build from a container image (AuroraBoot semantics: the last layer)', () => {
  let layout: string;
  let registry: RegistryHandle;
  beforeAll(async () => {
    requireTools('mksquashfs', 'unsquashfs', 'systemd-repart', 'systemd-dissect', 'skopeo');
    layout = join(tempDir(), 'oci');
    await craftImage(layout, [BASE, LAST], 'k3s');
    registry = await startRegistry({ variant: 'open' });
    const sk = spawnSync('skopeo', ['copy', '--dest-tls-verify=false', `oci:${layout}:k3s`, `docker://${registry.host}/kairos/k3s-sysext:1`], { encoding: 'utf8' });
    expect(sk.status, sk.stderr).toBe(0);
  });
  afterAll(async () => {
    await registry?.stop();
  });

  it('takes usr/ and opt/ of the last layer only, drops what systemd refuses, and says so', async () => {
    const out = tempDir();
    const r = kbundle(['sysext', 'build', `oci:${layout}:k3s`, '--fs', 'squashfs', '--name', 'k3s', '-o', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as { path: string; rootHash: string; source: { manifestDigest: string; layerDigest: string; entries: number } };
    const manifest = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')).manifests[0].digest as string;
    expect(summary.source.manifestDigest).toBe(manifest);
    const m = JSON.parse(readFileSync(join(layout, 'blobs/sha256', manifest.slice(7)), 'utf8')) as { layers: { digest: string }[] };
    expect(summary.source.layerDigest).toBe(m.layers[1]!.digest);
    // The warnings name what was left out, and why.
    expect(r.stderr).toMatch(/left out etc\/, var\/ \(systemd-sysext only merges \/usr and \/opt\)/);
    expect(r.stderr).toMatch(/left out usr\/lib\/extension-release\.d\/extension-release\.k3s-v1\.30, usr\/lib\/os-release/);
    expect(r.stderr).toMatch(/hard links whose targets are not in the extension: usr\/local\/bin\/passwd-copy → etc\/passwd/);
    expect(r.stderr).toMatch(/ignored whiteouts for usr\/bin\/base-tool \(an extension can add files to the OS, not delete them\)/);
    expect(readdirSync(out)).toEqual(['k3s.sysext.raw']); // no staging left behind

    const gpt = (await readGpt(summary.path))!;
    const tree = unpackRoot(summary.path, gpt.partitions[0]!.offset);
    expect(listTree(tree)).toEqual([
      'opt',
      'opt/k3s',
      'opt/k3s/data.txt',
      'usr',
      'usr/lib',
      'usr/lib/extension-release.d',
      'usr/lib/extension-release.d/extension-release.k3s',
      'usr/lib/extension-release.d/extension-release.k3s.sysext',
      'usr/local',
      'usr/local/bin',
      'usr/local/bin/crictl',
      'usr/local/bin/helper-suid',
      'usr/local/bin/k3s-fake',
      'usr/local/bin/kubectl',
    ]);
    expect(readFileSync(join(tree, 'usr/lib/extension-release.d/extension-release.k3s'), 'utf8')).toBe('ID=_any\nARCHITECTURE=x86-64\n');
    expect(readlinkSync(join(tree, 'usr/local/bin/kubectl'))).toBe('./k3s-fake');
    expect(lstatSync(join(tree, 'usr/local/bin/crictl')).ino).toBe(lstatSync(join(tree, 'usr/local/bin/k3s-fake')).ino);
    expect(lstatSync(join(tree, 'usr/local/bin/helper-suid')).mode & 0o7777).toBe(0o4755); // packaged setuid bits survive
    expect(lstatSync(join(tree, 'usr/local/bin/k3s-fake')).mode & 0o777).toBe(0o755);

    // systemd reads it as the DDI Kairos accepts.
    const dissect = JSON.parse(mustRun('systemd-dissect', ['--json=short', summary.path])) as { mounts: { designator: string; fstype: string; architecture: string }[] };
    expect(dissect.mounts.find((x) => x.designator === 'root')).toMatchObject({ fstype: 'squashfs', architecture: 'x86-64' });
    expect(dissect.mounts.find((x) => x.designator === 'root-verity')).toMatchObject({ fstype: 'DM_verity_hash' });
  });

  it('is byte-identical to a folder build of the same files, and reproducible from a registry', async () => {
    const fromLayout = kbundle(['sysext', 'build', `oci:${layout}:k3s`, '--fs', 'squashfs', '--name', 'k3s', '-o', tempDir(), '--json']);
    expect(fromLayout.code, fromLayout.stderr).toBe(0);
    const a = JSON.parse(fromLayout.stdout) as { path: string };
    // docker:// from the real registry:2 (loopback: plain HTTP by itself)
    const fromRegistry = kbundle(['sysext', 'build', `docker://${registry.host}/kairos/k3s-sysext:1`, '--fs', 'squashfs', '--name', 'k3s', '-o', tempDir(), '--json']);
    expect(fromRegistry.code, fromRegistry.stderr).toBe(0);
    const b = JSON.parse(fromRegistry.stdout) as { path: string };
    expect(readFileSync(a.path).equals(readFileSync(b.path))).toBe(true);
    // `docker save` output (skopeo writes the same format): an uncompressed docker-archive layer.
    const tar = join(tempDir(), 'k3s.tar');
    mustRun('skopeo', ['copy', `oci:${layout}:k3s`, `docker-archive:${tar}:kairos/k3s-sysext:1`]);
    const fromArchive = kbundle(['sysext', 'build', `docker-archive:${tar}`, '--fs', 'squashfs', '--name', 'k3s', '-o', tempDir(), '--json']);
    expect(fromArchive.code, fromArchive.stderr).toBe(0);
    expect(readFileSync((JSON.parse(fromArchive.stdout) as { path: string }).path).equals(readFileSync(a.path))).toBe(true);
    // The same files laid out by hand in a folder give the same image.
    const folder = join(tempDir(), 'tree');
    for (const d of ['usr/local/bin', 'opt/k3s']) mkdirSync(join(folder, d), { recursive: true });
    writeFileSync(join(folder, 'usr/local/bin/k3s-fake'), '#!/bin/sh\necho k3s from an image layer\n');
    chmodSync(join(folder, 'usr/local/bin/k3s-fake'), 0o755);
    spawnSync('ln', ['-s', './k3s-fake', join(folder, 'usr/local/bin/kubectl')]);
    spawnSync('ln', [join(folder, 'usr/local/bin/k3s-fake'), join(folder, 'usr/local/bin/crictl')]);
    writeFileSync(join(folder, 'usr/local/bin/helper-suid'), 'suid\n');
    chmodSync(join(folder, 'usr/local/bin/helper-suid'), 0o4755);
    writeFileSync(join(folder, 'opt/k3s/data.txt'), 'opt data\n');
    const c = await buildSysext({ name: 'k3s', tree: folder, outDir: tempDir(), fs: 'squashfs', arch: 'x86-64', release: { architecture: 'x86-64' } });
    expect(readFileSync(c.path).equals(readFileSync(a.path))).toBe(true);
  });

  it('--arch picks the platform of a multi-arch index, and sets ARCHITECTURE= and the partition types', async () => {
    const multi = join(tempDir(), 'oci');
    const amd = await craftImage(multi, [[dir('usr'), dir('usr/bin'), file('usr/bin/tool', 'amd64\n', 0o755)]], 'amd');
    const arm = await craftImage(multi, [[dir('usr'), dir('usr/bin'), file('usr/bin/tool', 'arm64\n', 0o755)]], 'arm');
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciIndex,
        manifests: [
          { ...amd.manifest, platform: { os: 'linux', architecture: 'amd64' } },
          { ...arm.manifest, platform: { os: 'linux', architecture: 'arm64' } },
        ],
      }),
    );
    const indexDesc = { mediaType: MediaType.OciIndex, digest: digestOf(index), size: index.length };
    await arm.layout.push(indexDesc, index);
    await arm.layout.tag(indexDesc, 'multi');

    const r = kbundle(['sysext', 'build', `oci:${multi}:multi`, '--fs', 'squashfs', '--name', 'tool', '--arch', 'arm64', '-o', tempDir(), '--json']);
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as { path: string; release: string; source: { manifestDigest: string }; partitions: { type: string }[] };
    expect(summary.source.manifestDigest).toBe(arm.manifest.digest);
    expect(summary.release).toBe('ID=_any\nARCHITECTURE=arm64\n');
    expect(summary.partitions.map((p) => p.type)).toEqual(['root-arm64', 'root-arm64-verity']);
    const gpt = (await readGpt(summary.path))!;
    expect(readFileSync(join(unpackRoot(summary.path, gpt.partitions[0]!.offset), 'usr/bin/tool'), 'utf8')).toBe('arm64\n');

    const none = kbundle(['sysext', 'build', `oci:${multi}:multi`, '--fs', 'squashfs', '--name', 'tool', '--arch', 'riscv64', '-o', tempDir()]);
    expect(none.code).not.toBe(0);
    expect(none.stderr).toMatch(/no image for platform linux\/riscv64 \(available: linux\/amd64, linux\/arm64\)/);
    expect(none.stderr).toMatch(/pick one with --arch/);
  });

  it('refuses a last layer without usr/ or opt/, a missing --name, and a tampered layer, writing nothing', async () => {
    const etcOnly = join(tempDir(), 'oci');
    await craftImage(etcOnly, [LAST, [dir('etc'), file('etc/only.conf', 'x\n')]], 'cfg');
    const out = tempDir();
    const empty = kbundle(['sysext', 'build', `oci:${etcOnly}:cfg`, '--fs', 'squashfs', '--name', 'cfg', '-o', out]);
    expect(empty.code).not.toBe(0);
    expect(empty.stderr).toMatch(/last layer sha256:[0-9a-f]{12} has nothing under usr\/ or opt\//);
    expect(empty.stderr).toMatch(/built from the image's last layer only/);
    // …while the same image is a fine confext (etc/ is what systemd-confext merges).
    const confext = kbundle(['confext', 'build', `oci:${etcOnly}:cfg`, '--fs', 'squashfs', '--name', 'cfg', '-o', out, '--json']);
    expect(confext.code, confext.stderr).toBe(0);
    expect(readdirSync(out)).toEqual(['cfg.confext.raw']);

    const noName = kbundle(['sysext', 'build', `oci:${layout}:k3s`, '-o', tempDir()]);
    expect(noName.code).not.toBe(0);
    expect(noName.stderr).toMatch(/--name is required to build from an image/);

    // Flip one byte of the last layer blob: the digest check refuses it before anything is unpacked.
    const bad = join(tempDir(), 'oci');
    const crafted = await craftImage(bad, [BASE, LAST], 'k3s');
    const m = JSON.parse(readFileSync(crafted.layout.blobPath(crafted.manifest.digest), 'utf8')) as { layers: { digest: string }[] };
    const blob = crafted.layout.blobPath(m.layers[1]!.digest);
    const bytes = readFileSync(blob);
    bytes[bytes.length - 10]! ^= 0xff;
    writeFileSync(blob, bytes);
    const out2 = tempDir();
    const tampered = kbundle(['sysext', 'build', `oci:${bad}:k3s`, '--fs', 'squashfs', '--name', 'k3s', '-o', out2]);
    expect(tampered.code).not.toBe(0);
    expect(tampered.stderr).toMatch(/digest/i);
    expect(tampered.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(readdirSync(out2)).toEqual([]);
  });
});
