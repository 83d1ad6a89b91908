import { existsSync, readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import type { Agent } from 'undici';
import { undici } from './undici-lazy.js';
import { UserError } from '../errors.js';
import { hostname, isLoopback } from './reference.js';

/** How to reach registries: which may use plain HTTP, which CA to trust, timeouts. */
export interface ConnectionOptions {
  /** Use plain HTTP for every registry (like oras --plain-http). */
  plainHttp?: boolean;
  /** Hosts (`host[:port]`, or a bare host name for any port) allowed plain HTTP and unverified TLS. */
  insecureRegistries?: string[];
  /** Extra CA bundle (PEM) trusted besides the system roots. Default: `$SSL_CERT_FILE` when set. */
  caFile?: string;
  env?: NodeJS.ProcessEnv;
  connectTimeoutMs?: number;
  /** Time to wait for response headers. */
  headersTimeoutMs?: number;
  /** Longest silence while a response body streams. */
  bodyTimeoutMs?: number;
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
  const list = [...(opts.insecureRegistries ?? []), ...splitList((opts.env ?? process.env).KBUNDLE_INSECURE_REGISTRIES)];
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

/** Whether a realm (token endpoint) may be contacted over plain HTTP. */
export function plainHttpAllowed(host: string, opts: ConnectionOptions): boolean {
  return !!opts.plainHttp || isLoopback(host) || isInsecureHost(host, opts);
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

/** The two undici agents a client needs: verifying TLS, and (only if asked for) non-verifying. */
export class Dispatchers {
  private verifyingAgent?: Promise<Agent>;
  private insecureAgent?: Promise<Agent>;
  constructor(private readonly opts: ConnectionOptions) {}

  private async make(rejectUnauthorized: boolean): Promise<Agent> {
    const { Agent } = await undici();
    return new Agent({
      connect: { ca: rejectUnauthorized ? loadCa(this.opts) : undefined, rejectUnauthorized, timeout: this.opts.connectTimeoutMs ?? 15_000 },
      headersTimeout: this.opts.headersTimeoutMs ?? 60_000,
      bodyTimeout: this.opts.bodyTimeoutMs ?? 120_000,
      keepAliveTimeout: 4_000,
    });
  }

  verifying(): Promise<Agent> {
    this.verifyingAgent ??= this.make(true);
    return this.verifyingAgent;
  }

  insecure(): Promise<Agent> {
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
