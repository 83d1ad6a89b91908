import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync, openSync, readSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildSysext } from '../src/sysext/build.js';
import { checkImage } from '../src/sysext/check.js';
import { readGpt } from '../src/sysext/gpt.js';
import { parseReleaseFile } from '../src/sysext/release.js';
import { runTool } from '../src/sysext/tools.js';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { isKbError } from '../src/errors.js';
import { kbundle } from './helpers/cli.js';
import { cleanupTempDirs, mustRun, tempDir } from './helpers/exec.js';
import { makeCert, makeTree, mergeAndRun, requireTools } from './fixtures/sysext/helpers.js';

afterAll(cleanupTempDirs);

const debian12 = parseReleaseFile('ID=debian\nVERSION_ID=12\n');

describe('sysext build: reproducible GPT images with dm-verity', () => {
  let tree: string;
  let keys: { key: string; cert: string };
  let other: { key: string; cert: string };
  beforeAll(() => {
    requireTools('mksquashfs', 'unsquashfs', 'mkfs.erofs', 'fsck.erofs', 'systemd-repart', 'systemd-dissect', 'veritysetup', 'sfdisk', 'openssl', 'unshare');
    tree = makeTree(join(tempDir(), 'tree'));
    const d = tempDir();
    keys = makeCert(d, 'kbundle-test-db');
    other = makeCert(d, 'someone-else');
  });

  it('gives the same bytes for the same input twice (unsigned, signed with RSA, erofs)', async () => {
    for (const extra of [{}, { key: keys.key, cert: keys.cert }, { fs: 'erofs' as const }]) {
      const a = await buildSysext({ name: 'demo', tree, outDir: tempDir(), ...extra });
      const b = await buildSysext({ name: 'demo', tree, outDir: tempDir(), ...extra });
      expect(a.fileName).toBe('demo.sysext.raw');
      expect(readFileSync(a.path).equals(readFileSync(b.path))).toBe(true);
    }
  });

  it('is what systemd-dissect, sfdisk, veritysetup and unsquashfs see: root + root-verity + root-verity-sig', async () => {
    const r = await buildSysext({
      name: 'demo',
      tree,
      outDir: tempDir(),
      fs: 'squashfs',
      key: keys.key,
      cert: keys.cert,
      release: { id: 'debian', versionId: '12', architecture: 'x86-64' },
      arch: 'x86-64',
    });
    // systemd's own reading of the image (loop device, blkid, its GPT parser)
    const dissect = mustRun('systemd-dissect', ['--json=short', r.path]);
    const parts = (JSON.parse(dissect) as { mounts: { designator: string; fstype: string; architecture: string; verity: string; partition_uuid: string }[] }).mounts;
    const byDesignator = Object.fromEntries(parts.map((m) => [m.designator, m]));
    expect(byDesignator.root).toMatchObject({ fstype: 'squashfs', architecture: 'x86-64', verity: 'signed' });
    expect(byDesignator['root-verity']).toMatchObject({ fstype: 'DM_verity_hash' });
    expect(byDesignator['root-verity-sig']).toMatchObject({ fstype: 'verity_hash_signature' });
    // root hash convention: data UUID = first half, hash UUID = second half
    expect((byDesignator.root!.partition_uuid + byDesignator['root-verity']!.partition_uuid).replace(/-/g, '')).toBe(r.rootHash);

    // util-linux agrees on the partition table kbundle reads itself
    const sf = JSON.parse(mustRun('sfdisk', ['-J', r.path])) as { partitiontable: { partitions: { start: number; size: number; type: string; uuid: string }[] } };
    const gpt = (await readGpt(r.path))!;
    expect(gpt.partitions.map((p) => [p.offset / 512, p.size / 512, p.typeUuid, p.uuid])).toEqual(
      sf.partitiontable.partitions.map((p) => [p.start, p.size, p.type.toLowerCase(), p.uuid.toLowerCase()]),
    );

    // cryptsetup verifies kbundle's hash tree against the root hash, in userspace
    const [data, hash, sig] = gpt.partitions;
    const dir = tempDir();
    const cut = (p: { offset: number; size: number }, f: string) => {
      const buf = Buffer.alloc(p.size);
      const fd = openSync(r.path, 'r');
      readSync(fd, buf, 0, p.size, p.offset);
      closeSync(fd);
      writeFileSync(join(dir, f), buf);
    };
    cut(data!, 'data');
    cut(hash!, 'hash');
    expect(spawnSync('veritysetup', ['verify', join(dir, 'data'), join(dir, 'hash'), r.rootHash!]).status).toBe(0);
    expect(spawnSync('veritysetup', ['verify', join(dir, 'data'), join(dir, 'hash'), '0'.repeat(64)]).status).not.toBe(0);

    // the signature partition: JSON with the root hash, the cert fingerprint and a PKCS#7 signature openssl accepts
    cut(sig!, 'sig');
    const json = JSON.parse(readFileSync(join(dir, 'sig')).toString('utf8').replace(/\0+$/, '')) as { rootHash: string; certificateFingerprint: string; signature: string };
    expect(json.rootHash).toBe(r.rootHash);
    const fp = mustRun('openssl', ['x509', '-in', keys.cert, '-noout', '-fingerprint', '-sha256']).split('=')[1]!.trim().replace(/:/g, '').toLowerCase();
    expect(json.certificateFingerprint).toBe(fp);
    writeFileSync(join(dir, 'sig.der'), Buffer.from(json.signature, 'base64'));
    writeFileSync(join(dir, 'roothash'), json.rootHash);
    const verify = (cert: string) =>
      spawnSync('openssl', [
        'smime',
        '-verify',
        '-binary',
        '-inform',
        'DER',
        '-in',
        join(dir, 'sig.der'),
        '-content',
        join(dir, 'roothash'),
        '-certfile',
        cert,
        '-nointern',
        '-noverify',
        '-out',
        '/dev/null',
      ]).status;
    expect(verify(keys.cert)).toBe(0);
    expect(verify(other.cert)).not.toBe(0);

    // the file system: unsquashfs at the partition offset, only usr/ and opt/, the release file from the flags
    const list = mustRun('unsquashfs', ['-o', String(data!.offset), '-lln', r.path]);
    expect(list).toMatch(/-rwxr-xr-x 0\/0 +\d+ 1970-01-01 00:00 squashfs-root\/usr\/bin\/hello-kbundle/);
    expect(list).toMatch(/squashfs-root\/opt\/kbundle-demo\/data.txt/);
    expect(list).not.toMatch(/os-release/);
    expect(mustRun('unsquashfs', ['-o', String(data!.offset), '-cat', r.path, 'usr/lib/extension-release.d/extension-release.demo'])).toBe('ID=debian\nVERSION_ID=12\nARCHITECTURE=x86-64\n');
  });

  it('check: verifies the signature against the trusted certificate and refuses another one', async () => {
    const r = await buildSysext({ name: 'demo', tree, outDir: tempDir(), key: keys.key, cert: keys.cert });
    const trusted = await checkImage(r.path, { osRelease: debian12, policy: 'root=signed+absent:usr=signed+absent', certs: [keys.cert] });
    expect(trusted.ok).toBe(true);
    expect(trusted.protection).toBe('signed');
    const wrong = await checkImage(r.path, { osRelease: debian12, policy: 'root=signed+absent:usr=signed+absent', certs: [other.cert] });
    expect(wrong.ok).toBe(false);
    expect(wrong.reasons.join('\n')).toMatch(/someone-else.*does not verify the signature/);
    // Without Trusted Boot the same image is accepted as plain verity
    expect((await checkImage(r.path, { osRelease: debian12, certs: [other.cert] })).ok).toBe(true);
    // An unsigned image under Trusted Boot
    const unsigned = await buildSysext({ name: 'demo', tree, outDir: tempDir() });
    const tb = await checkImage(unsigned.path, { osRelease: debian12, policy: 'root=signed+absent:usr=signed+absent', certs: [keys.cert] });
    expect(tb.reasons.join('\n')).toMatch(/not signed/);
  });

  it('large images (1 MiB-aligned partition) get their squashfs written in place, and verify', async () => {
    const big = makeTree(join(tempDir(), 'big'));
    // 3 MiB of incompressible data: repart aligns the root partition to 1 MiB from this size on
    let x = Buffer.alloc(0);
    const { createHash } = await import('node:crypto');
    let h = createHash('sha256').update('kbundle').digest();
    const parts: Buffer[] = [];
    for (let i = 0; i < (3 * 1024 * 1024) / 32; i++) parts.push((h = createHash('sha256').update(h).digest()));
    x = Buffer.concat(parts);
    writeFileSync(join(big, 'usr/share/kbundle-demo/blob'), x);
    const a = await buildSysext({ name: 'big', tree: big, outDir: tempDir(), fs: 'squashfs' });
    const b = await buildSysext({ name: 'big', tree: big, outDir: tempDir(), fs: 'squashfs' });
    expect(readFileSync(a.path).equals(readFileSync(b.path))).toBe(true);
    const [data, hash] = a.partitions;
    expect(data!.offset).toBe(1024 * 1024);
    const dir = tempDir();
    const img = readFileSync(a.path);
    writeFileSync(join(dir, 'data'), img.subarray(data!.offset, data!.offset + data!.size));
    writeFileSync(join(dir, 'hash'), img.subarray(hash!.offset, hash!.offset + hash!.size));
    expect(spawnSync('veritysetup', ['verify', join(dir, 'data'), join(dir, 'hash'), a.rootHash!]).status).toBe(0);
    const blob = execFileSync('unsquashfs', ['-o', String(data!.offset), '-cat', a.path, 'usr/share/kbundle-demo/blob'], { maxBuffer: 16 * 1024 * 1024 });
    expect(blob.equals(x)).toBe(true);
    expect((await checkImage(a.path, { osRelease: debian12 })).ok).toBe(true);
    expect(JSON.parse(mustRun('systemd-dissect', ['--json=short', a.path])).mounts.map((m: { designator: string }) => m.designator)).toEqual(['root', 'root-verity']);
  });

  it('erofs images: built with mkfs.erofs, read back with fsck.erofs, accepted by check', async () => {
    const r = await buildSysext({ name: 'demo', tree, outDir: tempDir(), fs: 'erofs', release: { id: 'debian', versionId: '12' } });
    const c = await checkImage(r.path, { osRelease: debian12 });
    expect(c.info.fsType).toBe('erofs');
    expect(c.lines.filter((l) => !l.ok)).toEqual([]);
    expect(c.info.topLevel).toEqual(['opt', 'usr']);
    expect(mustRun('systemd-dissect', ['--json=short', r.path])).toMatch(/"fstype":"erofs"/);
  });

  it('check: a corrupted data partition is caught by the hash tree', async () => {
    const r = await buildSysext({ name: 'demo', tree, outDir: tempDir() });
    const gpt = (await readGpt(r.path))!;
    const buf = readFileSync(r.path);
    buf[gpt.partitions[0]!.offset + 100]! ^= 0xff;
    writeFileSync(r.path, buf);
    const c = await checkImage(r.path, { osRelease: debian12 });
    expect(c.ok).toBe(false);
    expect(c.reasons.join('\n')).toMatch(/hash tree .* does not match the data/);
  });

  it('plain format: a bare squashfs with a warning, refused by Kairos policy, accepted by a permissive one', async () => {
    const warnings: string[] = [];
    const r = await buildSysext({ name: 'demo', tree, outDir: tempDir(), format: 'plain', fs: 'squashfs', onWarning: (w) => warnings.push(w) });
    expect(warnings.join()).toMatch(/no dm-verity/);
    expect(readFileSync(r.path).subarray(0, 4).toString('latin1')).toBe('hsqs');
    const kairos = await checkImage(r.path, { osRelease: debian12 });
    expect(kairos.reasons.join('\n')).toMatch(/root=verity\+absent, but this image offers unprotected \(a plain file system without dm-verity\)/);
    expect((await checkImage(r.path, { osRelease: debian12, policy: '*' })).ok).toBe(true);
  });

  it('refuses trees and names systemd would not merge as meant', async () => {
    const out = tempDir();
    await expect(buildSysext({ name: 'demo', tree: makeTree(join(tempDir(), 't'), { 'etc/foo.conf': 'x' }), outDir: out })).rejects.toThrow(/etc is outside usr\/ and opt\//);
    await expect(buildSysext({ name: 'demo', tree: makeTree(join(tempDir(), 't'), { 'usr/lib/os-release': 'ID=x' }), outDir: out })).rejects.toThrow(/usr\/lib\/os-release/);
    await expect(buildSysext({ name: 'bad_name', tree, outDir: out })).rejects.toThrow(/not a valid extension name/);
    await expect(buildSysext({ name: 'demo', tree, outDir: out, key: keys.key })).rejects.toThrow(/--key and --cert go together/);
    await expect(buildSysext({ kind: 'confext', name: 'demo', tree, outDir: out })).rejects.toThrow(/opt, usr are outside etc\//);
  });

  it('merges for real with systemd-sysext 252: the plain image and the (unsigned) verity DDI', async () => {
    for (const format of ['plain', 'ddi'] as const) {
      const r = await buildSysext({ name: 'demo', tree, outDir: tempDir(), format, fs: 'squashfs', release: { id: 'debian', versionId: '12' } });
      const root = tempDir();
      mkdirSync(join(root, 'usr/lib'), { recursive: true });
      mkdirSync(join(root, 'opt'), { recursive: true });
      mkdirSync(join(root, 'var/lib/extensions'), { recursive: true });
      writeFileSync(join(root, 'usr/lib/os-release'), 'ID=debian\nVERSION_ID=12\n');
      // systemd 252 names images by the file name minus .raw, so on this host the file is demo.raw
      copyFileSync(r.path, join(root, 'var/lib/extensions/demo.raw'));
      const m = mergeAndRun(root, `cat "$1/usr/bin/hello-kbundle"; cat "$1/opt/kbundle-demo/data.txt"; systemd-sysext --root="$1" status`);
      expect(m.out).toMatch(/Using extensions 'demo'/);
      expect(m.out).toMatch(/echo hello from a kbundle sysext/);
      expect(m.out).toMatch(/opt data/);
      expect(existsSync(join(root, 'usr/bin/hello-kbundle'))).toBe(false); // unmerged again
    }
  });

  it('the signed DDI needs device-mapper to merge (absent here)', async () => {
    const r = await buildSysext({ name: 'demo', tree, outDir: tempDir(), key: keys.key, cert: keys.cert });
    const root = tempDir();
    mkdirSync(join(root, 'usr/lib'), { recursive: true });
    mkdirSync(join(root, 'var/lib/extensions'), { recursive: true });
    writeFileSync(join(root, 'usr/lib/os-release'), 'ID=debian\nVERSION_ID=12\n');
    copyFileSync(r.path, join(root, 'var/lib/extensions/demo.raw'));
    const dm = existsSync('/dev/mapper/control');
    const m = mergeAndRun(root, 'true');
    if (!dm) expect(m.out).toMatch(/device-mapper|Failed to decrypt image/);
  });

  it('NAME.sysext.raw merges on systemd 252 too: the release file is also written as extension-release.NAME.sysext', async () => {
    const r = await buildSysext({ name: 'demo', tree, outDir: tempDir(), fs: 'squashfs', release: { id: 'debian', versionId: '12' } });
    expect(
      mustRun('unsquashfs', ['-o', String((await readGpt(r.path))!.partitions[0]!.offset), '-l', '-d', '', r.path])
        .split('\n')
        .filter((l) => l.includes('/extension-release.d/')),
    ).toEqual(['/usr/lib/extension-release.d/extension-release.demo', '/usr/lib/extension-release.d/extension-release.demo.sysext']);
    const root = tempDir();
    for (const d of ['usr/lib', 'opt', 'var/lib/extensions']) mkdirSync(join(root, d), { recursive: true });
    writeFileSync(join(root, 'usr/lib/os-release'), 'ID=debian\nVERSION_ID=12\n');
    copyFileSync(r.path, join(root, 'var/lib/extensions/demo.sysext.raw')); // the Kairos file name
    const m = mergeAndRun(root, `cat "$1/usr/bin/hello-kbundle"`);
    expect(m.out).toMatch(/Using extensions 'demo.sysext'/); // 252's image name
    expect(m.out).toMatch(/echo hello from a kbundle sysext/);
    // The check agrees for 252 and for 256 (which strips .sysext.raw and reads extension-release.demo).
    for (const v of [252, 256]) expect((await checkImage(r.path, { osRelease: debian12, systemdVersion: v })).ok).toBe(true);
    // Without the second file, 252 finds no release file for "demo.sysext", and says so.
    const only = await buildSysext({ name: 'demo', tree, outDir: tempDir(), fs: 'squashfs', release: { id: 'debian', versionId: '12' }, compatRelease: false });
    const c = await checkImage(only.path, { osRelease: debian12, systemdVersion: 252 });
    expect(c.reasons.join('\n')).toMatch(/looks for usr\/lib\/extension-release.d\/extension-release.demo.sysext/);
    copyFileSync(only.path, join(root, 'var/lib/extensions/demo.sysext.raw'));
    expect(mergeAndRun(root, `cat "$1/usr/bin/hello-kbundle" 2>&1 || true`).out).not.toMatch(/echo hello from a kbundle sysext/);
  });

  it('CLI: build + check, exit codes and messages', () => {
    const out = tempDir();
    const b = kbundle(['sysext', 'build', tree, '--name', 'demo', '-o', out, '--id', 'debian', '--version-id', '12', '--json']);
    expect(b.code, b.stderr).toBe(0);
    const j = JSON.parse(b.stdout) as { path: string; rootHash: string };
    const osr = join(tempDir(), 'os-release');
    writeFileSync(osr, 'ID=debian\nVERSION_ID=12\n');
    const ok = kbundle(['sysext', 'check', j.path, '--os-release', osr]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/would be merged/);
    writeFileSync(osr, 'ID=debian\nVERSION_ID=13\n');
    const no = kbundle(['sysext', 'check', j.path, '--os-release', osr]);
    expect(no.code).toBe(EXIT_CODES.REFUSED);
    expect(no.stderr).toMatch(/kbundle: error: demo.sysext.raw would not be merged: compatibility: VERSION_ID=12, but the node has VERSION_ID=13/);
    expect(no.stderr).not.toMatch(/\n\s+at /);
    const missing = kbundle(['sysext', 'build', join(tempDir(), 'nope'), '--name', 'demo', '-o', out]);
    expect(missing.code).toBe(EXIT_CODES.NOT_FOUND);
    expect(missing.stderr).toMatch(/no such directory/);
    const notRaw = join(tempDir(), 'x.txt');
    writeFileSync(notRaw, 'hello');
    const bad = kbundle(['sysext', 'check', notRaw, '--os-release', osr]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/neither a GPT disk image nor a squashfs\/erofs file system/);
    execFileSync('true');
  });
});

describe('default file system: erofs where the build host makes DDIs itself', () => {
  it('picks erofs for systemd >= 255 (its --make-ddi formats erofs, as AuroraBoot builds there), squashfs before', async () => {
    const { defaultFilesystem, MAKE_DDI_SINCE } = await import('../src/kairos/systemd-version.js');
    expect(MAKE_DDI_SINCE).toBe(255);
    const host = (lib: string | undefined, dir = 'usr/lib/systemd') => {
      const root = tempDir();
      mkdirSync(join(root, dir), { recursive: true });
      if (lib) writeFileSync(join(root, dir, lib), '');
      return root;
    };
    expect(await defaultFilesystem(host('libsystemd-shared-256.so'))).toEqual({ fs: 'erofs', systemd: 256 });
    expect(await defaultFilesystem(host('libsystemd-shared-255.4-1ubuntu8.so', 'usr/lib/x86_64-linux-gnu/systemd'))).toEqual({ fs: 'erofs', systemd: 255 });
    expect(await defaultFilesystem(host('libsystemd-shared-252.so'))).toEqual({ fs: 'squashfs', systemd: 252 });
    expect(await defaultFilesystem(host(undefined))).toEqual({ fs: 'squashfs', systemd: undefined });
    // On the build host the default follows its systemd (squashfs on this machine kind, Debian 12's
    // 252); an explicit --fs wins either way.
    const tree = makeTree(join(tempDir(), 'tree'));
    const auto = await buildSysext({ name: 'auto', tree, outDir: tempDir() });
    expect(auto.fs).toBe((await defaultFilesystem()).fs);
    expect((await buildSysext({ name: 'auto', tree, outDir: tempDir(), fs: 'erofs' })).fs).toBe('erofs');
  });
});

/**
 * The pid a tool wrote with `echo $$ > file`, once its line is complete: the shell creates the
 * file before it writes it, and an empty read made pid 0 (which signals the whole process group,
 * so `kill(0, 0)` succeeded; seen once under a loaded CI).
 */
function writtenPid(file: string): number | undefined {
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  return text.endsWith('\n') ? Number(text) : undefined;
}

describe('runTool: an abort signal (the sysext build kills mksquashfs when the tree check fails) and a deadline', () => {
  it('kills the tool, and rejects with the reason only once it has exited', async () => {
    const dir = tempDir();
    const pidFile = join(dir, 'pid');
    const stop = new AbortController();
    const running = runTool('sh', ['-c', `echo $$ > ${pidFile}; exec sleep 60`], { signal: stop.signal });
    for (let i = 0; i < 200 && writtenPid(pidFile) === undefined; i++) await new Promise((r) => setTimeout(r, 25));
    const pid = writtenPid(pidFile)!;
    expect(pid).toBeGreaterThan(1);
    const reason = new Error('the tree check failed');
    const started = performance.now();
    stop.abort(reason);
    await expect(running).rejects.toBe(reason);
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
  });

  it('does not leave a tool running when the signal was aborted before the start', async () => {
    const dir = tempDir();
    const pidFile = join(dir, 'pid');
    const reason = new Error('already failed');
    await expect(runTool('sh', ['-c', `echo $$ > ${pidFile}; exec sleep 60`], { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    const pid = writtenPid(pidFile);
    if (pid !== undefined) expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
  });

  it('stops a tool at its deadline: TIMEOUT naming the tool, and the tool is gone', async () => {
    const dir = tempDir();
    const pidFile = join(dir, 'pid');
    const err = await runTool('sh', ['-c', `echo $$ > ${pidFile}; exec sleep 60`], { deadlineMs: 300 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isKbError(err, 'TIMEOUT'), String(err)).toBe(true);
    expect((err as Error).message).toBe('sh did not finish within 300 ms; it was stopped');
    const pid = writtenPid(pidFile);
    if (pid !== undefined) expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
  });

  it('runs to the end when the signal is never aborted', async () => {
    const r = await runTool('sh', ['-c', 'echo done'], { signal: new AbortController().signal });
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe('done\n');
  });
});
