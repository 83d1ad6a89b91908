import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { undici } from './undici-lazy.js';
import { KbError, UserError } from '../errors.js';
import { parseChallenges, type AuthChallenge } from './challenge.js';
import { Dispatchers, isCertificateError, isInsecureHost, isNotTlsError, loginOverHttpAllowed, plainHttpAllowed, realmGetsLogin, schemePlan, type ConnectionOptions } from './connection.js';
import { checkUrl } from '../net/url.js';
import { resolveCredentials, type CredentialOptions, type Credentials } from './credentials.js';
import { RegistryResponseError, TransientTransferError, describeErrors, errnoCodes, isNetworkError, networkErrorText, parseErrorBody } from './errors.js';
import { apiHost } from './reference.js';
import { readAllCapped } from '../oci/digest.js';
import { VERSION } from '../version.js';
import { DEFAULT_RETRY, backoffDelay, isRetryableStatus, sleep, type RetryPolicy } from './retry.js';
import { fetchToken, tokenUsable, type CachedToken } from './token.js';

export interface RegistryClientOptions extends ConnectionOptions, CredentialOptions {
  retry?: Partial<RetryPolicy>;
  userAgent?: string;
}

export type HttpMethod = 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';

export interface RegistryRequest {
  method: HttpMethod;
  /** `/v2/...` (joined to the registry's base URL) or an absolute URL the registry gave us (upload Location). */
  path: string;
  headers?: Record<string, string>;
  /**
   * A Buffer, or a function opening the body afresh (so it can be sent again after a 401 or a
   * transient failure). A bare one-shot stream is not accepted on purpose.
   */
  body?: Buffer | (() => Readable);
  /** Token scopes this request needs, e.g. `repository:kairos/metallb:pull,push`. */
  scopes: string[];
  /** For messages: "push blob sha256:…", "get manifest 1.0". */
  operation: string;
  /** Retry on network errors and 429/5xx (default: yes). Set false when the caller handles it. */
  retry?: boolean;
}

export interface RegistryResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
  /** Final URL (after redirects). */
  url: URL;
}

