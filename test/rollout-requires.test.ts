/**
 * `requires:` in bundle.yaml end to end: stored as an annotation on the index and every manifest,
 * checked by `kbundle install` and `kbundle sysext install` against the node root (a clear refusal
 * that names the constraint and the node's value, nothing written; `--ignore-requires` warns and
 * is recorded), and shown by the catalog index and page.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTo } from '../src/builder/output.js';
import { catalogIndex, renderCatalogPage } from '../src/catalog/index-page.js';
import { EXIT_CODES } from '../src/cli/exit-codes.js';
import { kbundleAsync, REPO_ROOT } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { writeBundle } from './helpers/fixture-bundle.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';

let reg: RegistryHandle;
beforeAll(async () => {
  reg = await startRegistry({ variant: 'open' });
}, 60_000);
afterAll(async () => {
  await reg?.stop();
  cleanupTempDirs();
});

async function publish(dir: string, repo: string): Promise<{ digest: string; layout: string }> {
  const layout = join(tempDir(), 'oci');
  const built = await buildTo(dir, { transport: 'oci', path: layout, ref: 'b' }, { sourceDateEpoch: 0 });
  const r = await kbundleAsync(['push', `oci:${layout}:b`, `${reg.host}/${repo}:1`]);
  expect(r.code, r.stderr).toBe(0);
  return { digest: built.root.digest, layout };
}

function nodeRoot(release: string, systemd = 255): string {
  const root = tempDir('kbundle-node-');
  mkdirSync(join(root, 'etc'), { recursive: true });
  writeFileSync(join(root, 'etc/kairos-release'), release);
  writeFileSync(join(root, 'etc/os-release'), 'ID=debian\nVERSION_ID=12\n');
  mkdirSync(join(root, 'usr/lib/systemd'), { recursive: true });
  writeFileSync(join(root, `usr/lib/systemd/libsystemd-shared-${systemd}.so`), '');
  return root;
}

const UBUNTU = 'KAIROS_FLAVOR="ubuntu"\nKAIROS_VERSION="v3.5.0"\nKAIROS_SOFTWARE_VERSION_PREFIX="k3s"\n';
const ALPINE = 'KAIROS_FLAVOR="alpine"\nKAIROS_VERSION="v3.5.0"\nKAIROS_SOFTWARE_VERSION_PREFIX="k3s"\n';

describe('requires: in images', () => {
  it('is stored on the index and every manifest; install refuses a node that does not meet it, naming the constraint and the value', async () => {
    const dir = writeBundle(
      join(tempDir(), 'picky'),
      'name: picky\nversion: 1.0.0\ndescription: p\ntype: container\nplatforms: [linux/amd64, linux/arm64]\nfiles:\n  - src: f\n    dst: etc/picky.conf\nrequires:\n  kairos: ">=3.4"\n  flavor: ubuntu\n  k8s:\n    distribution: k3s\n',
      [{ path: 'f', content: 'picky' }],
    );
    const { digest, layout } = await publish(dir, 'req/picky');
    const blob = (d: string) => JSON.parse(readFileSync(join(layout, 'blobs/sha256', d.slice(7)), 'utf8'));
    const index = blob(digest);
    const expected = '{"kairos":">=3.4","flavor":["ubuntu"],"k8s":{"distribution":["k3s"]}}';
    expect(index.annotations['io.kairos.bundle.requires']).toBe(expected);
    for (const m of index.manifests) expect(blob(m.digest).annotations['io.kairos.bundle.requires']).toBe(expected);

    const ref = `container://${reg.host}/req/picky:1`;
    const alpine = nodeRoot(ALPINE);
    const refused = await kbundleAsync(['install', ref, '--root', alpine]);
    expect(refused.code).toBe(EXIT_CODES.REFUSED);
    expect(refused.stderr).toContain("this node does not meet the image's requires:\n  - requires.flavor [ubuntu]: the node has KAIROS_FLAVOR=alpine");
    expect(refused.stderr).toMatch(/--ignore-requires/);
    expect(existsSync(join(alpine, 'etc/picky.conf'))).toBe(false);
    expect(existsSync(join(alpine, 'var'))).toBe(false);

    const forced = await kbundleAsync(['install', ref, '--root', alpine, '--ignore-requires', '--json']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stderr).toMatch(/warning: .*--ignore-requires: installing although the node does not meet: requires\.flavor/);
    expect(readFileSync(join(alpine, 'etc/picky.conf'), 'utf8')).toBe('picky');
    const status = JSON.parse((await kbundleAsync(['status', '--root', alpine, '--json'])).stdout);
    expect(status.bundles[0].ignoredRequires).toEqual(['requires.flavor [ubuntu]: the node has KAIROS_FLAVOR=alpine']);

    const ubuntu = nodeRoot(UBUNTU);
    const r = await kbundleAsync(['install', ref, '--root', ubuntu]);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(join(ubuntu, 'etc/picky.conf'), 'utf8')).toBe('picky');

    const old = nodeRoot(UBUNTU.replace('v3.5.0', 'v3.3.9'));
    const o = await kbundleAsync(['install', ref, '--root', old]);
    expect(o.stderr).toContain('requires.kairos ">=3.4": the node has KAIROS_VERSION=v3.3.9');

    const bad = writeBundle(join(tempDir(), 'bad'), 'name: bad\nversion: 1.0.0\ndescription: b\ntype: container\nrequires:\n  kairos: "three or later"\n', []);
    const v = await kbundleAsync(['validate', bad]);
    expect(v.code).toBe(EXIT_CODES.INVALID_INPUT);
    expect(v.stderr).toMatch(/bundle\.yaml: requires\.kairos: must be a semver range/);
  });

  it('sysext install checks them too (systemd minimum), before anything lands in the store', async () => {
    const dir = join(tempDir(), 'sx');
    cpSync(join(REPO_ROOT, 'bundles/sysext-example'), dir, { recursive: true });
    writeFileSync(join(dir, 'bundle.yaml'), `${readFileSync(join(dir, 'bundle.yaml'), 'utf8')}requires:\n  systemd: 256\n`);
    await publish(dir, 'req/sysext');
    const old = nodeRoot(UBUNTU, 255);
    const r = await kbundleAsync(['sysext', 'install', `oci:${reg.host}/req/sysext:1`, '--root', old]);
    expect(r.code).toBe(EXIT_CODES.REFUSED);
    expect(r.stderr).toContain('requires.systemd >= 256: the node has systemd 255');
    expect(existsSync(join(old, 'var/lib/kairos/extensions/sysext-example.sysext.raw'))).toBe(false);
    const ok = await kbundleAsync(['sysext', 'install', `oci:${reg.host}/req/sysext:1`, '--root', nodeRoot(UBUNTU, 256)]);
    expect(ok.code, ok.stderr).toBe(0);
  });
});

describe('catalog', () => {
  it('index.json and the page show the constraints of the bundles that have them', async () => {
    const catalog = tempDir();
    cpSync(join(REPO_ROOT, 'bundles/kairos'), join(catalog, 'kairos'), { recursive: true });
    cpSync(join(REPO_ROOT, 'bundles/metallb'), join(catalog, 'metallb'), { recursive: true });
    const entries = await catalogIndex(catalog, { registry: '127.0.0.1:5000/kairos' });
    expect(entries.find((e) => e.name === 'kairos')!.requires).toEqual({ k8s: { distribution: ['k3s'] } });
    expect(entries.find((e) => e.name === 'metallb')!.requires).toBeUndefined();
    const html = join(tempDir(), 'index.html');
    writeFileSync(html, renderCatalogPage(entries));
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'] });
    try {
      const page = await browser.newPage();
      await page.goto(pathToFileURL(html).href);
      expect(await page.textContent('article[data-name="kairos"] .requires')).toBe('Requires: k3s');
      expect(await page.$('article[data-name="metallb"] .requires')).toBeNull();
    } finally {
      await browser.close();
    }
  });
});
