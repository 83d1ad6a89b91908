/**
 * The npm CLI's start-up (src/sea/npm-launch.cts): the whole CLI as one script (dist/cli/kbundle.cjs)
 * compiled from the V8 code cache `npm run build` writes beside it, or, without a cache this
 * exact script and Node can use, the ES module bundle as before. Either way the output is the
 * same. The package is copied as `npm pack` would ship it (package.json `files`), so a file the
 * launcher needs but the package leaves out fails here. Start-up times are in bench/, not here.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeCachePath, encodeCodeCache } from '../src/sea/code-cache.cjs';
import { REPO_ROOT } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { CONTAINER_FILES, CONTAINER_SPEC, writeBundle } from './helpers/fixture-bundle.js';

afterAll(cleanupTempDirs);

const DEBUG = { KBUNDLE_DEBUG: 'code-cache' };

/** package.json `files` copied from the built repo into `dir` (globs: `*` in the last component). */
function copyPackage(dir: string): void {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { files: string[] };
  copyFileSync(join(REPO_ROOT, 'package.json'), join(dir, 'package.json'));
  for (const pattern of pkg.files) {
    const folder = dirname(pattern);
    const name = pattern.slice(folder.length + 1);
    const re = new RegExp(`^${name.replace(/[.]/g, '\\.').replace(/\*/g, '[^/]*')}$`);
    mkdirSync(join(dir, folder), { recursive: true });
    for (const f of readdirSync(join(REPO_ROOT, folder)).filter((n) => re.test(n))) copyFileSync(join(REPO_ROOT, folder, f), join(dir, folder, f));
  }
  // Dependencies the ES module bundle leaves outside (@sigstore/*), as npm would install them.
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(dir, 'node_modules'));
}

