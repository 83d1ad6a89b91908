/**
 * `kbundle rollout` end to end: the emitted objects validate against the operator's released
 * CRDs, and the operator stand-in (test/helpers/operator-standin.ts) runs their preflight and
 * command on simulated Kairos nodes (node roots in folders, the built CLI as the container),
 * against a real loopback registry. Everything asserted is on disk or in the registry.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTo } from '../src/builder/output.js';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { kbundleAsync, REPO_ROOT } from './helpers/cli.js';
import { crdErrors } from './helpers/crd-validator.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { writeBundle } from './helpers/fixture-bundle.js';
import { nodeLabels, objectsOf, OperatorStandin, type SimNode } from './helpers/operator-standin.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';

let reg: RegistryHandle;
let keys: string;
let operator: OperatorStandin;
let kbundleImage: string;
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
  // Stands for the kbundle image (kbundle image, pushed): the stand-in "pulls" it by digest and
  // runs the built CLI as its entrypoint.
  const img = writeBundle(
    join(tempDir(), 'kb'),
    'name: kbundle-image\nversion: 1.0.0\ndescription: k\ntype: container\nplatforms: [linux/amd64]\nfiles:\n  - src: k\n    dst: usr/local/bin/kbundle\n',
    [{ path: 'k', content: '#!/bin/sh\n', mode: 0o755 }],
  );
  await publish(img, 'rt/kbundle', 'test');
  kbundleImage = `${reg.host}/rt/kbundle:test`;
  operator = new OperatorStandin(reg.host);
}, 120_000);
afterAll(async () => {
  await reg?.stop();
  cleanupTempDirs();
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
    expect(op.spec.image).toMatch(new RegExp(`^${reg.host}/rt/kbundle@sha256:[0-9a-f]{64}$`));
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
    expect(st['node-planted']!.preflight!.stderr).toMatch(/var\/lib\/kbundle is a symlink/);
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

describe('labeler stand-in', () => {
  it('labels nodes from kairos-release as the operator labeler does', () => {
    const n = node('x', { release: { ...kairos('ubuntu', 'v3.5.0'), SOFTWARE_VERSION: 'v1.33.1+k3s1' } });
    expect(nodeLabels(n)).toMatchObject({ 'kairos.io/managed': 'true', 'kairos.io/flavor': 'ubuntu', 'kairos.io/software-version': 'v1.33.1-k3s1', 'kairos.io/boot-state': 'active' });
    expect(nodeLabels(node('y', {}))['kairos.io/managed']).toBeUndefined();
    void REPO_ROOT;
    void EXIT_CODES;
  });
});
