/**
 * signing/node-recipe.yaml, run as written on a node root without Node.js: its `bundles:` step
 * installs the kbundle executable through the catalog bundle (as kairos-agent does), then its yip
 * stage steps write their files and run their commands with /bin/sh inside the root (chroot),
 * in order. Only the registry address, the public key and the digests are substituted.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { buildTo } from '../src/builder/output.js';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { kbundleAsync, REPO_ROOT } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';
import { buildSea, canChroot, nodelessRoot } from './helpers/sea.js';

interface YipStep {
  name?: string;
  if?: string;
  files?: { path: string; content: string; permissions?: number | string }[];
  commands?: string[];
}
interface Recipe {
  bundles: { targets: string[] }[];
  stages: Record<string, YipStep[]>;
}

const RECIPE = join(REPO_ROOT, 'signing/node-recipe.yaml');

describe.runIf(canChroot())('signing/node-recipe.yaml on a node without Node.js', () => {
  let reg: RegistryHandle;
  let text: string;
  let unsignedRef: string;
  const env = { ...process.env, KBUNDLE_PASSWORD: 'recipe' };
  const ok = async (args: string[]) => {
    const r = await kbundleAsync(args, { env });
    expect(r.code, `${args.join(' ')}\n${r.stderr}`).toBe(0);
    return r.stdout;
  };
  /** Build a catalog bundle, push it, return its digest (and sign it with `key`). */
  const publish = async (name: string, repo: string, key?: string) => {
    const out = join(tempDir(), 'oci');
    const built = await buildTo(join(REPO_ROOT, 'bundles', name), { transport: 'oci', path: out, ref: 'b' }, { sourceDateEpoch: 0 });
    await ok(['push', `oci:${out}:b`, `${reg.host}/${repo}:1`]);
    if (key) await ok(['sign', `${reg.host}/${repo}:1`, '--key', key]);
    return built.root.digest;
  };

  beforeAll(async () => {
    buildSea(['linux/amd64']); // bundles/kbundle/assets comes from the same build (test/setup.sh)
    reg = await startRegistry({ variant: 'open' });
    const keys = tempDir();
    await ok(['key', 'generate', '--out', join(keys, 'release')]);
    const key = join(keys, 'release.key');
    await publish('kbundle', 'kairos/kbundle');
    await ok(['copy', `${reg.host}/kairos/kbundle:1`, `${reg.host}/kairos/kbundle:0.1.0`]);
    const qga = await publish('qemu-guest-agent', 'kairos/qemu-guest-agent', key);
    const sysext = await publish('sysext-example', 'kairos/sysext-example', key);
    await publish('qemu-guest-agent', 'other/qemu-guest-agent');
    unsignedRef = `${reg.host}/other/qemu-guest-agent:1`;

    const raw = readFileSync(RECIPE, 'utf8');
    const pubLines = readFileSync(join(keys, 'release.pub'), 'utf8').trimEnd().split('\n');
    text = raw
      .replaceAll('127.0.0.1:5000', reg.host)
      .replace(/^(\s*)RELEASE_PUBLIC_KEY$/m, (_m, indent: string) => pubLines.map((l) => indent + l).join('\n'))
      .replaceAll('DIGEST_QEMU_GUEST_AGENT', qga.replace('sha256:', ''))
      .replaceAll('DIGEST_SYSEXT_EXAMPLE', sysext.replace('sha256:', ''));
  }, 600_000);
  afterAll(async () => {
    await reg?.stop();
    cleanupTempDirs();
  });

  it('installs kbundle, writes the policy, installs verified bundles and a sysext, and refuses an unsigned one', async () => {
    const recipe = parse(text) as Recipe;
    expect(text.split('\n')[0]).toBe('#cloud-config');
    // The node: no Node.js, no kbundle yet; the tools a Kairos node has (sh, coreutils, unsquashfs).
    // run.sh of a bundle runs confined to this root with its own tools, as on the node.
    const sea = join(buildSea(['linux/amd64']), 'kbundle-linux-amd64');
    const which = (t: string) => spawnSync('sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).stdout.trim();
    const node = nodelessRoot(sea, { install: false, tools: ['unsquashfs', 'mkdir', 'cp', 'chmod', 'mv', 'rm', 'cat'].map(which) });
    const root = node.dir;
    expect(existsSync(join(root, 'usr/local/bin/kbundle'))).toBe(false);
    mkdirSync(join(root, 'etc'), { recursive: true });
    writeFileSync(join(root, 'etc/os-release'), 'ID=debian\nVERSION_ID=12\n');
    mkdirSync(join(root, 'usr/lib/systemd'), { recursive: true });
    writeFileSync(join(root, 'usr/lib/systemd/libsystemd-shared-256.so'), '');

    // bundles: what kairos-agent does on first boot, for each target.
    for (const b of recipe.bundles) for (const t of b.targets) await ok(['install', t, '--root', root]);
    expect(existsSync(join(root, 'usr/local/bin/kbundle'))).toBe(true);

    // stages: each step in order, as yip runs it.
    const sh = (cmd: string) => spawnSync('/usr/sbin/chroot', [root, '/bin/sh', '-c', cmd], { encoding: 'utf8', env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp' } });
    const ran: string[] = [];
    for (const step of Object.values(recipe.stages).flat()) {
      for (const f of step.files ?? []) {
        const p = join(root, f.path);
        mkdirSync(dirname(p), { recursive: true });
        writeFileSync(p, f.content);
        if (f.permissions !== undefined) chmodSync(p, parseInt(String(f.permissions), 8));
      }
      if (step.if && sh(step.if).status !== 0) continue;
      for (const cmd of step.commands ?? []) {
        const r = sh(cmd);
        expect(r.status, `${cmd}\n${r.stdout}\n${r.stderr}`).toBe(0);
        ran.push(cmd);
      }
    }
    expect(ran).toHaveLength(3);
    expect(readFileSync(join(root, 'etc/systemd/system/qemu-guest-agent.service'), 'utf8')).toMatch(/ExecStart=\/usr\/local\/bin\/qemu-ga-launch/);
    expect(readdirSync(join(root, 'var/lib/kairos/extensions')).filter((n) => n.endsWith('.raw'))).toEqual(['sysext-example.sysext.raw']);
    expect(readlinkSync(join(root, 'var/lib/kairos/extensions/active/sysext-example.sysext.raw'))).toMatch(/sysext-example.sysext.raw$/);

    // The policy the recipe wrote is what guards the node: an unsigned image is refused, nothing written.
    writeFileSync(join(root, 'tmp/unsigned.yaml'), `bundles:\n  - targets:\n      - container://${unsignedRef}\n`);
    const before = readdirSync(root, { recursive: true }).length;
    const refused = sh('kbundle install --config /tmp/unsigned.yaml');
    expect(refused.status, refused.stderr).toBe(EXIT_CODES.REFUSED);
    expect(`${refused.stdout}${refused.stderr}`).toMatch(/refused by \/usr\/local\/etc\/kbundle\/policy.json: default is "reject"/);
    expect(readdirSync(root, { recursive: true }).length).toBe(before);
  });
});
