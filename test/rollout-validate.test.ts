/**
 * The offline pieces of `kbundle rollout`: the CRD schemas it carries are the upstream ones, its
 * validator agrees with ajv on the upstream files, `--validate` on files, selector parsing, and
 * the mapping of `requires:` to labels and to node facts.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { readNodeFacts, unmetRequires, parseRequires } from '../src/requires/requires.js';
import { requiresToSelector } from '../src/rollout/requires-selector.js';
import { NODEOP_SCHEMA, NODEOPUPGRADE_SCHEMA } from '../src/rollout/crd-schemas.js';
import { parseSelector } from '../src/rollout/selector.js';
import { validateObject } from '../src/rollout/validate.js';
import { kbundleInProcess, REPO_ROOT } from './helpers/cli.js';
import { CRD_DIR, crdErrors, crdSchemas } from './helpers/crd-validator.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';

afterAll(cleanupTempDirs);

const SHARED = '/work/shared/kairos-operator/config/crd/bases';

const nodeOp = (spec: Record<string, unknown>, meta: Record<string, unknown> = { name: 'x' }) => ({ apiVersion: 'operator.kairos.io/v1alpha1', kind: 'NodeOp', metadata: meta, spec });

describe('the CRD schemas kbundle carries', () => {
  it('are exactly the upstream v0.1.3 openAPIV3Schemas (test/fixtures copies, and /work/shared where present)', () => {
    const upstream = crdSchemas();
    expect(NODEOP_SCHEMA).toEqual(upstream.get('NodeOp')!.schema);
    expect(NODEOPUPGRADE_SCHEMA).toEqual(upstream.get('NodeOpUpgrade')!.schema);
    if (existsSync(SHARED)) {
      for (const f of ['operator.kairos.io_nodeops.yaml', 'operator.kairos.io_nodeopupgrades.yaml']) expect(readFileSync(join(CRD_DIR, f), 'utf8')).toBe(readFileSync(join(SHARED, f), 'utf8'));
    }
  });

  it('are the ones the catalog kairos-operator bundle installs (kubectl kustomize config/default of the release)', () => {
    const upstream = crdSchemas();
    const placed = crdSchemas(join(REPO_ROOT, 'bundles/kairos-operator/assets'));
    for (const kind of ['NodeOp', 'NodeOpUpgrade']) expect(placed.get(kind)).toEqual(upstream.get(kind));
    expect(placed.get('OSArtifact')).toMatchObject({ group: 'build.kairos.io', version: 'v1alpha2' });
  });

  it("kbundle's validator and ajv on the upstream files agree: good objects pass, bad ones fail on the same field", () => {
    const good = nodeOp({
      image: 'r/kbundle@sha256:' + 'a'.repeat(64),
      command: ['kbundle', 'install'],
      concurrency: 2,
      nodeSelector: { matchLabels: { 'kairos.io/managed': 'true' }, matchExpressions: [{ key: 'kairos.io/flavor', operator: 'In', values: ['ubuntu'] }] },
      drainOptions: { enabled: true, timeoutSeconds: 60 },
      imagePullSecrets: [{ name: 'pull' }],
      preflight: { command: ['kbundle', 'status'], activeDeadlineSeconds: 30 },
    });
    expect(crdErrors(good)).toEqual([]);
    expect(validateObject(good)).toEqual([]);
    const cases: [unknown, RegExp][] = [
      [nodeOp({ command: ['x'], concurrency: -1 }), /\/spec\/concurrency.*>= 0/],
      [nodeOp({ command: ['x'], concurrency: 2 ** 31 }), /\/spec\/concurrency/],
      [nodeOp({ command: 'kbundle install' }), /\/spec\/command.*array/],
      [nodeOp({ image: 'x' }), /command/],
      [nodeOp({ command: ['x'], rebootOnSucess: true }), /rebootOnSucess/],
      [nodeOp({ command: ['x'], preflight: { image: 'x' } }), /\/spec\/preflight.*command/],
      [nodeOp({ command: ['x'], drainOptions: { enabled: 'yes' } }), /\/spec\/drainOptions\/enabled.*boolean/],
      [{ apiVersion: 'operator.kairos.io/v1alpha1', kind: 'NodeOpUpgrade', metadata: { name: 'u' }, spec: { upgradeActive: true } }, /image/],
    ];
    for (const [obj, why] of cases) {
      expect(crdErrors(obj).join('\n'), JSON.stringify(obj)).toMatch(why);
      expect(validateObject(obj).join('\n'), JSON.stringify(obj)).toMatch(why);
    }
    // What the schema leaves to the operator's Go code, kbundle checks too.
    expect(validateObject(nodeOp({ command: ['x'], nodeSelector: { matchExpressions: [{ key: 'a', operator: 'Equals', values: ['b'] }] } })).join()).toMatch(/not one of In, NotIn/);
    expect(validateObject(nodeOp({ command: ['x'], nodeSelector: { matchExpressions: [{ key: 'a', operator: 'In' }] } })).join()).toMatch(/In needs at least one value/);
    expect(validateObject(nodeOp({ command: ['x'] }, { name: 'Bad_Name' })).join()).toMatch(/DNS-1123 subdomain/);
    expect(validateObject({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } }).join()).toMatch(/only operator.kairos.io\/v1alpha1 NodeOp and NodeOpUpgrade/);
  });

  it('kbundle rollout --validate checks a file offline: exit 0 when valid, 1 naming every object and field when not', async () => {
    const dir = tempDir();
    const good = join(dir, 'good.yaml');
    writeFileSync(good, `# a comment\napiVersion: operator.kairos.io/v1alpha1\nkind: NodeOp\nmetadata:\n  name: a\nspec:\n  command: [kbundle]\n`);
    const r = await kbundleInProcess(['rollout', '--validate', good]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/1 object\(s\) valid/);
    const bad = join(dir, 'bad.yaml');
    writeFileSync(
      bad,
      `${readFileSync(good, 'utf8')}---\napiVersion: operator.kairos.io/v1alpha1\nkind: NodeOp\nmetadata:\n  name: b\nspec:\n  command: [kbundle]\n  concurrency: -2\n  stopOnFailur: true\n`,
    );
    const b = await kbundleInProcess(['rollout', '--validate', bad]);
    expect(b.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(b.stdout).toMatch(/object 2 \(NodeOp\/b\):\n {2}\/spec: unknown field "stopOnFailur"\n {2}\/spec\/concurrency: must be >= 0/);
    expect(b.stderr).toMatch(/1 of 2 object\(s\) do not validate/);
  });
});

describe('--selector', () => {
  it('parses kubectl -l syntax into matchLabels and matchExpressions', () => {
    expect(parseSelector(['kairos.io/managed=true,kairos.io/flavor in (ubuntu, debian),!kairos.io/fips', 'env!=prod,tier, kairos.io/arch notin (arm64)', 'a==b'])).toEqual({
      matchLabels: { 'kairos.io/managed': 'true', a: 'b' },
      matchExpressions: [
        { key: 'kairos.io/flavor', operator: 'In', values: ['ubuntu', 'debian'] },
        { key: 'kairos.io/fips', operator: 'DoesNotExist' },
        { key: 'env', operator: 'NotIn', values: ['prod'] },
        { key: 'tier', operator: 'Exists' },
        { key: 'kairos.io/arch', operator: 'NotIn', values: ['arm64'] },
      ],
    });
    for (const [s, why] of [
      ['a=b,a=c', /already required to be "b"/],
      ['a in (b', /unbalanced "\("/],
      ['a in ()', /needs at least one value/],
      ['-bad=x', /label key/],
      ['a=' + 'x'.repeat(64), /label value/],
      ['a>1', /numeric comparisons/],
      ['a = b = c', /unknown selector syntax/],
      ['a,,b', /empty requirement/],
    ] as [string, RegExp][]) {
      expect(() => parseSelector([s]), s).toThrow(why);
    }
  });
});

describe('requires:', () => {
  const facts = (release: Record<string, string>, systemd?: number) => ({ release, releaseFile: '/etc/kairos-release', systemd });

  it('turns what the labeler exposes into nodeSelector expressions and leaves the rest to the preflight', () => {
    const r = parseRequires(
      { kairos: '>=3.2', flavor: ['ubuntu', 'opensuse-leap'], family: 'ubuntu', arch: ['amd64'], k8s: { distribution: 'k3s', version: '^1.30' }, systemd: 254, trustedBoot: false },
      't',
    );
    expect(requiresToSelector(r)).toEqual({
      selector: {
        matchExpressions: [
          { key: 'kairos.io/flavor', operator: 'In', values: ['ubuntu', 'opensuse-leap'] },
          { key: 'kairos.io/family', operator: 'In', values: ['ubuntu'] },
          { key: 'kairos.io/arch', operator: 'In', values: ['amd64'] },
          { key: 'kairos.io/software-version-prefix', operator: 'In', values: ['k3s'] },
          { key: 'kairos.io/trusted-boot', operator: 'NotIn', values: ['true'] },
        ],
      },
      preflightOnly: ['kairos', 'k8s.version', 'systemd'],
    });
    expect(() => parseRequires({ kairos: 'three' }, 'b.yaml')).toThrow(/b\.yaml: requires\.kairos: must be a semver range/);
    expect(() => parseRequires({ k8s: { distribution: 'rke2' } }, 'b.yaml')).toThrow(/requires\.k8s\.distribution/);
    expect(() => parseRequires({ flavour: ['x'] }, 'b.yaml')).toThrow(/unknown field\(s\) "flavour"/);
  });

  it('names each unmet constraint with the node value', () => {
    const r = parseRequires({ kairos: '>=3.2.0 <4', flavor: ['ubuntu'], k8s: { distribution: ['k0s'], version: '>=1.34' }, systemd: 254, trustedBoot: true }, 't');
    const node = facts({ KAIROS_VERSION: 'v3.1.9', KAIROS_FLAVOR: 'alpine', KAIROS_SOFTWARE_VERSION_PREFIX: 'k3s', KAIROS_SOFTWARE_VERSION: 'v1.33.1+k3s1' }, 252);
    expect(unmetRequires(r, node)).toEqual([
      'requires.kairos ">=3.2.0 <4": the node has KAIROS_VERSION=v3.1.9',
      'requires.flavor [ubuntu]: the node has KAIROS_FLAVOR=alpine',
      'requires.k8s.distribution [k0s]: the node has KAIROS_SOFTWARE_VERSION_PREFIX=k3s',
      'requires.k8s.version ">=1.34": the node has KAIROS_SOFTWARE_VERSION=v1.33.1+k3s1',
      'requires.systemd >= 254: the node has systemd 252',
      'requires.trustedBoot true: the node has no KAIROS_TRUSTED_BOOT in /etc/kairos-release',
    ]);
    const ok = facts({ KAIROS_VERSION: 'v3.5.0', KAIROS_FLAVOR: 'ubuntu', KAIROS_SOFTWARE_VERSION_PREFIX: 'k0s', KAIROS_SOFTWARE_VERSION: 'v1.34.2+k0s.0', KAIROS_TRUSTED_BOOT: 'true' }, 256);
    expect(unmetRequires(r, ok)).toEqual([]);
  });

  it('reads the node from /etc/kairos-release, else the KAIROS_ keys of os-release (older Kairos)', async () => {
    const root = tempDir();
    mkdirSync(join(root, 'etc'));
    writeFileSync(join(root, 'etc/os-release'), 'ID=kairos\nKAIROS_FLAVOR="ubuntu"\nKAIROS_VERSION="v2.4.0"\n');
    expect(await readNodeFacts(root)).toEqual({ release: { KAIROS_FLAVOR: 'ubuntu', KAIROS_VERSION: 'v2.4.0' }, releaseFile: '/etc/os-release', systemd: undefined });
    writeFileSync(join(root, 'etc/kairos-release'), '# comment\nKAIROS_FLAVOR=debian\n');
    expect((await readNodeFacts(root)).release).toEqual({ KAIROS_FLAVOR: 'debian' });
  });
});
