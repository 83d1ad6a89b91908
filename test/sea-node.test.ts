/**
 * The node executable where there is no Node.js: a root that holds only the executable, its
 * library closure, a CA bundle and /bin/sh. Inside it (chroot) kbundle verifies a signed bundle
 * from a TLS registry:2 on loopback (trusting the CA only through the root's CA bundle), refuses
 * a tampered tag, installs a run:// and a container:// bundle into a node root, and checks and
 * installs a sysext. The arm64 executable is proven under qemu in test/sea-arm64.test.ts
 * (npm run test:sea).
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTo } from '../src/builder/output.js';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { kbundle, kbundleAsync } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { CONTAINER_FILES, CONTAINER_SPEC, writeBundle } from './helpers/fixture-bundle.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';
import { buildSea, canChroot, nodelessRoot, type NodelessRoot } from './helpers/sea.js';

const RUN_SPEC = `name: hello\nversion: 1.0.0\ndescription: writes a file\ntype: run\nplatforms: [linux/amd64, linux/arm64]\nrun: run.sh\n`;
// Shell built-ins only: the root has /bin/sh and nothing else to run.
const RUN_SH = `#!/bin/sh\nset -e\necho "hello from $BUNDLE_TARGET" > "$KBUNDLE_ROOT/etc/hello.txt"\n`;

describe.runIf(canChroot())('node executable in a root without Node.js', () => {
  let reg: RegistryHandle;
  let sea: string;
  let root: NodelessRoot;
  let signedRef: string;
  let containerRef: string;
  let zstdRef: string;
  let tamperedRef: string;
  const PW = 'node-test';

  beforeAll(async () => {
    sea = join(buildSea(['linux/amd64']), 'kbundle-linux-amd64');
    reg = await startRegistry({ variant: 'open', tls: true });
    const env = { ...process.env, KBUNDLE_PASSWORD: PW, SSL_CERT_FILE: reg.caFile! };
    const ok = async (args: string[]) => {
      const r = await kbundleAsync(args, { env });
      expect(r.code, r.stderr).toBe(0);
      return r.stdout;
    };
    const publish = async (dir: string, repo: string, tag: string, compression: 'gzip' | 'zstd' = 'gzip') => {
      const out = join(tempDir(), 'oci');
      await buildTo(dir, { transport: 'oci', path: out, ref: 'b' }, { sourceDateEpoch: 0, compression });
      await ok(['push', `oci:${out}:b`, `${reg.host}/${repo}:${tag}`]);
      return `${reg.host}/${repo}:${tag}`;
    };
    const keys = tempDir();
    await ok(['key', 'generate', '--out', join(keys, 'release')]);
    signedRef = await publish(writeBundle(join(tempDir(), 'hello'), RUN_SPEC, [{ path: 'run.sh', content: RUN_SH, mode: 0o755 }]), 'kairos/hello', '1.0.0');
    containerRef = await publish(writeBundle(join(tempDir(), 'tools'), CONTAINER_SPEC, CONTAINER_FILES), 'kairos/tools', '1.0.0');
    zstdRef = await publish(writeBundle(join(tempDir(), 'tools-zstd'), CONTAINER_SPEC, CONTAINER_FILES), 'kairos/tools-zstd', '1.0.0', 'zstd');
    tamperedRef = await publish(writeBundle(join(tempDir(), 'hello2'), RUN_SPEC, [{ path: 'run.sh', content: RUN_SH, mode: 0o755 }]), 'kairos/tampered', '1.0.0');
    for (const ref of [signedRef, containerRef, zstdRef, tamperedRef]) await ok(['sign', ref, '--key', join(keys, 'release.key')]);
    // Tamper: the signed tag now names other content (what a hostile registry or mirror serves).
    const other = writeBundle(join(tempDir(), 'evil'), RUN_SPEC.replace('writes a file', 'evil'), [{ path: 'run.sh', content: `${RUN_SH}echo owned\n`, mode: 0o755 }]);
    await publish(other, 'kairos/tampered', '1.0.0');

    // unsquashfs: sysext check reads squashfs images with it, as it does on the host.
    root = nodelessRoot(sea, { extraCa: readFileSync(reg.caFile!, 'utf8'), tools: [execFileSync('sh', ['-c', 'command -v unsquashfs'], { encoding: 'utf8' }).trim()] });
    mkdirSync(join(root.dir, 'keys'));
    copyFileSync(join(keys, 'release.pub'), join(root.dir, 'keys/release.pub'));
  }, 600_000);
  afterAll(async () => {
    await reg?.stop();
    cleanupTempDirs();
  });

  it('holds no node and no node_modules', () => {
    const all = readdirSync(root.dir, { recursive: true }) as string[];
    expect(all.filter((p) => /(^|\/)(node|node_modules)$/.test(p))).toEqual([]);
    expect(all).toContain('usr/local/bin/kbundle');
    const v = root.run(['--version']);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('verifies a signed bundle over TLS, trusting the CA through the root CA bundle only', () => {
    const r = root.run(['verify', signedRef, '--key', '/keys/release.pub', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ verified: true });
  });

  it('refuses a tampered tag', () => {
    const r = root.run(['verify', tamperedRef, '--key', '/keys/release.pub']);
    expect(r.code).toBe(EXIT_CODES.REFUSED);
    expect(r.stderr).toMatch(/kbundle: error: /);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack
  });

  it('installs a run:// and a container:// bundle into a node root, verify-first', () => {
    mkdirSync(join(root.dir, 'node/etc'), { recursive: true });
    // This root has no unshare/mount for a confined run.sh (test/hardening/run-scripts.test.ts covers that).
    const run = root.run(['install', `run://${signedRef}`, '--root', '/node', '--key', '/keys/release.pub', '--unconfined-scripts']);
    expect(run.code, run.stderr).toBe(0);
    expect(readFileSync(join(root.dir, 'node/etc/hello.txt'), 'utf8')).toBe(`hello from ${signedRef}\n`);
    const c = root.run(['install', `container://${containerRef}`, '--root', '/node', '--key', '/keys/release.pub']);
    expect(c.code, c.stderr).toBe(0);
    expect(readFileSync(join(root.dir, 'node/usr/local/share/demo/a.txt'), 'utf8')).toBe('alpha\n');
    expect(readFileSync(join(root.dir, 'node/usr/local/share/arch.txt'), 'utf8')).toMatch(/amd64/);
    expect(existsSync(join(root.dir, 'node/usr/local/bin/tool'))).toBe(true);
    const bad = root.run(['install', `run://${tamperedRef}`, '--root', '/node-bad', '--key', '/keys/release.pub']);
    expect(bad.code).toBe(EXIT_CODES.REFUSED);
    expect(existsSync(join(root.dir, 'node-bad'))).toBe(false);
  });

  it('installs a bundle with tar+zstd layers though the root has no zstd program (Node 24 zlib decodes)', () => {
    expect(readdirSync(root.dir, { recursive: true }) as string[]).not.toContainEqual(expect.stringMatching(/(^|\/)zstd$/));
    const r = root.run(['install', `container://${zstdRef}`, '--root', '/node-zstd', '--key', '/keys/release.pub']);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(join(root.dir, 'node-zstd/usr/local/share/demo/sub/deeper/c.bin'), 'utf8')).toBe('x'.repeat(70_000));
    expect(readFileSync(join(root.dir, 'node-zstd/usr/local/share/arch.txt'), 'utf8')).toMatch(/amd64/);
  });

  it('checks and installs a sysext', () => {
    const tree = tempDir();
    mkdirSync(join(tree, 'usr/local/bin'), { recursive: true });
    writeFileSync(join(tree, 'usr/local/bin/hello'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
    const out = tempDir();
    const b = kbundle(['sysext', 'build', tree, '--name', 'hello', '-o', out, '--fs', 'squashfs', '--id', 'debian', '--version-id', '12']);
    expect(b.code, b.stderr).toBe(0);
    mkdirSync(join(root.dir, 'sysext-node/etc'), { recursive: true });
    writeFileSync(join(root.dir, 'sysext-node/etc/os-release'), 'ID=debian\nVERSION_ID=12\n');
    mkdirSync(join(root.dir, 'sysext-node/usr/lib/systemd'), { recursive: true });
    writeFileSync(join(root.dir, 'sysext-node/usr/lib/systemd/libsystemd-shared-256.so'), '');
    copyFileSync(join(out, 'hello.sysext.raw'), join(root.dir, 'tmp/hello.sysext.raw'));
    const check = root.run(['sysext', 'check', '/tmp/hello.sysext.raw', '--root', '/sysext-node', '--json']);
    expect(check.code, check.stderr).toBe(0);
    expect(JSON.parse(check.stdout)).toMatchObject({ ok: true, imageName: 'hello' });
    const inst = root.run(['sysext', 'install', 'file:/tmp/hello.sysext.raw', '--root', '/sysext-node']);
    expect(inst.code, inst.stderr).toBe(0);
    expect(readFileSync(join(root.dir, 'sysext-node/var/lib/kairos/extensions/hello.sysext.raw')).equals(readFileSync(join(out, 'hello.sysext.raw')))).toBe(true);
  });

  it('without a CA bundle the TLS registry is refused with a message saying what to do', () => {
    const bare = nodelessRoot(sea, { caBundle: false });
    mkdirSync(join(bare.dir, 'keys'));
    copyFileSync(join(root.dir, 'keys/release.pub'), join(bare.dir, 'keys/release.pub'));
    const r = bare.run(['verify', signedRef, '--key', '/keys/release.pub']);
    expect(r.code).not.toBe(0);
    expect(r.code).toBeLessThan(124);
    expect(r.stderr).toMatch(/--ca-file|SSL_CERT_FILE/);
    expect(r.stderr).not.toMatch(/internal error/);
    const missing = bare.run(['verify', signedRef, '--key', '/keys/release.pub'], { SSL_CERT_FILE: '/etc/ssl/certs/ca-certificates.crt' });
    expect(missing.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(missing.stderr).toMatch(/SSL_CERT_FILE: cannot read \/etc\/ssl\/certs\/ca-certificates.crt \(ENOENT\)/);
  });
});
