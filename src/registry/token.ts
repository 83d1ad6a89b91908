import type { Dispatcher } from 'undici';
import { undici } from './undici-lazy.js';
import { KbError, UserError } from '../errors.js';
import { readAllCapped } from '../oci/digest.js';
import type { Credentials } from './credentials.js';
import { isNetworkError, networkErrorText } from './errors.js';
import { backoffDelay, isRetryableStatus, sleep, type RetryPolicy } from './retry.js';

/** A bearer token and when to stop using it. */
export interface CachedToken {
  token: string;
  expiresAt: number;
}

export interface TokenRequest {
  registry: string;
  realm: string;
  service?: string;
  scopes: string[];
  credentials?: Credentials;
  dispatcher: Dispatcher;
  retry: RetryPolicy;
  userAgent: string;
}

const DEFAULT_TTL_SECONDS = 60;
/** A token response is a small JSON object (containers/image caps it at 1 MiB too). */
const MAX_TOKEN_RESPONSE_BYTES = 1 << 20;
/** Stop using a token a little before the registry would (clock skew, slow requests). */
const EXPIRY_MARGIN_MS = 5_000;

/**
 * Fetch a bearer token from the realm the registry named (distribution "token" auth spec):
 * GET with Basic credentials (or none: an anonymous token), or the OAuth2 POST with
 * `grant_type=refresh_token` when the login is an identity token.
 */
export async function fetchToken(req: TokenRequest): Promise<CachedToken> {
  const url = new URL(req.realm);
  const headers: Record<string, string> = { 'user-agent': req.userAgent, accept: 'application/json' };
  let method: 'GET' | 'POST' = 'GET';
  let body: string | undefined;
  const creds = req.credentials;
  if (creds?.identityToken) {
    method = 'POST';
    const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: creds.identityToken, client_id: 'kbundle' });
    if (req.service) form.set('service', req.service);
    if (req.scopes.length) form.set('scope', req.scopes.join(' '));
    body = form.toString();
    headers['content-type'] = 'application/x-www-form-urlencoded';
  } else {
    if (req.service) url.searchParams.set('service', req.service);
    for (const s of req.scopes) url.searchParams.append('scope', s);
    if (creds?.username) {
      url.searchParams.set('account', creds.username);
      headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password ?? ''}`).toString('base64')}`;
    }
  }

  const who = creds ? (creds.username ? `user "${creds.username}" (from ${creds.source})` : `the identity token from ${creds.source}`) : 'anonymous access';
  for (let attempt = 1; ; attempt++) {
    let res: Dispatcher.ResponseData;
    try {
      res = await (await undici()).request(url, { method, headers, body, dispatcher: req.dispatcher });
    } catch (e) {
      if (attempt < req.retry.attempts) {
        await sleep(backoffDelay(req.retry, attempt));
        continue;
      }
      throw new KbError(isNetworkError(e) ? 'TRANSIENT' : 'INVALID_INPUT', `${req.registry}: cannot reach the token server ${url.origin}${url.pathname}: ${networkErrorText(e)}`, { cause: e });
    }
    if (res.statusCode === 200) {
      let text: string;
      try {
        text = (await readAllCapped(res.body, MAX_TOKEN_RESPONSE_BYTES, `${req.registry}: the token server ${url.origin}${url.pathname}: response`)).toString('utf8');
      } catch (e) {
        res.body.destroy();
        if (!isNetworkError(e)) throw e;
        if (attempt < req.retry.attempts) {
          await sleep(backoffDelay(req.retry, attempt));
          continue;
        }
        throw new KbError('TRANSIENT', `${req.registry}: the token server ${url.origin}${url.pathname}: ${networkErrorText(e)}`, { cause: e });
      }
      let parsed: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
      try {
        parsed = JSON.parse(text) as typeof parsed;
      } catch {
        throw new UserError(`${req.registry}: the token server ${url.origin}${url.pathname} answered something that is not JSON`);
      }
      if (typeof parsed !== 'object' || parsed === null) throw new UserError(`${req.registry}: the token server ${url.origin}${url.pathname} answered JSON that is not an object`);
      const token = typeof parsed.token === 'string' && parsed.token ? parsed.token : typeof parsed.access_token === 'string' ? parsed.access_token : '';
      if (!token) throw new UserError(`${req.registry}: the token server ${url.origin}${url.pathname} answered without a token`);
      const ttl = typeof parsed.expires_in === 'number' && parsed.expires_in > 0 ? parsed.expires_in : DEFAULT_TTL_SECONDS;
      const issued = typeof parsed.issued_at === 'string' ? Date.parse(parsed.issued_at) : NaN;
      const start = Number.isFinite(issued) && Math.abs(issued - Date.now()) < 60_000 ? issued : Date.now();
      return { token, expiresAt: start + ttl * 1000 - Math.min(EXPIRY_MARGIN_MS, (ttl * 1000) / 4) };
    }
    await res.body.dump().catch(() => undefined);
    if (isRetryableStatus(res.statusCode) && attempt < req.retry.attempts) {
      await sleep(backoffDelay(req.retry, attempt, res.headers['retry-after']));
      continue;
    }
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw new UserError(
        `${req.registry}: the token server ${url.origin}${url.pathname} rejected ${who} (HTTP ${res.statusCode})`,
        creds
          ? 'check the user name and password (or run docker login again)'
          : 'this registry needs a login: pass --username and --password-stdin, or set KBUNDLE_REGISTRY_USERNAME/KBUNDLE_REGISTRY_PASSWORD',
      );
    }
    throw new UserError(`${req.registry}: the token server ${url.origin}${url.pathname} answered HTTP ${res.statusCode} for ${who}`);
  }
}

export function tokenUsable(t: CachedToken | undefined): t is CachedToken {
  return !!t && t.expiresAt > Date.now();
}
