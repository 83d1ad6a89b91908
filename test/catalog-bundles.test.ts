/**
 * The community catalog in bundles/: every bundle builds, installs the way Kairos runs it
 * (test/helpers/bundle-harness.ts) and places exactly the expected files with the expected
 * content — with defaults, with overridden values, on k0s, and refusing bad values.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments, parseDocument } from 'yaml';
import { KbError } from '../src/errors.js';
import { buildTo } from '../src/builder/output.js';
import { loadBundleSpec, type BundleSpec } from '../src/builder/spec.js';
import { serveFixtures, type FixtureServer } from './helpers/catalog-copy.js';
import { cleanupAllInstalls, installBundleForTest, KAIROS_AGENT_STANDIN, type InstalledBundle } from './helpers/bundle-harness.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const BUNDLES = resolve(HERE, '../bundles');
const FIXTURES = resolve(HERE, 'fixtures/catalog');
const K3S_DIR = 'var/lib/rancher/k3s/server/manifests';
const k0sDir = (name: string) => `var/lib/k0s/manifests/${name}`;

type Cfg = Record<string, string>;
interface Doc {
  apiVersion: string;
  kind: string;
  name: string;
  namespace?: string;
}
interface ChartExpect {
  name: string;
  chart: string;
  repo: string;
  namespace: string;
  /** The chart's values for an effective config (undefined: the chart has none). */
  values?: (c: Cfg) => unknown;
}
interface ManifestExpect {
  docs: Doc[];
  /** Checks on the rendered documents for an effective config. */
  check?: (docs: Record<string, any>[], c: Cfg) => void;
}
interface RunExpect {
  type: 'run';
  key: string;
  defaults: Cfg;
  charts: ChartExpect[];
  manifests: Record<string, ManifestExpect>;
  /** A valid, non-default cloud-config block for the bundle's key. */
  override: Cfg;
}
interface SysextExpect {
  type: 'sysext';
}

interface ContainerExpect {
  type: 'container';
}
/** A run bundle with its own run.sh (ported from upstream): tested in test/catalog-upstream.test.ts. */
interface RunScriptExpect {
  type: 'run-script';
  key: string;
}

/** A run bundle that installs a program rather than cluster manifests (no config block). */
interface ToolExpect {
  type: 'run';
  tool: string;
}

const bool = (s: string) => s === 'true';

/** A config block as a user writes it: numbers and booleans unquoted, the rest as strings. */
function typed(c: Cfg): Record<string, string | number | boolean> {
  return Object.fromEntries(Object.entries(c).map(([k, v]) => [k, /^[0-9]+$/.test(v) ? Number(v) : v === 'true' || v === 'false' ? v === 'true' : v]));
}

