/**
 * The gzip layer writer's hot path (src/layer/tar.ts, tar-header.ts, parallel-gzip.ts): its tar is
 * byte for byte the tar tar-stream packs for the same entries (long, non-ASCII and PAX names
 * included); its gzip is the sequential reference of the pigz scheme (1 MiB pieces, each primed
 * with the previous 32 KiB, sync-flushed) whatever the thread pool size, valid for gzip -t and
 * pigz -t; and a source that changes size while it is written fails with INVALID_INPUT.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { constants, crc32, deflateRawSync, gunzipSync } from 'node:zlib';
import { pack as tarPack } from 'tar-stream';
import { afterAll, describe, expect, it } from 'vitest';
import { isKbError } from '../src/errors.js';
import { GZIP_CHUNK } from '../src/layer/parallel-gzip.js';
import { TarHeaderEncoder } from '../src/layer/tar-header.js';
import { writeLayer, type LayerEntry, type LayerOptions } from '../src/layer/tar.js';
import { kbundle } from './helpers/cli.js';
import { cleanupTempDirs, mustRun, tempDir } from './helpers/exec.js';

afterAll(cleanupTempDirs);

const opts: LayerOptions = { mtime: new Date(1700000000 * 1000), uid: 0, gid: 0, level: 6 };

function file(path: string, content: Buffer, how: 'data' | 'fd' | 'stream', dir?: string): LayerEntry {
  const base = { type: 'file' as const, path, mode: 0o644, size: content.length, open: () => Readable.from([content]) };
  if (how === 'data') return { ...base, data: content };
  if (how === 'stream') return base;
  const src = join(dir!, `src-${createHash('sha256').update(path).digest('hex').slice(0, 12)}`);
  writeFileSync(src, content);
  return { ...base, openFd: () => openSync(src, 'r') };
}

/** Entries that exercise every header shape: ustar prefix split, PAX for long and non-ASCII names and link targets. */
function trickyEntries(dir: string): LayerEntry[] {
  const deep = `${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(60)}`; // > 100 bytes: split into prefix and name
  const huge = `${'g'.repeat(90)}/${'h'.repeat(120)}`; // a 120-byte last component: PAX
  return [
    { type: 'directory', path: 'a', mode: 0o755 },
    file('a/empty', Buffer.alloc(0), 'data'),
    file('a/odd', randomBytes(777), 'fd', dir),
    file('a/exec', Buffer.from('#!/bin/sh\necho hi\n'), 'stream'),
    { type: 'symlink', path: 'a/link', target: 'odd' },
    { type: 'symlink', path: 'a/long-link', target: `../${'t'.repeat(150)}` },
    { type: 'symlink', path: 'a/ünï-link', target: 'ziel-ß' },
    { type: 'directory', path: deep, mode: 0o700 },
    file(`${deep}/x.yaml`, Buffer.from('k: v\n'), 'data'),
    { type: 'directory', path: huge.split('/')[0]!, mode: 0o755 },
    file(huge, randomBytes(1500), 'fd', dir),
    file('café/naïve.txt', Buffer.from('utf-8 name\n'), 'data'),
    { ...(file('zero-mode', Buffer.from('x'), 'data') as Extract<LayerEntry, { type: 'file' }>), mode: 0 },
  ];
}

/** The same entries through tar-stream's pack, as the writer used to do. */
async function tarStreamBytes(entries: LayerEntry[]): Promise<Buffer> {
  const tar = tarPack();
  const chunks: Buffer[] = [];
  tar.on('data', (c) => chunks.push(c as Buffer));
  const ended = new Promise<void>((r) => tar.on('end', () => r()));
  const base = { mtime: opts.mtime, uid: 0, gid: 0, uname: '', gname: '' };
  for (const e of entries) {
    if (e.type === 'directory') tar.entry({ ...base, name: `${e.path}/`, type: 'directory', mode: e.mode });
    else if (e.type === 'symlink') tar.entry({ ...base, name: e.path, type: 'symlink', linkname: e.target, mode: 0o777 });
    else {
      const body: Buffer[] = [];
      for await (const c of e.open()) body.push(c as Buffer);
      tar.entry({ ...base, name: e.path, type: 'file', mode: e.mode, size: e.size }, Buffer.concat(body));
    }
  }
  tar.finalize();
  await ended;
  return Buffer.concat(chunks);
}

