/**
 * `kbundle image`: the container image holding the node executable, the programs kbundle runs on
 * a node (NODE_TOOLS), their library closure and CA certificates. Unpacked by umoci, its root runs
 * kbundle and every tool with nothing from this machine (chroot for amd64, qemu-aarch64-static
 * with the image root as the only library path for arm64), and two builds give the same digest.
 * That the tools do their job in a Pod (confined run.sh, extension images) is test/rollout.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { kbundle, REPO_ROOT } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { buildSea, canChroot } from './helpers/sea.js';
import { APT_DEADLINE_MS } from './helpers/spawn-deadline.js';
import { NODE_TOOLS } from '../src/sea/image.js';

/** A harmless run of each tool: it starts (all its libraries are there) and prints what it is. */
const PROBES: Record<string, { args: string[]; says: RegExp }> = {
  sh: { args: ['-c', 'echo dash'], says: /^dash/ },
  unshare: { args: ['--version'], says: /util-linux/ },
  mount: { args: ['--version'], says: /util-linux/ },
  chroot: { args: ['--version'], says: /coreutils/ },
  mkdir: { args: ['--version'], says: /coreutils/ },
  ln: { args: ['--version'], says: /coreutils/ },
  readlink: { args: ['--version'], says: /coreutils/ },
  basename: { args: ['--version'], says: /coreutils/ },
  env: { args: ['--version'], says: /coreutils/ },
  mknod: { args: ['--version'], says: /coreutils/ },
  unsquashfs: { args: ['-version'], says: /unsquashfs version/ }, // exits 1 after printing it
  'fsck.erofs': { args: ['-V'], says: /fsck\.erofs/ },
  getfattr: { args: ['--version'], says: /getfattr/ },
  setfattr: { args: ['--version'], says: /setfattr/ },
  zstd: { args: ['--version'], says: /Zstandard/ },
  openssl: { args: ['version'], says: /OpenSSL 3/ },
};

function probeTools(run: (tool: string, args: string[]) => { status: number | null; stdout: string; stderr: string }): void {
  expect(Object.keys(PROBES).sort()).toEqual(NODE_TOOLS.map((t) => t.name).sort());
  for (const [tool, p] of Object.entries(PROBES)) {
    const r = run(tool, p.args);
    expect(r.stderr, tool).not.toMatch(/error while loading shared libraries|No such file|Exec format/);
    expect(`${r.stdout}${r.stderr}`, tool).toMatch(p.says);
    if (tool !== 'unsquashfs') expect(r.status, `${tool}\n${r.stderr}`).toBe(0);
  }
}

