/**
 * The layer codec (src/layer): gzip and zstd streams round-trip and are read by the real gzip and
 * zstd programs, a stream cut short fails with code TRUNCATED, garbage with INVALID_INPUT, and
 * layers written from entries read back entry by entry with the digests the writer reported.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, openSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { isKbError } from '../src/errors.js';
import { codecOfMediaType, decompress, decompressFile, mediaTypeOfCodec } from '../src/layer/codec.js';
import { GZIP_CHUNK, ParallelDeflate } from '../src/layer/parallel-gzip.js';
import { ZstdProgram } from '../src/layer/zstd.js';
import { compareEntryPaths, writeLayer, type LayerEntry } from '../src/layer/tar.js';
import { readTar } from '../src/util/tar-reader.js';
import { chunksOf } from '../src/util/chunks.js';
import { OutputRecycler } from '../src/layer/zlib-decode.js';
import { craftTar } from './helpers/craft-image.js';
import { MediaType } from '../src/oci/mediatypes.js';
import { cleanupTempDirs, mustRun, tempDir } from './helpers/exec.js';

afterAll(cleanupTempDirs);

/** 3 MiB: random and repetitive parts, so gzip works in several parallel chunks. */
function sample(): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < 3; i++) parts.push(randomBytes(256 * 1024), Buffer.alloc(768 * 1024, `line ${i} of text\n`));
  return Buffer.concat(parts);
}

