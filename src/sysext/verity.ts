import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { UserError } from '../errors.js';

/**
 * dm-verity hash trees in the format `veritysetup format` writes (cryptsetup lib/verity, format
 * version 1): a 512-byte superblock padded to one hash block, then the hash levels, topmost first.
 * Every hash is sha256(salt || block). kbundle computes the tree itself so the salt and the
 * superblock UUID are derived from the seed: Debian's systemd-repart 252 picks both at random,
 * which makes the root hash (and so the whole image) different on every run.
 */

export const VERITY_BLOCK = 4096;
const DIGEST = 32;
const HASHES_PER_BLOCK_BITS = 7; // log2(4096 / 32)
const SUPERBLOCK_SIZE = 512;

export interface VerityParams {
  salt: Buffer;
  /** 16 bytes, stored in the superblock. */
  uuid: Buffer;
}

export interface VerityTree {
  rootHash: Buffer;
  /** The whole hash partition: superblock block + levels. */
  hashImage: Buffer;
  dataBlocks: number;
}

export interface VeritySuperblock {
  version: number;
  hashType: number;
  uuid: Buffer;
  algorithm: string;
  dataBlockSize: number;
  hashBlockSize: number;
  dataBlocks: bigint;
  salt: Buffer;
}

/** Number of levels and the block count of each (level 0 hashes the data blocks). */
function levelSizes(dataBlocks: number): number[] {
  let levels = 0;
  while (HASHES_PER_BLOCK_BITS * levels < 64 && BigInt(dataBlocks - 1) >> BigInt(HASHES_PER_BLOCK_BITS * levels) !== 0n) levels++;
  const sizes: number[] = [];
  for (let i = 0; i < levels; i++) {
    const shift = HASHES_PER_BLOCK_BITS * (i + 1);
    sizes.push(Number((BigInt(dataBlocks) + (1n << BigInt(shift)) - 1n) >> BigInt(shift)));
  }
  return sizes;
}

/** Size of the hash partition for `dataBytes` of data (superblock included). */
export function verityHashSize(dataBytes: number): number {
  const blocks = dataBytes / VERITY_BLOCK;
  return (1 + levelSizes(blocks).reduce((a, b) => a + b, 0)) * VERITY_BLOCK;
}

function encodeSuperblock(p: VerityParams, dataBlocks: number): Buffer {
  const sb = Buffer.alloc(VERITY_BLOCK);
  sb.write('verity\0\0', 0, 'latin1');
  sb.writeUInt32LE(1, 8); // version
  sb.writeUInt32LE(1, 12); // hash type (normal, salt first)
  p.uuid.copy(sb, 16, 0, 16);
  sb.write('sha256', 32, 'latin1');
  sb.writeUInt32LE(VERITY_BLOCK, 64);
  sb.writeUInt32LE(VERITY_BLOCK, 68);
  sb.writeBigUInt64LE(BigInt(dataBlocks), 72);
  sb.writeUInt16LE(p.salt.length, 80);
  p.salt.copy(sb, 88);
  return sb;
}

export function parseSuperblock(buf: Buffer, what: string): VeritySuperblock {
  if (buf.length < SUPERBLOCK_SIZE || buf.toString('latin1', 0, 8) !== 'verity\0\0') throw new UserError(`${what}: no dm-verity superblock`);
  const saltSize = buf.readUInt16LE(80);
  if (saltSize > 256) throw new UserError(`${what}: verity salt of ${saltSize} bytes is invalid`);
  return {
    version: buf.readUInt32LE(8),
    hashType: buf.readUInt32LE(12),
    uuid: Buffer.from(buf.subarray(16, 32)),
    algorithm: buf.toString('latin1', 32, 64).replace(/\0+$/, ''),
    dataBlockSize: buf.readUInt32LE(64),
    hashBlockSize: buf.readUInt32LE(68),
    dataBlocks: buf.readBigUInt64LE(72),
    salt: Buffer.from(buf.subarray(88, 88 + saltSize)),
  };
}

