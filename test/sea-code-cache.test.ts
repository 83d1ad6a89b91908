/**
 * The node executable's V8 code cache (src/sea/code-cache.cts, src/sea/loader.ts): written only by
 * `kbundle --write-code-cache` (and so by bundles/kbundle run.sh on the node), used only when it is
 * as trusted as the executable and made for this exact build; any other file (absent, damaged,
 * made for another build, rejected by V8, a symlink, writable by others, owned by someone else)
 * gives the same output as no cache at all. Start-up numbers are in bench/verify.ts, not here.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTo } from '../src/builder/output.js';
import { codeCachePath, decodeCodeCache, encodeCodeCache, MAX_CODE_CACHE_BYTES, readCodeCache, writeCodeCache, type CodeCacheBinding } from '../src/sea/code-cache.cjs';
import { kbundle, REPO_ROOT } from './helpers/cli.js';
import { cleanupTempDirs, tempDir } from './helpers/exec.js';
import { CONTAINER_FILES, CONTAINER_SPEC, writeBundle } from './helpers/fixture-bundle.js';
import { buildSea, canChroot, nodelessRoot } from './helpers/sea.js';

afterAll(cleanupTempDirs);

const binding: CodeCacheBinding = { cliSha256: 'a'.repeat(64), nodeVersion: 'v24.0.0', arch: 'x64' };
const payload = Buffer.from('not really V8 bytes, but the header does not care');
const isRoot = process.getuid?.() === 0;
const DEBUG_ENV = { KBUNDLE_DEBUG: 'code-cache' };

/** An "executable" and its cache file in a fresh folder. */
function exeWithCache(content: Buffer = encodeCodeCache(binding, payload)): { exe: string; cache: string } {
  const dir = tempDir();
  const exe = join(dir, 'kbundle');
  writeFileSync(exe, '#!/bin/sh\n', { mode: 0o755 });
  const cache = codeCachePath(exe);
  writeFileSync(cache, content, { mode: 0o644 });
  chmodSync(cache, 0o644);
  return { exe, cache };
}

describe('code cache file format', () => {
  it('round-trips the V8 bytes for the binding it was made for', () => {
    const d = decodeCodeCache(encodeCodeCache(binding, payload), binding);
    expect(d.data?.equals(payload)).toBe(true);
  });

  it.each([
    ['another CLI build', { ...binding, cliSha256: 'b'.repeat(64) }, /another kbundle build/],
    ['another Node version', { ...binding, nodeVersion: 'v24.0.1' }, /made for Node v24.0.0 x64/],
    ['another architecture', { ...binding, arch: 'arm64' }, /made for Node v24.0.0 x64/],
  ])('refuses a cache made for %s', (_name, reader, reason) => {
    const d = decodeCodeCache(encodeCodeCache(binding, payload), reader);
    expect(d.data).toBeUndefined();
    expect(d.data ? '' : d.reason).toMatch(reason);
  });

  it('refuses a damaged or truncated payload and a file without the header', () => {
    const file = encodeCodeCache(binding, payload);
    const flipped = Buffer.from(file);
    flipped[flipped.length - 3]! ^= 0x01;
    for (const bad of [flipped, file.subarray(0, file.length - 1), Buffer.concat([file, Buffer.from('x')])]) {
      expect(decodeCodeCache(bad, binding)).toEqual({ reason: 'damaged (checksum)' });
    }
    expect(decodeCodeCache(payload, binding)).toEqual({ reason: 'no kbundle code cache header' });
    expect(decodeCodeCache(Buffer.alloc(4096, 0x41), binding)).toEqual({ reason: 'no kbundle code cache header' });
  });
});

describe('reading the cache file: only when as trusted as the executable', () => {
  it('reads a file owned like the executable and writable only by its owner', () => {
    const { exe, cache } = exeWithCache();
    expect(readCodeCache(cache, exe, binding).data?.equals(payload)).toBe(true);
  });

  it('ignores an absent file, a symlink, a FIFO, a file writable by others and an oversized file', () => {
    const { exe, cache } = exeWithCache();
    const absent = join(tempDir(), 'kbundle.v8cache');
    expect(readCodeCache(absent, exe, binding)).toEqual({ reason: 'absent' });

    const link = `${cache}.link`;
    symlinkSync(cache, link);
    expect(readCodeCache(link, exe, binding)).toEqual({ reason: 'cannot open (ELOOP)' });

    const fifo = join(tempDir(), 'fifo');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    expect(readCodeCache(fifo, exe, binding)).toEqual({ reason: 'not a regular file' });

    chmodSync(cache, 0o664);
    expect(readCodeCache(cache, exe, binding)).toEqual({ reason: 'writable by group or others' });
    chmodSync(cache, 0o646);
    expect(readCodeCache(cache, exe, binding)).toEqual({ reason: 'writable by group or others' });

    const big = exeWithCache();
    writeFileSync(big.cache, Buffer.alloc(0));
    spawnSync('truncate', ['-s', String(MAX_CODE_CACHE_BYTES + 1), big.cache]);
    expect(readCodeCache(big.cache, big.exe, binding)).toEqual({ reason: `larger than ${MAX_CODE_CACHE_BYTES} bytes` });
  });

  it.runIf(isRoot)('ignores a file owned by someone other than the executable owner', () => {
    const { exe, cache } = exeWithCache();
    chownSync(cache, 65534, 65534);
    expect(readCodeCache(cache, exe, binding)).toEqual({ reason: 'owned by uid 65534, the executable by uid 0' });
  });
});

