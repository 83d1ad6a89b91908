/**
 * `kbundle rollout` end to end: the emitted objects validate against the operator's released
 * CRDs, and the operator stand-in (test/helpers/operator-standin.ts) runs their preflight and
 * command on simulated Kairos nodes (node roots in folders, the built CLI as the container),
 * against a real loopback registry. Everything asserted is on disk or in the registry.
 */
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTo } from '../src/builder/output.js';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { kbundleAsync, REPO_ROOT } from './helpers/cli.js';
import { crdErrors } from './helpers/crd-validator.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { writeBundle } from './helpers/fixture-bundle.js';
import { nodeLabels, objectsOf, OperatorStandin, type SimNode } from './helpers/operator-standin.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';
import { buildSea, lddClosure } from './helpers/sea.js';
import { NODE_TOOLS } from '../src/sea/image.js';

let reg: RegistryHandle;
let keys: string;
let operator: OperatorStandin;
let kbundleImage: string;
let kbundlePinned: string;
const env = { ...process.env, KBUNDLE_PASSWORD: 'rollout' };

async function ok(args: string[]): Promise<string> {
  const r = await kbundleAsync(args, { env });
  expect(r.code, `kbundle ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

/** Build a bundle folder, push it as repo:tag, optionally sign it; returns the digest. */
async function publish(dir: string, repo: string, tag: string, signWith?: string): Promise<string> {
  const out = join(tempDir(), 'oci');
  const built = await buildTo(dir, { transport: 'oci', path: out, ref: 'b' }, { sourceDateEpoch: 0 });
  await ok(['push', `oci:${out}:b`, `${reg.host}/${repo}:${tag}`]);
  if (signWith) await ok(['sign', `${reg.host}/${repo}:${tag}`, '--key', join(keys, `${signWith}.key`)]);
  return built.root.digest;
}

interface NodeSpec {
  release?: Record<string, string>;
  systemd?: number;
  controlPlane?: boolean;
}

/** A simulated node: its root with /etc/kairos-release (KAIROS_* keys), os-release and systemd. */
function node(name: string, spec: NodeSpec): SimNode {
  const root = tempDir(`kbundle-${name}-`);
  mkdirSync(join(root, 'etc'), { recursive: true });
  mkdirSync(join(root, 'usr/lib/systemd'), { recursive: true });
  writeFileSync(join(root, 'usr/lib/systemd', `libsystemd-shared-${spec.systemd ?? 255}.so`), '');
  if (spec.release) {
    writeFileSync(
      join(root, 'etc/kairos-release'),
      Object.entries(spec.release)
        .map(([k, v]) => `KAIROS_${k}="${v}"\n`)
        .join(''),
    );
    writeFileSync(join(root, 'etc/os-release'), `ID=${spec.release.FLAVOR ?? 'linux'}\nVERSION_ID=1\n`);
  } else writeFileSync(join(root, 'etc/os-release'), 'ID=debian\nVERSION_ID=12\n');
  return { name, root, controlPlane: spec.controlPlane, cmdline: 'BOOT_IMAGE=/cOS/active.img root=LABEL=COS_STATE COS_ACTIVE' };
}

/** Give a node root its own /bin/sh and mkdir with their libraries (this machine's), so it is a whole OS to the confinement. */
function osTree(root: string): void {
  for (const tool of ['/bin/sh', '/usr/bin/mkdir']) {
    for (const f of [tool, ...lddClosure(tool)]) {
      mkdirSync(join(root, dirname(f)), { recursive: true });
      copyFileSync(realpathSync(f), join(root, f));
      chmodSync(join(root, f), 0o755);
    }
  }
}

const kairos = (flavor: string, version: string, arch = 'amd64', k8s = 'k3s') => ({
  ID: 'kairos',
  FAMILY: flavor === 'alpine' ? 'alpine' : flavor === 'debian' ? 'debian' : 'ubuntu',
  FLAVOR: flavor,
  FLAVOR_RELEASE: '24.04',
  VARIANT: 'standard',
  VERSION: version,
  RELEASE: version,
  ARCH: arch,
  MODEL: 'generic',
  SOFTWARE_VERSION_PREFIX: k8s,
  SOFTWARE_VERSION: k8s === 'k3s' ? 'v1.33.1+k3s1' : 'v1.33.1+k0s.0',
  TRUSTED_BOOT: 'false',
});

const DEMO_SPEC = (content: string) =>
  writeBundle(
    join(tempDir(), 'demo'),
    `name: demo
version: 1.0.0
description: demo
type: container
platforms: [linux/amd64, linux/arm64]
files:
  - src: demo.conf
    dst: etc/demo/demo.conf
requires:
  kairos: ">=3.2.0"
  flavor: [ubuntu, debian]
  k8s:
    distribution: [k3s, k0s]
  systemd: 252
`,
    [{ path: 'demo.conf', content }],
  );

beforeAll(async () => {
  reg = await startRegistry({ variant: 'open' });
  keys = tempDir();
  await ok(['key', 'generate', '--out', join(keys, 'release')]);
  await ok(['key', 'generate', '--out', join(keys, 'other')]);
  // The real kbundle image (`kbundle image` from the node executable, pushed): the stand-in pulls
  // it by digest and runs every Pod in its root alone.
  const layout = join(tempDir(), 'kbundle-image');
  const sea = buildSea(['linux/amd64']);
  const built = JSON.parse(await ok(['image', '-o', `oci:${layout}:kbundle`, '--executable', `linux/amd64=${sea}/kbundle-linux-amd64`, '--json'])) as { digest: string };
  await ok(['push', `oci:${layout}:kbundle`, `${reg.host}/rt/kbundle:test`]);
  kbundleImage = `${reg.host}/rt/kbundle:test`;
  kbundlePinned = `${reg.host}/rt/kbundle@${built.digest}`;
  operator = new OperatorStandin(reg.host);
}, 600_000);
afterAll(async () => {
  await reg?.stop();
  cleanupTempDirs();
});

describe('the container is the kbundle image alone', () => {
  it('a Pod sees the image root (executable, node tools, their libraries) and nothing of this machine', async () => {
    const container = await operator.pull(kbundlePinned);
    if (typeof container === 'string') throw new Error(container);
    const n = node('look', { release: kairos('ubuntu', 'v3.5.0') });
    const r = await operator.runPod(
      container,
      n,
      '/host',
      ['/bin/sh', '-c', 'for f in /* /usr/bin/* /usr/local/bin/*; do echo "$f"; done; for t in node skopeo umoci python3 perl apt-get systemctl; do command -v "$t" && exit 9; done; exit 0'],
      {
        readOnly: true,
      },
    );
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const seen = r.stdout.trim().split('\n');
    expect(seen.filter((f) => f.split('/').length === 2)).toEqual(['/bin', '/dev', '/etc', '/host', '/lib', '/lib64', '/proc', '/tmp', '/usr']);
    const tools = NODE_TOOLS.flatMap((t) => (t.file ? [t.file, t.name] : [t.name])).map((t) => `/usr/bin/${t}`);
    expect(seen.filter((f) => f.startsWith('/usr/bin/')).sort()).toEqual([...new Set(tools)].sort());
    expect(seen.filter((f) => f.startsWith('/usr/local/bin/'))).toEqual(['/usr/local/bin/kbundle']);
  });
});

describe('kbundle rollout of a bundle through the operator stand-in', () => {
  let digest: string;
  beforeAll(async () => {
    digest = await publish(DEMO_SPEC('v1'), 'rt/demo', 'v1', 'release');
  }, 120_000);

  it('verifies, pins and emits a valid NodeOp whose preflight and Job install it where the node qualifies, skip where not, and fail safe', async () => {
    const nodes = [
      node('node-a', { release: kairos('debian', 'v3.4.1', 'arm64', 'k0s'), systemd: 252 }),
      node('cp-1', { release: kairos('ubuntu', 'v3.5.0'), controlPlane: true }),
      node('node-alpine', { release: kairos('alpine', 'v3.5.0') }),
      node('node-old', { release: kairos('ubuntu', 'v3.1.0') }),
      node('node-done', { release: kairos('ubuntu', 'v3.5.0') }),
      node('node-planted', { release: kairos('ubuntu', 'v3.5.0') }),
      node('plain-debian', {}),
      node('node-sd250', { release: kairos('ubuntu', 'v3.6.0'), systemd: 250 }),
    ];
    const byName = Object.fromEntries(nodes.map((n) => [n.name, n]));
    // Already at the digest (installed by hand, as kbundle does), and a planted symlink.
    await ok(['install', `container://${reg.host}/rt/demo@${digest}`, '--root', byName['node-done']!.root]);
    const doneRecord = readFileSync(join(byName['node-done']!.root, 'var/lib/kbundle/installed', readdirSync(join(byName['node-done']!.root, 'var/lib/kbundle/installed'))[0]!), 'utf8');
    const elsewhere = tempDir();
    mkdirSync(join(byName['node-planted']!.root, 'var/lib'), { recursive: true });
    symlinkSync(elsewhere, join(byName['node-planted']!.root, 'var/lib/kbundle'));

    const file = join(tempDir(), 'rollout.yaml');
    const r = await kbundleAsync(
      [
        'rollout',
        `container://${reg.host}/rt/demo:v1`,
        '--key',
        join(keys, 'release.pub'),
        '--kbundle-image',
        kbundleImage,
        '--selector',
        'kairos.io/managed=true',
        '--concurrency',
        '2',
        '--backoff-limit',
        '0',
        '--cordon',
        '--uncordon-on-failure',
        '--drain',
        '--drain-timeout',
        '120',
        '-o',
        file,
      ],
      { env },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/requires\.kairos has no node label to select on; the preflight checks it/);
    expect(r.stderr).toMatch(/requires\.systemd has no node label/);
    const yaml = readFileSync(file, 'utf8');
    const objs = objectsOf(yaml);
    expect(objs).toHaveLength(1);
    for (const o of objs) expect(crdErrors(o)).toEqual([]);
    const op = objs[0];
    expect(op.kind).toBe('NodeOp');
    expect(op.spec.image).toBe(kbundlePinned);
    expect(op.spec.command).toContain(`container://${reg.host}/rt/demo@${digest}`);
    expect(op.spec.command).toContain('$(HOST_DIR)');
    expect(op.spec.nodeSelector).toEqual({
      matchLabels: { 'kairos.io/managed': 'true' },
      matchExpressions: [
        { key: 'kairos.io/flavor', operator: 'In', values: ['ubuntu', 'debian'] },
        { key: 'kairos.io/software-version-prefix', operator: 'In', values: ['k3s', 'k0s'] },
      ],
    });
    expect(op.spec).toMatchObject({ concurrency: 2, backoffLimit: 0, cordon: true, uncordonOnFailure: true, drainOptions: { enabled: true, timeoutSeconds: 120 } });
    expect(op.metadata.annotations['kbundle.kairos.io/verified-signer']).toContain('release.pub');
    expect(yaml).toMatch(/^# kbundle rollout: container:\/\//);
    // kbundle's own offline check agrees with ajv on the upstream CRDs.
    expect(await ok(['rollout', '--validate', file])).toMatch(/1 object\(s\) valid/);

    const run = await operator.runNodeOp(op, nodes);
    const st = run.statuses;
    expect(Object.keys(st).sort()).toEqual(['cp-1', 'node-a', 'node-done', 'node-old', 'node-planted', 'node-sd250']);
    expect(run.started[0]).toBe('cp-1'); // control plane first, as the operator sorts
    expect(run.maxParallel).toBeLessThanOrEqual(2);
    for (const n of ['cp-1', 'node-a']) {
      expect(st[n], JSON.stringify(st[n], null, 1)).toMatchObject({ phase: 'Completed', skipped: false });
      expect(readFileSync(join(byName[n]!.root, 'etc/demo/demo.conf'), 'utf8')).toBe('v1');
      expect(byName[n]!.cordoned).toBe(false);
      const s = JSON.parse(await ok(['status', '--root', byName[n]!.root, '--json']));
      expect(s.bundles).toEqual([expect.objectContaining({ digest, image: `${reg.host}/rt/demo`, signer: 'release.pub' })]);
    }
    expect(st['node-old']).toMatchObject({ phase: 'Completed', skipped: true });
    expect(st['node-old']!.message).toMatch(/does not meet the image's requires: requires\.kairos ">=3\.2\.0": the node has KAIROS_VERSION=v3\.1\.0/);
    expect(st['node-sd250']!.message).toMatch(/requires\.systemd >= 252: the node has systemd 250/);
    expect(st['node-done']).toMatchObject({ phase: 'Completed', skipped: true });
    expect(st['node-done']!.message).toMatch(new RegExp(`already installed: ${reg.host}/rt/demo@${digest}`));
    expect(st['node-planted']).toMatchObject({ phase: 'Failed', skipped: false });
    expect(st['node-planted']!.preflight!.stderr).toMatch(/var\/lib\/kbundle is a symbolic link/);
    expect(readdirSync(elsewhere)).toEqual([]);
    for (const n of ['node-old', 'node-sd250', 'node-alpine', 'plain-debian', 'node-planted']) expect(existsSync(join(byName[n]!.root, 'etc/demo')), n).toBe(false);
    // The skipped node's record is untouched: the preflight ran on a read-only root.
    const doneDir = join(byName['node-done']!.root, 'var/lib/kbundle/installed');
    expect(readFileSync(join(doneDir, readdirSync(doneDir)[0]!), 'utf8')).toBe(doneRecord);

    // Applying it again is a no-op: every node that has it now is skipped.
    const again = await operator.runNodeOp(op, [byName['cp-1']!, byName['node-a']!]);
    expect(Object.values(again.statuses).map((s) => s.skipped)).toEqual([true, true]);
  });
});

