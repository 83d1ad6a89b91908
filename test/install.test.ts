import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { buildTo } from '../src/builder/output.js';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { kbundle } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { writeBundle } from './helpers/fixture-bundle.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';

let reg: RegistryHandle;
beforeAll(async () => {
  reg = await startRegistry({ variant: 'open' });
});
afterAll(async () => {
  await reg.stop();
  cleanupTempDirs();
});

/** Build a bundle folder and push it to the test registry as repo:tag; returns the ref. */
async function publish(bundleDir: string, repo: string, tag = 'v1', platforms?: string[]): Promise<string> {
  const out = join(tempDir(), 'oci');
  await buildTo(bundleDir, { transport: 'oci', path: out, ref: 'b' }, { platforms });
  const ref = `${reg.host}/${repo}:${tag}`;
  const r = kbundle(['push', `oci:${out}:b`, ref]);
  if (r.code !== 0) throw new Error(r.stderr);
  return ref;
}

const RUN_SPEC = (script = 'run.sh') =>
  `name: envdump\nversion: 1.0.0\ndescription: dumps its environment\ntype: run\nplatforms: [linux/amd64, linux/arm64]\nrun: ${script}\nfiles:\n  - src: payload.txt\n    dst: payload.txt\n`;
const ENV_SCRIPT = `#!/bin/sh
set -e
mkdir -p "$KBUNDLE_ROOT/var/lib/envdump"
{ echo "CONTAINERDIR=$CONTAINERDIR"; echo "BUNDLE_TARGET=$BUNDLE_TARGET"; echo "PWD=$(pwd)"; echo "CALLER=$CALLER_VAR"; cat payload.txt; } > "$KBUNDLE_ROOT/var/lib/envdump/env.txt"
echo "envdump done"
`;

