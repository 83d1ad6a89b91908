/**
 * The arm64 node executable, run on this amd64 machine by qemu-aarch64-static with an arm64
 * glibc sysroot (test/setup-arm64.sh): --version, verify of a signed bundle and install --root.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTo } from '../src/builder/output.js';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { kbundleAsync, REPO_ROOT } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { CONTAINER_FILES, CONTAINER_SPEC, writeBundle } from './helpers/fixture-bundle.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';
import { buildSea } from './helpers/sea.js';
import { APT_DEADLINE_MS } from './helpers/spawn-deadline.js';

const QEMU = '/usr/bin/qemu-aarch64-static';

/** Installs what is missing (as test/setup.sh does for the other peers) and returns the sysroot. */
function arm64Sysroot(): string {
  const r = spawnSync('bash', [join(REPO_ROOT, 'test/setup-arm64.sh')], { encoding: 'utf8', timeout: APT_DEADLINE_MS });
  if (r.status !== 0) throw new Error(`test/setup-arm64.sh failed:\n${r.stderr}`);
  return r.stdout.trim().split('\n').pop()!;
}

describe('arm64 node executable under qemu-aarch64-static', () => {
  let reg: RegistryHandle;
  let exe: string;
  let sysroot: string;
  let ref: string;
  let keys: string;

  function arm64(args: string[]) {
    const r = spawnSync(QEMU, ['-L', sysroot, exe, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH, HOME: tempDir() } });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }

  beforeAll(async () => {
    sysroot = arm64Sysroot();
    exe = join(buildSea(['linux/arm64']), 'kbundle-linux-arm64');
    reg = await startRegistry({ variant: 'open' });
    const env = { ...process.env, KBUNDLE_PASSWORD: 'arm' };
    const ok = async (args: string[]) => {
      const r = await kbundleAsync(args, { env });
      expect(r.code, r.stderr).toBe(0);
    };
    const out = join(tempDir(), 'oci');
    await buildTo(writeBundle(join(tempDir(), 'tools'), CONTAINER_SPEC, CONTAINER_FILES), { transport: 'oci', path: out, ref: 'b' }, { sourceDateEpoch: 0 });
    ref = `${reg.host}/kairos/tools:1.0.0`;
    await ok(['push', `oci:${out}:b`, ref]);
    keys = tempDir();
    await ok(['key', 'generate', '--out', join(keys, 'release')]);
    await ok(['key', 'generate', '--out', join(keys, 'other')]);
    await ok(['sign', ref, '--key', join(keys, 'release.key')]);
  }, 600_000);
  afterAll(async () => {
    await reg?.stop();
    cleanupTempDirs();
  });

  it('is an aarch64 executable and prints its version', () => {
    const head = readFileSync(exe).subarray(0, 20);
    expect(head.readUInt16LE(18)).toBe(183); // e_machine EM_AARCH64
    const r = arm64(['--version']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('verifies a signed bundle and refuses the wrong key', () => {
    const r = arm64(['verify', ref, '--key', join(keys, 'release.pub'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ verified: true });
    const bad = arm64(['verify', ref, '--key', join(keys, 'other.pub')]);
    expect(bad.code).toBe(EXIT_CODES.REFUSED);
  });

  it('installs into a node root, picking the arm64 image of the index', () => {
    const root = tempDir();
    mkdirSync(root, { recursive: true });
    const r = arm64(['install', `container://${ref}`, '--root', root, '--key', join(keys, 'release.pub')]);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(join(root, 'usr/local/share/arch.txt'), 'utf8')).toMatch(/arm64/);
    expect(existsSync(join(root, 'usr/local/bin/tool'))).toBe(true);
  });
});
