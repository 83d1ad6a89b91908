/**
 * Issue 16, class 6 (GPT part): sysext images are hostile. A GPT whose header or entry array lies
 * (an entry count of 2^31, entry sizes of 0 or 1, bad checksums, arrays and partitions past the
 * end of the file, a verity superblock claiming 2^63 blocks) is refused with a clean error naming
 * the image — never a RangeError, a huge allocation or an internal error — and nothing is installed.
 * The images are crafted here byte by byte (checksums with zlib's crc32, not kbundle's).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../../src/cli/exit-codes.js';
import { kbundle, type CliResult } from '../helpers/cli.js';
import { cleanupTempDirs, mustRun, tempDir } from '../helpers/exec.js';
import { snapshotTree } from '../helpers/tree.js';

afterAll(cleanupTempDirs);

const SECTOR = 512;
const ROOT_X86_64 = '4f68bce3-e8cd-4db1-96e7-fbcaf984b709';
const ROOT_X86_64_VERITY = '2c7357ed-ebd2-46d9-aec1-23d437ec2bf5';

function guid(uuid: string): Buffer {
  const h = Buffer.from(uuid.replace(/-/g, ''), 'hex');
  return Buffer.concat([Buffer.from(h.subarray(0, 4)).reverse(), Buffer.from(h.subarray(4, 6)).reverse(), Buffer.from(h.subarray(6, 8)).reverse(), h.subarray(8, 16)]);
}

interface Part {
  type: string;
  first: bigint;
  last: bigint;
}

interface Craft {
  /** Image size in sectors (default 4096: 2 MiB). */
  sectors?: number;
  revision?: number;
  headerSize?: number;
  myLba?: bigint;
  firstUsable?: bigint;
  lastUsable?: bigint;
  entriesLba?: bigint;
  count?: number;
  entrySize?: number;
  parts?: Part[];
  badHeaderCrc?: boolean;
  badEntriesCrc?: boolean;
  /** Bytes written at a byte offset after the table (e.g. a verity superblock). */
  extra?: { offset: number; data: Buffer }[];
}

/** A primary GPT at LBA 1 as systemd-repart writes one, with whatever lies `c` asks for. */
function gptImage(c: Craft = {}): Buffer {
  const sectors = c.sectors ?? 4096;
  const img = Buffer.alloc(sectors * SECTOR);
  const count = c.count ?? 128;
  const entrySize = c.entrySize ?? 128;
  const realSize = Math.min(count * Math.max(entrySize, 128), 128 * 128);
  const entries = Buffer.alloc(realSize);
  (c.parts ?? []).forEach((p, i) => {
    const e = entries.subarray(i * 128, (i + 1) * 128);
    guid(p.type).copy(e, 0);
    randomBytes(16).copy(e, 16);
    e.writeBigUInt64LE(p.first, 32);
    e.writeBigUInt64LE(p.last, 40);
    e.write('part', 56, 'utf16le');
  });
  const entriesLba = c.entriesLba ?? 2n;
  if (entriesLba * BigInt(SECTOR) + BigInt(realSize) <= BigInt(img.length)) entries.copy(img, Number(entriesLba) * SECTOR);
  const h = Buffer.alloc(SECTOR);
  h.write('EFI PART', 0, 'latin1');
  h.writeUInt32LE(c.revision ?? 0x00010000, 8);
  const headerSize = c.headerSize ?? 92;
  h.writeUInt32LE(headerSize, 12);
  h.writeBigUInt64LE(c.myLba ?? 1n, 24);
  h.writeBigUInt64LE(BigInt(sectors - 1), 32);
  h.writeBigUInt64LE(c.firstUsable ?? 34n, 40);
  h.writeBigUInt64LE(c.lastUsable ?? BigInt(sectors - 34), 48);
  randomBytes(16).copy(h, 56);
  h.writeBigUInt64LE(entriesLba, 72);
  h.writeUInt32LE(count, 80);
  h.writeUInt32LE(entrySize, 84);
  h.writeUInt32LE(c.badEntriesCrc ? (crc32(entries) ^ 1) >>> 0 : crc32(entries.subarray(0, Math.min(realSize, count * entrySize))), 88);
  h.writeUInt32LE(0, 16);
  const crc = crc32(h.subarray(0, Math.min(headerSize, SECTOR)));
  h.writeUInt32LE(c.badHeaderCrc ? (crc ^ 1) >>> 0 : crc, 16);
  h.copy(img, SECTOR);
  for (const x of c.extra ?? []) x.data.copy(img, x.offset);
  return img;
}

