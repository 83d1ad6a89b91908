/**
 * The npm package a user installs: `npm pack` carries the CLI, README, LICENSE and package.json
 * only, and the tarball installed into a fresh prefix gives a working `kbundle`.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { CONTAINER_FILES, CONTAINER_SPEC, writeBundle } from './helpers/fixture-bundle.js';

afterAll(cleanupTempDirs);

function npm(args: string[], cwd = REPO_ROOT) {
  const r = spawnSync('npm', args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_update_notifier: 'false' } });
  expect(r.status, `npm ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

describe('npm package', () => {
  it('packs only what users need, installs into a fresh prefix and runs', () => {
    const dest = tempDir();
    // dist/ is built by test/setup.sh; --ignore-scripts keeps `prepare` from building it again.
    const [packed] = JSON.parse(npm(['pack', '--json', '--ignore-scripts', '--pack-destination', dest])) as { filename: string; files: { path: string }[] }[];
    const paths = packed!.files.map((f) => f.path);
    expect(paths).toContain('LICENSE');
    expect(paths).toContain('README.md');
    expect(paths).toContain('dist/src/cli/kbundle.cjs');
    expect(paths.filter((p) => /^(test|bench|src|bundles|registry-test|signing)\//.test(p) || p.endsWith('.map') || p.endsWith('.ts'))).toEqual([]);
    expect(readFileSync(join(REPO_ROOT, 'LICENSE'), 'utf8')).toMatch(/Apache License\s+Version 2\.0, January 2004/);

    const prefix = tempDir();
    npm(['install', '--global', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', join(dest, packed!.filename)], dest);
    const bin = join(prefix, 'bin/kbundle');
    expect(existsSync(bin)).toBe(true);
    const version = spawnSync(bin, ['--version'], { encoding: 'utf8' });
    expect(version.status, version.stderr).toBe(0);
    expect(version.stdout.trim()).toBe((JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version);

    const bundle = writeBundle(join(tempDir(), 'tools'), CONTAINER_SPEC, CONTAINER_FILES);
    const out = join(tempDir(), 'oci');
    const build = spawnSync(bin, ['build', bundle, '-o', `oci:${out}:tools`, '--json'], { encoding: 'utf8', cwd: tempDir() });
    expect(build.status, build.stderr).toBe(0);
    const index = JSON.parse(readFileSync(join(out, 'index.json'), 'utf8')) as { manifests: { annotations?: Record<string, string> }[] };
    expect(index.manifests.some((m) => m.annotations?.['org.opencontainers.image.ref.name'] === 'tools')).toBe(true);
    const check = spawnSync('skopeo', ['inspect', '--raw', `oci:${out}:tools`], { encoding: 'utf8' });
    expect(check.status, check.stderr).toBe(0);
  }, 300_000);
});
