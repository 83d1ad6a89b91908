import { KbError, type ErrorCode } from '../errors.js';

export interface UrlCheck {
  /** Resolve a relative reference (a `Location` header) against this URL. */
  base?: string | URL;
  /** Allowed schemes, with the colon. Default `https:` and `http:`. */
  schemes?: readonly string[];
  /** The error code: INVALID_INPUT for URLs a user wrote, REFUSED for what a server sent. */
  code?: ErrorCode;
  hint?: string;
}

const DEFAULT_SCHEMES = ['https:', 'http:'] as const;

/** A path segment that means "up" or "here", spelled plainly or percent-encoded (`%2e%2e`, `.%2E`). */
function isDotSegment(segment: string): boolean {
  const s = segment.replace(/%2e/gi, '.');
  return s === '..' || s === '.';
}

/**
 * The one check for a URL kbundle is about to fetch, whoever wrote it (bundle.yaml `url:`, a
 * sysext `http(s)://` source, a registry's `Location`, `Link` or token realm): it must parse, use
 * an allowed scheme, carry no user:password, and its path must have no `.`/`..` segments — the
 * WHATWG parser would silently resolve them, so the URL fetched would not be the one reviewed or
 * pinned. Returns the parsed URL.
 */
export function checkUrl(raw: string, what: string, opts: UrlCheck = {}): URL {
  const code = opts.code ?? 'INVALID_INPUT';
  const fail = (why: string): KbError => new KbError(code, `${what}: "${raw.length > 200 ? `${raw.slice(0, 200)}…` : raw}" ${why}`, { hint: opts.hint });
  if ([...raw].some((ch) => ch.charCodeAt(0) <= 0x20 || ch.charCodeAt(0) === 0x7f)) throw fail('contains spaces or control characters');
  let url: URL;
  try {
    url = opts.base === undefined ? new URL(raw) : new URL(raw, opts.base);
  } catch {
    throw fail('is not a URL');
  }
  const schemes = opts.schemes ?? DEFAULT_SCHEMES;
  if (!schemes.includes(url.protocol)) throw fail(`uses the scheme "${url.protocol}"; only ${schemes.map((s) => `${s}//`).join(' and ')} are allowed`);
  if (url.username || url.password) throw fail('carries a user name or password; kbundle does not send credentials embedded in URLs');
  // Check the path as written (before the parser resolved dot segments).
  const path = raw.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i, '').replace(/[?#].*$/s, '');
  if (path.split(/[/\\]/).some(isDotSegment)) throw fail('has a "." or ".." path segment');
  return url;
}
