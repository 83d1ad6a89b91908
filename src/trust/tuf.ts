/**
 * `kbundle trust update`: refresh the trusted root through TUF (tuf-js, the client @sigstore/tuf
 * wraps) from Sigstore's repository or a private mirror, into the trust cache (src/trust/store.ts).
 *
 * TUF does the checking: root rotation (each new root signed by the old and the new keys),
 * signature thresholds, expiry of every role, version rollback against the cached metadata, and
 * the target's length and hashes. kbundle adds a starting root (the compiled-in public-good one,
 * or `--tuf-root` for another mirror — never trust on first use), a deadline and size caps on every
 * download, a schema check of the new trusted root, and an atomic replacement: the trusted root in
 * use changes only once everything verified.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Dispatcher } from 'undici';
import { codeForHttpStatus, errorMessage, fsErrorCode, KbError, UserError, type ErrorCode } from '../errors.js';
import { pathExists } from '../fs-util.js';
import { undici } from '../registry/undici-lazy.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { Limits } from '../verify/limits.js';
import { parseTrustedRoot } from '../verify/trust.js';
import { PUBLIC_GOOD_MIRROR, PUBLIC_GOOD_TUF_ROOT } from './public-good.js';
import { CACHED_ROOT_FILE, STATE_FILE } from './store.js';

export const TRUSTED_ROOT_TARGET = 'trusted_root.json';
/** TUF metadata files are small (Sigstore's root is ~6 KiB); anything this large is hostile. */
const MAX_TUF_ROOT_BYTES = 512 * 1024;

export interface TrustUpdateOptions {
  /** The trust cache directory (trustCacheDir()). */
  cacheDir: string;
  /** TUF repository base URL (default: Sigstore's public-good CDN). */
  mirror?: string;
  /** A TUF root.json obtained out of band: (re)seeds the cache for this mirror. */
  tufRoot?: Buffer;
  /** Deadline for the whole update, ms (default 120 s). */
  timeoutMs?: number;
}

export interface TrustUpdateResult {
  mirror: string;
  trustedRootFile: string;
  sha256: string;
  /** The trusted root differs from what the cache held before. */
  changed: boolean;
  versions: { root: number; timestamp: number; snapshot: number; targets: number };
  timestampExpires: string;
}

/** Where tuf-js keeps one mirror's metadata inside the cache (the layout @sigstore/tuf uses). */
export function mirrorDir(cacheDir: string, mirror: string): string {
  const u = new URL(mirror);
  return join(cacheDir, 'tuf', encodeURIComponent(u.host + u.pathname.replace(/\/$/, '')));
}

