/**
 * The hand-written tar reader (src/util/tar-reader.ts) against GNU tar's own archives (ustar,
 * GNU long names, PAX), read back the way tar-stream reads them; chunk boundaries anywhere;
 * hostile headers. And chunksOf (src/util/chunks.ts), the source it reads from.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { extract as tarExtract } from 'tar-stream';
import { afterAll, describe, expect, it } from 'vitest';
import { isKbError } from '../src/errors.js';
import { readTar, type TarEntry } from '../src/util/tar-reader.js';
import { chunksOf } from '../src/util/chunks.js';
import { extractFiles } from '../src/store/tar.js';
import { cleanupTempDirs, mustRun, tempDir } from './helpers/exec.js';
import { craftTar } from './helpers/craft-image.js';

afterAll(cleanupTempDirs);

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex').slice(0, 16);

/**
 * One line per entry, body by digest: what both readers must agree on. With `scribble`, the source
 * is releasable (chunks.ts ReleasableChunks) and overwrites every chunk the moment it is released,
 * as a recycled inflate buffer would be: a view the reader still needed would read garbage.
 */
async function listWithReader(tar: Buffer, pieces: number[] = [tar.length], inline?: number, scribble?: { released: number; chunks: number }): Promise<string[]> {
  const chunks: Buffer[] = [];
  for (let off = 0, i = 0; off < tar.length; i++) {
    const n = pieces[i % pieces.length]!;
    chunks.push(scribble ? Buffer.from(tar.subarray(off, off + n)) : tar.subarray(off, off + n));
    off += n;
  }
  const source = scribble
    ? Object.assign(Readable.from(chunks)[Symbol.asyncIterator]() as AsyncGenerator<Buffer>, {
        release(c: Buffer) {
          scribble.released++;
          c.fill(0xaa);
        },
      })
    : Readable.from(chunks);
  if (scribble) scribble.chunks = chunks.length;
  const out: string[] = [];
  for await (const e of readTar(source, 'test tar', inline)) out.push(describeEntry(e.header, await bodyOf(e, !!scribble)));
  return out;
}

/** A releasing source's pieces are valid until the next step: copied first then. */
async function bodyOf(e: TarEntry, copy = false): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of e.chunks) parts.push(copy ? Buffer.from(c) : c);
  return Buffer.concat(parts);
}

function describeEntry(h: { name: string; type: string | null; mode?: number; uid?: number; gid?: number; mtime?: Date; linkname?: string | null; uname?: string }, body: Buffer): string {
  return [h.type, h.name, (h.mode ?? 0).toString(8), h.uid, h.gid, h.mtime?.getTime(), h.linkname ?? '-', h.uname, body.length, sha(body)].join(' ');
}

async function listWithTarStream(tar: Buffer): Promise<string[]> {
  const out: string[] = [];
  const ex = tarExtract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('entry', (h, stream, next) => {
      const parts: Buffer[] = [];
      stream.on('data', (c: unknown) => parts.push(c as Buffer));
      stream.on('end', () => {
        out.push(describeEntry(h, Buffer.concat(parts)));
        next();
      });
    });
    ex.on('finish', resolve);
    ex.on('error', reject);
  });
  ex.end(tar);
  await done;
  return out;
}

function gnuTar(format: string): Buffer {
  const dir = tempDir();
  const src = join(dir, 'src');
  const deep = join(src, 'a'.repeat(60), 'b'.repeat(60), 'c'.repeat(60));
  mkdirSync(deep, { recursive: true });
  writeFileSync(join(deep, `${'long-name-'.repeat(12)}.txt`), 'deep\n');
  writeFileSync(join(src, 'empty'), '');
  writeFileSync(join(src, 'big.bin'), Buffer.alloc(300_000, 'xyz'));
  writeFileSync(join(src, 'grüße.txt'), 'non-ASCII name\n');
  symlinkSync(`../${'t'.repeat(120)}`, join(src, 'long-link'));
  symlinkSync('empty', join(src, 'short-link'));
  mustRun('ln', [join(src, 'empty'), join(src, 'hard')]);
  const out = join(dir, `${format}.tar`);
  mustRun('tar', [`--format=${format}`, '--sort=name', '--mtime=@1700000000', '--owner=0', '--group=0', '--numeric-owner', '-C', src, '-cf', out, '.']);
  return readFileSync(out);
}