/** A dm-verity superblock (veritysetup format v1) with the given fields. */
function veritySuperblock(f: { dataBlockSize: number; hashBlockSize: number; dataBlocks: bigint; algorithm?: string }): Buffer {
  const sb = Buffer.alloc(512);
  sb.write('verity\0\0', 0, 'latin1');
  sb.writeUInt32LE(1, 8);
  sb.writeUInt32LE(1, 12);
  sb.write(f.algorithm ?? 'sha256', 32, 'latin1');
  sb.writeUInt32LE(f.dataBlockSize, 64);
  sb.writeUInt32LE(f.hashBlockSize, 68);
  sb.writeBigUInt64LE(f.dataBlocks, 72);
  sb.writeUInt16LE(32, 80);
  return sb;
}

function place(image: Buffer): { dir: string; osr: string } {
  const dir = tempDir('kbundle-gpt-');
  writeFileSync(join(dir, 'img.raw'), image);
  const osr = join(dir, 'os-release');
  writeFileSync(osr, 'ID=debian\nVERSION_ID=12\n');
  return { dir, osr };
}

function check(image: Buffer): CliResult {
  const { dir, osr } = place(image);
  return kbundle(['sysext', 'check', 'img.raw', '--os-release', osr], { cwd: dir, timeoutMs: 60_000 });
}

function expectRefused(r: CliResult, line: string | RegExp): void {
  if (typeof line === 'string') expect(r.stderr).toContain(`kbundle: error: ${line}\n`);
  else expect(r.stderr).toMatch(line);
  expect(r.code, r.stderr).toBe(EXIT_CODES.INVALID_INPUT);
  expect(r.stderr).not.toMatch(/internal error|RangeError|\n\s+at /);
}

const twoParts: Part[] = [
  { type: ROOT_X86_64, first: 2048n, last: 2048n + 1023n },
  { type: ROOT_X86_64_VERITY, first: 3072n, last: 3072n + 7n },
];

