import { Readable } from 'node:stream';
import { KbError } from '../errors.js';
import { VerifyingStream } from '../oci/digest.js';
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
 * digest and size on the way out: the stream errors (never ends cleanly) on any mismatch.
 */
export async function downloadBlob(ctx: DownloadContext, desc: Descriptor): Promise<Readable> {
  const first = await getBlob(ctx, desc, 0);
  const maxResumes = ctx.maxResumes ?? Math.max(ctx.session.retryPolicy.attempts - 1, 0);
  const retry = { attempts: maxResumes + 1, baseDelayMs: 200, maxDelayMs: 3_000 };

  async function* body(): AsyncGenerator<Buffer> {
    let res = first;
    let offset = 0;
    let resumes = 0;
    for (;;) {
      let skip = 0;
      if (offset > 0) {
        if (res.status === 206) {
          const start = Number(/bytes (\d+)-/.exec(header(res, 'content-range') ?? '')?.[1] ?? NaN);
          if (start !== offset) skip = Number.isFinite(start) && start < offset ? offset - start : NaN;
        } else {
          skip = offset; // the server ignored Range and sent everything again
        }
        if (Number.isNaN(skip)) {
          await res.body.dump();
          throw new TransientTransferError(`${ctx.name}: blob ${desc.digest}: the registry resumed at the wrong offset`);
        }
      }
      try {
        for await (const raw of res.body) {
          let chunk = raw as Buffer;
          if (skip > 0) {
            if (chunk.length <= skip) {
              skip -= chunk.length;
              continue;
            }
            chunk = chunk.subarray(skip);
            skip = 0;
          }
          offset += chunk.length;
          yield chunk;
        }
        if (offset >= desc.size) return;
        throw Object.assign(new Error(`body ended after ${offset} of ${desc.size} bytes`), { code: 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' });
      } catch (e) {
        if (!isNetworkError(e)) throw e;
        if (++resumes > maxResumes) throw new TransientTransferError(`${ctx.name}: blob ${desc.digest}: download kept failing at byte ${offset}: ${networkErrorText(e)}`, e);
        await sleep(backoffDelay(retry, resumes));
        res = await getBlob(ctx, desc, offset);
      }
    }
  }

  const verify = new VerifyingStream(desc.digest, desc.size, `${ctx.name}: blob ${desc.digest}`);
  const src = Readable.from(body(), { objectMode: false });
  src.on('error', (e) => verify.destroy(e));
  verify.on('close', () => {
    if (!src.destroyed) src.destroy();
  });
  return src.pipe(verify);
}
