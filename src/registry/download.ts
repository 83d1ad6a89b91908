/**
 * The one way kbundle downloads a file over HTTP(S) that is not a registry blob: bundle.yaml
 * `url:` files and `sysext install https://…` images. The URL is checked (scheme, no dot
 * segments, no user:password), redirects are followed a bounded number of times and never from
 * HTTPS down to plain HTTP, every wait has the deadlines of src/net/deadlines.ts, the size is
 * capped (declared or streamed; `KBUNDLE_MAX_DOWNLOAD`), transient failures start the download
 * again within the retry budget, and bytes only go to the temp path the caller gave, which it
 * checks before renaming.
 */
import { createWriteStream } from 'node:fs';
import { truncate } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Dispatcher } from 'undici';
import { codeForHttpStatus, KbError, UserError } from '../errors.js';
import { Dispatchers } from './connection.js';
import { isNetworkError, networkErrorText } from './errors.js';
import { isLoopback } from './reference.js';
import { backoffDelay, DEFAULT_RETRY, isRetryableStatus, sleep } from './retry.js';
import { undici } from './undici-lazy.js';
import { VERSION } from '../version.js';
import { checkUrl } from '../net/url.js';
import { STAGED_TEMP_FLAGS } from '../util/atomic-write.js';

export const MAX_DOWNLOAD_ENV = 'KBUNDLE_MAX_DOWNLOAD';
/** Large enough for any sysext image or release archive kbundle expects; a cap, not a quota. */
export const DEFAULT_MAX_DOWNLOAD_BYTES = 4 * 1024 ** 3;
const MAX_REDIRECTS = 5;

/** `KBUNDLE_MAX_DOWNLOAD`: bytes, or with a binary suffix (`512M`, `2G`). */
export function maxDownloadBytes(env: NodeJS.ProcessEnv = process.env): number {
  const v = env[MAX_DOWNLOAD_ENV];
  if (v === undefined || v.trim() === '') return DEFAULT_MAX_DOWNLOAD_BYTES;
  const m = /^\s*(\d+)\s*([kmgt]?)i?b?\s*$/i.exec(v);
  if (!m) throw new UserError(`${MAX_DOWNLOAD_ENV}: "${v}" is not a size`, 'give bytes, or a number with K, M, G or T (binary units), e.g. 512M');
  return Number(m[1]) * 1024 ** ' kmgt'.indexOf((m[2] || ' ').toLowerCase());
}

export interface DownloadRequest {
  url: string;
  /** The temp file to write (created or truncated); the caller renames it after its checks. */
  dest: string;
  /** For messages, e.g. `bundle.yaml files.0`; the URL is added. */
  what: string;
  env?: NodeJS.ProcessEnv;
  /** Default `KBUNDLE_MAX_DOWNLOAD` or 4 GiB. */
  maxBytes?: number;
  /** A fresh stage the bytes pass through on their way to the file (a digest check), per attempt. */
  through?: () => Transform;
  mode?: number;
  /**
   * `dest` is a temp that stageAndRename made: it is opened without O_CREAT (and emptied for each
   * attempt), so an open still in flight when a signal's clean-up removed it cannot make it again.
   */
  staged?: boolean;
}

function tooLarge(what: string, limit: number): UserError {
  return new UserError(`${what}: larger than the ${limit}-byte limit`, `refusing to download it; raise ${MAX_DOWNLOAD_ENV} (e.g. ${MAX_DOWNLOAD_ENV}=8G) if it really is this large`);
}

/** Counts bytes on the way through and fails the pipeline past the cap. */
class SizeCap extends Transform {
  bytes = 0;
  constructor(
    private readonly limit: number,
    private readonly what: string,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.limit) return cb(tooLarge(this.what, this.limit));
    cb(null, chunk);
  }
}

/** GET with manual, checked redirects; returns the final 2xx/4xx/5xx response. */
async function get(start: URL, dispatcher: Dispatcher, what: string): Promise<{ res: Dispatcher.ResponseData; url: URL }> {
  const { request } = await undici();
  let url = start;
  for (let hops = 0; ; hops++) {
    const res = await request(url, { method: 'GET', headers: { 'user-agent': `kbundle/${VERSION}`, accept: '*/*' }, dispatcher });
    const location = res.headers.location;
    if (res.statusCode < 300 || res.statusCode >= 400 || !location) return { res, url };
    await res.body.dump().catch(() => undefined);
    if (hops >= MAX_REDIRECTS) throw new KbError('REFUSED', `${what}: more than ${MAX_REDIRECTS} redirects`);
    const next = checkUrl(Array.isArray(location) ? location[0]! : location, `${what}: redirect`, { base: url, code: 'REFUSED' });
    if (url.protocol === 'https:' && next.protocol === 'http:' && !isLoopback(next.host)) {
      throw new KbError('REFUSED', `${what}: redirected from HTTPS down to plain HTTP (${next.origin})`, { hint: 'ask for the https:// URL of the file' });
    }
    url = next;
  }
}

/** Download `url` into `dest` within the deadlines, the size cap and the retry budget. */
export async function downloadToFile(req: DownloadRequest): Promise<{ bytes: number }> {
  const env = req.env ?? process.env;
  const limit = req.maxBytes ?? maxDownloadBytes(env);
  const what = `${req.what}${req.what === req.url ? '' : `: ${req.url}`}`;
  const failed = `${req.what === req.url ? '' : `${req.what}: `}download of ${req.url} failed`;
  const start = checkUrl(req.url, req.what);
  const dispatchers = new Dispatchers({ env });
  const retry = { ...DEFAULT_RETRY, attempts: dispatchers.limits.attempts };
  try {
    const dispatcher = await dispatchers.verifying();
    for (let attempt = 1; ; attempt++) {
      try {
        const { res } = await get(start, dispatcher, what);
        if (res.statusCode !== 200) {
          await res.body.dump().catch(() => undefined);
          if (isRetryableStatus(res.statusCode) && attempt < retry.attempts) {
            await sleep(backoffDelay(retry, attempt, res.headers['retry-after']));
            continue;
          }
          throw new KbError(codeForHttpStatus(res.statusCode), `${failed}: HTTP ${res.statusCode}`);
        }
        const declared = Number(res.headers['content-length'] ?? NaN);
        if (declared > limit) {
          res.body.destroy();
          throw tooLarge(what, limit);
        }
        const cap = new SizeCap(limit, what);
        // A failed attempt's bytes go (r+ keeps them); a temp that is gone fails (and the body is let go).
        if (req.staged)
          await truncate(req.dest, 0).catch((e: unknown) => {
            res.body.destroy();
            throw e;
          });
        const out = createWriteStream(req.dest, { mode: req.mode ?? 0o644, flags: req.staged ? STAGED_TEMP_FLAGS : 'w' });
        if (req.through) await pipeline(res.body, cap, req.through(), out);
        else await pipeline(res.body, cap, out);
        if (Number.isFinite(declared) && cap.bytes !== declared) throw new KbError('TRUNCATED', `${what}: the server sent ${cap.bytes} of ${declared} bytes`);
        return { bytes: cap.bytes };
      } catch (e) {
        if (!isNetworkError(e)) throw e;
        if (attempt < retry.attempts) {
          await sleep(backoffDelay(retry, attempt));
          continue;
        }
        throw new KbError('TRANSIENT', `${failed}: ${networkErrorText(e)}`, { cause: e, hint: 'the server or the network failed repeatedly; try again later' });
      }
    }
  } finally {
    await dispatchers.close();
  }
}
