import type { Readable } from 'node:stream';
import { KbError, UserError } from '../errors.js';
import { VerifyingStream, isLocalContent, isVerifiedAs } from '../oci/digest.js';
import type { Descriptor } from '../oci/types.js';
import { header, locationUrl, unexpected, type RegistryResponse, type RegistrySession } from './client.js';
import { TransientTransferError, isNetworkError, networkErrorText } from './errors.js';
import { ChunkedSource, OneShotChunk, ReplayableChunk, type UploadBody } from './replayable-chunks.js';
import { backoffDelay, isRetryableStatus, sleep } from './retry.js';

export interface UploadTuning {
  /** Blobs up to this size go in one PUT (default 16 MiB). */
  monolithicMax: number;
  /** PATCH chunk size for larger blobs (default 16 MiB). */
  chunkSize: number;
  /** How many times one chunk may fail before the upload is given up as transient (default 5). */
  chunkAttempts: number;
  /**
   * Larger blobs read from a local file go in one streamed PUT, kept nowhere (default true): a
   * failure makes the copy read the file again. False: PATCH chunks, as for other sources.
   */
  streamLocal: boolean;
}

export const DEFAULT_UPLOAD: UploadTuning = { monolithicMax: 16 << 20, chunkSize: 16 << 20, chunkAttempts: 5, streamLocal: true };

export interface UploadContext {
  session: RegistrySession;
  repository: string;
  scopes: string[];
  name: string;
  tuning: UploadTuning;
  /** Called when the registry confirms bytes (for progress). */
  onBytes?: (n: number) => void;
}

const OCTET = 'application/octet-stream';

function uploadsPath(repository: string): string {
  return `/v2/${repository}/blobs/uploads/`;
}

/** Start an upload session; returns the Location to send bytes to. */
async function startUpload(ctx: UploadContext, desc: Descriptor): Promise<string> {
  const res = await ctx.session.send({ method: 'POST', path: uploadsPath(ctx.repository), headers: { 'content-length': '0' }, scopes: ctx.scopes, operation: `start upload of ${desc.digest}` });
  return sessionLocation(ctx, res, `start upload of ${desc.digest}`);
}

async function sessionLocation(ctx: UploadContext, res: RegistryResponse, operation: string): Promise<string> {
  const loc = header(res, 'location');
  if (res.status !== 202 || !loc) throw await unexpected(ctx.session.registry, res, operation);
  await res.body.dump();
  return locationUrl(res, loc, ctx.session.registry, `${operation}: Location`);
}

/**
 * Cross-repository mount (`POST ?mount=<digest>&from=<repo>`). True when the registry linked the
 * blob; false when it cannot (it then opened an ordinary upload session, which we cancel).
 */
export async function mountBlob(ctx: UploadContext, desc: Descriptor, fromRepository: string): Promise<boolean> {
  const path = `${uploadsPath(ctx.repository)}?mount=${encodeURIComponent(desc.digest)}&from=${encodeURIComponent(fromRepository)}`;
  const res = await ctx.session.send({
    method: 'POST',
    path,
    headers: { 'content-length': '0' },
    scopes: [...ctx.scopes, `repository:${fromRepository}:pull`],
    operation: `mount ${desc.digest} from ${fromRepository}`,
  });
  await res.body.dump();
  if (res.status === 201) return true;
  const loc = header(res, 'location');
  if (res.status === 202 && loc) {
    const cancel = await ctx.session
      .send({ method: 'DELETE', path: locationUrl(res, loc, ctx.session.registry, 'mount: Location'), scopes: ctx.scopes, operation: 'cancel upload', retry: false })
      .catch(() => undefined);
    await cancel?.body.dump().catch(() => undefined);
  }
  return false;
}

function withDigest(location: string, digest: string): string {
  const u = new URL(location);
  u.searchParams.set('digest', digest);
  return u.toString();
}

/** Parse an upload `Range: 0-1234` (inclusive end) into the number of bytes the registry holds. */
function confirmedBytes(res: RegistryResponse, previous: number): number | undefined {
  const m = /(\d+)-(\d+)/.exec(header(res, 'range') ?? '');
  if (!m) return undefined;
  const end = Number(m[2]);
  // `0-0` is ambiguous (registry 2.8 says it for an empty upload too).
  if (end === 0 && Number(m[1]) === 0 && previous === 0) return 0;
  return end + 1;
}

async function blobExists(ctx: UploadContext, desc: Descriptor): Promise<boolean> {
  const res = await ctx.session.send({ method: 'HEAD', path: `/v2/${ctx.repository}/blobs/${desc.digest}`, scopes: ctx.scopes, operation: `check blob ${desc.digest}` });
  await res.body.dump();
  return res.status === 200;
}

