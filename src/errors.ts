/**
 * Typed errors. Library code throws a `KbError` with a `code` (what kind of failure) and an
 * optional `cause`; control flow tests `code`, never message text. Only the CLI decides how a code
 * is presented (src/cli/exit-codes.ts maps codes to exit codes). Anything else escaping to the
 * CLI is a bug and is printed with its stack.
 *
 * Codes (modelled on oras-go errdef and sigstore-js VerificationError{code}):
 * - INVALID_INPUT   bad argument, file, field or reference supplied by the user
 * - NOT_FOUND       the named image, tag, blob, file or key does not exist
 * - UNAUTHORIZED    credentials missing or rejected (HTTP 401)
 * - DENIED          access refused for these credentials (HTTP 403)
 * - DIGEST_MISMATCH content does not match the digest that names it
 * - TRANSIENT       network or server failure worth retrying
 * - TRUNCATED       a source ended before its declared size
 * - UNSUPPORTED     a valid request kbundle does not implement (a policy field, a media type)
 * - REFUSED         verification or policy refused the content
 * - CONFLICT        the destination already holds something else
 * - TIMEOUT         a deadline passed (a bundle script, a lock wait)
 * - BUSY            another kbundle holds the root's lock
 * - IO              the local file system refused a write (no space, quota, read-only, permission)
 * - INTERNAL        a failed invariant of kbundle itself
 */
export type ErrorCode =
  'INVALID_INPUT' | 'NOT_FOUND' | 'UNAUTHORIZED' | 'DENIED' | 'DIGEST_MISMATCH' | 'TRANSIENT' | 'TRUNCATED' | 'UNSUPPORTED' | 'REFUSED' | 'CONFLICT' | 'TIMEOUT' | 'BUSY' | 'IO' | 'INTERNAL';

export interface KbErrorOptions {
  /** What the user can do about it (printed by the CLI under the message). */
  hint?: string;
  cause?: unknown;
}

export class KbError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;

  constructor(code: ErrorCode, message: string, opts: KbErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'KbError';
    this.code = code;
    this.hint = opts.hint;
  }
}

/**
 * The common case: bad input the user can fix. Kept as a subclass so the many call sites read as
 * they did; its code is INVALID_INPUT unless given. The third slot once held an exit code; exit
 * codes now belong to the CLI alone, so it only accepts `undefined`.
 */
export class UserError extends KbError {
  constructor(message: string, hint?: string, _unused?: undefined, code: ErrorCode = 'INVALID_INPUT') {
    super(code, message, { hint });
    this.name = 'UserError';
  }
}

export function isKbError(e: unknown, ...codes: ErrorCode[]): e is KbError {
  return e instanceof KbError && (codes.length === 0 || codes.includes(e.code));
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The code for a failed read of a file the user named: NOT_FOUND when it is not there. */
export function fsErrorCode(e: unknown): ErrorCode {
  const errno = (e as NodeJS.ErrnoException | undefined)?.code;
  return errno === 'ENOENT' || errno === 'ENOTDIR' ? 'NOT_FOUND' : 'INVALID_INPUT';
}

/** The code for an HTTP error status from a server kbundle talks to (registry, download, Sigstore service). */
export function codeForHttpStatus(status: number): ErrorCode {
  if (status === 401) return 'UNAUTHORIZED';
  if (status === 403) return 'DENIED';
  if (status === 404 || status === 410) return 'NOT_FOUND';
  if (status === 408 || status === 429 || status >= 500) return 'TRANSIENT';
  return 'INVALID_INPUT';
}

const WRITE_ERRNOS: Record<string, string> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'the file system is read-only',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
};

/**
 * A failed local write as the user should see it: an IO error naming the path, for the errnos
 * a full, read-only or foreign file system gives. Anything else is returned as it was.
 */
export function writeError(e: unknown, where: string): unknown {
  const err = e as NodeJS.ErrnoException | undefined;
  const why = err?.code ? WRITE_ERRNOS[err.code] : undefined;
  if (!why || e instanceof KbError) return e;
  return new KbError('IO', `${err!.path ?? where}: ${why} (${err!.code})`, {
    cause: e,
    hint: err!.code === 'ENOSPC' || err!.code === 'EDQUOT' ? 'free some space and run again; nothing was changed' : `check that ${where} is writable for this user; nothing was changed`,
  });
}

const ERRNO_TEXT: Record<string, [ErrorCode, string]> = {
  ENOENT: ['NOT_FOUND', 'no such file or folder'],
  ENOTDIR: ['NOT_FOUND', 'a part of the path is not a folder'],
  EISDIR: ['INVALID_INPUT', 'is a folder, not a file'],
  ENOTEMPTY: ['CONFLICT', 'the folder is not empty'],
  EEXIST: ['CONFLICT', 'already exists'],
  ELOOP: ['INVALID_INPUT', 'too many levels of symbolic links'],
  ENAMETOOLONG: ['INVALID_INPUT', 'the name is too long'],
  EMFILE: ['IO', 'too many open files'],
  EIO: ['IO', 'input/output error'],
  EBUSY: ['IO', 'the device or resource is busy'],
  EXDEV: ['IO', 'the paths are on different file systems'],
};

/**
 * A file-system error no layer turned into a KbError, as the CLI reports it: the path and what
 * went wrong, never a stack (the errno names the class of failure; the path says where).
 */
export function fromErrno(e: unknown): KbError | undefined {
  const err = e as NodeJS.ErrnoException | undefined;
  if (!(e instanceof Error) || typeof err?.code !== 'string' || typeof err.syscall !== 'string') return undefined;
  const w = writeError(e, err.path ?? '');
  if (w instanceof KbError) return w;
  const known = ERRNO_TEXT[err.code];
  if (!known) return undefined;
  return new KbError(known[0], `${err.path ?? err.syscall}: ${known[1]} (${err.code})`, { cause: e, hint: 'check the path given on the command line' });
}
