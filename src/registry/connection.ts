import { existsSync, readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import type { Dispatcher } from 'undici';
import { undici } from './undici-lazy.js';
import { UserError } from '../errors.js';
import { minSpeed, resolveNetLimits, type NetLimits } from '../net/deadlines.js';
import { DOCKER_HUB, hostname, isLoopback } from './reference.js';

/** How to reach registries: which may use plain HTTP, which CA to trust, deadlines, where logins may go. */
export interface ConnectionOptions {
  /** Use plain HTTP for every registry (like oras --plain-http). */
  plainHttp?: boolean;
  /** Hosts (`host[:port]`, or a bare host name for any port) allowed plain HTTP and unverified TLS. */
  insecureRegistries?: string[];
  /** Extra CA bundle (PEM) trusted besides the system roots. Default: `$SSL_CERT_FILE` when set. */
  caFile?: string;
  env?: NodeJS.ProcessEnv;
  /** Deadlines and retries (default: the KBUNDLE_* environment variables, then src/net/deadlines.ts defaults). */
  limits?: Partial<NetLimits>;
  /**
   * Token servers (`host[:port]`, or a bare host name for any port) on another host than the
   * registry that may receive its login. Also `KBUNDLE_TRUSTED_TOKEN_REALMS=a,b`.
   */
  trustedTokenRealms?: string[];
}

/** The deadlines of one client: the options over the environment over the defaults. */
export function netLimits(opts: ConnectionOptions): NetLimits {
  return { ...resolveNetLimits({}, opts.env ?? process.env), ...(opts.limits ?? {}) };
}

export type SchemePlan =
  /** https only, certificate verified. */
  | { kind: 'https' }
  /** https first (verified), plain http if the server turns out not to speak TLS: loopback registries. */
  | { kind: 'https-then-http' }
  /** https without verification, then plain http: registries the user marked insecure. */
  | { kind: 'insecure' }
  | { kind: 'http' };

export function isInsecureHost(registry: string, opts: ConnectionOptions): boolean {
  return hostListed(registry, [...(opts.insecureRegistries ?? []), ...splitList((opts.env ?? process.env).KBUNDLE_INSECURE_REGISTRIES)]);
}

/** `host[:port]` is in a list of `host[:port]` entries (a bare host matches any port; a scheme or path is ignored). */
function hostListed(registry: string, list: string[]): boolean {
  const host = hostname(registry).toLowerCase();
  return list.some((e) => {
    const v = e
      .trim()
      .toLowerCase()
      .replace(/^[a-z]+:\/\//, '')
      .replace(/\/.*$/, '');
    return v === registry.toLowerCase() || v === host;
  });
}

function splitList(v: string | undefined): string[] {
  return v ? v.split(/[\s,]+/).filter(Boolean) : [];
}

export function schemePlan(registry: string, opts: ConnectionOptions): SchemePlan {
  if (opts.plainHttp) return { kind: 'http' };
  if (isInsecureHost(registry, opts)) return { kind: 'insecure' };
  if (isLoopback(registry)) return { kind: 'https-then-http' };
  return { kind: 'https' };
}

/** Whether a realm (token endpoint) may be contacted over plain HTTP without a login. */
export function plainHttpAllowed(host: string, opts: ConnectionOptions): boolean {
  return !!opts.plainHttp || isLoopback(host) || isInsecureHost(host, opts);
}

/**
 * Whether a login (Basic credentials, a token bought with them, an identity token) may travel
 * over plain HTTP to `host`: only to loopback, or to a host `--insecure-registry` names.
 * `--plain-http` alone is not enough: it says how to talk, not that the network is trusted.
 */
export function loginOverHttpAllowed(host: string, opts: ConnectionOptions): boolean {
  return isLoopback(host) || isInsecureHost(host, opts);
}

const DOCKER_HUB_HOSTS = new Set([DOCKER_HUB, 'registry-1.docker.io', 'index.docker.io']);

/**
 * Whether the token server at `realmHost` (host[:port]) may receive the login of `registry`.
 * The rule (stricter than docker and containerd, which send it to any realm the registry names):
 * - a realm on the registry's own host name, any port (Harbor, Quay, GHCR; GitLab's registry on
 *   :5050 with its realm on :443);
 * - Docker Hub's auth.docker.io for Docker Hub;
 * - a host the user trusts with `--trust-token-realm` or `KBUNDLE_TRUSTED_TOKEN_REALMS`.
 * Any other realm is asked for an anonymous token.
 */
export function realmGetsLogin(registry: string, realmHost: string, opts: ConnectionOptions): boolean {
  const realmName = hostname(realmHost).toLowerCase();
  if (realmName === hostname(registry).toLowerCase()) return true;
  if (DOCKER_HUB_HOSTS.has(registry.toLowerCase()) && realmName === 'auth.docker.io') return true;
  return hostListed(realmHost, [...(opts.trustedTokenRealms ?? []), ...splitList((opts.env ?? process.env).KBUNDLE_TRUSTED_TOKEN_REALMS)]);
}

/**
 * The operating system's CA bundle, where Go programs (skopeo, cosign, kairos-agent) look for it
 * (crypto/x509 root_linux.go): a node's own private CAs are trusted without flags, as they are
 * by the rest of the node. The first that exists is used, besides Node's bundled roots.
 */
export const SYSTEM_CA_FILES = [
  '/etc/ssl/certs/ca-certificates.crt', // Debian, Ubuntu, Alpine, Gentoo, Kairos images
  '/etc/pki/tls/certs/ca-bundle.crt', // Fedora, RHEL
  '/etc/ssl/ca-bundle.pem', // openSUSE
  '/etc/pki/tls/cacert.pem', // OpenELEC
  '/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem', // CentOS, RHEL 7
  '/etc/ssl/cert.pem', // Alpine
];

function loadCa(opts: ConnectionOptions): string[] | undefined {
  const explicit = opts.caFile ?? (opts.env ?? process.env).SSL_CERT_FILE;
  const file = explicit ?? SYSTEM_CA_FILES.find((f) => existsSync(f));
  if (!file) return undefined;
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UserError(`${opts.caFile ? '--ca-file' : explicit ? 'SSL_CERT_FILE' : 'system CA bundle'}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new UserError(`${file}: holds no PEM certificate`);
  return [...rootCertificates, pem];
}

/**
 * The two undici agents a client needs: verifying TLS, and (only if asked for) non-verifying.
 * Both bound every wait (src/net/deadlines.ts): connect, response headers, body silence, and a
 * minimum body speed.
 */
export class Dispatchers {
  private verifyingAgent?: Promise<Dispatcher>;
  private insecureAgent?: Promise<Dispatcher>;
  readonly limits: NetLimits;
  constructor(private readonly opts: ConnectionOptions) {
    this.limits = netLimits(opts);
  }

  private async make(rejectUnauthorized: boolean): Promise<Dispatcher> {
    const { Agent } = await undici();
    const l = this.limits;
    return new Agent({
      connect: { ca: rejectUnauthorized ? loadCa(this.opts) : undefined, rejectUnauthorized, timeout: l.connectTimeoutMs },
      headersTimeout: l.headersTimeoutMs,
      bodyTimeout: l.bodyTimeoutMs,
      keepAliveTimeout: 4_000,
    }).compose(minSpeed(l));
  }

  verifying(): Promise<Dispatcher> {
    this.verifyingAgent ??= this.make(true);
    return this.verifyingAgent;
  }

  insecure(): Promise<Dispatcher> {
    this.insecureAgent ??= this.make(false);
    return this.insecureAgent;
  }

  async close(): Promise<void> {
    await Promise.all([this.verifyingAgent?.then((a) => a.close()), this.insecureAgent?.then((a) => a.close())]);
  }
}

const CERT_ERROR_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
]);

/** Error codes along a cause chain (Node/OpenSSL and undici put them on `code`). */
function codes(e: unknown): string[] {
  const out: string[] = [];
  for (let cur: unknown = e, d = 0; cur && d < 5; d++) {
    const c = (cur as { code?: unknown }).code;
    if (typeof c === 'string') out.push(c);
    cur = (cur as { cause?: unknown }).cause;
  }
  return out;
}

/** The server's certificate was not trusted (as opposed to the server not speaking TLS). */
export function isCertificateError(e: unknown): boolean {
  return codes(e).some((c) => CERT_ERROR_CODES.has(c) || c.includes('CERT'));
}

/** What a TLS handshake with a plain-HTTP server ends in: OpenSSL record errors, or the server hanging up. */
const NOT_TLS_CODES = new Set(['EPROTO', 'ECONNRESET', 'UND_ERR_SOCKET']);

/** The TLS handshake failed because the other side answered in plain HTTP (or hung up). */
export function isNotTlsError(e: unknown): boolean {
  if (isCertificateError(e)) return false;
  return codes(e).some((c) => c.startsWith('ERR_SSL_') || NOT_TLS_CODES.has(c));
}
