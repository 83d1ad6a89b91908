/**
 * "Same behaviour as the Kairos bundle", checked: the assertions of kairos-io/community-bundles'
 * own Go tests (tests/<name>_test.go at commit 4a02df381c9a) ported to our harness, for the
 * bundles that came over from upstream with their own run.sh (kairos, kubevirt, edgevpn, multus),
 * plus tests for those upstream has none for (flux, spinkube). Each upstream `It` is named in the
 * test title; extra checks (bad values refused, k0s, modes) follow it.
 *
 * Upstream runs the bundle in a container as root (`cd /bundle && ./run.sh`, cloud-config in
 * /oem/foo.yaml); here the harness builds the bundle, unpacks its layer and runs `sh run.sh` with
 * KBUNDLE_ROOT pointing at a fake root and the cloud-config in <root>/oem/90_custom.yaml.
 * Downloads (edgevpn, flux, multus) come from a loopback server with stand-in archives.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { copyCatalogOffline, type FixtureServer } from './helpers/catalog-copy.js';
import { cleanupAllInstalls, installBundleForTest, kairosAgentBinDir, type InstallOptions } from './helpers/bundle-harness.js';

const BUNDLES = resolve(fileURLToPath(import.meta.url), '../../bundles');
const K3S = 'var/lib/rancher/k3s/server/manifests';

let offline: string;
let server: FixtureServer;
let cacheDir: string;
beforeAll(async () => {
  cacheDir = await mkdtemp(join(tmpdir(), 'kbundle-upstream-cache-'));
  process.env.KBUNDLE_CACHE_DIR = cacheDir;
  offline = await mkdtemp(join(tmpdir(), 'kbundle-upstream-catalog-'));
  server = await copyCatalogOffline(offline);
});
afterAll(async () => {
  await cleanupAllInstalls();
  await server.close();
  await rm(offline, { recursive: true, force: true });
  await rm(cacheDir, { recursive: true, force: true });
  delete process.env.KBUNDLE_CACHE_DIR;
});

/** Install a catalog bundle (downloads from the loopback server) and require run.sh to succeed. */
async function install(name: string, opts: InstallOptions = {}) {
  const r = await installBundleForTest(join(offline, name), opts);
  expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
  return r;
}

async function refused(name: string, cloudConfig: string, opts: InstallOptions = {}) {
  const r = await installBundleForTest(join(offline, name), { ...opts, cloudConfig });
  expect(r.exitCode).not.toBe(0);
  return r;
}

/**
 * A PATH with every program of the host except `hidden`, plus stand-ins (name → sh script):
 * the bundles choose the init system by which of systemctl / rc-update is on PATH.
 */
function toolbox(hidden: string[], standIns: Record<string, string>): string {
  const dir = mkdtempSync0('kbundle-toolbox-');
  for (const d of (process.env.PATH ?? '/usr/bin:/bin').split(delimiter)) {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      continue;
    }
    for (const n of names) {
      // Stand-ins are never links: writing one must not write through to the host's program.
      if (hidden.includes(n) || n in standIns || existsSync(join(dir, n))) continue;
      try {
        if (statSync(join(d, n)).isFile()) symlinkSync(join(d, n), join(dir, n));
      } catch {
        /* dangling or unreadable: skip */
      }
    }
  }
  for (const [n, script] of Object.entries(standIns)) {
    writeFileSync(join(dir, n), `#!/bin/sh\n${script}\n`);
    chmodSync(join(dir, n), 0o755);
  }
  return dir;
}
const scratch: string[] = [];
function mkdtempSync0(prefix: string): string {
  const d = join(tmpdir(), `${prefix}${process.pid}-${scratch.length}`);
  mkdirSync(d, { recursive: true });
  scratch.push(d);
  return d;
}
afterAll(async () => {
  await Promise.all(scratch.map((d) => rm(d, { recursive: true, force: true })));
});