describe('writing the cache file', () => {
  it('writes next to the executable (mode 0644, staged then renamed), replacing an old one', () => {
    const { exe, cache } = exeWithCache(Buffer.from('old'));
    expect(writeCodeCache(exe, binding, payload)).toBe(cache);
    expect(statSync(cache).mode & 0o777).toBe(0o644);
    expect(readCodeCache(cache, exe, binding).data?.equals(payload)).toBe(true);
    expect(readdirSync(join(cache, '..')).sort()).toEqual(['kbundle', 'kbundle.v8cache']);
  });

  it.runIf(isRoot)('refuses to write a cache that the executable owner would not trust', () => {
    const { exe, cache } = exeWithCache(Buffer.from('old'));
    chownSync(exe, 65534, 65534);
    expect(() => writeCodeCache(exe, binding, payload)).toThrow(/belongs to uid 65534; a cache written by uid 0 would not be used/);
    expect(readFileSync(cache, 'utf8')).toBe('old');
  });
});

describe.runIf(process.platform === 'linux' && process.arch === 'x64')('the node executable with and without its code cache', () => {
  let exe: string;
  let verifyArgs: string[];
  let expected: string;
  const DEBUG = { KBUNDLE_DEBUG: 'code-cache' };

  /** `verify --json` of the signed layout with the executable: its stdout, and what the loader says of the cache. */
  const verify = () => {
    const r = spawnSync(exe, verifyArgs, { encoding: 'utf8', env: { ...process.env, ...DEBUG } });
    expect(r.status, r.stderr).toBe(0);
    return { stdout: r.stdout, cache: /kbundle: code cache \S+: (.*)\n/.exec(r.stderr)?.[1] };
  };

  beforeAll(async () => {
    const dir = tempDir();
    exe = join(dir, 'kbundle');
    copyFileSync(join(buildSea(['linux/amd64']), 'kbundle-linux-amd64'), exe);
    chmodSync(exe, 0o755);
    const env = { ...process.env, KBUNDLE_PASSWORD: 'cc' };
    const keys = tempDir();
    expect(kbundle(['key', 'generate', '--out', join(keys, 'k')], { env }).code).toBe(0);
    const layout = join(tempDir(), 'oci');
    await buildTo(writeBundle(join(tempDir(), 'b'), CONTAINER_SPEC, CONTAINER_FILES), { transport: 'oci', path: layout, ref: 'v1' }, { sourceDateEpoch: 0, platforms: ['linux/amd64'] });
    const s = kbundle(['sign', `oci:${layout}:v1`, '--key', join(keys, 'k.key')], { env });
    expect(s.code, s.stderr).toBe(0);
    verifyArgs = ['verify', `oci:${layout}:v1`, '--key', join(keys, 'k.pub'), '--json'];
    const first = verify();
    expect(first.cache).toBe('not used: absent');
    expect(JSON.parse(first.stdout)).toMatchObject({ verified: true });
    expected = first.stdout;
  }, 600_000);

  it('--write-code-cache writes kbundle.v8cache next to the executable, and the next start uses it', () => {
    const w = spawnSync(exe, ['--write-code-cache'], { encoding: 'utf8' });
    expect(w.status, w.stderr).toBe(0);
    expect(w.stdout).toMatch(/^wrote \S+kbundle\.v8cache \(\d+\.\d MiB V8 code cache for kbundle \d+\.\d+\.\d+, Node v24\.\d+\.\d+ x64\)\n$/);
    const cache = codeCachePath(exe);
    expect(statSync(cache).mode & 0o777).toBe(0o644);
    expect(readFileSync(cache).subarray(0, 20).toString()).toBe('kbundle-code-cache/1');
    expect(verify()).toEqual({ stdout: expected, cache: 'used' });
    // Other commands than the one that made it work with it too.
    const help = spawnSync(exe, ['verify', '--help'], { encoding: 'utf8', env: { ...process.env, ...DEBUG } });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^Usage: kbundle verify/);
    expect(help.stderr).toBe(`kbundle: code cache ${cache}: used\n`);
  });

  it('a damaged, foreign, V8-rejected, group-writable or symlinked cache changes nothing but the start-up time', () => {
    const cache = codeCachePath(exe);
    expect(spawnSync(exe, ['--write-code-cache']).status).toBe(0);
    const good = readFileSync(cache);
    const nl = good.indexOf(0x0a);
    const headerText = good.subarray(0, nl).toString('latin1');
    const real: CodeCacheBinding = {
      cliSha256: /cli=(\S+)/.exec(headerText)![1]!,
      nodeVersion: /node=(\S+)/.exec(headerText)![1]!,
      arch: /arch=(\S+)/.exec(headerText)![1]!,
    };
    const v8Bytes = good.subarray(nl + 1);
    const put = (content: Buffer, mode = 0o644) => {
      writeFileSync(cache, content);
      chmodSync(cache, mode);
    };

    const damaged = Buffer.from(good);
    damaged[nl + 1 + Math.floor(v8Bytes.length / 2)]! ^= 0xff;
    put(damaged);
    expect(verify()).toEqual({ stdout: expected, cache: 'not used: damaged (checksum)' });

    put(encodeCodeCache({ ...real, cliSha256: 'c'.repeat(64) }, v8Bytes));
    expect(verify()).toEqual({ stdout: expected, cache: 'not used: made for another kbundle build' });

    // Bytes V8 does not accept (its magic number changed), under a header that is right for them.
    const notV8 = Buffer.from(v8Bytes);
    notV8.writeUInt32LE(notV8.readUInt32LE(0) ^ 0xffffffff, 0);
    put(encodeCodeCache(real, notV8));
    expect(verify()).toEqual({ stdout: expected, cache: 'rejected by V8' });

    put(good, 0o664);
    expect(verify()).toEqual({ stdout: expected, cache: 'not used: writable by group or others' });

    const elsewhere = join(tempDir(), 'cache');
    writeFileSync(elsewhere, good, { mode: 0o644 });
    spawnSync('rm', ['-f', cache]);
    symlinkSync(elsewhere, cache);
    expect(verify()).toEqual({ stdout: expected, cache: 'not used: cannot open (ELOOP)' });
    spawnSync('rm', ['-f', cache]);

    put(good);
    expect(verify()).toEqual({ stdout: expected, cache: 'used' });
  });

  it('only --write-code-cache writes it: commands and --version leave the folder as it was', () => {
    spawnSync('rm', ['-f', codeCachePath(exe)]);
    verify();
    expect(spawnSync(exe, ['--version']).status).toBe(0);
    expect(readdirSync(join(exe, '..'))).toEqual(['kbundle']);
  });
});