describe('readTar', () => {
  for (const format of ['gnu', 'pax', 'ustar'] as const) {
    it(`reads GNU tar's ${format} archives as tar-stream does, whatever the chunk boundaries`, async () => {
      // ustar cannot hold the long symlink target: GNU tar leaves that entry out (and says so).
      const tar = format === 'ustar' ? ustarWithoutLongLink() : gnuTar(format);
      const expected = await listWithTarStream(tar);
      expect(expected.length).toBeGreaterThanOrEqual(format === 'ustar' ? 7 : 10);
      expect(await listWithReader(tar)).toEqual(expected);
      for (const pieces of [[97], [7, 505], [511], [513], [4096, 3]]) expect(await listWithReader(tar, pieces), `pieces ${pieces.join(',')}`).toEqual(expected);
      // A small inline limit streams the big file in pieces instead: same entries.
      expect(await listWithReader(tar, [1000], 1024)).toEqual(expected);
      // A source that reuses each chunk once released: every view was used (or copied) before.
      for (const [pieces, inline] of [[[97]], [[7, 505]], [[513]], [[1000], 1024]] as [number[], number?][]) {
        const scribble = { released: 0, chunks: 0 };
        expect(await listWithReader(tar, pieces, inline, scribble), `pieces ${pieces.join(',')}, releasing`).toEqual(expected);
        expect(scribble.released).toBeGreaterThanOrEqual(scribble.chunks - 2);
      }
    });
  }

  function ustarWithoutLongLink(): Buffer {
    const dir = tempDir();
    const src = join(dir, 'src');
    mkdirSync(join(src, 'p'.repeat(90), 'q'.repeat(40)), { recursive: true });
    writeFileSync(join(src, 'p'.repeat(90), 'q'.repeat(40), 'file-in-prefix.txt'), 'prefix\n');
    writeFileSync(join(src, 'plain'), 'x'.repeat(1000));
    symlinkSync('plain', join(src, 'link'));
    mustRun('ln', [join(src, 'plain'), join(src, 'hard')]);
    const out = join(dir, 'u.tar');
    mustRun('tar', ['--format=ustar', '--sort=name', '--mtime=@1700000000', '--owner=0', '--group=0', '--numeric-owner', '-C', src, '-cf', out, '.']);
    return readFileSync(out);
  }

  it('takes names from PAX records and keeps every record in header.pax', async () => {
    const tar = await craftTar([
      { name: 'x', type: 'file', content: 'one', pax: { comment: 'per entry', 'SCHILY.xattr.user.k': 'v' } },
      { name: `${'d'.repeat(160)}/f`, type: 'file', content: 'deep' },
    ]);
    const entries: TarEntry['header'][] = [];
    for await (const e of readTar(Readable.from([tar]), 't')) entries.push(e.header);
    expect(entries.map((h) => h.name)).toEqual(['x', `${'d'.repeat(160)}/f`]);
    expect(entries[0]!.pax).toMatchObject({ comment: 'per entry', 'SCHILY.xattr.user.k': 'v' });
    expect(entries[1]!.pax?.path).toBe(`${'d'.repeat(160)}/f`);
  });

  it('treats links, symlinks, devices and folders as bodiless whatever their size field says (as Go does)', async () => {
    const file = await craftTar([{ name: 'after', type: 'file', content: 'after' }]);
    const link = Buffer.from((await craftTar([{ name: 'l', type: 'symlink', linkname: 'after' }])).subarray(0, 512));
    setSize(link, 512); // a hostile size: the next block must still be read as a header
    const seen: string[] = [];
    for await (const e of readTar(Readable.from([Buffer.concat([link, file])]), 't')) seen.push(`${e.header.type} ${e.header.name} ${e.header.size}`);
    expect(seen).toEqual(['symlink l 0', 'file after 5']);
  });

  it('refuses bad checksums, unknown formats, oversized or malformed PAX records; a cut archive is TRUNCATED', async () => {
    const tar = await craftTar([
      { name: 'a', type: 'file', content: 'a'.repeat(700) },
      { name: 'b', type: 'file', content: 'b', pax: { comment: 'c' } },
    ]);
    const drain = async (b: Buffer) => {
      try {
        for await (const e of readTar(Readable.from([b]), 't')) void e;
      } catch (e) {
        return e;
      }
      return undefined;
    };
    const flipped = Buffer.from(tar);
    flipped[10] = flipped[10]! ^ 1;
    expect(isKbError(await drain(flipped), 'INVALID_INPUT')).toBe(true);
    const v7 = Buffer.from(tar);
    v7.fill(0, 257, 265);
    fixChecksum(v7);
    expect(isKbError(await drain(v7), 'INVALID_INPUT')).toBe(true);
    const hugePax = Buffer.from(tar.subarray(1536, 2048)); // the PAX header of "b"
    setSize(hugePax, 2 * 1024 * 1024);
    expect(String(await drain(Buffer.concat([hugePax, Buffer.alloc(4096)])))).toMatch(/x header of 2097152 bytes/);
    const badSize = await craftTar([{ name: 'n', type: 'file', content: 'n', pax: { size: 'lots' } }]);
    expect(String(await drain(badSize))).toMatch(/bad size/);
    const badRecord = await craftTar([{ name: 'n', type: 'file', content: 'n', pax: { comment: 'c' } }]);
    expect(badRecord.toString('latin1', 512, 521)).toBe('9 path=n\n');
    badRecord.write('8', 512, 'latin1'); // the record's length no longer ends at its newline
    expect(isKbError(await drain(badRecord), 'INVALID_INPUT')).toBe(true);
    for (const keep of [100, 600, 1300, 1600, 2100, 2600, 3100]) expect(isKbError(await drain(tar.subarray(0, keep)), 'TRUNCATED'), `kept ${keep}`).toBe(true);
    expect(await drain(tar)).toBeUndefined();
    expect(await drain(tar.subarray(0, 3584))).toBeUndefined(); // ends right after the last entry, without the end blocks: fine
  });

  it('skips a body left unread, and refuses to read one after the next entry was asked for', async () => {
    const tar = await craftTar([
      { name: 'big', type: 'file', content: Buffer.alloc(5000, 1) },
      { name: 'next', type: 'file', content: 'next' },
    ]);
    const it1 = readTar(Readable.from([tar]), 't', 100);
    const first = (await it1.next()).value as TarEntry;
    expect(first.data).toBeUndefined();
    const second = (await it1.next()).value as TarEntry;
    expect(second.header.name).toBe('next');
    expect(second.data?.toString()).toBe('next');
    await expect(bodyOf(first)).rejects.toThrow(/after the next entry/);
  });

  it('stops reading its source when the loop is left early', async () => {
    const tar = await craftTar([
      { name: 'a', type: 'file', content: 'a' },
      { name: 'b', type: 'file', content: 'b' },
    ]);
    const src = new PassThrough();
    src.write(tar);
    for await (const e of readTar(src, 't')) if (e.header.name === 'a') break;
    expect(src.destroyed).toBe(true);
  });
});

