/**
 * The node's own trust policy (`<root>/usr/local/etc/kbundle/policy.json`) names node paths: its
 * keyPath, fulcio.caPath, rekorPublicKeyPath and the YAML `key:` are read under --root, as if the
 * root were `/` (src/verify/policy-paths.ts). In a kbundle image Pod the container is `/` and the node is
 * at $HOST_DIR, so an absolute keyPath must not name the container's (or this machine's) file, a
 * symlink must not lead out of the root and `..` must stop at it. Asserted by installs into node
 * roots from a real loopback registry: what landed on disk, and what did not.
 */
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTo } from '../src/builder/output.js';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { nodePolicyPaths } from '../src/verify/policy-paths.js';
import { kbundleAsync } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { writeBundle } from './helpers/fixture-bundle.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';

let reg: RegistryHandle;
let keys: string;
let ref: string;
const env = { ...process.env, KBUNDLE_PASSWORD: 'node-policy' };
const POLICY_DIR = 'usr/local/etc/kbundle';

async function ok(args: string[]): Promise<string> {
  const r = await kbundleAsync(args, { env });
  expect(r.code, `kbundle ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

beforeAll(async () => {
  reg = await startRegistry({ variant: 'open' });
  keys = tempDir();
  await ok(['key', 'generate', '--out', join(keys, 'release')]);
  await ok(['key', 'generate', '--out', join(keys, 'other')]);
  const dir = writeBundle(join(tempDir(), 'np'), 'name: np\nversion: 1.0.0\ndescription: n\ntype: container\nplatforms: [linux/amd64]\nfiles:\n  - src: f\n    dst: etc/np.conf\n', [
    { path: 'f', content: 'np' },
  ]);
  const out = join(tempDir(), 'oci');
  await buildTo(dir, { transport: 'oci', path: out, ref: 'b' }, { sourceDateEpoch: 0 });
  ref = `${reg.host}/np/app:1`;
  await ok(['push', `oci:${out}:b`, ref]);
  await ok(['sign', ref, '--key', join(keys, 'release.key')]);
}, 120_000);
afterAll(async () => {
  await reg?.stop();
  cleanupTempDirs();
});

/** A node root whose policy trusts the key at `keyPath` (as written in the policy) for the test repository. */
function nodeWithPolicy(keyPath: string, format: 'json' | 'yaml' = 'json'): string {
  const root = tempDir('kbundle-np-node-');
  mkdirSync(join(root, POLICY_DIR), { recursive: true });
  mkdirSync(join(root, 'etc'), { recursive: true });
  const policy =
    format === 'json'
      ? JSON.stringify({ default: [{ type: 'reject' }], transports: { docker: { [`${reg.host}/np`]: [{ type: 'sigstoreSigned', keyPath, signedIdentity: { type: 'matchRepository' } }] } } })
      : `version: 1\npolicies:\n  - images: ["${reg.host}/np/**"]\n    signers:\n      - key: ${JSON.stringify(keyPath)}\n`;
  writeFileSync(join(root, POLICY_DIR, 'policy.json'), policy);
  return root;
}

const put = (root: string, rel: string, key: 'release' | 'other' = 'release') => {
  mkdirSync(join(root, rel, '..'), { recursive: true });
  writeFileSync(join(root, rel), readFileSync(join(keys, `${key}.pub`)));
};

const install = (root: string) => kbundleAsync(['install', `container://${ref}`, '--root', root, '--require-signature'], { env });

describe('node policy paths are node paths', () => {
  it('resolves absolute, relative, symlinked and climbing paths inside the root', () => {
    const root = tempDir('kbundle-np-unit-');
    mkdirSync(join(root, POLICY_DIR), { recursive: true });
    mkdirSync(join(root, 'etc/kbundle'), { recursive: true });
    const outside = tempDir('kbundle-np-outside-');
    symlinkSync(join(outside, 'k.pub'), join(root, 'etc/kbundle/abs.pub'));
    symlinkSync('../../../../../../../..', join(root, 'etc/kbundle/up'));
    const paths = nodePolicyPaths(root, join(root, POLICY_DIR, 'policy.json'));
    expect(paths.resolve('/etc/kbundle/release.pub')).toBe(join(root, 'etc/kbundle/release.pub'));
    expect(paths.resolve('release.pub')).toBe(join(root, POLICY_DIR, 'release.pub'));
    expect(paths.resolve('../../../../../../../../etc/k.pub')).toBe(join(root, 'etc/k.pub'));
    expect(paths.resolve('/etc/kbundle/abs.pub')).toBe(join(root, outside, 'k.pub'));
    expect(paths.resolve('/etc/kbundle/up/etc/k.pub')).toBe(join(root, 'etc/k.pub'));
  });

  it('an absolute keyPath is the node file under --root (containers-policy.json and YAML); a symlink with an absolute target stays in the node', async () => {
    for (const format of ['json', 'yaml'] as const) {
      const root = nodeWithPolicy('/etc/kbundle/release.pub', format);
      put(root, 'etc/kbundle/release.pub');
      const r = await install(root);
      expect(r.code, `${format}\n${r.stderr}`).toBe(0);
      expect(readFileSync(join(root, 'etc/np.conf'), 'utf8')).toBe('np');
    }
    // /etc/kbundle/release.pub -> /oem/keys/release.pub: the node's /oem, not this machine's.
    const root = nodeWithPolicy('/etc/kbundle/release.pub');
    put(root, 'oem/keys/release.pub');
    mkdirSync(join(root, 'etc/kbundle'), { recursive: true });
    symlinkSync('/oem/keys/release.pub', join(root, 'etc/kbundle/release.pub'));
    const r = await install(root);
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(join(root, 'etc/np.conf'))).toBe(true);
    const check = await kbundleAsync(['policy', 'check', ref, '--root', root], { env });
    expect(check.code, check.stderr).toBe(0);
  });

  it('a key of this machine is out of reach: absolute path, symlink out of the root, ../ climbing; nothing is installed', async () => {
    // The trusted key exists on this machine (the container, in a Pod) at an absolute path, but not on the node.
    const host = join(tempDir('kbundle-np-host-'), 'release.pub');
    writeFileSync(host, readFileSync(join(keys, 'release.pub')));
    const absolute = nodeWithPolicy(host);
    const symlinked = nodeWithPolicy('/etc/kbundle/release.pub');
    mkdirSync(join(symlinked, 'etc/kbundle'), { recursive: true });
    symlinkSync(host, join(symlinked, 'etc/kbundle/release.pub'));
    const climbing = nodeWithPolicy(`../../../../../../../../../..${host}`);
    const yaml = nodeWithPolicy(host, 'yaml');
    for (const [name, root] of Object.entries({ absolute, symlinked, climbing, yaml })) {
      const r = await install(root);
      expect(r.code, `${name}\n${r.stderr}`).toBe(EXIT_CODES.NOT_FOUND);
      expect(r.stderr, name).toContain(root);
      expect(existsSync(join(root, 'etc/np.conf')), name).toBe(false);
      expect(existsSync(join(root, 'var/lib/kbundle')), name).toBe(false);
    }
    const absErr = (await install(absolute)).stderr;
    expect(absErr).toMatch(/keyPath: cannot read .*: ENOENT/);
    expect(absErr).toMatch(/paths in this policy are read as paths of the node at/);
  });

  it('the node key decides: another key at the node path is refused even when this machine has the right one there', async () => {
    const host = join(tempDir('kbundle-np-host-'), 'release.pub');
    writeFileSync(host, readFileSync(join(keys, 'release.pub')));
    const root = nodeWithPolicy(host);
    put(root, host.slice(1), 'other');
    const r = await install(root);
    expect(r.code, r.stderr).toBe(EXIT_CODES.REFUSED);
    expect(existsSync(join(root, 'etc/np.conf'))).toBe(false);
  });

  it('--policy FILE stays a file of this machine: its absolute and relative paths are not moved under --root', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'release.pub'), readFileSync(join(keys, 'release.pub')));
    writeFileSync(
      join(dir, 'policy.json'),
      JSON.stringify({
        default: [{ type: 'reject' }],
        transports: { docker: { [`${reg.host}/np`]: [{ type: 'sigstoreSigned', keyPath: join(dir, 'release.pub'), signedIdentity: { type: 'matchRepository' } }] } },
      }),
    );
    const root = tempDir('kbundle-np-node-');
    const r = await kbundleAsync(['install', `container://${ref}`, '--root', root, '--policy', join(dir, 'policy.json')], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(join(root, 'etc/np.conf'))).toBe(true);
  });
});