const RUNNER = () =>
  writeBundle(join(tempDir(), 'runner'), 'name: runner\nversion: 1.0.0\ndescription: r\ntype: run\nplatforms: [linux/amd64, linux/arm64]\nrun: run.sh\n', [
    {
      path: 'run.sh',
      content:
        '#!/bin/sh\nif [ -e "$KBUNDLE_ROOT/etc/fail-here" ]; then echo "this node cannot take it" >&2; exit 3; fi\nmkdir -p "$KBUNDLE_ROOT/var/lib/runner"\necho "$BUNDLE_TARGET" > "$KBUNDLE_ROOT/var/lib/runner/done"\n',
    },
  ]);

describe('canary: two objects gated by labels', () => {
  it('the canary runs one labelled node at a time and stops at a failure; the rest waits for its label, skips the canaries, stops on failure', async () => {
    const digest = await publish(RUNNER(), 'rt/runner', 'v1', 'release');
    const file = join(tempDir(), 'canary.yaml');
    await ok([
      'rollout',
      `run://${reg.host}/rt/runner:v1`,
      '--key',
      join(keys, 'release.pub'),
      '--kbundle-image',
      kbundleImage,
      '--selector',
      'kairos.io/managed=true,kairos.io/arch in (amd64)',
      '--canary',
      '2',
      '--stop-on-failure',
      '--concurrency',
      '1',
      '--backoff-limit',
      '1',
      '--name',
      'runner-v1',
      '-o',
      file,
    ]);
    const yaml = readFileSync(file, 'utf8');
    const [canary, rest] = objectsOf(yaml);
    for (const o of [canary, rest]) expect(crdErrors(o)).toEqual([]);
    expect(canary.metadata.name).toBe('runner-v1-canary');
    expect(canary.spec).toMatchObject({ concurrency: 1, stopOnFailure: true, nodeSelector: { matchLabels: { 'kairos.io/managed': 'true', 'kbundle.kairos.io/canary': 'runner-v1' } } });
    expect(rest.metadata.name).toBe('runner-v1');
    expect(rest.spec).toMatchObject({ concurrency: 1, stopOnFailure: true, nodeSelector: { matchLabels: { 'kairos.io/managed': 'true', 'kbundle.kairos.io/rollout': 'runner-v1' } } });
    expect(yaml).toContain("kubectl get nodes -l 'kairos.io/managed=true,kairos.io/arch in (amd64)' -o name | head -n 2 | xargs -I{} kubectl label {} kbundle.kairos.io/canary=runner-v1");
    expect(yaml).toContain("kubectl wait nodeop/runner-v1-canary --for=jsonpath='{.status.phase}'=Completed");
    expect(yaml).toContain("kubectl label nodes -l 'kairos.io/managed=true,kairos.io/arch in (amd64)' kbundle.kairos.io/rollout=runner-v1");

    const nodes = ['n1', 'n2', 'n3', 'n4', 'n5'].map((n) => node(n, { release: kairos('ubuntu', 'v3.5.0') }));
    const arm = node('n0-arm', { release: kairos('ubuntu', 'v3.5.0', 'arm64') });
    writeFileSync(join(nodes[2]!.root, 'etc/fail-here'), '');
    // n2 is a whole OS, as a real Kairos node is: the confined run.sh runs with its own /bin/sh
    // and mkdir (src/extract/confine.ts), not the image's.
    osTree(nodes[1]!.root);
    const all = [arm, ...nodes];
    const done = (n: SimNode) => existsSync(join(n.root, 'var/lib/runner/done'));

    // Applied together, nothing runs: no node carries either label yet.
    expect(await operator.runNodeOp(canary, all)).toMatchObject({ phase: 'Running', started: [] });
    expect(await operator.runNodeOp(rest, all)).toMatchObject({ phase: 'Running', started: [] });

    // 1. label two canaries (the arm64 node too: the selector still keeps it out).
    for (const n of [arm, nodes[0]!, nodes[1]!]) n.extraLabels = { 'kbundle.kairos.io/canary': 'runner-v1' };
    const c = await operator.runNodeOp(canary, all);
    expect(c, JSON.stringify(c.statuses, null, 1)).toMatchObject({ phase: 'Completed', started: ['n1', 'n2'], maxParallel: 1 });
    expect(readFileSync(join(nodes[0]!.root, 'var/lib/runner/done'), 'utf8')).toBe(`${reg.host}/rt/runner@${digest}\n`);
    expect(done(arm)).toBe(false);

    // 3. label the rest: the canaries are skipped by the preflight, n3 fails twice (backoffLimit 1), and
    //    with stopOnFailure nothing starts after it.
    for (const n of all) n.extraLabels = { 'kbundle.kairos.io/rollout': 'runner-v1' };
    const r = await operator.runNodeOp(rest, all);
    expect(r.phase).toBe('Failed');
    expect(r.statuses.n1).toMatchObject({ skipped: true });
    expect(r.statuses.n2).toMatchObject({ skipped: true });
    expect(r.statuses.n3).toMatchObject({ phase: 'Failed' });
    expect(r.statuses.n3!.attempts).toHaveLength(2);
    expect(r.statuses.n3!.attempts[0]!.stderr).toMatch(/run\.sh exited with status 3:\nthis node cannot take it/);
    expect(done(nodes[2]!)).toBe(false);
    expect(r.started).toEqual(['n1', 'n2', 'n3']);
    for (const n of [nodes[3]!, nodes[4]!]) expect(done(n)).toBe(false);
  });
});

