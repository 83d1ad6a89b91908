import { Readable } from 'node:stream';
import { KbError } from '../errors.js';
import { DigestMismatchError, SizeMismatchError, declareVerified, parseDigest } from '../oci/digest.js';
import { OffThreadHash } from '../util/hash-worker.js';
import type { Descriptor } from '../oci/types.js';
import { header, unexpected, type RegistryResponse, type RegistrySession } from './client.js';
import { TransientTransferError, isNetworkError, networkErrorText } from './errors.js';
import { backoffDelay, sleep } from './retry.js';

export interface DownloadContext {
  session: RegistrySession;
  repository: string;
  scopes: string[];
  /** Name for messages, `host/repo`. */
  name: string;
  /** How many times a broken body may be resumed with a Range request (default: the retries, --retries). */
  maxResumes?: number;
}

function blobPath(repository: string, digest: string): string {
  return `/v2/${repository}/blobs/${digest}`;
}

async function getBlob(ctx: DownloadContext, desc: Descriptor, offset: number): Promise<RegistryResponse> {
  const res = await ctx.session.send({
    method: 'GET',
    path: blobPath(ctx.repository, desc.digest),
    headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
    scopes: ctx.scopes,
    operation: `get blob ${desc.digest}`,
  });
  if (res.status === 200 || res.status === 206) return res;
  if (res.status === 404) {
    await res.body.dump();
    throw new KbError('NOT_FOUND', `${ctx.name}: blob ${desc.digest} not found`, { hint: 'the image refers to a blob the registry does not hold; push the image again' });
  }
  throw await unexpected(ctx.session.registry, res, `get blob ${desc.digest}`);
}

/**
 * Stream a blob, resuming with `Range: bytes=N-` when the connection breaks mid-body, and verify
 * digest and size on the way out: the stream errors (never ends cleanly) on any mismatch, and
 * fails as soon as more bytes arrive than the descriptor says.
 *
 * One Readable does it all (receive, skip what a resumed response repeats, hash, pass on): each
 * stream stage costs main-thread time per 64 KiB chunk, and a layer is thousands of them.
 */
export async function downloadBlob(ctx: DownloadContext, desc: Descriptor): Promise<Readable> {
  const first = await getBlob(ctx, desc, 0);
  return declareVerified(new BlobBody(ctx, desc, first), desc.digest, desc.size);
}

/** Blobs from this size on are hashed on the worker thread (src/util/hash-worker.ts). */
const OFF_THREAD_HASH_BYTES = 4 * 1024 * 1024;

class BlobBody extends Readable {
  private readonly hash: OffThreadHash;
  /** The consumer wants no more for now / the hash has all its staging buffers out. */
  private readHeld = false;
  private hashHeld = false;
  private readonly hex: string;
  private readonly what: string;
  private offset = 0;
  private current?: RegistryResponse['body'];

  constructor(
    private readonly ctx: DownloadContext,
    private readonly desc: Descriptor,
    first: RegistryResponse,
  ) {
    super({ highWaterMark: 1024 * 1024 });
    const p = parseDigest(desc.digest, `${ctx.name}: blob ${desc.digest}`);
    this.hash = new OffThreadHash(p.algorithm, { local: desc.size < OFF_THREAD_HASH_BYTES });
    this.hex = p.hex;
    this.what = `${ctx.name}: blob ${desc.digest}`;
    this.run(first).then(
      () => this.push(null),
      (e: unknown) => this.destroy(e as Error),
    );
  }

  override _read(): void {
    this.readHeld = false;
    this.resumeBody();
  }

  private resumeBody(): void {
    if (!this.readHeld && !this.hashHeld) this.current?.resume();
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    this.current?.destroy();
    this.hash.dispose();
    cb(err);
  }

  private async run(first: RegistryResponse): Promise<void> {
    const { ctx, desc } = this;
    const maxResumes = ctx.maxResumes ?? Math.max(ctx.session.retryPolicy.attempts - 1, 0);
    const retry = { attempts: maxResumes + 1, baseDelayMs: 200, maxDelayMs: 3_000 };
    let res = first;
    let resumes = 0;
    for (;;) {
      let skip = 0;
      if (this.offset > 0) {
        if (res.status === 206) {
          const start = Number(/bytes (\d+)-/.exec(header(res, 'content-range') ?? '')?.[1] ?? NaN);
          if (start !== this.offset) skip = Number.isFinite(start) && start < this.offset ? this.offset - start : NaN;
        } else {
          skip = this.offset; // the server ignored Range and sent everything again
        }
        if (Number.isNaN(skip)) {
          await res.body.dump();
          throw new TransientTransferError(`${this.what}: the registry resumed at the wrong offset`);
        }
      }
      try {
        await this.receive(res.body, skip);
        if (this.destroyed) return;
        if (this.offset >= desc.size) break;
        throw Object.assign(new Error(`body ended after ${this.offset} of ${desc.size} bytes`), { code: 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' });
      } catch (e) {
        if (this.destroyed || !isNetworkError(e)) throw e;
        if (++resumes > maxResumes) throw new TransientTransferError(`${this.what}: download kept failing at byte ${this.offset}: ${networkErrorText(e)}`, e);
        await sleep(backoffDelay(retry, resumes));
        if (this.destroyed) return;
        res = await getBlob(ctx, desc, this.offset);
        if (this.destroyed) {
          res.body.destroy();
          return;
        }
      }
    }
    if (this.offset !== desc.size) throw new SizeMismatchError(desc.size, this.offset, this.what);
    const hex = await this.hash.digest();
    if (hex !== this.hex) throw new DigestMismatchError(desc.digest, `${desc.digest.split(':')[0]}:${hex}`, this.what);
  }

  /** Pass one response body on (after `skip` bytes it repeats); resolves at its end. */
  private receive(body: RegistryResponse['body'], skip: number): Promise<void> {
    this.current = body;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (e?: unknown): void => {
        if (settled) return;
        settled = true;
        body.off('data', onData);
        this.current = undefined;
        if (e === undefined) resolve();
        else reject(e);
      };
      const onData = (raw: Buffer): void => {
        let chunk = raw;
        if (skip > 0) {
          if (chunk.length <= skip) {
            skip -= chunk.length;
            return;
          }
          chunk = chunk.subarray(skip);
          skip = 0;
        }
        this.offset += chunk.length;
        if (this.offset > this.desc.size) {
          body.destroy();
          settle(new SizeMismatchError(this.desc.size, this.offset, this.what));
          return;
        }
        if (!this.hash.update(chunk)) {
          this.hashHeld = true;
          this.hash.onDrain(() => {
            this.hashHeld = false;
            this.resumeBody();
          });
        }
        if (!this.push(chunk)) this.readHeld = true;
        if (this.readHeld || this.hashHeld) body.pause();
      };
      body.on('data', onData);
      body.once('end', () => settle());
      body.once('error', (e) => settle(e));
      // Closed without an end or an error: cut short; the byte count decides (resume or done).
      body.once('close', () => settle());
    });
  }
}