describe('kairos (upstream tests/kairos_test.go)', () => {
  it('"Deploy kairos crds with default version": kairos-crds.yaml pins version "0.0.13", nothing else is placed', async () => {
    const r = await install('kairos');
    expect(r.read(`${K3S}/kairos-crds.yaml`)).toContain('version: "0.0.13"');
    expect(r.files()).toEqual([`${K3S}/kairos-crds.yaml`]);
    const docs = parseAllDocuments(r.read(`${K3S}/kairos-crds.yaml`)).map((d) => d.toJS());
    expect(docs.map((d) => `${d.kind}/${d.metadata.name}`)).toEqual(['Namespace/kairos', 'HelmChart/kairos-crds']);
    expect(docs[1].spec).toEqual({ chart: 'kairos-crds', repo: 'https://kairos-io.github.io/helm-charts', version: '0.0.13' });
    await r.cleanup();
  });

  it('"Specifiy version": crds, osbuilder, entangle and entangleProxy take their versions from the cloud-config', async () => {
    const r = await install('kairos', {
      cloudConfig: `#cloud-config
kairos:
 crds:
  version: "magrathea"
 osbuilder:
  enable: true
  version: "foobar"
 entangle:
  enable: true
  version: "baz"
 entangleProxy:
  enable: true
  version: "42.1.1"
`,
    });
    expect(r.read(`${K3S}/kairos-crds.yaml`)).toContain('version: "magrathea"');
    expect(r.read(`${K3S}/kairos-osbuilder.yaml`)).toContain('version: "foobar"');
    expect(r.read(`${K3S}/kairos-entangle.yaml`)).toContain('version: "baz"');
    expect(r.read(`${K3S}/kairos-entangle-proxy.yaml`)).toContain('version: "42.1.1"');
    // Upstream's entangle-proxy.yaml is a copy of entangle.yaml; ours installs the entangle-proxy chart.
    const proxy = parseAllDocuments(r.read(`${K3S}/kairos-entangle-proxy.yaml`)).map((d) => d.toJS());
    expect(proxy[1].metadata).toEqual({ name: 'entangle-proxy', namespace: 'entangle-proxy' });
    expect(proxy[1].spec.chart).toBe('entangle-proxy');
    expect(r.files()).toEqual([`${K3S}/kairos-crds.yaml`, `${K3S}/kairos-entangle-proxy.yaml`, `${K3S}/kairos-entangle.yaml`, `${K3S}/kairos-osbuilder.yaml`]);
    await r.cleanup();
  });

  it('enabled components get their default versions; K3S_MANIFEST_DIR is honoured', async () => {
    const r = await install('kairos', { cloudConfig: { kairos: { osbuilder: { enable: true } } }, env: { K3S_MANIFEST_DIR: '/opt/m' } });
    expect(r.files()).toEqual(['opt/m/kairos-crds.yaml', 'opt/m/kairos-osbuilder.yaml']);
    expect(r.read('opt/m/kairos-osbuilder.yaml')).toContain('version: "0.7.2"');
    await r.cleanup();
  });

  it('refuses a version that would break the manifest, naming the key, and places nothing', async () => {
    for (const [cfg, key] of [
      ['kairos:\n  crds:\n    version: "1\\"\\nkind: x"\n', 'kairos.crds.version'],
      ['kairos:\n  entangle:\n    enable: yes please\n', 'kairos.entangle.enable'],
    ] as const) {
      const r = await refused('kairos', `#cloud-config\n${cfg}`);
      expect(r.stderr).toContain(`kairos: ${key}:`);
      expect(r.files()).toEqual([]);
      await r.cleanup();
    }
  });
});

describe('kubevirt (upstream tests/kubevirt_test.go)', () => {
  it('"deploys kubevirt operator version": the operator manifest names quay.io/kubevirt/virt-operator; no manager', async () => {
    const r = await install('kubevirt');
    expect(r.read(`${K3S}/kubevirt-operator.yaml`)).toContain('quay.io/kubevirt/virt-operator');
    expect(existsSync(join(r.root, K3S, 'kubevirt-manager-ns.yaml'))).toBe(false);
    expect(r.files()).toEqual(['cdi-cr.yaml', 'cdi-operator.yaml', 'kubevirt-cr.yaml', 'kubevirt-operator.yaml'].map((f) => `${K3S}/${f}`));
    await r.cleanup();
  });

  it('"Add manager": kubevirt.manager: true places kubevirt-manager 1.1.2 (and its CR variants)', async () => {
    const r = await install('kubevirt', { cloudConfig: '#cloud-config\nkubevirt:\n manager: true' });
    expect(r.read(`${K3S}/kubevirt-manager-ns.yaml`)).toContain('kubevirt-manager.io/version: 1.1.2');
    // As upstream's `cp -rf kubevirt-manager-manifests/*`, the manager's CDI CR replaces the plain one.
    expect(parse(r.read(`${K3S}/cdi-cr.yaml`)).spec.config.featureGates).toEqual(['HonorWaitForFirstConsumer']);
    expect(r.files()).toHaveLength(4 + 7);
    await r.cleanup();
  });

  it('places the same manifests for k0s when k0s.enabled', async () => {
    const r = await install('kubevirt', { cloudConfig: { k0s: { enabled: true } } });
    expect(r.files()).toEqual(['cdi-cr.yaml', 'cdi-operator.yaml', 'kubevirt-cr.yaml', 'kubevirt-operator.yaml'].map((f) => `var/lib/k0s/manifests/kubevirt/${f}`));
    await r.cleanup();
  });

  it('refuses kubevirt.manager that is not a boolean', async () => {
    const r = await refused('kubevirt', '#cloud-config\nkubevirt:\n manager: sure\n');
    expect(r.stderr).toContain("kubevirt: kubevirt.manager: 'sure' is not valid");
    expect(r.files()).toEqual([]);
    await r.cleanup();
  });
});