async function readAll(s: AsyncIterable<unknown> | Iterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** `data` compressed the way the layer writer compresses a tar: ParallelDeflate's pieces, or the zstd program. */
async function compressToFile(codec: 'gzip' | 'zstd', data: Buffer, file: string): Promise<void> {
  const out: Buffer[] = [];
  if (codec === 'gzip') {
    const deflate = new ParallelDeflate(6, (b) => void out.push(Buffer.from(b)));
    for (let at = 0; at < data.length; at += GZIP_CHUNK) {
      const piece = deflate.buffer();
      const n = data.copy(piece, 0, at, at + GZIP_CHUNK);
      await deflate.push(piece.subarray(0, n), at + GZIP_CHUNK >= data.length);
    }
    await deflate.end();
  } else {
    const fd = openSync(file, 'w');
    try {
      const z = new ZstdProgram(3, fd);
      await z.write(data);
      await z.end();
    } finally {
      closeSync(fd);
    }
    return;
  }
  writeFileSync(file, Buffer.concat(out));
}

async function failure(s: Readable): Promise<unknown> {
  return readAll(s).then(
    () => undefined,
    (e: unknown) => e,
  );
}

describe('layer codec', () => {
  it('maps media types to codecs and back', () => {
    expect(codecOfMediaType(MediaType.OciLayerGzip)).toBe('gzip');
    expect(codecOfMediaType(MediaType.OciLayerZstd)).toBe('zstd');
    expect(codecOfMediaType('application/vnd.docker.image.rootfs.diff.tar.gzip')).toBe('gzip');
    expect(codecOfMediaType(MediaType.OciLayer)).toBe('none');
    for (const c of ['gzip', 'zstd', 'none'] as const) expect(codecOfMediaType(mediaTypeOfCodec(c))).toBe(c);
  });

  for (const codec of ['gzip', 'zstd'] as const) {
    it(`${codec}: round-trips, and the ${codec} program reads what it wrote`, async () => {
      const dir = tempDir();
      const data = sample();
      const file = join(dir, `blob.${codec}`);
      await compressToFile(codec, data, file);
      expect((await readAll(decompress(createReadStream(file), codec, 'blob'))).equals(data)).toBe(true);
      const peer = createHash('sha256')
        .update(mustRun('sh', ['-c', `${codec} -dc < "$1" | sha256sum`, 'sh', file]).split(' ')[0]!)
        .digest('hex');
      expect(peer).toBe(createHash('sha256').update(createHash('sha256').update(data).digest('hex')).digest('hex'));
    });

    it(`${codec}: a stream cut short fails with code TRUNCATED naming the blob`, async () => {
      const dir = tempDir();
      const file = join(dir, `blob.${codec}`);
      await compressToFile(codec, sample(), file);
      const whole = readFileSync(file);
      for (const keep of [whole.length - 4, Math.floor(whole.length / 2), 20]) {
        writeFileSync(join(dir, 'cut'), whole.subarray(0, keep));
        const e = await failure(decompress(createReadStream(join(dir, 'cut')), codec, 'layer 3'));
        expect(isKbError(e, 'TRUNCATED'), `kept ${keep} of ${whole.length}: ${String(e)}`).toBe(true);
        expect((e as Error).message).toMatch(/^layer 3: /);
      }
    });

    it(`${codec}: bytes that are not ${codec} data fail with INVALID_INPUT`, async () => {
      const e = await failure(decompress(Readable.from([randomBytes(4096)]), codec, 'layer 0'));
      expect(isKbError(e, 'INVALID_INPUT'), String(e)).toBe(true);
    });
  }

  for (const inFlight of [4, 8]) {
    it(`gzip, ${inFlight} pieces in flight: recycles its output buffers, but never while onOutput may still read them`, async () => {
      const pieces = 3 * inFlight;
      const data = Buffer.concat(Array.from({ length: pieces }, (_, i) => (i % 2 ? randomBytes(GZIP_CHUNK) : Buffer.alloc(GZIP_CHUNK, `line ${i} of text\n`))));
      const copies: Buffer[] = [];
      const backing = new Set<ArrayBufferLike>();
      let held: { bytes: Buffer; copy: Buffer } | undefined;
      let intact = true;
      // Like BlobFile.write: the bytes of one call are used (written) only during the next call, and
      // slowly, so deflates of later pieces run meanwhile and would overwrite a buffer freed too early.
      const deflate = new ParallelDeflate(
        6,
        async (bytes) => {
          if (held && !held.bytes.equals(held.copy)) intact = false;
          held = { bytes, copy: Buffer.from(bytes) };
          copies.push(held.copy);
          backing.add(bytes.buffer);
          await new Promise((r) => setTimeout(r, 20));
        },
        inFlight,
      );
      for (let at = 0; at < data.length; at += GZIP_CHUNK) {
        const piece = deflate.buffer();
        data.copy(piece, 0, at, at + GZIP_CHUNK);
        await deflate.push(piece);
      }
      await deflate.end();
      if (held && !held.bytes.equals(held.copy)) intact = false;
      expect(intact).toBe(true);
      expect(gunzipSync(Buffer.concat(copies)).equals(data)).toBe(true);
      // pieces + 1 deflated (the last one empty) + header + trailer: a fresh buffer each would be pieces + 3.
      expect(copies.length).toBeGreaterThanOrEqual(pieces + 3);
      expect(backing.size).toBeLessThanOrEqual(inFlight + 4);
    });
  }

  it('orders entry paths by the bytes of their UTF-8, as tar --sort=name does', () => {
    // ASCII, Latin, the BMP above the surrogates (U+E000-U+FFFF), astral characters (surrogate
    // pairs), lone surrogates and prefixes: UTF-16 order differs from UTF-8 order for some pairs.
    const alphabet = ['a', 'b', '/', '.', '-', '\u00e9', '\u4e2d', '\ue000', '\uffee', '\u{1f600}', '\u{10000}', '\ud83d', '\ude00'];
    const words: string[] = [];
    for (let i = 0; i < 600; i++) {
      const n = 1 + (i % 5);
      words.push(Array.from({ length: n }, (_, j) => alphabet[(i * 7 + j * 13 + ((i * j) % 11)) % alphabet.length]).join(''));
    }
    const sign = (x: number) => Math.sign(x);
    let mixed = 0;
    for (const a of words)
      for (const b of words.slice(0, 80)) {
        expect(sign(compareEntryPaths(a, b)), `${JSON.stringify(a)} vs ${JSON.stringify(b)}`).toBe(sign(Buffer.compare(Buffer.from(a), Buffer.from(b))));
        if (sign(a < b ? -1 : a > b ? 1 : 0) !== sign(Buffer.compare(Buffer.from(a), Buffer.from(b)))) mixed++;
      }
    expect(mixed).toBeGreaterThan(0); // the sample holds pairs where plain string order is wrong
  });

  it('passes the source error through unchanged', async () => {
    const boom = new Error('connection reset');
    const src = new Readable({
      read() {
        this.destroy(boom);
      },
    });
    expect(await failure(decompress(src, 'gzip', 'x'))).toBe(boom);
  });

  it('decompressFile: reads a gzip file through its two reused buffers, byte for byte; cut is TRUNCATED, garbage INVALID_INPUT', async () => {
    const dir = tempDir();
    // 6 MiB of mostly random bytes: several 1 MiB reads, so both buffers are reused while the
    // decoder may still be behind (a buffer overwritten too early would change the output).
    const data = Buffer.concat([randomBytes(5 * 1024 * 1024), Buffer.alloc(1024 * 1024, 'text\n')]);
    writeFileSync(join(dir, 'l.gz'), gzipSync(data, { level: 1 }));
    for (let round = 0; round < 3; round++) expect((await readAll(decompressFile(join(dir, 'l.gz'), 'gzip', 'l'))).equals(data)).toBe(true);
    const gz = readFileSync(join(dir, 'l.gz'));
    writeFileSync(join(dir, 'cut.gz'), gz.subarray(0, gz.length - 5000));
    expect(isKbError(await failure(decompressFile(join(dir, 'cut.gz'), 'gzip', 'cut')), 'TRUNCATED')).toBe(true);
    writeFileSync(join(dir, 'bad.gz'), Buffer.concat([gz.subarray(0, 10), randomBytes(100_000)]));
    expect(isKbError(await failure(decompressFile(join(dir, 'bad.gz'), 'gzip', 'bad')), 'INVALID_INPUT')).toBe(true);
    expect(await failure(decompressFile(join(dir, 'missing.gz'), 'gzip', 'missing'))).toMatchObject({ code: 'ENOENT' });
    // Left early: the file is closed (no descriptor left open on it).
    const early = decompressFile(join(dir, 'l.gz'), 'gzip', 'l');
    for await (const c of early) if (c) break;
    await new Promise((r) => setTimeout(r, 50));
    const open = readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`) === join(dir, 'l.gz');
      } catch {
        return false;
      }
    });
    expect(open).toEqual([]);
  });

  it('OutputRecycler: a layer read through readTar, releasing as it goes, reuses the inflate buffers and reads every file intact', async () => {
    const dir = tempDir();
    // Files of 1 KB to 1.5 MB (some inline and spanning 256 KiB outputs, some streamed in pieces).
    const files = Array.from({ length: 60 }, (_, i) => ({ name: `f${i}`, content: randomBytes(1000 + ((i * 97_531) % 1_500_000)) }));
    writeFileSync(join(dir, 'l.gz'), gzipSync(await craftTar(files.map((f) => ({ name: f.name, type: 'file' as const, content: f.content }))), { level: 1 }));
    const recycler = new OutputRecycler();
    const chunks = Object.assign(chunksOf(decompressFile(join(dir, 'l.gz'), 'gzip', 'l', recycler), 2 * 1024 * 1024), { release: (c: Buffer) => recycler.release(c) });
    const seen = new Map<string, string>();
    for await (const e of readTar(chunks, 'l')) {
      const hash = createHash('sha256');
      if (e.data) hash.update(e.data);
      else for await (const piece of e.chunks) hash.update(piece); // used before the next step
      seen.set(e.header.name, hash.digest('hex'));
    }
    expect(seen).toEqual(new Map(files.map((f) => [f.name, createHash('sha256').update(f.content).digest('hex')])));
    expect(recycler.reused).toBeGreaterThan(50); // of ~180 outputs
  });

  it('OutputRecycler leaves a stream that is not a Node zlib stream as it is', async () => {
    const recycler = new OutputRecycler();
    const pass = new PassThrough();
    recycler.attach(pass);
    expect(Object.getOwnPropertyDescriptor(pass, '_outBuffer')).toBeUndefined();
    pass.end(Buffer.from('x'));
    expect((await readAll(pass)).toString()).toBe('x');
  });
});

describe('layer tar', () => {
  const entries = (): LayerEntry[] => {
    const big = Buffer.alloc(200_000, 'z');
    return [
      { type: 'directory', path: 'usr', mode: 0o755 },
      { type: 'directory', path: 'usr/bin', mode: 0o755 },
      { type: 'file', path: 'usr/bin/tool', mode: 0o755, size: big.length, open: () => Readable.from([big]) },
      { type: 'symlink', path: 'usr/bin/t', target: 'tool' },
    ];
  };
  const opts = { mtime: new Date(0), uid: 0, gid: 0, level: 6 };

  for (const compression of ['gzip', 'zstd'] as const) {
    it(`${compression}: writes reproducibly, the digests match the bytes, and readTar gives the entries back`, async () => {
      const dir = tempDir();
      const a = await writeLayer(entries(), join(dir, 'a'), { ...opts, compression, level: compression === 'gzip' ? 6 : 3 });
      const b = await writeLayer(entries(), join(dir, 'b'), { ...opts, compression, level: compression === 'gzip' ? 6 : 3 });
      expect(a.digest).toBe(b.digest);
      expect(a.mediaType).toBe(mediaTypeOfCodec(compression));
      expect(a.digest).toBe(
        `sha256:${createHash('sha256')
          .update(readFileSync(join(dir, 'a')))
          .digest('hex')}`,
      );
      // The diff_id is the sha256 of the tar the real decompressor produces.
      expect(a.diffId).toBe(`sha256:${mustRun('sh', ['-c', `${compression} -dc < "$1" | sha256sum`, 'sh', join(dir, 'a')]).split(' ')[0]}`);
      const seen: string[] = [];
      for await (const { header, chunks } of readTar(decompress(createReadStream(join(dir, 'a')), a.mediaType, 'layer'), 'layer', 64 * 1024)) {
        const content = await readAll(chunks);
        seen.push(`${header.type} ${header.name} ${(header.mode ?? 0).toString(8)} ${content.length} ${header.linkname ?? ''}`.trim());
      }
      expect(seen).toEqual(['directory usr/ 755 0', 'directory usr/bin/ 755 0', 'file usr/bin/tool 755 200000', 'symlink usr/bin/t 777 0 tool']);
    });
  }

  it('a tar cut inside an entry is TRUNCATED, garbage is INVALID_INPUT', async () => {
    const dir = tempDir();
    const layer = await writeLayer(entries(), join(dir, 'l'), { ...opts, compression: 'gzip' });
    const tar = await readAll(decompress(createReadStream(join(dir, 'l')), layer.mediaType, 'l'));
    const drain = async (src: Readable) => {
      try {
        for await (const entry of readTar(src, 'layer 1')) void entry;
        return undefined;
      } catch (e) {
        return e;
      }
    };
    for (const keep of [600, 1536 + 100_000, 300]) {
      const e = await drain(Readable.from([tar.subarray(0, keep)]));
      expect(isKbError(e, 'TRUNCATED'), `kept ${keep}: ${String(e)}`).toBe(true);
    }
    const bad = await drain(Readable.from([randomBytes(2048)]));
    expect(isKbError(bad, 'INVALID_INPUT'), String(bad)).toBe(true);
    expect(await drain(Readable.from([tar]))).toBeUndefined();
    // A source failing as soon as the reader has started, before any byte was parsed: that error,
    // never an unhandled 'error' event.
    const reset = new Error('connection reset');
    const early = new PassThrough();
    const first = readTar(early, 'layer 1').next();
    early.emit('error', reset);
    await expect(first).rejects.toBe(reset);
  });
});
