import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { LoadedSpec } from '../src/builder/spec.js';
import { extractImage, resolveManifest } from '../src/extract/extract-image.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { checkImage } from '../src/sysext/check.js';
import { buildSysextBundleImage, checkSysextBundleSpec } from '../src/builder/sysext-image.js';
import { parseReleaseFile } from '../src/sysext/release.js';
import { kbundle } from './helpers/cli.js';
import { cleanupTempDirs, mustRun, REPO_ROOT, tempDir } from './helpers/exec.js';
import { writeBundle } from './helpers/fixture-bundle.js';
import { requireTools } from './fixtures/sysext/helpers.js';

afterAll(cleanupTempDirs);

/** bundles/sysext-example as loadBundleSpec will hand it over once `type: sysext` is wired in. */
function loadExample(): LoadedSpec {
  const dir = resolve(REPO_ROOT, 'bundles/sysext-example');
  const raw = parse(readFileSync(join(dir, 'bundle.yaml'), 'utf8')) as Record<string, unknown>;
  const spec = { platform_files: {}, config: { key: 'sysext_example', values: {}, patterns: {} }, distro: 'auto', manifests: [], charts: [], ...raw };
  return { dir, specPath: join(dir, 'bundle.yaml'), spec: spec as unknown as LoadedSpec['spec'] };
}

