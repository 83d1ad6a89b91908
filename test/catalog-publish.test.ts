import { createHash } from 'node:crypto';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyCatalogOffline, type FixtureServer } from './helpers/catalog-copy.js';
import { kbundle } from './helpers/cli.js';
import { cleanupTempDirs, mustRun, tempDir } from './helpers/exec.js';
import { startRegistry, type RegistryHandle } from './helpers/registry.js';

let reg: RegistryHandle;
let server: FixtureServer;
let catalog: string;
beforeAll(async () => {
  reg = await startRegistry({ variant: 'open' });
  catalog = join(tempDir(), 'bundles');
  server = await copyCatalogOffline(catalog);
});
afterAll(async () => {
  await reg.stop();
  await server.close();
  cleanupTempDirs();
});

describe('catalog publish', () => {
  it('publishes every bundle signed, each verifies, and a republish after one edit pushes and signs only that bundle', async () => {
    const env = { ...process.env, KBUNDLE_PASSWORD: '' };
    const keys = tempDir();
    expect(kbundle(['key', 'generate', '--out', join(keys, 'cat')], { env }).code).toBe(0);
    const layout = join(tempDir(), 'oci');
    const b = kbundle(['catalog', 'build', '-C', catalog, '-o', `oci:${layout}`], { env });
    expect(b.code, b.stderr).toBe(0);
    const ns = `${reg.host}/kairos`;
    const p = kbundle(['catalog', 'publish', '--registry', ns, '--layout', layout, '--sign', '--key', join(keys, 'cat.key'), '--json'], { env });
    expect(p.code, p.stderr).toBe(0);
    const first = JSON.parse(p.stdout).bundles as { name: string; version: string; digest: string; status: string; signature?: string; references: string[] }[];
    expect(first.length).toBeGreaterThanOrEqual(11);
    for (const x of first) {
      expect(x.status).toBe('pushed');
      expect(x.signature).toBeTruthy();
      expect(x.references).toEqual([`${ns}/${x.name}:${x.version}`, `${ns}/${x.name}:latest`, `${ns}/community-bundles:${x.name}_latest`]);
      const v = kbundle(['verify', `${ns}/${x.name}@${x.digest}`, '--key', join(keys, 'cat.pub')]);
      expect(v.code, `${x.name}: ${v.stderr}`).toBe(0);
    }
    // skopeo reads what was published, under all three names
    const metallb = first.find((x) => x.name === 'metallb')!;
    for (const ref of metallb.references) {
      const digest = mustRun('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${ref}`]);
      expect(JSON.parse(digest).manifests).toHaveLength(2);
    }

    const pool = join(catalog, 'metallb/assets/metallb-addresspool.yaml');
    const mine = join(tempDir(), 'bundles');
    cpSync(catalog, mine, { recursive: true, verbatimSymlinks: true });
    writeFileSync(join(mine, 'metallb/assets/metallb-addresspool.yaml'), readFileSync(pool, 'utf8').replace('name: default', 'name: edited'));
    const rb = kbundle(['catalog', 'build', '-C', mine, '-o', `oci:${layout}`, '--json'], { env });
    expect(JSON.parse(rb.stdout).built.map((x: { name: string }) => x.name)).toEqual(['metallb']);
    const p2 = kbundle(['catalog', 'publish', '--registry', ns, '--layout', layout, '--sign', '--key', join(keys, 'cat.key'), '--json'], { env });
    expect(p2.code, p2.stderr).toBe(0);
    const second = JSON.parse(p2.stdout).bundles as typeof first;
    expect(second.filter((x) => x.status === 'pushed').map((x) => x.name)).toEqual(['metallb']);
    expect(second.filter((x) => x.signature).map((x) => x.name)).toEqual(['metallb']);
    const newDigest = second.find((x) => x.name === 'metallb')!.digest;
    expect(newDigest).not.toBe(metallb.digest);
    expect(kbundle(['verify', `${ns}/metallb:latest`, '--key', join(keys, 'cat.pub'), '--json']).code).toBe(0);
    // The index takes registry, digests and signature locations from what was published.
    const site = join(tempDir(), 'site');
    const ix = kbundle(['catalog', 'index', '-C', mine, '--layout', layout, '-o', site]);
    expect(ix.code, ix.stderr).toBe(0);
    const index = JSON.parse(readFileSync(join(site, 'index.json'), 'utf8'));
    const m = index.bundles.find((b: { name: string }) => b.name === 'metallb');
    expect(m.digest).toBe(newDigest);
    expect(m.reference).toBe(`${ns}/metallb:${metallb.version}`);
    expect(m.signatures.length).toBeGreaterThanOrEqual(2);
    expect(m.signatures.join(' ')).toContain(`sha256-${newDigest.slice(7)}`);
    expect(index.bundles.find((b: { name: string }) => b.name === 'kyverno').signatures.length).toBeGreaterThan(0);
    const latestRaw = mustRun('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${ns}/metallb:latest`]);
    expect(`sha256:${createHash('sha256').update(latestRaw).digest('hex')}`).toBe(newDigest);
  });
});