describe('edgevpn (upstream tests/edgevpn_test.go)', () => {
  const TOKEN = 'b3RwOgogIGRodDoKICAgIGludGVydmFsOiA5MDAwCg==';
  const cloudConfig = { edgevpn: { token: TOKEN } };
  let systemd: string;
  let openrc: string;
  beforeAll(async () => {
    const agent = await kairosAgentBinDir();
    systemd = `${agent}${delimiter}${toolbox([], { systemctl: 'exit 1' })}`;
    openrc = `${agent}${delimiter}${toolbox(['systemctl'], { 'rc-update': 'exit 0', 'rc-service': 'exit 0' })}`;
  });

  it('"installs edgevpn binary": /usr/local/bin/edgevpn is a file with the executable bit', async () => {
    const r = await install('edgevpn', { cloudConfig, env: { PATH: systemd } });
    expect(r.mode('usr/local/bin/edgevpn') & 0o111).not.toBe(0);
    expect(r.read('usr/local/bin/edgevpn')).toContain('edgevpn-v0.35.2-Linux-x86_64.tar.gz edgevpn'); // the archive member, not the archive
    await r.cleanup();
  });

  it('"installs service file for detected init system" (systemd)', async () => {
    const r = await install('edgevpn', { cloudConfig, env: { PATH: systemd } });
    const unit = r.read('etc/systemd/system/edgevpn.service');
    for (const s of ['Description=EdgeVPN', 'EnvironmentFile=/etc/systemd/system.conf.d/edgevpn-kairos.env', 'ExecStart=edgevpn --api --dhcp', 'Restart=always', 'WantedBy=multi-user.target'])
      expect(unit).toContain(s);
    expect(r.files()).toEqual([
      'etc/systemd/system.conf.d/edgevpn-kairos.env',
      'etc/systemd/system/edgevpn.service',
      'etc/systemd/system/multi-user.target.wants/edgevpn.service',
      'usr/local/bin/edgevpn',
    ]);
    await r.cleanup();
  });

  it('"installs service file for detected init system" (openrc)', async () => {
    const r = await install('edgevpn', { cloudConfig, env: { PATH: openrc } });
    const script = r.read('etc/init.d/edgevpn');
    for (const s of ['description="EdgeVPN service"', 'command="/usr/local/bin/edgevpn"', 'command_args="--api --dhcp"']) expect(script).toContain(s);
    expect(r.mode('etc/init.d/edgevpn')).toBe(0o755);
    expect(r.files()).toEqual(['etc/conf.d/edgevpn', 'etc/init.d/edgevpn', 'etc/runlevels/default/edgevpn', 'usr/local/bin/edgevpn']);
    await r.cleanup();
  });

  it('"creates environment configuration for detected init system": the token, in a 0600 file', async () => {
    const s = await install('edgevpn', { cloudConfig, env: { PATH: systemd } });
    expect(s.read('etc/systemd/system.conf.d/edgevpn-kairos.env')).toBe(`EDGEVPNTOKEN=${TOKEN}\n`);
    expect(s.mode('etc/systemd/system.conf.d/edgevpn-kairos.env')).toBe(0o600);
    await s.cleanup();
    const o = await install('edgevpn', { cloudConfig, env: { PATH: openrc } });
    expect(o.read('etc/conf.d/edgevpn')).toBe(`export EDGEVPNTOKEN=${TOKEN}\n`);
    expect(o.mode('etc/conf.d/edgevpn')).toBe(0o600);
    await o.cleanup();
    // Without a token the variable is still defined (empty), as upstream writes it.
    const e = await install('edgevpn', { env: { PATH: systemd } });
    expect(e.read('etc/systemd/system.conf.d/edgevpn-kairos.env')).toBe('EDGEVPNTOKEN=\n');
    await e.cleanup();
  });

  it('"enables and starts edgevpn service for detected init system": the enablement links', async () => {
    const s = await install('edgevpn', { cloudConfig, env: { PATH: systemd } });
    expect(s.link('etc/systemd/system/multi-user.target.wants/edgevpn.service')).toBe('/etc/systemd/system/edgevpn.service');
    // Nothing is started on the machine running the test: the root is not the live system.
    expect(s.stdout).toContain('the service starts on its next boot');
    await s.cleanup();
    const o = await install('edgevpn', { cloudConfig, env: { PATH: openrc } });
    expect(o.link('etc/runlevels/default/edgevpn')).toBe('/etc/init.d/edgevpn'); // what `rc-update add edgevpn default` makes
    await o.cleanup();
  });

  it('installs the binary but no service when neither systemd nor openrc is there', async () => {
    const r = await install('edgevpn', { cloudConfig, env: { PATH: `${await kairosAgentBinDir()}${delimiter}${toolbox(['systemctl', 'rc-update'], {})}` } });
    expect(r.files()).toEqual(['usr/local/bin/edgevpn']);
    expect(r.stderr).toContain('neither systemd nor openrc detected');
    await r.cleanup();
  });

  it('refuses a token that could inject lines into the environment file, and writes nothing', async () => {
    const r = await refused('edgevpn', '#cloud-config\nedgevpn:\n  token: "x\\nPATH=/tmp"\n', { env: { PATH: systemd } });
    expect(r.stderr).toContain('edgevpn: edgevpn.token:');
    expect(r.files()).toEqual([]);
    await r.cleanup();
  });
});