describe('type: sysext bundles (buildSysextBundleImage)', () => {
  it('builds one verity DDI per platform, packaged as OCI images whose root holds the .raw, reproducibly', async () => {
    requireTools('mksquashfs', 'unsquashfs', 'systemd-repart');
    const loaded = loadExample();
    const a = await OciLayout.open(tempDir(), { create: true });
    const b = await OciLayout.open(tempDir(), { create: true });
    const ra = await buildSysextBundleImage(loaded, a, { sourceDateEpoch: 1700000000 });
    const rb = await buildSysextBundleImage(loaded, b, { sourceDateEpoch: 1700000000 });
    expect(ra.root.digest).toBe(rb.root.digest);
    expect(ra.root.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect(ra.images.map((i) => [i.platform, i.raw.fileName, i.raw.partitions.map((p) => p.dps?.name)])).toEqual([
      ['linux/amd64', 'sysext-example.sysext.raw', ['root-x86-64', 'root-x86-64-verity']],
      ['linux/arm64', 'sysext-example.sysext.raw', ['root-arm64', 'root-arm64-verity']],
    ]);
    expect(ra.images[1]!.raw.release).toBe('ID=_any\nARCHITECTURE=arm64\nEXTENSION_RELOAD_MANAGER=1\n');

    // What kairos-agent does with oci:<ref>: extract the image into its store — the .raw lands at the top.
    await a.tag(ra.root, '1.0.0');
    const manifest = await resolveManifest(a, '1.0.0', { os: 'linux', architecture: 'amd64' });
    const store = tempDir();
    await extractImage(a, manifest, store);
    const raw = join(store, 'sysext-example.sysext.raw');
    expect(mustRun('unsquashfs', ['-o', String(ra.images[0]!.raw.partitions[0]!.offset), '-cat', raw, 'usr/bin/kairos-hello'])).toMatch(/hello from a Kairos system extension/);
    const c = await checkImage(raw, { osRelease: parseReleaseFile('ID=kairos\nVERSION_ID=3.5\n'), arch: 'x86-64' });
    expect(c.lines.filter((l) => !l.ok)).toEqual([]);
    // The arm64 image is refused on an x86-64 node, for its partition type and its ARCHITECTURE=
    const arm = await resolveManifest(a, '1.0.0', { os: 'linux', architecture: 'arm64' });
    const store2 = tempDir();
    await extractImage(a, arm, store2);
    const c2 = await checkImage(join(store2, 'sysext-example.sysext.raw'), { osRelease: parseReleaseFile('ID=kairos\n'), arch: 'x86-64' });
    expect(c2.reasons.join('\n')).toMatch(/partition is for arm64, the node is x86-64[\s\S]*ARCHITECTURE=arm64/);
  });

  it('validates the sysext: section and destinations for spec.ts', () => {
    const base = { name: 'x', type: 'sysext', files: [{ dst: 'usr/bin/x' }, { dst: 'opt/x' }], platform_files: {} };
    expect(() => checkSysextBundleSpec(base, 'b.yaml')).not.toThrow();
    expect(() => checkSysextBundleSpec({ ...base, files: [{ dst: 'etc/x.conf' }] }, 'b.yaml')).toThrow(/files.0.dst: "etc\/x.conf" is outside usr\/ and opt\//);
    expect(() => checkSysextBundleSpec({ ...base, type: 'confext', files: [{ dst: 'etc/x.conf' }] }, 'b.yaml')).not.toThrow();
    expect(() => checkSysextBundleSpec({ ...base, sysext: { format: 'zip' } }, 'b.yaml')).toThrow(/sysext.format/);
    expect(() => checkSysextBundleSpec({ ...base, type: 'run', sysext: {} }, 'b.yaml')).toThrow(/only sysext and confext bundles/);
    expect(() => checkSysextBundleSpec({ ...base, sysext: { name: 'bad_name' } }, 'b.yaml')).toThrow(/not a valid extension name/);
  });
});

describe('kbundle sysext build <bundle-dir>', () => {
  const env = { ...process.env, SOURCE_DATE_EPOCH: '1700000000' };
  const example = resolve(REPO_ROOT, 'bundles/sysext-example');

  it('builds the .raw that kbundle build packages for this platform, byte for byte', async () => {
    requireTools('mksquashfs', 'unsquashfs', 'systemd-repart');
    const out = tempDir();
    const r = kbundle(['sysext', 'build', example, '-o', out, '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as { path: string; release: string };
    expect(summary.path).toBe(join(out, 'sysext-example.sysext.raw'));
    expect(summary.release).toBe('ID=_any\nARCHITECTURE=x86-64\nEXTENSION_RELOAD_MANAGER=1\n');

    const layoutDir = tempDir();
    const b = kbundle(['build', example, '-o', `oci:${layoutDir}:1.0.0`], { env });
    expect(b.code, b.stderr).toBe(0);
    expect(b.stderr).not.toMatch(/warning/); // the catalog example only uses directories a Kairos node merges
    const layout = await OciLayout.open(layoutDir);
    const store = tempDir();
    await extractImage(layout, await resolveManifest(layout, '1.0.0', { os: 'linux', architecture: 'amd64' }), store);
    expect(readFileSync(summary.path).equals(readFileSync(join(store, 'sysext-example.sysext.raw')))).toBe(true);
  });

  it('kbundle build warns once (not per platform) about files a Kairos node leaves out of the merge', () => {
    requireTools('mksquashfs', 'systemd-repart');
    const dir = writeBundle(
      join(tempDir(), 'tool'),
      'name: tool\nversion: 1.0.0\ndescription: t\ntype: sysext\nplatforms: [linux/amd64, linux/arm64]\nfiles:\n  - src: tool\n    dst: usr/bin/tool\n  - src: data\n    dst: opt/tool/data\n',
      [
        { path: 'tool', content: '#!/bin/sh\n', mode: 0o755 },
        { path: 'data', content: 'd\n' },
      ],
    );
    const b = kbundle(['build', dir, '-o', `oci:${tempDir()}:1.0.0`], { env });
    expect(b.code, b.stderr).toBe(0);
    const warnings = b.stderr.split('\n').filter((l) => l.startsWith('kbundle: warning:'));
    expect(warnings).toEqual([
      expect.stringMatching(
        /^kbundle: warning: tool: \/opt is outside the directories a Kairos node merges \(its systemd-sysext drop-in sets SYSTEMD_SYSEXT_HIERARCHIES=\/usr\/local\/bin:.*\/usr\/sbin\); only nodes that add it to that list will see that$/,
      ),
    ]);
  });

  it('takes --arch as the platform, and flags over the sysext: section', () => {
    const out = tempDir();
    const r = kbundle(['sysext', 'build', example, '-o', out, '--arch', 'arm64', '--name', 'hello', '--id', 'kairos', '--version-id', '3.5', '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout) as { fileName: string; release: string; partitions: { type: string }[] };
    expect(s.fileName).toBe('hello.sysext.raw');
    expect(s.release).toBe('ID=kairos\nVERSION_ID=3.5\nARCHITECTURE=arm64\nEXTENSION_RELOAD_MANAGER=1\n');
    expect(s.partitions.map((p) => p.type)).toEqual(['root-arm64', 'root-arm64-verity']);
  });

  it('refuses the wrong kind of bundle, a platform the bundle lacks, and a plain folder without --name', () => {
    const confext = kbundle(['confext', 'build', example, '-o', tempDir()]);
    expect(confext.code).not.toBe(0);
    expect(confext.stderr).toMatch(/bundle.yaml: type is sysext, not confext\n {2}hint: build it with kbundle sysext build/);
    const run = kbundle(['sysext', 'build', resolve(REPO_ROOT, 'bundles/metallb'), '-o', tempDir()]);
    expect(run.stderr).toMatch(/type is run, not sysext/);
    const riscv = kbundle(['sysext', 'build', example, '-o', tempDir(), '--arch', 'riscv64']);
    expect(riscv.stderr).toMatch(/linux\/riscv64 is not among its platforms \(linux\/amd64, linux\/arm64\)/);
    const plain = kbundle(['sysext', 'build', join(example, 'usr'), '-o', tempDir()]);
    expect(plain.code).not.toBe(0);
    expect(plain.stderr).toMatch(/--name is required: .* has no bundle.yaml/);
  });
});