/** The pigz scheme done sequentially, one piece after another on this thread: the expected bytes. */
function referenceGzip(tar: Buffer, level = 6): Buffer {
  const parts = [Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])];
  const pieces = Math.floor(tar.length / GZIP_CHUNK) + 1; // the last piece may be empty
  for (let i = 0; i < pieces; i++) {
    const piece = tar.subarray(i * GZIP_CHUNK, (i + 1) * GZIP_CHUNK);
    const last = i === pieces - 1;
    const dictionary = i ? tar.subarray(i * GZIP_CHUNK - 32 * 1024, i * GZIP_CHUNK) : undefined;
    parts.push(deflateRawSync(piece, { level, memLevel: 9, finishFlush: last ? constants.Z_FINISH : constants.Z_SYNC_FLUSH, ...(dictionary ? { dictionary } : {}) }));
  }
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc32(tar), 0);
  trailer.writeUInt32LE(tar.length % 2 ** 32, 4);
  return Buffer.concat([...parts, trailer]);
}

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('gzip layer writer', () => {
  it('encodes each ustar header as tar-stream does, over random names, modes, sizes, owners and link targets', () => {
    // tar-stream's own header encoder (not exported: loaded by path) is the oracle.
    const tarStream = createRequire(import.meta.url)('../node_modules/tar-stream/headers.js') as { encode(o: object): Buffer | null };
    let seed = 42; // mulberry32: the same cases on every run
    const rand = (n: number) => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), seed | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) % n;
    };
    const text = (len: number, chars: string) => Array.from({ length: len }, () => chars[rand(chars.length)]).join('');
    const sizes = [0, 1, 511, 512, 8 ** 11 - 1, 8 ** 11, 2 ** 40 + 3];
    const types = ['file', 'directory', 'symlink'] as const;
    let ustar = 0;
    for (let i = 0; i < 3000; i++) {
      const owners = [0, 8 ** 6 - 1, 8 ** 6, 8 ** 7 + 5]; // the 6-digit fields' edges
      const owner = () => (rand(3) ? rand(70000) : owners[rand(owners.length)]!);
      const base = { uid: owner(), gid: owner(), mtime: rand(4) ? rand(2 ** 31) : 2 ** 31 + rand(2 ** 31) };
      const name = text(1 + rand(rand(4) ? 120 : 280), 'abcxyz-_./0123456789/'.concat(rand(8) ? '' : 'é'));
      const type = types[rand(3)]!;
      const mode = rand(0o200000);
      const size = rand(2) ? rand(100000) : sizes[rand(sizes.length)]!;
      const linkname = type === 'symlink' ? text(1 + rand(110), 'ab/.ß-') : undefined;
      const ours = new TarHeaderEncoder(base).encode(name, type, mode, size, linkname);
      const theirs = tarStream.encode({ name, type, mode, size, linkname, uid: base.uid, gid: base.gid, mtime: new Date(base.mtime * 1000) });
      if (theirs) {
        ustar++;
        expect(ours.equals(theirs), `header ${i}: ${JSON.stringify({ name, type, mode, size, linkname, base })}`).toBe(true);
      } else expect(ours.length, `header ${i} needs PAX`).toBeGreaterThan(512);
    }
    expect(ustar).toBeGreaterThan(1500); // most cases fit ustar
  });

  it('writes the tar tar-stream writes, for every header shape', async () => {
    const dir = tempDir();
    const entries = trickyEntries(dir);
    const layer = await writeLayer(entries, join(dir, 'layer.tgz'), opts);
    const tar = gunzipSync(readFileSync(join(dir, 'layer.tgz')));
    expect(tar.equals(await tarStreamBytes(entries))).toBe(true);
    expect(layer.diffId).toBe(sha(tar));
    expect(layer.uncompressedSize).toBe(tar.length);
    // GNU tar reads the names back, long and non-ASCII ones included.
    const listed = mustRun('sh', ['-c', 'tar -tzf "$1"', 'sh', join(dir, 'layer.tgz')])
      .trim()
      .split('\n');
    expect(listed).toEqual(entries.map((e) => (e.type === 'directory' ? `${e.path}/` : e.path)));
  });

  it('gives the sequential pigz-scheme bytes over many pieces, gzip -t and pigz -t accept them', async () => {
    const dir = tempDir();
    // 5.5 MiB: random and repetitive parts, plus small files between them.
    const entries: LayerEntry[] = [{ type: 'directory', path: 'd', mode: 0o755 }];
    for (let i = 0; i < 6; i++) {
      entries.push(file(`d/big-${i}`, Buffer.concat([randomBytes(400_000), Buffer.alloc(500_000, `line ${i}\n`)]), i % 2 ? 'fd' : 'stream', dir));
      entries.push(file(`d/small-${i}`, Buffer.from(`small ${i}\n`.repeat(i * 40)), 'data'));
    }
    const out = join(dir, 'layer.tgz');
    const layer = await writeLayer(entries, out, opts);
    const gz = readFileSync(out);
    const tar = gunzipSync(gz);
    expect(tar.length).toBeGreaterThan(5 * GZIP_CHUNK);
    expect(gz.equals(referenceGzip(tar))).toBe(true);
    expect(layer.digest).toBe(sha(gz));
    expect(layer.size).toBe(gz.length);
    for (const tool of ['gzip', 'pigz']) mustRun('sh', ['-c', `${tool} -t "$1"`, 'sh', out]);
    expect(`sha256:${mustRun('sh', ['-c', 'pigz -dc < "$1" | sha256sum', 'sh', out]).split(' ')[0]}`).toBe(layer.diffId);
  });

  it('handles a tar of exactly whole pieces (the last piece is empty)', async () => {
    const dir = tempDir();
    // header 512 + body + end-of-archive 1024 = 2 pieces exactly.
    const body = randomBytes(2 * GZIP_CHUNK - 1536);
    const out = join(dir, 'layer.tgz');
    await writeLayer([file('exact', body, 'fd', dir)], out, opts);
    const gz = readFileSync(out);
    const tar = gunzipSync(gz);
    expect(tar.length).toBe(2 * GZIP_CHUNK);
    expect(gz.equals(referenceGzip(tar))).toBe(true);
    mustRun('sh', ['-c', 'gzip -t "$1" && pigz -t "$1"', 'sh', out]);
  });

  it('fails with INVALID_INPUT when a source is shorter or longer than planned', async () => {
    const dir = tempDir();
    const content = randomBytes(3000);
    const shorter = { ...(file('f', content, 'fd', dir) as Extract<LayerEntry, { type: 'file' }>), size: 4000 };
    const longer = { ...(file('f', content, 'fd', dir) as Extract<LayerEntry, { type: 'file' }>), size: 2000 };
    const streamed = { ...(file('f', content, 'stream') as Extract<LayerEntry, { type: 'file' }>), size: 2000 };
    for (const e of [shorter, longer, streamed]) {
      const err = await writeLayer([e], join(dir, 'x.tgz'), opts).catch((x: unknown) => x);
      expect(isKbError(err, 'INVALID_INPUT'), String(err)).toBe(true);
      expect((err as Error).message).toMatch(/^layer file f: its source changed/);
    }
  });

  it('closes every descriptor it opens', async () => {
    const dir = tempDir();
    const fds: number[] = [];
    const entries: LayerEntry[] = Array.from({ length: 50 }, (_, i) => {
      const e = file(`f${String(i).padStart(2, '0')}`, Buffer.from(`file ${i}\n`), 'fd', dir) as Extract<LayerEntry, { type: 'file' }>;
      const openFd = e.openFd!;
      return {
        ...e,
        openFd: () => {
          const fd = openFd();
          fds.push(fd);
          return fd;
        },
      };
    });
    await writeLayer(entries, join(dir, 'x.tgz'), opts);
    expect(fds).toHaveLength(50);
    for (const fd of fds) expect(() => closeSync(fd)).toThrow(/EBADF/);
  });

  it('builds the same layer digest with 1 and 4 thread-pool threads (kbundle build)', () => {
    const dir = tempDir();
    const tree = join(dir, 'bundle', 'tree');
    mkdirSync(tree, { recursive: true });
    for (let i = 0; i < 4; i++) writeFileSync(join(tree, `blob-${i}`), Buffer.concat([randomBytes(700_000), Buffer.alloc(700_000, `text ${i}\n`)]));
    for (let i = 0; i < 30; i++) writeFileSync(join(tree, `small-${i}.yaml`), `key: ${i}\n`);
    writeFileSync(join(dir, 'bundle', 'bundle.yaml'), 'name: pool\nversion: 1.0.0\ndescription: thread pool sizes\ntype: container\nplatforms: [linux/amd64]\nfiles:\n  - src: tree\n    dst: data\n');
    const digests = ['1', '4'].map((threads) => {
      const r = kbundle(['build', join(dir, 'bundle'), '-o', `oci:${join(dir, `out-${threads}`)}:t`, '--json'], { env: { ...process.env, UV_THREADPOOL_SIZE: threads } });
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { platforms: { layer: string }[] }).platforms[0]!.layer;
    });
    expect(digests[1]).toBe(digests[0]);
    const blob = join(dir, 'out-1', 'blobs', 'sha256', digests[0]!.slice(7));
    mustRun('sh', ['-c', 'gzip -t "$1" && pigz -t "$1"', 'sh', blob]);
  });
});
