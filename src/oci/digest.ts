import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { KbError, UserError } from '../errors.js';

export type DigestAlgorithm = 'sha256' | 'sha512';

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };
const DIGEST_RE = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

export interface ParsedDigest {
  algorithm: DigestAlgorithm;
  hex: string;
}

/**
 * The parts of `digest` as `algo:hex`, or how to say what is wrong with it (built only when a
 * caller reports it): one check for parseDigest and isDigest.
 */
function checkDigest(digest: string): ParsedDigest | ((where: string) => Error) {
  const m = DIGEST_RE.exec(digest);
  if (!m) return (where) => new UserError(`${where}: "${digest}" is not a digest (expected sha256:<64 hex>)`);
  const algorithm = m[1] as DigestAlgorithm;
  const hex = m[2]!;
  const want = HEX_LENGTH[algorithm];
  if (want === undefined) return (where) => new KbError('UNSUPPORTED', `${where}: unsupported digest algorithm "${m[1]}" (sha256 and sha512 are supported)`);
  if (hex.length !== want || !/^[a-f0-9]+$/.test(hex)) return (where) => new UserError(`${where}: "${digest}" must be ${algorithm}: followed by ${want} lowercase hex characters`);
  return { algorithm, hex };
}

/** Parse and validate `algo:hex` (image-spec descriptor.md); only registered algorithms are accepted. */
export function parseDigest(digest: string, where = 'digest'): ParsedDigest {
  const got = checkDigest(digest);
  if (typeof got === 'function') throw got(where);
  return got;
}

/** Whether `s` is a digest parseDigest accepts, without building an error (asked of every reference and tag). */
export function isDigest(s: string): boolean {
  return typeof checkDigest(s) !== 'function';
}

export function digestOf(data: Uint8Array | string, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}

export async function digestFile(path: string, algorithm: DigestAlgorithm = 'sha256'): Promise<string> {
  const h = createHash(algorithm);
  await pipeline(createReadStream(path), async (src: AsyncIterable<Buffer>) => {
    for await (const chunk of src) h.update(chunk);
  });
  return `${algorithm}:${h.digest('hex')}`;
}

/** Pass-through stream that counts and hashes what flows through it. */
export class DigestingStream extends Transform {
  private readonly hash: Hash;
  size = 0;
  constructor(readonly algorithm: DigestAlgorithm = 'sha256') {
    super();
    this.hash = createHash(algorithm);
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    cb(null, chunk);
  }
  private finalDigest?: string;
  /** Valid once the stream has ended. */
  digest(): string {
    this.finalDigest ??= `${this.algorithm}:${this.hash.digest('hex')}`;
    return this.finalDigest;
  }
}

export class DigestMismatchError extends UserError {
  constructor(
    readonly expected: string,
    readonly actual: string,
    readonly what: string,
  ) {
    super(`${what}: content digest ${actual} does not match the expected ${expected}`, 'the source is corrupt or was tampered with; nothing was written', undefined, 'DIGEST_MISMATCH');
  }
}

/** More bytes than the descriptor says, or fewer at the end: the content is not what its descriptor names. */
export class SizeMismatchError extends UserError {
  constructor(
    readonly expected: number,
    readonly actual: number,
    readonly what: string,
  ) {
    super(`${what}: size ${actual} does not match the descriptor size ${expected}`, 'the source is corrupt or was tampered with; nothing was written', undefined, 'DIGEST_MISMATCH');
  }
}

const VERIFIED = Symbol('kbundle.verifiedContent');

interface VerifiedContent {
  digest: string;
  size: number | undefined;
  /** Read from a local file: starting it again costs a re-read, not a new download. */
  local?: boolean;
}

/**
 * Mark a stream that checks `digest` and `size` itself, erroring before it ends on any mismatch
 * (as a VerifyingStream does; e.g. a registry download hashing as it receives), as verified content.
 */
export function declareVerified<T extends Readable>(stream: T, digest: string, size: number): T {
  (stream as { [VERIFIED]?: VerifiedContent })[VERIFIED] = { digest, size };
  return stream;
}

/**
 * Mark `derived` as passing on `source`'s bytes unchanged (a byte counter, say), so it keeps the
 * promise of the VerifyingStream it came from: `source`'s error is forwarded, so `derived` too
 * errors instead of ending cleanly on a mismatch. Consumers then need not hash the bytes again.
 */
export function carriesVerification<T extends Readable>(derived: T, source: Readable): T {
  const v = (source as { [VERIFIED]?: VerifiedContent })[VERIFIED];
  if (v) {
    (derived as { [VERIFIED]?: VerifiedContent })[VERIFIED] = v;
    source.on('error', (e) => derived.destroy(e));
  }
  return derived;
}

/**
 * Mark verified content (a VerifyingStream, or a stream declared verified) as read from a local
 * file: a consumer that fails half-way may fetch it again rather than keep what it sent.
 */
export function declareLocal<T extends Readable>(stream: T): T {
  const v = (stream as { [VERIFIED]?: VerifiedContent })[VERIFIED];
  if (!v) throw new Error('declareLocal: the stream is not verified content');
  v.local = true;
  return stream;
}

/** True when `stream` is verified content read from a local file (declareLocal), directly or passed on. */
export function isLocalContent(stream: unknown): boolean {
  return (stream as { [VERIFIED]?: VerifiedContent } | undefined)?.[VERIFIED]?.local === true;
}

/** True when `stream` is (or passes on unchanged) a VerifyingStream checking exactly `digest` and `size`. */
export function isVerifiedAs(stream: unknown, digest: string, size: number): boolean {
  const v = (stream as { [VERIFIED]?: VerifiedContent } | undefined)?.[VERIFIED];
  return v !== undefined && v.digest === digest && v.size === size;
}

/**
 * Verifies bytes against a descriptor while they stream: fails as soon as more than `size`
 * bytes arrive, and at the end if the digest or size differ. The error surfaces before the
 * consumer sees end-of-stream, so a caller that stages then renames never commits bad bytes.
 */
export class VerifyingStream extends Transform {
  private readonly hash: Hash;
  private seen = 0;
  private readonly algorithm: DigestAlgorithm;
  private readonly hex: string;
  constructor(
    readonly expectedDigest: string,
    readonly expectedSize: number | undefined,
    readonly what: string,
  ) {
    super();
    const p = parseDigest(expectedDigest, what);
    this.algorithm = p.algorithm;
    this.hex = p.hex;
    this.hash = createHash(p.algorithm);
    (this as { [VERIFIED]?: VerifiedContent })[VERIFIED] = { digest: expectedDigest, size: expectedSize };
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.expectedSize !== undefined && this.seen > this.expectedSize) {
      cb(new SizeMismatchError(this.expectedSize, this.seen, this.what));
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    if (this.expectedSize !== undefined && this.seen !== this.expectedSize) {
      cb(new SizeMismatchError(this.expectedSize, this.seen, this.what));
      return;
    }
    const hex = this.hash.digest('hex');
    if (hex !== this.hex) {
      cb(new DigestMismatchError(this.expectedDigest, `${this.algorithm}:${hex}`, this.what));
      return;
    }
    cb();
  }
}

/** Read a whole (small) stream into memory with a hard cap, e.g. manifests and configs. */
export async function readAllCapped(src: AsyncIterable<Buffer | string>, limit: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of src) {
    const b = typeof c === 'string' ? Buffer.from(c) : c;
    n += b.length;
    if (n > limit) throw new UserError(`${what}: larger than the ${limit}-byte limit`, 'refusing to read it into memory');
    parts.push(b);
  }
  return Buffer.concat(parts);
}