describe('system extensions', () => {
  let digest: string;
  beforeAll(async () => {
    digest = await publish(join(REPO_ROOT, 'bundles/sysext-example'), 'rt/sysext-example', '1', 'release');
  }, 300_000);

  it('--sysext installs, enables and reboots by default; the preflight skips a node that has it; --now links instead of rebooting', async () => {
    const file = join(tempDir(), 'sysext.yaml');
    const r = await kbundleAsync(['rollout', '--sysext', `${reg.host}/rt/sysext-example:1`, '--key', join(keys, 'release.pub'), '--kbundle-image', kbundleImage, '-o', file], { env });
    expect(r.code, r.stderr).toBe(0);
    const [op] = objectsOf(readFileSync(file, 'utf8'));
    expect(crdErrors(op)).toEqual([]);
    expect(op.spec.rebootOnSuccess).toBe(true);
    expect(op.spec.command.slice(1, 4)).toEqual(['sysext', 'install', `oci:${reg.host}/rt/sysext-example@${digest}`]);
    expect(op.spec.preflight.command).toEqual(expect.arrayContaining(['--check', `oci:${reg.host}/rt/sysext-example@${digest}`, '--kind', 'sysext']));
    const nodes = [node('s1', { release: kairos('ubuntu', 'v3.5.0'), systemd: 256 }), node('s2', { release: kairos('debian', 'v3.5.0'), systemd: 256 })];
    const run = await operator.runNodeOp(op, nodes);
    expect(run.phase, JSON.stringify(run.statuses, null, 1)).toBe('Completed');
    for (const n of nodes) {
      const store = join(n.root, 'var/lib/kairos/extensions');
      expect(readdirSync(store).filter((f) => f.endsWith('.raw'))).toEqual(['sysext-example.sysext.raw']);
      expect(readlinkSync(join(store, 'active/sysext-example.sysext.raw'))).toBe('/var/lib/kairos/extensions/sysext-example.sysext.raw');
      expect(n.rebooted).toBe(1);
      const s = JSON.parse(await ok(['status', '--root', n.root, '--json']));
      expect(s.extensions).toEqual([expect.objectContaining({ name: 'sysext-example.sysext.raw', enabled: ['active'], record: expect.objectContaining({ digest, signer: 'release.pub' }) })]);
    }
    const again = await operator.runNodeOp(op, nodes);
    expect(Object.values(again.statuses).every((s) => s.skipped)).toBe(true);
    expect(nodes[0]!.rebooted).toBe(1);

    const now = await kbundleAsync(['rollout', '--sysext', `${reg.host}/rt/sysext-example:1`, '--key', join(keys, 'release.pub'), '--kbundle-image', kbundleImage, '--now', '--boot-state', 'common'], {
      env,
    });
    expect(now.code, now.stderr).toBe(0);
    expect(now.stderr).toMatch(/--now links the extension into \/run/);
    const [nowOp] = objectsOf(now.stdout);
    expect(nowOp.spec.rebootOnSuccess).toBeUndefined();
    expect(nowOp.spec.command).toEqual(expect.arrayContaining(['--enable', 'common', '--now']));
    const fresh = node('s3', { release: kairos('ubuntu', 'v3.5.0'), systemd: 256 });
    expect((await operator.runNodeOp(nowOp, [fresh])).phase).toBe('Completed');
    expect(readlinkSync(join(fresh.root, 'run/extensions/sysext-example.sysext.raw'))).toBe('/var/lib/kairos/extensions/common/sysext-example.sysext.raw');
  });
});

