import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync, createReadStream } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildSysext, type SysextBuildResult } from '../src/sysext/build.js';
import { guidToBytes } from '../src/sysext/gpt.js';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { recordFileName, recordKey } from '../src/state/records.js';
import { cliShellCommand, kbundle, kbundleAsync } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';
import { makeCert, makeTree, requireTools, snapshot } from './fixtures/sysext/helpers.js';

afterAll(cleanupTempDirs);

/** A node root: os-release, and a libsystemd-shared-N.so so kbundle knows the node's systemd. */
function nodeRoot(systemd = 256, osRelease = 'ID=debian\nVERSION_ID=12\n'): string {
  const root = tempDir('kbundle-node-');
  mkdirSync(join(root, 'etc'), { recursive: true });
  mkdirSync(join(root, 'usr/lib/systemd'), { recursive: true });
  writeFileSync(join(root, 'etc/os-release'), osRelease);
  writeFileSync(join(root, `usr/lib/systemd/libsystemd-shared-${systemd}.so`), '');
  return root;
}

const ok = (r: { code: number; stdout: string; stderr: string }) => {
  expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
  return r.stdout;
};

describe('sysext install/list/enable/disable/remove with kairos-agent layout', () => {
  let tree: string;
  let ddi: SysextBuildResult;
  let signed: SysextBuildResult;
  let plain: SysextBuildResult;
  let keys: { key: string; cert: string };
  let other: { key: string; cert: string };
  let server: Server;
  let base: string;
  let registry: RegistryHandle;
  let layout: string;

  beforeAll(async () => {
    requireTools('mksquashfs', 'unsquashfs', 'systemd-repart', 'openssl', 'skopeo');
    tree = makeTree(join(tempDir(), 'tree'));
    const d = tempDir();
    keys = makeCert(d, 'node-db');
    other = makeCert(d, 'not-enrolled');
    const release = { id: 'debian', versionId: '12' };
    ddi = await buildSysext({ name: 'demo', tree, outDir: tempDir(), release });
    signed = await buildSysext({ name: 'demo', tree, outDir: tempDir(), release, key: keys.key, cert: keys.cert });
    plain = await buildSysext({ name: 'demo', tree, outDir: tempDir(), release, format: 'plain' });
    const files = tempDir();
    copyFileSync(ddi.path, join(files, 'demo.sysext.raw'));
    writeFileSync(join(files, 'notes.txt'), 'not an image');
    server = createServer((req, res) => {
      const name = (req.url ?? '/').split('?')[0]!.slice(1);
      if (!existsSync(join(files, name))) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200);
      createReadStream(join(files, name)).pipe(res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    registry = await startRegistry({ variant: 'open' });
    // Package the .raw as an OCI image (root holds demo.sysext.raw) and push it with skopeo.
    layout = join(tempDir(), 'oci');
    ok(kbundle(['sysext', 'build', tree, '--name', 'demo', '-o', tempDir(), '--id', 'debian', '--version-id', '12', '--image', `oci:${layout}:1.0`]));
    const sk = spawnSync('skopeo', ['copy', '--dest-tls-verify=false', `oci:${layout}:1.0`, `docker://${registry.host}/kairos/demo-sysext:1.0`], { encoding: 'utf8' });
    expect(sk.status, sk.stderr).toBe(0);
  });
  afterAll(async () => {
    server?.close();
    await registry?.stop();
  });

  it('full lifecycle under --root leaves exactly the tree kairos-agent leaves', () => {
    const root = nodeRoot();
    const raw = join(tempDir(), 'demo.sysext.raw');
    copyFileSync(ddi.path, raw);
    chmodSync(raw, 0o640); // file: keeps the mode, like kairos-agent
    const r = ['--root', root];
    expect(ok(kbundle(['sysext', 'install', `file:${raw}`, ...r]))).toMatch(/installed demo.sysext.raw into \/var\/lib\/kairos\/extensions \(checked\)/);
    for (const s of ['active', 'passive', 'recovery', 'common']) ok(kbundle(['sysext', 'enable', 'demo', `--${s}`, ...r]));
    expect(ok(kbundle(['sysext', 'enable', 'demo', '--active', ...r]))).toMatch(/already enabled in active/); // idempotent
    // --now: merged only when booted in that state (/run/cos/<state>_mode), or for common
    expect(ok(kbundle(['sysext', 'enable', 'demo', '--passive', '--now', ...r]))).toMatch(/not merged now: the node is not booted in passive/);
    mkdirSync(join(root, 'run/cos'), { recursive: true });
    writeFileSync(join(root, 'run/cos/active_mode'), '');
    expect(ok(kbundle(['sysext', 'enable', 'demo', '--active', '--now', ...r]))).toMatch(/linked into \/run\/extensions[\s\S]*not restarting systemd-sysext: --root/);
    const listed = JSON.parse(ok(kbundle(['sysext', 'list', '--json', ...r]))) as { name: string; enabled: string[]; running: boolean }[];
    expect(listed).toEqual([{ name: 'demo.sysext.raw', enabled: ['active', 'passive', 'recovery', 'common'], running: true }]);
    expect(ok(kbundle(['sysext', 'list', '--recovery', ...r]))).toMatch(/demo.sysext.raw/);

    const store = 'var/lib/kairos/extensions';
    expect(snapshot(root)).toEqual({
      etc: 'd',
      'etc/os-release': 'f644',
      run: 'd',
      'run/cos': 'd',
      'run/cos/active_mode': 'f644',
      'run/extensions': 'd',
      'run/extensions/demo.sysext.raw': `l -> /${store}/active/demo.sysext.raw`,
      usr: 'd',
      'usr/lib': 'd',
      'usr/lib/systemd': 'd',
      'usr/lib/systemd/libsystemd-shared-256.so': 'f644',
      var: 'd',
      'var/lib': 'd',
      // kbundle's own state (the root's lock, and the install record of src/state); the rest is kairos-agent's tree
      'var/lib/kbundle': 'd',
      'var/lib/kbundle/installed': 'd',
      [`var/lib/kbundle/installed/${recordFileName(recordKey('sysext', 'file', raw))}`]: 'f644',
      'var/lib/kairos': 'd',
      [store]: 'd',
      [`${store}/active`]: 'd',
      [`${store}/active/demo.sysext.raw`]: `l -> /${store}/demo.sysext.raw`,
      [`${store}/common`]: 'd',
      [`${store}/common/demo.sysext.raw`]: `l -> /${store}/demo.sysext.raw`,
      [`${store}/demo.sysext.raw`]: 'f640',
      [`${store}/passive`]: 'd',
      [`${store}/passive/demo.sysext.raw`]: `l -> /${store}/demo.sysext.raw`,
      [`${store}/recovery`]: 'd',
      [`${store}/recovery/demo.sysext.raw`]: `l -> /${store}/demo.sysext.raw`,
    });

    ok(kbundle(['sysext', 'disable', 'demo', '--passive', ...r]));
    expect(ok(kbundle(['sysext', 'disable', 'demo', '--passive', ...r]))).toMatch(/not enabled in passive/); // idempotent
    expect(existsSync(join(root, store, 'passive/demo.sysext.raw'))).toBe(false);
    expect(ok(kbundle(['sysext', 'disable', 'demo', '--active', '--now', ...r]))).toMatch(/removed from \/run\/extensions/);
    ok(kbundle(['sysext', 'enable', 'demo', '--active', '--now', ...r]));
    expect(ok(kbundle(['sysext', 'remove', 'demo', '--now', ...r]))).toMatch(
      /disabled in active[\s\S]*disabled in recovery[\s\S]*disabled in common[\s\S]*demo.sysext.raw removed[\s\S]*removed from \/run\/extensions/,
    );
    // kairos-agent's remove lists (and so creates) every boot-state folder; the links and file are gone
    expect(Object.entries(snapshot(root)).filter(([p]) => p.startsWith('var/lib/kairos') || p.startsWith('run/extensions'))).toEqual([
      ['run/extensions', 'd'],
      ['var/lib/kairos', 'd'],
      [store, 'd'],
      [`${store}/active`, 'd'],
      [`${store}/common`, 'd'],
      [`${store}/passive`, 'd'],
      [`${store}/recovery`, 'd'],
    ]);
    const gone = kbundle(['sysext', 'remove', 'demo', ...r]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/sysext "demo" is not installed/);
  });

  it('on the running system (no --root): files under /var/lib/kairos, --now links /run/extensions and restarts systemd-sysext', () => {
    // A private mount namespace with fresh /run and /var/lib, so "/" is a node of its own; this
    // machine runs no systemd, so systemctl is a recording stand-in on PATH (the one part that
    // is not real: kbundle's side of the call is what is under test).
    const shim = tempDir();
    writeFileSync(join(shim, 'systemctl'), `#!/bin/sh\necho "$@" >> ${shim}/calls\nif [ -e ${shim}/fail ]; then echo "Failed to restart systemd-sysext.service: Unit is masked." >&2; exit 1; fi\n`);
    chmodSync(join(shim, 'systemctl'), 0o755);
    // The Kairos file name: on this machine's systemd 252 the image is "demo.sysext", which the
    // second release file kbundle writes (extension-release.demo.sysext) answers; the check agrees.
    const raw = join(tempDir(), 'demo.sysext.raw');
    copyFileSync(ddi.path, raw);
    const k = cliShellCommand();
    const script = `set -e
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/lib
${k} sysext install file:${raw}
${k} sysext enable demo --common --now
find /var/lib/kairos /run/extensions -printf '%p %y %l\\n' | sort
touch ${shim}/fail
${k} sysext remove demo --now || echo "remove exit $?"
ls -A /var/lib/kairos/extensions /run/extensions`;
    const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], { encoding: 'utf8', env: { ...process.env, PATH: `${shim}:${process.env.PATH}` } });
    expect(r.status, r.stderr).toBe(0);
    const store = '/var/lib/kairos/extensions';
    expect(r.stdout).toMatch(/installed demo.sysext.raw into \/var\/lib\/kairos\/extensions \(checked\)/);
    expect(r.stdout).toMatch(/linked into \/run\/extensions[\s\S]*restarted systemd-sysext/);
    expect(r.stdout).toContain(`${store}/common/demo.sysext.raw l ${store}/demo.sysext.raw\n`);
    expect(r.stdout).toContain(`/run/extensions/demo.sysext.raw l ${store}/common/demo.sysext.raw\n`);
    // The failing restart is reported with systemctl's own words, after the files were removed.
    expect(r.stderr).toMatch(/systemctl restart systemd-sysext failed: Failed to restart systemd-sysext.service: Unit is masked\./);
    expect(r.stdout).toMatch(/remove exit 1/);
    expect(r.stdout).toMatch(/\/run\/extensions:\n\n\/var\/lib\/kairos\/extensions:\nactive\ncommon\npassive\nrecovery\n$/);
    expect(readFileSync(join(shim, 'calls'), 'utf8')).toBe('restart systemd-sysext\nrestart systemd-sysext\n');
  });

  it('installs from a loopback HTTP server (query string dropped from the name) and from the registry', async () => {
    const root = nodeRoot();
    ok(await kbundleAsync(['sysext', 'install', `${base}/demo.sysext.raw?token=abc`, '--root', root]));
    expect(readdirSync(join(root, 'var/lib/kairos/extensions'))).toEqual(['demo.sysext.raw']);
    const root2 = nodeRoot();
    expect(ok(kbundle(['sysext', 'install', `oci:${registry.host}/kairos/demo-sysext:1.0`, '--root', root2]))).toMatch(/installed demo.sysext.raw/);
    expect(readdirSync(join(root2, 'var/lib/kairos/extensions'))).toEqual(['demo.sysext.raw']);
    const root3 = nodeRoot();
    ok(kbundle(['sysext', 'install', `docker://${registry.host}/kairos/demo-sysext:1.0`, '--root', root3]));
    ok(kbundle(['sysext', 'install', `oci:${layout}:1.0`, '--root', root3])); // a local OCI layout too; reinstall is fine
    expect(readdirSync(join(root3, 'var/lib/kairos/extensions'))).toEqual(['demo.sysext.raw']);
    const bad = await kbundleAsync(['sysext', 'install', `${base}/notes.txt`, '--root', nodeRoot()]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/"notes.txt" is not a .raw file/);
    const missing = await kbundleAsync(['sysext', 'install', `${base}/nope.raw`, '--root', nodeRoot()]);
    expect(missing.stderr).toMatch(/HTTP 404/);
  });

  it('install oci: with --key verifies the cosign signature on the resolved digest before extracting; file: refuses --key', () => {
    const keys = tempDir();
    const env = { ...process.env, KBUNDLE_PASSWORD: 'pw' };
    expect(kbundle(['key', 'generate', '--out', join(keys, 'good')], { env }).code).toBe(0);
    expect(kbundle(['key', 'generate', '--out', join(keys, 'evil')], { env }).code).toBe(0);
    const ref = `${registry.host}/kairos/demo-sysext-signed:1.0`;
    const sk = spawnSync('skopeo', ['copy', '--dest-tls-verify=false', `oci:${layout}:1.0`, `docker://${ref}`], { encoding: 'utf8' });
    expect(sk.status, sk.stderr).toBe(0);
    const signedBy = kbundle(['sign', ref, '--key', join(keys, 'good.key')], { env });
    expect(signedBy.code, signedBy.stderr).toBe(0);

    const root = nodeRoot();
    const ok = kbundle(['sysext', 'install', `oci:${ref}`, '--root', root, '--key', join(keys, 'good.pub'), '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    const summary = JSON.parse(ok.stdout) as { installed: string[]; digest: string; verified: string };
    expect(summary.installed).toEqual(['demo.sysext.raw']);
    expect(summary.verified).toContain('good.pub');
    expect(summary.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(existsSync(join(root, 'var/lib/kairos/extensions/demo.sysext.raw'))).toBe(true);

    // Another key's signature, or none at all (the unsigned tag of the same image): nothing lands.
    const root2 = nodeRoot();
    for (const [r, key] of [
      [ref, 'evil.pub'],
      [`${registry.host}/kairos/demo-sysext:1.0`, 'good.pub'],
    ] as const) {
      const refused = kbundle(['sysext', 'install', `oci:${r}`, '--root', root2, '--key', join(keys, key)]);
      expect(refused.code).toBe(EXIT_CODES.REFUSED);
      expect(refused.stderr).toMatch(/kbundle: error: .*signature/i);
    }
    expect(existsSync(join(root2, 'var/lib/kairos/extensions'))).toBe(false); // not even the store folder
    const fileKey = kbundle(['sysext', 'install', `file:${ddi.path}`, '--root', root2, '--key', join(keys, 'good.pub')]);
    expect(fileKey.code).toBe(1);
    expect(fileKey.stderr).toMatch(/--key\/--policy verify signatures of OCI images; a file: source has none/);
  });

  it('checks before installing: policy, signature, os-release, systemd naming; nothing lands when refused', async () => {
    const refused = (args: string[], why: RegExp, root = nodeRoot()) => {
      const r = kbundle(['sysext', 'install', ...args, '--root', root]);
      expect(r.code, r.stdout).toBe(EXIT_CODES.REFUSED);
      expect(r.stderr).toMatch(why);
      expect(existsSync(join(root, 'var/lib/kairos/extensions'))).toBe(false); // not even the store folder
      return root;
    };
    const plainRaw = join(tempDir(), 'demo.sysext.raw');
    copyFileSync(plain.path, plainRaw);
    const root = refused([`file:${plainRaw}`], /would not be merged on this node[\s\S]*root=verity\+absent, but this image offers unprotected/);
    ok(kbundle(['sysext', 'install', `file:${plainRaw}`, '--root', root, '--no-check'])); // kairos-agent's behaviour, on request
    const signedRaw = join(tempDir(), 'demo.sysext.raw');
    copyFileSync(signed.path, signedRaw);
    const tb = ['--image-policy', 'root=signed+absent:usr=signed+absent'];
    refused([`file:${signedRaw}`, ...tb, '--cert', other.cert], /not-enrolled.*does not verify the signature/);
    ok(kbundle(['sysext', 'install', `file:${signedRaw}`, ...tb, '--cert', keys.cert, '--root', nodeRoot()]));
    const ddiRaw = join(tempDir(), 'demo.sysext.raw');
    copyFileSync(ddi.path, ddiRaw);
    refused([`file:${ddiRaw}`], /VERSION_ID=12, but the node has VERSION_ID=13/, nodeRoot(256, 'ID=debian\nVERSION_ID=13\n'));
    ok(kbundle(['sysext', 'install', `file:${ddiRaw}`, '--root', nodeRoot(252)])); // extension-release.demo.sysext is there too
    const only = await buildSysext({ name: 'demo', tree, outDir: tempDir(), release: { id: 'debian', versionId: '12' }, compatRelease: false });
    copyFileSync(only.path, ddiRaw);
    refused([`file:${ddiRaw}`], /systemd 252 .* looks for usr\/lib\/extension-release.d\/extension-release.demo.sysext/, nodeRoot(252));
  });

  it('on a Trusted Boot node (immucore sentinel) takes signed images only, trusting the firmware db', () => {
    /** An efivarfs file: 4 attribute bytes, then EFI_SIGNATURE_LISTs (one X.509 list per cert, one SHA-256 list). */
    const efivar = (certs: string[]) => {
      const list = (type: string, entries: Buffer[]) => {
        const sigSize = 16 + entries[0]!.length;
        const head = Buffer.alloc(28);
        guidToBytes(type).copy(head, 0);
        head.writeUInt32LE(28 + entries.length * sigSize, 16);
        head.writeUInt32LE(0, 20);
        head.writeUInt32LE(sigSize, 24);
        return Buffer.concat([head, ...entries.map((e) => Buffer.concat([guidToBytes('77fa9abd-0359-4d32-bd60-28f4e78f784b'), e]))]);
      };
      const der = (pem: string) => execFileSync('openssl', ['x509', '-in', pem, '-outform', 'DER']);
      const sha256 = list('c1c41626-504c-4092-aca9-41f936934328', [Buffer.alloc(32, 1), Buffer.alloc(32, 2)]);
      return Buffer.concat([Buffer.from([7, 0, 0, 0]), sha256, ...certs.map((c) => list('a5c059a1-94e4-4aa7-87b5-ab155c2bf072', [der(c)]))]);
    };
    const tbRoot = (dbCerts: string[]) => {
      const root = nodeRoot();
      mkdirSync(join(root, 'run/cos'), { recursive: true });
      writeFileSync(join(root, 'run/cos/uki_boot_mode'), '1');
      mkdirSync(join(root, 'sys/firmware/efi/efivars'), { recursive: true });
      writeFileSync(join(root, 'sys/firmware/efi/efivars/db-d719b2cb-3d3a-4596-a3bc-dad00e67656f'), efivar(dbCerts));
      return root;
    };
    const copy = (from: string) => {
      const to = join(tempDir(), 'demo.sysext.raw');
      copyFileSync(from, to);
      return `file:${to}`;
    };
    // Enrolled: the signed image lands, checked against the firmware's db entry.
    const enrolled = tbRoot([other.cert, keys.cert]);
    ok(kbundle(['sysext', 'install', copy(signed.path), '--root', enrolled]));
    expect(readdirSync(join(enrolled, 'var/lib/kairos/extensions'))).toEqual(['demo.sysext.raw']);
    const check = kbundle(['sysext', 'check', signed.path, '--root', enrolled, '--file-name', 'demo.sysext.raw']);
    expect(check.code, check.stderr).toBe(0);
    expect(check.stdout).toMatch(/root=signed\+absent: used as signed, signature valid, signed by firmware db entry 2/);
    // An unsigned verity image, or one signed by a certificate the firmware does not hold, is refused.
    for (const [image, why] of [
      [ddi.path, /a Trusted Boot node[\s\S]*root=signed\+absent, but this image offers verity \(dm-verity without a signature/],
      [signed.path, /a Trusted Boot node[\s\S]*signature is not trusted: firmware db entry 1 \(CN=not-enrolled\): does not verify/],
    ] as const) {
      const root = image === ddi.path ? tbRoot([keys.cert]) : tbRoot([other.cert]);
      const r = kbundle(['sysext', 'install', copy(image), '--root', root]);
      expect(r.code, r.stdout).toBe(EXIT_CODES.REFUSED);
      expect(r.stderr).toMatch(why);
      expect(existsSync(join(root, 'var/lib/kairos/extensions'))).toBe(false);
    }
    // The same unsigned image is fine on a node without Trusted Boot; /run/verity.d counts too.
    ok(kbundle(['sysext', 'install', copy(ddi.path), '--root', nodeRoot()]));
    const verityD = tbRoot([]);
    mkdirSync(join(verityD, 'run/verity.d'), { recursive: true });
    copyFileSync(keys.cert, join(verityD, 'run/verity.d/node-db.crt'));
    ok(kbundle(['sysext', 'install', copy(signed.path), '--root', verityD]));
  });

  it('refuses ambiguous names instead of taking the first match', () => {
    const root = nodeRoot();
    for (const n of ['demo.sysext.raw', 'demo2.sysext.raw']) {
      mkdirSync(join(root, 'var/lib/kairos/extensions'), { recursive: true });
      copyFileSync(ddi.path, join(root, 'var/lib/kairos/extensions', n));
    }
    const amb = kbundle(['sysext', 'enable', 'demo.*', '--active', '--root', root]);
    expect(amb.code).toBe(1);
    expect(amb.stderr).toMatch(/"demo\.\*" matches 2 extensions: demo.sysext.raw, demo2.sysext.raw/);
    ok(kbundle(['sysext', 'enable', 'demo', '--active', '--root', root])); // the exact name wins
    expect(readdirSync(join(root, 'var/lib/kairos/extensions/active'))).toEqual(['demo.sysext.raw']);
    const none = kbundle(['sysext', 'enable', 'demo', '--root', root]);
    expect(none.stderr).toMatch(/either --active, --passive, --recovery or --common must be set/);
    const two = kbundle(['sysext', 'enable', 'demo', '--active', '--passive', '--root', root]);
    expect(two.stderr).toMatch(/only one of --active, --passive, --recovery or --common/);
  });

  it('confext: the same lifecycle under /var/lib/kairos/confexts and /run/confexts', async () => {
    const ctree = tempDir();
    mkdirSync(join(ctree, 'etc/demo'), { recursive: true });
    writeFileSync(join(ctree, 'etc/demo/demo.conf'), 'x=1\n');
    const out = tempDir();
    ok(kbundle(['confext', 'build', ctree, '--name', 'democonf', '-o', out]));
    const root = nodeRoot();
    ok(kbundle(['confext', 'install', `file:${join(out, 'democonf.confext.raw')}`, '--root', root]));
    ok(kbundle(['confext', 'enable', 'democonf', '--common', '--now', '--root', root]));
    expect(snapshot(join(root, 'var/lib/kairos/confexts'))).toEqual({
      common: 'd',
      'common/democonf.confext.raw': 'l -> /var/lib/kairos/confexts/democonf.confext.raw',
      'democonf.confext.raw': 'f644',
    });
    expect(snapshot(join(root, 'run/confexts'))).toEqual({ 'democonf.confext.raw': 'l -> /var/lib/kairos/confexts/common/democonf.confext.raw' });
  });
});
