/**
 * A Docker/OCI registry token endpoint for tests (the "Bearer" flow of registry 2.8's `auth: token`).
 *
 * - Listens on 127.0.0.1 (plain HTTP by default, HTTPS when given a cert/key).
 * - GET  /token?service=S&scope=repository:NAME:pull,push[&scope=...][&account=U][&offline_token=true]
 *        with optional `Authorization: Basic` credentials (what docker, containerd and skopeo send).
 * - POST /token (OAuth2 form: grant_type=password|refresh_token), as clients holding an identity token do.
 * - Answers `{ token, access_token, expires_in, issued_at[, refresh_token] }`; the JWT is ES256, signed with
 *   an issuer key whose self-signed certificate travels in the `x5c` header and is what the registry's
 *   `auth.token.rootcertbundle` trusts.
 * - Grants, per requested scope, the intersection of the asked actions and what the user may do
 *   (default: any valid user gets everything asked; anonymous gets `pull` only when `anonymousPull`).
 *   Invalid credentials get 401. Anonymous requests without rights get a token with empty access,
 *   as Docker Hub and distribution's reference server do; the registry then answers 401.
 * - Records every request (scopes asked, whether and which credentials came, what was granted) so tests
 *   can assert that the Bearer flow really happened.
 */
import { execFile } from 'node:child_process';
import { createPrivateKey, randomBytes, randomUUID, sign, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** One entry of the JWT `access` claim (and of a parsed `scope` parameter). */
export interface TokenAccess {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenRequestRecord {
  time: number;
  method: string;
  /** `basic` (Authorization: Basic on GET), `password`/`refresh_token` (POST form), `anonymous`. */
  grant: 'basic' | 'password' | 'refresh_token' | 'anonymous';
  /** User name presented (Basic, form or refresh token owner); undefined when anonymous. */
  user?: string;
  /** True when Basic credentials were present in the request. */
  basic: boolean;
  /** True when the presented credentials were valid (false for anonymous). */
  authenticated: boolean;
  service?: string;
  account?: string;
  /** Raw `scope` values as asked (one entry per scope, space-separated POST scopes split). */
  scopes: string[];
  /** What the issued token carries; empty when nothing was granted or the request failed. */
  granted: TokenAccess[];
  status: number;
}

export interface TokenIssuer {
  certPem: string;
  keyPem: string;
  /** Path of the certificate PEM: use it as the registry's `auth.token.rootcertbundle`. */
  certFile: string;
}

export interface TokenServerOptions {
  /** Expected `service` (the registry's `auth.token.service`). Default `kbundle-test-registry`. */
  service?: string;
  /** `iss` claim (the registry's `auth.token.issuer`). Default `kbundle-test-token-issuer`. */
  issuer?: string;
  /** Valid users (name → password). Default none. */
  users?: Record<string, string>;
  /** Grant `pull` to anonymous requests. Default false. */
  anonymousPull?: boolean;
  /** Token lifetime. Default 300 s. (Registry 2.8 allows a little clock leeway past `exp`.) */
  ttlSeconds?: number;
  /**
   * Custom ACL: the actions `user` (undefined = anonymous) may perform for the asked scope.
   * The grant is the intersection with the asked actions (`*` in the result grants everything asked).
   */
  authorize?: (user: string | undefined, asked: TokenAccess) => string[];
  /** Serve HTTPS with this certificate/key (PEM). Default plain HTTP. */
  tls?: { cert: string; key: string };
  /** Reuse an issuer (e.g. to restart a token server the registry already trusts). */
  issuerKey?: TokenIssuer;
  /** Where to write the issuer files. Default a fresh directory under os.tmpdir(). */
  dir?: string;
}

export interface TokenServer {
  /** e.g. `http://127.0.0.1:PORT` */
  url: string;
  /** The realm the registry should advertise: `${url}/token`. */
  realm: string;
  service: string;
  issuer: string;
  issuerKey: TokenIssuer;
  /** Requests seen, oldest first. */
  requests: TokenRequestRecord[];
  /** Mutable: users may be added/removed while running. */
  users: Record<string, string>;
  /** Mint a token directly (bypassing HTTP), e.g. to craft expired or over-scoped tokens. */
  issue(opts: { sub?: string; access: TokenAccess[]; ttlSeconds?: number; notBeforeOffsetSeconds?: number; audience?: string }): string;
  /** Answer the next `count` token requests with `status` (default 500) instead of a token. */
  failNext(count: number, status?: number): void;
  clearRequests(): void;
  close(): Promise<void>;
}

function b64url(buf: Buffer | string): string {
  return Buffer.from(buf).toString('base64url');
}

/** Generate a self-signed ES256 (P-256) token-issuer certificate with openssl. */
export async function createTokenIssuer(dir: string, commonName = 'kbundle test token issuer'): Promise<TokenIssuer> {
  const keyFile = join(dir, 'token-issuer.key');
  const certFile = join(dir, 'token-issuer.crt');
  const cnf = join(dir, 'token-issuer.cnf');
  writeFileSync(
    cnf,
    ['[req]', 'distinguished_name = dn', '[dn]', '[issuer_ext]', 'basicConstraints = critical,CA:FALSE', 'keyUsage = critical,digitalSignature', 'subjectKeyIdentifier = hash', ''].join('\n'),
  );
  await execFileP('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    keyFile,
    '-out',
    certFile,
    '-days',
    '3',
    '-subj',
    `/CN=${commonName}`,
    '-config',
    cnf,
    '-extensions',
    'issuer_ext',
  ]);
  return { certPem: readFileSync(certFile, 'utf8'), keyPem: readFileSync(keyFile, 'utf8'), certFile };
}

function pemToDerBase64(pem: string): string {
  const m = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/.exec(pem);
  if (!m?.[1]) throw new Error('token-server: no certificate in PEM');
  return m[1].replace(/\s+/g, '');
}

/** Parse `type:name:actions`; the name may itself contain `:` (e.g. a host:port prefix). */
export function parseScope(scope: string): TokenAccess | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last <= first) return undefined;
  const type = scope.slice(0, first);
  const name = scope.slice(first + 1, last);
  const actions = scope
    .slice(last + 1)
    .split(',')
    .map((a) => a.trim())
    .filter((a) => a.length > 0);
  if (!type || !name) return undefined;
  return { type, name, actions };
}