describe('refusals: nothing is written for an image that fails verification', () => {
  beforeAll(async () => {
    // Reproducible builds: the same digest (and one more signature) if the first suite pushed it.
    await publish(DEMO_SPEC('v1'), 'rt/demo', 'v1', 'release');
    await publish(DEMO_SPEC('unsigned'), 'rt/unsigned', 'v1');
  }, 120_000);
  const rollout = async (args: string[]) => {
    const file = join(tempDir(), 'out.yaml');
    const r = await kbundleAsync(['rollout', ...args, '--kbundle-image', kbundleImage, '-o', file], { env });
    return { ...r, written: existsSync(file) };
  };

  it('unsigned, re-pushed after signing, or signed by another key: refused on the workstation', async () => {
    await publish(DEMO_SPEC('signed'), 'rt/tampered', 'v1', 'release');
    await publish(DEMO_SPEC('swapped'), 'rt/tampered', 'v1'); // same tag, new digest, no signature
    for (const [ref, key] of [
      ['rt/unsigned:v1', 'release'],
      ['rt/tampered:v1', 'release'],
      ['rt/demo:v1', 'other'],
    ]) {
      const r = await rollout([`container://${reg.host}/${ref}`, '--key', join(keys, `${key}.pub`)]);
      expect(r.code, `${ref}\n${r.stderr}`).toBe(EXIT_CODES.REFUSED);
      expect(r.stderr).toMatch(/kbundle: error: rollout refused: /);
      expect(r.stdout).toBe('');
      expect(r.written).toBe(false);
    }
  });

  it('signatures swapped in the registry after the rollout was written: every node refuses, nothing lands', async () => {
    const digest = await publish(DEMO_SPEC('late'), 'rt/late', 'v1', 'release');
    const file = join(tempDir(), 'late.yaml');
    await ok(['rollout', `container://${reg.host}/rt/late:v1`, '--key', join(keys, 'release.pub'), '--kbundle-image', kbundleImage, '--backoff-limit', '0', '-o', file]);
    // Both places signatures are found (cosign's sha256-<hex>.sig tag and the referrers fallback
    // tag sha256-<hex>) now hold an unrelated image: the workstation's check no longer holds.
    for (const tag of [`sha256-${digest.slice(7)}.sig`, `sha256-${digest.slice(7)}`]) await ok(['copy', `${reg.host}/rt/unsigned:v1`, `${reg.host}/rt/late:${tag}`]);
    const [op] = objectsOf(readFileSync(file, 'utf8'));
    const n = node('late-node', { release: kairos('ubuntu', 'v3.5.0') });
    const run = await operator.runNodeOp(op, [n]);
    expect(run.statuses['late-node']).toMatchObject({ phase: 'Failed' });
    expect(run.statuses['late-node']!.attempts[0]!.code).toBe(EXIT_CODES.REFUSED);
    expect(existsSync(join(n.root, 'etc/demo'))).toBe(false);
    expect(existsSync(join(n.root, 'var/lib/kbundle'))).toBe(false);
  });

  it('--node-policy: each node verifies with its own policy, whose key paths are node paths; a node that trusts another key, has none, or points out of its root fails and keeps nothing', async () => {
    const file = join(tempDir(), 'np.yaml');
    await ok(['rollout', `container://${reg.host}/rt/demo:v1`, '--key', join(keys, 'release.pub'), '--node-policy', '--backoff-limit', '0', '--kbundle-image', kbundleImage, '-o', file]);
    const [op] = objectsOf(readFileSync(file, 'utf8'));
    expect(op.spec.command).toContain('--require-signature');
    expect(op.spec.command.join(' ')).not.toContain('--policy-base64');
    // The trusted key on this machine (not on any node): a policy must not reach it.
    const hostKey = join(tempDir('kbundle-host-key-'), 'trusted.pub');
    writeFileSync(hostKey, readFileSync(join(keys, 'release.pub')));
    const withPolicy = (name: string, key?: string, keyPath = 'trusted.pub') => {
      const n = node(name, { release: kairos('ubuntu', 'v3.5.0') });
      if (key) {
        const dir = join(n.root, 'usr/local/etc/kbundle');
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, 'trusted.pub'), readFileSync(join(keys, `${key}.pub`)));
        writeFileSync(
          join(dir, 'policy.json'),
          JSON.stringify({
            default: [{ type: 'reject' }],
            transports: { docker: { [`${reg.host}/rt`]: [{ type: 'sigstoreSigned', keyPath, signedIdentity: { type: 'matchRepository' } }] } },
          }),
        );
      }
      return n;
    };
    const escaping = withPolicy('p-escape', 'release', '/etc/kbundle/trusted.pub');
    mkdirSync(join(escaping.root, 'etc/kbundle'), { recursive: true });
    symlinkSync(hostKey, join(escaping.root, 'etc/kbundle/trusted.pub'));
    const nodes = [
      withPolicy('p-good', 'release'),
      // An absolute keyPath is the node's file (under $HOST_DIR), not the container's.
      withPolicy('p-abs', 'release', '/usr/local/etc/kbundle/trusted.pub'),
      withPolicy('p-other', 'other'),
      withPolicy('p-none'),
      withPolicy('p-host', 'release', hostKey),
      escaping,
    ];
    const run = await operator.runNodeOp(op, nodes);
    for (const n of ['p-good', 'p-abs']) {
      expect(run.statuses[n], n).toMatchObject({ phase: 'Completed', skipped: false });
      expect(readFileSync(join(nodes.find((x) => x.name === n)!.root, 'etc/demo/demo.conf'), 'utf8')).toBe('v1');
    }
    expect(run.statuses['p-other']).toMatchObject({ phase: 'Failed' });
    expect(run.statuses['p-other']!.attempts[0]!.code).toBe(EXIT_CODES.REFUSED);
    expect(run.statuses['p-none']).toMatchObject({ phase: 'Failed' });
    expect(run.statuses['p-none']!.attempts[0]!.stderr).toMatch(/--require-signature needs --key <pub.pem> or --policy <file>/);
    for (const n of ['p-host', 'p-escape']) {
      expect(run.statuses[n], n).toMatchObject({ phase: 'Failed' });
      expect(run.statuses[n]!.attempts[0]!.code, n).toBe(EXIT_CODES.NOT_FOUND);
      expect(run.statuses[n]!.attempts[0]!.stderr, n).toMatch(/keyPath: cannot read .*ENOENT/);
    }
    for (const n of nodes.slice(2)) {
      expect(existsSync(join(n.root, 'etc/demo')), n.name).toBe(false);
      expect(existsSync(join(n.root, 'var/lib/kbundle')), n.name).toBe(false);
    }
  });

  it('a containers-policy.json file is shipped with its keys inlined; a policy needing trusted-root files is refused', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'release.pub'), readFileSync(join(keys, 'release.pub')));
    writeFileSync(
      join(dir, 'policy.json'),
      JSON.stringify({
        default: [{ type: 'reject' }],
        transports: { docker: { [`${reg.host}/rt`]: [{ type: 'sigstoreSigned', keyPath: 'release.pub', signedIdentity: { type: 'matchRepository' } }] } },
      }),
    );
    const r = await kbundleAsync(['rollout', `container://${reg.host}/rt/demo:v1`, '--policy', join(dir, 'policy.json'), '--kbundle-image', kbundleImage], { env });
    expect(r.code, r.stderr).toBe(0);
    const [op] = objectsOf(r.stdout);
    const shipped = JSON.parse(Buffer.from(op.spec.command[op.spec.command.indexOf('--policy-base64') + 1], 'base64').toString('utf8'));
    const req = shipped.transports.docker[`${reg.host}/rt`][0];
    expect(req.keyPath).toBeUndefined();
    expect(Buffer.from(req.keyData, 'base64').toString('utf8')).toBe(readFileSync(join(keys, 'release.pub'), 'utf8'));
    const n = node('cp-policy', { release: kairos('ubuntu', 'v3.5.0') });
    expect((await operator.runNodeOp(op, [n])).statuses['cp-policy']).toMatchObject({ phase: 'Completed', skipped: false });

    const roots = await kbundleAsync(['rollout', `container://${reg.host}/rt/demo:v1`, '--policy', join(REPO_ROOT, 'signing/policies/keyless-github.yaml'), '--kbundle-image', kbundleImage], { env });
    expect(roots.code).toBe(EXIT_CODES.UNSUPPORTED);
    expect(roots.stderr).toMatch(/cannot travel inside a NodeOp[\s\S]*--node-policy/);
  });

  it('bad input: clear errors, exit 1, no YAML', async () => {
    const base = [`container://${reg.host}/rt/demo:v1`, '--key', join(keys, 'release.pub')];
    for (const [args, why] of [
      [['--selector', 'kairos.io/flavor in ubuntu'], /unknown selector syntax/],
      [['--selector', 'kairos.io/release>3'], /numeric comparisons/],
      [['--selector', 'Bad Key=x'], /unknown selector syntax|label key/],
      [['--concurrency', '-1'], /--concurrency: -1 must be at least 0/],
      [['--concurrency', 'two'], /not a whole number/],
      [['--drain'], /--drain needs --cordon/],
      [['--drain-force', '--cordon'], /--drain-\* options need --drain/],
      [['--canary', '0'], /--canary: 0 must be at least 1/],
      [['--boot-state', 'active'], /--boot-state and --now are for --sysext/],
      [['--host-mount-path', 'host'], /must be an absolute path/],
    ] as [string[], RegExp][]) {
      const r = await rollout([...base, ...args]);
      expect(r.code, `${args.join(' ')}\n${r.stderr}`).toBe(EXIT_CODES.INVALID_INPUT);
      expect(r.stderr).toMatch(why);
      expect(r.stdout).toBe('');
      expect(r.written).toBe(false);
    }
    const noTrust = await rollout([`container://${reg.host}/rt/demo:v1`]);
    expect(noTrust.stderr).toMatch(/give --key <pub.pem> or --policy <file>/);
    const noImage = await kbundleAsync(['rollout', ...base], { env: { ...env, KBUNDLE_IMAGE: '' } });
    expect(noImage.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(noImage.stderr).toMatch(/name the kbundle image the nodes run/);
  });
});