export function header(res: { headers: Record<string, string | string[] | undefined> }, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** Read the error body of an unexpected response and turn it into a user-facing error. */
export async function unexpected(registry: string, res: RegistryResponse, operation: string, hint?: string): Promise<RegistryResponseError> {
  let text = '';
  try {
    // An error body is for a message: read a little of it, never all of what a hostile server sends.
    text = (await readAllCapped(res.body, ERROR_BODY_BYTES, 'error body')).toString('utf8').slice(0, 4096);
  } catch {
    /* body already consumed, broken or huge */
    res.body.destroy();
  }
  const codes = parseErrorBody(text);
  return new RegistryResponseError(registry, operation, res.status, codes, describeErrors(codes, text || (res.status === 404 ? 'not found' : '')), hint);
}

/**
 * A URL the registry handed out (upload `Location`, `Link`), resolved against the response it
 * came in and checked (src/net/url.ts): no dot segments, no other scheme, no user:password.
 */
export function locationUrl(res: RegistryResponse, location: string, registry: string, what: string): string {
  return checkUrl(location, `${registry}: ${what}`, { base: res.url, code: 'REFUSED' }).toString();
}

const ERROR_BODY_BYTES = 64 * 1024;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;

/**
 * One registry host: how to reach it (https, or http for loopback/insecure), how it wants
 * clients to authenticate (Basic, or Bearer tokens cached per scope set), and a request loop
 * with bounded retries. Secrets never appear in messages.
 */
export class RegistrySession {
  private base?: Promise<{ url: string; dispatcher: Dispatcher }>;
  private challenge?: AuthChallenge;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pendingTokens = new Map<string, Promise<CachedToken>>();
  private credentials?: Promise<Credentials | undefined>;
  /** A token server on another host that was asked without the login (named in auth errors). */
  private loginWithheldFrom?: string;
  readonly apiHost: string;

  constructor(
    readonly registry: string,
    private readonly opts: RegistryClientOptions,
    private readonly dispatchers: Dispatchers,
    readonly retryPolicy: RetryPolicy,
    private readonly userAgent: string,
  ) {
    this.apiHost = apiHost(registry);
  }

  private creds(): Promise<Credentials | undefined> {
    this.credentials ??= resolveCredentials(this.registry, this.opts);
    return this.credentials;
  }

  /** Ping `/v2/` once to settle the scheme and learn the auth challenge. */
  baseUrl(): Promise<{ url: string; dispatcher: Dispatcher }> {
    this.base ??= this.detectBase().catch((e: unknown) => {
      this.base = undefined;
      throw e;
    });
    return this.base;
  }

  private async ping(url: string, dispatcher: Dispatcher): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      let res: Dispatcher.ResponseData;
      try {
        res = await (await undici()).request(`${url}/v2/`, { method: 'GET', headers: { 'user-agent': this.userAgent }, dispatcher });
      } catch (e) {
        if (isNetworkError(e) && !isNotTlsError(e) && attempt < this.retryPolicy.attempts && !errnoCodes(e).includes('ECONNREFUSED')) {
          await sleep(backoffDelay(this.retryPolicy, attempt));
          continue;
        }
        throw e;
      }
      await res.body.dump();
      if (res.statusCode === 200) return;
      if (res.statusCode === 401) {
        this.noteChallenge(res.headers['www-authenticate']);
        return;
      }
      if (isRetryableStatus(res.statusCode) && attempt < this.retryPolicy.attempts) {
        await sleep(backoffDelay(this.retryPolicy, attempt, res.headers['retry-after']));
        continue;
      }
      throw new UserError(`${this.registry}: ${url}/v2/ answered HTTP ${res.statusCode}; this is not a registry speaking the OCI distribution API`, 'check the registry host and port');
    }
  }

  /**
   * Loopback registries: probe plain HTTP first. Building a TLS context with the system roots
   * costs ~40 ms per process, which dominates a node's `kbundle verify`; a TLS-only registry
   * answers the plain probe with 400 (or a reset) and we go on to HTTPS as before.
   */
  private async speaksPlainRegistryHttp(http: string): Promise<boolean> {
    try {
      const res = await (await undici()).request(`${http}/v2/`, { method: 'GET', headers: { 'user-agent': this.userAgent }, dispatcher: await this.dispatchers.verifying() });
      await res.body.dump();
      if ((res.statusCode === 200 || res.statusCode === 401) && res.headers['docker-distribution-api-version'] !== undefined) {
        if (res.statusCode === 401) this.noteChallenge(res.headers['www-authenticate']);
        return true;
      }
    } catch {
      /* not plain HTTP (or not up): let the HTTPS path report it */
    }
    return false;
  }

  private async detectBase(): Promise<{ url: string; dispatcher: Dispatcher }> {
    const plan = schemePlan(this.registry, this.opts);
    const https = `https://${this.apiHost}`;
    const http = `http://${this.apiHost}`;
    const unreachable = (e: unknown, url: string): KbError => {
      // Nothing there (refused, no such name) is the user's to fix; a peer that stalls or hangs up is TRANSIENT.
      const absent = errnoCodes(e).some((c) => c === 'ECONNREFUSED' || c === 'ENOTFOUND');
      return new KbError(absent || !isNetworkError(e) ? 'INVALID_INPUT' : 'TRANSIENT', `${this.registry}: cannot reach ${url}/v2/: ${networkErrorText(e)}`, {
        hint: errnoCodes(e).includes('ECONNREFUSED') ? 'is the registry running, and is the port right?' : undefined,
      });
    };
    if (plan.kind === 'http') {
      const d = await this.dispatchers.verifying();
      await this.ping(http, d).catch((e: unknown) => {
        throw e instanceof KbError ? e : unreachable(e, http);
      });
      return { url: http, dispatcher: d };
    }
    if (plan.kind === 'https-then-http' && (await this.speaksPlainRegistryHttp(http))) {
      return { url: http, dispatcher: await this.dispatchers.verifying() };
    }
    const tlsDispatcher = plan.kind === 'insecure' ? await this.dispatchers.insecure() : await this.dispatchers.verifying();
    try {
      await this.ping(https, tlsDispatcher);
      return { url: https, dispatcher: tlsDispatcher };
    } catch (e) {
      if (e instanceof KbError) throw e;
      if ((plan.kind === 'https-then-http' || plan.kind === 'insecure') && isNotTlsError(e)) {
        const d = await this.dispatchers.verifying();
        try {
          await this.ping(http, d);
          return { url: http, dispatcher: d };
        } catch (e2) {
          if (e2 instanceof KbError) throw e2;
          // It does speak plain HTTP but stalled or hung up: that is the failure to report.
          throw errnoCodes(e2).some((c) => c.includes('TIMEOUT') || c === 'KB_SLOW_TRANSFER') ? unreachable(e2, http) : unreachable(e, https);
        }
      }
      if (isCertificateError(e)) {
        throw new UserError(
          `${this.registry}: the TLS certificate of ${https} is not trusted (${networkErrorText(e)})`,
          `pass the CA that signed it with --ca-file <pem> (or SSL_CERT_FILE), or --insecure-registry ${this.registry} to skip verification`,
        );
      }
      if (plan.kind === 'https' && isNotTlsError(e)) {
        throw new UserError(
          `${this.registry}: ${https} does not speak TLS (${networkErrorText(e)})`,
          `if this registry really serves plain HTTP, pass --plain-http or --insecure-registry ${this.registry}`,
        );
      }
      throw unreachable(e, https);
    }
  }

  private noteChallenge(h: string | string[] | undefined): AuthChallenge | undefined {
    const all = parseChallenges(h);
    const c = all.find((x) => x.scheme === 'bearer') ?? all.find((x) => x.scheme === 'basic');
    if (c) this.challenge = c;
    return c;
  }

  /**
   * Refuse to send the login of this registry (or a token bought with it) over plain HTTP to a
   * host that is not loopback and not named by --insecure-registry.
   */
  private assertLoginMayTravel(url: string | URL): void {
    const u = typeof url === 'string' ? new URL(url) : url;
    if (u.protocol === 'http:' && !loginOverHttpAllowed(u.host, this.opts)) {
      throw new UserError(`refusing to send the login for ${this.registry} over plain HTTP (${u.origin})`, `use HTTPS, or pass --insecure-registry ${u.host} if the network to it is trusted`);
    }
  }

  private async bearerToken(scopes: string[], force: boolean, baseUrl: string): Promise<string> {
    const c = this.challenge!;
    const realm = c.params.realm;
    if (!realm) throw new KbError('REFUSED', `${this.registry}: asks for a bearer token but names no realm`);
    const realmUrl = checkUrl(realm, `${this.registry}: token realm`, { code: 'REFUSED' });
    const creds = await this.creds();
    const withLogin = !!creds && realmGetsLogin(this.registry, realmUrl.host, this.opts);
    if (withLogin) {
      this.assertLoginMayTravel(realmUrl);
      this.assertLoginMayTravel(baseUrl); // the token carries the login's rights
    } else if (realmUrl.protocol !== 'https:' && !plainHttpAllowed(realmUrl.host, this.opts)) {
      throw new UserError(`${this.registry}: the token server ${realmUrl.origin} speaks plain HTTP`, `mark it insecure with --insecure-registry ${realmUrl.host} if you trust this network`);
    }
    if (creds && !withLogin) this.loginWithheldFrom = realmUrl.host;
    // Tokens are bound to the realm and service that issued them, and to the scopes asked for.
    const key = [realmUrl.href, c.params.service ?? '', withLogin ? 'login' : 'anonymous', RegistrySession.scopeKey(scopes)].join('\n');
    const cached = this.tokens.get(key);
    if (!force && tokenUsable(cached)) return cached.token;
    let pending = this.pendingTokens.get(key);
    if (!pending) {
      const challengeScopes = (c.params.scope ?? '').split(' ').filter(Boolean);
      const dispatcher = await this.dispatcherFor(realmUrl);
      pending = fetchToken({
        registry: this.registry,
        realm: realmUrl.href,
        service: c.params.service,
        scopes: [...new Set([...scopes, ...challengeScopes])],
        credentials: withLogin ? creds : undefined,
        dispatcher,
        retry: this.retryPolicy,
        userAgent: this.userAgent,
      });
      this.pendingTokens.set(key, pending);
      pending.then(
        (t) => {
          this.tokens.set(key, t);
          this.pendingTokens.delete(key);
        },
        () => this.pendingTokens.delete(key),
      );
    }
    return (await pending).token;
  }

  private static scopeKey(scopes: string[]): string {
    return [...new Set(scopes)].sort().join(' ');
  }

  private async authorization(scopes: string[], force: boolean, baseUrl: string): Promise<string | undefined> {
    const c = this.challenge;
    if (!c) return undefined;
    if (c.scheme === 'basic') {
      const creds = await this.creds();
      if (!creds?.username) return undefined;
      this.assertLoginMayTravel(baseUrl);
      return `Basic ${Buffer.from(`${creds.username}:${creds.password ?? ''}`).toString('base64')}`;
    }
    if (c.scheme === 'bearer') return `Bearer ${await this.bearerToken(scopes, force, baseUrl)}`;
    throw new UserError(`${this.registry}: asks for unsupported authentication "${c.scheme}"`, 'kbundle supports Basic and Bearer token authentication');
  }

  private async authError(req: RegistryRequest, res: RegistryResponse): Promise<KbError> {
    const base = await unexpected(this.registry, res, req.operation);
    const creds = await this.creds();
    const denied = base.hasCode('DENIED') || res.status === 403;
    const pushing = req.scopes.some((s) => s.endsWith(':push') || s.includes(',push'));
    if (!creds) {
      return new KbError(res.status === 403 ? 'DENIED' : 'UNAUTHORIZED', `${this.registry}: ${req.operation}: authentication required (HTTP ${res.status})`, {
        hint: 'log in: pass --username and --password-stdin, set KBUNDLE_REGISTRY_USERNAME/KBUNDLE_REGISTRY_PASSWORD, or run docker login',
      });
    }
    if (this.loginWithheldFrom) {
      const realm = this.loginWithheldFrom;
      return new KbError(
        res.status === 403 ? 'DENIED' : 'UNAUTHORIZED',
        `${this.registry}: ${req.operation}: authentication required (HTTP ${res.status}); its token server ${realm} is on another host, so kbundle asked it without your login`,
        {
          hint: `if ${realm} may have the login for ${this.registry}, pass --trust-token-realm ${realm} (or set KBUNDLE_TRUSTED_TOKEN_REALMS=${realm})`,
        },
      );
    }
    const who = creds.username ? `user "${creds.username}" (from ${creds.source})` : `the identity token from ${creds.source}`;
    if (denied || (this.challenge?.scheme === 'bearer' && pushing)) {
      return new KbError('DENIED', `${this.registry}: ${req.operation}: ${who} is not allowed to do this (HTTP ${res.status}, ${base.codes.map((c) => c.code).join(', ') || 'denied'})`, {
        hint: pushing ? 'check that this account may push to the repository' : undefined,
      });
    }
    return new KbError('UNAUTHORIZED', `${this.registry}: ${req.operation}: the registry rejected the credentials of ${who} (HTTP ${res.status})`, {
      hint: 'check the user name and password (or run docker login again)',
    });
  }

  /** The agent for a URL: the registry's own, or (another host) verifying TLS unless that host is marked insecure. */
  private async dispatcherFor(url: URL, base?: { url: string; dispatcher: Dispatcher }): Promise<Dispatcher> {
    if (base && url.origin === new URL(base.url).origin) return base.dispatcher;
    return url.protocol === 'https:' && isInsecureHost(url.host, this.opts) ? this.dispatchers.insecure() : this.dispatchers.verifying();
  }

  /**
   * Send a request: authenticate (once more after a 401, with a fresh token), follow redirects
   * for GET/HEAD, retry transient failures. Returns any final response; callers check the
   * status they expect.
   *
   * Credentials are bound to the registry's origin (scheme, host, port of its `/v2/`): a request
   * to any other URL — a redirect target, an upload `Location` or `Link` on another host —
   * carries no Authorization, and a 401 from another host is an error, never a challenge to
   * answer with this registry's login (containers/image likewise only uses the `/v2/` challenge).
   */
  async send(req: RegistryRequest): Promise<RegistryResponse> {
    const base = await this.baseUrl();
    const origin = new URL(base.url).origin;
    const retrying = req.retry !== false;
    let authRetried = false;
    let forceToken = false;
    for (let attempt = 1; ;) {
      let url = checkUrl(req.path, `${this.registry}: ${req.operation}`, { base: base.url, code: 'REFUSED' });
      const headers: Record<string, string> = { 'user-agent': this.userAgent, ...(req.headers ?? {}) };
      if (url.origin === origin) {
        const auth = await this.authorization(req.scopes, forceToken, base.url);
        if (auth) headers.authorization = auth;
      }
      forceToken = false;
      let res: RegistryResponse;
      let hops = 0;
      try {
        for (;;) {
          const body = req.body === undefined ? undefined : Buffer.isBuffer(req.body) ? req.body : req.body();
          await socketsReleased();
          // undici closes a connection after a HEAD (for servers that send a body with it anyway),
          // and the next request then pays a new handshake; registries do not, and Go's clients
          // keep those connections too. (A body sent anyway spoils only that registry's next
          // answer on that connection, which fails its checks like any bad answer.)
          const reset = req.method === 'HEAD' ? false : undefined;
          const r = await (await undici()).request(url, { method: req.method, headers, body, reset, dispatcher: await this.dispatcherFor(url, base) });
          res = { status: r.statusCode, headers: r.headers, body: r.body, url };
          const location = header(res, 'location');
          if ((req.method === 'GET' || req.method === 'HEAD') && REDIRECTS.has(r.statusCode) && location) {
            await r.body.dump();
            if (hops >= MAX_REDIRECTS) throw new KbError('REFUSED', `${this.registry}: ${req.operation}: more than ${MAX_REDIRECTS} redirects (last to ${location})`);
            const next = checkUrl(location, `${this.registry}: ${req.operation}: redirect`, { base: url, code: 'REFUSED' });
            if (next.origin !== url.origin) delete headers.authorization;
            url = next;
            hops++;
            continue;
          }
          break;
        }
      } catch (e) {
        if (retrying && isNetworkError(e) && attempt < this.retryPolicy.attempts) {
          await sleep(backoffDelay(this.retryPolicy, attempt++));
          continue;
        }
        if (isNetworkError(e)) throw new TransientTransferError(`${this.registry}: ${req.operation}: ${networkErrorText(e)}`, e);
        throw e;
      }
      if (res.status === 401 && res.url.origin !== origin) {
        await res.body.dump().catch(() => undefined);
        const where = hops > 0 ? `redirected to ${res.url.href}, another host, which answered 401` : `${res.url.href} is on another host and answered 401`;
        throw new KbError('UNAUTHORIZED', `${this.registry}: ${req.operation}: ${where}`, {
          hint: `kbundle sends the login for ${this.registry} to ${origin} only; the registry should hand out URLs that need no login (signed URLs)`,
        });
      }
      if (res.status === 401) {
        const c = this.noteChallenge(res.headers['www-authenticate']);
        if (!authRetried && c && (c.scheme !== 'basic' || (await this.creds()))) {
          await res.body.dump();
          authRetried = true;
          forceToken = true;
          continue;
        }
        throw await this.authError(req, res);
      }
      if (res.status === 403 && header(res, 'content-type')?.includes('json')) {
        throw await this.authError(req, res);
      }
      if (retrying && isRetryableStatus(res.status) && attempt < this.retryPolicy.attempts) {
        const wait = backoffDelay(this.retryPolicy, attempt++, res.headers['retry-after']);
        await res.body.dump();
        await sleep(wait);
        continue;
      }
      return res;
    }
  }

  /**
   * Send a request and read its whole body under a cap (manifests, tag lists, referrers): a
   * declared length over the cap is refused unread; a body the network cuts short (reset,
   * idle, too slow) is asked for again within the retry budget, then a TRANSIENT error. Only
   * responses `wanted` says are read; others come back unread.
   */
  async sendAndRead(req: RegistryRequest, limit: number, what: string, wanted: (res: RegistryResponse) => boolean): Promise<{ res: RegistryResponse; bytes?: Buffer }> {
    for (let attempt = 1; ; attempt++) {
      const res = await this.send(req);
      if (!wanted(res)) return { res };
      const declared = Number(header(res, 'content-length') ?? NaN);
      if (declared > limit) {
        res.body.destroy();
        throw new UserError(`${what}: ${declared} bytes, over the ${limit}-byte limit`, 'refusing to read it; a registry has no reason to send this much');
      }
      try {
        return { res, bytes: await readAllCapped(res.body, limit, what) };
      } catch (e) {
        res.body.destroy();
        if (!isNetworkError(e)) throw e;
        if (attempt >= this.retryPolicy.attempts) throw new TransientTransferError(`${this.registry}: ${req.operation}: ${networkErrorText(e)}`, e);
        await sleep(backoffDelay(this.retryPolicy, attempt));
      }
    }
  }
}