const run = (cmd: string, args: string[], timeout?: number) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout });
  expect(r.status, `${cmd} ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r.stdout;
};

describe.runIf(canChroot())('kbundle image', () => {
  let sea: string;
  let sysroot: string;
  let layout: string;
  let digest: string;
  const args = () => [
    '--platform',
    'linux/amd64',
    '--platform',
    'linux/arm64',
    '--executable',
    `linux/amd64=${sea}/kbundle-linux-amd64`,
    '--executable',
    `linux/arm64=${sea}/kbundle-linux-arm64`,
    '--sysroot',
    `linux/arm64=${sysroot}`,
    '--json',
  ];

  beforeAll(() => {
    sea = buildSea(['linux/amd64', 'linux/arm64']);
    sysroot = run('bash', [join(REPO_ROOT, 'test/setup-arm64.sh')], APT_DEADLINE_MS)
      .trim()
      .split('\n')
      .pop()!;
    layout = join(tempDir(), 'img');
    const r = kbundle(['image', '-o', `oci:${layout}:kbundle`, ...args()]);
    expect(r.code, r.stderr).toBe(0);
    digest = (JSON.parse(r.stdout) as { digest: string }).digest;
  }, 600_000);
  afterAll(cleanupTempDirs);

  it('is reproducible and carries entrypoint, environment and platforms', () => {
    const again = join(tempDir(), 'img');
    const r = kbundle(['image', '-o', `oci:${again}:kbundle`, ...args()]);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { digest: string }).digest).toBe(digest);
    for (const arch of ['amd64', 'arm64']) {
      const cfg = JSON.parse(run('skopeo', ['inspect', '--config', '--override-arch', arch, `oci:${layout}:kbundle`])) as { architecture: string; config: { Entrypoint: string[]; Env: string[] } };
      expect(cfg.architecture).toBe(arch);
      expect(cfg.config.Entrypoint).toEqual(['/usr/local/bin/kbundle']);
      expect(cfg.config.Env).toContain('SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt');
    }
  });

  it('amd64: its root alone runs kbundle (chroot), with no node in it', () => {
    const one = join(tempDir(), 'one');
    run('skopeo', ['copy', '--override-arch', 'amd64', `oci:${layout}:kbundle`, `oci:${one}:amd64`]);
    const bundle = join(tempDir(), 'bundle');
    run('umoci', ['unpack', '--rootless', '--image', `${one}:amd64`, bundle]);
    const rootfs = join(bundle, 'rootfs');
    const files = readdirSync(rootfs, { recursive: true }) as string[];
    expect(files.filter((f) => /(^|\/)node(_modules)?$/.test(f))).toEqual([]);
    expect(files).toContain('etc/ssl/certs/ca-certificates.crt');
    const v = spawnSync('/usr/sbin/chroot', [rootfs, '/usr/local/bin/kbundle', '--version'], { encoding: 'utf8', env: { PATH: '/usr/local/bin' } });
    expect(v.status, v.stderr).toBe(0);
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    expect(readdirSync(join(rootfs, 'usr/bin')).sort()).toEqual([...new Set(NODE_TOOLS.flatMap((t) => (t.file ? [t.file, t.name] : [t.name])))].sort());
    probeTools((tool, a) => spawnSync('/usr/sbin/chroot', [rootfs, `/usr/bin/${tool}`, ...a], { encoding: 'utf8', env: { PATH: '/usr/bin' } }));
    // /bin/sh is what run.sh and the confinement start.
    const sh = spawnSync('/usr/sbin/chroot', [rootfs, '/bin/sh', '-c', 'echo ok'], { encoding: 'utf8', env: {} });
    expect(sh.stdout).toBe('ok\n');
  });

  it('arm64: runs under qemu with the image root as its only library path', () => {
    const one = join(tempDir(), 'one');
    run('skopeo', ['copy', '--override-arch', 'arm64', `oci:${layout}:kbundle`, `oci:${one}:arm64`]);
    const bundle = join(tempDir(), 'bundle');
    run('umoci', ['unpack', '--rootless', '--image', `${one}:arm64`, bundle]);
    const rootfs = join(bundle, 'rootfs');
    expect(existsSync(join(rootfs, 'lib/ld-linux-aarch64.so.1'))).toBe(true);
    const v = spawnSync('/usr/bin/qemu-aarch64-static', ['-L', rootfs, join(rootfs, 'usr/local/bin/kbundle'), '--version'], { encoding: 'utf8' });
    expect(v.status, v.stderr).toBe(0);
    // The tools are Debian's arm64 builds (ELF machine AArch64), complete with their libraries.
    expect(run('readelf', ['-h', join(rootfs, 'usr/bin/unshare')])).toMatch(/Machine:\s+AArch64/);
    probeTools((tool, a) => spawnSync('/usr/bin/qemu-aarch64-static', ['-L', rootfs, join(rootfs, 'usr/bin', NODE_TOOLS.find((t) => t.name === tool)!.file ?? tool), ...a], { encoding: 'utf8' }));
  });

  it('bad input: a missing executable, a foreign platform without sysroot, a non-layout output', () => {
    const missing = kbundle(['image', '-o', `oci:${join(tempDir(), 'x')}`, '--executable', 'linux/amd64=/nonexistent/kbundle']);
    expect(missing.code).toBe(EXIT_CODES.NOT_FOUND);
    expect(missing.stderr).toMatch(/\/nonexistent\/kbundle: no executable for linux\/amd64/);
    const foreign = kbundle(['image', '-o', `oci:${join(tempDir(), 'x')}`, '--platform', 'linux/arm64']);
    expect(foreign.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(foreign.stderr).toMatch(/--sysroot linux\/arm64=<dir>/);
    const bare = kbundle([
      'image',
      '-o',
      `oci:${join(tempDir(), 'x')}`,
      '--platform',
      'linux/arm64',
      '--executable',
      `linux/arm64=${sea}/kbundle-linux-arm64`,
      '--sysroot',
      `linux/arm64=${tempDir()}`,
    ]);
    expect(bare.code).toBe(EXIT_CODES.NOT_FOUND);
    expect(bare.stderr).toMatch(/linux\/arm64: dash \(Debian package dash; kbundle needs it on a node for run\.sh and the confinement script\)/);
    expect(bare.stderr).toMatch(/unpack dash for that architecture into the sysroot/);
    const archive = kbundle(['image', '-o', `docker-archive:${join(tempDir(), 'x.tar')}`]);
    expect(archive.code).toBe(EXIT_CODES.INVALID_INPUT);
  });
});
