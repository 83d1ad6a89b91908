import * as crypto from 'node:crypto';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { open } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { KbError, UserError } from '../errors.js';

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
/** Block sizes dm-verity takes: powers of two up to the largest page size (64 KiB on arm64). */
const MIN_BLOCK = 512;
const MAX_BLOCK = 65536;

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

/** Number of levels and the block count of each (level 0 hashes the data blocks); `bits`: log2 of hashes per block. */
function levelSizes(dataBlocks: number, bits = HASHES_PER_BLOCK_BITS): number[] {
  let levels = 0;
  while (bits * levels < 64 && BigInt(dataBlocks - 1) >> BigInt(bits * levels) !== 0n) levels++;
  const sizes: number[] = [];
  for (let i = 0; i < levels; i++) {
    const shift = bits * (i + 1);
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
 * One leaf-hashing job, shared by every thread that works on it. Threads claim chunks of blocks
 * from `next` (an atomic counter) until none are left, so a thread on a busier core simply does
 * fewer chunks; each writes its digests straight into the shared `out` at the blocks' positions.
 */
interface LeafJobShared {
  path: string;
  offset: number;
  dataBlocks: number;
  salt: Uint8Array;
  blockSize: number;
  digest: number;
  algorithm: string;
  /** [0]: next chunk to claim; set to the chunk count (past the end) to make every thread stop. */
  next: Int32Array;
  /** dataBlocks × digest bytes (a SharedArrayBuffer when workers take part). */
  out: Uint8Array;
}

/** Blocks per claimed chunk: small enough that threads finish close together, one readv each. */
const CHUNK_BLOCKS = 512;

/**
 * Hash the blocks of every chunk this thread claims as H(salt || block). Runs on the calling
 * thread and, from its source text, in worker threads: self-contained, no imports.
 * Each slot of the buffer is salt || block, the exact input of one hash: readv fills the block
 * parts straight from the file, so a block costs one native hash call and no copying in JS.
 * Digests come back as latin1 strings: a short V8 string is cheaper to make than a Buffer, and at
 * ~38 000 calls per 150 MiB that per-call cost is a fifth of the whole pass.
 */
function hashLeafChunks(w: LeafJobShared, chunkBlocks: number, crypto: typeof import('node:crypto'), fs: typeof import('node:fs')): void {
  const fd = fs.openSync(w.path, 'r');
  const salt = Buffer.from(w.salt);
  const out = Buffer.from(w.out.buffer, w.out.byteOffset, w.out.byteLength);
  const slot = salt.length + w.blockSize;
  const buf = Buffer.alloc(chunkBlocks * slot);
  for (let i = 0; i < chunkBlocks; i++) salt.copy(buf, i * slot);
  const iov = Array.from({ length: chunkBlocks }, (_, i) => buf.subarray(i * slot + salt.length, (i + 1) * slot));
  const slots = Array.from({ length: chunkBlocks }, (_, i) => buf.subarray(i * slot, (i + 1) * slot));
  // 'binary' is Node's name for latin1: one byte per char. crypto.hash needs Node >= 20.12.
  const oneShot = crypto.hash as typeof crypto.hash | undefined;
  const digestOf = oneShot ? (b: Buffer) => oneShot(w.algorithm, b, 'binary') : (b: Buffer) => crypto.createHash(w.algorithm).update(b).digest('binary');
  const chunks = Math.ceil(w.dataBlocks / chunkBlocks);
  try {
    for (let c = Atomics.add(w.next, 0, 1); c < chunks; c = Atomics.add(w.next, 0, 1)) {
      const first = c * chunkBlocks;
      const n = Math.min(chunkBlocks, w.dataBlocks - first);
      const got = fs.readvSync(fd, n === chunkBlocks ? iov : iov.slice(0, n), w.offset + first * w.blockSize);
      if (got !== n * w.blockSize) throw new Error(`short read at block ${first}`);
      for (let i = 0; i < n; i++) out.write(digestOf(slots[i]!), (first + i) * w.digest, w.digest, 'latin1');
    }
  } catch (e) {
    Atomics.store(w.next, 0, chunks); // the job has failed: the other threads stop claiming
    throw e;
  } finally {
    fs.closeSync(fd);
  }
}

const LEAF_WORKER = `
const { parentPort } = require('node:worker_threads');
const crypto = require('node:crypto');
const fs = require('node:fs');
const hashLeafChunks = ${hashLeafChunks.toString()};
parentPort.once('message', ({ job, chunkBlocks }) => {
  try {
    hashLeafChunks(job, chunkBlocks, crypto, fs);
    parentPort.postMessage({ ok: true });
  } catch (e) {
    parentPort.postMessage({ ok: false, message: e.message });
  }
});
`;

interface LeafJob {
  path: string;
  offset: number;
  dataBlocks: number;
  salt: Buffer;
  blockSize: number;
  digest: number;
  algorithm: string;
}

/**
 * Leaf hashing on every core: the calling thread plus one worker thread per further core, all
 * claiming chunks of one job. Create it before the data exists (e.g. while mksquashfs runs): a
 * worker thread takes ~25 ms to boot, which would otherwise be added to the build.
 */
export class LeafHashers {
  /** Below this many blocks, messaging workers costs more than it saves. */
  static readonly MIN_SHARED_BLOCKS = 4096;
  private readonly workers: Worker[];
  private readonly exited = new Set<Worker>();
  private used = false;

  constructor(workers = Math.max(0, Math.min(availableParallelism(), 8) - 1)) {
    this.workers = Array.from({ length: workers }, () => {
      const w = new Worker(LEAF_WORKER, { eval: true, execArgv: [] });
      w.on('error', () => undefined); // reported through run(); an unused worker's error is moot
      w.once('exit', () => this.exited.add(w)); // a worker that died idle gets no share
      return w;
    });
  }

  /**
   * Level-0 digests of every data block. `beforeHashing` runs once the workers have their job and
   * before this thread starts hashing (and so blocks its event loop): the place to start a child
   * process that should run alongside.
   */
  async run(job: LeafJob, beforeHashing?: () => void): Promise<Buffer> {
    if (this.used) throw new Error('LeafHashers: already used');
    this.used = true;
    try {
      const helpers = job.dataBlocks < LeafHashers.MIN_SHARED_BLOCKS ? [] : this.workers.filter((w) => !this.exited.has(w));
      const outBytes = job.dataBlocks * job.digest;
      const shared: LeafJobShared = {
        ...job,
        salt: Uint8Array.from(job.salt),
        next: new Int32Array(helpers.length ? new SharedArrayBuffer(4) : new ArrayBuffer(4)),
        out: new Uint8Array(helpers.length ? new SharedArrayBuffer(outBytes) : new ArrayBuffer(outBytes)),
      };
      const failed = (message: string) => new UserError(`${job.path}: verity hashing failed: ${message}`);
      const pending = helpers.map(
        (w) =>
          new Promise<void>((resolve, reject) => {
            w.once('message', (m: { ok: boolean; message?: string }) => (m.ok ? resolve() : reject(failed(m.message ?? 'unknown error'))));
            w.once('error', (e) => reject(failed(e.message)));
            w.once('exit', (code) => reject(new UserError(`${job.path}: verity hashing stopped (worker exit ${code})`)));
            w.postMessage({ job: shared, chunkBlocks: CHUNK_BLOCKS });
          }),
      );
      try {
        beforeHashing?.();
      } catch (e) {
        Atomics.store(shared.next, 0, Math.ceil(job.dataBlocks / CHUNK_BLOCKS)); // nothing left to claim
        await Promise.allSettled(pending);
        throw e;
      }
      try {
        hashLeafChunks(shared, CHUNK_BLOCKS, crypto, fs);
      } catch (e) {
        await Promise.allSettled(pending);
        throw failed((e as Error).message);
      }
      await Promise.all(pending);
      return Buffer.from(shared.out.buffer);
    } finally {
      await this.close();
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/** Lay level-0 digests into hash blocks, then build the upper levels; returns [levels bottom-first, root]. */
function buildLevelsFrom(leaves: Buffer, dataBlocks: number, salt: Buffer, blockSize: number, digest: number, algorithm: string): { levels: Buffer[]; root: Buffer } {
  const bits = Math.floor(Math.log2(blockSize / digest));
  const perBlock = 1 << bits;
  const sizes = levelSizes(dataBlocks, bits);
  if (sizes.length === 0) return { levels: [], root: leaves.subarray(0, digest) };
  const levels = sizes.map((sz) => Buffer.alloc(sz * blockSize));
  if (perBlock * digest === blockSize)
    leaves.copy(levels[0]!); // digests fill blocks exactly (sha256, 4K): the leaves are level 0
  else for (let i = 0; i < dataBlocks; i++) leaves.copy(levels[0]!, Math.floor(i / perBlock) * blockSize + (i % perBlock) * digest, i * digest, (i + 1) * digest);
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
export async function computeVerity(path: string, dataBytes: number, params: VerityParams, offset = 0, hashers = new LeafHashers(), beforeHashing?: () => void): Promise<VerityTree> {
  if (dataBytes % VERITY_BLOCK !== 0 || dataBytes === 0) {
    await hashers.close();
    throw new Error(`verity data size ${dataBytes} is not a positive multiple of ${VERITY_BLOCK}`);
  }
  const dataBlocks = dataBytes / VERITY_BLOCK;
  const leaves = await hashers.run({ path, offset, dataBlocks, salt: params.salt, blockSize: VERITY_BLOCK, digest: DIGEST, algorithm: 'sha256' }, beforeHashing);
  const { levels, root } = buildLevelsFrom(leaves, dataBlocks, params.salt, VERITY_BLOCK, DIGEST, 'sha256');
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
    if (sb.version !== 1 || sb.hashType !== 1) throw new KbError('UNSUPPORTED', `${what}: verity format version ${sb.version}/hash type ${sb.hashType} is not supported (only 1/1)`);
    if (!['sha256', 'sha512', 'sha1'].includes(sb.algorithm)) throw new KbError('UNSUPPORTED', `${what}: verity hash "${sb.algorithm}" is not supported`);
    // The superblock is hostile: every field that sizes a read or an allocation is checked first.
    for (const bs of [sb.dataBlockSize, sb.hashBlockSize]) {
      if (bs < MIN_BLOCK || bs > MAX_BLOCK || (bs & (bs - 1)) !== 0) throw new UserError(`${what}: verity block size ${bs} is invalid (a power of two from ${MIN_BLOCK} to ${MAX_BLOCK})`);
    }
    if (sb.dataBlockSize !== sb.hashBlockSize) throw new KbError('UNSUPPORTED', `${what}: different data (${sb.dataBlockSize}) and hash (${sb.hashBlockSize}) block sizes are not supported`);
    if (sb.dataBlocks === 0n || sb.dataBlocks * BigInt(sb.dataBlockSize) > BigInt(data.size)) {
      throw new UserError(`${what}: verity covers ${sb.dataBlocks} blocks of ${sb.dataBlockSize} bytes, the data partition has ${data.size} bytes`);
    }
    const digest = createHash(sb.algorithm).digest().length;
    const dataBlocks = Number(sb.dataBlocks);
    // Small regions are hashed on this thread alone: no worker to boot.
    const hashers = new LeafHashers(dataBlocks < LeafHashers.MIN_SHARED_BLOCKS ? 0 : undefined);
    const leaves = await hashers.run({ path, offset: data.offset, dataBlocks, salt: sb.salt, blockSize: sb.dataBlockSize, digest, algorithm: sb.algorithm });
    const { levels, root } = buildLevelsFrom(leaves, dataBlocks, sb.salt, sb.hashBlockSize, digest, sb.algorithm);
    const treeLen = levels.reduce((n, l) => n + l.length, 0);
    if (treeLen + sb.hashBlockSize > hash.size) return { superblock: sb, rootHash: root, treeMatches: false };
    stored = Buffer.alloc(treeLen);
    await fh.read(stored, 0, treeLen, hash.offset + sb.hashBlockSize);
    const expected = Buffer.concat([...levels].reverse());
    return { superblock: sb, rootHash: root, treeMatches: expected.equals(stored) };
  } finally {
    await fh.close();
  }
}