describe('npm CLI start-up with and without its code cache', () => {
  let pkg: string;
  let cli: string;
  let script: string;
  let cache: string;
  let bundle: string;

  /** `build` of the fixture bundle to a fresh layout: its stdout, and what the launcher says of the cache. */
  const build = () => {
    const out = join(tempDir(), 'oci');
    const r = spawnSync(process.execPath, [cli, 'build', bundle, '-o', `oci:${out}:demo`], { encoding: 'utf8', env: { ...process.env, ...DEBUG } });
    expect(r.status, r.stderr).toBe(0);
    return { stdout: r.stdout.replaceAll(out, 'OUT'), index: readFileSync(join(out, 'index.json'), 'utf8'), cache: /kbundle: code cache \S+: (.*)\n/.exec(r.stderr)?.[1] };
  };
  let expected: ReturnType<typeof build>;

  beforeAll(() => {
    pkg = tempDir();
    copyPackage(pkg);
    cli = join(pkg, 'dist/src/cli/kbundle.cjs');
    script = join(pkg, 'dist/cli/kbundle.cjs');
    cache = codeCachePath(script);
    bundle = writeBundle(join(tempDir(), 'bundle'), CONTAINER_SPEC, CONTAINER_FILES);
    rmSync(cache, { force: true });
    expected = build();
  });

  it('npm run build made a cache for this Node, and a command compiles from it', () => {
    const built = codeCachePath(join(REPO_ROOT, 'dist/cli/kbundle.cjs'));
    expect(statSync(built).mode & 0o777).toBe(0o644);
    expect(readFileSync(built).subarray(0, 200).toString('latin1')).toContain(`node=${process.version} arch=${process.arch}`);
    const r = spawnSync(process.execPath, [join(REPO_ROOT, 'dist/src/cli/kbundle.cjs'), '--version'], { encoding: 'utf8', env: { ...process.env, ...DEBUG } });
    expect(r.stdout).toBe(`${JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')).version}\n`);
    expect(r.stderr).toMatch(/code cache \S+kbundle\.cjs\.v8cache: used\n/);
  });

  it("starts from its code cache without Node's ES module loader (the bin is CommonJS)", () => {
    const dir = tempDir();
    const hook = join(dir, 'modules.cjs');
    const list = join(dir, 'modules.txt');
    writeFileSync(hook, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(list)}, process.moduleLoadList.join('\\n')));\n`);
    const r = spawnSync(process.execPath, ['--require', hook, join(REPO_ROOT, 'dist/src/cli/kbundle.cjs'), '--version'], { encoding: 'utf8', env: { ...process.env, ...DEBUG } });
    expect(r.stderr).toMatch(/code cache \S+kbundle\.cjs\.v8cache: used\n/);
    const loaded = readFileSync(list, 'utf8').split('\n');
    expect(loaded).toContain('NativeModule vm'); // the list is the real one
    // An ES module entry loads these before any code of ours runs (~15 ms of every command).
    expect(loaded.filter((m) => /^NativeModule internal\/modules\/esm\/(module_job|translators|resolve)$/.test(m))).toEqual([]);
    // Nor later: the script has no import() left (a built-in loaded on first use is a require).
    const source = readFileSync(join(REPO_ROOT, 'dist/cli/kbundle.cjs'), 'latin1');
    expect(source).toMatch(/require\("node:readline"\)/); // loaded on first use, as a require
    expect(source.match(/(?<![\w$.])import\s*\(/g)).toBeNull();
  });

  it('without a cache runs the ES modules; --write-code-cache writes one that the next command uses, with the same output', () => {
    expect(expected.cache).toBe('not used: absent');
    const w = spawnSync(process.execPath, [cli, '--write-code-cache'], { encoding: 'utf8' });
    expect(w.status, w.stderr).toBe(0);
    expect(w.stdout).toMatch(/^wrote \S+kbundle\.cjs\.v8cache \(\d+\.\d MiB V8 code cache, Node v/);
    expect(statSync(cache).mode & 0o777).toBe(0o644);
    expect(readdirSync(dirname(cache)).filter((n) => n.includes('v8cache'))).toEqual(['kbundle.cjs.v8cache']);
    const got = build();
    expect(got.cache).toBe('used');
    expect({ ...got, cache: '' }).toEqual({ ...expected, cache: '' });
  });

  it('ignores a cache made for another script, a damaged one, one writable by others and a symlink: same output', () => {
    spawnSync(process.execPath, [cli, '--write-code-cache']);
    const good = readFileSync(cache);
    const header = good.subarray(0, good.indexOf(0x0a) + 1).toString('latin1');

    writeFileSync(cache, Buffer.concat([Buffer.from(header.replace(/cli=[0-9a-f]{64}/, `cli=${'0'.repeat(64)}`), 'latin1'), good.subarray(header.length)]));
    chmodSync(cache, 0o644);
    expect(build()).toEqual({ ...expected, cache: 'not used: made for another kbundle build' });

    const damaged = Buffer.from(good);
    damaged[damaged.length - 10]! ^= 0x01;
    writeFileSync(cache, damaged);
    expect(build()).toEqual({ ...expected, cache: 'not used: damaged (checksum)' });

    writeFileSync(cache, good);
    chmodSync(cache, 0o666);
    expect(build()).toEqual({ ...expected, cache: 'not used: writable by group or others' });

    rmSync(cache);
    const elsewhere = join(tempDir(), 'cache');
    writeFileSync(elsewhere, good, { mode: 0o644 });
    symlinkSync(elsewhere, cache);
    expect(build()).toEqual({ ...expected, cache: 'not used: cannot open (ELOOP)' });
    rmSync(cache);
  });

  it('a cache whose script changed after it was written is not used (bound to the script, not its length)', () => {
    spawnSync(process.execPath, [cli, '--write-code-cache']);
    const original = readFileSync(script);
    // Same length, one byte changed in a comment-free spot V8 would not notice: the trailing newline.
    const changed = Buffer.from(original);
    changed[changed.length - 1] = 0x20;
    writeFileSync(script, changed);
    try {
      expect(build()).toEqual({ ...expected, cache: 'not used: made for another kbundle build' });
    } finally {
      writeFileSync(script, original);
    }
    expect(build().cache).toBe('used');
  });

  it('bytes V8 rejects (right header, wrong payload) compile from source: same output', () => {
    spawnSync(process.execPath, [cli, '--write-code-cache']);
    const good = readFileSync(cache);
    const header = good.subarray(0, good.indexOf(0x0a) + 1).toString('latin1');
    const cli256 = /cli=([0-9a-f]{64})/.exec(header)![1]!;
    writeFileSync(cache, encodeCodeCache({ cliSha256: cli256, nodeVersion: process.version, arch: process.arch }, Buffer.alloc(4096, 0x5a)));
    chmodSync(cache, 0o644);
    expect(build()).toEqual({ ...expected, cache: 'rejected by V8' });
  });

  it('--write-code-cache that cannot put its file in place fails with a clear message and leaves no temp', () => {
    rmSync(cache, { force: true });
    mkdirSync(join(cache, 'in-the-way'), { recursive: true });
    try {
      const r = spawnSync(process.execPath, [cli, '--write-code-cache'], { encoding: 'utf8' });
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/^kbundle: error: --write-code-cache: .*(EISDIR|ENOTEMPTY|EEXIST)/);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(readdirSync(dirname(cache)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    } finally {
      rmSync(cache, { recursive: true, force: true });
    }
    expect(build()).toEqual(expected);
  });
});