/**
 * PUT …&digest= — commits the upload, with `body` (monolithic) or empty (after PATCHes). A body
 * that can be sent only once (not `replayable`) goes without the client's own retries.
 */
async function commitUpload(ctx: UploadContext, desc: Descriptor, location: string, chunk: UploadBody | undefined): Promise<void> {
  const res = await ctx.session.send({
    method: 'PUT',
    path: withDigest(location, desc.digest),
    headers: { 'content-type': OCTET, 'content-length': String(chunk?.length ?? 0) },
    body: chunk ? () => chunk.open() : Buffer.alloc(0),
    scopes: ctx.scopes,
    operation: `push blob ${desc.digest}`,
    ...(chunk?.replayable === false ? { retry: false } : {}),
  });
  if (res.status === 201 || res.status === 204) {
    await res.body.dump();
    const got = header(res, 'docker-content-digest');
    if (got && got.split(':')[0] === desc.digest.split(':')[0] && got !== desc.digest) {
      throw new KbError('DIGEST_MISMATCH', `${ctx.name}: the registry stored blob ${desc.digest} as ${got}`, {
        hint: 'the registry computed a different digest; the content is corrupt or the registry is misbehaving',
      });
    }
    return;
  }
  const err = await unexpected(ctx.session.registry, res, `push blob ${desc.digest}`);
  // A retried commit whose first attempt did land: the session is gone but the blob is there.
  if ((res.status === 404 || err.hasCode('BLOB_UPLOAD_UNKNOWN')) && (await blobExists(ctx, desc))) return;
  if (err.hasCode('DIGEST_INVALID')) {
    throw new KbError('DIGEST_MISMATCH', `${ctx.name}: the registry refused blob ${desc.digest}: its content does not match the digest`, { hint: 'the source is corrupt; nothing was stored' });
  }
  if (isRetryableStatus(res.status) || res.status === 404) throw new TransientTransferError(err.message, err);
  throw err;
}

/** Ask where an upload stands (`GET <location>` → 204 with `Range`). */
async function uploadStatus(ctx: UploadContext, location: string, previous: number): Promise<{ location: string; offset: number } | undefined> {
  const res = await ctx.session.send({ method: 'GET', path: location, scopes: ctx.scopes, operation: 'upload status' });
  await res.body.dump();
  if (res.status !== 204 && res.status !== 200) return undefined;
  const offset = confirmedBytes(res, previous);
  if (offset === undefined) return undefined;
  const loc = header(res, 'location');
  return { location: loc ? locationUrl(res, loc, ctx.session.registry, 'upload status: Location') : location, offset };
}

interface ChunkState {
  location: string;
  /** Bytes the registry has confirmed. */
  offset: number;
}

/**
 * Send one chunk with PATCH; on a broken or refused request ask the upload status and continue
 * from what the registry holds. When the session is lost, the first chunk restarts in a new
 * session; a later one throws TransientTransferError (copy starts the blob again from its source).
 */
async function sendChunk(ctx: UploadContext, desc: Descriptor, source: ChunkedSource, chunk: ReplayableChunk, state: ChunkState): Promise<void> {
  const chunkStart = state.offset;
  const chunkEnd = chunkStart + chunk.length;
  for (let attempt = 1; ; attempt++) {
    const from = state.offset - chunkStart;
    let failure: string;
    try {
      const res = await ctx.session.send({
        method: 'PATCH',
        path: state.location,
        headers: { 'content-type': OCTET, 'content-length': String(chunk.length - from), 'content-range': `${state.offset}-${chunkEnd - 1}` },
        body: () => chunk.open(from),
        scopes: ctx.scopes,
        operation: `upload ${desc.digest} bytes ${state.offset}-${chunkEnd - 1}`,
        retry: false,
      });
      if (res.status === 202) {
        const loc = header(res, 'location');
        await res.body.dump();
        const held = confirmedBytes(res, state.offset);
        if (held !== undefined && held !== chunkEnd) throw new TransientTransferError(`${ctx.name}: blob ${desc.digest}: the registry holds ${held} bytes after a chunk ending at ${chunkEnd}`);
        if (loc) state.location = locationUrl(res, loc, ctx.session.registry, `upload ${desc.digest}: Location`);
        state.offset = chunkEnd;
        return;
      }
      if (!isRetryableStatus(res.status) && res.status !== 416) throw await unexpected(ctx.session.registry, res, `upload ${desc.digest}`);
      await res.body.dump();
      failure = `HTTP ${res.status}`;
    } catch (e) {
      if (source.failure) throw source.failure;
      if (!isNetworkError(e)) throw e;
      failure = networkErrorText(e);
    }
    if (attempt >= ctx.tuning.chunkAttempts) throw new TransientTransferError(`${ctx.name}: blob ${desc.digest}: upload kept failing at byte ${state.offset} (${failure})`);
    await sleep(backoffDelay(ctx.session.retryPolicy, attempt));
    const status = await uploadStatus(ctx, state.location, state.offset).catch(() => undefined);
    if (status && status.offset >= chunkStart && status.offset <= chunkEnd) {
      state.location = status.location;
      state.offset = status.offset;
      if (state.offset === chunkEnd) return;
      continue;
    }
    if (chunkStart === 0) {
      // Nothing committed before this chunk: a new session from byte 0 loses nothing.
      state.location = await startUpload(ctx, desc);
      state.offset = 0;
      continue;
    }
    throw new TransientTransferError(`${ctx.name}: blob ${desc.digest}: the registry lost the upload session at byte ${state.offset} (${failure})`);
  }
}

