import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCatalog } from '../src/catalog/build.js';
import { discoverBundles } from '../src/catalog/discover.js';
import { lintCatalog } from '../src/catalog/lint.js';
import { KAIROS_SYSEXT_HIERARCHIES } from '../src/sysext/hierarchies.js';
import { OciLayout } from '../src/store/oci-layout.js';
import { copyCatalogOffline, type FixtureServer } from './helpers/catalog-copy.js';
import { kbundle } from './helpers/cli.js';
import { cleanupTempDirs, mustRun, REPO_ROOT, tempDir } from './helpers/exec.js';

/** The part of a browser element the page checks read (the DOM lib is not loaded for Node code). */
interface DomElement {
  dataset: Record<string, string | undefined>;
  hidden: boolean;
}

let catalog: string;
let server: FixtureServer;
beforeAll(async () => {
  catalog = join(tempDir(), 'bundles');
  server = await copyCatalogOffline(catalog);
});
afterAll(async () => {
  await server.close();
  cleanupTempDirs();
});

describe('catalog build', () => {
  it('builds every bundle reproducibly, and a second build in the same layout costs nothing', async () => {
    const a = await OciLayout.open(join(tempDir(), 'a'), { create: true });
    const b = await OciLayout.open(join(tempDir(), 'b'), { create: true });
    const ra = await buildCatalog(catalog, a, { sourceDateEpoch: 0 });
    const rb = await buildCatalog(catalog, b, { sourceDateEpoch: 0, concurrency: 4 });
    const names = (await discoverBundles(catalog)).map((x) => x.name);
    expect(names.length).toBeGreaterThanOrEqual(11);
    expect(ra.built.map((e) => e.name)).toEqual(names);
    expect(rb.entries.map((e) => [e.tag, e.digest])).toEqual(ra.entries.map((e) => [e.tag, e.digest]));
    // Every bundle is tagged in the layout and skopeo can read it.
    for (const e of ra.entries) expect((await a.resolve(e.tag)).digest).toBe(e.digest);
    expect(JSON.parse(mustRun('skopeo', ['inspect', '--raw', `oci:${a.dir}:${ra.entries[0]!.tag}`])).schemaVersion).toBe(2);
    // The layout's bytes depend neither on -j nor on which build finished first.
    const bytes = (dir: string) => ['index.json', 'kbundle-catalog.json'].map((f) => readFileSync(join(dir, f), 'utf8'));
    expect(bytes(b.dir)).toEqual(bytes(a.dir));
    const again = await buildCatalog(catalog, a, { sourceDateEpoch: 0, concurrency: 1 });
    expect(bytes(a.dir)).toEqual(bytes(b.dir));
    expect(again.built).toEqual([]);
    expect(again.skipped.map((e) => e.digest)).toEqual(ra.entries.map((e) => e.digest));
  });

  it('rebuilds only the bundle that changed', async () => {
    const mine = join(tempDir(), 'bundles');
    cpSync(catalog, mine, { recursive: true });
    const layout = await OciLayout.open(join(tempDir(), 'oci'), { create: true });
    const first = await buildCatalog(mine, layout);
    const pool = join(mine, 'metallb/assets/metallb-addresspool.yaml');
    writeFileSync(pool, readFileSync(pool, 'utf8').replace('name: default', 'name: edited'));
    const second = await buildCatalog(mine, layout);
    expect(second.built.map((e) => e.name)).toEqual(['metallb']);
    expect(second.skipped).toHaveLength(first.entries.length - 1);
    expect(second.built[0]!.digest).not.toBe(first.entries.find((e) => e.name === 'metallb')!.digest);
  });

  it('selects bundles changed since a git revision', async () => {
    const repo = tempDir();
    cpSync(catalog, join(repo, 'bundles'), { recursive: true });
    const git = (...args: string[]) => mustRun('git', ['-C', repo, '-c', 'user.email=t@example.invalid', '-c', 'user.name=t', ...args]);
    git('init', '-q');
    git('add', '.');
    git('commit', '-qm', 'catalog');
    writeFileSync(join(repo, 'bundles/kyverno/README.md'), '# changed\n');
    const layout = await OciLayout.open(join(tempDir(), 'oci'), { create: true });
    const r = await buildCatalog(join(repo, 'bundles'), layout, { changedSince: 'HEAD' });
    expect(r.built.map((e) => e.name)).toEqual(['kyverno']);
    await expect(buildCatalog(join(repo, 'bundles'), layout, { changedSince: 'no-such-rev' })).rejects.toThrow(/"no-such-rev" is not a commit/);
  });

  it('CLI: refuses a catalog with a broken bundle before building anything', () => {
    const mine = join(tempDir(), 'bundles');
    cpSync(catalog, mine, { recursive: true });
    writeFileSync(join(mine, 'zz-broken/bundle.yaml'.replace('/bundle.yaml', '')), '');
    mustRun('rm', ['-f', join(mine, 'zz-broken')]);
    mustRun('mkdir', ['-p', join(mine, 'zz-broken')]);
    writeFileSync(join(mine, 'zz-broken/bundle.yaml'), 'name: zz-broken\nversion: 1.0.0\ndescription: x\ntype: run\n');
    const out = join(tempDir(), 'oci');
    const r = kbundle(['catalog', 'build', '-C', mine, '-o', `oci:${out}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/zz-broken\/bundle\.yaml: run: a run bundle needs a run\.sh/);
    expect(existsSync(join(out, 'index.json')) && JSON.parse(readFileSync(join(out, 'index.json'), 'utf8')).manifests.length).toBeFalsy();
  });
});

describe('catalog lint', () => {
  it('passes on the real catalog', async () => {
    expect(await lintCatalog(join(REPO_ROOT, 'bundles'))).toEqual([]);
  });

  it('reports floating versions, missing READMEs and undocumented config keys', async () => {
    const mine = join(tempDir(), 'bundles');
    cpSync(join(REPO_ROOT, 'bundles/metallb'), join(mine, 'metallb'), { recursive: true });
    const spec = join(mine, 'metallb/bundle.yaml');
    writeFileSync(spec, readFileSync(spec, 'utf8').replace("version: '{{ version }}'", 'version: latest').replace('    address_pool: 192', '    extra_key: x\n    address_pool: 192'));
    cpSync(join(REPO_ROOT, 'bundles/cert-manager'), join(mine, 'cert-manager'), { recursive: true });
    mustRun('rm', [join(mine, 'cert-manager/README.md')]);
    // A sysext that ships into /opt and /usr/libexec: systemd would merge it, a stock Kairos node not.
    cpSync(join(REPO_ROOT, 'bundles/sysext-example'), join(mine, 'sysext-example'), { recursive: true });
    mkdirSync(join(mine, 'sysext-example/usr/libexec'), { recursive: true });
    writeFileSync(join(mine, 'sysext-example/usr/libexec/helper'), '#!/bin/sh\n');
    const extSpec = join(mine, 'sysext-example/bundle.yaml');
    writeFileSync(extSpec, readFileSync(extSpec, 'utf8').replace('  - src: usr\n    dst: usr\n', '  - src: usr\n    dst: usr\n  - src: README.md\n    dst: opt/example/README\n'));
    const problems = (await lintCatalog(mine)).map((p) => `${p.bundle}: ${p.message}`);
    expect(problems).toEqual([
      'cert-manager: missing: every bundle documents its purpose and cloud-config block',
      'metallb: charts.0.version resolves to "latest", which is not pinned',
      'metallb: config.values.extra_key has no config.patterns.extra_key to check node-supplied values',
      'metallb: does not document config value "metallb.extra_key"',
      `sysext-example: files.0: /usr/libexec would not be merged on a stock Kairos node (SYSTEMD_SYSEXT_HIERARCHIES=${KAIROS_SYSEXT_HIERARCHIES.join(':')})`,
      `sysext-example: files.1: /opt/example/README would not be merged on a stock Kairos node (SYSTEMD_SYSEXT_HIERARCHIES=${KAIROS_SYSEXT_HIERARCHIES.join(':')})`,
    ]);
    const r = kbundle(['catalog', 'lint', '-C', mine]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('metallb/bundle.yaml: charts.0.version resolves to "latest"');
  });
});

describe('catalog index page', () => {
  it('writes index.json and a static page that lists and filters every bundle in Chromium', async () => {
    const layoutDir = join(tempDir(), 'oci');
    const layout = await OciLayout.open(layoutDir, { create: true });
    const built = await buildCatalog(catalog, layout);
    const site = join(tempDir(), 'site');
    const r = kbundle(['catalog', 'index', '-C', catalog, '--layout', layoutDir, '-o', site, '--registry', '127.0.0.1:5000/kairos', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const index = JSON.parse(readFileSync(join(site, 'index.json'), 'utf8'));
    const metallb = index.bundles.find((b: { name: string }) => b.name === 'metallb');
    expect(metallb).toMatchObject({ type: 'run', configKey: 'metallb', config: { address_pool: '192.168.1.10-192.168.1.20' }, digest: built.entries.find((e) => e.name === 'metallb')!.digest });
    expect(metallb.snippet).toContain('run://127.0.0.1:5000/kairos/metallb:0.14.9');

    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    try {
      const page = await browser.newPage();
      await page.goto(pathToFileURL(join(site, 'index.html')).href);
      const names = await page.$$eval('article.bundle', (els) => els.map((e) => (e as unknown as DomElement).dataset.name));
      expect(names).toEqual(index.bundles.map((b: { name: string }) => b.name));
      await page.fill('#search', 'load balancer');
      const visible = async () => page.$$eval('article.bundle', (els) => els.filter((e) => !(e as unknown as DomElement).hidden).map((e) => (e as unknown as DomElement).dataset.name));
      expect(await visible()).toEqual(['metallb']);
      await page.fill('#search', '');
      await page.selectOption('#type', 'container');
      expect(await visible()).toEqual(index.bundles.filter((b: { type: string }) => b.type === 'container').map((b: { name: string }) => b.name));
      expect(await page.textContent('#count')).toMatch(/^\d+ of \d+ bundles$/);
      await page.fill('#search', 'no-such-bundle-anywhere');
      expect(await page.isVisible('#empty')).toBe(true);
    } finally {
      await browser.close();
    }
  });
});
