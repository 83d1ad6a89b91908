import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildSysext, type SysextBuildResult } from '../src/sysext/build.js';
import { checkImage } from '../src/sysext/check.js';
import { KAIROS_SYSEXT_HIERARCHIES, parseHierarchies, readUnitSettings, uncoveredPaths } from '../src/sysext/hierarchies.js';
import { parseReleaseFile } from '../src/sysext/release.js';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { kbundle } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { makeCert, mergeAndRun, requireTools } from './fixtures/sysext/helpers.js';

afterAll(cleanupTempDirs);

const debian12 = parseReleaseFile('ID=debian\nVERSION_ID=12\n');

/** Files an extension may carry, in and out of Kairos's hierarchies. */
const FILES = ['usr/bin/in-bin', 'usr/local/bin/in-local-bin', 'usr/lib/in-lib', 'usr/share/doc/in-share', 'usr/libexec/out-libexec', 'usr/local/etc/out-local-etc', 'usr/out-top', 'opt/app/out-opt'];

function writeTree(dir: string, files: string[]): string {
  for (const f of files) {
    mkdirSync(join(dir, f, '..'), { recursive: true });
    writeFileSync(join(dir, f), `${f}\n`);
  }
  return dir;
}

/** A drop-in as Kairos writes it at boot (its kairos.conf / kairos-uki.conf shape). */
function dropIn(root: string, dir: string, name: string, body: string): void {
  mkdirSync(join(root, dir, 'systemd-sysext.service.d'), { recursive: true });
  writeFileSync(join(root, dir, 'systemd-sysext.service.d', name), body);
}