describe('GPT garbage is refused with a clean error naming the image', () => {
  const cases: [string, () => Buffer, string | RegExp][] = [
    ['random bytes', () => randomBytes(2 * 1024 * 1024), 'img.raw: neither a GPT disk image nor a squashfs/erofs file system'],
    [
      'random bytes after the GPT signature',
      () => Buffer.concat([Buffer.alloc(SECTOR), Buffer.from('EFI PART'), randomBytes(2 * 1024 * 1024)]),
      /^kbundle: error: img\.raw: GPT header (size \d+ is invalid \(92 to 512 bytes\)|checksum mismatch)\n/m,
    ],
    ['a header size of 0', () => gptImage({ headerSize: 0 }), 'img.raw: GPT header size 0 is invalid (92 to 512 bytes)'],
    ['a bad header checksum', () => gptImage({ badHeaderCrc: true }), 'img.raw: GPT header checksum mismatch'],
    ['a revision other than 1.0', () => gptImage({ revision: 0x00020000 }), 'img.raw: GPT header revision 0x00020000 is not 1.0'],
    ['a header that places itself elsewhere', () => gptImage({ myLba: 7n }), 'img.raw: GPT header at LBA 1 says it is at LBA 7'],
    ['an entry count of 2^31', () => gptImage({ count: 2 ** 31 }), 'img.raw: GPT partition entry count 2147483648 is over the limit of 4096'],
    ['an entry size of 0', () => gptImage({ entrySize: 0 }), 'img.raw: GPT partition entry size 0 is invalid (128 × 2^n bytes, at most 4096)'],
    ['an entry size of 1', () => gptImage({ entrySize: 1 }), 'img.raw: GPT partition entry size 1 is invalid (128 × 2^n bytes, at most 4096)'],
    ['an entry size of 2^32-1', () => gptImage({ entrySize: 0xffffffff }), 'img.raw: GPT partition entry size 4294967295 is invalid (128 × 2^n bytes, at most 4096)'],
    ['a bad entry array checksum', () => gptImage({ parts: twoParts, badEntriesCrc: true }), 'img.raw: GPT partition entry array checksum mismatch'],
    ['an entry array past the end of the file', () => gptImage({ entriesLba: 1n << 40n }), 'img.raw: GPT partition entry array (LBA 1099511627776, 16384 bytes) lies outside the image (4096 sectors)'],
    [
      'an entry array at an LBA past 2^63',
      () => gptImage({ entriesLba: (1n << 64n) - 1n }),
      'img.raw: GPT partition entry array (LBA 18446744073709551615, 16384 bytes) lies outside the image (4096 sectors)',
    ],
    ['an entry array inside the usable area', () => gptImage({ entriesLba: 100n }), 'img.raw: GPT partition entry array (LBA 100, 16384 bytes) overlaps the usable area (LBA 34-4062)'],
    ['a usable area past the end of the file', () => gptImage({ lastUsable: 1n << 50n }), 'img.raw: GPT usable area (LBA 34-1125899906842624) lies outside the image (4096 sectors)'],
    ['a usable area that ends before it starts', () => gptImage({ firstUsable: 4000n, lastUsable: 100n }), 'img.raw: GPT usable area (LBA 4000-100) is empty'],
    [
      'a partition past the end of the file',
      () => gptImage({ parts: [{ type: ROOT_X86_64, first: 2048n, last: 1n << 62n }] }),
      'img.raw: GPT partition 1 (LBA 2048-4611686018427387904) lies outside the usable area (LBA 34-4062)',
    ],
    ['a partition that ends before it starts', () => gptImage({ parts: [{ type: ROOT_X86_64, first: 3000n, last: 2048n }] }), 'img.raw: GPT partition 1 (LBA 3000-2048) ends before it starts'],
    [
      'overlapping partitions',
      () =>
        gptImage({
          parts: [
            { type: ROOT_X86_64, first: 2048n, last: 3071n },
            { type: ROOT_X86_64_VERITY, first: 3000n, last: 3100n },
          ],
        }),
      'img.raw: GPT partitions 1 (LBA 2048-3071) and 2 (LBA 3000-3100) overlap',
    ],
    [
      'a verity superblock claiming 2^63 blocks of 0 bytes',
      () => gptImage({ parts: twoParts, extra: [{ offset: 3072 * SECTOR, data: veritySuperblock({ dataBlockSize: 0, hashBlockSize: 0, dataBlocks: 1n << 63n }) }] }),
      'img.raw: root-x86-64-verity: verity block size 0 is invalid (a power of two from 512 to 65536)',
    ],
    [
      'a verity superblock claiming more blocks than the data partition has',
      () => gptImage({ parts: twoParts, extra: [{ offset: 3072 * SECTOR, data: veritySuperblock({ dataBlockSize: 4096, hashBlockSize: 4096, dataBlocks: (1n << 64n) - 1n }) }] }),
      'img.raw: root-x86-64-verity: verity covers 18446744073709551615 blocks of 4096 bytes, the data partition has 524288 bytes',
    ],
  ];
  for (const [name, make, line] of cases) {
    it(name, () => expectRefused(check(make()), line));
  }

  it('a valid crafted table reads (the crafting is right, so the refusals above are for the lie alone)', () => {
    const r = check(gptImage({ parts: twoParts, extra: [{ offset: 3072 * SECTOR, data: veritySuperblock({ dataBlockSize: 4096, hashBlockSize: 4096, dataBlocks: 128n }) }] }));
    // Past the GPT and the verity superblock: the zero-filled data partition holds no file system.
    expectRefused(r, 'img.raw: neither a GPT disk image nor a squashfs/erofs file system');
  });

  it('a release file too large to be one is refused without reading it all (unsquashfs is stopped at the cap)', () => {
    const dir = tempDir('kbundle-gpt-');
    const rel = join(dir, 'tree/usr/lib/extension-release.d');
    mkdirSync(rel, { recursive: true });
    writeFileSync(join(rel, 'extension-release.img'), Buffer.alloc(8 * 1024 * 1024, 'ID=_any\n'));
    mustRun('mksquashfs', [join(dir, 'tree'), join(dir, 'img.raw'), '-quiet', '-no-progress', '-all-root']);
    writeFileSync(join(dir, 'os-release'), 'ID=debian\nVERSION_ID=12\n');
    const r = kbundle(['sysext', 'check', 'img.raw', '--os-release', join(dir, 'os-release')], { cwd: dir, timeoutMs: 60_000 });
    expectRefused(r, 'img.raw: usr/lib/extension-release.d/extension-release.img is larger than 65536 bytes');
  });

  it('sysext install of a hostile image installs nothing', () => {
    const { dir } = place(gptImage({ count: 2 ** 31 }));
    const root = join(dir, 'root');
    mkdirSync(join(root, 'etc'), { recursive: true });
    writeFileSync(join(root, 'etc/os-release'), 'ID=debian\nVERSION_ID=12\n');
    const before = snapshotTree(root, { content: true });
    const r = kbundle(['sysext', 'install', `file:${join(dir, 'img.raw')}`, '--root', root], { cwd: dir, timeoutMs: 60_000 });
    expectRefused(r, `file:${join(dir, 'img.raw')}: GPT partition entry count 2147483648 is over the limit of 4096`);
    // No file, no symlink, no temp litter (the store's folders are the install layer's to create).
    const files = (t: Record<string, string>) => Object.fromEntries(Object.entries(t).filter(([, v]) => v !== 'd'));
    expect(files(snapshotTree(root, { content: true }))).toEqual(files(before));
  });
});