describe('flux (upstream has no test; run.sh semantics)', () => {
  it('installs flux and flux-bootstrap.sh, and enables flux-bootstrap.service for k3s', async () => {
    const r = await install('flux', { platform: 'linux/arm64' });
    expect(r.files()).toEqual(['etc/systemd/system/flux-bootstrap.service', 'etc/systemd/system/k3s.service.wants/flux-bootstrap.service', 'usr/local/bin/flux', 'usr/local/bin/flux-bootstrap.sh']);
    expect(r.read('usr/local/bin/flux')).toContain('flux_2.6.4_linux_arm64.tar.gz flux');
    expect(r.mode('usr/local/bin/flux')).toBe(0o755);
    expect(r.mode('usr/local/bin/flux-bootstrap.sh')).toBe(0o755);
    expect(r.mode('etc/systemd/system/flux-bootstrap.service')).toBe(0o644);
    expect(r.read('etc/systemd/system/flux-bootstrap.service')).toMatch(/^ExecStart=\/usr\/local\/bin\/flux-bootstrap\.sh$/m);
    expect(r.read('etc/systemd/system/flux-bootstrap.service')).toMatch(/^WantedBy=k3s\.service$/m);
    expect(r.link('etc/systemd/system/k3s.service.wants/flux-bootstrap.service')).toBe('/etc/systemd/system/flux-bootstrap.service');
    await r.cleanup();
  });

  it('flux-bootstrap.sh: one node takes the bootstrap ConfigMap and runs flux bootstrap with the cloud-config arguments', async () => {
    const r = await install('flux', {
      cloudConfig: { flux: { env: { GITHUB_TOKEN: 'abcde1234' }, github: { owner: 'csagan', repository: 'fleet-infra', path: 'clusters/cosmos' } } },
    });
    const log = join(r.root, 'calls.log');
    // kubectl and flux stand-ins record their calls; kubectl hands the ConfigMap back with this host's name.
    const bin = toolbox([], {
      kubectl: `echo "kubectl $*" >> '${log}'; case "$*" in *jsonpath*) hostname ;; esac`,
      flux: `echo "flux $* GITHUB_TOKEN=$GITHUB_TOKEN KUBECONFIG=$KUBECONFIG" >> '${log}'; [ "$1" = bootstrap ]`,
    });
    const run = spawnSync('bash', [join(r.root, 'usr/local/bin/flux-bootstrap.sh')], {
      env: { ...process.env, PATH: `${await kairosAgentBinDir()}${delimiter}${bin}`, KBUNDLE_ROOT: r.root },
      encoding: 'utf8',
    });
    expect(run.status, run.stdout + run.stderr).toBe(0);
    const calls = spawnSync('cat', [log], { encoding: 'utf8' }).stdout.trim().split('\n');
    expect(calls).toContain('flux bootstrap github --owner csagan --path clusters/cosmos --repository fleet-infra GITHUB_TOKEN=abcde1234 KUBECONFIG=/etc/rancher/k3s/k3s.yaml');
    expect(calls.some((c) => /^kubectl create configmap flux-bootstrap --from-literal=hostname=/.test(c))).toBe(true);
    expect(calls.at(-1)).toBe('kubectl delete configmap -n default flux-bootstrap');
    await r.cleanup();
  });
});