describe('hierarchies: what a Kairos node merges (SYSTEMD_SYSEXT_HIERARCHIES)', () => {
  let image: SysextBuildResult;
  let warnings: string[];
  beforeAll(async () => {
    requireTools('mksquashfs', 'unsquashfs', 'systemd-repart', 'systemd-sysext', 'unshare', 'openssl');
    warnings = [];
    image = await buildSysext({ name: 'spread', tree: writeTree(join(tempDir(), 'tree'), FILES), outDir: tempDir(), fs: 'squashfs', onWarning: (w) => warnings.push(w) });
  });

  it('finds the topmost paths outside the hierarchies', () => {
    const paths = ['opt', 'opt/app', 'opt/app/x', 'usr', 'usr/bin', 'usr/bin/a', 'usr/local', 'usr/local/bin', 'usr/local/etc', 'usr/local/etc/b', 'usr/x'];
    expect(uncoveredPaths(paths, KAIROS_SYSEXT_HIERARCHIES)).toEqual(['opt', 'usr/local/etc', 'usr/x']);
    expect(uncoveredPaths(paths, ['/usr', '/opt'])).toEqual([]);
    expect(parseHierarchies('/usr/bin:/usr/lib/:/usr/bin', 'x')).toEqual(['/usr/bin', '/usr/lib']);
    expect(() => parseHierarchies('/usr:opt', '--hierarchies')).toThrow(/--hierarchies: "\/usr:opt" is not a list of absolute paths/);
    expect(() => parseHierarchies('', '--hierarchies')).toThrow(/not a list of absolute paths/);
  });

  it("agrees with a real systemd-sysext merge under Kairos's hierarchies about what stays out", async () => {
    // The node: the hierarchies exist (systemd skips missing ones), the image in var/lib/extensions.
    const root = tempDir('kbundle-node-');
    for (const d of ['usr/lib', 'usr/bin', 'usr/local/bin', 'usr/local/etc', 'usr/share', 'usr/libexec', 'opt', 'var/lib/extensions']) mkdirSync(join(root, d), { recursive: true });
    writeFileSync(join(root, 'usr/lib/os-release'), 'ID=debian\nVERSION_ID=12\n');
    copyFileSync(image.path, join(root, 'var/lib/extensions/spread.raw'));
    const visible = (m: { out: string }) => FILES.filter((f) => m.out.includes(`visible ${f}\n`));
    const probe = FILES.map((f) => `[ -e "$1/${f}" ] && echo "visible ${f}" || true`).join('\n');

    const kairos = mergeAndRun(root, probe, KAIROS_SYSEXT_HIERARCHIES);
    expect(kairos.code, kairos.out).toBe(0);
    expect(visible(kairos)).toEqual(['usr/bin/in-bin', 'usr/local/bin/in-local-bin', 'usr/lib/in-lib', 'usr/share/doc/in-share']);
    // systemd's default (/usr and /opt) shows everything: the difference is the hierarchies alone.
    expect(visible(mergeAndRun(root, probe))).toEqual(FILES);

    // kbundle's check names exactly the ones the merge left out, and still says it merges.
    const r = await checkImage(join(root, 'var/lib/extensions/spread.raw'), { osRelease: debian12, systemdVersion: 252, hierarchies: KAIROS_SYSEXT_HIERARCHIES });
    expect(r.ok, r.reasons.join('\n')).toBe(true);
    expect(r.info.warnings).toEqual([`not merged on this node, outside SYSTEMD_SYSEXT_HIERARCHIES=${KAIROS_SYSEXT_HIERARCHIES.join(':')}: /opt, /usr/libexec, /usr/local/etc, /usr/out-top`]);
    // The build said so too.
    expect(warnings.join('\n')).toMatch(/spread: \/opt, \/usr\/libexec, \/usr\/local\/etc, \/usr\/out-top are outside the directories a Kairos node merges/);
  });

  it('refuses an image none of whose files a node with those hierarchies would merge', async () => {
    const optOnly = await buildSysext({ name: 'optonly', tree: writeTree(join(tempDir(), 'tree'), ['opt/tool/bin/tool']), outDir: tempDir() });
    const r = await checkImage(optOnly.path, { osRelease: debian12, hierarchies: KAIROS_SYSEXT_HIERARCHIES });
    expect(r.ok).toBe(false);
    expect(r.reasons).toEqual([
      expect.stringMatching(/^nothing in the image is under the node's hierarchies \(SYSTEMD_SYSEXT_HIERARCHIES=\/usr\/local\/bin:.*\): the merge would add none of its files \(\/opt stay out\)$/),
    ]);
    expect((await checkImage(optOnly.path, { osRelease: debian12, hierarchies: ['/usr', '/opt'] })).ok).toBe(true);
  });

  it("reads a node's systemd-sysext drop-ins the way systemd combines them", async () => {
    const root = tempDir('kbundle-node-');
    // Vendor default, overridden by name from /etc; applied in file-name order across folders.
    dropIn(root, 'usr/lib/systemd/system', '10-vendor.conf', '[Service]\nEnvironment=SYSTEMD_SYSEXT_HIERARCHIES=/usr:/opt\nExecStart=systemd-sysext refresh --image-policy=root=unprotected\n');
    dropIn(root, 'etc/systemd/system', '10-vendor.conf', '[Service]\nEnvironment=OTHER=1\n');
    dropIn(
      root,
      'run/systemd/system',
      'kairos.conf',
      [
        '[Service]',
        'TimeoutStartSec=10',
        'ExecStart=',
        'ExecStart=systemd-sysext refresh --image-policy="root=verity+signed+absent:usr=verity+signed+absent"',
        `Environment="SYSTEMD_SYSEXT_HIERARCHIES=${KAIROS_SYSEXT_HIERARCHIES.join(':')}:/opt" "X=y z"`,
        '[Unit]',
        'Environment=SYSTEMD_SYSEXT_HIERARCHIES=/ignored',
        '',
      ].join('\n'),
    );
    const s = await readUnitSettings(root, 'sysext');
    expect(s.files).toEqual(['/etc/systemd/system/systemd-sysext.service.d/10-vendor.conf', '/run/systemd/system/systemd-sysext.service.d/kairos.conf']);
    expect(s.hierarchies).toEqual([...KAIROS_SYSEXT_HIERARCHIES, '/opt']);
    expect(s.imagePolicy).toBe('root=verity+signed+absent:usr=verity+signed+absent');
    expect(await readUnitSettings(tempDir(), 'sysext')).toEqual({ hierarchies: undefined, imagePolicy: undefined, files: [] });
  });

  it("install --root and check --root follow the node's drop-in: its image policy and hierarchies", () => {
    const keys = makeCert(tempDir(), 'node-db');
    const root = tempDir('kbundle-node-');
    mkdirSync(join(root, 'etc'), { recursive: true });
    writeFileSync(join(root, 'etc/os-release'), 'ID=debian\nVERSION_ID=12\n');
    // Signed only, and /opt merged: a node set up as Kairos's "Using /opt" guide shows.
    dropIn(
      root,
      'etc/systemd/system',
      'kairos.conf',
      `[Service]\nExecStart=\nExecStart=systemd-sysext refresh --image-policy="root=signed+absent:usr=signed+absent"\nEnvironment="SYSTEMD_SYSEXT_HIERARCHIES=${KAIROS_SYSEXT_HIERARCHIES.join(':')}:/opt"\n`,
    );
    const refused = kbundle(['sysext', 'install', `file:${image.path}`, '--root', root]);
    expect(refused.code).toBe(EXIT_CODES.REFUSED);
    expect(refused.stderr).toMatch(/image policy root=signed\+absent:usr=signed\+absent: root=signed\+absent, but this image offers verity/);

    const tree = writeTree(join(tempDir(), 'tree'), FILES);
    const out = tempDir();
    const built = kbundle(['sysext', 'build', tree, '--name', 'spread', '-o', out, '--key', keys.key, '--cert', keys.cert]);
    expect(built.code, built.stderr).toBe(0);
    const signed = join(out, 'spread.sysext.raw');
    const ok = kbundle(['sysext', 'install', `file:${signed}`, '--root', root, '--cert', keys.cert, '--systemd-version', '256']);
    expect(ok.code, ok.stderr).toBe(0);
    // /opt is merged on this node; /usr/libexec, /usr/local/etc and /usr/out-top still are not.
    expect(ok.stderr).toBe(
      `kbundle: warning: spread.sysext.raw: not merged on this node, outside SYSTEMD_SYSEXT_HIERARCHIES=${KAIROS_SYSEXT_HIERARCHIES.join(':')}:/opt: /usr/libexec, /usr/local/etc, /usr/out-top\n`,
    );

    // check: --hierarchies overrides the node's; a relative entry is refused as systemd would.
    const plainSystemd = kbundle(['sysext', 'check', signed, '--root', root, '--cert', keys.cert, '--systemd-version', '256', '--hierarchies', '/usr:/opt', '--json']);
    expect(plainSystemd.code, plainSystemd.stderr).toBe(0);
    expect((JSON.parse(plainSystemd.stdout) as { warnings: string[] }).warnings).toEqual([]);
    const bad = kbundle(['sysext', 'check', signed, '--os-release', join(root, 'etc/os-release'), '--hierarchies', 'usr/bin']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--hierarchies \(SYSTEMD_SYSEXT_HIERARCHIES\): "usr\/bin" is not a list of absolute paths/);
  });
});