describe('chunksOf', () => {
  it('hands over the pushed chunks themselves, reads at most `ahead` ahead, and destroys the source when left', async () => {
    const pushed = Array.from({ length: 40 }, (_, i) => Buffer.alloc(1000, i));
    let i = 0;
    const src = new Readable({
      read() {
        this.push(i < pushed.length ? pushed[i++] : null);
      },
      highWaterMark: 1,
    });
    const got: Buffer[] = [];
    for await (const c of chunksOf(src, 5000)) {
      got.push(c);
      // Never more than `ahead` plus the stream's own one-chunk buffer read beyond what was taken.
      expect(i - got.length).toBeLessThanOrEqual(5 + 2);
      if (got.length === 30) break;
    }
    expect(got.every((c, k) => c === pushed[k])).toBe(true);
    expect(src.destroyed).toBe(true);
  });

  it('listens at once: an error before the first step is thrown there, not an unhandled event', async () => {
    const early = new PassThrough();
    const chunks = chunksOf(early, 100);
    early.destroy(new Error('reset before reading'));
    await new Promise((r) => setImmediate(r));
    await expect(chunks.next()).rejects.toThrow('reset before reading');
    const tarSource = new PassThrough();
    const tar = readTar(tarSource, 't');
    tarSource.destroy(new Error('reset under the tar reader'));
    await new Promise((r) => setImmediate(r));
    await expect(tar.next()).rejects.toThrow('reset under the tar reader');
  });

  it('throws the source’s error, and a stream destroyed without one is not a clean end', async () => {
    const failing = new PassThrough();
    const first = chunksOf(failing, 100).next();
    failing.destroy(new Error('reset'));
    await expect(first).rejects.toThrow('reset');
    const closed = new PassThrough();
    const next = chunksOf(closed, 100).next();
    closed.destroy();
    await expect(next).rejects.toThrow(/closed before its end/);
  });
});