function checkMirror(mirror: string): string {
  let u: URL;
  try {
    u = new URL(mirror);
  } catch {
    throw new UserError(`--mirror: "${mirror}" is not a URL`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new UserError(`--mirror: "${mirror}" must be an http(s) URL`);
  if (u.username || u.password || u.search || u.hash) throw new UserError(`--mirror: "${mirror}" must not carry credentials, a query or a fragment`);
  return u.href.replace(/\/$/, '');
}

/** A TUF root given by the user must at least be one before it is written into the cache. */
function checkTufRoot(bytes: Buffer, what: string): void {
  if (bytes.length > MAX_TUF_ROOT_BYTES) throw new UserError(`${what}: ${bytes.length} bytes is too large for a TUF root`);
  let raw: { signed?: { _type?: unknown; version?: unknown }; signatures?: unknown };
  try {
    raw = JSON.parse(bytes.toString('utf8')) as typeof raw;
  } catch {
    throw new UserError(`${what}: not valid JSON`);
  }
  if (raw?.signed?._type !== 'root' || typeof raw.signed.version !== 'number' || !Array.isArray(raw.signatures)) {
    throw new UserError(`${what}: not a TUF root (signed._type must be "root", with a version and signatures)`, 'pass the root.json of the TUF repository, obtained out of band');
  }
}

// tuf-js and @tufjs/models are CommonJS: a dynamic import yields { default: exports } once esbuild
// has bundled them (and, unbundled, the named exports too).
const cjs = <T>(m: T): T => (m as { default?: T }).default ?? m;
const loadTuf = () => Promise.all([import('tuf-js').then(cjs), import('tuf-js/dist/error.js').then(cjs), import('@tufjs/models/dist/error.js').then(cjs)]);

type TufErrors = typeof import('tuf-js/dist/error.js');
type ModelErrors = typeof import('@tufjs/models/dist/error.js');

/** What failed, by error class: TUF's verdicts are refusals, transport failures keep their HTTP meaning. */
function classify(e: unknown, tuf: TufErrors, models: ModelErrors, lastFetch: FetchOutcome): { code: ErrorCode; check: string } {
  if (e instanceof tuf.ExpiredMetadataError) return { code: 'REFUSED', check: 'expired metadata' };
  if (e instanceof tuf.EqualVersionError || e instanceof tuf.BadVersionError) return { code: 'REFUSED', check: 'rollback: older than the cached version' };
  if (e instanceof models.UnsignedMetadataError) return { code: 'REFUSED', check: 'signature threshold' };
  if (e instanceof models.LengthOrHashMismatchError || e instanceof tuf.DownloadLengthMismatchError) return { code: 'REFUSED', check: 'length or hash' };
  if (e instanceof tuf.DownloadHTTPError) return { code: codeForHttpStatus(e.statusCode), check: 'download' };
  // tuf-js wraps snapshot and targets failures in a RuntimeError: when the last download failed,
  // that was it; otherwise the metadata itself was refused.
  if (e instanceof tuf.RuntimeError) return lastFetch !== 'ok' ? { code: lastFetch.code, check: 'download' } : { code: 'REFUSED', check: 'metadata' };
  if (e instanceof tuf.RepositoryError || e instanceof models.RepositoryError || e instanceof models.ValueError || e instanceof tuf.ValueError) return { code: 'REFUSED', check: 'metadata' };
  if (e instanceof SyntaxError || e instanceof TypeError) return { code: 'REFUSED', check: 'metadata' };
  return { code: 'TRANSIENT', check: 'download' };
}

type FetchOutcome = 'ok' | { code: ErrorCode };

/**
 * tuf-js's fetcher over kbundle's HTTP client: connect, header and body deadlines, and a record of
 * the last outcome for `classify`. Lengths are capped by tuf-js (per role, from the metadata).
 */
async function makeFetcher(timeoutMs: number): Promise<{ fetcher: import('tuf-js').BaseFetcher; last: () => FetchOutcome; close: () => Promise<void> }> {
  const [[{ BaseFetcher }, errors], http] = await Promise.all([loadTuf(), undici()]);
  const agent: Dispatcher = new http.Agent({ connect: { timeout: Math.min(timeoutMs, 15_000) }, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  let last: FetchOutcome = 'ok';
  class KbFetcher extends BaseFetcher {
    async fetch(url: string): Promise<NodeJS.ReadableStream> {
      let res: Dispatcher.ResponseData;
      try {
        res = await http.request(url, { method: 'GET', headers: { 'user-agent': 'kbundle (tuf-js)' }, dispatcher: agent });
      } catch (e) {
        last = { code: 'TRANSIENT' };
        throw new KbError('TRANSIENT', `${url}: ${errorMessage(e)}`, { cause: e });
      }
      if (res.statusCode !== 200) {
        res.body.resume();
        // A missing next root version (404/403) is how TUF learns it has the newest root.
        last = res.statusCode === 404 || res.statusCode === 403 ? last : { code: codeForHttpStatus(res.statusCode) };
        throw new errors.DownloadHTTPError(`${url}: HTTP ${res.statusCode}`, res.statusCode);
      }
      last = 'ok';
      return res.body;
    }
  }
  return { fetcher: new KbFetcher(), last: () => last, close: () => agent.destroy() };
}

async function readJsonVersion(file: string): Promise<{ version: number; expires: string }> {
  const raw = JSON.parse(await readFile(file, 'utf8')) as { signed: { version: number; expires: string } };
  return { version: raw.signed.version, expires: raw.signed.expires };
}

async function readIfExists(file: string): Promise<Buffer | undefined> {
  try {
    return await readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new KbError(fsErrorCode(e), `${file}: ${errorMessage(e)}`, { cause: e });
  }
}

export async function updateTrustedRoot(opts: TrustUpdateOptions): Promise<TrustUpdateResult> {
  const mirror = checkMirror(opts.mirror ?? PUBLIC_GOOD_MIRROR);
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const metadataDir = mirrorDir(opts.cacheDir, mirror);
  const targetDir = join(metadataDir, 'targets');
  try {
    await mkdir(targetDir, { recursive: true });
  } catch (e) {
    throw new KbError(fsErrorCode(e), `${opts.cacheDir}: cannot create the trust cache (${(e as NodeJS.ErrnoException).code ?? errorMessage(e)})`, {
      hint: 'run as root on a node, or choose another place with --cache-dir (or KBUNDLE_TRUST_CACHE)',
      cause: e,
    });
  }

  // The starting root: given out of band, else what the cache holds, else the compiled-in one.
  const cachedTufRoot = join(metadataDir, 'root.json');
  if (opts.tufRoot) {
    checkTufRoot(opts.tufRoot, '--tuf-root');
    await writeFileAtomic(cachedTufRoot, opts.tufRoot);
  } else if (!(await pathExists(cachedTufRoot, { follow: true }))) {
    if (mirror !== PUBLIC_GOOD_MIRROR) {
      throw new UserError(`no TUF root for ${mirror}`, "pass the repository's root.json with --tuf-root (obtained out of band; kbundle does not trust a mirror on first use)");
    }
    await writeFileAtomic(cachedTufRoot, JSON.stringify(PUBLIC_GOOD_TUF_ROOT));
  }

  const [{ Updater }, tufErrors, modelErrors] = await loadTuf();
  const { fetcher, last, close } = await makeFetcher(timeoutMs);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new KbError('TRANSIENT', `${mirror} did not answer within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs);
  });
  let targetFile: string;
  try {
    targetFile = await Promise.race([
      deadline,
      (async () => {
        let updater;
        try {
          updater = new Updater({ metadataDir, metadataBaseUrl: mirror, targetDir, targetBaseUrl: `${mirror}/targets`, fetcher, config: { userAgent: 'kbundle' } });
        } catch (e) {
          throw new KbError('REFUSED', `the cached TUF root is not usable (${errorMessage(e)})`, {
            hint: `pass a good root.json with --tuf-root, or remove ${metadataDir}`,
            cause: e,
          });
        }
        await updater.refresh();
        const info = await updater.getTargetInfo(TRUSTED_ROOT_TARGET);
        if (!info) throw new KbError('NOT_FOUND', `the repository has no ${TRUSTED_ROOT_TARGET} target`);
        if (info.length > Limits.maxTrustedRootBytes) throw new KbError('REFUSED', `the ${TRUSTED_ROOT_TARGET} target is ${info.length} bytes, over the ${Limits.maxTrustedRootBytes}-byte limit`);
        return (await updater.findCachedTarget(info)) ?? (await updater.downloadTarget(info));
      })(),
    ]);
  } catch (e) {
    // kbundle's own failures (deadline, download, a missing or oversized target) keep their code.
    const { code, check } = e instanceof KbError ? { code: e.code, check: '' } : classify(e, tufErrors, modelErrors, last());
    throw new KbError(code, `trust update from ${mirror} failed${check ? ` (${check})` : ''}: ${errorMessage(e)}`, {
      hint:
        (e instanceof KbError ? e.hint : undefined) ??
        (code === 'REFUSED' ? 'the trusted root in use is unchanged; the repository served metadata that did not verify' : 'the trusted root in use is unchanged; try again later'),
      cause: e,
    });
  } finally {
    clearTimeout(timer);
    await close();
  }

  const bytes = await readFile(targetFile);
  try {
    parseTrustedRoot(bytes.toString('utf8'), `${mirror}/targets/${TRUSTED_ROOT_TARGET}`);
  } catch (e) {
    throw new KbError('REFUSED', `trust update from ${mirror} failed: ${errorMessage(e)}`, {
      hint: 'the trusted root in use is unchanged; the repository signed a file that is not a trusted root',
      cause: e,
    });
  }
  const out = join(opts.cacheDir, CACHED_ROOT_FILE);
  const before = await readIfExists(out);
  await writeFileAtomic(out, bytes, { mode: 0o644 });
  const [root, timestamp, snapshot, targets] = await Promise.all(['root', 'timestamp', 'snapshot', 'targets'].map((r) => readJsonVersion(join(metadataDir, `${r}.json`))));
  const result: TrustUpdateResult = {
    mirror,
    trustedRootFile: out,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    changed: !before || !before.equals(bytes),
    versions: { root: root!.version, timestamp: timestamp!.version, snapshot: snapshot!.version, targets: targets!.version },
    timestampExpires: timestamp!.expires,
  };
  await writeFileAtomic(join(opts.cacheDir, STATE_FILE), `${JSON.stringify({ ...result, updated: new Date().toISOString() }, null, 2)}\n`);
  return result;
}