function hashBlock(salt: Buffer, block: Buffer, algorithm = 'sha256'): Buffer {
  return createHash(algorithm).update(salt).update(block).digest();
}

/**
 * Worker body: hash blocks [first, first+count) of a file region, each as H(salt || block);
 * posts back the concatenated digests. Runs in worker threads so the dominant cost of a verity
 * build, one sha256 pass over the whole file system, uses every core.
 */
const LEAF_WORKER = `
const { parentPort, workerData: w } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { openSync, readSync, closeSync } = require('node:fs');
const fd = openSync(w.path, 'r');
const salt = Buffer.from(w.salt);
const out = Buffer.alloc(w.count * w.digest);
const chunkBlocks = Math.max(1, Math.floor((4 * 1024 * 1024) / w.blockSize));
const buf = Buffer.allocUnsafe(chunkBlocks * w.blockSize);
try {
  for (let done = 0; done < w.count; ) {
    const n = Math.min(chunkBlocks, w.count - done);
    const len = n * w.blockSize;
    let got = 0;
    while (got < len) {
      const r = readSync(fd, buf, got, len - got, w.offset + (w.first + done) * w.blockSize + got);
      if (r === 0) throw new Error('short read at block ' + (w.first + done));
      got += r;
    }
    for (let i = 0; i < n; i++) {
      createHash(w.algorithm).update(salt).update(buf.subarray(i * w.blockSize, (i + 1) * w.blockSize)).digest().copy(out, (done + i) * w.digest);
    }
    done += n;
  }
} finally {
  closeSync(fd);
}
parentPort.postMessage(out, [out.buffer]);
`;

/** Level-0 digests of every data block, computed in parallel worker threads. */
async function leafHashes(path: string, offset: number, dataBlocks: number, salt: Buffer, blockSize: number, digest: number, algorithm: string): Promise<Buffer> {
  const workers = Math.max(1, Math.min(availableParallelism(), 8, Math.ceil(dataBlocks / 4096)));
  const per = Math.ceil(dataBlocks / workers);
  const parts = await Promise.all(
    Array.from({ length: workers }, (_, i) => {
      const first = i * per;
      const count = Math.max(0, Math.min(per, dataBlocks - first));
      if (count === 0) return Promise.resolve(Buffer.alloc(0));
      return new Promise<Buffer>((resolve, reject) => {
        const w = new Worker(LEAF_WORKER, { eval: true, execArgv: [], workerData: { path, offset, first, count, salt: Uint8Array.from(salt), blockSize, digest, algorithm } });
        w.once('message', (m: Uint8Array) => resolve(Buffer.from(m.buffer, m.byteOffset, m.byteLength)));
        w.once('error', (e) => reject(new UserError(`${path}: verity hashing failed: ${e.message}`)));
      });
    }),
  );
  return Buffer.concat(parts);
}

/** Lay level-0 digests into hash blocks, then build the upper levels; returns [levels bottom-first, root]. */
async function buildLevelsFrom(leaves: Buffer, dataBlocks: number, salt: Buffer, blockSize: number, digest: number, algorithm: string): Promise<{ levels: Buffer[]; root: Buffer }> {
  const perBlock = 1 << Math.floor(Math.log2(blockSize / digest));
  const sizes = levelSizes(dataBlocks);
  if (sizes.length === 0) return { levels: [], root: leaves.subarray(0, digest) };
  const levels = sizes.map((sz) => Buffer.alloc(sz * blockSize));
  for (let i = 0; i < dataBlocks; i++) leaves.copy(levels[0]!, Math.floor(i / perBlock) * blockSize + (i % perBlock) * digest, i * digest, (i + 1) * digest);
  for (let l = 1; l < levels.length; l++) {
    const below = levels[l - 1]!;
    for (let j = 0; j < sizes[l - 1]!; j++) {
      const h = hashBlock(salt, below.subarray(j * blockSize, (j + 1) * blockSize), algorithm);
      h.copy(levels[l]!, Math.floor(j / perBlock) * blockSize + (j % perBlock) * digest);
    }
  }
  const top = levels[levels.length - 1]!;
  return { levels, root: hashBlock(salt, top.subarray(0, blockSize), algorithm) };
}