/** PUT the whole (small) blob, held in memory: a transient failure starts a new upload session and sends it again. */
async function putHeld(ctx: UploadContext, desc: Descriptor, source: ChunkedSource, state: ChunkState, what: string): Promise<void> {
  const chunk = new ReplayableChunk(source, desc.size, what);
  for (let attempt = 1; ; attempt++) {
    try {
      return await commitUpload(ctx, desc, state.location, chunk);
    } catch (e) {
      if (source.failure !== undefined || !(e instanceof TransientTransferError) || attempt >= ctx.tuning.chunkAttempts) throw e;
      await sleep(backoffDelay(ctx.session.retryPolicy, attempt));
      state.location = await startUpload(ctx, desc);
    }
  }
}

/**
 * Push one blob: a single PUT for small blobs and for large ones read from a local file, 16 MiB
 * PATCH chunks for other large ones. The content is verified against `desc` on the way (the
 * registry checks the digest again on commit).
 */
export async function uploadBlob(ctx: UploadContext, desc: Descriptor, content: Readable | Buffer, location?: string): Promise<void> {
  const what = `${ctx.name}: blob ${desc.digest}`;
  let checked: Readable;
  if (!Buffer.isBuffer(content) && isVerifiedAs(content, desc.digest, desc.size)) {
    checked = content; // verified on its way out of the source (a layout or registry fetch): hash once
  } else {
    const verify = new VerifyingStream(desc.digest, desc.size, what);
    if (Buffer.isBuffer(content)) verify.end(content);
    else {
      content.on('error', (e) => verify.destroy(e));
      content.pipe(verify);
    }
    checked = verify;
  }
  const source = new ChunkedSource(checked);
  const noTrailingBytes = async (): Promise<void> => {
    // Reading past the declared size lets the verifier report a wrong digest or extra bytes.
    if (await source.read(1)) throw new UserError(`${what}: the source is longer than the ${desc.size} bytes its descriptor declares`, 'the source is corrupt; nothing was stored');
  };
  try {
    const state: ChunkState = { location: location ?? (await startUpload(ctx, desc)), offset: 0 };
    const small = desc.size <= ctx.tuning.monolithicMax;
    if (small || (ctx.tuning.streamLocal && isLocalContent(checked))) {
      // One PUT with the whole blob. A small one is held, so a lost session costs a new POST, not
      // a new read of the source. A large one read from a local file is streamed from it and kept
      // nowhere: against 16 MiB PATCH chunks kept for replay this spends a seventh to a fifth less
      // CPU here and in registry 2.8 (which flushes each PATCH to disk before it answers);
      // src/registry/README.md, Transfers. A broken connection or a retryable status is then
      // TRANSIENT (the client does not resend a body it cannot replay): the copy reads the file again.
      if (small) await putHeld(ctx, desc, source, state, what);
      else await commitUpload(ctx, desc, state.location, new OneShotChunk(source, desc.size, what));
      ctx.onBytes?.(desc.size);
      await noTrailingBytes();
      return;
    }
    while (state.offset < desc.size) {
      const before = state.offset;
      const chunk = new ReplayableChunk(source, Math.min(ctx.tuning.chunkSize, desc.size - state.offset), what);
      await sendChunk(ctx, desc, source, chunk, state);
      ctx.onBytes?.(state.offset - before);
    }
    await noTrailingBytes();
    await commitUpload(ctx, desc, state.location, undefined);
  } catch (e) {
    // The source's own failure (digest mismatch, truncation, a broken download) is the real story.
    if (source.failure !== undefined) throw source.failure;
    throw e;
  } finally {
    await source.close().catch(() => undefined);
    if (!Buffer.isBuffer(content) && !content.readableEnded) content.destroy();
  }
}