const CATALOG: Record<string, RunExpect | ContainerExpect | SysextExpect | ToolExpect | RunScriptExpect> = {
  metallb: {
    type: 'run',
    key: 'metallb',
    defaults: { version: '0.14.9', address_pool: '192.168.1.10-192.168.1.20' },
    charts: [{ name: 'metallb', chart: 'metallb', repo: 'https://metallb.github.io/metallb', namespace: 'metallb-system' }],
    manifests: {
      'metallb-addresspool.yaml': {
        docs: [
          { apiVersion: 'metallb.io/v1beta1', kind: 'IPAddressPool', name: 'default', namespace: 'metallb-system' },
          { apiVersion: 'metallb.io/v1beta1', kind: 'L2Advertisement', name: 'default', namespace: 'metallb-system' },
        ],
        check: (d, c) => {
          expect(d[0]!.spec.addresses).toEqual([c.address_pool]);
          expect(d[1]!.spec.ipAddressPools).toEqual(['default']);
        },
      },
    },
    override: { version: '0.15.2', address_pool: '10.0.0.100-10.0.0.120' },
  },
  'cert-manager': {
    type: 'run',
    key: 'cert_manager',
    defaults: { version: 'v1.19.1', crds: 'true', replicas: '1' },
    charts: [
      {
        name: 'cert-manager',
        chart: 'cert-manager',
        repo: 'https://charts.jetstack.io',
        namespace: 'cert-manager',
        values: (c) => ({ crds: { enabled: bool(c.crds!), keep: true }, replicaCount: Number(c.replicas) }),
      },
    ],
    manifests: {},
    override: { version: 'v1.18.2', crds: 'false', replicas: '2' },
  },
  longhorn: {
    type: 'run',
    key: 'longhorn',
    defaults: { version: '1.10.1', data_path: '/var/lib/longhorn/', replicas: '3', kubelet_root_dir: '/var/lib/kubelet' },
    charts: [
      {
        name: 'longhorn',
        chart: 'longhorn',
        repo: 'https://charts.longhorn.io',
        namespace: 'longhorn-system',
        values: (c) => ({
          defaultSettings: { defaultDataPath: c.data_path },
          persistence: { defaultClassReplicaCount: Number(c.replicas) },
          csi: { kubeletRootDir: c.kubelet_root_dir },
        }),
      },
    ],
    manifests: {},
    override: { version: '1.9.2', data_path: '/usr/local/longhorn', replicas: '2', kubelet_root_dir: '/var/lib/k0s/kubelet' },
  },
  kyverno: {
    type: 'run',
    key: 'kyverno',
    defaults: { version: '3.6.1', admission_replicas: '1', background_replicas: '1' },
    charts: [
      {
        name: 'kyverno',
        chart: 'kyverno',
        repo: 'https://kyverno.github.io/kyverno/',
        namespace: 'kyverno',
        values: (c) => ({ admissionController: { replicas: Number(c.admission_replicas) }, backgroundController: { replicas: Number(c.background_replicas) } }),
      },
    ],
    manifests: {},
    override: { version: '3.5.2', admission_replicas: '3', background_replicas: '2' },
  },
  'ingress-nginx': {
    type: 'run',
    key: 'ingress_nginx',
    defaults: { version: '4.14.0', kind: 'Deployment', service_type: 'LoadBalancer', default_class: 'false' },
    charts: [
      {
        name: 'ingress-nginx',
        chart: 'ingress-nginx',
        repo: 'https://kubernetes.github.io/ingress-nginx',
        namespace: 'ingress-nginx',
        values: (c) => ({ controller: { kind: c.kind, service: { type: c.service_type }, ingressClassResource: { default: bool(c.default_class!) } } }),
      },
    ],
    manifests: {},
    override: { version: '4.13.3', kind: 'DaemonSet', service_type: 'NodePort', default_class: 'true' },
  },
  argocd: {
    type: 'run',
    key: 'argocd',
    defaults: { version: '9.1.3', insecure: 'false', service_type: 'ClusterIP', dex: 'true' },
    charts: [
      {
        name: 'argocd',
        chart: 'argo-cd',
        repo: 'https://argoproj.github.io/argo-helm',
        namespace: 'argocd',
        values: (c) => ({ configs: { params: { 'server.insecure': bool(c.insecure!) } }, server: { service: { type: c.service_type } }, dex: { enabled: bool(c.dex!) } }),
      },
    ],
    manifests: {},
    override: { version: '9.0.5', insecure: 'true', service_type: 'LoadBalancer', dex: 'false' },
  },
  calico: {
    type: 'run',
    key: 'calico',
    defaults: { version: 'v3.31.2', pod_cidr: '10.42.0.0/16', encapsulation: 'VXLANCrossSubnet', kubelet_dir: '/var/lib/kubelet' },
    charts: [
      {
        name: 'calico',
        chart: 'tigera-operator',
        repo: 'https://docs.tigera.io/calico/charts',
        namespace: 'tigera-operator',
        values: (c) => ({
          installation: { calicoNetwork: { ipPools: [{ cidr: c.pod_cidr, encapsulation: c.encapsulation }] } },
          kubeletVolumePluginPath: c.kubelet_dir,
        }),
      },
    ],
    manifests: {},
    override: { version: 'v3.30.4', pod_cidr: '10.244.0.0/16', encapsulation: 'IPIP', kubelet_dir: '/var/lib/k0s/kubelet' },
  },
  'system-upgrade-controller': {
    type: 'run',
    key: 'system_upgrade_controller',
    defaults: { version: 'v0.17.0', polling_interval: '15m', job_deadline: '900' },
    charts: [],
    manifests: {
      'system-upgrade-controller-crd.yaml': {
        docs: [{ apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', name: 'plans.upgrade.cattle.io' }],
        check: (d) => expect(d[0]!.spec.names.kind).toBe('Plan'),
      },
      'system-upgrade-controller.yaml': {
        docs: [
          { apiVersion: 'v1', kind: 'Namespace', name: 'system-upgrade' },
          { apiVersion: 'v1', kind: 'ServiceAccount', name: 'system-upgrade', namespace: 'system-upgrade' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', name: 'system-upgrade-controller' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', name: 'system-upgrade-controller-drainer' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', name: 'system-upgrade-controller', namespace: 'system-upgrade' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', name: 'system-upgrade' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', name: 'system-upgrade-drainer' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', name: 'system-upgrade', namespace: 'system-upgrade' },
          { apiVersion: 'v1', kind: 'ConfigMap', name: 'default-controller-env', namespace: 'system-upgrade' },
          { apiVersion: 'apps/v1', kind: 'Deployment', name: 'system-upgrade-controller', namespace: 'system-upgrade' },
        ],
        check: (d, c) => {
          const env = d.find((x) => x.kind === 'ConfigMap')!.data;
          expect(env.SYSTEM_UPGRADE_PLAN_POLLING_INTERVAL).toBe(c.polling_interval);
          expect(env.SYSTEM_UPGRADE_JOB_ACTIVE_DEADLINE_SECONDS).toBe(c.job_deadline);
          const dep = d.find((x) => x.kind === 'Deployment')!;
          expect(dep.spec.template.spec.containers[0].image).toBe(`rancher/system-upgrade-controller:${c.version}`);
        },
      },
    },
    override: { version: 'v0.16.3', polling_interval: '1h', job_deadline: '1800' },
  },
  'kairos-operator': {
    type: 'run',
    key: 'kairos_operator',
    defaults: { version: 'v0.1.3' },
    charts: [],
    manifests: {
      'kairos-operator-crds.yaml': {
        docs: [
          { apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', name: 'nodeops.operator.kairos.io' },
          { apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', name: 'nodeopupgrades.operator.kairos.io' },
          { apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', name: 'osartifacts.build.kairos.io' },
        ],
        check: (d) => {
          expect(d.map((x) => `${x.spec.group}/${x.spec.versions[0].name}/${x.spec.names.kind}`)).toEqual([
            'operator.kairos.io/v1alpha1/NodeOp',
            'operator.kairos.io/v1alpha1/NodeOpUpgrade',
            'build.kairos.io/v1alpha2/OSArtifact',
          ]);
          // The release's typed schemas (what kbundle rollout validates against), not open ones.
          const nodeOp = d[0]!.spec.versions[0].schema.openAPIV3Schema.properties.spec;
          expect(nodeOp.required).toEqual(['command']);
          expect(nodeOp.properties.concurrency).toMatchObject({ type: 'integer', minimum: 0 });
          expect(nodeOp['x-kubernetes-preserve-unknown-fields']).toBeUndefined();
        },
      },
      'kairos-operator.yaml': {
        docs: [
          { apiVersion: 'v1', kind: 'Namespace', name: 'operator-system' },
          { apiVersion: 'v1', kind: 'ServiceAccount', name: 'operator-kairos-operator', namespace: 'operator-system' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', name: 'operator-leader-election-role', namespace: 'operator-system' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', name: 'operator-manager-role' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', name: 'operator-metrics-auth-role' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', name: 'operator-metrics-reader' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', name: 'operator-nodeop-admin-role' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', name: 'operator-nodeop-editor-role' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', name: 'operator-nodeop-viewer-role' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', name: 'operator-osartifact-editor-role' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', name: 'operator-osartifact-viewer-role' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', name: 'operator-leader-election-rolebinding', namespace: 'operator-system' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', name: 'operator-kairos-operator-rolebinding' },
          { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', name: 'operator-metrics-auth-rolebinding' },
          { apiVersion: 'v1', kind: 'Service', name: 'operator-kairos-operator-metrics-service', namespace: 'operator-system' },
          { apiVersion: 'apps/v1', kind: 'Deployment', name: 'operator-kairos-operator', namespace: 'operator-system' },
        ],
        check: (d, c) => {
          const ctr = d.find((x) => x.kind === 'Deployment')!.spec.template.spec.containers[0];
          expect(ctr.image).toBe(`quay.io/kairos/operator:${c.version}`);
          const env = Object.fromEntries(ctr.env.filter((e: any) => 'value' in e).map((e: any) => [e.name, e.value]));
          expect(env).toEqual({
            OPERATOR_IMAGE: `quay.io/kairos/operator:${c.version}`,
            NODE_LABELER_IMAGE: `quay.io/kairos/operator-node-labeler:${c.version}`,
            SENTINEL_IMAGE: '',
            NODEOP_DEFAULT_IMAGE: 'busybox:latest',
          });
          // The operator runs the node labeler (kairos.io/managed=true, …) as a DaemonSet of its own.
          const rules = d.find((x) => x.kind === 'ClusterRole' && x.metadata.name === 'operator-manager-role')!.rules;
          expect(rules).toEqual(
            expect.arrayContaining([
              { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'patch', 'update', 'watch'] },
              { apiGroups: ['apps'], resources: ['daemonsets'], verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'] },
            ]),
          );
        },
      },
    },
    override: { version: 'v0.1.2' },
  },
  // Own run.sh, behaviour ported from upstream's Go tests in test/catalog-upstream.test.ts.
  edgevpn: { type: 'run-script', key: 'edgevpn' },
  flux: { type: 'run-script', key: 'flux' },
  kairos: { type: 'run-script', key: 'kairos' },
  kubevirt: { type: 'run-script', key: 'kubevirt' },
  multus: { type: 'run-script', key: 'multus' },
  spinkube: { type: 'run-script', key: 'spinkube' },
  k9s: { type: 'container' },
  kubectl: { type: 'container' },
  // Its executables come from npm run sea (test/setup.sh); installed in its own test below.
  kbundle: { type: 'run', tool: 'usr/local/bin/kbundle' },
  'qemu-guest-agent': { type: 'container' },
  // Built and installed end to end in test/sysext-bundle.test.ts.
  'sysext-example': { type: 'sysext' },
};

const BUNDLE_NAMES = readdirSync(BUNDLES, { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(BUNDLES, d.name, 'bundle.yaml')))
  .map((d) => d.name)
  .sort();

/** Every document of a multi-document YAML file, failing on any parse error. */
function docsOf(text: string, what: string): Record<string, any>[] {
  const docs = parseAllDocuments(text);
  for (const d of docs) expect(d.errors, `${what}: ${d.errors.map((e) => e.message).join('; ')}`).toEqual([]);
  return docs.map((d) => d.toJS()).filter((d) => d !== null);
}

function shapeOf(d: Record<string, any>): Doc {
  const s: Doc = { apiVersion: d.apiVersion, kind: d.kind, name: d.metadata?.name };
  if (d.metadata?.namespace !== undefined) s.namespace = d.metadata.namespace;
  return s;
}

function expectedFiles(e: RunExpect, distro: 'k3s' | 'k0s', name: string): string[] {
  const dir = distro === 'k3s' ? K3S_DIR : k0sDir(name);
  const files = [...e.charts.map((c) => (distro === 'k3s' ? `${c.name}-helmchart.yaml` : `${c.name}-chart.yaml`)), ...Object.keys(e.manifests)];
  return files.map((f) => `${dir}/${f}`).sort();
}

/** Check every placed file of a run bundle against its expectation for the effective config. */
function checkPlaced(r: InstalledBundle, e: RunExpect, distro: 'k3s' | 'k0s', name: string, cfg: Cfg): void {
  expect(r.exitCode, r.stderr).toBe(0);
  expect(r.files()).toEqual(expectedFiles(e, distro, name));
  const dir = distro === 'k3s' ? K3S_DIR : k0sDir(name);
  expect(r.stdout).toContain(`${name}: placed ${r.files().length} manifest(s) for ${distro}`);
  for (const c of e.charts) {
    if (distro === 'k3s') {
      const docs = docsOf(r.read(`${dir}/${c.name}-helmchart.yaml`), c.name);
      expect(docs.map(shapeOf)).toEqual([{ apiVersion: 'helm.cattle.io/v1', kind: 'HelmChart', name: c.name, namespace: 'kube-system' }]);
      const spec = docs[0]!.spec;
      expect({ chart: spec.chart, repo: spec.repo, version: spec.version, targetNamespace: spec.targetNamespace, createNamespace: spec.createNamespace }).toEqual({
        chart: c.chart,
        repo: c.repo,
        version: cfg.version,
        targetNamespace: c.namespace,
        createNamespace: true,
      });
      if (c.values) expect(parse(spec.valuesContent)).toEqual(c.values(cfg));
      else expect(spec.valuesContent).toBeUndefined();
    } else {
      const docs = docsOf(r.read(`${dir}/${c.name}-chart.yaml`), c.name);
      expect(docs.map(shapeOf)).toEqual([{ apiVersion: 'helm.k0sproject.io/v1beta1', kind: 'Chart', name: `k0s-addon-chart-${c.name}`, namespace: 'kube-system' }]);
      const spec = docs[0]!.spec;
      expect({ chartName: spec.chartName, releaseName: spec.releaseName, version: spec.version, namespace: spec.namespace }).toEqual({
        chartName: `${c.name}/${c.chart}`,
        releaseName: c.name,
        version: cfg.version,
        namespace: c.namespace,
      });
      if (c.values) expect(parse(spec.values)).toEqual(c.values(cfg));
      else expect(spec.values).toBeUndefined();
    }
  }
  for (const [file, m] of Object.entries(e.manifests)) {
    const text = r.read(`${dir}/${file}`);
    expect(text, `${file} still has a placeholder`).not.toMatch(/\{\{/);
    const docs = docsOf(text, file);
    expect(docs.map(shapeOf), file).toEqual(m.docs);
    m.check?.(docs, cfg);
  }
}

let cacheDir: string;
beforeAll(async () => {
  // Downloads (url: files) go to a private cache, never the user's.
  cacheDir = await mkdtemp(join(tmpdir(), 'kbundle-catalog-cache-'));
  process.env.KBUNDLE_CACHE_DIR = cacheDir;
});
afterAll(async () => {
  await cleanupAllInstalls();
  await rm(cacheDir, { recursive: true, force: true });
  delete process.env.KBUNDLE_CACHE_DIR;
});

describe('catalog', () => {
  it('has an expectation for every bundle in bundles/ (and no stale ones)', () => {
    expect(BUNDLE_NAMES.length).toBeGreaterThanOrEqual(11);
    expect(BUNDLE_NAMES).toEqual(Object.keys(CATALOG).sort());
  });

  it.each(BUNDLE_NAMES)('%s: spec, README and pinned versions', async (name) => {
    const { spec } = await loadBundleSpec(join(BUNDLES, name));
    const e = CATALOG[name]!;
    expect(spec.name).toBe(name);
    expect(spec.type).toBe(e.type === 'run-script' ? 'run' : e.type);
    expect(spec.platforms).toEqual(['linux/amd64', 'linux/arm64']);
    const readme = readFileSync(join(BUNDLES, name, 'README.md'), 'utf8');
    if ('tool' in e) {
      expect(readme).toContain('run://');
    } else if (e.type === 'run') {
      expect(spec.config.key).toBe(e.key);
      expect(spec.config.values).toEqual(e.defaults);
      // Every value is checked on the node, so nothing unvalidated reaches a manifest.
      expect(Object.keys(spec.config.patterns).sort()).toEqual(Object.keys(e.defaults).sort());
      // kairos-agent config get takes a jq path: a key with "-" would be parsed as a subtraction.
      expect(spec.config.key).toMatch(/^[a-z_][a-z0-9_]*$/);
      // The bundle version follows the default it installs.
      expect(spec.version).toBe(e.defaults.version!.replace(/^v/, ''));
      expect(readme).toContain(`${e.key}:`);
      for (const [k, v] of Object.entries(e.defaults)) expect(readme, `README documents ${e.key}.${k}`).toContain(`  ${k}: ${v}`);
      for (const c of e.charts) expect(spec.charts.find((x) => x.name === c.name)?.version).toBe('{{ version }}');
    } else if (e.type === 'run-script') {
      expect(spec.run).toBe('run.sh');
      expect(readme).toContain('run://');
      expect(readme).toContain(`${e.key}:`);
      expect(readme, 'README says how it differs from upstream').toMatch(/## Differences from (the )?upstream/i);
    } else if (e.type === 'sysext') {
      expect(readme).toContain('sysext install');
    } else {
      expect(readme).toContain(`container://`);
    }
  });
});

describe.each(BUNDLE_NAMES.filter((n) => CATALOG[n]!.type === 'run' && !('tool' in CATALOG[n]!)))('run bundle %s', (name) => {
  const dir = join(BUNDLES, name);
  const e = () => CATALOG[name] as RunExpect;

  it('installs with defaults into the k3s manifests folder', async () => {
    const r = await installBundleForTest(dir);
    checkPlaced(r, e(), 'k3s', name, e().defaults);
    expect(existsSync(join(r.root, 'var/lib/k0s'))).toBe(false);
    await r.cleanup();
  });

  it('applies overridden values from the cloud-config (k3s.enabled)', async () => {
    const r = await installBundleForTest(dir, { cloudConfig: { k3s: { enabled: true }, [e().key]: typed(e().override) } });
    checkPlaced(r, e(), 'k3s', name, { ...e().defaults, ...e().override });
    await r.cleanup();
  });

  it('places the manifests for k0s when k0s.enabled, and nothing for k3s', async () => {
    const r = await installBundleForTest(dir, { cloudConfig: { k0s: { enabled: true } } });
    checkPlaced(r, e(), 'k0s', name, e().defaults);
    expect(existsSync(join(r.root, 'var/lib/rancher'))).toBe(false);
    await r.cleanup();
  });

  it('refuses a value that breaks its pattern, naming the key, and places nothing', async () => {
    // Every pattern-checked value on its own, so each check is proven to run.
    for (const k of Object.keys(e().defaults)) {
      const r = await installBundleForTest(dir, { cloudConfig: { [e().key]: { [k]: 'bad value"; rm -rf /' } } });
      expect(r.exitCode, `${e().key}.${k}`).not.toBe(0);
      expect(r.stderr).toContain(`${name}: ${e().key}.${k}: 'bad value"; rm -rf /' is not valid`);
      expect(r.files()).toEqual([]);
      await r.cleanup();
    }
  });
});

describe('run bundles: cloud-config sources and overrides', () => {
  it('reads /usr/local/cloud-config and lets /oem override it; distro pinned by <key>.distro', async () => {
    const r = await installBundleForTest(join(BUNDLES, 'kairos-operator'), {
      rootSetup: async (root) => {
        await cp(join(FIXTURES, 'cloud-config'), join(root, 'usr/local/cloud-config'), { recursive: true });
      },
      // /oem wins over /usr/local/cloud-config for the version; distro comes from the lower file.
      cloudConfig: '#cloud-config\nkairos_operator:\n  version: v0.0.4\n',
    });
    checkPlaced(r, CATALOG['kairos-operator'] as RunExpect, 'k0s', 'kairos-operator', { version: 'v0.0.4' });
    await r.cleanup();
  });

  it('ignores a cloud-config file without a #cloud-config header', async () => {
    const r = await installBundleForTest(join(BUNDLES, 'system-upgrade-controller'), { cloudConfig: 'system_upgrade_controller:\n  version: v0.1.0\n' });
    checkPlaced(r, CATALOG['system-upgrade-controller'] as RunExpect, 'k3s', 'system-upgrade-controller', (CATALOG['system-upgrade-controller'] as RunExpect).defaults);
    await r.cleanup();
  });

  // Known gap in the generated run.sh: kairos-agent prints a string that reads as another type
  // with its YAML quotes ("2"), and run.sh checks and renders the quoted text. Flip to it() once
  // config_get unquotes YAML scalars.
  it('accepts a number written as a quoted string (replicas: "2")', async () => {
    const r = await installBundleForTest(join(BUNDLES, 'longhorn'), { cloudConfig: '#cloud-config\nlonghorn:\n  replicas: "2"\n' });
    await r.cleanup();
    expect(r.exitCode, r.stderr).toBe(0);
  });

  it('honours K3S_MANIFEST_DIR like the community bundles', async () => {
    const r = await installBundleForTest(join(BUNDLES, 'metallb'), { env: { K3S_MANIFEST_DIR: '/opt/manifests' } });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.files()).toEqual(['opt/manifests/metallb-addresspool.yaml', 'opt/manifests/metallb-helmchart.yaml']);
    await r.cleanup();
  });
});

describe('kairos-agent stand-in', () => {
  const agent = (root: string, ...args: string[]) => spawnSync(process.execPath, [KAIROS_AGENT_STANDIN, ...args], { env: { ...process.env, KBUNDLE_ROOT: root }, encoding: 'utf8' });

  it('merges /usr/local/cloud-config under /oem and prints YAML scalars, null when missing', async () => {
    const root = await mkdtemp(join(tmpdir(), 'kbundle-agent-'));
    await cp(join(FIXTURES, 'cloud-config'), join(root, 'usr/local/cloud-config'), { recursive: true });
    await cp(join(FIXTURES, 'oem'), join(root, 'oem'), { recursive: true });
    const get = (q: string) => agent(root, 'config', 'get', q);
    expect(get('kairos_operator.version').stdout).toBe('v0.0.9\n'); // oem/50_override.yaml
    expect(get('kairos_operator.distro').stdout).toBe('k0s\n'); // usr/local/cloud-config only
    expect(get('k0s.enabled').stdout).toBe('true\n');
    expect(get('kairos_operator.missing').stdout).toBe('null\n');
    expect(get('nothere.at.all').stdout).toBe('null\n');
    expect(get('numbers.big').stdout).toBe('1e+06\n'); // Go FormatFloat('g'), as kairos-agent prints it
    expect(get('numbers.minor').stdout).toBe('1.1\n'); // 1.10 is a float
    expect(get('numbers.quoted').stdout).toBe('"1.10"\n'); // a string that reads as a float stays quoted
    expect(get('list').stdout).toBe('- a\n- b\n- c\n'); // scalar lists are unioned
    expect(get('ignored').stdout).toBe('null\n'); // oem/99_no_header.yaml has no #cloud-config header
    expect(get('"k0s-worker".enabled').stdout).toBe('true\n');
    const bad = get('k0s-worker.enabled'); // gojq: .k0s - worker.enabled
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('function not defined: worker/0');
    await rm(root, { recursive: true, force: true });
  });
});

describe('run bundle kbundle', () => {
  it.each(['linux/amd64', 'linux/arm64'])('installs the %s executable to /usr/local/bin/kbundle, and only that', async (platform) => {
    const r = await installBundleForTest(join(BUNDLES, 'kbundle'), { platform });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.files()).toEqual(['usr/local/bin/kbundle']);
    expect(r.mode('usr/local/bin/kbundle')).toBe(0o755);
    const want = readFileSync(join(BUNDLES, 'kbundle/assets', `kbundle-${platform.replace('/', '-')}`));
    expect(
      createHash('sha256')
        .update(readFileSync(join(r.root, 'usr/local/bin/kbundle')))
        .digest('hex'),
    ).toBe(createHash('sha256').update(want).digest('hex'));
    await r.cleanup();
  });
});

describe('container bundle qemu-guest-agent', () => {
  it('lands the unit, its enablement link and the launcher with their modes', async () => {
    const r = await installBundleForTest(join(BUNDLES, 'qemu-guest-agent'), { platform: 'linux/arm64' });
    expect(r.type).toBe('container');
    expect(r.files()).toEqual(['etc/systemd/system/multi-user.target.wants/qemu-guest-agent.service', 'etc/systemd/system/qemu-guest-agent.service', 'usr/local/bin/qemu-ga-launch']);
    expect(r.mode('etc/systemd/system/qemu-guest-agent.service')).toBe(0o644);
    expect(r.link('etc/systemd/system/multi-user.target.wants/qemu-guest-agent.service')).toBe('../qemu-guest-agent.service');
    expect(r.mode('usr/local/bin/qemu-ga-launch')).toBe(0o755);
    const unit = r.read('etc/systemd/system/qemu-guest-agent.service');
    expect(unit).toMatch(/^ExecStart=\/usr\/local\/bin\/qemu-ga-launch$/m);
    expect(unit).toMatch(/^WantedBy=multi-user\.target$/m);
    expect(unit).toMatch(/^ConditionPathExists=\/dev\/virtio-ports\/org\.qemu\.guest_agent\.0$/m);

    // The launcher execs the agent it finds on the virtio-serial channel.
    const fakeGa = join(r.root, 'fake-qemu-ga');
    await writeFile(fakeGa, '#!/bin/sh\necho "qemu-ga $*"\n', { mode: 0o755 });
    const run = spawnSync('/bin/sh', [join(r.root, 'usr/local/bin/qemu-ga-launch')], { env: { ...process.env, QEMU_GA: fakeGa }, encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toBe('qemu-ga --method=virtio-serial --path=/dev/virtio-ports/org.qemu.guest_agent.0\n');
    await r.cleanup();
  });
});

describe('container bundle kubectl (downloads served from 127.0.0.1)', () => {
  let server: Server;
  let base: string;
  const fixture = (arch: string) => readFileSync(join(FIXTURES, 'downloads/kubectl', `kubectl-linux-${arch}`));
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const served: string[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      served.push(req.url ?? '');
      const m = /^\/release\/(v[^/]+)\/bin\/linux\/(amd64|arm64)\/kubectl$/.exec(req.url ?? '');
      if (!m) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(fixture(m[2]!));
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise<void>((ok) => server.close(() => ok()));
  });

  /** A copy of bundles/kubectl whose downloads come from the loopback server. */
  async function localCopy(shaFor: (arch: string) => string): Promise<string> {
    const d = await mkdtemp(join(tmpdir(), 'kbundle-kubectl-'));
    await cp(join(BUNDLES, 'kubectl'), d, { recursive: true });
    const doc = parseDocument(await readFile(join(d, 'bundle.yaml'), 'utf8'));
    for (const p of ['linux/amd64', 'linux/arm64']) {
      const arch = p.split('/')[1]!;
      const url = String(doc.getIn(['platform_files', p, 0, 'url']));
      doc.setIn(['platform_files', p, 0, 'url'], url.replace('https://dl.k8s.io', base));
      doc.setIn(['platform_files', p, 0, 'sha256'], shaFor(arch));
    }
    await writeFile(join(d, 'bundle.yaml'), doc.toString());
    return d;
  }

  it('pins the upstream binary per architecture', async () => {
    const { spec } = await loadBundleSpec(join(BUNDLES, 'kubectl'));
    const pins = (spec as BundleSpec).platform_files;
    for (const arch of ['amd64', 'arm64']) {
      const [f, ...more] = pins[`linux/${arch}`]!;
      expect(more).toEqual([]);
      expect(f!.url).toBe(`https://dl.k8s.io/release/v${spec.version}/bin/linux/${arch}/kubectl`);
      expect(f!.sha256).toMatch(/^[a-f0-9]{64}$/);
      expect(f!.dst).toBe('usr/local/bin/kubectl');
      expect(f!.mode).toBe(0o755);
    }
    expect(pins['linux/amd64']![0]!.sha256).not.toBe(pins['linux/arm64']![0]!.sha256);
  });

  it.each(['amd64', 'arm64'])('installs the %s binary at usr/local/bin/kubectl, mode 0755', async (arch) => {
    const copy = await localCopy((a) => sha(fixture(a)));
    const r = await installBundleForTest(copy, { platform: `linux/${arch}` });
    expect(r.type).toBe('container');
    expect(r.files()).toEqual(['usr/local/bin/kubectl']);
    expect(r.mode('usr/local/bin/kubectl')).toBe(0o755);
    expect(Buffer.from(r.read('usr/local/bin/kubectl'))).toEqual(fixture(arch));
    expect(served).toContain(`/release/v1.34.2/bin/linux/${arch}/kubectl`);
    await r.cleanup();
    await rm(copy, { recursive: true, force: true });
  });

  it('fails the build with a clear error when the sha256 does not match', async () => {
    const wrong = 'ab'.repeat(32);
    const copy = await localCopy(() => wrong);
    const out = await mkdtemp(join(tmpdir(), 'kbundle-kubectl-out-'));
    const err = await buildTo(copy, { transport: 'oci', path: out, ref: 't' }, { platforms: ['linux/amd64'] }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err).toBeInstanceOf(KbError);
    expect((err as KbError).code).toBe('DIGEST_MISMATCH');
    expect(err?.message).toContain('platform_files.linux/amd64.0');
    expect(err?.message).toContain(`${base}/release/v1.34.2/bin/linux/amd64/kubectl`);
    expect(err?.message).toContain(`does not match the expected sha256:${wrong}`);
    expect(err?.message).toContain(`sha256:${sha(fixture('amd64'))}`);
    // Nothing unverified stays in the download cache.
    expect(readdirSync(process.env.KBUNDLE_CACHE_DIR!).filter((f) => f.includes(wrong) || f.includes('.tmp-'))).toEqual([]);
    await rm(copy, { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });
  });
});

describe('container bundle k9s (release archives served from 127.0.0.1, extract: k9s)', () => {
  let server: FixtureServer;
  let base: string;
  let work: string;
  /** Archives shaped like k9s's releases: LICENSE, README.md and the k9s binary at the top. */
  const archive = (arch: string) => readFileSync(join(work, `k9s_Linux_${arch}.tar.gz`));
  const binary = (arch: string) => `#!/bin/sh\necho k9s ${arch} stand-in\n`;
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'kbundle-k9s-archives-'));
    const files: Record<string, Buffer> = {};
    for (const arch of ['amd64', 'arm64']) {
      const dir = join(work, arch);
      await cp(join(BUNDLES, 'k9s/README.md'), join(dir, 'README.md'));
      await writeFile(join(dir, 'LICENSE'), 'Apache License 2.0\n');
      await writeFile(join(dir, 'k9s'), binary(arch), { mode: 0o755 });
      const tar = spawnSync('tar', ['-czf', join(work, `k9s_Linux_${arch}.tar.gz`), '-C', dir, 'LICENSE', 'README.md', 'k9s']);
      expect(tar.status, String(tar.stderr)).toBe(0);
      files[`/derailed/k9s/releases/download/v0.31.7/k9s_Linux_${arch}.tar.gz`] = archive(arch);
    }
    server = await serveFixtures(files);
    base = server.url;
  });
  afterAll(async () => {
    await server.close();
    await rm(work, { recursive: true, force: true });
  });

  /** A copy of bundles/k9s whose archives come from the loopback server (member name optional). */
  async function localCopy(member = 'k9s'): Promise<string> {
    const d = await mkdtemp(join(tmpdir(), 'kbundle-k9s-'));
    await cp(join(BUNDLES, 'k9s'), d, { recursive: true });
    const doc = parseDocument(await readFile(join(d, 'bundle.yaml'), 'utf8'));
    for (const p of ['linux/amd64', 'linux/arm64']) {
      const arch = p.split('/')[1]!;
      doc.setIn(['platform_files', p, 0, 'url'], String(doc.getIn(['platform_files', p, 0, 'url'])).replace('https://github.com', base));
      doc.setIn(['platform_files', p, 0, 'sha256'], sha(archive(arch)));
      doc.setIn(['platform_files', p, 0, 'extract'], member);
    }
    await writeFile(join(d, 'bundle.yaml'), doc.toString());
    return d;
  }

  it('pins the upstream release archive per architecture and takes the k9s member', async () => {
    const { spec } = await loadBundleSpec(join(BUNDLES, 'k9s'));
    for (const arch of ['amd64', 'arm64']) {
      const [f, ...more] = (spec as BundleSpec).platform_files[`linux/${arch}`]!;
      expect(more).toEqual([]);
      expect(f).toMatchObject({ url: `https://github.com/derailed/k9s/releases/download/v${spec.version}/k9s_Linux_${arch}.tar.gz`, extract: 'k9s', dst: 'usr/local/bin/k9s', mode: 0o755 });
      expect(f!.sha256).toMatch(/^[a-f0-9]{64}$/);
    }
  });

  it.each(['amd64', 'arm64'])('installs only the %s binary out of the archive, at usr/local/bin/k9s, mode 0755', async (arch) => {
    const copy = await localCopy();
    const r = await installBundleForTest(copy, { platform: `linux/${arch}` });
    expect(r.files()).toEqual(['usr/local/bin/k9s']); // not the archive's README or LICENSE
    expect(r.mode('usr/local/bin/k9s')).toBe(0o755);
    expect(Buffer.from(r.read('usr/local/bin/k9s')).toString()).toBe(binary(arch));
    expect(server.requests).toContain(`/derailed/k9s/releases/download/v0.31.7/k9s_Linux_${arch}.tar.gz`);
    await r.cleanup();
    await rm(copy, { recursive: true, force: true });
  });

  it('fails the build naming the archive content when the member is missing', async () => {
    const copy = await localCopy('bin/k9s');
    const out = await mkdtemp(join(tmpdir(), 'kbundle-k9s-out-'));
    const err = await buildTo(copy, { transport: 'oci', path: out, ref: 't' }, { platforms: ['linux/amd64'] }).then(
      () => undefined,
      (e: Error & { hint?: string }) => e,
    );
    expect(err?.name).toBe('UserError');
    expect(err?.message).toMatch(/platform_files\.linux\/amd64\.0: extract: the archive has no "bin\/k9s"/);
    expect((err as { hint?: string }).hint).toBe('its files include LICENSE, README.md, k9s');
    await rm(copy, { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });
  });
});