describe.runIf(canChroot())('bundles/kbundle run.sh on a node', () => {
  it('installs the executable and writes its code cache, which the installed kbundle uses', () => {
    const sea = join(buildSea(['linux/amd64']), 'kbundle-linux-amd64');
    const which = (t: string) => spawnSync('sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).stdout.trim();
    const node = nodelessRoot(sea, { install: false, tools: ['mkdir', 'cp', 'chmod', 'mv', 'rm'].map(which) });
    // What kairos-agent does for a run:// bundle: its files in a folder, run.sh started there.
    mkdirSync(join(node.dir, 'bundle'));
    copyFileSync(sea, join(node.dir, 'bundle/kbundle'));
    copyFileSync(join(REPO_ROOT, 'bundles/kbundle/run.sh'), join(node.dir, 'bundle/run.sh'));
    // A stale cache of an earlier kbundle is replaced, not kept.
    mkdirSync(join(node.dir, 'usr/local/bin'), { recursive: true });
    writeFileSync(join(node.dir, 'usr/local/bin/kbundle.v8cache'), 'stale');
    const r = spawnSync('/usr/sbin/chroot', [node.dir, '/bin/sh', '-c', 'cd /bundle && sh run.sh'], { encoding: 'utf8', env: { PATH: '/usr/local/bin:/usr/bin:/bin' } });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^installed \/usr\/local\/bin\/kbundle\nwrote \/usr\/local\/bin\/kbundle\.v8cache /);
    expect(readdirSync(join(node.dir, 'usr/local/bin')).sort()).toEqual(['kbundle', 'kbundle.v8cache']);
    const help = node.run(['verify', '--help'], DEBUG_ENV);
    expect(help.code, help.stderr).toBe(0);
    expect(help.stderr).toBe('kbundle: code cache /usr/local/bin/kbundle.v8cache: used\n');
  });
});
