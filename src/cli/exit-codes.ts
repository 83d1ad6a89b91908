/**
 * The one place where error codes become exit codes. Scripts and CI can tell a refused signature
 * from a missing image or a network failure without reading the message (as cosign's verify
 * exits 10–12 for signature failures). All codes stay within 1–123: 124+ mean timeouts and
 * signals to shells and `timeout(1)`. Keep the README's exit code table in step.
 */
import type { ErrorCode } from '../errors.js';

/** Commander usage errors: unknown command or option, missing argument. */
export const EXIT_USAGE = 2;
/** A bug in kbundle (EX_SOFTWARE of sysexits.h). */
export const EXIT_INTERNAL = 70;

export const EXIT_CODES: Readonly<Record<ErrorCode, number>> = {
  INVALID_INPUT: 1,
  NOT_FOUND: 3,
  UNAUTHORIZED: 4,
  DENIED: 5,
  UNSUPPORTED: 6,
  CONFLICT: 7,
  TRANSIENT: 8,
  TRUNCATED: 9,
  REFUSED: 10,
  DIGEST_MISMATCH: 11,
  TIMEOUT: 12,
  BUSY: 13,
  IO: 14,
  INTERNAL: EXIT_INTERNAL,
};

export function exitCodeOf(code: ErrorCode): number {
  return EXIT_CODES[code];
}
