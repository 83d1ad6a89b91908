/**
 * A failure the user can act on: the CLI prints `message` (and `hint`) without a stack trace
 * and exits non-zero. Anything else escaping to the CLI is a bug and is printed with its stack.
 */
export class UserError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'UserError';
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