function signJwt(key: KeyObject, x5c: string, claims: Record<string, unknown>): string {
  const header = { alg: 'ES256', typ: 'JWT', x5c: [x5c] };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const sig = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${b64url(sig)}`;
}

async function readBody(req: http.IncomingMessage, limit = 64 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    const b = c as Buffer;
    n += b.length;
    if (n > limit) throw new Error('body too large');
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export async function startTokenServer(opts: TokenServerOptions = {}): Promise<TokenServer> {
  const service = opts.service ?? 'kbundle-test-registry';
  const issuerName = opts.issuer ?? 'kbundle-test-token-issuer';
  const ttl = opts.ttlSeconds ?? 300;
  const users: Record<string, string> = { ...(opts.users ?? {}) };
  let ownDir: string | undefined;
  let issuerKey = opts.issuerKey;
  if (!issuerKey) {
    const dir = opts.dir ?? (ownDir = mkdtempSync(join(tmpdir(), 'kbundle-token-')));
    issuerKey = await createTokenIssuer(dir);
  }
  const key = createPrivateKey(issuerKey.keyPem);
  const x5c = pemToDerBase64(issuerKey.certPem);
  const requests: TokenRequestRecord[] = [];
  const refreshTokens = new Map<string, string>(); // refresh token → user
  let failCount = 0;
  let failStatus = 500;

  const issue: TokenServer['issue'] = ({ sub, access, ttlSeconds, notBeforeOffsetSeconds, audience }) => {
    const now = Math.floor(Date.now() / 1000);
    const life = ttlSeconds ?? ttl;
    return signJwt(key, x5c, {
      iss: issuerName,
      sub: sub ?? '',
      aud: audience ?? service,
      exp: now + life,
      nbf: now + (notBeforeOffsetSeconds ?? -10),
      iat: now,
      jti: randomUUID(),
      access,
    });
  };

  const grantFor = (user: string | undefined, asked: TokenAccess): TokenAccess => {
    let allowed: string[];
    if (opts.authorize) allowed = opts.authorize(user, asked);
    else if (user !== undefined) allowed = ['*'];
    else allowed = opts.anonymousPull && asked.type === 'repository' ? ['pull'] : [];
    const actions = allowed.includes('*') ? [...asked.actions] : asked.actions.filter((a) => allowed.includes(a));
    return { type: asked.type, name: asked.name, actions };
  };

  const handler = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const u = new URL(req.url ?? '/', 'http://token.invalid');
    const rec: TokenRequestRecord = {
      time: Date.now(),
      method: req.method ?? 'GET',
      grant: 'anonymous',
      basic: false,
      authenticated: false,
      scopes: [],
      granted: [],
      status: 0,
    };
    const reply = (status: number, body: unknown, headers: Record<string, string> = {}): void => {
      rec.status = status;
      requests.push(rec);
      if (requests.length > 10_000) requests.splice(0, requests.length - 10_000);
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(body));
    };
    if (u.pathname !== '/token') return reply(404, { errors: [{ code: 'NOT_FOUND', message: 'unknown path' }] });

    let user: string | undefined;
    let password: string | undefined;
    let refresh: string | undefined;
    let wantRefresh = false;
    const auth = req.headers.authorization;
    if (auth && /^basic\s+/i.test(auth)) {
      const dec = Buffer.from(auth.replace(/^basic\s+/i, ''), 'base64').toString('utf8');
      const i = dec.indexOf(':');
      user = i >= 0 ? dec.slice(0, i) : dec;
      password = i >= 0 ? dec.slice(i + 1) : '';
      rec.basic = true;
      rec.grant = 'basic';
    }
    if (req.method === 'GET') {
      rec.service = u.searchParams.get('service') ?? undefined;
      rec.account = u.searchParams.get('account') ?? undefined;
      rec.scopes = u.searchParams
        .getAll('scope')
        .flatMap((s) => s.split(' '))
        .filter(Boolean);
      wantRefresh = u.searchParams.get('offline_token') === 'true';
    } else if (req.method === 'POST') {
      let form: URLSearchParams;
      try {
        form = new URLSearchParams(await readBody(req));
      } catch {
        return reply(400, { error: 'invalid_request' });
      }
      rec.service = form.get('service') ?? undefined;
      rec.scopes = form
        .getAll('scope')
        .flatMap((s) => s.split(' '))
        .filter(Boolean);
      wantRefresh = form.get('access_type') === 'offline';
      const grantType = form.get('grant_type');
      if (grantType === 'password') {
        rec.grant = 'password';
        user = form.get('username') ?? undefined;
        password = form.get('password') ?? undefined;
      } else if (grantType === 'refresh_token') {
        rec.grant = 'refresh_token';
        refresh = form.get('refresh_token') ?? undefined;
      } else {
        return reply(400, { error: 'unsupported_grant_type' });
      }
    } else {
      return reply(405, { errors: [{ code: 'UNSUPPORTED', message: 'method not allowed' }] });
    }

    if (failCount > 0) {
      failCount--;
      return reply(failStatus, { errors: [{ code: 'UNAVAILABLE', message: 'injected token-server failure' }] });
    }
    if (rec.service !== undefined && rec.service !== service) {
      return reply(400, { errors: [{ code: 'DENIED', message: `unknown service ${rec.service}` }] });
    }

    let subject: string | undefined;
    if (refresh !== undefined) {
      subject = refreshTokens.get(refresh);
      if (subject === undefined) return reply(401, { error: 'invalid_grant' });
      rec.user = subject;
      rec.authenticated = true;
    } else if (user !== undefined) {
      rec.user = user;
      if (!Object.prototype.hasOwnProperty.call(users, user) || users[user] !== password) {
        return reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password' }] }, { 'www-authenticate': 'Basic realm="kbundle-test-token"' });
      }
      subject = user;
      rec.authenticated = true;
    }

    for (const s of rec.scopes) {
      const asked = parseScope(s);
      if (!asked) return reply(400, { errors: [{ code: 'DENIED', message: `malformed scope ${s}` }] });
      const g = grantFor(subject, asked);
      if (g.actions.length > 0) rec.granted.push(g);
    }
    const token = issue({ sub: subject, access: rec.granted });
    const body: Record<string, unknown> = {
      token,
      access_token: token,
      expires_in: ttl,
      issued_at: new Date().toISOString(),
    };
    if (wantRefresh && subject !== undefined) {
      const rt = randomBytes(24).toString('base64url');
      refreshTokens.set(rt, subject);
      body.refresh_token = rt;
    }
    return reply(200, body);
  };

  const listener = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    handler(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(err));
    });
  };
  const server = opts.tls ? https.createServer({ cert: opts.tls.cert, key: opts.tls.key }, listener) : http.createServer(listener);
  server.keepAliveTimeout = 2000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  let closed = false;

  return {
    url,
    realm: `${url}/token`,
    service,
    issuer: issuerName,
    issuerKey,
    requests,
    users,
    issue,
    failNext(count, status = 500) {
      failCount = count;
      failStatus = status;
    },
    clearRequests() {
      requests.length = 0;
    },
    async close() {
      if (closed) return;
      closed = true;
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      if (ownDir) rmSync(ownDir, { recursive: true, force: true });
    },
  };
}
