/**
 * Install records (src/state) and `kbundle status`: every successful install, install --config and
 * sysext install leaves a record under <root>/var/lib/kbundle/installed/; status lists them with
 * digest, signer and time; `status --check` is the read-only verdict a rollout preflight runs.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTo } from '../src/builder/output.js';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { recordFileName, recordKey } from '../src/state/records.js';
import { kbundleAsync, REPO_ROOT } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { writeBundle } from './helpers/fixture-bundle.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';

const PACKAGE_VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const STATE = 'var/lib/kbundle/installed';

let reg: RegistryHandle;
let keys: string;
const env = { ...process.env, KBUNDLE_PASSWORD: 'status' };

async function ok(args: string[]): Promise<string> {
  const r = await kbundleAsync(args, { env });
  expect(r.code, `kbundle ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

/** Build a bundle folder, push it as repo:tag, optionally sign it; returns the pushed digest. */
async function publish(dir: string, repo: string, tag: string, sign = false): Promise<string> {
  const out = join(tempDir(), 'oci');
  const built = await buildTo(dir, { transport: 'oci', path: out, ref: 'b' }, { sourceDateEpoch: 0 });
  await ok(['push', `oci:${out}:b`, `${reg.host}/${repo}:${tag}`]);
  if (sign) await ok(['sign', `${reg.host}/${repo}:${tag}`, '--key', join(keys, 'release.key')]);
  return built.root.digest;
}

function containerBundle(name: string, content: string): string {
  return writeBundle(join(tempDir(), name), `name: ${name}\nversion: 1.0.0\ndescription: d\ntype: container\nplatforms: [linux/amd64, linux/arm64]\nfiles:\n  - src: f\n    dst: etc/${name}.conf\n`, [
    { path: 'f', content },
  ]);
}

/** A node root whose os-release and systemd a sysext check accepts. */
function nodeRoot(): string {
  const root = tempDir('kbundle-node-');
  mkdirSync(join(root, 'etc'), { recursive: true });
  writeFileSync(join(root, 'etc/os-release'), 'ID=debian\nVERSION_ID=12\n');
  mkdirSync(join(root, 'usr/lib/systemd'), { recursive: true });
  writeFileSync(join(root, 'usr/lib/systemd/libsystemd-shared-256.so'), '');
  return root;
}

interface StatusJson {
  bundles: { kind: string; target: string; scheme: string; image: string; digest: string; manifest: string; signer?: string; installedAt: string; kbundleVersion: string }[];
  extensions: { kind: string; name: string; enabled: string[]; running: boolean; record: { digest: string; signer?: string; image: string; files: string[] } | null }[];
  removedExtensions: unknown[];
  problems: string[];
}

beforeAll(async () => {
  reg = await startRegistry({ variant: 'open' });
  keys = tempDir();
  await ok(['key', 'generate', '--out', join(keys, 'release')]);
}, 120_000);
afterAll(async () => {
  await reg?.stop();
  cleanupTempDirs();
});