describe('multus (upstream tests/multus_test.go)', () => {
  const TLS = 'var/lib/rancher/k3s/server/tls';
  const NETD = 'var/lib/rancher/k3s/agent/etc/cni/net.d';
  /** Upstream's BeforeEach: the k3s folders, a server and a client CA, and a primary conflist. */
  const rootSetup = (root: string) => {
    for (const d of ['opt/cni/bin', 'var/lib/rancher/k3s/data/current/bin', `${NETD}/multus.d`, TLS]) mkdirSync(join(root, d), { recursive: true });
    for (const ca of ['server-ca', 'client-ca']) {
      const r = spawnSync(
        'openssl',
        [
          'req',
          '-x509',
          '-new',
          '-nodes',
          '-sha256',
          '-days',
          '1',
          '-subj',
          `/CN=${ca}`,
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:prime256v1',
          '-keyout',
          join(root, TLS, `${ca}.key`),
          '-out',
          join(root, TLS, `${ca}.crt`),
        ],
        { encoding: 'utf8' },
      );
      expect(r.status, r.stderr).toBe(0);
    }
    writeFileSync(
      join(root, NETD, 'foo.conflist'),
      `{
 "name": "cbr0",
 "cniVersion": "1.0.0",
 "plugins": [
  { "type": "portmap", "capabilities": { "portMappings": true } },
  { "type": "bandwidth", "capabilities": { "bandwidth": true } }
 ]
}`,
    );
  };

  it('"installs multus": the binary lands in the k3s CNI bin folder', async () => {
    const r = await install('multus', { rootSetup });
    expect(statSync(join(r.root, 'var/lib/rancher/k3s/data/current/bin/multus')).isFile()).toBe(true);
    expect(r.read('var/lib/rancher/k3s/data/current/bin/multus')).toContain('multus-cni_4.0.2_linux_amd64/multus');
    expect(readdirSync(join(r.root, 'opt/cni/bin'))).toEqual([]); // no plugins unless asked for
    await r.cleanup();
  });

  it('"installs specified plugins": portmap and macvlan, not dhcp', async () => {
    const r = await install('multus', { rootSetup, cloudConfig: '#cloud-config\nmultus:\n cni_plugins:\n  - portmap\n  - macvlan' });
    expect(statSync(join(r.root, 'opt/cni/bin/portmap')).isFile()).toBe(true);
    expect(statSync(join(r.root, 'opt/cni/bin/macvlan')).isFile()).toBe(true);
    expect(existsSync(join(r.root, 'opt/cni/bin/dhcp'))).toBe(false);
    expect(r.read('opt/cni/bin/macvlan')).toContain('cni-plugins-linux-amd64-v1.3.0.tgz macvlan');
    expect(r.mode('opt/cni/bin/macvlan')).toBe(0o755);
    await r.cleanup();
  });

  it('"creates manifests": multus.yaml has the CRD, ClusterRole and ClusterRoleBinding', async () => {
    const r = await install('multus', { rootSetup });
    const content = r.read(`${K3S}/multus.yaml`);
    expect(content).toMatch(/^kind: CustomResourceDefinition$/m);
    expect(content).toMatch(/^kind: ClusterRole$/m);
    expect(content).toMatch(/^kind: ClusterRoleBinding$/m);
    await r.cleanup();
  });

  it('"creates a kubeconfig": valid YAML whose client certificate (CN=multus) the k3s client CA signed', async () => {
    const r = await install('multus', { rootSetup, cloudConfig: { multus: { crt_validity: 30 } } });
    const kc = parse(r.read(`${NETD}/multus.d/multus.kubeconfig`));
    expect(r.mode(`${NETD}/multus.d/multus.kubeconfig`)).toBe(0o600);
    expect(kc.clusters[0].cluster.server).toBe('https://127.0.0.1:6443');
    expect(Buffer.from(kc.clusters[0].cluster['certificate-authority-data'], 'base64').toString()).toBe(r.read(`${TLS}/server-ca.crt`));
    const crt = join(r.root, 'multus.crt');
    writeFileSync(crt, Buffer.from(kc.users[0].user['client-certificate-data'], 'base64'));
    const verify = spawnSync('openssl', ['verify', '-CAfile', join(r.root, TLS, 'client-ca.crt'), crt], { encoding: 'utf8' });
    expect(verify.stdout + verify.stderr).toContain(': OK');
    const subject = spawnSync('openssl', ['x509', '-in', crt, '-noout', '-subject', '-enddate'], { encoding: 'utf8' }).stdout;
    expect(subject).toMatch(/CN ?= ?multus/);
    const days = (Date.parse(/notAfter=(.*)/.exec(subject)![1]!) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(29);
    expect(days).toBeLessThan(31);
    await r.cleanup();
  });

  it('"wraps an existing config": 00-multus.conflist delegates to foo.conflist with its capabilities', async () => {
    const r = await install('multus', { rootSetup, cloudConfig: { multus: { namespace_isolation: true, global_namespaces: ['default', 'infra'] } } });
    const config = JSON.parse(r.read(`${NETD}/00-multus.conflist`));
    expect(config.cniVersion).toBe('1.0.0');
    expect(config.plugins[0].capabilities).toEqual({ portMappings: true, bandwidth: true });
    expect(config.plugins[0]).toMatchObject({ type: 'multus', namespaceIsolation: true, globalNamespaces: 'default,infra', kubeconfig: `/${NETD}/multus.d/multus.kubeconfig` });
    expect(config.plugins[0].delegates[0].name).toBe('cbr0');
    expect(r.mode(`${NETD}/00-multus.conflist`)).toBe(0o600);
    await r.cleanup();
  });

  it('refuses a plugin the bundle does not carry, and a path-like plugin name', async () => {
    for (const p of ['nosuch', '../../bin/sh']) {
      const r = await refused('multus', `#cloud-config\nmultus:\n cni_plugins: ["${p}"]\n`, { rootSetup });
      expect(r.stderr).toContain(`multus.cni_plugins: no CNI plugin '${p}' in this bundle`);
      expect(r.files()).toEqual([]);
      await r.cleanup();
    }
  });

  it('fails clearly without a primary CNI configuration', async () => {
    const r = await refused('multus', '#cloud-config\n');
    expect(r.stderr).toContain('no primary CNI configuration (*.conflist)');
    expect(r.files()).toEqual([]);
    await r.cleanup();
  });
});

describe('spinkube (upstream has no test; run.sh semantics)', () => {
  const base = ['kwasm-operator-helmchart.yaml', 'spin-operator-crds.yaml', 'spin-operator-helmchart.yaml', 'spin-operator-runtime-class.yaml', 'spin-operator-shim-executor.yaml'];
  const docs = (text: string) =>
    parseAllDocuments(text)
      .map((d) => d.toJS())
      .filter(Boolean);

  it('places the spin-operator release manifests and charts, without cert-manager by default', async () => {
    const r = await install('spinkube');
    expect(r.files()).toEqual(base.map((f) => `${K3S}/${f}`));
    expect(docs(r.read(`${K3S}/spin-operator-crds.yaml`)).map((d) => d.metadata.name)).toEqual(['spinappexecutors.core.spinkube.dev', 'spinapps.core.spinkube.dev']);
    expect(docs(r.read(`${K3S}/spin-operator-runtime-class.yaml`))).toEqual([{ apiVersion: 'node.k8s.io/v1', kind: 'RuntimeClass', metadata: { name: 'wasmtime-spin-v2' }, handler: 'spin' }]);
    expect(docs(r.read(`${K3S}/spin-operator-shim-executor.yaml`))[0].spec.deploymentConfig.runtimeClassName).toBe('wasmtime-spin-v2');
    const spin = docs(r.read(`${K3S}/spin-operator-helmchart.yaml`))[0];
    expect(spin.spec).toMatchObject({ chart: 'oci://ghcr.io/spinkube/charts/spin-operator', version: '0.4.0', targetNamespace: 'spin-operator' });
    const kwasm = docs(r.read(`${K3S}/kwasm-operator-helmchart.yaml`))[0];
    expect(parse(kwasm.spec.valuesContent)).toEqual({ kwasmOperator: { installerImage: 'ghcr.io/spinkube/containerd-shim-spin/node-installer:v0.17.0', autoProvision: 'true' } });
    await r.cleanup();
  });

  it('spinkube.installCertManager: true adds cert-manager v1.14.5 with its CRDs', async () => {
    const r = await install('spinkube', { cloudConfig: { spinkube: { installCertManager: true } } });
    expect(r.files()).toEqual(['cert-manager-helmchart.yaml', ...base].map((f) => `${K3S}/${f}`));
    const cm = docs(r.read(`${K3S}/cert-manager-helmchart.yaml`))[0];
    expect(cm.spec).toMatchObject({ repo: 'https://charts.jetstack.io', chart: 'cert-manager', version: 'v1.14.5', targetNamespace: 'cert-manager' });
    expect(parse(cm.spec.valuesContent)).toEqual({ installCRDs: true });
    await r.cleanup();
  });

  it('refuses spinkube.installCertManager that is not a boolean', async () => {
    const r = await refused('spinkube', '#cloud-config\nspinkube:\n  installCertManager: maybe\n');
    expect(r.stderr).toContain("spinkube: spinkube.installCertManager: 'maybe' is not valid");
    expect(r.files()).toEqual([]);
    await r.cleanup();
  });
});

it('every bundle ported here exists in the catalog', () => {
  for (const b of ['kairos', 'kubevirt', 'edgevpn', 'flux', 'multus', 'spinkube']) expect(existsSync(join(BUNDLES, b, 'bundle.yaml')), b).toBe(true);
});

/**
 * Upstream's tests for the chart bundles kbundle already had (tests/<name>_test.go). Each
 * upstream `It` is ported: where our bundle behaves the same the assertion is upstream's (with
 * our file name); where it intentionally differs (pinned x.y.z versions, named settings instead
 * of a free-form `values` block, a cloud-config key usable as a jq path) the test asserts our
 * documented behaviour, and the bundle's README lists the difference.
 */
interface ChartPort {
  bundle: string;
  /** Our cloud-config key, and upstream's when it differs. */
  key: string;
  upstreamKey?: string;
  /** Upstream's file in the k3s manifests folder → ours. */
  upstreamFile: string;
  file: string;
  defaultVersion: string;
  /** A version our pattern accepts, for upstream's "Specify version" tests. */
  version: string;
  /** Versions of upstream's "Specify version" tests that our pattern refuses (one per upstream It)… */
  upstreamVersions: string[];
  /** …and those it accepts. */
  acceptedUpstreamVersions?: string[];
  /** upstream's free-form values block, when its test sets one. */
  upstreamValues?: Record<string, unknown>;
}

const CHART_PORTS: ChartPort[] = [
  {
    bundle: 'argocd',
    key: 'argocd',
    upstreamFile: 'argocd.yaml',
    file: 'argocd-helmchart.yaml',
    defaultVersion: '9.1.3',
    version: '9.0.5',
    upstreamVersions: ['1'],
    upstreamValues: { installation: { calicoNetwork: { bgp: 'Disabled' } } },
  },
  {
    bundle: 'calico',
    key: 'calico',
    upstreamFile: 'calico.yaml',
    file: 'calico-helmchart.yaml',
    defaultVersion: 'v3.31.2',
    version: 'v3.30.4',
    upstreamVersions: ['1', '1.2.3'],
    upstreamValues: { installation: { calicoNetwork: { bgp: 'Disabled' } } },
  },
  {
    bundle: 'kyverno',
    key: 'kyverno',
    upstreamFile: 'kyverno.yaml',
    file: 'kyverno-helmchart.yaml',
    defaultVersion: '3.6.1',
    version: '3.5.2',
    upstreamVersions: ['1'],
    upstreamValues: { installation: { calicoNetwork: { bgp: 'Disabled' } } },
  },
  {
    bundle: 'longhorn',
    key: 'longhorn',
    upstreamFile: 'longhorn.yaml',
    file: 'longhorn-helmchart.yaml',
    defaultVersion: '1.10.1',
    version: '1.9.2',
    upstreamVersions: ['1'],
    upstreamValues: { defaultSettings: { backupstorePollInterval: 600 } },
  },
  {
    bundle: 'ingress-nginx',
    key: 'ingress_nginx',
    upstreamKey: 'nginx',
    upstreamFile: 'ingress-nginx.yaml',
    file: 'ingress-nginx-helmchart.yaml',
    defaultVersion: '4.14.0',
    version: '4.13.3',
    upstreamVersions: ['1'],
    acceptedUpstreamVersions: ['1.2.3'],
    upstreamValues: { commonLabels: { myLabel: 'abc123' } },
  },
  { bundle: 'metallb', key: 'metallb', upstreamFile: 'metallb.yaml', file: 'metallb-helmchart.yaml', defaultVersion: '0.14.9', version: '0.15.2', upstreamVersions: ['1'] },
  {
    bundle: 'cert-manager',
    key: 'cert_manager',
    upstreamKey: 'certManager',
    upstreamFile: 'cert-manager.yaml',
    file: 'cert-manager-helmchart.yaml',
    defaultVersion: 'v1.19.1',
    version: 'v1.18.2',
    upstreamVersions: [],
  },
];

describe.each(CHART_PORTS)('$bundle (upstream tests/*_test.go, chart bundle)', (p) => {
  const chart = (r: Awaited<ReturnType<typeof install>>) => {
    const docs = parseAllDocuments(r.read(`${K3S}/${p.file}`)).map((d) => d.toJS());
    expect(docs.map((d) => d.kind)).toEqual(['HelmChart']);
    return docs[0];
  };

  it(`"default version": ${p.upstreamFile} → ${p.file} pins the chart version`, async () => {
    const r = await install(p.bundle);
    expect(chart(r).spec.version).toBe(p.defaultVersion);
    expect(r.read(`${K3S}/${p.file}`)).toMatch(/^ {2}version: \S+$/m);
    if (p.bundle === 'metallb') expect(r.read(`${K3S}/metallb-addresspool.yaml`)).toContain('- 192.168.1.10-192.168.1.20');
    await r.cleanup();
  });

  it('"Specify version": a version from the cloud-config lands in the chart', async () => {
    const r = await install(p.bundle, { cloudConfig: `#cloud-config\n${p.key}:\n version: ${p.version}\n` });
    expect(chart(r).spec.version).toBe(p.version);
    await r.cleanup();
  });

  it.each(p.acceptedUpstreamVersions ?? [])('"Specify version" %s, as upstream', async (v) => {
    const r = await install(p.bundle, { cloudConfig: `#cloud-config\n${p.key}:\n version: ${v}\n` });
    expect(chart(r).spec.version).toBe(v);
    await r.cleanup();
  });

  it.each(p.upstreamVersions)('differs: upstream accepts version %s, ours refuses it naming the key and places nothing', async (v) => {
    const r = await refused(p.bundle, `#cloud-config\n${p.key}:\n version: ${v}\n`);
    expect(r.stderr).toContain(`${p.bundle}: ${p.key}.version: '${v}' is not valid`);
    expect(r.files()).toEqual([]);
    await r.cleanup();
  });

  if (p.upstreamValues) {
    it('differs: upstream passes a free-form values block; ours takes named settings and warns that values is ignored', async () => {
      const plain = await install(p.bundle);
      const r = await install(p.bundle, { cloudConfig: { [p.key]: { values: p.upstreamValues } } });
      expect(r.stderr).toContain(`${p.bundle}: warning: ${p.key}.values is not a setting of this bundle and is ignored`);
      // Upstream's "default values" test expects valuesContent {}; ours carries the named settings' defaults.
      expect(chart(r).spec.valuesContent).toBe(chart(plain).spec.valuesContent);
      expect(parse(chart(plain).spec.valuesContent ?? '{}')).not.toEqual({});
      await plain.cleanup();
      await r.cleanup();
    });
  }

  if (p.upstreamKey) {
    it(`differs: upstream's key ${p.upstreamKey} is not read (ours is ${p.key}, a jq path without "-" or capitals)`, async () => {
      const r = await install(p.bundle, { cloudConfig: { [p.upstreamKey!]: { version: p.version } } });
      expect(chart(r).spec.version).toBe(p.defaultVersion);
      await r.cleanup();
    });
  }
});

describe('cert-manager (upstream tests/cert-manager_test.go)', () => {
  it('"deploys cert-manager operator version": the CRDs (clusterissuers.cert-manager.io among them) come with the chart (crds.enabled)', async () => {
    // Upstream ships the release's static cert-manager.yaml, CRDs included; ours installs the chart with crds.enabled.
    const r = await install('cert-manager');
    const doc = parse(r.read(`${K3S}/cert-manager-helmchart.yaml`));
    expect(parse(doc.spec.valuesContent).crds).toEqual({ enabled: true, keep: true });
    await r.cleanup();
  });
});

describe('system-upgrade-controller (upstream tests/system-upgrade-controller_test.go)', () => {
  it('"deploys default suc operator version": system-upgrade-controller.yaml names rancher/system-upgrade-controller', async () => {
    const r = await install('system-upgrade-controller');
    expect(r.read(`${K3S}/system-upgrade-controller.yaml`)).toContain('rancher/system-upgrade-controller:v0.17.0');
    await r.cleanup();
  });

  it('"Specific version": the image tag follows the cloud-config (key system_upgrade_controller, not suc; tags must be vX.Y.Z, so "foobar" is refused)', async () => {
    const r = await install('system-upgrade-controller', { cloudConfig: { system_upgrade_controller: { version: 'v0.16.3' } } });
    expect(r.read(`${K3S}/system-upgrade-controller.yaml`)).toContain('rancher/system-upgrade-controller:v0.16.3');
    await r.cleanup();
    const bad = await refused('system-upgrade-controller', '#cloud-config\nsystem_upgrade_controller:\n version: foobar\n');
    expect(bad.stderr).toContain("system_upgrade_controller.version: 'foobar' is not valid");
    await bad.cleanup();
  });
});

describe('kairos-operator (upstream tests/kairos-operator_test.go)', () => {
  it('"it uses the default k0s directory"', async () => {
    const r = await install('kairos-operator', { cloudConfig: '#cloud-config\nk0s:\n enabled: true' });
    expect(statSync(join(r.root, 'var/lib/k0s/manifests/kairos-operator/kairos-operator.yaml')).isFile()).toBe(true);
    await r.cleanup();
  });

  it('"it uses the default k3s directory"', async () => {
    const r = await install('kairos-operator', { cloudConfig: '#cloud-config\nk3s:\n enabled: true' });
    expect(statSync(join(r.root, K3S, 'kairos-operator.yaml')).isFile()).toBe(true);
    await r.cleanup();
  });

  it('"it uses the custom directory": differs: K3S_MANIFEST_DIR / K0S_MANIFEST_DIR instead of kairosOperator.manifest_dir', async () => {
    const r = await install('kairos-operator', { env: { K3S_MANIFEST_DIR: '/foobar' } });
    expect(statSync(join(r.root, 'foobar/kairos-operator.yaml')).isFile()).toBe(true);
    await r.cleanup();
  });
});

describe('k9s (upstream tests/k9s_test.go)', () => {
  it('"installs k9s binary correctly": /usr/local/bin/k9s is executable and not empty', async () => {
    const r = await installBundleForTest(join(offline, 'k9s'));
    const st = statSync(join(r.root, 'usr/local/bin/k9s'));
    expect(st.mode & 0o111).not.toBe(0);
    expect(st.size).toBeGreaterThan(0);
    await r.cleanup();
  });
});

describe('qemu-guest-agent (upstream tests/qemu-guest-agent_test.go)', () => {
  it('"installs service file": the unit, bound to the agent channel, restarted always, wanted by multi-user.target', async () => {
    const r = await installBundleForTest(join(offline, 'qemu-guest-agent'));
    const unit = r.read('etc/systemd/system/qemu-guest-agent.service');
    for (const s of ['Description=QEMU Guest Agent', 'Restart=always', 'WantedBy=multi-user.target', 'dev-virtio\\x2dports-org.qemu.guest_agent.0.device']) expect(unit).toContain(s);
    // Differs: upstream ships Alpine's qemu-ga as /usr/local/bin/qemu-ga (ExecStart=-/usr/local/bin/qemu-ga);
    // ours starts the node's own qemu-ga through /usr/local/bin/qemu-ga-launch.
    expect(unit).toMatch(/^ExecStart=\/usr\/local\/bin\/qemu-ga-launch$/m);
    expect(r.mode('usr/local/bin/qemu-ga-launch') & 0o111).not.toBe(0);
    await r.cleanup();
  });

  it('"enables … service": the multi-user.target.wants link resolves to the unit (relative link; upstream: absolute)', async () => {
    const r = await installBundleForTest(join(offline, 'qemu-guest-agent'));
    expect(r.link('etc/systemd/system/multi-user.target.wants/qemu-guest-agent.service')).toBe('../qemu-guest-agent.service');
    expect(statSync(join(r.root, 'etc/systemd/system/multi-user.target.wants/qemu-guest-agent.service')).isFile()).toBe(true);
    await r.cleanup();
  });
});