describe('kbundle install', () => {
  it('container:// extracts onto the root, keeping what was there, for the host platform or --platform', async () => {
    const dir = writeBundle(
      join(tempDir(), 'b'),
      `name: tools\nversion: 1.0.0\ndescription: t\ntype: container\nplatforms: [linux/amd64, linux/arm64]\nplatform_files:\n  linux/amd64:\n    - src: amd64.txt\n      dst: usr/local/share/arch\n  linux/arm64:\n    - src: arm64.txt\n      dst: usr/local/share/arch\nfiles:\n  - src: tool\n    dst: usr/local/bin/tool\n`,
      [
        { path: 'amd64.txt', content: 'amd64' },
        { path: 'arm64.txt', content: 'arm64' },
        { path: 'tool', content: '#!/bin/sh\n', mode: 0o755 },
      ],
    );
    const ref = await publish(dir, 'bundles/tools');
    const root = tempDir();
    mkdirSync(join(root, 'usr/local/bin'), { recursive: true });
    writeFileSync(join(root, 'usr/local/bin/other'), 'keep me');
    const r = kbundle(['install', `container://${ref}`, '--root', root, '--platform', 'linux/arm64', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(join(root, 'usr/local/share/arch'), 'utf8')).toBe('arm64');
    expect(readFileSync(join(root, 'usr/local/bin/other'), 'utf8')).toBe('keep me');
    expect(JSON.parse(r.stdout)).toMatchObject({ scheme: 'container', files: 2 });
    const d = kbundle(['install', `docker://${ref}`, '--root', root, '--platform', 'linux/amd64']);
    expect(d.code, d.stderr).toBe(0);
    expect(readFileSync(join(root, 'usr/local/share/arch'), 'utf8')).toBe('amd64');
  });

  it('run:// runs run.sh confined to --root (the root as its /) with CONTAINERDIR, BUNDLE_TARGET and the caller environment, then removes the image', async () => {
    const dir = writeBundle(join(tempDir(), 'b'), RUN_SPEC(), [
      { path: 'run.sh', content: ENV_SCRIPT },
      { path: 'payload.txt', content: 'payload!' },
    ]);
    const ref = await publish(dir, 'bundles/envdump');
    const root = tempDir();
    const r = kbundle(['install', `run://${ref}`, '--root', root], { env: { ...process.env, CALLER_VAR: 'from-caller' } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('envdump done');
    const env = Object.fromEntries(
      readFileSync(join(root, 'var/lib/envdump/env.txt'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => (l.includes('=') ? [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] : ['payload', l])),
    );
    expect(env.BUNDLE_TARGET).toBe(ref);
    expect(env.CALLER).toBe('from-caller');
    expect(env.PWD).toBe(env.CONTAINERDIR);
    expect(env.CONTAINERDIR).toBe('/run/kbundle/bundle');
    expect(env.payload).toBe('payload!');
    // Run bundles are not extracted onto the root; the node's writable folders are made for the jail.
    expect(readdirSync(root).sort()).toEqual(['etc', 'oem', 'opt', 'usr', 'var']);
    expect(readdirSync(join(root, 'usr'))).toEqual(['local']);
  });

  it('run:// reports a failing run.sh with its output and a non-zero exit', async () => {
    const dir = writeBundle(join(tempDir(), 'b'), RUN_SPEC(), [
      { path: 'run.sh', content: '#!/bin/sh\necho "cannot reach the thing" >&2\nexit 3\n' },
      { path: 'payload.txt', content: 'x' },
    ]);
    const ref = await publish(dir, 'bundles/failing');
    const r = kbundle(['install', `run://${ref}`, '--root', tempDir()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/run\.sh exited with status 3:\ncannot reach the thing/);
  });

  it('installs the catalog metallb bundle with the node cloud-config values under --root', async () => {
    const ref = await publish('bundles/metallb', 'kairos/metallb', '0.14.9');
    const root = tempDir();
    mkdirSync(join(root, 'oem'));
    writeFileSync(join(root, 'oem/90_custom.yaml'), '#cloud-config\nmetallb:\n  address_pool: 10.0.0.10-10.0.0.20\n');
    const bin = join(REPO_STANDIN_DIR(), '');
    const r = kbundle(['install', `run://${ref}`, '--root', root], { env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
    expect(r.code, r.stderr).toBe(0);
    const pool = parse(readFileSync(join(root, 'var/lib/rancher/k3s/server/manifests/metallb-addresspool.yaml'), 'utf8').split('---')[0]!);
    expect(pool.spec.addresses).toEqual(['10.0.0.10-10.0.0.20']);
  });

  it('--local-file installs docker-archive tarballs and OCI layouts', async () => {
    const dir = writeBundle(join(tempDir(), 'b'), 'name: local\nversion: 1.0.0\ndescription: l\ntype: container\nplatforms: [linux/amd64]\nfiles:\n  - src: f\n    dst: etc/local.conf\n', [
      { path: 'f', content: 'local' },
    ]);
    const tar = join(tempDir(), 'bundle.tar');
    await buildTo(dir, { transport: 'docker-archive', path: tar, ref: '' });
    const root = tempDir();
    const r = kbundle(['install', `container://${tar}`, '--local-file', '--root', root]);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(join(root, 'etc/local.conf'), 'utf8')).toBe('local');
    const layout = join(tempDir(), 'oci');
    await buildTo(dir, { transport: 'oci', path: layout, ref: '' });
    const root2 = tempDir();
    expect(kbundle(['install', `docker://${layout}`, '--local-file', '--root', root2]).code).toBe(0);
    expect(readFileSync(join(root2, 'etc/local.conf'), 'utf8')).toBe('local');
  });

  it('--config installs every target in order, reports every failure, and exits non-zero', async () => {
    const ok1 = writeBundle(join(tempDir(), 'b1'), 'name: one\nversion: 1.0.0\ndescription: o\ntype: container\nfiles:\n  - src: f\n    dst: etc/one\n', [{ path: 'f', content: '1' }]);
    const ok2 = writeBundle(join(tempDir(), 'b2'), 'name: two\nversion: 1.0.0\ndescription: o\ntype: container\nfiles:\n  - src: f\n    dst: etc/two\n', [{ path: 'f', content: '2' }]);
    const r1 = await publish(ok1, 'cfg/one');
    const r2 = await publish(ok2, 'cfg/two');
    const root = tempDir();
    const cfg = join(tempDir(), 'config.yaml');
    writeFileSync(
      cfg,
      `#cloud-config\nbundles:\n  - targets:\n      - container://${r1}\n      - container://${reg.host}/cfg/missing:v1\n  - targets:\n      - run:${r2}\n      - container://${r2}\n`,
    );
    const r = kbundle(['install', '--config', cfg, '--root', root]);
    expect(r.code).toBe(1);
    expect(readFileSync(join(root, 'etc/one'), 'utf8')).toBe('1');
    expect(readFileSync(join(root, 'etc/two'), 'utf8')).toBe('2');
    expect(r.stdout).toMatch(/FAILED {2}container:\/\/.*cfg\/missing:v1: /);
    expect(r.stdout).toMatch(/FAILED {2}run:.*must be written run:\/\//);
    expect(r.stderr).toContain('2 of 4 bundle(s)');
  });

  it('verifies before writing: a signed image installs, an unsigned or wrongly signed one writes nothing', async () => {
    const keys = tempDir();
    const env = { ...process.env, KBUNDLE_PASSWORD: 'pw' };
    expect(kbundle(['key', 'generate', '--out', join(keys, 'good')], { env }).code).toBe(0);
    expect(kbundle(['key', 'generate', '--out', join(keys, 'evil')], { env }).code).toBe(0);
    const mk = (name: string) =>
      writeBundle(join(tempDir(), name), `name: ${name}\nversion: 1.0.0\ndescription: s\ntype: container\nfiles:\n  - src: f\n    dst: etc/${name}\n`, [{ path: 'f', content: name }]);
    const signed = await publish(mk('signed'), 'sig/signed');
    const unsigned = await publish(mk('unsigned'), 'sig/unsigned');
    const wrong = await publish(mk('wrong'), 'sig/wrong');
    expect(kbundle(['sign', signed, '--key', join(keys, 'good.key')], { env }).code).toBe(0);
    expect(kbundle(['sign', wrong, '--key', join(keys, 'evil.key')], { env }).code).toBe(0);

    const root = tempDir();
    const ok = kbundle(['install', `container://${signed}`, '--root', root, '--key', join(keys, 'good.pub'), '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout).verified).toContain('good.pub');
    expect(readFileSync(join(root, 'etc/signed'), 'utf8')).toBe('signed');
    for (const ref of [unsigned, wrong]) {
      const r = kbundle(['install', `container://${ref}`, '--root', root, '--key', join(keys, 'good.pub')]);
      expect(r.code).toBe(EXIT_CODES.REFUSED);
      expect(r.stderr).toMatch(/kbundle: error: .*(no signature|not signed|signature)/i);
    }
    expect(readdirSync(join(root, 'etc')).sort()).toEqual(['signed']);
    // run:// under --require-signature: nothing extracted, run.sh never ran
    const runDir = writeBundle(join(tempDir(), 'r'), RUN_SPEC(), [
      { path: 'run.sh', content: ENV_SCRIPT },
      { path: 'payload.txt', content: 'p' },
    ]);
    const runRef = await publish(runDir, 'sig/run');
    const rr = kbundle(['install', `run://${runRef}`, '--root', root, '--key', join(keys, 'good.pub'), '--require-signature']);
    expect(rr.code).toBe(EXIT_CODES.REFUSED);
    expect(existsSync(join(root, 'var/lib/envdump'))).toBe(false);
    // cloud-config cosign keys: the same refusal per target, the signed one still installs
    const cfg = join(tempDir(), 'c.yaml');
    const root2 = tempDir();
    writeFileSync(cfg, `#cloud-config\nbundles:\n  - targets: [container://${signed}, container://${unsigned}]\n    cosign: true\n    cosign-key: ${join(keys, 'good.pub')}\n`);
    const c = kbundle(['install', '--config', cfg, '--root', root2]);
    expect(c.code).toBe(EXIT_CODES.REFUSED);
    expect(readdirSync(join(root2, 'etc'))).toEqual(['signed']);
  });

  it('push --sign signs exactly the pushed digest (the key is unlocked before pushing)', async () => {
    const keys = tempDir();
    const env = { ...process.env, KBUNDLE_PASSWORD: 'pw' };
    expect(kbundle(['key', 'generate', '--out', join(keys, 'k')], { env }).code).toBe(0);
    const dir = writeBundle(join(tempDir(), 'p'), 'name: pushed\nversion: 1.0.0\ndescription: p\ntype: container\nfiles:\n  - src: f\n    dst: etc/p\n', [{ path: 'f', content: 'p' }]);
    const out = join(tempDir(), 'oci');
    await buildTo(dir, { transport: 'oci', path: out, ref: 'b' });
    const bad = kbundle(['push', `oci:${out}:b`, `${reg.host}/push/signed:v1`, '--sign', '--key', join(keys, 'k.key')], { env: { ...env, KBUNDLE_PASSWORD: 'wrong' } });
    expect(bad.code).toBe(1);
    expect(kbundle(['inspect', `${reg.host}/push/signed:v1`]).code).not.toBe(0); // nothing was pushed
    const r = kbundle(['push', `oci:${out}:b`, `${reg.host}/push/signed:v1`, '--sign', '--key', join(keys, 'k.key'), '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    const pushed = JSON.parse(r.stdout);
    expect(pushed.signed).toBe(true);
    const v = kbundle(['verify', pushed.reference, '--key', join(keys, 'k.pub'), '--json']);
    expect(v.code, v.stderr).toBe(0);
    expect(JSON.stringify(JSON.parse(v.stdout))).toContain(pushed.digest);
  });

  it('refuses unknown schemes and luet packages clearly', () => {
    expect(kbundle(['install', 'package://foo/bar', '--root', tempDir()]).stderr).toMatch(/luet packages, which kbundle does not install/);
    expect(kbundle(['install', 'oci://x', '--root', tempDir()]).stderr).toMatch(/unknown scheme oci:\/\//);
  });
});

function REPO_STANDIN_DIR(): string {
  // The kairos-agent stand-in used by the catalog harness (reads $KBUNDLE_ROOT/oem/*.yaml).
  const dir = join(tempDir(), 'bin');
  mkdirSync(dir);
  const standin = join(import.meta.dirname, 'helpers', 'kairos-agent-standin.mjs');
  writeFileSync(join(dir, 'kairos-agent'), `#!/bin/sh\nexec "${process.execPath}" "${standin}" "$@"\n`, { mode: 0o755 });
  return dir;
}