describe('install records and kbundle status', () => {
  let toolsV1: string;
  let toolsV2: string;
  let sysextDigest: string;

  beforeAll(async () => {
    toolsV1 = await publish(containerBundle('tools', 'one'), 'st/tools', 'v1', true);
    toolsV2 = await publish(containerBundle('tools', 'two'), 'st/tools', 'v2', true);
    await publish(
      writeBundle(join(tempDir(), 'runner'), 'name: runner\nversion: 1.0.0\ndescription: r\ntype: run\nplatforms: [linux/amd64, linux/arm64]\nrun: run.sh\n', [
        { path: 'run.sh', content: '#!/bin/sh\nmkdir -p "$KBUNDLE_ROOT/var/lib/runner" && echo ran > "$KBUNDLE_ROOT/var/lib/runner/done"\n' },
      ]),
      'st/runner',
      'v1',
    );
    sysextDigest = await publish(join(REPO_ROOT, 'bundles/sysext-example'), 'st/sysext-example', '1', true);
  }, 300_000);

  it('records every install (bundle, run, --config, sysext) and lists them with digest, signer and time', async () => {
    const root = nodeRoot();
    const pub = join(keys, 'release.pub');
    const before = Date.now();
    await ok(['install', `container://${reg.host}/st/tools:v1`, '--root', root, '--key', pub]);
    await ok(['install', `run://${reg.host}/st/runner:v1`, '--root', root]);
    await ok(['sysext', 'install', `oci:${reg.host}/st/sysext-example:1`, '--root', root, '--key', pub]);
    await ok(['sysext', 'enable', 'sysext-example', '--active', '--root', root]);
    expect(readFileSync(join(root, 'var/lib/runner/done'), 'utf8')).toBe('ran\n');

    const s = JSON.parse(await ok(['status', '--root', root, '--json'])) as StatusJson;
    expect(s.problems).toEqual([]);
    expect(s.bundles.map((b) => [b.scheme, b.image])).toEqual([
      ['run', `${reg.host}/st/runner`],
      ['container', `${reg.host}/st/tools`],
    ]);
    const tools = s.bundles.find((b) => b.image.endsWith('/tools'))!;
    expect(tools).toMatchObject({ kind: 'bundle', target: `container://${reg.host}/st/tools:v1`, digest: toolsV1, kbundleVersion: PACKAGE_VERSION });
    expect(tools.signer).toContain('release.pub');
    expect(tools.manifest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(tools.manifest).not.toBe(tools.digest); // the platform manifest of the index
    expect(Date.parse(tools.installedAt)).toBeGreaterThanOrEqual(before - 1000);
    expect(s.bundles.find((b) => b.image.endsWith('/runner'))!.signer).toBeUndefined();
    expect(s.extensions).toEqual([
      {
        kind: 'sysext',
        name: 'sysext-example.sysext.raw',
        enabled: ['active'],
        running: false,
        record: expect.objectContaining({ digest: sysextDigest, image: `${reg.host}/st/sysext-example`, files: ['sysext-example.sysext.raw'], signer: expect.stringContaining('release.pub') }),
      },
    ]);
    // One JSON file per installed image, named after it.
    expect(readdirSync(join(root, STATE)).sort()).toEqual(
      [recordKey('bundle', 'container', `${reg.host}/st/tools`), recordKey('bundle', 'run', `${reg.host}/st/runner`), recordKey('sysext', 'oci', `${reg.host}/st/sysext-example`)]
        .map(recordFileName)
        .sort(),
    );
    const human = await ok(['status', '--root', root]);
    expect(human).toContain(`container://${reg.host}/st/tools  ${toolsV1}  signed by`);
    expect(human).toMatch(/sysext-example\.sysext\.raw {2}\(enabled: active\)/);

    // Another version of the same image replaces its record; docker:// and container:// share one.
    await ok(['install', `docker://${reg.host}/st/tools:v2`, '--root', root]);
    const s2 = JSON.parse(await ok(['status', '--root', root, '--json'])) as StatusJson;
    expect(s2.bundles.filter((b) => b.image.endsWith('/tools')).map((b) => [b.digest, b.signer])).toEqual([[toolsV2, undefined]]);
    expect(readdirSync(join(root, STATE))).toHaveLength(3);
  });

  it('install --config records under the node root, whatever rootfs_path says', async () => {
    const root = nodeRoot();
    const cfg = join(tempDir(), 'config.yaml');
    writeFileSync(cfg, `bundles:\n  - targets: [container://${reg.host}/st/tools:v1]\n    rootfs_path: /usr/local/sub\n`);
    await ok(['install', '--config', cfg, '--root', root]);
    expect(readFileSync(join(root, 'usr/local/sub/etc/tools.conf'), 'utf8')).toBe('one');
    const s = JSON.parse(await ok(['status', '--root', root, '--json'])) as StatusJson;
    expect(s.bundles.map((b) => b.digest)).toEqual([toolsV1]);
    expect(existsSync(join(root, 'usr/local/sub/var/lib/kbundle/installed'))).toBe(false);
  });

  it('--check: skip (reason in the termination log) only at the same digest, else proceed and write nothing', async () => {
    const root = nodeRoot();
    await ok(['install', `container://${reg.host}/st/tools:v1`, '--root', root]);
    await ok(['sysext', 'install', `oci:${reg.host}/st/sysext-example:1`, '--root', root]);
    const log = join(tempDir(), 'termination-log');
    writeFileSync(log, '');
    const check = async (target: string, kind = 'bundle') => {
      writeFileSync(log, '');
      const out = JSON.parse(await ok(['status', '--root', root, '--check', target, '--kind', kind, '--termination-log', log, '--json'])) as { skip: boolean };
      return { skip: out.skip, log: readFileSync(log, 'utf8') };
    };
    const same = await check(`container://${reg.host}/st/tools@${toolsV1}`);
    expect(same.skip).toBe(true);
    expect(same.log).toMatch(new RegExp(`^already installed: ${reg.host}/st/tools@${toolsV1} \\(container://, since \\d{4}-`));
    expect(await check(`docker://${reg.host}/st/tools@${toolsV1}`)).toMatchObject({ skip: true });
    expect(await check(`container://${reg.host}/st/tools@${toolsV2}`)).toEqual({ skip: false, log: '' });
    expect(await check(`run://${reg.host}/st/tools@${toolsV1}`)).toEqual({ skip: false, log: '' }); // run:// is another install
    expect(await check(`oci:${reg.host}/st/sysext-example@${sysextDigest}`, 'sysext')).toMatchObject({ skip: true });
    // The record alone does not count: once the .raw is removed, the node needs it again.
    await ok(['sysext', 'remove', 'sysext-example', '--root', root]);
    expect(await check(`oci:${reg.host}/st/sysext-example@${sysextDigest}`, 'sysext')).toEqual({ skip: false, log: '' });

    const tag = await kbundleAsync(['status', '--root', root, '--check', `container://${reg.host}/st/tools:v1`]);
    expect(tag.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(tag.stderr).toMatch(/is not pinned to a digest/);
    const scheme = await kbundleAsync(['status', '--root', root, '--check', `oci:${reg.host}/st/tools@${toolsV1}`]);
    expect(scheme.stderr).toMatch(/is not a bundle target/);
  });

  it('refuses to install when the state folder is a planted symlink, before writing anything', async () => {
    for (const planted of ['var/lib/kbundle', STATE]) {
      const root = nodeRoot();
      const elsewhere = tempDir();
      mkdirSync(join(root, planted, '..'), { recursive: true });
      symlinkSync(elsewhere, join(root, planted));
      for (const args of [
        ['install', `container://${reg.host}/st/tools:v1`],
        ['sysext', 'install', `oci:${reg.host}/st/sysext-example:1`],
      ]) {
        const r = await kbundleAsync([...args, '--root', root]);
        expect(r.code, r.stderr).toBe(EXIT_CODES.REFUSED);
        expect(r.stderr).toContain(`${join(root, planted)} is a symbolic link`);
      }
      expect(readdirSync(elsewhere)).toEqual([]);
      expect(existsSync(join(root, 'etc/tools.conf'))).toBe(false);
      expect(existsSync(join(root, 'var/lib/kairos'))).toBe(false);
      const st = await kbundleAsync(['status', '--root', root]);
      expect(st.code).toBe(EXIT_CODES.REFUSED);
    }
  });

  it('status names unreadable record files and lists the rest; a root without records is empty', async () => {
    const root = nodeRoot();
    expect(JSON.parse(await ok(['status', '--root', root, '--json']))).toMatchObject({ bundles: [], extensions: [], problems: [] });
    expect(existsSync(join(root, 'var'))).toBe(false); // status created nothing
    await ok(['install', `container://${reg.host}/st/tools:v1`, '--root', root]);
    writeFileSync(join(root, STATE, 'broken.json'), '{"version": 1, "kind": "bundle"');
    writeFileSync(join(root, STATE, 'other.json'), '{"version": 2}');
    const s = JSON.parse(await ok(['status', '--root', root, '--json'])) as StatusJson;
    expect(s.bundles.map((b) => b.digest)).toEqual([toolsV1]);
    expect(s.problems).toEqual([expect.stringMatching(/broken\.json: not an install record/), expect.stringMatching(/other\.json: not an install record \(version: /)]);
  });
});