describe('--os: NodeOpUpgrade', () => {
  it('verifies and pins the OS image, emits NodeOpUpgrade objects (canary too) and refuses NodeOp-only flags', async () => {
    const os = writeBundle(join(tempDir(), 'os'), 'name: kairos-os\nversion: 3.5.0\ndescription: os\ntype: container\nplatforms: [linux/amd64]\nfiles:\n  - src: r\n    dst: etc/kairos-release\n', [
      { path: 'r', content: 'KAIROS_VERSION=v3.5.1\n' },
    ]);
    const digest = await publish(os, 'rt/kairos-os', 'v3.5.1', 'release');
    const out = await ok([
      'rollout',
      '--os',
      `${reg.host}/rt/kairos-os:v3.5.1`,
      '--key',
      join(keys, 'release.pub'),
      '--canary',
      '1',
      '--upgrade-recovery',
      '--concurrency',
      '2',
      '--selector',
      'kairos.io/managed',
    ]);
    const objs = objectsOf(out);
    expect(objs.map((o) => [o.kind, o.metadata.name])).toEqual([
      ['NodeOpUpgrade', `kbundle-os-kairos-os-${digest.slice(7, 15)}-canary`],
      ['NodeOpUpgrade', `kbundle-os-kairos-os-${digest.slice(7, 15)}`],
    ]);
    for (const o of objs) {
      expect(crdErrors(o)).toEqual([]);
      expect(o.spec.image).toBe(`${reg.host}/rt/kairos-os@${digest}`);
      expect(o.spec.upgradeRecovery).toBe(true);
    }
    expect(objs[0].spec).toMatchObject({ concurrency: 1, stopOnFailure: true });
    expect(objs[1].spec.concurrency).toBe(2);
    const json = JSON.parse(await ok(['rollout', '--os', `${reg.host}/rt/kairos-os:v3.5.1`, '--key', join(keys, 'release.pub'), '--json']));
    expect(json).toMatchObject({ pinned: `${reg.host}/rt/kairos-os@${digest}`, digest, signer: 'release.pub', output: null });
    expect(json.objects.map((o: any) => o.kind)).toEqual(['NodeOpUpgrade']);
    const cordon = await kbundleAsync(['rollout', '--os', `${reg.host}/rt/kairos-os:v3.5.1`, '--key', join(keys, 'release.pub'), '--cordon'], { env });
    expect(cordon.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(cordon.stderr).toMatch(/--cordon is not a NodeOpUpgrade field/);
    await publish(os, 'rt/kairos-os-unsigned', 'v3.5.1');
    const unsigned = await kbundleAsync(['rollout', '--os', `${reg.host}/rt/kairos-os-unsigned:v3.5.1`, '--key', join(keys, 'release.pub')], { env });
    expect(unsigned.code).toBe(EXIT_CODES.REFUSED);
    expect(unsigned.stdout).toBe('');
  });
});

describe('labeler stand-in', () => {
  it('labels nodes from kairos-release as the operator labeler does', () => {
    const n = node('x', { release: { ...kairos('ubuntu', 'v3.5.0'), SOFTWARE_VERSION: 'v1.33.1+k3s1' } });
    expect(nodeLabels(n)).toMatchObject({ 'kairos.io/managed': 'true', 'kairos.io/flavor': 'ubuntu', 'kairos.io/software-version': 'v1.33.1-k3s1', 'kairos.io/boot-state': 'active' });
    expect(nodeLabels(node('y', {}))['kairos.io/managed']).toBeUndefined();
  });
});