/** Compute the verity hash partition for the data at `path` (size a multiple of 4096). */
export async function computeVerity(path: string, dataBytes: number, params: VerityParams, offset = 0): Promise<VerityTree> {
  if (dataBytes % VERITY_BLOCK !== 0 || dataBytes === 0) throw new Error(`verity data size ${dataBytes} is not a positive multiple of ${VERITY_BLOCK}`);
  const dataBlocks = dataBytes / VERITY_BLOCK;
  const leaves = await leafHashes(path, offset, dataBlocks, params.salt, VERITY_BLOCK, DIGEST, 'sha256');
  const { levels, root } = await buildLevelsFrom(leaves, dataBlocks, params.salt, VERITY_BLOCK, DIGEST, 'sha256');
  // On disk the topmost level comes first, right after the superblock block.
  const hashImage = Buffer.concat([encodeSuperblock(params, dataBlocks), ...[...levels].reverse()]);
  return { rootHash: root, hashImage, dataBlocks };
}

export interface VerityCheck {
  superblock: VeritySuperblock;
  /** Root hash recomputed from the data partition. */
  rootHash: Buffer;
  /** The stored hash tree equals the one recomputed from the data. */
  treeMatches: boolean;
}

/**
 * Recompute the tree of a data region (file offset + size) with the parameters of the superblock
 * found at `hashOffset`, and compare it with the stored levels: the userspace equivalent of
 * `veritysetup verify`, no device-mapper needed.
 */
export async function checkVerity(path: string, data: { offset: number; size: number }, hash: { offset: number; size: number }, what: string): Promise<VerityCheck> {
  const head = Buffer.alloc(SUPERBLOCK_SIZE);
  const fh = await open(path, 'r');
  let stored: Buffer;
  try {
    await fh.read(head, 0, SUPERBLOCK_SIZE, hash.offset);
    const sb = parseSuperblock(head, what);
    if (sb.version !== 1 || sb.hashType !== 1) throw new UserError(`${what}: verity format version ${sb.version}/hash type ${sb.hashType} is not supported (only 1/1)`);
    if (!['sha256', 'sha512', 'sha1'].includes(sb.algorithm)) throw new UserError(`${what}: verity hash "${sb.algorithm}" is not supported`);
    const dataBytes = Number(sb.dataBlocks) * sb.dataBlockSize;
    if (dataBytes > data.size) throw new UserError(`${what}: verity covers ${dataBytes} bytes, the data partition has ${data.size}`);
    if (sb.dataBlockSize !== sb.hashBlockSize) throw new UserError(`${what}: different data (${sb.dataBlockSize}) and hash (${sb.hashBlockSize}) block sizes are not supported`);
    const digest = createHash(sb.algorithm).digest().length;
    const dataBlocks = Number(sb.dataBlocks);
    const leaves = await leafHashes(path, data.offset, dataBlocks, sb.salt, sb.dataBlockSize, digest, sb.algorithm);
    const { levels, root } = await buildLevelsFrom(leaves, dataBlocks, sb.salt, sb.hashBlockSize, digest, sb.algorithm);
    const treeLen = levels.reduce((n, l) => n + l.length, 0);
    stored = Buffer.alloc(treeLen);
    if (treeLen + sb.hashBlockSize > hash.size) return { superblock: sb, rootHash: root, treeMatches: false };
    await fh.read(stored, 0, treeLen, hash.offset + sb.hashBlockSize);
    const expected = Buffer.concat([...levels].reverse());
    return { superblock: sb, rootHash: root, treeMatches: expected.equals(stored) };
  } finally {
    await fh.close();
  }
}
