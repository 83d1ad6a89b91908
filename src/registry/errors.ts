import { KbError, isKbError, type ErrorCode } from '../errors.js';

/** One entry of a distribution-spec error body: `{"errors":[{"code","message","detail"}]}`. */
export interface RegistryErrorEntry {
  code: string;
  message?: string;
}

/** Pull the error codes out of a response body; tolerant of non-JSON (e.g. "404 page not found"). */
export function parseErrorBody(text: string): RegistryErrorEntry[] {
  try {
    const raw = JSON.parse(text) as { errors?: unknown };
    if (!Array.isArray(raw.errors)) return [];
    return raw.errors
      .filter((e): e is { code: unknown; message?: unknown } => typeof e === 'object' && e !== null)
      .map((e) => ({ code: String(e.code ?? 'UNKNOWN'), message: typeof e.message === 'string' ? e.message : undefined }));
  } catch {
    return [];
  }
}

export function describeErrors(entries: RegistryErrorEntry[], fallback: string): string {
  if (entries.length === 0) return fallback.trim().slice(0, 200) || 'no details';
  return entries.map((e) => (e.message ? `${e.code}: ${e.message}` : e.code)).join('; ');
}

/** The error code of an HTTP status: what callers test instead of the status or the message. */
export function codeOfStatus(status: number): ErrorCode {
  if (status === 404) return 'NOT_FOUND';
  if (status === 401) return 'UNAUTHORIZED';
  if (status === 403) return 'DENIED';
  if (status === 408 || status === 429 || status >= 500) return 'TRANSIENT';
  return 'REFUSED';
}

/** The registry answered with an HTTP error the caller did not expect; `code` follows the status. */
export class RegistryResponseError extends KbError {
  constructor(
    readonly registry: string,
    readonly operation: string,
    readonly status: number,
    readonly codes: RegistryErrorEntry[],
    detail: string,
    hint?: string,
  ) {
    super(codeOfStatus(status), `${registry}: ${operation} failed: HTTP ${status} (${detail})`, { hint });
    this.name = 'RegistryResponseError';
  }
  hasCode(code: string): boolean {
    return this.codes.some((c) => c.code === code);
  }
}

/**
 * A transfer failed in a way that starting it again may fix (connection reset, registry 5xx after
 * the retry budget, an upload session the registry forgot). Copy restarts the blob from its source.
 */
export class TransientTransferError extends KbError {
  constructor(message: string, cause?: unknown) {
    super('TRANSIENT', message, { hint: 'the connection or the registry failed repeatedly; try again later', cause });
    this.name = 'TransientTransferError';
  }
}

/** Worth starting the transfer again: a TRANSIENT KbError, or a connection-level failure. */
export function isTransient(e: unknown): boolean {
  return isKbError(e, 'TRANSIENT') || isNetworkError(e);
}

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'ECONNABORTED',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  'KB_SLOW_TRANSFER', // src/net/deadlines.ts: a body slower than the minimum speed
]);

/** Connection-level failures (resets, timeouts, refused) — worth a retry, unlike HTTP 4xx. Decided by error codes along the cause chain (our own KbErrors are not network errors). */
export function isNetworkError(e: unknown): boolean {
  return errnoCodes(e).some((c) => NETWORK_CODES.has(c));
}

/** The system/undici error codes along a cause chain (KbError codes are not included). */
export function errnoCodes(e: unknown): string[] {
  const out: string[] = [];
  for (let cur: unknown = e, depth = 0; cur && depth < 5; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string' && !(cur instanceof KbError)) out.push(code);
    cur = (cur as { cause?: unknown }).cause;
  }
  return out;
}

/** Short text for a low-level error (undici nests the useful part in `cause`). */
export function networkErrorText(e: unknown): string {
  const parts: string[] = [];
  for (let cur: unknown = e, depth = 0; cur && depth < 4; depth++) {
    const m = (cur as { message?: unknown }).message;
    const code = (cur as { code?: unknown }).code;
    const s = [typeof code === 'string' ? code : '', typeof m === 'string' ? m : ''].filter(Boolean).join(' ');
    if (s && !parts.includes(s)) parts.push(s);
    cur = (cur as { cause?: unknown }).cause;
  }
  return parts.join(': ') || String(e);
}