function setSize(block: Buffer, size: number): void {
  block.write(`${size.toString(8).padStart(11, '0')} `, 124, 'latin1');
  fixChecksum(block);
}

function fixChecksum(block: Buffer): void {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (let k = 0; k < 512; k++) sum += block[k]!;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
}

describe('extractFiles (the archive transports unpack through readTar)', () => {
  it('writes regular files whole, skips the rest, refuses names leaving the folder, and reports a cut archive', async () => {
    const dir = tempDir();
    const big = Buffer.alloc(1_500_000, 'big ');
    const link = Buffer.from((await craftTar([{ name: 'l', type: 'symlink', linkname: 'x' }])).subarray(0, 512));
    setSize(link, 512); // swallows nothing: the next block is still read as a header
    const good = Buffer.concat([
      link,
      await craftTar([
        { name: 'blobs/sha256/aa', type: 'file', content: big },
        { name: 'index.json', type: 'file', content: '{}' },
      ]),
    ]);
    writeFileSync(join(dir, 'good.tar'), good);
    await extractFiles(join(dir, 'good.tar'), join(dir, 'out'), 'good.tar');
    expect(readFileSync(join(dir, 'out/blobs/sha256/aa')).equals(big)).toBe(true);
    expect(readFileSync(join(dir, 'out/index.json'), 'utf8')).toBe('{}');
    expect(readdirSync(join(dir, 'out')).sort()).toEqual(['blobs', 'index.json']);
    for (const name of ['../escape', '/etc/escape', 'a/../../escape']) {
      writeFileSync(join(dir, 'bad.tar'), await craftTar([{ name, type: 'file', content: 'x' }]));
      await expect(extractFiles(join(dir, 'bad.tar'), join(dir, 'out2'), 'bad.tar')).rejects.toThrow(/points outside the archive/);
    }
    expect(existsSync(join(dir, 'escape'))).toBe(false);
    writeFileSync(join(dir, 'cut.tar'), good.subarray(0, 512 + 512 + 700_000));
    await expect(extractFiles(join(dir, 'cut.tar'), join(dir, 'out3'), 'cut.tar')).rejects.toMatchObject({ code: 'TRUNCATED' });
    await expect(extractFiles(join(dir, 'missing.tar'), join(dir, 'out4'), 'missing.tar')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});