/**
 * One turn of the event loop. undici hands a kept-alive socket back to its pool one turn after the
 * response ended (it waits to see whether the server closes it), and a request sent before that
 * opens a new connection: every command's first request after the ping did, a TCP (and TLS)
 * handshake more on a real network. Waiting here lets it take the socket just freed.
 */
function socketsReleased(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Entry point: one session per registry host, sharing connection pools and options. */
export class RegistryClient {
  private readonly sessions = new Map<string, RegistrySession>();
  private readonly dispatchers: Dispatchers;
  private readonly retryPolicy: RetryPolicy;
  private readonly userAgent: string;

  constructor(readonly options: RegistryClientOptions = {}) {
    this.dispatchers = new Dispatchers(options);
    this.retryPolicy = { ...DEFAULT_RETRY, attempts: this.dispatchers.limits.attempts, ...(options.retry ?? {}) };
    this.userAgent = options.userAgent ?? `kbundle/${VERSION}`;
  }

  session(registry: string): RegistrySession {
    let s = this.sessions.get(registry);
    if (!s) {
      s = new RegistrySession(registry, this.options, this.dispatchers, this.retryPolicy, this.userAgent);
      this.sessions.set(registry, s);
    }
    return s;
  }

  get retry(): RetryPolicy {
    return this.retryPolicy;
  }

  async close(): Promise<void> {
    await this.dispatchers.close();
  }
}
